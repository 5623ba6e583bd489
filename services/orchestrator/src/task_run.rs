//! One task's run, as an actor linked to the orchestrator: plan, then (when executing) the
//! phases in dependency order, with test-fix and review-fix rounds, status transitions,
//! progress, cancellation and the task's deadline.
//!
//! A run can also resume a task an earlier orchestrator left `in_progress` or `blocked` (it died): the
//! stored plan runs again from the first phase, in execution order, that has not succeeded
//! (the store's phase rows say which), keeping the task's baseline for its diff and counting
//! attempts on from the stored ones. A task whose workspace is gone fails with the reason.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use ractor::{Actor, ActorProcessingErr, ActorRef};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;
use turbo_agent_worker::AgentClient;
use turbo_core::agent::AgentRole;
use turbo_core::event::{EventKind, EventSink};
use turbo_core::plan::{ExecutionPhase, ExecutionPlan};
use turbo_core::protocol::{AgentFailure, FailureKind, PhaseAssignment, PhaseOutcome, PlanRequest, ReviewVerdict};
use turbo_core::task::{DevelopmentTask, TaskStatus};
use turbo_core::tool::TokenUsage;
use turbo_store::{PhaseStatus, Store};
use turbo_tool_runner::ToolRunnerClient;

use crate::orchestrator::OrchestratorMsg;

/// How long agents get to stop after their task is cancelled before the run stops waiting.
const CANCEL_GRACE: Duration = Duration::from_secs(10);

/// How runs behave; from the `[run]` config section.
#[derive(Clone, Debug)]
pub struct RunSettings {
    pub max_steps: u32,
    pub test_rounds: u32,
    pub review_rounds: u32,
    pub task_timeout: Duration,
}

impl Default for RunSettings {
    fn default() -> Self {
        Self { max_steps: 25, test_rounds: 3, review_rounds: 1, task_timeout: Duration::from_secs(3600) }
    }
}

/// What every run needs; shared by all runs of one orchestrator.
#[derive(Clone)]
pub struct RunDeps {
    pub agents: AgentClient,
    pub tools: ToolRunnerClient,
    pub store: Store,
    pub events: Arc<dyn EventSink>,
    pub settings: RunSettings,
}

/// How a run ended.
#[derive(Clone, Debug)]
pub struct RunResult {
    pub task: DevelopmentTask,
    /// Why it did not complete (None when it completed, or was planned in a dry run).
    pub failure: Option<AgentFailure>,
    pub usage: TokenUsage,
}

pub(crate) struct TaskRunArgs {
    pub task: DevelopmentTask,
    pub workspace: String,
    pub execute: bool,
    /// Continue an interrupted run of this `in_progress` (or `blocked`) task instead of starting it.
    pub resume: bool,
    pub cancel: CancellationToken,
    pub deps: RunDeps,
    pub orchestrator: ActorRef<OrchestratorMsg>,
    /// The span of the request that started the run (none for a resumed run).
    pub span: tracing::Span,
}

pub(crate) enum TaskRunMsg {
    Start,
}

pub(crate) struct TaskRun;

pub(crate) struct TaskRunState {
    args: Option<TaskRunArgs>,
}

impl Actor for TaskRun {
    type Msg = TaskRunMsg;
    type State = TaskRunState;
    type Arguments = TaskRunArgs;

    async fn pre_start(&self, _: ActorRef<TaskRunMsg>, args: TaskRunArgs) -> Result<TaskRunState, ActorProcessingErr> {
        Ok(TaskRunState { args: Some(args) })
    }

    async fn post_start(&self, myself: ActorRef<TaskRunMsg>, _: &mut TaskRunState) -> Result<(), ActorProcessingErr> {
        myself.send_message(TaskRunMsg::Start)?;
        Ok(())
    }

    async fn handle(
        &self,
        myself: ActorRef<TaskRunMsg>,
        _: TaskRunMsg,
        state: &mut TaskRunState,
    ) -> Result<(), ActorProcessingErr> {
        let Some(args) = state.args.take() else { return Ok(()) };
        let orchestrator = args.orchestrator.clone();
        let span = tracing::info_span!(parent: &args.span, "task_run", task_id = %args.task.id, resume = args.resume);
        let result = Run::new(args).run().instrument(span).await;
        let _ = orchestrator.send_message(OrchestratorMsg::Finished { result: Box::new(result) });
        myself.stop(None);
        Ok(())
    }
}

