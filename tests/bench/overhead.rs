//! Framework overhead per agent step: coder phases of `fs_read` steps driven by an instant model
//! double through the embedded stack (agent actors, local tool-runner, recorder writing to a
//! SQLite file, orchestrator), against the same call made directly.
//!
//! Two shapes of work: one long phase (`--steps` after `--warmup`), as the benchmark's headline,
//! and many tasks of one phase of `SHORT_PHASE` steps, the length real phases are capped at.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, ensure};
use serde_json::{Value, json};
use turbo_agent_worker::{AgentDeps, AgentSettings, AgentWorker, WorkerSpec};
use turbo_core::agent::AgentRole;
use turbo_core::event::{EventSink, NullSink};
use turbo_core::project::{Language, ProjectMetadata, ProjectType};
use turbo_core::task::{DevelopmentTask, TaskStatus};
use turbo_core::tool::ToolCall;
use turbo_llm::{ChatModel, Message};
use turbo_orchestrator::{OrchestratorService, Recorder, RunDeps, RunSettings};
use turbo_store::Store;
use turbo_tool_runner::{RunnerLimits, ToolRunnerClient};
use turbo_tools::{ToolContext, Toolbox, Workspace};

use crate::double::{Behaviour, ScriptedDouble};
use crate::stats::Stats;

/// The tool every step calls, on a small file.
const TOOL: &str = "fs_read";
const FILE: &str = "small.txt";
/// Tool limits of the default configuration (`run.tool_timeout_s`, `run.tool_output_cap`).
const TOOL_TIMEOUT: Duration = Duration::from_secs(120);
const OUTPUT_CAP: usize = 16 * 1024;
/// Tool steps of a short phase: the default `run.max_steps`.
pub const SHORT_PHASE: usize = 25;
/// Steps of history whose copy is timed on its own.
pub const COPY_STEPS: usize = 1_000;

pub struct Quarter {
    pub first: usize,
    pub last: usize,
    pub recorded: Stats,
    pub unrecorded: Stats,
}

pub struct Overhead {
    pub steps: usize,
    pub warmup: usize,
    /// `Toolbox::call` in a loop: the tool's own cost.
    pub toolbox: Stats,
    /// `ToolRunnerClient::local(..).call` in a loop: the tool plus the runner's per-call work.
    pub runner: Stats,
    /// Interval between consecutive coder model calls in one long phase.
    pub step: Stats,
    /// The same with events discarded (`NullSink`): no recorder, no SQLite writes.
    pub step_unrecorded: Stats,
    /// Both over consecutive quarters of the long phase.
    pub quarters: Vec<Quarter>,
    /// Intervals within phases of `SHORT_PHASE` steps, over `short_tasks` tasks (after as many
    /// again for warm-up), recorded.
    pub short: Stats,
    pub short_tasks: usize,
    /// Median time to copy and drop a `COPY_STEPS`-step history once, on its own, as
    /// `turbo_llm::toolcall::next_turn` copies the history into every request.
    pub history_copy: Duration,
    /// Long phase: submit to completed task with every event stored (recorder flushed).
    pub wall: Duration,
    /// Tool steps of the long phase (warm-up included), what `wall` is divided by.
    pub tool_steps: usize,
    pub events: usize,
    pub db_bytes: u64,
}

fn plan() -> Value {
    json!({
        "phases": [{
            "name": "loop",
            "description": "read small.txt until told to stop",
            "agent": "coder",
            "depends_on": [],
            "estimated_minutes": 1,
            "files_to_modify": [FILE]
        }],
        "confidence_score": 0.9,
        "risk_factors": []
    })
}

fn limits() -> RunnerLimits {
    RunnerLimits { timeout: TOOL_TIMEOUT, output_cap: OUTPUT_CAP, ..RunnerLimits::default() }
}

async fn time_calls<F, Fut>(n: usize, warmup: usize, mut call: F) -> anyhow::Result<Stats>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<bool>>,
{
    let mut samples = Vec::with_capacity(n);
    for i in 0..warmup + n {
        let started = Instant::now();
        let ok = call().await?;
        let took = started.elapsed();
        ensure!(ok, "the {TOOL} call of the baseline failed");
        if i >= warmup {
            samples.push(took);
        }
    }
    Ok(Stats::of(samples))
}

fn db_bytes(data: &Path) -> u64 {
    ["turbo.db", "turbo.db-wal", "turbo.db-shm"]
        .iter()
        .filter_map(|f| std::fs::metadata(data.join(f)).ok())
        .map(|m| m.len())
        .sum()
}

