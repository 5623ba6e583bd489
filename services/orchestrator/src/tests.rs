//! Orchestrator behaviour with an agent double: ordering, progress, cancellation, deadline,
//! crashes, bad input. The store is a real SQLite file.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use chrono::Utc;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use turbo_agent_worker::{AgentClient, AgentService};
use turbo_core::agent::AgentRole;
use turbo_core::event::{EventKind, TaskEvent};
use turbo_core::ids::PlanId;
use turbo_core::plan::{ExecutionPhase, ExecutionPlan, ResourceRequirements};
use turbo_core::project::{Language, ProjectMetadata, ProjectType};
use turbo_core::protocol::{AgentFailure, FailureKind, PhaseAssignment, PhaseOutcome, PlanOutcome, PlanRequest};
use turbo_core::task::{DevelopmentTask, TaskStatus};
use turbo_core::tool::TokenUsage;
use turbo_store::Store;
use turbo_tool_runner::{RunnerLimits, ToolRunnerClient};

use crate::{Error, OrchestratorService, Recorder, RunDeps, RunSettings};

#[derive(Clone, Copy)]
enum Behaviour {
    Succeed,
    /// Block until cancelled.
    Hang,
    Panic,
    /// The second phase's agent asks a person before one call, and goes on once told.
    AskFirst,
}

struct Agents {
    behaviour: Behaviour,
    calls: Mutex<Vec<(AgentRole, String)>>,
    plans: Mutex<u32>,
    started: Notify,
    saw_cancel: Mutex<bool>,
    /// Where AskFirst tells of its approval request and decision.
    events: std::sync::OnceLock<Arc<dyn turbo_core::event::EventSink>>,
    decided: Notify,
}

fn phase(name: &str, agent: &str, deps: &[&str]) -> ExecutionPhase {
    ExecutionPhase {
        estimated_duration: Duration::from_secs(60),
        depends_on: deps.iter().map(|d| d.to_string()).collect(),
        ..ExecutionPhase::new(name, format!("do {name}"), agent)
    }
}

#[async_trait]
impl AgentService for Agents {
    async fn plan(&self, request: PlanRequest, _: CancellationToken) -> Result<PlanOutcome, AgentFailure> {
        *self.plans.lock().unwrap() += 1;
        // Listed out of order on purpose: the orchestrator must follow the dependencies.
        let phases = vec![
            phase("second", "coder", &["first"]),
            phase("first", "coder", &[]),
            phase("third", "coder", &["second"]),
        ];
        let plan = ExecutionPlan {
            plan_id: PlanId::new(),
            task_id: request.task.id,
            version: 1,
            phases,
            total_estimated_duration: Duration::from_secs(180),
            confidence_score: 0.9,
            resource_requirements: ResourceRequirements::default(),
            risk_factors: vec![],
            mitigation_strategies: vec![],
            required_knowledge: vec![],
            context_sources: vec![],
            generated_by: "double".into(),
            generated_at: Utc::now(),
            last_updated: Utc::now(),
        };
        Ok(PlanOutcome { plan, usage: TokenUsage { prompt_tokens: 10, completion_tokens: 5 }, attempts: 1 })
    }

