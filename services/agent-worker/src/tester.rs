//! The tester: finds the project's own test command, runs it through the tool-runner, and
//! reports the result; the orchestrator sends failures back to the coder.
//!
//! It makes no model call, so it has no prompt to put retrieved context in: the test
//! conventions and the code under test are retrieved by the coder's fix round, whose query
//! carries the end of the failing output.

use ractor::{Actor, ActorProcessingErr, ActorRef};
use serde_json::json;
use tokio_util::sync::CancellationToken;
use turbo_core::agent::AgentRole;
use turbo_core::event::EventKind;
use turbo_core::ids::ProjectId;
use turbo_core::protocol::{PhaseAssignment, PhaseOutcome};
use turbo_core::task::TestResults;
use turbo_core::tool::TokenUsage;
use turbo_tool_runner::{CallScope, ToolRunnerClient};

use crate::context::{AgentDeps, Reporter, cancellable, own_call, tail_chars};
use crate::error::{Error, Result};
use crate::message::AgentMsg;

/// Characters of test output kept: the end of a test run says what failed.
const OUTPUT_TAIL_CHARS: usize = 6_000;

pub struct Tester;

pub struct TesterState {
    deps: AgentDeps,
}

impl Actor for Tester {
    type Msg = AgentMsg;
    type State = TesterState;
    type Arguments = AgentDeps;

    async fn pre_start(
        &self,
        _: ActorRef<AgentMsg>,
        deps: AgentDeps,
    ) -> std::result::Result<TesterState, ActorProcessingErr> {
        Ok(TesterState { deps })
    }

    async fn handle(
        &self,
        _: ActorRef<AgentMsg>,
        msg: AgentMsg,
        state: &mut TesterState,
    ) -> std::result::Result<(), ActorProcessingErr> {
        match msg {
            AgentMsg::Plan { reply, .. } => {
                let _ = reply
                    .send(Err(Error::Unsupported("the tester does not plan; send plans to the planner".into()).into()));
            }
            AgentMsg::RunPhase { assignment, cancel, reply } => {
                let _ = reply.send(run(&state.deps, &assignment, &cancel).await.map_err(Into::into));
            }
        }
        Ok(())
    }
}

/// Runs `command` in the workspace through the tool-runner's shell_run, as a call of the task
/// (its project's approval policy applies, a checkpoint precedes it, a wait for approval is in
/// the events).
pub(crate) async fn run_command(
    deps: &AgentDeps,
    rep: &Reporter<'_>,
    project_id: Option<ProjectId>,
    workspace: &str,
    command: &str,
    timeout_s: u64,
) -> Result<(bool, Option<i32>, String)> {
    let call = own_call("shell_run", json!({"command": command, "timeout_s": timeout_s}));
    let scope = CallScope { task_id: Some(rep.task_id), project_id, phase: rep.phase.clone(), ..CallScope::default() };
    match crate::toolloop::call_reporting(deps, rep, workspace, &call, scope, 0).await {
        Ok(out) => Ok((out.success, out.exit_code, out.content)),
        Err(e) if e.is_model_correctable() => Ok((false, None, e.to_string())),
        Err(e) => Err(e.into()),
    }
}

async fn read(tools: &ToolRunnerClient, workspace: &str, path: &str) -> Option<String> {
    let out = tools.call(workspace, &own_call("fs_read", json!({"path": path}))).await.ok()?;
    out.success.then_some(out.content)
}

/// The project's test command, found from the files it has; None when it has no tests to run.
pub async fn detect_test_command(tools: &ToolRunnerClient, workspace: &str) -> Result<Option<String>> {
    let listing = tools
        .call(workspace, &own_call("fs_list", json!({"path": ".", "recursive": true, "max_entries": 5000})))
        .await?;
    let files: Vec<&str> = listing.content.lines().collect();
    let has = |name: &str| files.contains(&name);
    let file_name = |p: &str| p.rsplit('/').next().unwrap_or(p).to_string();

    if has("Makefile")
        && let Some(text) = read(tools, workspace, "Makefile").await
        && text.lines().any(|l| l.starts_with("test:") || l.starts_with("test :"))
    {
        return Ok(Some("make test".into()));
    }
    if has("Cargo.toml") {
        return Ok(Some("cargo test --quiet".into()));
    }
    if has("package.json")
        && let Some(text) = read(tools, workspace, "package.json").await
    {
        // fs_read puts a header line before the content; the JSON object starts at the first brace.
        let json_text = text.find('{').map(|i| &text[i..]).unwrap_or("");
        let script = serde_json::from_str::<serde_json::Value>(json_text)
            .ok()
            .and_then(|v| v["scripts"]["test"].as_str().map(str::to_string));
        if script.is_some_and(|s| !s.contains("no test specified")) {
            return Ok(Some("npm test --silent".into()));
        }
    }
    if has("go.mod") {
        return Ok(Some("go test ./...".into()));
    }
    if has("pom.xml") {
        return Ok(Some("mvn -q test".into()));
    }
    let python_tests = files.iter().any(|p| {
        let n = file_name(p);
        (n.starts_with("test_") && n.ends_with(".py"))
            || n.ends_with("_test.py")
            || n == "conftest.py"
            || n == "pytest.ini"
    });
    if python_tests {
        // A probe that changes nothing: outside the task's scope.
        let probe = own_call("shell_run", json!({"command": "python3 -c 'import pytest'", "timeout_s": 60}));
        let has_pytest = tools.call(workspace, &probe).await.is_ok_and(|out| out.success);
        if has_pytest {
            return Ok(Some("python3 -m pytest -q".into()));
        }
        return Ok(Some(if has("tests/") {
            "python3 -m unittest discover -s tests -t . -v".into()
        } else {
            "python3 -m unittest discover -v".into()
        }));
    }
    Ok(None)
}

