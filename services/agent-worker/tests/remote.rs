//! Agents over NATS, end to end: the orchestrator's `NatsAgents` client, a real `nats-server`
//! with JetStream (one per test, on a free port), and workers serving real agent actors whose
//! model is an in-process double.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use async_nats::HeaderMap;
use async_nats::jetstream::consumer::{AckPolicy, DeliverPolicy, PullConsumer, pull};
use async_nats::jetstream::{self, Context};
use async_trait::async_trait;
use futures::StreamExt;
use tokio::sync::{Barrier, Notify, mpsc};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use turbo_agent_worker::{
    AgentClient, AgentDeps, AgentSettings, AgentWorker, NatsAgents, NatsEventSink, ServeOptions, WorkerSpec,
    serve_role_with,
};
use turbo_bus::{BusConfig, Heartbeat, RawEvent, WorkItem, WorkReply, WorkRequest, WorkResult, headers, subjects};
use turbo_core::agent::AgentRole;
use turbo_core::event::{EventKind, EventSink, NullSink};
use turbo_core::ids::{PlanId, TaskId};
use turbo_core::plan::ExecutionPhase;
use turbo_core::protocol::{FailureKind, PhaseAssignment, PlanRequest};
use turbo_llm::{
    CallTiming, ChatModel, ChatRequest, ChatResponse, Message, ModelInfo, ModelSettings, Provider, TokenUsage,
};
use turbo_testkit::NatsServer;
use turbo_tool_runner::{RunnerLimits, ToolRunnerClient};

/// Longest any awaited step may take before the test fails instead of hanging.
const PATIENCE: Duration = Duration::from_secs(60);
/// Short ack wait, so redelivery after a dead worker happens within a test.
const ACK_WAIT: Duration = Duration::from_secs(2);

// ---------------------------------------------------------------------------------------------
// Harness

struct Bus {
    server: NatsServer,
    client: async_nats::Client,
    js: Context,
}

impl Bus {
    async fn start(config: BusConfig) -> Bus {
        let server = NatsServer::start().await.expect("nats-server starts");
        let client = turbo_bus::connect(&server.url()).await.expect("connect");
        let js = jetstream::new(client.clone());
        turbo_bus::setup_with(&js, &config).await.expect("setup");
        Bus { server, client, js }
    }

    async fn connect(&self) -> async_nats::Client {
        turbo_bus::connect(&self.server.url()).await.expect("connect")
    }

    async fn agents(&self) -> AgentClient {
        AgentClient::from_service(Arc::new(NatsAgents::new(self.connect().await)))
    }

    async fn work_consumer(&self, role: AgentRole) -> PullConsumer {
        self.js
            .get_stream(subjects::WORK_STREAM)
            .await
            .unwrap()
            .get_consumer(&subjects::work_consumer(role))
            .await
            .unwrap()
    }

    async fn consumer_info(&self, role: AgentRole) -> async_nats::jetstream::consumer::Info {
        self.work_consumer(role).await.info().await.unwrap().clone()
    }

    async fn work_messages(&self) -> u64 {
        self.js.get_stream(subjects::WORK_STREAM).await.unwrap().info().await.unwrap().state.messages
    }

    /// Every message stored on `subject` of `stream`, oldest first.
    async fn stored(&self, stream: &str, subject: String) -> Vec<async_nats::jetstream::Message> {
        let stream = self.js.get_stream(stream).await.unwrap();
        let consumer: PullConsumer = stream
            .create_consumer(pull::Config {
                filter_subject: subject,
                deliver_policy: DeliverPolicy::All,
                ack_policy: AckPolicy::None,
                ..Default::default()
            })
            .await
            .unwrap();
        let mut out = Vec::new();
        let mut batch = consumer.fetch().max_messages(1000).messages().await.unwrap();
        while let Some(message) = batch.next().await {
            out.push(message.unwrap());
        }
        out
    }

    async fn results(&self, task_id: TaskId) -> Vec<WorkResult> {
        let stored = self.stored(subjects::RESULTS_STREAM, subjects::results(task_id)).await;
        stored.iter().map(|m| turbo_bus::decode::<WorkResult>(&m.payload).unwrap()).collect()
    }

    /// Waits until `n` dead letters of `role` are stored; returns them.
    async fn dead_letters(&self, role: AgentRole, n: usize) -> Vec<async_nats::jetstream::Message> {
        eventually(&format!("{n} dead letters"), || async {
            let letters = self.stored(subjects::DLQ_STREAM, subjects::dlq(role)).await;
            (letters.len() >= n).then_some(letters)
        })
        .await
    }

    /// Waits until every work item queued for `role` is acknowledged and gone from the queue.
    async fn queue_settled(&self, role: AgentRole) -> async_nats::jetstream::consumer::Info {
        eventually("the work queue to be empty and acknowledged", || async {
            let info = self.consumer_info(role).await;
            let settled = info.num_ack_pending == 0 && info.num_pending == 0 && self.work_messages().await == 0;
            settled.then_some(info)
        })
        .await
    }
}