pub async fn measure(steps: usize, warmup: usize) -> anyhow::Result<Overhead> {
    let dir = tempfile::tempdir().context("create a temp dir")?;
    let workspace = dir.path().join("workspace");
    let data = dir.path().join("data");
    std::fs::create_dir_all(&workspace)?;
    let content: String =
        (1..=20).map(|i| format!("line {i}: the quick brown fox jumps over the lazy dog\n")).collect();
    std::fs::write(workspace.join(FILE), content)?;
    let workspace = workspace.canonicalize()?.to_string_lossy().into_owned();
    let arguments = json!({"path": FILE});

    // Baselines: the same call without actors, events or storage.
    let toolbox = Toolbox::standard();
    let ctx = ToolContext::new(Workspace::open(&workspace)?).with_timeout(TOOL_TIMEOUT).with_output_cap(OUTPUT_CAP);
    let toolbox_stats =
        time_calls(steps, warmup, || async { Ok(toolbox.call(TOOL, &arguments, &ctx).await?.success) }).await?;
    let runner = ToolRunnerClient::local(limits());
    let call = ToolCall { id: "baseline".into(), name: TOOL.into(), arguments: arguments.clone() };
    let runner_stats =
        time_calls(steps, warmup, || async { Ok(runner.call(&workspace, &call).await?.success) }).await?;

    // One long phase, recorded and not.
    let long = warmup + steps;
    let full = stack(&workspace, &data.join("recorded"), &arguments, 1, long, true).await?;
    let null = stack(&workspace, &data.join("discarded"), &arguments, 1, long, false).await?;
    let recorded: Vec<Duration> = full.phases.concat().into_iter().skip(warmup).collect();
    let unrecorded: Vec<Duration> = null.phases.concat().into_iter().skip(warmup).collect();
    let quarter = recorded.len().div_ceil(4).max(1);
    let quarters = recorded
        .chunks(quarter)
        .zip(unrecorded.chunks(quarter))
        .enumerate()
        .map(|(i, (r, u))| {
            let first = warmup + i * quarter + 1;
            Quarter {
                first,
                last: first + r.len() - 1,
                recorded: Stats::of(r.to_vec()),
                unrecorded: Stats::of(u.to_vec()),
            }
        })
        .collect();

    // Short phases: about as many measured steps, the first half of the tasks as warm-up.
    let short_tasks = (steps / (SHORT_PHASE - 1)).max(1);
    let short = stack(&workspace, &data.join("short"), &arguments, 2 * short_tasks, SHORT_PHASE, true).await?;
    let short_steps: Vec<Duration> = short.phases.into_iter().skip(short_tasks).flatten().collect();

    let tool_output = toolbox.call(TOOL, &arguments, &ctx).await?.content;
    let history_copy = history_copy(COPY_STEPS, &arguments, &tool_output);
    Ok(Overhead {
        steps,
        warmup,
        toolbox: toolbox_stats,
        runner: runner_stats,
        step: Stats::of(recorded),
        step_unrecorded: Stats::of(unrecorded),
        quarters,
        short: Stats::of(short_steps),
        short_tasks,
        history_copy,
        wall: full.wall,
        tool_steps: long,
        events: full.events,
        db_bytes: db_bytes(&data.join("recorded")),
    })
}

/// Median time to copy and then drop the coder's history after `steps` steps of the loop
/// (system prompt, phase prompt, then per step the assistant's call and the tool's result).
fn history_copy(steps: usize, arguments: &Value, tool_output: &str) -> Duration {
    let mut history = vec![Message::system("s".repeat(600)), Message::user("u".repeat(1_500))];
    for i in 0..steps {
        let call = ToolCall { id: format!("bench_{i}"), name: TOOL.into(), arguments: arguments.clone() };
        history.push(Message::assistant_tool_calls("", vec![call.clone()]));
        history.push(Message::tool_result(&call, tool_output));
    }
    let samples = (0..21)
        .map(|_| {
            let started = Instant::now();
            drop(std::hint::black_box(history.to_vec()));
            started.elapsed()
        })
        .collect();
    Stats::of(samples).p50
}

struct StackRun {
    /// Per task, the intervals between its consecutive coder model calls.
    phases: Vec<Vec<Duration>>,
    /// All tasks, first submit to the last event stored.
    wall: Duration,
    /// Events stored, all tasks.
    events: usize,
}