async fn run(deps: &AgentDeps, a: &PhaseAssignment, cancel: &CancellationToken) -> Result<PhaseOutcome> {
    let rep = Reporter {
        events: deps.events.as_ref(),
        task_id: a.task_id,
        role: AgentRole::Tester,
        phase: Some(a.phase.name.clone()),
    };
    let detected = cancellable(cancel, detect_test_command(&deps.tools, &a.workspace)).await?;
    // The plan's own commands are a fallback: the files are better evidence than the model.
    let command = detected.or_else(|| (!a.phase.commands.is_empty()).then(|| a.phase.commands.join(" && ")));
    let Some(command) = command else {
        let summary =
            "no test command found (looked for make test, cargo, npm, go, maven and python tests); nothing to run"
                .to_string();
        rep.emit(EventKind::AgentMessage { role: AgentRole::Tester, text: summary.clone() });
        return Ok(PhaseOutcome {
            success: true,
            summary,
            files_changed: vec![],
            usage: TokenUsage::default(),
            steps: 0,
            test: None,
            review: None,
        });
    };
    let (passed, exit_code, output) = cancellable(
        cancel,
        run_command(deps, &rep, a.project_id, &a.workspace, &command, deps.settings.command_timeout_s),
    )
    .await?;
    rep.emit(EventKind::TestRun { command: command.clone(), round: a.attempt, passed, exit_code });
    let summary =
        if passed { format!("`{command}` passed") } else { format!("`{command}` failed (exit code {exit_code:?})") };
    Ok(PhaseOutcome {
        success: passed,
        summary,
        files_changed: vec![],
        usage: TokenUsage::default(),
        steps: 1,
        test: Some(TestResults {
            command,
            success: passed,
            exit_code,
            rounds: a.attempt,
            output_tail: tail_chars(&output, OUTPUT_TAIL_CHARS),
        }),
        review: None,
    })
}

#[cfg(test)]
mod tests {
    use turbo_tool_runner::RunnerLimits;

    use super::*;

    async fn detect(files: &[(&str, &str)]) -> Option<String> {
        let dir = tempfile::tempdir().unwrap();
        for (path, content) in files {
            let p = dir.path().join(path);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, content).unwrap();
        }
        let tools = ToolRunnerClient::local(RunnerLimits::default());
        detect_test_command(&tools, dir.path().to_str().unwrap()).await.unwrap()
    }

    #[tokio::test]
    async fn finds_the_test_command_of_each_ecosystem() {
        assert_eq!(detect(&[("Cargo.toml", "[package]\n")]).await.as_deref(), Some("cargo test --quiet"));
        assert_eq!(detect(&[("go.mod", "module x\n")]).await.as_deref(), Some("go test ./..."));
        assert_eq!(
            detect(&[("package.json", r#"{"scripts":{"test":"jest"}}"#)]).await.as_deref(),
            Some("npm test --silent")
        );
        assert_eq!(
            detect(&[("package.json", r#"{"scripts":{"test":"echo \"Error: no test specified\" && exit 1"}}"#)]).await,
            None
        );
        assert_eq!(
            detect(&[("Makefile", "build:\n\ttrue\ntest:\n\ttrue\n"), ("Cargo.toml", "")]).await.as_deref(),
            Some("make test")
        );
        let py = detect(&[("app.py", "x=1\n"), ("tests/test_app.py", "def test_x(): pass\n")]).await.unwrap();
        assert!(py.starts_with("python3 -m"), "{py}");
        assert_eq!(detect(&[("README.md", "hello\n")]).await, None);
    }
}
