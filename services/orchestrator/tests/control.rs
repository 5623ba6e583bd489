//! The operators' control plane, black box: `control::serve_control_with` against a real
//! `nats-server` (one per test, on a free port), a real SQLite store and an orchestrator whose
//! agents are an in-process double, driven by a NATS client as `nats req` would, and by the
//! Python client `nats-py` (tests/python/test_control.py).

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use chrono::Utc;
use serde_json::{Value, json};
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use turbo_agent_worker::{AgentClient, AgentService};
use turbo_bus::async_nats::{self, client::RequestErrorKind};
use turbo_bus::{Heartbeat, subjects};
use turbo_core::agent::AgentRole;
use turbo_core::event::{EventKind, EventSink};
use turbo_core::ids::{PlanId, TaskId};
use turbo_core::plan::{ExecutionPhase, ExecutionPlan, ResourceRequirements};
use turbo_core::project::{Language, ProjectMetadata, ProjectType};
use turbo_core::protocol::{AgentFailure, FailureKind, PhaseAssignment, PhaseOutcome, PlanOutcome, PlanRequest};
use turbo_core::task::{DevelopmentTask, TaskStatus};
use turbo_core::tool::TokenUsage;
use turbo_orchestrator::control::{ControlOptions, serve_control_with};
use turbo_orchestrator::{OrchestratorService, Recorder, RunDeps, RunSettings};
use turbo_store::Store;
use turbo_testkit::NatsServer;
use turbo_tool_runner::{RunnerLimits, ToolRunnerClient};
use uuid::Uuid;

/// Longest any awaited step may take before the test fails instead of hanging. Not a timing
/// assertion: a healthy run is done far sooner.
const PATIENCE: Duration = Duration::from_secs(60);

// ---------------------------------------------------------------------------------------------
// Agent double

#[derive(Clone, Copy, PartialEq)]
enum Behaviour {
    /// Plans three coder phases and carries each out.
    Succeed,
    /// Phases block until cancelled.
    Hang,
    /// Phases block until cancelled, and then until the test opens the gate.
    HangPastCancel,
}

struct Agents {
    behaviour: Behaviour,
    /// Model calls are recorded as real agents record them: `model_call` events.
    events: Arc<dyn EventSink>,
    started: Notify,
    saw_cancel: AtomicBool,
    gate: Notify,
}

fn phase(name: &str, deps: &[&str]) -> ExecutionPhase {
    ExecutionPhase {
        estimated_duration: Duration::from_secs(60),
        depends_on: deps.iter().map(|d| d.to_string()).collect(),
        ..ExecutionPhase::new(name, format!("do {name}"), "coder")
    }
}

impl Agents {
    fn model_call(&self, task_id: TaskId, role: AgentRole, phase: Option<String>, usage: TokenUsage) {
        let kind = EventKind::ModelCall {
            role,
            phase,
            model: format!("{role}:double"),
            prompt_tokens: usage.prompt_tokens,
            completion_tokens: usage.completion_tokens,
            latency_ms: 1,
            ttft_ms: None,
            tokens_per_second: None,
        };
        self.events.emit(task_id, kind);
    }
}

