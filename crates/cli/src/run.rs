//! `turbo-coder run "TASK" [--apply]`: plan the task and, when applying, carry it out in the
//! workdir; dry run (plan only) otherwise, as the original tool did.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::Arc;

use clap::Args;
use tokio::sync::broadcast::error::RecvError;
use turbo_config::Config;
use turbo_core::agent::AgentRole;
use turbo_core::event::EventKind;
use turbo_core::ids::TaskId;
use turbo_core::knowledge::Knowledge;
use turbo_core::protocol::FailureKind;
use turbo_core::task::{DevelopmentTask, TaskStatus};
use turbo_core::validate::Validate;
use turbo_orchestrator::RunResult;
use turbo_orchestrator::local::{Embedded, Models};

use crate::exit::{self, Exit};
use crate::render::{Renderer, plan_text};

#[derive(Args, Debug)]
pub struct RunArgs {
    /// What to build, e.g. "add a /health endpoint returning 200 to app.py".
    pub task: String,
    /// Carry the plan out (write files, run tests, review). Without it: plan only, change nothing.
    #[arg(long)]
    pub apply: bool,
    /// Tool-loop steps per phase (MAX_STEPS).
    #[arg(long)]
    pub max_steps: Option<u32>,
    /// Planner model (PLANNER_MODEL).
    #[arg(long)]
    pub planner_model: Option<String>,
    /// Coder model (CODER_MODEL); also used by tester and reviewer unless they are configured.
    #[arg(long)]
    pub coder_model: Option<String>,
    /// The project directory to work in (default: the current directory).
    #[arg(long)]
    pub workdir: Option<PathBuf>,
    /// Print one JSON event per line on stdout instead of progress.
    #[arg(long)]
    pub json: bool,
}

fn apply_flags(config: &mut Config, args: &RunArgs) -> Result<(), Exit> {
    if let Some(n) = args.max_steps {
        config.run.max_steps = n;
    }
    if let Some(m) = &args.planner_model {
        config.models.planner.model = m.clone();
    }
    if let Some(m) = &args.coder_model {
        config.models.coder.model = m.clone();
    }
    if args.apply {
        config.run.dry_run = false;
    }
    config.validate().map_err(|e| Exit::new(exit::USAGE, e.to_string()))
}

pub(crate) fn workdir(args: &RunArgs, execute: bool) -> Result<PathBuf, Exit> {
    let dir = match &args.workdir {
        Some(d) => d.clone(),
        None => std::env::current_dir()
            .map_err(|e| Exit::new(exit::USAGE, format!("cannot read the current directory: {e}; pass --workdir")))?,
    };
    let dir = dir.canonicalize().map_err(|e| {
        Exit::new(
            exit::USAGE,
            format!("workdir {} does not exist or cannot be read: {e}; pass an existing --workdir", dir.display()),
        )
    })?;
    if !dir.is_dir() {
        return Err(Exit::new(exit::USAGE, format!("workdir {} is not a directory", dir.display())));
    }
    if execute {
        tempfile::NamedTempFile::new_in(&dir).map_err(|e| {
            Exit::new(
                exit::STORAGE,
                format!(
                    "cannot write in workdir {}: {e}; pick a writable --workdir or fix its permissions",
                    dir.display()
                ),
            )
        })?;
    }
    Ok(dir)
}

/// Checks the endpoints before starting, so a wrong host, key or model fails in a second with
/// one clear message instead of mid-run.
async fn preflight(models: &Models, execute: bool) -> Result<(), Exit> {
    let roles: &[AgentRole] = if execute {
        &[AgentRole::Planner, AgentRole::Coder, AgentRole::Tester, AgentRole::Reviewer]
    } else {
        &[AgentRole::Planner]
    };
    models.check(roles).await.map_err(exit::for_orchestrator_error)
}

/// The knowledge base the embedded agents retrieve context from: opened when
/// `knowledge.enabled`, else None. One that cannot be opened (no embedding model, an
/// unreachable embedding server, a dataset built with another model) is handed to `warn`,
/// whose message says why and how to fix it, and the agents work without retrieved context.
pub(crate) async fn open_knowledge(
    config: &Config,
    warn: impl FnOnce(&turbo_knowledge::Error),
) -> Option<Arc<dyn Knowledge>> {
    if !config.knowledge.enabled {
        return None;
    }
    match turbo_knowledge::KnowledgeBase::open(config).await {
        Ok(base) => Some(Arc::new(base)),
        Err(error) => {
            warn(&error);
            None
        }
    }
}

/// [`open_knowledge`] for a command run by a person: the warning goes to stderr.
async fn knowledge_for_run(config: &Config) -> Option<Arc<dyn Knowledge>> {
    open_knowledge(config, |error| {
        eprintln!(
            "warning: agents run without retrieved context: {error} \
             (or set knowledge.enabled = false to run without it)"
        )
    })
    .await
}