    async fn run_phase(
        &self,
        role: AgentRole,
        a: PhaseAssignment,
        cancel: CancellationToken,
    ) -> Result<PhaseOutcome, AgentFailure> {
        self.calls.lock().unwrap().push((role, a.phase.name.clone()));
        self.started.notify_one();
        match self.behaviour {
            Behaviour::Succeed => Ok(PhaseOutcome {
                success: true,
                summary: format!("did {}", a.phase.name),
                files_changed: vec![format!("{}.txt", a.phase.name)],
                usage: TokenUsage { prompt_tokens: 1, completion_tokens: 1 },
                steps: 1,
                test: None,
                review: None,
            }),
            Behaviour::Hang => {
                cancel.cancelled().await;
                *self.saw_cancel.lock().unwrap() = true;
                Err(AgentFailure::new(FailureKind::Cancelled, "cancelled"))
            }
            Behaviour::Panic => panic!("agent double told to panic"),
            Behaviour::AskFirst => {
                let events = self.events.get().expect("the fixture sets the sink");
                let tool = "shell_run".to_string();
                let approval_id = format!("apr_{}", a.phase.name);
                if a.phase.name == "second" {
                    events.emit(
                        a.task_id,
                        EventKind::ApprovalRequested {
                            phase: a.phase.name.clone(),
                            step: 1,
                            tool: tool.clone(),
                            approval_id: approval_id.clone(),
                            risk: turbo_core::tool::RiskLevel::High,
                            reason: "the policy asks".into(),
                            expires_at: Utc::now() + chrono::Duration::minutes(5),
                        },
                    );
                    self.decided.notified().await;
                    events.emit(
                        a.task_id,
                        EventKind::ApprovalDecided {
                            phase: a.phase.name.clone(),
                            step: 1,
                            tool,
                            approval_id,
                            approved: true,
                            decided_by: "ana".into(),
                            note: None,
                        },
                    );
                }
                Ok(PhaseOutcome {
                    success: true,
                    summary: format!("did {}", a.phase.name),
                    files_changed: vec![],
                    usage: TokenUsage::default(),
                    steps: 1,
                    test: None,
                    review: None,
                })
            }
        }
    }
}

struct Fixture {
    _dir: tempfile::TempDir,
    workspace: String,
    store: Store,
    agents: Arc<Agents>,
    recorder: Recorder,
    service: OrchestratorService,
    project: ProjectMetadata,
}

async fn fixture(behaviour: Behaviour, timeout: Duration) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let ws = dir.path().join("ws");
    std::fs::create_dir(&ws).unwrap();
    let store = Store::open_sqlite(&dir.path().join("t.db")).await.unwrap();
    let project =
        ProjectMetadata::new("p", "p", ProjectType::ApiService, vec![Language::Python], ws.display().to_string());
    store.upsert_project(&project).await.unwrap();
    let agents = Arc::new(Agents {
        behaviour,
        calls: Mutex::new(vec![]),
        plans: Mutex::new(0),
        started: Notify::new(),
        saw_cancel: Mutex::new(false),
        events: std::sync::OnceLock::new(),
        decided: Notify::new(),
    });
    let (recorder, _) = Recorder::start(store.clone());
    let _ = agents.events.set(recorder.sink());
    let deps = RunDeps {
        agents: AgentClient::from_service(agents.clone()),
        tools: ToolRunnerClient::local(RunnerLimits::default()),
        store: store.clone(),
        events: recorder.sink(),
        settings: RunSettings { task_timeout: timeout, ..RunSettings::default() },
    };
    let service = OrchestratorService::start(deps).await.unwrap();
    Fixture { _dir: dir, workspace: ws.display().to_string(), store, agents, recorder, service, project }
}

impl Fixture {
    fn task(&self) -> DevelopmentTask {
        DevelopmentTask::from_request(self.project.id, "build the three things in order")
    }

    async fn events(&self, task: &DevelopmentTask) -> Vec<TaskEvent> {
        self.recorder.flush().await;
        self.store.events(task.id, 0).await.unwrap()
    }
}

#[tokio::test]
async fn phases_run_in_dependency_order_with_progress_and_usage() {
    let f = fixture(Behaviour::Succeed, Duration::from_secs(30)).await;
    let task = f.task();
    let id = f.service.handle.submit(task.clone(), f.workspace.clone(), true).await.unwrap();
    let result = f.service.handle.wait(id).await.unwrap();
    assert!(result.failure.is_none(), "{:?}", result.failure);
    assert_eq!(result.task.status, TaskStatus::Completed);
    assert_eq!(result.task.progress_percentage, 100.0);
    assert_eq!(result.usage, TokenUsage { prompt_tokens: 13, completion_tokens: 8 });
    assert_eq!(result.task.generated_files, ["first.txt", "second.txt", "third.txt"]);
    let order: Vec<String> = f.agents.calls.lock().unwrap().iter().map(|(_, p)| p.clone()).collect();
    assert_eq!(order, ["first", "second", "third"]);
    let events = f.events(&task).await;
    let progress: Vec<f64> = events
        .iter()
        .filter_map(|e| if let EventKind::Progress { percent } = e.kind { Some(percent) } else { None })
        .collect();
    assert_eq!(progress.len(), 3);
    assert!((progress[0] - 100.0 / 3.0).abs() < 1e-9 && progress[2] == 100.0, "{progress:?}");
    let stored = f.store.get_task(id).await.unwrap().unwrap();
    assert_eq!(stored.task.status, TaskStatus::Completed);
    assert!(stored.task.completed_at.is_some() && stored.task.started_at.is_some());
}

