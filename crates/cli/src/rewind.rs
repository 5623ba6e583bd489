//! `turbo-coder rewind TASK [--step N] [--list]`: puts a task's workspace back as it was before
//! the task's first change, or before its checkpoint N (each mutating tool call of the task is
//! preceded by one; see `turbo_tool_runner::Checkpoints`). The rewind is itself checkpointed,
//! so it can be undone with the number it prints.
//!
//! It reads the task from the configured store and the checkpoints from
//! `<data_dir>/checkpoints`: run it where the tools ran (this machine after `run`, the
//! tool-runner's host in the cluster, with its configuration).

use clap::Args;
use turbo_config::Config;
use turbo_tool_runner::{Checkpoint, Checkpoints};

use crate::exit::{self, Exit};

#[derive(Args, Debug)]
pub struct RewindArgs {
    /// Task id, or a unique prefix of it (at least 4 characters).
    pub id: String,
    /// Back to before checkpoint N (`--list` shows them); default: before the task's first change.
    #[arg(long)]
    pub step: Option<u32>,
    /// Only list the task's checkpoints.
    #[arg(long)]
    pub list: bool,
    #[arg(long)]
    pub json: bool,
}

pub async fn rewind(config: &Config, args: RewindArgs) -> Result<u8, Exit> {
    let store = crate::open_store(config).await?;
    let stored = store.find_task(&args.id).await.map_err(|e| match e {
        turbo_store::Error::NotFound { .. } | turbo_store::Error::Ambiguous { .. } => {
            Exit::new(exit::USAGE, e.to_string())
        }
        other => Exit::new(exit::STORAGE, other.to_string()),
    })?;
    let task = &stored.task;
    let workspace = std::path::Path::new(&stored.workspace);
    let checkpoints = Checkpoints::new(turbo_tool_runner::checkpoint_dir(config));
    let failed = |e: turbo_tool_runner::Error| Exit::new(exit::USAGE, e.to_string());
    if args.list {
        let list = checkpoints.list(workspace, task.id).await.map_err(failed)?;
        if args.json {
            println!("{}", serde_json::to_string_pretty(&list).unwrap_or_default());
        } else if list.is_empty() {
            println!("task {} has no checkpoints: it changed nothing through its tools", task.id);
        } else {
            for c in &list {
                println!("{}", line(c));
            }
        }
        return Ok(exit::OK);
    }
    if !task.status.is_terminal() && task.status.as_str() != "planned" {
        return Err(Exit::new(
            exit::USAGE,
            format!(
                "task {} is {}: its agents may still be changing the workspace; cancel it first (`turbo-coder tasks show {}`)",
                task.id, task.status, task.id
            ),
        ));
    }
    let rewound = checkpoints.rewind(workspace, task.id, args.step).await.map_err(failed)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&rewound).unwrap_or_default());
    } else {
        println!("{} is back at checkpoint {}", workspace.display(), line(&rewound.to));
        println!(
            "the state it had is checkpoint {}: `turbo-coder rewind {} --step {}` restores it",
            rewound.saved_as.n, task.id, rewound.saved_as.n
        );
    }
    Ok(exit::OK)
}

fn line(c: &Checkpoint) -> String {
    format!("{:>3}  {}  before {}", c.n, c.at.format("%Y-%m-%d %H:%M:%S"), c.label)
}