pub async fn run(config: &mut Config, args: RunArgs) -> Result<u8, Exit> {
    apply_flags(config, &args)?;
    let execute = !config.run.dry_run;
    // Validate the request before touching anything.
    let probe = DevelopmentTask::from_request(Default::default(), &args.task);
    if let Err(e) = probe.validate() {
        return Err(Exit::new(exit::USAGE, format!("the task is not usable: {e}")));
    }
    let dir = workdir(&args, execute)?;
    let store = crate::open_store(config).await?;
    let models = Models::connect(config).map_err(exit::for_orchestrator_error)?;
    preflight(&models, execute).await?;
    let project = crate::project::project_for(&store, &dir).await?;
    let task = DevelopmentTask::from_request(project.id, &args.task);

    let knowledge = knowledge_for_run(config).await;
    let embedded =
        Embedded::start(config, store.clone(), &models, knowledge).await.map_err(exit::for_orchestrator_error)?;
    let events = embedded.recorder.subscribe();
    let submitted = embedded.orchestrator.submit(task, dir.to_string_lossy().to_string(), execute).await;
    follow(embedded, events, &store, submitted, args.json, execute).await
}

/// `tasks execute ID`: carries out a task planned by an earlier dry run, with that plan.
pub async fn execute(config: &Config, id: &str, json: bool) -> Result<u8, Exit> {
    let store = crate::open_store(config).await?;
    let stored = store.find_task(id).await.map_err(|e| Exit::new(exit::USAGE, e.to_string()))?;
    if stored.task.status != TaskStatus::Planned {
        return Err(Exit::new(
            exit::USAGE,
            format!(
                "task {} is {}: only planned tasks can be executed; plan it again with `turbo-coder run`",
                stored.task.id, stored.task.status
            ),
        ));
    }
    tempfile::NamedTempFile::new_in(&stored.workspace).map_err(|e| {
        Exit::new(exit::STORAGE, format!("cannot write in the task's workdir {}: {e}", stored.workspace))
    })?;
    let models = Models::connect(config).map_err(exit::for_orchestrator_error)?;
    preflight(&models, true).await?;
    let knowledge = knowledge_for_run(config).await;
    let embedded =
        Embedded::start(config, store.clone(), &models, knowledge).await.map_err(exit::for_orchestrator_error)?;
    let events = embedded.recorder.subscribe();
    let submitted = embedded.orchestrator.execute(stored.task.id).await;
    follow(embedded, events, &store, submitted, json, true).await
}

/// Renders a submitted task's events until its run ends, then the summary; Ctrl-C cancels the
/// task (a second Ctrl-C stops waiting).
/// Asks at the terminal whether the waiting call may run; the answer goes to `answer`.
fn ask(approval_id: String, tool: String, answer: tokio::sync::mpsc::UnboundedSender<(String, bool)>) {
    // A blocking read on its own thread; a prompt left unanswered ends with the process.
    std::thread::spawn(move || {
        eprint!("approve the {tool} call {approval_id}? [y/N] ");
        let mut line = String::new();
        let approve = std::io::stdin().read_line(&mut line).is_ok() && matches!(line.trim(), "y" | "Y" | "yes");
        let _ = answer.send((approval_id, approve));
    });
}