/// `tasks` tasks one after the other, each of one coder phase of `tool_steps` steps, through the
/// embedded stack wired as `turbo-coder run` wires it (crates/cli/src/embedded.rs). With
/// `record` false, events go to a `NullSink` instead of the recorder, to tell the loop's cost
/// from persistence's.
async fn stack(
    workspace: &str,
    data: &Path,
    arguments: &Value,
    tasks: usize,
    tool_steps: usize,
    record: bool,
) -> anyhow::Result<StackRun> {
    let store = Store::open_sqlite(&data.join("turbo.db")).await?;
    let project =
        ProjectMetadata::new("bench", "bench-overhead", ProjectType::ApiService, vec![Language::Python], workspace);
    store.upsert_project(&project).await?;
    let tool_steps_u32 = u32::try_from(tool_steps).context("too many steps")?;
    let planner = Arc::new(ScriptedDouble::new("bench-planner", Behaviour::Json(plan()), tasks));
    let coder = Arc::new(ScriptedDouble::new(
        "bench-coder",
        Behaviour::Tool { tool: TOOL.into(), arguments: arguments.clone(), tool_steps: tool_steps_u32 },
        tasks * (tool_steps + 1),
    ));
    let idle = Arc::new(ScriptedDouble::new("bench-idle", Behaviour::Idle, 0));

    let (recorder, recorder_task) = Recorder::start(store.clone());
    let sink = || -> Arc<dyn EventSink> { if record { recorder.sink() } else { Arc::new(NullSink) } };
    let tools = ToolRunnerClient::local(limits());
    let settings = AgentSettings::default();
    let roles = AgentRole::ALL
        .iter()
        .map(|&role| {
            let model: Arc<dyn ChatModel> = match role {
                AgentRole::Planner => planner.clone(),
                AgentRole::Coder => coder.clone(),
                _ => idle.clone(),
            };
            (
                role,
                AgentDeps { model, tools: tools.clone(), events: sink(), settings: settings.clone(), knowledge: None },
            )
        })
        .collect();
    let task_timeout = Duration::from_secs(3600);
    let worker = AgentWorker::start(WorkerSpec { roles, per_role: 1, call_timeout: task_timeout })
        .await
        .map_err(|e| anyhow!("cannot start the agents: {e}"))?;
    let service = OrchestratorService::start(RunDeps {
        agents: worker.client(),
        tools,
        store: store.clone(),
        events: sink(),
        settings: RunSettings { max_steps: tool_steps_u32 + 1, test_rounds: 0, review_rounds: 0, task_timeout },
    })
    .await
    .map_err(|e| anyhow!("cannot start the orchestrator: {e}"))?;

    let started = Instant::now();
    let run = async {
        let mut results = Vec::with_capacity(tasks);
        for _ in 0..tasks {
            let task =
                DevelopmentTask::from_request(project.id, "read small.txt again and again to time the agent loop");
            let id = service.handle.submit(task, workspace.to_owned(), true).await?;
            results.push((id, service.handle.wait(id).await?));
        }
        recorder.flush().await;
        anyhow::Ok(results)
    }
    .await;
    let wall = started.elapsed();
    service.shutdown().await;
    worker.stop().await;
    recorder.flush().await;
    let failed_writes = recorder.failed_writes();
    drop(recorder);
    recorder_task.abort();

    let mut events = 0;
    for (id, result) in run.context("the benchmark task did not run")? {
        if let Some(failure) = &result.failure {
            return Err(anyhow!("a benchmark task failed ({:?}): {}", failure.kind, failure.message));
        }
        ensure!(result.task.status == TaskStatus::Completed, "a benchmark task ended {:?}", result.task.status);
        let stored = store.events(id, 0).await?.len();
        if record {
            // Per step: a model call, a tool call and its result.
            ensure!(stored > 3 * tool_steps, "only {stored} events were stored for {tool_steps} steps");
        }
        events += stored;
    }
    ensure!(failed_writes == 0, "{failed_writes} events could not be stored");
    let times = coder.call_times();
    let per_task = tool_steps + 1;
    ensure!(times.len() == tasks * per_task, "the coder was called {} times, not {}", times.len(), tasks * per_task);
    // Interval i of a phase runs from its model call of step i+1 to that of step i+2: the
    // reply's handling, the events, the tool call, the history appended and the next request.
    let phases = times.chunks(per_task).map(|t| t.windows(2).map(|w| w[1] - w[0]).collect()).collect();
    Ok(StackRun { phases, wall, events })
}
