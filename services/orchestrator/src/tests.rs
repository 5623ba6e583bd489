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
}

struct Agents {
    behaviour: Behaviour,
    calls: Mutex<Vec<(AgentRole, String)>>,
    plans: Mutex<u32>,
    started: Notify,
    saw_cancel: Mutex<bool>,
}

fn phase(name: &str, agent: &str, deps: &[&str]) -> ExecutionPhase {
    ExecutionPhase {
        name: name.into(),
        description: format!("do {name}"),
        agent_type: agent.into(),
        estimated_duration: Duration::from_secs(60),
        depends_on: deps.iter().map(|d| d.to_string()).collect(),
        blocking_for: vec![],
        deliverables: vec![],
        success_criteria: vec![],
        commands: vec![],
        files_to_create: vec![],
        files_to_modify: vec![],
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
    });
    let (recorder, _) = Recorder::start(store.clone());
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