struct Run {
    task: DevelopmentTask,
    workspace: String,
    execute: bool,
    resume: bool,
    cancel: CancellationToken,
    deps: RunDeps,
    usage: TokenUsage,
    attempts: HashMap<String, u32>,
    outline: Vec<String>,
}

/// The other phases, one line each, for agents' prompts.
fn outline(plan: &ExecutionPlan) -> Vec<String> {
    plan.phases.iter().map(|p| format!("- {} ({}): {}", p.name, p.agent_type, p.description)).collect()
}

/// A run stops at the first failure; `?` carries it to [`Run::run`].
type Step<T> = Result<T, AgentFailure>;

impl Run {
    fn new(a: TaskRunArgs) -> Self {
        Run {
            task: a.task,
            workspace: a.workspace,
            execute: a.execute,
            resume: a.resume,
            cancel: a.cancel,
            deps: a.deps,
            usage: TokenUsage::default(),
            attempts: HashMap::new(),
            outline: Vec::new(),
        }
    }

    async fn run(mut self) -> RunResult {
        let deadline = self.deps.settings.task_timeout;
        let cancel = self.cancel.clone();
        let started = tokio::time::Instant::now();
        // At the deadline the run is cancelled, so agents stop their model calls and tools and
        // the run ends in order; an agent that ignores cancellation is cut off after a grace.
        let timer = async {
            tokio::time::sleep(deadline).await;
            cancel.cancel();
            tokio::time::sleep(CANCEL_GRACE).await;
        };
        let outcome = tokio::select! {
            r = self.steps() => r,
            _ = timer => Err(AgentFailure::new(FailureKind::Cancelled, "the agents did not stop after cancellation")),
        };
        let outcome = match outcome {
            Err(f) if f.kind == FailureKind::Cancelled && started.elapsed() >= deadline => Err(AgentFailure::new(
                FailureKind::TimedOut,
                format!("the task did not finish within {}s; raise run.task_timeout_s", deadline.as_secs()),
            )),
            other => other,
        };
        let failure = match outcome {
            Ok(()) => None,
            Err(f) => {
                let to = if f.kind == FailureKind::Cancelled || cancel.is_cancelled() && f.kind != FailureKind::TimedOut
                {
                    TaskStatus::Cancelled
                } else {
                    TaskStatus::Failed
                };
                let _ = self.set_status(to, Some(f.message.clone())).await;
                Some(f)
            }
        };
        if self.execute {
            self.deps.tools.end_task(self.task.id).await;
        }
        RunResult { task: self.task, failure, usage: self.usage }
    }

    fn emit(&self, kind: EventKind) {
        self.deps.events.emit(self.task.id, kind);
    }

    async fn save(&self) -> Step<()> {
        self.deps
            .store
            .update_task(&self.task)
            .await
            .map_err(|e| AgentFailure::new(FailureKind::Storage, e.to_string()))
    }

    async fn set_status(&mut self, to: TaskStatus, reason: Option<String>) -> Step<()> {
        let from = self.task.status;
        self.task.status = from.transition(to).map_err(|e| AgentFailure::new(FailureKind::Internal, e.to_string()))?;
        if to.is_terminal() {
            self.task.completed_at = Some(Utc::now());
        }
        // Stored first: a watcher that sees the status change and reads the task finds it.
        self.save().await?;
        self.emit(EventKind::StatusChanged { from, to, reason });
        Ok(())
    }

