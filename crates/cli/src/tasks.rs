//! `turbo-coder tasks list|show|execute`: what was run, read back from the store (or, with
//! `--server`, from the orchestrator: `remote.rs`, which prints through the same functions).

use std::collections::BTreeMap;

use clap::Subcommand;
use turbo_config::Config;
use turbo_core::agent::AgentRole;
use turbo_core::task::TaskStatus;
use turbo_core::tool::TokenUsage;
use turbo_store::{PhaseRow, StoredTask, TaskFilter, TaskSummary, ToolCallRow};

use crate::exit::{self, Exit};
use crate::render::plan_text;

#[derive(Subcommand, Debug)]
pub enum TasksCommand {
    /// Newest tasks first.
    List {
        /// Only tasks in this status (created, planned, in_progress, blocked, completed, failed, cancelled).
        #[arg(long)]
        status: Option<TaskStatus>,
        #[arg(long, default_value_t = 20)]
        limit: u64,
        #[arg(long)]
        json: bool,
    },
    /// Carry out a task planned by a dry run, with the plan that was shown.
    Execute {
        /// Task id, or a unique prefix of it (at least 4 characters).
        id: String,
        #[arg(long)]
        json: bool,
    },
    /// One task: plan, phases, tool calls, tests, review, tokens.
    Show {
        /// Task id, or a unique prefix of it (at least 4 characters).
        id: String,
        #[arg(long)]
        json: bool,
    },
}

fn storage(e: turbo_store::Error) -> Exit {
    match e {
        turbo_store::Error::NotFound { .. } | turbo_store::Error::Ambiguous { .. } => {
            Exit::new(exit::USAGE, e.to_string())
        }
        other => Exit::new(exit::STORAGE, other.to_string()),
    }
}

pub async fn tasks(config: &Config, command: TasksCommand) -> Result<u8, Exit> {
    match command {
        TasksCommand::Execute { id, json } => crate::run::execute(config, &id, json).await,
        read => read_back(config, read).await,
    }
}

async fn read_back(config: &Config, command: TasksCommand) -> Result<u8, Exit> {
    let store = crate::open_store(config).await?;
    match command {
        TasksCommand::List { status, limit, json } => {
            let rows = store.list_tasks(TaskFilter { status, limit }).await.map_err(storage)?;
            print_list(&rows, json);
        }
        TasksCommand::Execute { id, json } => return crate::run::execute(config, &id, json).await,
        TasksCommand::Show { id, json } => {
            let stored = store.find_task(&id).await.map_err(storage)?;
            let phases = store.phases(stored.task.id).await.map_err(storage)?;
            let calls = store.tool_calls(stored.task.id).await.map_err(storage)?;
            let usage = store.usage_by_role(stored.task.id).await.map_err(storage)?;
            print_show(&stored, &phases, &calls, &usage, json);
        }
    }
    Ok(exit::OK)
}

/// `tasks list`: a JSON array, or one line per task.
pub(crate) fn print_list(rows: &[TaskSummary], json: bool) {
    if json {
        let v: Vec<_> = rows
            .iter()
            .map(|r| {
                serde_json::json!({
                    "id": r.id, "title": r.title, "status": r.status, "progress": r.progress,
                    "current_phase": r.current_phase, "created_at": r.created_at, "total_tokens": r.total_tokens,
                })
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
    } else if rows.is_empty() {
        println!("no tasks yet: run `turbo-coder run \"TASK\"`");
    } else {
        println!("{:<8}  {:<11}  {:>5}  {:>8}  {:<16}  TITLE", "ID", "STATUS", "DONE", "TOKENS", "CREATED");
        for r in rows {
            println!(
                "{:<8}  {:<11}  {:>4.0}%  {:>8}  {:<16}  {}",
                &r.id.to_string()[..8],
                r.status.as_str(),
                r.progress,
                r.total_tokens,
                r.created_at.format("%Y-%m-%d %H:%M"),
                turbo_core::event::clip(&r.title, 60)
            );
        }
    }
}

/// `tasks show`: one task with its plan, phases, tool calls, tests, review and tokens.
pub(crate) fn print_show(
    stored: &StoredTask,
    phases: &[PhaseRow],
    calls: &[ToolCallRow],
    usage: &BTreeMap<AgentRole, TokenUsage>,
    json: bool,
) {
    let task = &stored.task;
    if json {
        let v = serde_json::json!({
            "task": task,
            "workspace": stored.workspace,
            "phases": phases.iter().map(|p| serde_json::json!({"name": p.name, "role": p.role, "status": p.status.as_str(), "attempt": p.attempt, "summary": p.summary})).collect::<Vec<_>>(),
            "tool_calls": calls.iter().map(|c| serde_json::json!({"phase": c.phase, "step": c.step, "tool": c.tool, "arguments": c.arguments, "success": c.success, "duration_ms": c.duration_ms})).collect::<Vec<_>>(),
            "usage": usage.iter().map(|(r, u)| (r.to_string(), serde_json::json!({"prompt_tokens": u.prompt_tokens, "completion_tokens": u.completion_tokens}))).collect::<serde_json::Map<_, _>>(),
        });
        println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
        return;
    }
    println!(
        "task {}\n  title     {}\n  status    {} ({:.0}%)\n  workspace {}\n  created   {}",
        task.id, task.title, task.status, task.progress_percentage, stored.workspace, task.created_at
    );
    if let Some(plan) = &task.execution_plan {
        print!("{}", plan_text(plan));
    }
    if !phases.is_empty() {
        println!("phases:");
        for p in phases {
            println!(
                "  {:<24} {:<9} {:<10} attempt {}  {}",
                p.name,
                p.role.map(|r| r.to_string()).unwrap_or_default(),
                p.status.as_str(),
                p.attempt,
                p.summary
                    .as_deref()
                    .map(|s| turbo_core::event::clip(s.lines().next().unwrap_or(""), 80))
                    .unwrap_or_default()
            );
        }
    }
    if !calls.is_empty() {
        println!("tool calls: {}", calls.len());
        for c in calls {
            let mark = match c.success {
                Some(true) => "✓",
                Some(false) => "✗",
                None => "…",
            };
            println!(
                "  {mark} [{}#{}] {} {}",
                c.phase,
                c.step,
                c.tool,
                turbo_core::event::clip(&c.arguments.to_string(), 100)
            );
        }
    }
    if !task.generated_files.is_empty() {
        println!("files changed: {}", task.generated_files.join(", "));
    }
    if let Some(t) = &task.test_results {
        println!("tests: `{}` {}", t.command, if t.success { "passed" } else { "failed" });
    }
    if let Some(r) = &task.review_status {
        println!("review: {r}");
        for f in &task.feedback {
            println!("  {f}");
        }
    }
    for (role, u) in usage {
        println!("tokens {role:<9} {} prompt + {} completion", u.prompt_tokens, u.completion_tokens);
    }
}