#[tokio::test]
async fn a_task_is_blocked_while_a_call_waits_for_approval_and_goes_on_once_decided() {
    let f = fixture(Behaviour::AskFirst, Duration::from_secs(30)).await;
    let mut events = f.recorder.subscribe();
    let task = f.task();
    let id = f.service.handle.submit(task.clone(), f.workspace.clone(), true).await.unwrap();
    loop {
        let event = tokio::time::timeout(Duration::from_secs(10), events.recv()).await.unwrap().unwrap();
        if matches!(event.kind, EventKind::StatusChanged { to: TaskStatus::Blocked, .. }) {
            break;
        }
    }
    let status = f.store.get_task(id).await.unwrap().unwrap().task.status;
    assert_eq!(status, TaskStatus::Blocked, "stored as blocked while the call waits");
    let listed = f.store.list_tasks(turbo_store::TaskFilter::default()).await.unwrap();
    assert_eq!(listed[0].status, TaskStatus::Blocked);
    f.agents.decided.notify_one();
    let result = f.service.handle.wait(id).await.unwrap();
    assert!(result.failure.is_none(), "{:?}", result.failure);
    assert_eq!(f.store.get_task(id).await.unwrap().unwrap().task.status, TaskStatus::Completed);

    let events = f.events(&task).await;
    let changes: Vec<(TaskStatus, TaskStatus, String)> = events
        .iter()
        .filter_map(|e| match &e.kind {
            EventKind::StatusChanged { from, to, reason } => Some((*from, *to, reason.clone().unwrap_or_default())),
            _ => None,
        })
        .collect();
    let statuses: Vec<TaskStatus> = changes.iter().map(|c| c.1).collect();
    use TaskStatus::*;
    assert_eq!(statuses, [Planned, InProgress, Blocked, InProgress, Completed], "{changes:?}");
    assert_eq!(changes[2].0, InProgress);
    assert!(changes[2].2.contains("apr_second") && changes[2].2.contains("turbo-coder approvals"), "{changes:?}");
    assert_eq!(changes[3].0, Blocked);
    assert!(changes[3].2.contains("approved by ana"), "{changes:?}");
    // Each change follows the approval event that made it.
    let names: Vec<&str> = events.iter().map(|e| e.kind.name()).collect();
    let requested = names.iter().position(|n| *n == "approval_requested").unwrap();
    let decided = names.iter().position(|n| *n == "approval_decided").unwrap();
    assert_eq!(names[requested + 1], "status_changed");
    assert_eq!(names[decided + 1], "status_changed");
}

#[tokio::test]
async fn a_watcher_that_sees_a_status_change_finds_the_task_stored_so() {
    let f = fixture(Behaviour::AskFirst, Duration::from_secs(30)).await;
    let mut events = f.recorder.subscribe();
    let id = f.service.handle.submit(f.task(), f.workspace.clone(), true).await.unwrap();
    use TaskStatus::*;
    // The run moves on at once, so the stored status may be ahead of the event, never behind.
    let rank = |s: TaskStatus| match s {
        Created => 0,
        Planned => 1,
        InProgress | Blocked => 2,
        _ => 3,
    };
    let mut seen = Vec::new();
    loop {
        let event = tokio::time::timeout(Duration::from_secs(10), events.recv()).await.unwrap().unwrap();
        let EventKind::StatusChanged { to, .. } = event.kind else { continue };
        assert_eq!(event.task_id, id);
        let stored = f.store.get_task(id).await.unwrap().unwrap().task.status;
        if to == Blocked {
            // The call waits for the decision: nothing can have moved the task on.
            assert_eq!(stored, Blocked);
            f.agents.decided.notify_one();
        } else {
            assert!(rank(stored) >= rank(to), "told {to:?}, stored {stored:?}");
        }
        seen.push(to);
        if to.is_terminal() {
            break;
        }
    }
    assert_eq!(seen, [Planned, InProgress, Blocked, InProgress, Completed]);
}