    async fn steps(&mut self) -> Step<()> {
        // A task planned earlier (a dry run the user reviewed, or a run being resumed) runs
        // that very plan.
        let stored_plan =
            matches!(self.task.status, TaskStatus::Planned | TaskStatus::InProgress | TaskStatus::Blocked);
        let plan = match self.task.execution_plan.clone().filter(|_| stored_plan) {
            Some(plan) => {
                self.outline = outline(&plan);
                plan
            }
            None if self.resume => {
                return Err(AgentFailure::new(
                    FailureKind::Internal,
                    "the task has no stored plan to resume with; create the task again",
                ));
            }
            None => self.plan().await?,
        };
        if !self.execute {
            return Ok(());
        }
        if self.resume && !std::path::Path::new(&self.workspace).is_dir() {
            return Err(AgentFailure::new(
                FailureKind::Storage,
                format!(
                    "the task was interrupted and cannot be resumed: its workspace {} is gone; restore it and create the task again",
                    self.workspace
                ),
            ));
        }
        self.deps
            .tools
            .begin_task(self.task.id, &self.workspace)
            .await
            .map_err(|e| AgentFailure::new(FailureKind::Tool, e.to_string()))?;
        if self.task.status == TaskStatus::Planned {
            self.task.started_at = Some(Utc::now());
        }
        if self.task.status != TaskStatus::InProgress {
            self.set_status(TaskStatus::InProgress, None).await?;
        }
        let order: Vec<ExecutionPhase> = plan
            .execution_order()
            .ok_or_else(|| AgentFailure::new(FailureKind::InvalidPlan, "the plan's dependencies cannot be ordered"))?
            .into_iter()
            .cloned()
            .collect();
        let total = order.len();
        let done = if self.resume { self.resume_point(&order).await? } else { 0 };
        for (i, phase) in order.iter().enumerate().skip(done) {
            self.task.current_phase = Some(phase.name.clone());
            self.save().await?;
            match phase.role() {
                Some(AgentRole::Tester) => {
                    self.test_phase(phase).await?;
                }
                Some(AgentRole::Reviewer) => self.review_phase(phase).await?,
                Some(role) => {
                    self.agent(role, phase, None).await?;
                }
                None => {
                    return Err(AgentFailure::new(
                        FailureKind::InvalidPlan,
                        format!("phase '{}' names no agent", phase.name),
                    ));
                }
            }
            self.task.progress_percentage = ((i + 1) as f64 / total as f64 * 100.0).min(100.0);
            self.emit(EventKind::Progress { percent: self.task.progress_percentage });
            self.save().await?;
        }
        self.task.current_phase = None;
        self.set_status(TaskStatus::Completed, None).await
    }

    /// How many phases of `order` an earlier run finished: the leading phases whose stored row
    /// succeeded with the phase's own agent (a phase whose last row is a fix round of the coder
    /// did not finish: its tests or review must run again). Seeds the attempt counters from the
    /// rows, so a phase run again counts on.
    async fn resume_point(&mut self, order: &[ExecutionPhase]) -> Step<usize> {
        let rows = self
            .deps
            .store
            .phases(self.task.id)
            .await
            .map_err(|e| AgentFailure::new(FailureKind::Storage, e.to_string()))?;
        for row in &rows {
            if let Some(role) = row.role {
                self.attempts.insert(format!("{role}:{}", row.name), row.attempt);
            }
        }
        let finished = |phase: &ExecutionPhase| {
            rows.iter().any(|r| {
                r.name == phase.name && r.status == PhaseStatus::Succeeded && r.role.is_some() && r.role == phase.role()
            })
        };
        let done = order.iter().take_while(|p| finished(p)).count();
        self.task.progress_percentage =
            if order.is_empty() { 0.0 } else { (done as f64 / order.len() as f64 * 100.0).min(100.0) };
        tracing::info!(
            task_id = %self.task.id, done, phases = order.len(),
            next = order.get(done).map(|p| p.name.as_str()).unwrap_or("none"),
            "resuming an interrupted task"
        );
        Ok(done)
    }

    async fn plan(&mut self) -> Step<ExecutionPlan> {
        let request = PlanRequest { task: self.task.clone(), workspace: self.workspace.clone() };
        let outcome = self.deps.agents.plan(request, self.cancel.clone()).await?;
        self.usage += outcome.usage;
        let plan = outcome.plan;
        self.deps.store.save_plan(&plan).await.map_err(|e| AgentFailure::new(FailureKind::Storage, e.to_string()))?;
        self.outline = outline(&plan);
        self.task.estimated_duration = Some(plan.total_estimated_duration);
        self.task.assigned_agents =
            plan.phases.iter().filter_map(|p| p.role()).map(|r| r.to_string()).fold(Vec::new(), |mut v, r| {
                if !v.contains(&r) {
                    v.push(r);
                }
                v
            });
        self.task.execution_plan = Some(plan.clone());
        self.emit(EventKind::PlanReady {
            plan_id: plan.plan_id,
            version: plan.version,
            phases: plan.phases.iter().map(|p| p.name.clone()).collect(),
            confidence: plan.confidence_score,
            attempts: outcome.attempts,
        });
        self.set_status(TaskStatus::Planned, None).await?;
        Ok(plan)
    }

