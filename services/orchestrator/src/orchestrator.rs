//! The orchestrator actor: owns the set of running tasks. It validates and stores a submitted
//! task, starts a linked [`TaskRun`] actor for it, answers waiters when the run ends, cancels on
//! request, and marks a task failed if its runner crashes. In the cluster it also resumes, at
//! start, the tasks an earlier orchestrator left running, and at shutdown it detaches from its
//! runs (they stay `in_progress` for the next orchestrator) instead of cancelling them.

use std::collections::{HashMap, VecDeque};

use ractor::{Actor, ActorProcessingErr, ActorRef, SupervisionEvent};
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;
use turbo_core::event::EventKind;
use turbo_core::ids::TaskId;
use turbo_core::protocol::{AgentFailure, FailureKind};
use turbo_core::task::{DevelopmentTask, TaskStatus};
use turbo_core::tool::TokenUsage;
use turbo_core::validate::Validate;

use crate::error::{Error, Result};
use crate::task_run::{RunDeps, RunResult, TaskRun, TaskRunArgs};

/// Finished results kept for late waiters (a wait that arrives just after the run ended).
const FINISHED_KEPT: usize = 1024;

pub(crate) enum OrchestratorMsg {
    Submit {
        task: Box<DevelopmentTask>,
        workspace: String,
        execute: bool,
        reply: oneshot::Sender<Result<TaskId>>,
    },
    /// Carry out a task that was planned earlier, with its stored plan.
    Execute {
        task_id: TaskId,
        reply: oneshot::Sender<Result<TaskId>>,
    },
    Wait {
        task_id: TaskId,
        reply: oneshot::Sender<Result<RunResult>>,
    },
    Cancel {
        task_id: TaskId,
        reply: oneshot::Sender<bool>,
    },
    /// Cancel a task whether it is running here or only stored.
    CancelTask {
        task_id: TaskId,
        reason: Option<String>,
        reply: oneshot::Sender<Result<CancelOutcome>>,
    },
    Running {
        reply: oneshot::Sender<Vec<TaskId>>,
    },
    /// Resume every task the store has `in_progress` that is not running here (an earlier
    /// orchestrator died running it); fail the ones left `created` (it died planning them).
    ResumeInterrupted {
        reply: oneshot::Sender<Result<Vec<TaskId>>>,
    },
    /// Stop every run where it is, recording nothing: the tasks stay `in_progress` and the
    /// next orchestrator resumes them.
    Detach {
        reply: oneshot::Sender<Vec<TaskId>>,
    },
    Finished {
        result: Box<RunResult>,
    },
}

pub(crate) struct Orchestrator;

/// What [`OrchestratorMsg::CancelTask`] did.
#[derive(Debug)]
pub enum CancelOutcome {
    /// The task is running here: its run was asked to stop and will record the cancellation
    /// as it ends (`wait` for it).
    Stopping,
    /// The task was not running (e.g. planned by a dry run): it is now cancelled, as stored.
    Cancelled(Box<DevelopmentTask>),
}

struct Running {
    cancel: CancellationToken,
    runner: ractor::ActorCell,
    task: DevelopmentTask,
}

pub(crate) struct OrchestratorState {
    deps: RunDeps,
    running: HashMap<TaskId, Running>,
    waiters: HashMap<TaskId, Vec<oneshot::Sender<Result<RunResult>>>>,
    finished: HashMap<TaskId, RunResult>,
    finished_order: VecDeque<TaskId>,
}

impl OrchestratorState {
    fn finish(&mut self, result: RunResult) {
        let id = result.task.id;
        self.running.remove(&id);
        for w in self.waiters.remove(&id).unwrap_or_default() {
            let _ = w.send(Ok(result.clone()));
        }
        self.finished.insert(id, result);
        self.finished_order.push_back(id);
        while self.finished_order.len() > FINISHED_KEPT {
            if let Some(old) = self.finished_order.pop_front() {
                self.finished.remove(&old);
            }
        }
    }
}

impl Actor for Orchestrator {
    type Msg = OrchestratorMsg;
    type State = OrchestratorState;
    type Arguments = RunDeps;

