//! `turbo-coder --server URL approvals list|approve|deny`: the tool calls waiting for a
//! person, decided over gRPC (`turbo.tools.v1.ToolService`) where they wait: the tool-runner
//! service in the cluster, or `turbo-coder serve orchestrator` in one-process mode. A
//! `turbo-coder run` in a terminal asks at the terminal instead (see `run.rs`).

use clap::Subcommand;
use turbo_core::ids::TaskId;
use turbo_tool_runner::{PendingApproval, RemoteToolRunner, RunnerLimits};

use crate::exit::{self, Exit};

#[derive(Subcommand, Debug)]
pub enum ApprovalsCommand {
    /// The calls waiting for approval, oldest first.
    List {
        /// Only this task's calls (its full UUID).
        #[arg(long)]
        task: Option<String>,
        /// One JSON object per line.
        #[arg(long)]
        json: bool,
    },
    /// Let a waiting call run.
    Approve(Decision),
    /// Refuse a waiting call; the agent is told, with the note.
    Deny(Decision),
}

#[derive(clap::Args, Debug)]
pub struct Decision {
    /// The approval id shown in the task's events (apr_...).
    pub approval_id: String,
    /// Shown to the agent with the decision.
    #[arg(long)]
    pub note: Option<String>,
    /// Who decides, for the audit log (default: $USER).
    #[arg(long = "by")]
    pub by: Option<String>,
}

/// Who decides when `--by` is not given: the login name, else "cli".
pub(crate) fn default_decider() -> String {
    std::env::var("USER").ok().filter(|u| !u.trim().is_empty()).unwrap_or_else(|| "cli".into())
}

pub async fn approvals(server: Option<String>, command: ApprovalsCommand) -> Result<u8, Exit> {
    let Some(url) = server else {
        return Err(Exit::new(
            exit::USAGE,
            "approvals are decided where the call waits: pass --server http://HOST:PORT of the tool-runner (or of `turbo-coder serve orchestrator`); a `turbo-coder run` in a terminal asks you there",
        ));
    };
    let runner =
        RemoteToolRunner::connect(&url, RunnerLimits::default()).map_err(|e| Exit::new(exit::USAGE, e.to_string()))?;
    let failed = |e: turbo_tool_runner::Error| {
        let code = match e.code() {
            tonic::Code::InvalidArgument => exit::USAGE,
            tonic::Code::Unavailable | tonic::Code::DeadlineExceeded => exit::ORCHESTRATOR_UNAVAILABLE,
            _ => exit::INTERNAL,
        };
        Exit::new(code, e.to_string())
    };
    match command {
        ApprovalsCommand::List { task, json } => {
            let task_id = match task {
                Some(t) => Some(t.trim().parse::<TaskId>().map_err(|_| {
                    Exit::new(exit::USAGE, format!("--task '{t}' is not a task id: give its full UUID"))
                })?),
                None => None,
            };
            let waiting = runner.list_approvals(task_id).await.map_err(failed)?;
            for p in &waiting {
                if json {
                    println!("{}", serde_json::to_string(p).unwrap_or_default());
                } else {
                    println!("{}", line(p));
                }
            }
            if waiting.is_empty() && !json {
                eprintln!("no call waits for approval on {url}");
            }
            Ok(exit::OK)
        }
        ApprovalsCommand::Approve(d) | ApprovalsCommand::Deny(d) if d.approval_id.trim().is_empty() => {
            Err(Exit::new(exit::USAGE, "give the approval id (apr_...) shown in the task's events"))
        }
        ApprovalsCommand::Approve(d) => decide(&runner, &url, d, true).await.map_err(failed)?,
        ApprovalsCommand::Deny(d) => decide(&runner, &url, d, false).await.map_err(failed)?,
    }
}

async fn decide(
    runner: &RemoteToolRunner,
    url: &str,
    d: Decision,
    approve: bool,
) -> Result<Result<u8, Exit>, turbo_tool_runner::Error> {
    let by = d.by.unwrap_or_else(default_decider);
    let applied = runner.decide(d.approval_id.trim(), approve, &by, d.note).await?;
    Ok(if applied {
        println!("{} {}", if approve { "approved" } else { "denied" }, d.approval_id.trim());
        Ok(exit::OK)
    } else {
        Err(Exit::new(
            exit::USAGE,
            format!(
                "{} does not wait for approval on {url}: it was decided, expired or withdrawn; `turbo-coder --server {url} approvals list` shows what waits",
                d.approval_id.trim()
            ),
        ))
    })
}

fn line(p: &PendingApproval) -> String {
    let task = p.task_id.map(|t| format!(" task {t}")).unwrap_or_default();
    format!(
        "{}  {} ({:?} risk){task}  expires {}  args {}",
        p.approval_id,
        p.tool,
        p.risk,
        p.expires_at.format("%Y-%m-%d %H:%M:%S UTC"),
        turbo_core::event::clip(&p.arguments.to_string(), 120)
    )
}