    /// Runs one agent on `phase`; `feedback` asks it to fix what tests or review found.
    async fn agent(&mut self, role: AgentRole, phase: &ExecutionPhase, feedback: Option<String>) -> Step<PhaseOutcome> {
        let attempt = {
            let n = self.attempts.entry(format!("{role}:{}", phase.name)).or_insert(0);
            *n += 1;
            *n
        };
        self.emit(EventKind::PhaseStarted { phase: phase.name.clone(), role, attempt });
        let assignment = PhaseAssignment {
            task_id: self.task.id,
            plan_id: self.task.execution_plan.as_ref().map(|p| p.plan_id).unwrap_or_default(),
            project_id: Some(self.task.project_id),
            task_title: self.task.title.clone(),
            task_description: self.task.description.clone(),
            phase: phase.clone(),
            plan_outline: self.outline.clone(),
            attempt,
            workspace: self.workspace.clone(),
            feedback,
            max_steps: self.deps.settings.max_steps,
        };
        let result = self.deps.agents.run_phase(role, assignment, self.cancel.clone()).await;
        let (success, summary) = match &result {
            Ok(o) => (o.success, o.summary.clone()),
            Err(f) => (false, f.message.clone()),
        };
        self.emit(EventKind::PhaseFinished { phase: phase.name.clone(), role, success, summary });
        let outcome = result?;
        self.usage += outcome.usage;
        for f in &outcome.files_changed {
            if !self.task.generated_files.contains(f) {
                self.task.generated_files.push(f.clone());
            }
        }
        Ok(outcome)
    }

    fn fix_phase(phase: &ExecutionPhase, what: &str) -> ExecutionPhase {
        ExecutionPhase {
            agent_type: AgentRole::Coder.to_string(),
            description: format!("Fix the problems {what} reported for phase '{}': {}", phase.name, phase.description),
            ..phase.clone()
        }
    }

    /// Runs the tests; failures go back to the coder up to `test_rounds` times.
    async fn test_phase(&mut self, phase: &ExecutionPhase) -> Step<PhaseOutcome> {
        let rounds = self.deps.settings.test_rounds;
        let mut round = 0;
        loop {
            let out = self.agent(AgentRole::Tester, phase, None).await?;
            if out.test.is_some() {
                self.task.test_results = out.test.clone();
            }
            if out.success {
                return Ok(out);
            }
            let output = out.test.as_ref().map(|t| t.output_tail.clone()).unwrap_or_else(|| out.summary.clone());
            if round >= rounds {
                return Err(AgentFailure::new(
                    FailureKind::TestsFailed,
                    format!(
                        "tests still fail after {rounds} fix round(s): {}",
                        turbo_core::event::clip(&output, 1_500)
                    ),
                ));
            }
            round += 1;
            let command = out.test.as_ref().map(|t| t.command.as_str()).unwrap_or("the tests");
            let feedback = format!("`{command}` failed:\n{output}");
            self.agent(AgentRole::Coder, &Self::fix_phase(phase, "the tests"), Some(feedback)).await?;
        }
    }

    /// Reviews the task's diff; requested changes go back to the coder up to `review_rounds`
    /// times, and tests (when the project has them) run again after each fix.
    async fn review_phase(&mut self, phase: &ExecutionPhase) -> Step<()> {
        let rounds = self.deps.settings.review_rounds;
        let mut round = 0;
        loop {
            let out = self.agent(AgentRole::Reviewer, phase, None).await?;
            let Some(review) = out.review else {
                return Err(AgentFailure::new(FailureKind::Internal, "the reviewer returned no review"));
            };
            self.task.review_status = Some(review.verdict.to_string());
            self.task.reviewer = Some(AgentRole::Reviewer.to_string());
            self.task.feedback = review
                .findings
                .iter()
                .map(|f| match (&f.path, f.line) {
                    (Some(p), Some(l)) => format!("[{}] {p}:{l}: {}", f.severity, f.message),
                    (Some(p), None) => format!("[{}] {p}: {}", f.severity, f.message),
                    _ => format!("[{}] {}", f.severity, f.message),
                })
                .collect();
            if review.verdict == ReviewVerdict::Approve {
                return Ok(());
            }
            if round >= rounds {
                return Err(AgentFailure::new(
                    FailureKind::ChangesRequested,
                    format!("the reviewer requested changes: {}; {}", review.summary, self.task.feedback.join("; ")),
                ));
            }
            round += 1;
            let feedback =
                format!("The reviewer requested changes: {}\n{}", review.summary, self.task.feedback.join("\n"));
            self.agent(AgentRole::Coder, &Self::fix_phase(phase, "the review"), Some(feedback)).await?;
            if self.task.test_results.is_some() {
                let mut test = phase.clone();
                test.agent_type = AgentRole::Tester.to_string();
                self.test_phase(&test).await?;
            }
        }
    }
}
