//! File tools run inside the sandbox, like every other tool.
//!
//! The file tools (`fs_*`, `advanced_fs`) are Rust code, not programs; run in the tool-runner,
//! only the path checks of [`crate::Workspace`] would stand between a model and the host, and
//! a flaw in them would be an escape. So each call of one goes to [`TOOL_EXEC`], a small
//! program started in the call's sandbox (bound read-only at `/run/turbo-tool-exec`): it
//! reads the call as JSON on stdin, runs the same tool code there against the workspace (the
//! only host directory it can write, with the same path checks), and prints the result or the
//! error as JSON.
//! [`InSandbox`] is the tool-runner's side; [`tool_exec_main`] the program's.
//!
//! With `sandbox.mode = "unconfined"` the tools run in this process, as everything else does
//! then.

use std::io::{Read, Write};
use std::process::ExitCode;
use std::sync::Arc;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use turbo_core::tool::{RiskLevel, ToolCategory, ToolSpec};

use crate::error::{Error, Result};
use crate::process::{self, Run};
use crate::sandbox::{Sandbox, SandboxMode, SandboxPolicy, TOOL_EXEC, TOOL_EXEC_INSIDE};
use crate::tool::{ResourceEstimate, Tool, ToolContext, ToolOutput};
use crate::toolbox::Toolbox;
use crate::workspace::Workspace;

/// Bytes of the program's answer kept: the answer is JSON, cut it and it cannot be read, so
/// this is far above any output cap; the sandbox stops a call that prints more than its
/// `max_output_bytes` anyway.
const ANSWER_CAP: usize = 48 << 20;

/// One call, as the program reads it.
#[derive(Debug, Serialize, Deserialize)]
struct Request {
    tool: String,
    args: Value,
    workspace: std::path::PathBuf,
    output_cap: usize,
}

/// What the program prints.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Answer {
    Output(ToolOutput),
    Error(Error),
}

/// A tool whose calls run in the sandbox through [`TOOL_EXEC`]; everything else about it
/// (name, schema, risk, estimate) is the tool's own.
pub(crate) struct InSandbox(pub Arc<dyn Tool>);

#[async_trait]
impl Tool for InSandbox {
    fn name(&self) -> &'static str {
        self.0.name()
    }

    fn description(&self) -> &'static str {
        self.0.description()
    }

    fn parameters(&self) -> Value {
        self.0.parameters()
    }

    fn risk(&self) -> RiskLevel {
        self.0.risk()
    }

    fn mutating(&self) -> bool {
        self.0.mutating()
    }

    fn category(&self) -> ToolCategory {
        self.0.category()
    }

    fn risk_of(&self, args: &Value) -> RiskLevel {
        self.0.risk_of(args)
    }

    fn mutating_of(&self, args: &Value) -> bool {
        self.0.mutating_of(args)
    }

    fn estimate(&self, args: &Value) -> ResourceEstimate {
        self.0.estimate(args)
    }

    fn validate(&self, args: &Value) -> Result<()> {
        self.0.validate(args)
    }

    fn check_permissions(&self, args: &Value, ctx: &ToolContext) -> Result<()> {
        self.0.check_permissions(args, ctx)
    }

    fn spec(&self) -> ToolSpec {
        self.0.spec()
    }

    async fn call(&self, args: &Value, ctx: &ToolContext) -> Result<ToolOutput> {
        if ctx.sandbox.policy().mode == SandboxMode::Unconfined {
            return self.0.call(args, ctx).await;
        }
        let name = self.0.name();
        ctx.sandbox.tool_exec().await?;
        let request = Request {
            tool: name.to_owned(),
            args: args.clone(),
            workspace: ctx.workspace.root().to_owned(),
            output_cap: ctx.output_cap,
        };
        let stdin = serde_json::to_vec(&request).map_err(|e| Error::bad_args(name, e.to_string()))?;
        let finished = process::run(Run {
            stdin: Some(stdin),
            cap: ANSWER_CAP,
            output: None,
            ..Run::in_workspace(ctx, name, TOOL_EXEC_INSIDE, "set sandbox.tool_exec to its path", Vec::new())
        })
        .await?;
        if finished.stopped.is_none()
            && let Some(printed) = finished.stdout.whole()
            && let Ok(answer) = serde_json::from_slice::<Answer>(printed)
        {
            return match answer {
                Answer::Output(output) => Ok(output),
                Answer::Error(error) => Err(error),
            };
        }
        let (said, _) = finished.render(4096);
        Err(Error::Sandbox { reason: format!("{name} ended in the sandbox without an answer: {said}") })
    }
}