fn test_config() -> BusConfig {
    BusConfig { ack_wait: ACK_WAIT, ..BusConfig::default() }
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

type Reply = Pin<Box<dyn Future<Output = turbo_llm::Result<ChatResponse>> + Send>>;

/// A model whose every call is answered by a closure given the call's index.
struct Double {
    settings: ModelSettings,
    calls: AtomicUsize,
    answer: Box<dyn Fn(usize) -> Reply + Send + Sync>,
}

impl Double {
    fn new(answer: impl Fn(usize) -> Reply + Send + Sync + 'static) -> Arc<Double> {
        Arc::new(Double {
            settings: ModelSettings::new(Provider::Ollama, "http://unused", "double"),
            calls: AtomicUsize::new(0),
            answer: Box::new(answer),
        })
    }

    /// Always answers `text` at once.
    fn text(text: &'static str) -> Arc<Double> {
        Double::new(move |_| Box::pin(async move { Ok(response(text)) }))
    }

    /// Signals `started` on every call, then answers `text` once `release` is notified.
    fn gated(text: &'static str, started: mpsc::UnboundedSender<()>, release: Arc<Notify>) -> Arc<Double> {
        Double::new(move |_| {
            let (release, started) = (release.clone(), started.clone());
            Box::pin(async move {
                let _ = started.send(());
                release.notified().await;
                Ok(response(text))
            })
        })
    }

    /// Signals `started` on every call, then never answers; signals `dropped` when the call is
    /// abandoned (the agent's work was cancelled).
    fn hang(started: mpsc::UnboundedSender<()>, dropped: Option<mpsc::UnboundedSender<()>>) -> Arc<Double> {
        Double::new(move |_| {
            let started = started.clone();
            let guard = dropped.clone().map(DropSignal);
            Box::pin(async move {
                let _guard = guard;
                let _ = started.send(());
                std::future::pending().await
            })
        })
    }

    fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }
}

struct DropSignal(mpsc::UnboundedSender<()>);

impl Drop for DropSignal {
    fn drop(&mut self) {
        let _ = self.0.send(());
    }
}

fn response(text: &str) -> ChatResponse {
    ChatResponse {
        message: Message::assistant(text),
        usage: TokenUsage { prompt_tokens: 3, completion_tokens: 2 },
        usage_estimated: false,
        timing: CallTiming::default(),
        model: "double".into(),
        finish_reason: None,
    }
}

#[async_trait]
impl ChatModel for Double {
    fn settings(&self) -> &ModelSettings {
        &self.settings
    }

    async fn chat(&self, _: ChatRequest, _: turbo_llm::OnDelta<'_>) -> turbo_llm::Result<ChatResponse> {
        let n = self.calls.fetch_add(1, Ordering::SeqCst);
        (self.answer)(n).await
    }

    async fn model_info(&self) -> turbo_llm::Result<ModelInfo> {
        Ok(ModelInfo { name: "double".into(), context_length: Some(8192) })
    }

    async fn check_model(&self) -> turbo_llm::Result<()> {
        Ok(())
    }
}

async fn agent_worker(role: AgentRole, model: Arc<Double>, events: Arc<dyn EventSink>) -> AgentWorker {
    let deps = AgentDeps {
        model,
        tools: ToolRunnerClient::local(RunnerLimits::default()),
        events,
        settings: AgentSettings::default(),
        knowledge: None,
    };
    AgentWorker::start(WorkerSpec { roles: vec![(role, deps)], per_role: 2, call_timeout: PATIENCE })
        .await
        .expect("agent worker starts")
}

/// A worker process: agent actors plus `serve_role` on a connection of its own.
struct Replica {
    agents: AgentWorker,
    shutdown: CancellationToken,
    serving: JoinHandle<turbo_bus::Result<()>>,
}

impl Replica {
    async fn start(bus: &Bus, role: AgentRole, model: Arc<Double>, capacity: usize, name: &str) -> Replica {
        Replica::start_with(bus, role, model, Arc::new(NullSink), capacity, name).await
    }

    async fn start_with(
        bus: &Bus,
        role: AgentRole,
        model: Arc<Double>,
        events: Arc<dyn EventSink>,
        capacity: usize,
        name: &str,
    ) -> Replica {
        let agents = agent_worker(role, model, events).await;
        let options = ServeOptions {
            worker_id: name.to_string(),
            heartbeat_every: Duration::from_millis(100),
            pull_wait: Duration::from_millis(500),
            ..ServeOptions::new(capacity)
        };
        let shutdown = CancellationToken::new();
        let serving =
            tokio::spawn(serve_role_with(bus.connect().await, agents.handle(role).unwrap(), options, shutdown.clone()));
        Replica { agents, shutdown, serving }
    }

    /// Graceful: stop pulling, finish what is in flight.
    async fn stop(self) {
        self.shutdown.cancel();
        within("the worker to stop", self.serving).await.unwrap().expect("serving ends cleanly");
        self.agents.stop().await;
    }
}