#[async_trait]
impl AgentService for Agents {
    async fn plan(&self, request: PlanRequest, _: CancellationToken) -> Result<PlanOutcome, AgentFailure> {
        let usage = TokenUsage { prompt_tokens: 10, completion_tokens: 5 };
        self.model_call(request.task.id, AgentRole::Planner, None, usage);
        let plan = ExecutionPlan {
            plan_id: PlanId::new(),
            task_id: request.task.id,
            version: 1,
            phases: vec![phase("first", &[]), phase("second", &["first"]), phase("third", &["second"])],
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
        Ok(PlanOutcome { plan, usage, attempts: 1 })
    }

    async fn run_phase(
        &self,
        _: AgentRole,
        a: PhaseAssignment,
        cancel: CancellationToken,
    ) -> Result<PhaseOutcome, AgentFailure> {
        self.started.notify_one();
        if self.behaviour == Behaviour::Succeed {
            let usage = TokenUsage { prompt_tokens: 2, completion_tokens: 1 };
            self.model_call(a.task_id, AgentRole::Coder, Some(a.phase.name.clone()), usage);
            return Ok(PhaseOutcome {
                success: true,
                summary: format!("did {}", a.phase.name),
                files_changed: vec![],
                usage,
                steps: 1,
                test: None,
                review: None,
            });
        }
        cancel.cancelled().await;
        self.saw_cancel.store(true, Ordering::SeqCst);
        if self.behaviour == Behaviour::HangPastCancel {
            self.gate.notified().await;
        }
        Err(AgentFailure::new(FailureKind::Cancelled, "cancelled"))
    }
}

// ---------------------------------------------------------------------------------------------
// Harness

struct Fixture {
    dir: tempfile::TempDir,
    nats: NatsServer,
    client: async_nats::Client,
    workspace: String,
    store: Store,
    agents: Arc<Agents>,
    recorder: Recorder,
    service: OrchestratorService,
    project: ProjectMetadata,
    control: Vec<(CancellationToken, JoinHandle<turbo_orchestrator::Result<()>>)>,
}

fn options() -> ControlOptions {
    ControlOptions { cancel_wait: PATIENCE, ..ControlOptions::default() }
}

async fn fixture(behaviour: Behaviour, options: ControlOptions) -> Fixture {
    let nats = NatsServer::start().await.expect("nats-server starts");
    let client = turbo_bus::connect(&nats.url()).await.expect("connect");
    let dir = tempfile::tempdir().unwrap();
    let ws = dir.path().join("ws");
    std::fs::create_dir(&ws).unwrap();
    let store = Store::open_sqlite(&dir.path().join("t.db")).await.unwrap();
    let project =
        ProjectMetadata::new("p", "p", ProjectType::ApiService, vec![Language::Python], ws.display().to_string());
    store.upsert_project(&project).await.unwrap();
    let (recorder, _) = Recorder::start(store.clone());
    let agents = Arc::new(Agents {
        behaviour,
        events: recorder.sink(),
        started: Notify::new(),
        saw_cancel: AtomicBool::new(false),
        gate: Notify::new(),
    });
    let deps = RunDeps {
        agents: AgentClient::from_service(agents.clone()),
        tools: ToolRunnerClient::local(RunnerLimits::default()),
        store: store.clone(),
        events: recorder.sink(),
        settings: RunSettings::default(),
    };
    let service = OrchestratorService::start(deps).await.unwrap();
    let mut f = Fixture {
        dir,
        nats,
        client,
        workspace: ws.display().to_string(),
        store,
        agents,
        recorder,
        service,
        project,
        control: vec![],
    };
    f.start_control(options).await;
    f
}

impl Fixture {
    /// Starts the first control plane, over the fixture's store, and waits until it answers.
    async fn start_control(&mut self, options: ControlOptions) {
        self.spawn_control(self.store.clone(), options).await;
        eventually("the control plane to answer", || async {
            match self.try_request(subjects::CTL_WORKERS_LIST, "{}").await {
                Ok(reply) => Some(reply),
                Err(e) if e.kind() == RequestErrorKind::NoResponders => None,
                Err(e) => panic!("request failed: {e}"),
            }
        })
        .await;
    }

    /// Starts a control plane (a replica) over `store` on its own connection.
    async fn spawn_control(&mut self, store: Store, options: ControlOptions) {
        let client = turbo_bus::connect(&self.nats.url()).await.expect("connect");
        let shutdown = CancellationToken::new();
        let serving =
            tokio::spawn(serve_control_with(client, store, self.service.handle.clone(), options, shutdown.clone()));
        self.control.push((shutdown, serving));
    }

    async fn try_request(&self, subject: &str, body: &str) -> Result<Value, async_nats::RequestError> {
        let request = async_nats::Request::new().payload(body.to_string().into()).timeout(Some(PATIENCE));
        let message = self.client.send_request(subject.to_string(), request).await?;
        Ok(serde_json::from_slice(&message.payload).expect("every reply is JSON"))
    }