#[tokio::test]
async fn a_dry_run_stops_at_planned() {
    let f = fixture(Behaviour::Succeed, Duration::from_secs(30)).await;
    let id = f.service.handle.submit(f.task(), f.workspace.clone(), false).await.unwrap();
    let result = f.service.handle.wait(id).await.unwrap();
    assert_eq!(result.task.status, TaskStatus::Planned);
    assert!(result.task.execution_plan.is_some());
    assert!(f.agents.calls.lock().unwrap().is_empty());
    assert!(f.store.latest_plan(id).await.unwrap().is_some());
}

#[tokio::test]
async fn cancel_stops_the_running_agent_and_marks_the_task_cancelled() {
    let f = fixture(Behaviour::Hang, Duration::from_secs(30)).await;
    let task = f.task();
    let started = f.agents.started.notified();
    let id = f.service.handle.submit(task.clone(), f.workspace.clone(), true).await.unwrap();
    started.await;
    assert!(f.service.handle.cancel(id).await.unwrap());
    let result = f.service.handle.wait(id).await.unwrap();
    assert_eq!(result.task.status, TaskStatus::Cancelled);
    assert_eq!(result.failure.unwrap().kind, FailureKind::Cancelled);
    assert!(*f.agents.saw_cancel.lock().unwrap(), "the agent saw the cancellation");
    assert!(!f.service.handle.cancel(id).await.unwrap(), "nothing left to cancel");
    let last = f.events(&task).await.pop().unwrap();
    assert!(matches!(last.kind, EventKind::StatusChanged { to: TaskStatus::Cancelled, .. }), "{last:?}");
}