fn assignment(task_id: TaskId, workspace: &str) -> PhaseAssignment {
    PhaseAssignment {
        task_id,
        plan_id: PlanId::new(),
        project_id: None,
        task_title: "greet".into(),
        task_description: "add a greet function please".into(),
        phase: ExecutionPhase {
            estimated_duration: Duration::from_secs(60),
            ..ExecutionPhase::new("implement", "write greet", "coder")
        },
        plan_outline: vec![],
        attempt: 1,
        workspace: workspace.into(),
        feedback: None,
        max_steps: 5,
    }
}

fn work_item(task_id: TaskId, workspace: &str) -> WorkItem {
    WorkItem {
        request_id: uuid::Uuid::new_v4(),
        task_id,
        role: AgentRole::Coder,
        request: WorkRequest::RunPhase(Box::new(assignment(task_id, workspace))),
    }
}

fn spawn_phase(
    agents: &AgentClient,
    task_id: TaskId,
    workspace: &str,
    cancel: CancellationToken,
) -> JoinHandle<Result<turbo_core::protocol::PhaseOutcome, turbo_core::protocol::AgentFailure>> {
    let agents = agents.clone();
    let assignment = assignment(task_id, workspace);
    tokio::spawn(async move { agents.run_phase(AgentRole::Coder, assignment, cancel).await })
}

// ---------------------------------------------------------------------------------------------
// Round trips

#[tokio::test]
async fn a_phase_round_trips_through_nats_to_a_worker_and_its_events_follow() {
    let bus = Bus::start(test_config()).await;
    let ws = tempfile::tempdir().unwrap();
    let (sink, _publisher) = NatsEventSink::start(bus.connect().await);
    let model = Double::text("implemented greet()");
    let replica = Replica::start_with(&bus, AgentRole::Coder, model.clone(), Arc::new(sink.clone()), 1, "w1").await;
    let agents = bus.agents().await;

    let task_id = TaskId::new();
    let outcome = within(
        "the phase",
        agents.run_phase(AgentRole::Coder, assignment(task_id, ws.path().to_str().unwrap()), CancellationToken::new()),
    )
    .await
    .expect("the phase succeeds");
    assert!(outcome.success);
    assert_eq!(outcome.summary, "implemented greet()");
    assert_eq!(outcome.usage.completion_tokens, 2);
    assert_eq!(model.calls(), 1);

    let results = bus.results(task_id).await;
    assert_eq!(results.len(), 1, "one stored result");
    assert_eq!(results[0].worker_id, "w1");
    assert!(matches!(&results[0].reply, WorkReply::PhaseDone(o) if o.summary == "implemented greet()"));
    bus.queue_settled(AgentRole::Coder).await;

    within("the events to be stored", sink.flush()).await;
    let events: Vec<RawEvent> = bus
        .stored(subjects::EVENTS_RAW_STREAM, subjects::events_raw(task_id))
        .await
        .iter()
        .map(|m| turbo_bus::decode::<RawEvent>(&m.payload).unwrap())
        .collect();
    let kinds: Vec<&str> = events.iter().map(|e| e.kind.name()).collect();
    assert!(kinds.contains(&"model_call"), "{kinds:?}");
    assert!(
        events.iter().any(|e| matches!(&e.kind, EventKind::AgentMessage { text, .. } if text == "implemented greet()")),
        "{kinds:?}"
    );
    assert_eq!(sink.dropped() + sink.failed(), 0);
    replica.stop().await;
}

#[tokio::test]
async fn a_result_is_returned_once_its_events_are_recorded() {
    let bus = Bus::start(test_config()).await;
    let ws = tempfile::tempdir().unwrap();
    let (sink, _publisher) = NatsEventSink::start(bus.connect().await);
    let options =
        ServeOptions { events: Some(sink.clone()), pull_wait: Duration::from_millis(500), ..ServeOptions::new(1) };
    let agents = agent_worker(AgentRole::Coder, Double::text("done"), Arc::new(sink.clone())).await;
    let shutdown = CancellationToken::new();
    let serving = tokio::spawn(serve_role_with(
        bus.connect().await,
        agents.handle(AgentRole::Coder).unwrap(),
        options,
        shutdown.clone(),
    ));
    // How far the caller has recorded the raw events: nothing yet.
    let (recorded, recorded_rx) = tokio::sync::watch::channel(0);
    let client =
        AgentClient::from_service(Arc::new(NatsAgents::new(bus.connect().await).with_events_recorded(recorded_rx)));

    let task_id = TaskId::new();
    let call = spawn_phase(&client, task_id, ws.path().to_str().unwrap(), CancellationToken::new());
    let result = eventually("the result to be stored", || async { bus.results(task_id).await.pop() }).await;
    let through = result.events_through.expect("the result says how far its events are stored");
    let raw = bus.stored(subjects::EVENTS_RAW_STREAM, subjects::events_raw(task_id)).await;
    let last = raw.last().expect("the work's events are stored before its result").info().unwrap().stream_sequence;
    assert!(through >= last, "events through {through}, last event at {last}");
    assert!(!call.is_finished(), "the call waits for the events to be recorded");

    recorded.send_replace(through);
    let outcome = within("the call", call).await.unwrap().expect("the phase succeeds");
    assert_eq!(outcome.summary, "done");
    shutdown.cancel();
    within("the worker to stop", serving).await.unwrap().unwrap();
    agents.stop().await;
}

