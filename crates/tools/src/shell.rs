//! `shell_run`: a shell command in the workspace.

pub mod deny;

use std::ffi::OsString;

use async_trait::async_trait;
use serde_json::{Value, json};
use turbo_core::tool::RiskLevel;

use crate::error::{Error, Result};
use crate::process::{self, Run};
use crate::schema::{self, Args};
use crate::tool::{Tool, ToolContext, ToolOutput};

const NAME: &str = "shell_run";

/// Runs `sh -c COMMAND` in the workspace root: null stdin, scrubbed environment, its own process
/// group killed whole on timeout, output capped. Commands matching the [`deny`] list are refused
/// before anything runs.
#[derive(Clone, Copy, Debug, Default)]
pub struct ShellRun;

#[async_trait]
impl Tool for ShellRun {
    fn name(&self) -> &'static str {
        NAME
    }

    fn description(&self) -> &'static str {
        "Run a shell command (sh -c) in the workspace root and return its exit code, stdout and \
         stderr. There is no stdin and no terminal: use non-interactive flags. Processes still \
         running when the command ends or times out are killed. Only PATH, HOME, LANG, LC_ALL, \
         TERM, TMPDIR and USER are set in its environment. Destructive commands (sudo, rm -rf /, \
         mkfs, ...) are refused."
    }

    fn parameters(&self) -> Value {
        schema::object(
            json!({
                "command": {"type": "string", "description": "the shell command to run, e.g. 'pytest -q tests/'"},
                "timeout_s": {"type": "integer", "minimum": 1, "description": "seconds before the command is killed (at most the task's limit)"},
            }),
            &["command"],
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
        let command = args.string("command")?;
        let timeout_s = args.opt_positive("timeout_s")?;
        if command.trim().is_empty() {
            return Err(Error::bad_args(NAME, "'command' is empty"));
        }
        deny::check(command)?;
        let args = vec![OsString::from("-c"), OsString::from(command)];
        let finished = process::run(Run {
            timeout: process::effective_timeout(timeout_s, ctx.timeout),
            ..Run::in_workspace(ctx, NAME, "sh", "install a POSIX shell (dash or bash)", args)
        })
        .await?;
        Ok(finished.into_output(ctx.output_cap))
    }
}