#[tokio::test]
async fn a_task_past_its_deadline_fails_and_its_agents_are_told_to_stop() {
    let f = fixture(Behaviour::Hang, Duration::from_millis(300)).await;
    let id = f.service.handle.submit(f.task(), f.workspace.clone(), true).await.unwrap();
    let result = f.service.handle.wait(id).await.unwrap();
    assert_eq!(result.task.status, TaskStatus::Failed);
    let failure = result.failure.unwrap();
    assert_eq!(failure.kind, FailureKind::TimedOut);
    assert!(failure.message.contains("run.task_timeout_s"), "{failure}");
    // The deadline cancels the run's token; the hanging agent must observe it.
    for _ in 0..200 {
        if *f.agents.saw_cancel.lock().unwrap() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(*f.agents.saw_cancel.lock().unwrap());
}

#[tokio::test]
async fn a_crashed_run_fails_its_task_instead_of_hanging() {
    let f = fixture(Behaviour::Panic, Duration::from_secs(30)).await;
    let id = f.service.handle.submit(f.task(), f.workspace.clone(), true).await.unwrap();
    let result = f.service.handle.wait(id).await.unwrap();
    assert_eq!(result.task.status, TaskStatus::Failed);
    assert_eq!(result.failure.unwrap().kind, FailureKind::Internal);
    assert_eq!(f.store.get_task(id).await.unwrap().unwrap().task.status, TaskStatus::Failed);
}

#[tokio::test]
async fn an_invalid_task_is_refused_at_submit() {
    let f = fixture(Behaviour::Succeed, Duration::from_secs(30)).await;
    let mut task = f.task();
    task.description = "too short".into();
    let err = f.service.handle.submit(task.clone(), f.workspace.clone(), true).await.unwrap_err();
    assert!(matches!(err, Error::InvalidTask(_)), "{err}");
    assert!(err.to_string().contains("description"), "{err}");
    assert!(f.store.get_task(task.id).await.unwrap().is_none(), "nothing stored");
}

#[tokio::test]
async fn shutdown_cancels_running_tasks_and_records_their_end() {
    let f = fixture(Behaviour::Hang, Duration::from_secs(30)).await;
    let started = f.agents.started.notified();
    let id = f.service.handle.submit(f.task(), f.workspace.clone(), true).await.unwrap();
    started.await;
    f.service.shutdown().await;
    assert_eq!(f.store.get_task(id).await.unwrap().unwrap().task.status, TaskStatus::Cancelled);
}

#[tokio::test]
async fn a_planned_task_is_executed_with_its_stored_plan() {
    let f = fixture(Behaviour::Succeed, Duration::from_secs(30)).await;
    let id = f.service.handle.submit(f.task(), f.workspace.clone(), false).await.unwrap();
    let planned = f.service.handle.wait(id).await.unwrap();
    assert_eq!(planned.task.status, TaskStatus::Planned);
    let plan_id = planned.task.execution_plan.as_ref().unwrap().plan_id;

    assert_eq!(f.service.handle.execute(id).await.unwrap(), id);
    let done = f.service.handle.wait(id).await.unwrap();
    assert_eq!(done.task.status, TaskStatus::Completed, "{:?}", done.failure);
    assert_eq!(*f.agents.plans.lock().unwrap(), 1, "not planned again");
    assert_eq!(done.task.execution_plan.unwrap().plan_id, plan_id);
    assert_eq!(f.agents.calls.lock().unwrap().len(), 3);

    let again = f.service.handle.execute(id).await.unwrap_err();
    assert!(again.to_string().contains("is completed") && again.to_string().contains("only planned tasks"), "{again}");
    let unknown = f.service.handle.execute(turbo_core::ids::TaskId::new()).await.unwrap_err();
    assert!(matches!(unknown, Error::UnknownTask(_)), "{unknown}");
}

// ---------------------------------------------------------------------------------------------
// Resuming after a restart

/// A second orchestrator on the same store and agents, with its own recorder, as after a
/// restart.
struct Restarted {
    service: OrchestratorService,
    recorder: Recorder,
}

impl Restarted {
    async fn events(&self, task: &DevelopmentTask, store: &Store) -> Vec<TaskEvent> {
        self.recorder.flush().await;
        store.events(task.id, 0).await.unwrap()
    }
}

impl Fixture {
    async fn restarted(&self) -> Restarted {
        let (recorder, _) = Recorder::start(self.store.clone());
        let deps = RunDeps {
            agents: AgentClient::from_service(self.agents.clone()),
            tools: ToolRunnerClient::local(RunnerLimits::default()),
            store: self.store.clone(),
            events: recorder.sink(),
            settings: RunSettings::default(),
        };
        Restarted { service: OrchestratorService::start(deps).await.unwrap(), recorder }
    }

    /// Plans a task, then leaves it as an orchestrator that died during phase `second` would:
    /// in progress, `first` succeeded, `second` started.
    async fn interrupted_task(&self) -> DevelopmentTask {
        let id = self.service.handle.submit(self.task(), self.workspace.clone(), false).await.unwrap();
        let mut task = self.service.handle.wait(id).await.unwrap().task;
        assert_eq!(task.status, TaskStatus::Planned);
        self.recorder.flush().await;
        task.status = TaskStatus::InProgress;
        task.started_at = Some(Utc::now());
        self.store.update_task(&task).await.unwrap();
        let next = self.store.next_seq(id).await.unwrap();
        let kinds = [
            EventKind::StatusChanged { from: TaskStatus::Planned, to: TaskStatus::InProgress, reason: None },
            EventKind::PhaseStarted { phase: "first".into(), role: AgentRole::Coder, attempt: 1 },
            EventKind::PhaseFinished {
                phase: "first".into(),
                role: AgentRole::Coder,
                success: true,
                summary: "ok".into(),
            },
            EventKind::PhaseStarted { phase: "second".into(), role: AgentRole::Coder, attempt: 1 },
        ];
        let events: Vec<TaskEvent> = kinds
            .into_iter()
            .enumerate()
            .map(|(i, kind)| TaskEvent { task_id: id, seq: next + i as u64, at: Utc::now(), kind })
            .collect();
        self.store.append_events(&events).await.unwrap();
        task
    }
}

#[tokio::test]
async fn an_interrupted_task_resumes_from_its_first_unfinished_phase() {
    let f = fixture(Behaviour::Succeed, Duration::from_secs(30)).await;
    let task = f.interrupted_task().await;
    let restarted = f.restarted().await;

    assert_eq!(restarted.service.handle.resume_interrupted().await.unwrap(), [task.id]);
    let done = restarted.service.handle.wait(task.id).await.unwrap();
    assert_eq!(done.task.status, TaskStatus::Completed, "{:?}", done.failure);
    assert_eq!(done.task.progress_percentage, 100.0);
    assert_eq!(*f.agents.plans.lock().unwrap(), 1, "the stored plan is used, not a new one");
    let ran: Vec<String> = f.agents.calls.lock().unwrap().iter().map(|(_, p)| p.clone()).collect();
    assert_eq!(ran, ["second", "third"], "the succeeded phase is not run again");

    let events = restarted.events(&task, &f.store).await;
    let attempts: Vec<(String, u32)> = events
        .iter()
        .filter_map(|e| match &e.kind {
            EventKind::PhaseStarted { phase, attempt, .. } => Some((phase.clone(), *attempt)),
            _ => None,
        })
        .collect();
    let expected = [("first", 1), ("second", 1), ("second", 2), ("third", 1)].map(|(p, a)| (p.to_string(), a));
    assert_eq!(attempts, expected, "a phase run again counts its attempts on");
    let statuses: Vec<TaskStatus> = events
        .iter()
        .filter_map(|e| if let EventKind::StatusChanged { to, .. } = e.kind { Some(to) } else { None })
        .collect();
    assert_eq!(statuses, [TaskStatus::Planned, TaskStatus::InProgress, TaskStatus::Completed], "no second start");
    let phases = f.store.phases(task.id).await.unwrap();
    assert!(phases.iter().all(|p| p.status == turbo_store::PhaseStatus::Succeeded), "{phases:?}");
    assert!(restarted.service.handle.resume_interrupted().await.unwrap().is_empty(), "nothing left to resume");
}

#[tokio::test]
async fn a_task_whose_workspace_is_gone_fails_on_resume_with_the_reason() {
    let f = fixture(Behaviour::Succeed, Duration::from_secs(30)).await;
    let task = f.interrupted_task().await;
    std::fs::remove_dir_all(&f.workspace).unwrap();
    let restarted = f.restarted().await;

    assert_eq!(restarted.service.handle.resume_interrupted().await.unwrap(), [task.id]);
    let result = restarted.service.handle.wait(task.id).await.unwrap();
    assert_eq!(result.task.status, TaskStatus::Failed);
    let failure = result.failure.unwrap();
    assert!(failure.message.contains("workspace") && failure.message.contains("is gone"), "{failure}");
    assert!(f.agents.calls.lock().unwrap().is_empty(), "no agent ran");
    let last = restarted.events(&task, &f.store).await.pop().unwrap();
    match last.kind {
        EventKind::StatusChanged { to: TaskStatus::Failed, reason: Some(reason), .. } => {
            assert!(reason.contains(&f.workspace), "{reason}")
        }
        other => panic!("the task ends failed with the reason, not {other:?}"),
    }
}

#[tokio::test]
async fn a_task_left_in_planning_fails_on_resume() {
    let f = fixture(Behaviour::Succeed, Duration::from_secs(30)).await;
    let task = f.task();
    f.store.insert_task(&task, &f.workspace).await.unwrap();

    let restarted = f.restarted().await;
    assert!(restarted.service.handle.resume_interrupted().await.unwrap().is_empty());
    let stored = f.store.get_task(task.id).await.unwrap().unwrap().task;
    assert_eq!(stored.status, TaskStatus::Failed);
    let last = restarted.events(&task, &f.store).await.pop().unwrap();
    assert!(
        matches!(&last.kind, EventKind::StatusChanged { reason: Some(r), .. } if r.contains("create it again")),
        "{last:?}"
    );
}

#[tokio::test]
async fn execute_marks_the_task_in_progress_before_it_answers() {
    let f = fixture(Behaviour::Hang, Duration::from_secs(30)).await;
    let id = f.service.handle.submit(f.task(), f.workspace.clone(), false).await.unwrap();
    f.service.handle.wait(id).await.unwrap();
    f.service.handle.execute(id).await.unwrap();
    let stored = f.store.get_task(id).await.unwrap().unwrap().task;
    assert_eq!(stored.status, TaskStatus::InProgress, "a restart from here resumes the task");
    assert!(stored.started_at.is_some());
    f.service.handle.cancel(id).await.unwrap();
    assert_eq!(f.service.handle.wait(id).await.unwrap().task.status, TaskStatus::Cancelled);
}

#[tokio::test]
async fn detaching_leaves_running_tasks_in_progress_for_the_next_orchestrator() {
    let f = fixture(Behaviour::Hang, Duration::from_secs(30)).await;
    let started = f.agents.started.notified();
    let id = f.service.handle.submit(f.task(), f.workspace.clone(), true).await.unwrap();
    started.await;
    let handle = f.service.handle.clone();
    assert_eq!(f.service.detach().await, [id]);
    assert!(handle.running().await.is_err(), "the orchestrator stopped");
    f.recorder.flush().await;
    let stored = f.store.get_task(id).await.unwrap().unwrap().task;
    assert_eq!(stored.status, TaskStatus::InProgress, "nothing recorded an end");
}

#[tokio::test]
async fn recorded_events_are_answered_once_stored_and_handed_to_the_outbox_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open_sqlite(&dir.path().join("t.db")).await.unwrap();
    let project = ProjectMetadata::new("p", "p", ProjectType::ApiService, vec![Language::Python], "/tmp");
    store.upsert_project(&project).await.unwrap();
    let task = DevelopmentTask::from_request(project.id, "record the events in order please");
    store.insert_task(&task, "/tmp").await.unwrap();
    let (outbox, mut published) = tokio::sync::mpsc::channel(16);
    let (recorder, _) = Recorder::start_with_outbox(store.clone(), outbox);

    recorder.sink().emit(task.id, EventKind::Progress { percent: 10.0 });
    let message =
        |text: &str| (task.id, EventKind::AgentMessage { role: AgentRole::Coder, text: text.into() }, Utc::now());
    recorder.record(vec![message("one"), message("two")]).await.expect("stored");
    let stored = store.events(task.id, 0).await.unwrap();
    assert_eq!(stored.iter().map(|e| e.seq).collect::<Vec<_>>(), [1, 2, 3], "stored before the answer");
    for seq in 1..=3 {
        let e = published.recv().await.unwrap();
        assert_eq!((e.task_id, e.seq), (task.id, seq));
    }

    // A task the store does not have: the batch is refused, and said so.
    let unknown = (turbo_core::ids::TaskId::new(), EventKind::Progress { percent: 1.0 }, Utc::now());
    let refused = recorder.record(vec![unknown]).await.unwrap_err();
    assert!(refused.contains("task"), "{refused}");
    assert!(published.try_recv().is_err(), "only stored events are handed on");
}