#[tokio::test]
async fn a_plan_goes_to_the_planner_workers() {
    let bus = Bus::start(test_config()).await;
    let ws = tempfile::tempdir().unwrap();
    let plan = r#"{"phases": [{"name": "implement", "description": "Write greet(name) in greet.py", "agent": "coder",
        "depends_on": [], "estimated_minutes": 5, "files_to_create": ["greet.py"]}],
        "confidence_score": 0.9, "risk_factors": []}"#;
    let replica = Replica::start(&bus, AgentRole::Planner, Double::text(plan), 1, "planner-1").await;
    let agents = bus.agents().await;

    let request = PlanRequest {
        task: turbo_core::task::DevelopmentTask::from_request(Default::default(), "add a greet(name) function"),
        workspace: ws.path().to_str().unwrap().into(),
    };
    let task_id = request.task.id;
    let outcome = within("the plan", agents.plan(request, CancellationToken::new())).await.expect("a plan");
    assert_eq!(outcome.plan.task_id, task_id);
    assert_eq!(outcome.plan.phases.len(), 1);
    assert_eq!(outcome.plan.phases[0].name, "implement");
    replica.stop().await;
}

#[tokio::test]
async fn replicas_share_the_role_queue_and_each_item_is_done_once() {
    let bus = Bus::start(test_config()).await;
    let ws = tempfile::tempdir().unwrap();
    // Each replica's first call waits for the other's: with one slot each, both must have
    // taken an item from the shared queue before any item finishes.
    let barrier = Arc::new(Barrier::new(2));
    let double = |name: &'static str| {
        let barrier = barrier.clone();
        Double::new(move |n| {
            let barrier = barrier.clone();
            Box::pin(async move {
                if n == 0 {
                    barrier.wait().await;
                }
                Ok(response(name))
            })
        })
    };
    let (model_a, model_b) = (double("done by a"), double("done by b"));
    let a = Replica::start(&bus, AgentRole::Coder, model_a.clone(), 1, "a").await;
    let b = Replica::start(&bus, AgentRole::Coder, model_b.clone(), 1, "b").await;
    let agents = bus.agents().await;

    let calls: Vec<_> = (0..6)
        .map(|_| spawn_phase(&agents, TaskId::new(), ws.path().to_str().unwrap(), CancellationToken::new()))
        .collect();
    let mut summaries = Vec::new();
    for call in calls {
        summaries.push(within("a phase", call).await.unwrap().expect("the phase succeeds").summary);
    }
    let by_a = summaries.iter().filter(|s| *s == "done by a").count();
    let by_b = summaries.iter().filter(|s| *s == "done by b").count();
    assert_eq!(by_a + by_b, 6, "{summaries:?}");
    assert!(by_a >= 1 && by_b >= 1, "both replicas took work: {summaries:?}");
    assert_eq!(model_a.calls(), by_a, "replica a ran exactly the items it answered");
    assert_eq!(model_b.calls(), by_b, "replica b ran exactly the items it answered");
    let info = bus.queue_settled(AgentRole::Coder).await;
    assert_eq!(info.delivered.consumer_sequence, 6, "each item was delivered once");
    a.stop().await;
    b.stop().await;
}

#[tokio::test]
async fn workers_send_heartbeats_with_their_load() {
    let bus = Bus::start(test_config()).await;
    let ws = tempfile::tempdir().unwrap();
    let mut beats = bus.client.subscribe(subjects::heartbeats(AgentRole::Coder)).await.unwrap();
    bus.client.flush().await.unwrap();
    let (started, mut started_rx) = mpsc::unbounded_channel();
    let replica = Replica::start(&bus, AgentRole::Coder, Double::hang(started, None), 3, "beating").await;

    let first = next_beat(&mut beats).await;
    assert_eq!((first.worker_id.as_str(), first.role, first.capacity), ("beating", AgentRole::Coder, 3));
    assert_eq!(first.in_flight, 0);
    assert!(first.at >= first.started_at);

    let cancel = CancellationToken::new();
    let call = spawn_phase(&bus.agents().await, TaskId::new(), ws.path().to_str().unwrap(), cancel.clone());
    within("the model call", started_rx.recv()).await;
    loop {
        if next_beat(&mut beats).await.in_flight == 1 {
            break;
        }
    }
    cancel.cancel();
    let _ = within("the cancelled call", call).await;
    replica.stop().await;
}

async fn next_beat(beats: &mut async_nats::Subscriber) -> Heartbeat {
    let message = within("a heartbeat", beats.next()).await.expect("subscription open");
    assert_eq!(message.subject.as_str(), subjects::heartbeat(AgentRole::Coder, "beating"));
    turbo_bus::decode::<Heartbeat>(&message.payload).unwrap()
}

// ---------------------------------------------------------------------------------------------
// Cancellation

