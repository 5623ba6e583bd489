//! `turbo-coder rewind TASK [--step N] [--list]`: puts a task's workspace back as it was before
//! the task's first change, or before its checkpoint N (each mutating tool call of the task is
//! preceded by one; see `turbo_tool_runner::Checkpoints`). The rewind is itself checkpointed,
//! so it can be undone with the number it prints. `rewind SESSION` does the same for the calls
//! an interactive session made outside any task (its WebSocket `code_edit`s, ...).
//!
//! It reads the task or session from the configured store and the checkpoints from
//! `<data_dir>/checkpoints`: run it where the tools ran (this machine after `run`, the
//! tool-runner's host in the cluster, with its configuration).

use clap::Args;
use turbo_config::Config;
use turbo_core::ids::SessionId;
use turbo_tool_runner::{Checkpoint, Checkpoints, Owner};

use crate::exit::{self, Exit};

#[derive(Args, Debug)]
pub struct RewindArgs {
    /// Task id, or a unique prefix of it (at least 4 characters); or a session's full id.
    pub id: String,
    /// Back to before checkpoint N (`--list` shows them); default: before the first change.
    #[arg(long)]
    pub step: Option<u32>,
    /// Only list the checkpoints.
    #[arg(long)]
    pub list: bool,
    #[arg(long)]
    pub json: bool,
}

/// What a rewind works on: a task, or a session's calls outside any task, with its workspace.
struct Target {
    owner: Owner,
    workspace: std::path::PathBuf,
    /// Why it cannot be rewound now (its agents may still be changing the workspace).
    busy: Option<String>,
}

/// `id` as a task (a full id or a prefix), else as a session (a full id).
async fn target(store: &turbo_store::Store, id: &str) -> Result<Target, Exit> {
    let storage = |e: turbo_store::Error| Exit::new(exit::STORAGE, e.to_string());
    let running = |task: &turbo_core::task::DevelopmentTask| {
        (!task.status.is_terminal() && task.status.as_str() != "planned").then(|| {
            format!(
                "task {} is {}: its agents may still be changing the workspace; cancel it first (`turbo-coder tasks show {}`)",
                task.id, task.status, task.id
            )
        })
    };
    let not_found = match store.find_task(id).await {
        Ok(stored) => {
            let busy = running(&stored.task);
            return Ok(Target { owner: Owner::Task(stored.task.id), workspace: stored.workspace.into(), busy });
        }
        Err(e @ turbo_store::Error::NotFound { .. }) => e,
        Err(e @ turbo_store::Error::Ambiguous { .. }) => return Err(Exit::new(exit::USAGE, e.to_string())),
        Err(other) => return Err(storage(other)),
    };
    let Ok(uuid) = uuid::Uuid::parse_str(id.trim()) else {
        return Err(Exit::new(exit::USAGE, format!("{not_found} (a session is named by its full id)")));
    };
    let Some(session) = store.get_session(SessionId(uuid)).await.map_err(storage)? else {
        return Err(Exit::new(exit::USAGE, format!("no task or session has the id {uuid}")));
    };
    let project = store.get_project(session.project_id).await.map_err(storage)?.ok_or_else(|| {
        Exit::new(exit::USAGE, format!("session {uuid} belongs to project {}, which is purged", session.project_id))
    })?;
    // The session's own checkpoints cover its calls outside a task; a task it runs changes the
    // same workspace, so it must be over first.
    let busy = match session.task_id {
        Some(task) => store.get_task(task).await.map_err(storage)?.and_then(|t| running(&t.task)),
        None => None,
    };
    Ok(Target { owner: Owner::Session(session.id), workspace: project.project.root_path.into(), busy })
}

pub async fn rewind(config: &Config, args: RewindArgs) -> Result<u8, Exit> {
    let store = crate::open_store(config).await?;
    let Target { owner, workspace, busy } = target(&store, &args.id).await?;
    let id = match owner {
        Owner::Task(t) => t.to_string(),
        Owner::Session(s) => s.to_string(),
    };
    let checkpoints = Checkpoints::new(turbo_tool_runner::checkpoint_dir(config));
    let failed = |e: turbo_tool_runner::Error| Exit::new(exit::USAGE, e.to_string());
    if args.list {
        let list = checkpoints.list(&workspace, owner).await.map_err(failed)?;
        if args.json {
            println!("{}", serde_json::to_string_pretty(&list).unwrap_or_default());
        } else if list.is_empty() {
            println!("{owner} has no checkpoints: it changed nothing through its tools");
        } else {
            for c in &list {
                println!("{}", line(c));
            }
        }
        return Ok(exit::OK);
    }
    if let Some(busy) = busy {
        return Err(Exit::new(exit::USAGE, busy));
    }
    let rewound = checkpoints.rewind(&workspace, owner, args.step).await.map_err(failed)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&rewound).unwrap_or_default());
    } else {
        println!("{} is back at checkpoint {}", workspace.display(), line(&rewound.to));
        println!(
            "the state it had is checkpoint {}: `turbo-coder rewind {id} --step {}` restores it",
            rewound.saved_as.n, rewound.saved_as.n
        );
    }
    Ok(exit::OK)
}

fn line(c: &Checkpoint) -> String {
    format!("{:>3}  {}  before {}", c.n, c.at.format("%Y-%m-%d %H:%M:%S"), c.label)
}