async fn follow(
    embedded: Embedded,
    mut events: tokio::sync::broadcast::Receiver<turbo_core::event::TaskEvent>,
    store: &turbo_store::Store,
    submitted: Result<TaskId, turbo_orchestrator::Error>,
    json: bool,
    execute: bool,
) -> Result<u8, Exit> {
    let task_id = match submitted {
        Ok(id) => id,
        Err(e) => {
            embedded.shutdown().await;
            return Err(Exit::new(exit::USAGE, e.to_string()));
        }
    };
    let mut renderer = Renderer::new(json);
    let orchestrator = embedded.orchestrator.clone();
    let wait = orchestrator.wait(task_id);
    tokio::pin!(wait);
    let mut interrupted = false;
    // A call waiting for approval is asked about here when a person is at the terminal;
    // otherwise it waits for its timeout (or a decision through `serve`'s gRPC), then is denied.
    let approvals = embedded.tools.approvals().filter(|_| !json && std::io::stdin().is_terminal());
    let (answer, mut answers) = tokio::sync::mpsc::unbounded_channel::<(String, bool)>();
    let result = loop {
        tokio::select! {
            r = &mut wait => break r,
            Some((approval_id, approve)) = answers.recv() => {
                if let Some(approvals) = &approvals {
                    let by = format!("{}@terminal", crate::approvals::default_decider());
                    match approvals.decide(&approval_id, approve, &by, None).await {
                        Ok(true) => {}
                        Ok(false) => eprintln!("{approval_id} no longer waits (it expired or was decided elsewhere)"),
                        Err(e) => eprintln!("cannot decide {approval_id}: {e}"),
                    }
                }
            }
            ev = events.recv() => match ev {
                Ok(e) if e.task_id == task_id => {
                    renderer.event(&e);
                    if let (Some(_), EventKind::ApprovalRequested { approval_id, tool, .. }) = (&approvals, &e.kind) {
                        ask(approval_id.clone(), tool.clone(), answer.clone());
                    }
                }
                Ok(_) => {}
                // Fell behind the broadcast: the store has every event.
                Err(RecvError::Lagged(_)) => {
                    for e in store.events(task_id, renderer.last_seq).await.unwrap_or_default() {
                        renderer.event(&e);
                    }
                }
                Err(RecvError::Closed) => {}
            },
            _ = tokio::signal::ctrl_c() => {
                if interrupted {
                    renderer.finish();
                    return Err(Exit::new(exit::INTERRUPTED, format!("stopped waiting; task {task_id} may still be recorded as in progress")));
                }
                interrupted = true;
                eprintln!("cancelling the task (Ctrl-C again to stop waiting)...");
                let _ = orchestrator.cancel(task_id).await;
            }
        }
    };
    embedded.recorder.flush().await;
    for e in store.events(task_id, renderer.last_seq).await.unwrap_or_default() {
        renderer.event(&e);
    }
    renderer.finish();
    let failed_writes = embedded.recorder.failed_writes();
    embedded.shutdown().await;
    let result = result.map_err(|e| Exit::new(exit::INTERNAL, e.to_string()))?;
    let code = code_for(&result, execute);
    // Every model call counts, including those of attempts that were rejected.
    let usage = store.usage_by_role(task_id).await.map(|m| {
        m.into_values().fold(Default::default(), |mut a: turbo_core::tool::TokenUsage, u| {
            a += u;
            a
        })
    });
    let usage = usage.unwrap_or(result.usage);
    let failure = result.failure.as_ref().map(|f| Failure { kind: Some(f.kind), message: &f.message });
    report(&result.task, failure, code, usage, json, execute, renderer.elapsed());
    if failed_writes > 0 {
        eprintln!("warning: {failed_writes} event(s) could not be stored; `tasks show` will be incomplete");
    }
    Ok(code)
}

fn code_for(r: &RunResult, execute: bool) -> u8 {
    match (&r.failure, r.task.status) {
        (Some(f), _) => exit::for_failure(f.kind),
        (None, TaskStatus::Completed) => exit::OK,
        (None, TaskStatus::Planned) if !execute => exit::OK,
        (None, TaskStatus::Cancelled) => exit::for_failure(FailureKind::Cancelled),
        (None, _) => exit::INTERNAL,
    }
}

/// Why a run did not complete, as the summary shows it.
pub(crate) struct Failure<'a> {
    /// None when it is not known (a task run by a cluster: its API carries the status and the
    /// reason, not the kind).
    pub kind: Option<FailureKind>,
    pub message: &'a str,
}

/// The end of a run: the JSON result line, or the summary a person reads.
pub(crate) fn report(
    task: &DevelopmentTask,
    failure: Option<Failure<'_>>,
    code: u8,
    usage: turbo_core::tool::TokenUsage,
    json: bool,
    execute: bool,
    elapsed: std::time::Duration,
) {
    if json {
        let summary = serde_json::json!({
            "type": "result",
            "task_id": task.id,
            "status": task.status,
            "exit_code": code,
            "failure": failure.as_ref().map(|f| serde_json::json!({"kind": f.kind, "message": f.message})),
            "generated_files": task.generated_files,
            "prompt_tokens": usage.prompt_tokens,
            "completion_tokens": usage.completion_tokens,
        });
        println!("{summary}");
    } else {
        print_summary(task, failure, usage, execute, elapsed);
    }
}

fn print_summary(
    t: &DevelopmentTask,
    failure: Option<Failure<'_>>,
    usage: turbo_core::tool::TokenUsage,
    execute: bool,
    elapsed: std::time::Duration,
) {
    println!();
    if let Some(plan) = t.execution_plan.as_ref().filter(|_| !execute) {
        print!("{}", plan_text(plan));
    }
    match &failure {
        Some(f) => println!("✘ task {} {}: {}", t.id, t.status, f.message),
        None if !execute => {
            println!("dry run: nothing was changed. Run again with --apply to carry out this plan (task {}).", t.id)
        }
        None => println!("✔ task {} {}", t.id, t.status),
    }
    if !t.generated_files.is_empty() {
        println!("files changed: {}", t.generated_files.join(", "));
    }
    if let Some(tr) = &t.test_results {
        println!("tests: `{}` {} (round {})", tr.command, if tr.success { "passed" } else { "failed" }, tr.rounds);
    }
    if let Some(review) = &t.review_status {
        println!("review: {review}");
        for f in &t.feedback {
            println!("  {f}");
        }
    }
    println!(
        "tokens: {} prompt + {} completion · {:.1}s",
        usage.prompt_tokens,
        usage.completion_tokens,
        elapsed.as_secs_f64()
    );
}