    /// One request; the reply must carry `"v": 1`.
    async fn request(&self, subject: &str, body: &str) -> Value {
        let reply = self.try_request(subject, body).await.unwrap_or_else(|e| panic!("{subject} {body}: {e}"));
        assert_eq!(reply["v"], 1, "{subject} {body}: {reply}");
        reply
    }

    /// A request that must be refused with `code`; returns the error's message.
    async fn refused(&self, subject: &str, body: &str, code: &str) -> String {
        let reply = self.request(subject, body).await;
        assert_eq!(reply["error"]["code"], code, "{subject} {body}: {reply}");
        let message = reply["error"]["message"].as_str().expect("an error message").to_string();
        assert!(!message.is_empty());
        message
    }

    fn task(&self) -> DevelopmentTask {
        DevelopmentTask::from_request(self.project.id, "build the three things in order")
    }

    /// A task run by the orchestrator to its end: planned (dry run) or completed.
    async fn run_task(&self, execute: bool) -> TaskId {
        let id = self.service.handle.submit(self.task(), self.workspace.clone(), execute).await.unwrap();
        let result = within("the run", self.service.handle.wait(id)).await.unwrap();
        assert!(result.failure.is_none(), "{:?}", result.failure);
        // Everything the run emitted (phases, model calls) is stored.
        self.recorder.flush().await;
        id
    }

    /// A task stored with this id, never run (status created).
    async fn stored_task(&self, id: &str) -> TaskId {
        let mut task = self.task();
        task.id = TaskId(Uuid::parse_str(id).unwrap());
        self.store.insert_task(&task, &self.workspace).await.unwrap();
        task.id
    }

    async fn status(&self, id: TaskId) -> TaskStatus {
        self.store.get_task(id).await.unwrap().unwrap().task.status
    }

