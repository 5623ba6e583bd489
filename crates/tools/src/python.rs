//! `python_run`: a Python snippet in the workspace.

use std::ffi::OsString;

use async_trait::async_trait;
use serde_json::{Value, json};
use turbo_core::tool::RiskLevel;

use crate::error::{Error, Result};
use crate::process::{self, Run};
use crate::schema::{self, Args};
use crate::tool::{Tool, ToolContext, ToolOutput};

const NAME: &str = "python_run";

/// Runs `python3 -` with the code on stdin (so code of any length works, unlike `-c` and its
/// argument-size limit), with the same process handling as `shell_run`.
#[derive(Clone, Copy, Debug, Default)]
pub struct PythonRun;

#[async_trait]
impl Tool for PythonRun {
    fn name(&self) -> &'static str {
        NAME
    }

    fn description(&self) -> &'static str {
        "Run Python 3 code in the workspace root and return its exit code, stdout and stderr \
         (an uncaught exception gives exit code 1 and the traceback on stderr). Print what you \
         want to see. The code has no stdin; processes it leaves running are killed when it \
         ends or times out."
    }

    fn parameters(&self) -> Value {
        schema::object(
            json!({
                "code": {"type": "string", "description": "the Python 3 program to run"},
                "timeout_s": {"type": "integer", "minimum": 1, "description": "seconds before it is killed (at most the task's limit)"},
            }),
            &["code"],
        )
    }

    fn risk(&self) -> RiskLevel {
        RiskLevel::High
    }

    fn mutating(&self) -> bool {
        true
    }

    async fn call(&self, args: &Value, ctx: &ToolContext) -> Result<ToolOutput> {
        let args = Args::new(NAME, args);
        let code = args.string("code")?;
        let timeout_s = args.opt_positive("timeout_s")?;
        if code.trim().is_empty() {
            return Err(Error::bad_args(NAME, "'code' is empty"));
        }
        let hint = "python3 is needed for python_run; install it in the environment, or use shell_run";
        let finished = process::run(Run {
            stdin: Some(code.as_bytes().to_vec()),
            // Imports of workspace modules would otherwise leave __pycache__ in the project.
            extra_env: vec![("PYTHONDONTWRITEBYTECODE", OsString::from("1"))],
            timeout: process::effective_timeout(timeout_s, ctx.timeout),
            ..Run::in_workspace(ctx, NAME, "python3", hint, vec![OsString::from("-")])
        })
        .await?;
        Ok(finished.into_output(ctx.output_cap))
    }
}