/// The program's side: reads one [`Request`] on stdin, runs it with the tools' own code in
/// this process (already in the sandbox), prints the [`Answer`]. The exit code is 0 when an
/// answer was printed, whatever it says.
pub fn tool_exec_main() -> ExitCode {
    let args: Vec<std::ffi::OsString> = std::env::args_os().skip(1).collect();
    if args.first().is_some_and(|a| a == "--proxy") {
        return crate::proxy::forward_main(&args[1..]);
    }
    let mut input = Vec::new();
    if let Err(e) = std::io::stdin().read_to_end(&mut input) {
        eprintln!("{TOOL_EXEC}: cannot read the call: {e}");
        return ExitCode::from(2);
    }
    let request: Request = match serde_json::from_slice(&input) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("{TOOL_EXEC}: the call is not valid ({e}); it is started by the tool-runner, not by hand");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("{TOOL_EXEC}: cannot start: {e}");
            return ExitCode::from(2);
        }
    };
    let answer = match runtime.block_on(run_here(request)) {
        Ok(output) => Answer::Output(output),
        Err(error) => Answer::Error(error),
    };
    let mut stdout = std::io::stdout().lock();
    let printed =
        serde_json::to_writer(&mut stdout, &answer).map_err(std::io::Error::from).and_then(|()| stdout.flush());
    match printed {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{TOOL_EXEC}: cannot print the answer: {e}");
            ExitCode::from(2)
        }
    }
}

/// Runs the call with the tool's code, in this process.
async fn run_here(request: Request) -> Result<ToolOutput> {
    let workspace = Workspace::open(&request.workspace)?;
    // Nothing here starts a sandbox: this process is in one.
    let here = Arc::new(Sandbox::new(SandboxPolicy { mode: SandboxMode::Unconfined, ..SandboxPolicy::default() }));
    let ctx = ToolContext::new(workspace).with_sandbox(here).with_output_cap(request.output_cap);
    let tools = Toolbox::in_process_file_tools();
    let tool = tools.get(&request.tool).ok_or_else(|| Error::UnknownTool {
        name: request.tool.clone(),
        available: tools.names().into_iter().map(str::to_owned).collect(),
    })?;
    tool.call(&request.args, &ctx).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_cross_as_the_same_output_or_error() {
        let output = ToolOutput { files_changed: vec!["a.txt".into()], ..ToolOutput::ok("wrote") };
        let errors = [
            Error::NotFound { path: "a/b".into() },
            Error::OutsideWorkspace { path: "../x".into(), reason: "it climbs".into() },
            Error::io("a.txt", std::io::Error::new(std::io::ErrorKind::PermissionDenied, "denied")),
            Error::bad_args("fs_write", "'content' is missing"),
        ];
        let back = |a: &Answer| serde_json::from_slice::<Answer>(&serde_json::to_vec(a).unwrap()).unwrap();
        assert!(matches!(back(&Answer::Output(output.clone())), Answer::Output(o) if o == output));
        for error in errors {
            let (shown, correctable) = (error.to_string(), error.is_model_correctable());
            let Answer::Error(again) = back(&Answer::Error(error)) else { panic!("not an error") };
            assert_eq!((again.to_string(), again.is_model_correctable()), (shown, correctable));
            if let Error::Io { source, .. } = again {
                assert_eq!(source.kind(), std::io::ErrorKind::PermissionDenied);
            }
        }
    }
}