    /// Stops the control planes; each must return without an error.
    async fn stop_control(&mut self) {
        for (shutdown, serving) in self.control.drain(..) {
            shutdown.cancel();
            within("the control plane to stop", serving).await.unwrap().expect("serve_control ends cleanly");
        }
    }
}

async fn within<T>(what: &str, fut: impl Future<Output = T>) -> T {
    tokio::time::timeout(PATIENCE, fut).await.unwrap_or_else(|_| panic!("timed out waiting for {what}"))
}

/// Polls `check` until it gives a value; fails the test after [`PATIENCE`].
async fn eventually<T, F: Future<Output = Option<T>>>(what: &str, mut check: impl FnMut() -> F) -> T {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

fn ids(reply: &Value) -> Vec<String> {
    reply["tasks"].as_array().expect("tasks").iter().map(|t| t["id"].as_str().unwrap().to_string()).collect()
}

/// Publishes a worker's heartbeats, as `serve_role` does, every `every` until stopped.
fn heartbeats(
    client: async_nats::Client,
    role: AgentRole,
    worker_id: &str,
    load: (usize, usize),
    every: Duration,
) -> (CancellationToken, JoinHandle<()>) {
    let stop = CancellationToken::new();
    let worker_id = worker_id.to_string();
    let token = stop.clone();
    let publishing = tokio::spawn(async move {
        let started_at = Utc::now();
        while !token.is_cancelled() {
            let beat = Heartbeat {
                worker_id: worker_id.clone(),
                role,
                in_flight: load.0,
                capacity: load.1,
                started_at,
                at: Utc::now(),
            };
            turbo_bus::publish::publish_core(&client, subjects::heartbeat(role, &worker_id), &beat).await.unwrap();
            tokio::select! {
                _ = token.cancelled() => {}
                _ = tokio::time::sleep(every) => {}
            }
        }
    });
    (stop, publishing)
}

/// The workers of `role` in a `workers.list` reply, by id.
fn workers_of(reply: &Value, role: &str) -> Vec<String> {
    reply["roles"][role]["workers"]
        .as_array()
        .unwrap_or_else(|| panic!("no role {role} in {reply}"))
        .iter()
        .map(|w| w["worker_id"].as_str().unwrap().to_string())
        .collect()
}

// ---------------------------------------------------------------------------------------------
// tasks.list

#[tokio::test]
async fn lists_tasks_newest_first_filtered_by_status_and_limited() {
    let f = fixture(Behaviour::Succeed, options()).await;
    let created = f.stored_task("0badc0de-0000-4000-8000-000000000001").await;
    let planned = f.run_task(false).await;
    let done = f.run_task(true).await;

    let all = f.request(subjects::CTL_TASKS_LIST, "{}").await;
    assert_eq!(ids(&all), [done, planned, created].map(|id| id.to_string()), "{all}");
    let first = &all["tasks"][0];
    let mut keys: Vec<&str> = first.as_object().unwrap().keys().map(String::as_str).collect();
    keys.sort_unstable();
    assert_eq!(keys, ["created_at", "current_phase", "id", "progress", "status", "title", "total_tokens"]);
    assert_eq!(first["status"], "completed");
    assert_eq!(first["progress"], 100.0);
    assert_eq!(first["total_tokens"], 15 + 3 * 3, "plan 10+5, three phases 2+1 each");
    assert_eq!(first["title"], f.task().title);

    let planned_only = f.request(subjects::CTL_TASKS_LIST, r#"{"status": "planned"}"#).await;
    assert_eq!(ids(&planned_only), [planned.to_string()]);
    let newest = f.request(subjects::CTL_TASKS_LIST, r#"{"limit": 1}"#).await;
    assert_eq!(ids(&newest), [done.to_string()]);
    let both = f.request(subjects::CTL_TASKS_LIST, r#"{"status": "created", "limit": 5}"#).await;
    assert_eq!(ids(&both), [created.to_string()]);
    let none = f.request(subjects::CTL_TASKS_LIST, r#"{"status": "blocked"}"#).await;
    assert_eq!(ids(&none), Vec::<String>::new());
    // `nats req SUBJECT ''` sends nothing: the same as {}.
    assert_eq!(ids(&f.request(subjects::CTL_TASKS_LIST, "").await), ids(&all));
}

#[tokio::test]
async fn a_bad_list_request_gets_an_error_reply_saying_what_to_fix() {
    let f = fixture(Behaviour::Succeed, options()).await;
    let list = subjects::CTL_TASKS_LIST;
    let m = f.refused(list, r#"{"limit": "#, "invalid_argument").await;
    assert!(m.contains("is not JSON") && m.contains(r#"{"status": "in_progress", "limit": 5}"#), "{m}");
    let m = f.refused(list, "[1, 2]", "invalid_argument").await;
    assert!(m.contains("is not a JSON object"), "{m}");
    let m = f.refused(list, r#"{"status": "running"}"#, "invalid_argument").await;
    assert!(m.contains("unknown task status 'running'") && m.contains("in_progress"), "{m}");
    let m = f.refused(list, r#"{"limit": 0}"#, "invalid_argument").await;
    assert!(m.contains("limit: must be between 1 and 500, got 0"), "{m}");
    let m = f.refused(list, r#"{"limit": 501}"#, "invalid_argument").await;
    assert!(m.contains("got 501"), "{m}");
    let m = f.refused(list, r#"{"limit": "5"}"#, "invalid_argument").await;
    assert!(m.contains("limit: must be a whole number"), "{m}");
    let m = f.refused(list, r#"{"limt": 5}"#, "invalid_argument").await;
    assert!(m.contains("limt: is not a field of this request: use status, limit"), "{m}");
    // The broken field is named for programs too.
    let reply = f.request(list, r#"{"status": 3}"#).await;
    assert_eq!(reply["error"]["fields"][0]["field"], "status", "{reply}");

    // A message without a reply subject (`nats pub`) is ignored, and serving goes on.
    f.client.publish(list, "{}".into()).await.unwrap();
    f.client.publish(subjects::CTL_TASKS_GET, "{not json".into()).await.unwrap();
    let ok = f.request(list, "{}").await;
    assert!(ok["tasks"].is_array(), "{ok}");
}

// ---------------------------------------------------------------------------------------------
// tasks.get

#[tokio::test]
async fn gets_a_task_by_id_or_unique_prefix_with_plan_phases_and_usage() {
    let f = fixture(Behaviour::Succeed, options()).await;
    let id = f.run_task(true).await;
    let full = f.request(subjects::CTL_TASKS_GET, &json!({"id": id.to_string()}).to_string()).await;
    assert_eq!(full["task"]["id"], id.to_string(), "{full}");
    assert_eq!(full["task"]["status"], "completed");
    let plan_phases: Vec<&str> = full["task"]["execution_plan"]["phases"]
        .as_array()
        .expect("the plan")
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(plan_phases, ["first", "second", "third"]);
    assert_eq!(full["workspace"], f.workspace);
    let phases: Vec<(&str, &str)> = full["phases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p["name"].as_str().unwrap(), p["status"].as_str().unwrap()))
        .collect();
    assert_eq!(phases, [("first", "succeeded"), ("second", "succeeded"), ("third", "succeeded")]);
    assert_eq!(full["phases"][0]["role"], "coder");
    assert_eq!(full["usage"]["planner"], json!({"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15}));
    assert_eq!(full["usage"]["coder"], json!({"prompt_tokens": 6, "completion_tokens": 3, "total_tokens": 9}));
    assert_eq!(full["total_tokens"], 24);

    let prefix = &id.to_string()[..8];
    let by_prefix = f.request(subjects::CTL_TASKS_GET, &json!({"id": prefix}).to_string()).await;
    assert_eq!(by_prefix["task"]["id"], id.to_string());
    assert_eq!(by_prefix, full, "the same answer by prefix");
}

#[tokio::test]
async fn a_bad_get_request_gets_an_error_reply_saying_what_to_fix() {
    let f = fixture(Behaviour::Succeed, options()).await;
    let a = f.stored_task("abcd1234-0000-4000-8000-000000000001").await;
    let b = f.stored_task("abcd1234-0000-4000-8000-000000000002").await;
    let get = subjects::CTL_TASKS_GET;

    let m = f.refused(get, "{}", "invalid_argument").await;
    assert!(m.contains("id: is missing: give the task id or a unique prefix"), "{m}");
    let m = f.refused(get, "", "invalid_argument").await;
    assert!(m.contains("id: is missing"), "{m}");
    let m = f.refused(get, r#"{"id": 42}"#, "invalid_argument").await;
    assert!(m.contains("id: must be a string"), "{m}");
    let m = f.refused(get, "{\"id\": \"abcd1234\"", "invalid_argument").await;
    assert!(m.contains("is not JSON"), "{m}");
    let m = f.refused(get, r#"{"id": "abcd1234"}"#, "invalid_argument").await;
    assert!(m.contains("matches 2 tasks") && m.contains(&a.to_string()) && m.contains(&b.to_string()), "{m}");
    let m = f.refused(get, r#"{"id": "abc"}"#, "invalid_argument").await;
    assert!(m.contains("too short"), "{m}");
    let m = f.refused(get, r#"{"id": "zzzzzzzz"}"#, "invalid_argument").await;
    assert!(m.contains("hex digits"), "{m}");
    let unknown = Uuid::new_v4().to_string();
    let m = f.refused(get, &json!({"id": unknown}).to_string(), "not_found").await;
    assert!(m.contains(&unknown), "{m}");
    f.refused(get, r#"{"id": "ffff0000"}"#, "not_found").await;
    // A unique prefix still answers after all that.
    let one = f.request(get, r#"{"id": "abcd1234-0000-4000-8000-000000000002"}"#).await;
    assert_eq!(one["task"]["id"], b.to_string());
}

// ---------------------------------------------------------------------------------------------
// tasks.cancel

#[tokio::test]
async fn cancels_a_planned_task_and_says_when_a_task_had_already_finished() {
    let f = fixture(Behaviour::Succeed, options()).await;
    let planned = f.run_task(false).await;
    let prefix = planned.to_string()[..8].to_string();
    let reply = f.request(subjects::CTL_TASKS_CANCEL, &json!({"id": prefix, "reason": "not needed"}).to_string()).await;
    assert_eq!(
        reply,
        json!({"v": 1, "id": planned.to_string(), "cancelled": true, "status": "cancelled", "stopping": false})
    );
    assert_eq!(f.status(planned).await, TaskStatus::Cancelled);

    let again = f.request(subjects::CTL_TASKS_CANCEL, &json!({"id": planned.to_string()}).to_string()).await;
    assert_eq!(again["cancelled"], false, "{again}");
    assert_eq!(again["status"], "cancelled");
    assert!(again["message"].as_str().unwrap().contains("only tasks that have not finished can be cancelled"));
    let done = f.run_task(true).await;
    let finished = f.request(subjects::CTL_TASKS_CANCEL, &json!({"id": done.to_string()}).to_string()).await;
    assert_eq!((finished["cancelled"].clone(), finished["status"].clone()), (json!(false), json!("completed")));
    assert_eq!(f.status(done).await, TaskStatus::Completed);

    let unknown = Uuid::new_v4().to_string();
    f.refused(subjects::CTL_TASKS_CANCEL, &json!({"id": unknown}).to_string(), "not_found").await;
    f.refused(subjects::CTL_TASKS_CANCEL, "{}", "invalid_argument").await;
    f.refused(subjects::CTL_TASKS_CANCEL, r#"{"id": "x", "force": true}"#, "invalid_argument").await;
    f.refused(subjects::CTL_TASKS_CANCEL, "not json", "invalid_argument").await;
}

#[tokio::test]
async fn cancelling_a_running_task_stops_its_agent_and_answers_with_the_end() {
    let f = fixture(Behaviour::Hang, options()).await;
    let started = f.agents.started.notified();
    let id = f.service.handle.submit(f.task(), f.workspace.clone(), true).await.unwrap();
    within("the agent to start", started).await;
    let reply = f.request(subjects::CTL_TASKS_CANCEL, &json!({"id": id.to_string()}).to_string()).await;
    assert_eq!(
        reply,
        json!({"v": 1, "id": id.to_string(), "cancelled": true, "status": "cancelled", "stopping": false})
    );
    assert!(f.agents.saw_cancel.load(Ordering::SeqCst), "the agent saw the cancellation");
    assert_eq!(f.status(id).await, TaskStatus::Cancelled);
}

#[tokio::test]
async fn a_task_still_stopping_is_reported_as_stopping_and_ends_cancelled() {
    let options = ControlOptions { cancel_wait: Duration::from_millis(50), ..ControlOptions::default() };
    let f = fixture(Behaviour::HangPastCancel, options).await;
    let started = f.agents.started.notified();
    let id = f.service.handle.submit(f.task(), f.workspace.clone(), true).await.unwrap();
    within("the agent to start", started).await;
    // The agent cannot return before the gate opens, so the run is still stopping.
    let reply = f.request(subjects::CTL_TASKS_CANCEL, &json!({"id": id.to_string()}).to_string()).await;
    assert_eq!(reply["cancelled"], true, "{reply}");
    assert_eq!(reply["stopping"], true, "{reply}");
    assert_eq!(reply["status"], "in_progress", "{reply}");
    assert!(reply["message"].as_str().unwrap().contains("turbo.ctl.tasks.get"), "{reply}");
    f.agents.gate.notify_one();
    let get = json!({"id": id.to_string()}).to_string();
    eventually("the task to be cancelled", || async {
        (f.request(subjects::CTL_TASKS_GET, &get).await["task"]["status"] == "cancelled").then_some(())
    })
    .await;
}

// ---------------------------------------------------------------------------------------------
// workers.list

#[tokio::test]
async fn lists_live_workers_with_their_load_and_drops_silent_ones() {
    let every = Duration::from_secs(1);
    let f = fixture(Behaviour::Succeed, ControlOptions { heartbeat_every: every, ..options() }).await;
    let empty = f.request(subjects::CTL_WORKERS_LIST, "{}").await;
    for role in ["planner", "coder", "tester", "reviewer"] {
        assert_eq!(empty["roles"][role], json!({"in_flight": 0, "capacity": 0, "workers": []}), "{empty}");
    }
    assert_eq!(empty["heartbeat_interval_ms"], 1000);

    // Workers beat faster than the interval, so none is ever silent for 3 intervals by chance.
    let beat = every / 10;
    let (stop_c1, c1) = heartbeats(f.client.clone(), AgentRole::Coder, "coder-1", (1, 2), beat);
    let (stop_c2, c2) = heartbeats(f.client.clone(), AgentRole::Coder, "coder-2", (2, 4), beat);
    let (stop_t1, t1) = heartbeats(f.client.clone(), AgentRole::Tester, "tester-1", (0, 1), beat);
    // Garbage on a heartbeat subject is ignored.
    f.client.publish(subjects::heartbeat(AgentRole::Coder, "junk"), "{not a heartbeat".into()).await.unwrap();

    let listed = eventually("three live workers", || async {
        let reply = f.request(subjects::CTL_WORKERS_LIST, "{}").await;
        (workers_of(&reply, "coder").len() == 2 && workers_of(&reply, "tester").len() == 1).then_some(reply)
    })
    .await;
    let coder = &listed["roles"]["coder"];
    assert_eq!((coder["in_flight"].clone(), coder["capacity"].clone()), (json!(3), json!(6)), "{listed}");
    let w = &coder["workers"][0];
    assert_eq!(
        (w["worker_id"].clone(), w["in_flight"].clone(), w["capacity"].clone()),
        (json!("coder-1"), json!(1), json!(2))
    );
    assert!(
        w["last_heartbeat_age_ms"].is_u64() && w["started_at"].is_string() && w["last_heartbeat_at"].is_string(),
        "{w}"
    );
    assert_eq!(workers_of(&listed, "planner"), Vec::<String>::new());

    let only = f.request(subjects::CTL_WORKERS_LIST, r#"{"role": "coder"}"#).await;
    let roles: Vec<&String> = only["roles"].as_object().unwrap().keys().collect();
    assert_eq!(roles, ["coder"], "{only}");
    let m = f.refused(subjects::CTL_WORKERS_LIST, r#"{"role": "builder"}"#, "invalid_argument").await;
    assert!(m.contains("unknown agent role 'builder'") && m.contains("reviewer"), "{m}");
    f.refused(subjects::CTL_WORKERS_LIST, "{", "invalid_argument").await;

    // coder-1 stops beating: it drops out, the others stay.
    stop_c1.cancel();
    c1.await.unwrap();
    let after = eventually("coder-1 to drop out", || async {
        let reply = f.request(subjects::CTL_WORKERS_LIST, "{}").await;
        (workers_of(&reply, "coder") == ["coder-2"]).then_some(reply)
    })
    .await;
    assert_eq!(workers_of(&after, "tester"), ["tester-1"], "{after}");
    assert_eq!(after["roles"]["coder"]["in_flight"], 2, "{after}");
    for (stop, publishing) in [(stop_c2, c2), (stop_t1, t1)] {
        stop.cancel();
        publishing.await.unwrap();
    }
}

// ---------------------------------------------------------------------------------------------
// Replicas and shutdown

#[tokio::test]
async fn replicas_in_the_queue_group_answer_each_request_once() {
    let mut f = fixture(Behaviour::Succeed, options()).await;
    // The second replica reads another database that holds one task, so an answer naming that
    // task shows the replica is subscribed.
    let other = Store::open_sqlite(&f.dir.path().join("other.db")).await.unwrap();
    other.upsert_project(&f.project).await.unwrap();
    let marker = f.task();
    other.insert_task(&marker, &f.workspace).await.unwrap();
    f.spawn_control(other, options()).await;
    let get_marker = json!({"id": marker.id.to_string()}).to_string();
    eventually("the second replica to answer", || async {
        let reply = f.request(subjects::CTL_TASKS_GET, &get_marker).await;
        (reply["task"]["id"] == marker.id.to_string()).then_some(())
    })
    .await;
    let inbox = f.client.new_inbox();
    let mut replies = f.client.subscribe(inbox.clone()).await.unwrap();
    f.client.flush().await.unwrap();
    const N: usize = 20;
    for _ in 0..N {
        f.client.publish_with_reply(subjects::CTL_TASKS_LIST, inbox.clone(), "{}".into()).await.unwrap();
    }
    for i in 0..N {
        within(&format!("reply {i}"), tokio_stream::StreamExt::next(&mut replies)).await.expect("a reply");
    }
    // Both replicas stop only after sending and flushing every reply they owed; after a round
    // trip of this connection every reply sent is here. Without the queue group each request
    // would have had two.
    f.stop_control().await;
    f.client.flush().await.unwrap();
    let extra = tokio::time::timeout(Duration::ZERO, tokio_stream::StreamExt::next(&mut replies)).await;
    assert!(extra.is_err(), "a request was answered twice: {extra:?}");
}

#[tokio::test]
async fn shutdown_returns_and_stops_answering() {
    let mut f = fixture(Behaviour::Succeed, options()).await;
    f.stop_control().await;
    let err = f.try_request(subjects::CTL_TASKS_LIST, "{}").await.expect_err("no one answers");
    assert_eq!(err.kind(), RequestErrorKind::NoResponders, "{err}");
}

// ---------------------------------------------------------------------------------------------
// Another language's client

/// The Python interpreter the contract test runs with.
fn python() -> String {
    std::env::var("PYTHON").unwrap_or_else(|_| "python3".into())
}

/// Fails (never skips) when the Python client is missing, saying how to install it.
fn require_nats_py() {
    let probe = std::process::Command::new(python()).args(["-c", "import nats"]).output();
    match probe {
        Ok(out) if out.status.success() => {}
        Ok(out) => panic!(
            "the Python NATS client nats-py is not installed for {}: run `make setup` (deploy/scripts/setup.sh) or `{} -m pip install nats-py`\n{}",
            python(),
            python(),
            String::from_utf8_lossy(&out.stderr)
        ),
        Err(e) => panic!("cannot run {}: {e}; install Python 3 (`make setup`) or set PYTHON", python()),
    }
}

#[tokio::test]
async fn a_python_nats_client_gets_the_documented_json_contract() {
    require_nats_py();
    let f = fixture(Behaviour::Succeed, options()).await;
    let planned = f.run_task(false).await;
    let (stop, publishing) =
        heartbeats(f.client.clone(), AgentRole::Coder, "py-coder-1", (1, 3), Duration::from_millis(200));
    eventually("the worker to be listed", || async {
        let reply = f.request(subjects::CTL_WORKERS_LIST, "{}").await;
        (workers_of(&reply, "coder") == ["py-coder-1"]).then_some(())
    })
    .await;

    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/python/test_control.py");
    let run = tokio::process::Command::new(python())
        .arg(&script)
        .arg(f.nats.url())
        .arg(planned.to_string())
        .arg("py-coder-1")
        .kill_on_drop(true)
        .output();
    let out = within("the Python client", run).await.expect("python runs");
    let said = format!(
        "{} {}\n--- stdout\n{}\n--- stderr\n{}",
        python(),
        script.display(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "the Python contract test failed ({}): {said}", out.status);
    // The script cancelled the task through the control plane.
    assert_eq!(f.status(planned).await, TaskStatus::Cancelled, "{said}");
    stop.cancel();
    publishing.await.unwrap();
}