#[tokio::test]
async fn the_purge_loop_removes_projects_past_their_restore_window_at_start_and_audits_it() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open_sqlite(&dir.path().join("t.db")).await.unwrap();
    let new = |name: &str| ProjectMetadata::new(name, name, ProjectType::ApiService, vec![Language::Python], "/tmp");
    let (old, recent, live) = (new("old"), new("recent"), new("live"));
    for p in [&old, &recent, &live] {
        store.create_project(p).await.unwrap();
    }
    let day = chrono::TimeDelta::days(1);
    store.delete_project(old.id, Utc::now() - crate::RESTORE_WINDOW - day).await.unwrap();
    store.delete_project(recent.id, Utc::now() - crate::RESTORE_WINDOW + day).await.unwrap();

    let closing = CancellationToken::new();
    let purge = tokio::spawn(crate::purge_loop(store.clone(), closing.clone()));
    let filter = || turbo_store::AuditFilter { action: Some("project.purge".into()), ..Default::default() };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let entries = loop {
        let entries = store.list_audit(filter()).await.unwrap();
        if !entries.is_empty() || tokio::time::Instant::now() > deadline {
            break entries;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(entries.len(), 1, "one purge at start: {entries:?}");
    assert_eq!(entries[0].detail, Some(serde_json::json!({ "projects": 1 })));
    assert!(store.get_project(old.id).await.unwrap().is_none(), "past the window: gone");
    let kept = store.get_project(recent.id).await.unwrap().expect("within the window: kept");
    assert!(kept.deleted_at.is_some(), "and still deleted, restorable");
    assert!(store.get_project(live.id).await.unwrap().is_some());

    closing.cancel();
    tokio::time::timeout(Duration::from_secs(5), purge).await.expect("stops when closing").unwrap();
}