#[tokio::test]
async fn cancelling_a_call_stops_the_agent_on_the_worker() {
    let bus = Bus::start(test_config()).await;
    let ws = tempfile::tempdir().unwrap();
    let (started, mut started_rx) = mpsc::unbounded_channel();
    let (dropped, mut dropped_rx) = mpsc::unbounded_channel();
    let replica = Replica::start(&bus, AgentRole::Coder, Double::hang(started, Some(dropped)), 1, "w1").await;
    let agents = bus.agents().await;

    let task_id = TaskId::new();
    let cancel = CancellationToken::new();
    let call = spawn_phase(&agents, task_id, ws.path().to_str().unwrap(), cancel.clone());
    within("the model call", started_rx.recv()).await;
    cancel.cancel();
    let failure = within("the cancelled call", call).await.unwrap().unwrap_err();
    assert_eq!(failure.kind, FailureKind::Cancelled);

    within("the worker to abandon the model call", dropped_rx.recv()).await;
    let results = eventually("the worker's result", || async {
        let results = bus.results(task_id).await;
        (!results.is_empty()).then_some(results)
    })
    .await;
    assert!(matches!(&results[0].reply, WorkReply::Failed(f) if f.kind == FailureKind::Cancelled), "{results:?}");
    bus.queue_settled(AgentRole::Coder).await;
    replica.stop().await;
}