    async fn pre_start(
        &self,
        _: ActorRef<OrchestratorMsg>,
        deps: RunDeps,
    ) -> std::result::Result<OrchestratorState, ActorProcessingErr> {
        Ok(OrchestratorState {
            deps,
            running: HashMap::new(),
            waiters: HashMap::new(),
            finished: HashMap::new(),
            finished_order: VecDeque::new(),
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<OrchestratorMsg>,
        msg: OrchestratorMsg,
        state: &mut OrchestratorState,
    ) -> std::result::Result<(), ActorProcessingErr> {
        match msg {
            OrchestratorMsg::Submit { task, workspace, execute, reply } => {
                let _ = reply.send(submit(myself, state, *task, workspace, execute).await);
            }
            OrchestratorMsg::Execute { task_id, reply } => {
                let _ = reply.send(execute(myself, state, task_id).await);
            }
            OrchestratorMsg::Wait { task_id, reply } => {
                if let Some(done) = state.finished.get(&task_id) {
                    let _ = reply.send(Ok(done.clone()));
                } else if state.running.contains_key(&task_id) {
                    state.waiters.entry(task_id).or_default().push(reply);
                } else {
                    // Not run by this orchestrator: answer from the store.
                    let r = match state.deps.store.get_task(task_id).await {
                        Ok(Some(stored)) => {
                            Ok(RunResult { task: stored.task, failure: None, usage: TokenUsage::default() })
                        }
                        Ok(None) => Err(Error::UnknownTask(task_id)),
                        Err(e) => Err(e.into()),
                    };
                    let _ = reply.send(r);
                }
            }
            OrchestratorMsg::Cancel { task_id, reply } => {
                let found = state.running.get(&task_id).map(|r| r.cancel.cancel()).is_some();
                let _ = reply.send(found);
            }
            OrchestratorMsg::CancelTask { task_id, reason, reply } => {
                let _ = reply.send(cancel_task(state, task_id, reason).await);
            }
            OrchestratorMsg::Running { reply } => {
                let _ = reply.send(state.running.keys().copied().collect());
            }
            OrchestratorMsg::ResumeInterrupted { reply } => {
                let _ = reply.send(resume_interrupted(myself, state).await);
            }
            OrchestratorMsg::Detach { reply } => {
                let detached: Vec<TaskId> = state.running.keys().copied().collect();
                for (id, run) in state.running.drain() {
                    run.runner.kill();
                    for w in state.waiters.remove(&id).unwrap_or_default() {
                        let _ = w.send(Err(Error::Stopped));
                    }
                }
                let _ = reply.send(detached);
            }
            OrchestratorMsg::Finished { result } => state.finish(*result),
        }
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        _: ActorRef<OrchestratorMsg>,
        event: SupervisionEvent,
        state: &mut OrchestratorState,
    ) -> std::result::Result<(), ActorProcessingErr> {
        // A runner that ends normally has already sent Finished; only a crash needs handling.
        // A crashed run is not restarted: its agents may have half-done work, so the task is
        // failed and the user decides.
        let SupervisionEvent::ActorFailed(cell, err) = event else { return Ok(()) };
        let Some((&id, run)) = state.running.iter().find(|(_, r)| r.runner.get_id() == cell.get_id()) else {
            return Ok(());
        };
        tracing::error!(task_id = %id, error = %err, "task runner crashed");
        let mut task = match state.deps.store.get_task(id).await {
            Ok(Some(stored)) => stored.task,
            _ => run.task.clone(),
        };
        let reason = format!("internal error while running the task: {err}");
        if let Ok(to) = task.status.transition(TaskStatus::Failed) {
            let from = task.status;
            task.status = to;
            task.completed_at = Some(chrono::Utc::now());
            // Stored before it is told: a watcher that sees the change and reads the task finds it.
            let stored = state.deps.store.update_task(&task).await;
            state.deps.events.emit(id, EventKind::StatusChanged { from, to, reason: Some(reason.clone()) });
            if let Err(e) = stored {
                tracing::error!(task_id = %id, error = %e, "cannot record the failed task");
            }
        }
        state.finish(RunResult {
            task,
            failure: Some(AgentFailure::new(FailureKind::Internal, reason)),
            usage: TokenUsage::default(),
        });
        Ok(())
    }
}

/// Cancels a running task through its token; a task that is only stored (planned, or created
/// and never run) moves to cancelled here, so a later execute finds it cancelled.
async fn cancel_task(state: &mut OrchestratorState, task_id: TaskId, reason: Option<String>) -> Result<CancelOutcome> {
    if let Some(run) = state.running.get(&task_id) {
        run.cancel.cancel();
        return Ok(CancelOutcome::Stopping);
    }
    let mut task = state.deps.store.get_task(task_id).await?.ok_or(Error::UnknownTask(task_id))?.task;
    let from = task.status;
    let to = from.transition(TaskStatus::Cancelled).map_err(|_| Error::NotCancellable { task_id, status: from })?;
    task.status = to;
    task.completed_at = Some(chrono::Utc::now());
    task.current_phase = None;
    let reason = reason.filter(|r| !r.trim().is_empty()).unwrap_or_else(|| "cancelled on request".to_string());
    state.deps.store.update_task(&task).await?;
    state.deps.events.emit(task_id, EventKind::StatusChanged { from, to, reason: Some(reason) });
    // A kept result of the earlier (planning) run would answer waiters with the old status.
    state.finished.remove(&task_id);
    Ok(CancelOutcome::Cancelled(Box::new(task)))
}

async fn execute(myself: ActorRef<OrchestratorMsg>, state: &mut OrchestratorState, task_id: TaskId) -> Result<TaskId> {
    if state.running.contains_key(&task_id) {
        return Err(Error::NotExecutable { task_id, status: TaskStatus::InProgress, hint: "it is already running" });
    }
    let stored = state.deps.store.get_task(task_id).await?.ok_or(Error::UnknownTask(task_id))?;
    let task = stored.task;
    if task.status != TaskStatus::Planned || task.execution_plan.is_none() {
        return Err(Error::NotExecutable {
            task_id,
            status: task.status,
            hint: "only planned tasks can be executed; plan it again",
        });
    }
    // The dry run's result must not answer waiters of this run.
    state.finished.remove(&task_id);
    // In progress before the caller is answered: an orchestrator that dies from here on leaves
    // a task the next one resumes, never a planned task whose execution was accepted and lost.
    let mut task = task;
    let from = task.status;
    task.status = from.transition(TaskStatus::InProgress).map_err(|_| Error::NotExecutable {
        task_id,
        status: from,
        hint: "only planned tasks can be executed; plan it again",
    })?;
    task.started_at = Some(chrono::Utc::now());
    state.deps.events.emit(task_id, EventKind::StatusChanged { from, to: task.status, reason: None });
    state.deps.store.update_task(&task).await?;
    start_run(myself, state, task, stored.workspace, true, false).await
}

/// Tasks per page read from the store when looking for interrupted ones.
const RESUME_PAGE: u64 = 200;

async fn resume_interrupted(myself: ActorRef<OrchestratorMsg>, state: &mut OrchestratorState) -> Result<Vec<TaskId>> {
    let mut interrupted = Vec::new();
    let mut after = None;
    loop {
        let query = turbo_store::TaskQuery {
            project: None,
            // A blocked task waited for an approval that died with the earlier orchestrator.
            statuses: vec![TaskStatus::InProgress, TaskStatus::Blocked, TaskStatus::Created],
            limit: RESUME_PAGE,
            after,
        };
        let page = state.deps.store.page_tasks(query).await?;
        interrupted.extend(page.items.into_iter().filter(|t| !state.running.contains_key(&t.task.id)));
        match page.next {
            Some(next) => after = Some(next),
            None => break,
        }
    }
    let mut resumed = Vec::new();
    for stored in interrupted {
        let id = stored.task.id;
        if stored.task.status == TaskStatus::Created {
            // Planning answers its caller directly; that caller got an error when the earlier
            // orchestrator died, and nobody waits for this plan.
            let mut task = stored.task;
            let reason = "the orchestrator stopped while planning the task; create it again".to_string();
            if let Ok(to) = task.status.transition(TaskStatus::Failed) {
                let from = task.status;
                task.status = to;
                task.completed_at = Some(chrono::Utc::now());
                state.deps.store.update_task(&task).await?;
                state.deps.events.emit(id, EventKind::StatusChanged { from, to, reason: Some(reason) });
            }
            tracing::warn!(task_id = %id, "failed a task left in planning by an earlier orchestrator");
            continue;
        }
        tracing::info!(task_id = %id, "resuming a task an earlier orchestrator left running");
        start_run(myself.clone(), state, stored.task, stored.workspace, true, true).await?;
        resumed.push(id);
    }
    Ok(resumed)
}

async fn start_run(
    myself: ActorRef<OrchestratorMsg>,
    state: &mut OrchestratorState,
    task: DevelopmentTask,
    workspace: String,
    execute: bool,
    resume: bool,
) -> Result<TaskId> {
    // The handler runs in the caller's span (ractor carries it with the message), so a run's
    // trace is the request's; a resumed run starts a trace of its own (its request is gone).
    let span = if resume { tracing::Span::none() } else { tracing::Span::current() };
    let cancel = CancellationToken::new();
    let args = TaskRunArgs {
        task: task.clone(),
        workspace,
        execute,
        resume,
        span,
        cancel: cancel.clone(),
        deps: state.deps.clone(),
        orchestrator: myself.clone(),
    };
    let (runner, _) =
        Actor::spawn_linked(None, TaskRun, args, myself.get_cell()).await.map_err(|e| Error::Spawn(e.to_string()))?;
    let id = task.id;
    state.running.insert(id, Running { cancel, runner: runner.get_cell(), task });
    tracing::info!(task_id = %id, execute, resume, "task started");
    Ok(id)
}

async fn submit(
    myself: ActorRef<OrchestratorMsg>,
    state: &mut OrchestratorState,
    task: DevelopmentTask,
    workspace: String,
    execute: bool,
) -> Result<TaskId> {
    task.validate()?;
    state.deps.store.insert_task(&task, &workspace).await?;
    state.deps.events.emit(task.id, EventKind::TaskCreated { title: task.title.clone(), workspace: workspace.clone() });
    start_run(myself, state, task, workspace, execute, false).await
}