#[tokio::test]
async fn queued_work_of_a_cancelled_task_is_not_started() {
    let bus = Bus::start(test_config()).await;
    let ws = tempfile::tempdir().unwrap();
    let release = Arc::new(Notify::new());
    let (started, mut started_rx) = mpsc::unbounded_channel();
    let model = Double::gated("done", started, release.clone());
    let replica = Replica::start(&bus, AgentRole::Coder, model.clone(), 1, "w1").await;
    let agents = bus.agents().await;
    let workspace = ws.path().to_str().unwrap();

    // The only slot is busy with task 1, so task 2's item waits in the queue.
    let first = spawn_phase(&agents, TaskId::new(), workspace, CancellationToken::new());
    within("the first model call", started_rx.recv()).await;
    let queued_task = TaskId::new();
    let cancel = CancellationToken::new();
    let queued = spawn_phase(&agents, queued_task, workspace, cancel.clone());
    eventually("the second item to be queued", || async { (bus.work_messages().await == 2).then_some(()) }).await;
    cancel.cancel();
    assert_eq!(within("the cancelled call", queued).await.unwrap().unwrap_err().kind, FailureKind::Cancelled);

    release.notify_one();
    within("the first call", first).await.unwrap().expect("the first phase succeeds");
    let results = eventually("the cancelled item's result", || async {
        let results = bus.results(queued_task).await;
        (!results.is_empty()).then_some(results)
    })
    .await;
    assert!(
        matches!(
            &results[0].reply,
            WorkReply::Failed(f) if f.kind == FailureKind::Cancelled && f.message.contains("before")
        ),
        "{results:?}"
    );
    bus.queue_settled(AgentRole::Coder).await;
    assert_eq!(model.calls(), 1, "the cancelled task's work never reached the model");
    replica.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Poison, failures and redelivery

#[tokio::test]
async fn malformed_and_old_version_items_are_dead_lettered_and_the_worker_serves_on() {
    let bus = Bus::start(test_config()).await;
    let ws = tempfile::tempdir().unwrap();
    let model = Double::text("done");
    let replica = Replica::start(&bus, AgentRole::Coder, model.clone(), 1, "w1").await;

    let malformed = bytes::Bytes::from_static(b"{not json at all");
    bus.js.publish(subjects::work(AgentRole::Coder), malformed.clone()).await.unwrap().await.unwrap();
    // A newer orchestrator's item: unreadable here, but its headers say whom to tell.
    let (newer_task, newer_request) = (TaskId::new(), uuid::Uuid::new_v4());
    let newer = bytes::Bytes::from_static(br#"{"v": 7, "kind": "work_item", "body": {"shape": "unknown"}}"#);
    let mut newer_headers = HeaderMap::new();
    newer_headers.insert(headers::TASK_ID, newer_task.to_string().as_str());
    newer_headers.insert(headers::REQUEST_ID, newer_request.to_string().as_str());
    bus.js
        .publish_with_headers(subjects::work(AgentRole::Coder), newer_headers, newer.clone())
        .await
        .unwrap()
        .await
        .unwrap();

    let outcome = within(
        "the good phase",
        bus.agents().await.run_phase(
            AgentRole::Coder,
            assignment(TaskId::new(), ws.path().to_str().unwrap()),
            CancellationToken::new(),
        ),
    )
    .await
    .expect("the good item after the bad ones is served");
    assert_eq!(outcome.summary, "done");
    assert_eq!(model.calls(), 1);

    let letters = bus.dead_letters(AgentRole::Coder, 2).await;
    assert_eq!(letters.len(), 2);
    let reason =
        |m: &async_nats::jetstream::Message| headers::get(m.headers.as_ref(), headers::DLQ_REASON).unwrap().to_string();
    assert_eq!(letters[0].payload, malformed, "the dead letter keeps the original bytes");
    assert!(reason(&letters[0]).contains("malformed message: not JSON"), "{}", reason(&letters[0]));
    assert_eq!(letters[1].payload, newer);
    assert!(
        reason(&letters[1]).contains("message from version 7; this process speaks version 1: upgrade this process"),
        "{}",
        reason(&letters[1])
    );
    for letter in &letters {
        assert_eq!(headers::get(letter.headers.as_ref(), headers::DLQ_SUBJECT), Some("turbo.work.coder"));
        assert_eq!(headers::get(letter.headers.as_ref(), headers::DLQ_WORKER), Some("w1"));
    }

    let told = turbo_bus::find_result(&bus.js, newer_task, newer_request).await.unwrap().expect("the sender is told");
    assert!(matches!(&told.reply, WorkReply::Failed(f) if f.message.contains("version 7")), "{told:?}");
    let info = bus.queue_settled(AgentRole::Coder).await;
    assert_eq!(info.delivered.consumer_sequence, 3, "each item was delivered once: poison is not retried");
    replica.stop().await;
}

#[tokio::test]
async fn an_agent_that_fails_every_time_gives_a_result_and_is_not_redelivered() {
    let bus = Bus::start(test_config()).await;
    let ws = tempfile::tempdir().unwrap();
    let model = Double::new(|_| {
        Box::pin(async { Err(turbo_llm::Error::Server { message: "the model always breaks on this".into() }) })
    });
    let replica = Replica::start(&bus, AgentRole::Coder, model.clone(), 1, "w1").await;
    let agents = bus.agents().await;

    for round in 1..=2 {
        let failure = within(
            "the failing phase",
            agents.run_phase(
                AgentRole::Coder,
                assignment(TaskId::new(), ws.path().to_str().unwrap()),
                CancellationToken::new(),
            ),
        )
        .await
        .expect_err("the agent fails");
        assert_eq!(failure.kind, FailureKind::ModelOutput, "{failure}");
        assert!(failure.message.contains("the model always breaks on this"), "{failure}");
        // A failure is a result: stored, acknowledged, and off the queue.
        let info = bus.queue_settled(AgentRole::Coder).await;
        assert_eq!(info.delivered.consumer_sequence, round as u64, "each item was delivered once");
        assert_eq!(info.ack_floor.stream_sequence, info.delivered.stream_sequence);
        assert_eq!(model.calls(), round, "each failing item ran once");
    }
    assert!(bus.stored(subjects::DLQ_STREAM, subjects::dlq(AgentRole::Coder)).await.is_empty());
    replica.stop().await;
}

#[tokio::test]
async fn work_that_keeps_killing_its_worker_is_dead_lettered_after_the_limit() {
    let bus = Bus::start(BusConfig { max_deliver: 2, ..test_config() }).await;
    let ws = tempfile::tempdir().unwrap();
    let agents = bus.agents().await;
    let task_id = TaskId::new();
    let call = spawn_phase(&agents, task_id, ws.path().to_str().unwrap(), CancellationToken::new());

    // Two workers take the item and die without a word (pull, never acknowledge).
    let consumer = bus.work_consumer(AgentRole::Coder).await;
    for expected in 1..=2 {
        let mut batch = consumer.batch().max_messages(1).expires(PATIENCE).messages().await.unwrap();
        let message = within("a delivery", batch.next()).await.unwrap().unwrap();
        assert_eq!(message.info().unwrap().delivered, expected);
    }

    let model = Double::text("must not run");
    let replica = Replica::start(&bus, AgentRole::Coder, model.clone(), 1, "w3").await;
    let failure = within("the caller to be told", call).await.unwrap().expect_err("dead-lettered");
    assert_eq!(failure.kind, FailureKind::Internal);
    assert!(failure.message.contains("dead-lettered"), "{failure}");
    assert!(failure.message.contains("delivered 3 times (limit 2)"), "{failure}");
    assert_eq!(model.calls(), 0, "the item did not run a third time");

    let letters = bus.dead_letters(AgentRole::Coder, 1).await;
    assert_eq!(headers::get(letters[0].headers.as_ref(), headers::DLQ_DELIVERED), Some("3"));
    assert_eq!(headers::get(letters[0].headers.as_ref(), headers::TASK_ID), Some(task_id.to_string().as_str()));
    bus.queue_settled(AgentRole::Coder).await;
    replica.stop().await;
}

#[tokio::test]
async fn a_phase_whose_worker_dies_is_taken_over_by_another_replica() {
    let bus = Bus::start(test_config()).await;
    let ws = tempfile::tempdir().unwrap();
    let (started, mut started_rx) = mpsc::unbounded_channel();
    let doomed = Replica::start(&bus, AgentRole::Coder, Double::hang(started, None), 1, "doomed").await;
    let agents = bus.agents().await;
    let task_id = TaskId::new();
    let call = spawn_phase(&agents, task_id, ws.path().to_str().unwrap(), CancellationToken::new());
    within("the doomed worker's model call", started_rx.recv()).await;

    // The worker dies mid-phase: its serving stops without acknowledging anything.
    doomed.serving.abort();
    assert!(doomed.serving.await.unwrap_err().is_cancelled());

    let rescuer_model = Double::text("done by the rescuer");
    let rescuer = Replica::start(&bus, AgentRole::Coder, rescuer_model.clone(), 1, "rescuer").await;
    let outcome = within("the phase to be taken over", call).await.unwrap().expect("the phase succeeds");
    assert_eq!(outcome.summary, "done by the rescuer");
    assert_eq!(rescuer_model.calls(), 1);
    let results = bus.results(task_id).await;
    assert_eq!(results.len(), 1, "{results:?}");
    assert_eq!(results[0].worker_id, "rescuer");
    let info = bus.queue_settled(AgentRole::Coder).await;
    assert_eq!(info.delivered.consumer_sequence, 2, "delivered to the dead worker, then to the rescuer");
    rescuer.stop().await;
}

#[tokio::test]
async fn a_call_longer_than_the_ack_wait_reports_progress_and_is_not_redelivered() {
    let bus = Bus::start(test_config()).await;
    let ws = tempfile::tempdir().unwrap();
    // Acknowledgements of the coder queue, progress ("+WPI") among them, as NATS receives them.
    let mut acks = bus
        .client
        .subscribe(format!("$JS.ACK.{}.{}.>", subjects::WORK_STREAM, subjects::work_consumer(AgentRole::Coder)))
        .await
        .unwrap();
    bus.client.flush().await.unwrap();
    let release = Arc::new(Notify::new());
    let (started, mut started_rx) = mpsc::unbounded_channel();
    let slow = Double::gated("slow but done", started, release.clone());
    let busy = Replica::start(&bus, AgentRole::Coder, slow, 1, "busy").await;
    let agents = bus.agents().await;
    let call = spawn_phase(&agents, TaskId::new(), ws.path().to_str().unwrap(), CancellationToken::new());
    within("the slow model call", started_rx.recv()).await;
    // An idle replica that would get the item if the ack wait ran out.
    let idle_model = Double::text("taken over");
    let idle = Replica::start(&bus, AgentRole::Coder, idle_model.clone(), 1, "idle").await;

    // Progress comes every third of the ack wait: four of them span more than one ack wait.
    let mut progress = 0;
    while progress < 4 {
        let ack = within("progress", acks.next()).await.unwrap();
        if ack.payload.as_ref() == b"+WPI" {
            progress += 1;
        }
    }
    release.notify_one();
    let outcome = within("the slow call", call).await.unwrap().expect("the phase succeeds");
    assert_eq!(outcome.summary, "slow but done");
    assert_eq!(idle_model.calls(), 0, "the item stayed with the busy worker");
    let info = bus.queue_settled(AgentRole::Coder).await;
    assert_eq!(info.delivered.consumer_sequence, 1, "delivered once");
    busy.stop().await;
    idle.stop().await;
}

#[tokio::test]
async fn the_same_phase_attempt_queued_again_is_answered_from_its_stored_result() {
    let bus = Bus::start(test_config()).await;
    let ws = tempfile::tempdir().unwrap();
    let model = Double::text("implemented greet()");
    let replica = Replica::start(&bus, AgentRole::Coder, model.clone(), 1, "w1").await;
    let task_id = TaskId::new();
    let workspace = ws.path().to_str().unwrap();
    let first = within(
        "the phase",
        bus.agents().await.run_phase(AgentRole::Coder, assignment(task_id, workspace), CancellationToken::new()),
    )
    .await
    .expect("the phase succeeds");

    // Another orchestrator (the first died after queueing it) queues the same attempt again.
    let again = within(
        "the phase again",
        bus.agents().await.run_phase(AgentRole::Coder, assignment(task_id, workspace), CancellationToken::new()),
    )
    .await
    .expect("the stored outcome");
    assert_eq!(again, first);
    assert_eq!(model.calls(), 1, "the attempt ran once");
    assert_eq!(bus.results(task_id).await.len(), 1, "one stored result");

    // The next attempt of the phase is new work.
    let next = PhaseAssignment { attempt: 2, ..assignment(task_id, workspace) };
    within("the next attempt", bus.agents().await.run_phase(AgentRole::Coder, next, CancellationToken::new()))
        .await
        .expect("the second attempt succeeds");
    assert_eq!(model.calls(), 2);
    replica.stop().await;
}

#[tokio::test]
async fn a_redelivered_item_whose_result_is_stored_is_not_run_again() {
    let bus = Bus::start(test_config()).await;
    let ws = tempfile::tempdir().unwrap();
    let task_id = TaskId::new();
    let item = work_item(task_id, ws.path().to_str().unwrap());
    turbo_bus::publish::publish_stored(&bus.js, subjects::work(AgentRole::Coder), &item, HeaderMap::new())
        .await
        .unwrap();

    // A worker takes the item, stores its result, and dies before acknowledging.
    let consumer = bus.work_consumer(AgentRole::Coder).await;
    let mut batch = consumer.batch().max_messages(1).expires(PATIENCE).messages().await.unwrap();
    let taken = within("a delivery", batch.next()).await.unwrap().unwrap();
    assert_eq!(turbo_bus::decode::<WorkItem>(&taken.payload).unwrap(), item);
    let stored = WorkResult {
        request_id: item.request_id,
        task_id,
        role: AgentRole::Coder,
        worker_id: "dead".into(),
        reply: WorkReply::Failed(turbo_core::protocol::AgentFailure::new(FailureKind::StepLimit, "out of steps")),
        events_through: None,
    };
    turbo_bus::publish::publish_stored(&bus.js, subjects::results(task_id), &stored, HeaderMap::new()).await.unwrap();

    let model = Double::text("must not run");
    let replica = Replica::start(&bus, AgentRole::Coder, model.clone(), 1, "w2").await;
    let info = bus.queue_settled(AgentRole::Coder).await;
    assert_eq!(info.delivered.consumer_sequence, 2, "delivered to the dead worker, then to the new one");
    assert_eq!(model.calls(), 0, "the stored result was found; the work did not run twice");
    assert_eq!(bus.results(task_id).await, vec![stored]);
    replica.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Lifecycle

#[tokio::test]
async fn shutdown_finishes_the_work_in_flight() {
    let bus = Bus::start(test_config()).await;
    let ws = tempfile::tempdir().unwrap();
    let release = Arc::new(Notify::new());
    let (started, mut started_rx) = mpsc::unbounded_channel();
    let model = Double::gated("finished during shutdown", started, release.clone());
    let replica = Replica::start(&bus, AgentRole::Coder, model, 1, "w1").await;
    let call = spawn_phase(&bus.agents().await, TaskId::new(), ws.path().to_str().unwrap(), CancellationToken::new());
    within("the model call", started_rx.recv()).await;

    replica.shutdown.cancel();
    release.notify_one();
    within("serving to end", replica.serving).await.unwrap().expect("serving ends cleanly");
    let outcome = within("the call", call).await.unwrap().expect("the work in flight finished");
    assert_eq!(outcome.summary, "finished during shutdown");
    bus.queue_settled(AgentRole::Coder).await;
    replica.agents.stop().await;
}

#[tokio::test]
async fn setup_is_idempotent_and_updates_settings() {
    let bus = Bus::start(test_config()).await;
    let item = work_item(TaskId::new(), "/tmp");
    turbo_bus::publish::publish_stored(&bus.js, subjects::work(AgentRole::Coder), &item, HeaderMap::new())
        .await
        .unwrap();

    // NATS announces every stream update; a setup with the same settings sends none, even
    // when every service runs it at once, and one with new settings updates only the stream
    // they change.
    let mut updates = bus.client.subscribe("$JS.EVENT.ADVISORY.STREAM.UPDATED.>").await.unwrap();
    bus.client.flush().await.unwrap();
    let same = test_config();
    let again: Vec<_> = (0..8).map(|_| turbo_bus::setup_with(&bus.js, &same)).collect();
    for setup in futures::future::join_all(again).await {
        setup.expect("a second setup succeeds, beside seven others");
    }
    let longer = BusConfig {
        ack_wait: Duration::from_secs(45),
        max_deliver: 7,
        results_max_age: test_config().results_max_age * 2,
        ..test_config()
    };
    turbo_bus::setup_with(&bus.js, &longer).await.expect("a setup with new settings succeeds");
    turbo_bus::setup_with(&bus.js, &longer).await.expect("and again");
    bus.client.flush().await.unwrap();
    let updated = within("the update's advisory", updates.next()).await.expect("an advisory");
    assert_eq!(updated.subject.as_str(), format!("$JS.EVENT.ADVISORY.STREAM.UPDATED.{}", subjects::RESULTS_STREAM));
    let more = tokio::time::timeout(Duration::from_millis(500), updates.next()).await;
    assert!(more.is_err(), "one stream update in all: {:?}", more.map(|m| m.map(|m| m.subject)));

    assert_eq!(bus.work_messages().await, 1, "setup keeps queued work");
    for role in AgentRole::ALL.iter().copied() {
        let info = bus.consumer_info(role).await;
        assert_eq!(info.config.ack_wait, Duration::from_secs(45), "{role}");
        assert_eq!(turbo_bus::delivery_limit(&info), 7, "{role}");
        assert_eq!(info.config.filter_subject, subjects::work(role));
    }
    let mut work = bus.js.get_stream(subjects::WORK_STREAM).await.unwrap();
    let work = work.info().await.unwrap();
    assert_eq!(work.config.retention, async_nats::jetstream::stream::RetentionPolicy::WorkQueue);
    assert_eq!(work.config.subjects, vec![subjects::WORK_SUBJECTS.to_string()]);
    let mut results = bus.js.get_stream(subjects::RESULTS_STREAM).await.unwrap();
    assert_eq!(results.info().await.unwrap().config.max_age, longer.results_max_age);
    for stream in [subjects::DLQ_STREAM, subjects::EVENTS_RAW_STREAM] {
        bus.js.get_stream(stream).await.unwrap_or_else(|e| panic!("{stream}: {e}"));
    }
}
