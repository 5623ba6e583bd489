//! The cluster, black box: the orchestrator and one agent-worker process per role (more where a
//! test needs replicas) over a real nats-server, with a fresh Postgres database, driven through
//! the orchestrator's gRPC API. Processes are killed with SIGKILL to show that the loss of a
//! worker or of the orchestrator loses no task.

use std::time::Duration;

use futures::StreamExt;
use serde_json::{Value, json};
use tonic::Streaming;
use tonic_health::pb::health_check_response::ServingStatus;
use turbo_bus::async_nats::jetstream::{self, consumer::DeliverPolicy};
use turbo_bus::{Heartbeat, WorkReply, WorkResult, subjects};
use turbo_core::agent::AgentRole;
use turbo_core::event::{EventKind, TaskEvent};
use turbo_core::ids::TaskId;
use turbo_core::task::TaskStatus;
use turbo_proto::common::v1::{Language, ProjectType};
use turbo_proto::projects::v1 as projects;
use turbo_proto::sessions::v1 as sessions;
use turbo_proto::sessions::v1::session_service_client::SessionServiceClient;
use turbo_proto::tasks::v1 as tasks;
use turbo_proto::tasks::v1::task_service_client::TaskServiceClient;
use turbo_store::PhaseStatus;
use turbo_testkit::Reply;
use turbo_tests::cluster::{CODER_MODEL, Cluster, PATIENCE, WORKER_HEALTH_SERVICE, eventually, health};
use turbo_tests::otlp::Collector;

const GREET: &str = "def greet(name):\n    return f\"Hello, {name}!\"\n";
const GREET_TEST: &str = "import unittest\n\nfrom greet import greet\n\n\nclass GreetTest(unittest.TestCase):\n    def test_greets_by_name(self):\n        self.assertEqual(greet(\"Ada\"), \"Hello, Ada!\")\n";

fn plan() -> Value {
    json!({
        "phases": [
            {"name": "implement", "description": "write greet() and its test", "agent": "coder", "depends_on": [],
             "estimated_minutes": 5, "files_to_create": ["greet.py", "test_greet.py"]},
            {"name": "test", "description": "run the tests", "agent": "tester", "depends_on": ["implement"]},
            {"name": "review", "description": "review the diff", "agent": "reviewer", "depends_on": ["test"]}
        ],
        "confidence_score": 0.9,
        "risk_factors": []
    })
}

fn write(path: &str, content: &str) -> Reply {
    Reply::tool_call("fs_write", json!({"path": path, "content": content}))
}

/// The coder's replies for one run of the implement phase.
fn implement() -> Vec<Reply> {
    vec![write("greet.py", GREET), write("test_greet.py", GREET_TEST), Reply::text("added greet and its test")]
}

fn approve() -> Reply {
    Reply::Json(json!({"verdict": "approve", "summary": "does what was asked", "findings": []}))
}

/// A cluster whose models plan the greet task, write it once and approve it.
fn greet_cluster() -> turbo_tests::cluster::ClusterBuilder {
    Cluster::builder().planner(vec![Reply::Json(plan())]).coder(implement()).reviewer(vec![approve()])
}

/// A cluster whose coder's first write of the greet task waits 3 s (long enough to kill the
/// orchestrator while the phase is under way), and whose coder then answers a second run of
/// the implement phase.
fn interrupted_implement_cluster() -> turbo_tests::cluster::ClusterBuilder {
    let mut coder = implement();
    coder[0] = write("greet.py", GREET).delayed(Duration::from_secs(3));
    coder.extend(implement());
    Cluster::builder().planner(vec![Reply::Json(plan())]).coder(coder).reviewer(vec![approve()])
}

async fn within<T>(what: &str, fut: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(PATIENCE, fut).await.unwrap_or_else(|_| panic!("{what}: nothing within {PATIENCE:?}"))
}

/// A Python project rooted at a fresh directory.
async fn python_project(cluster: &Cluster, name: &str) -> (std::path::PathBuf, projects::ProjectMetadata) {
    let root = cluster.project_dir(name);
    let project = cluster
        .projects()
        .await
        .create_project(projects::CreateProjectRequest {
            name: name.into(),
            project_type: ProjectType::ApiService as i32,
            languages: vec![Language::Python as i32],
            root_path: Some(root.display().to_string()),
            ..Default::default()
        })
        .await
        .expect("create the project")
        .into_inner()
        .project
        .expect("the created project");
    (root, project)
}

/// A project rooted at a fresh directory, and a task of it planned by the planner worker.
async fn planned_task(cluster: &Cluster, name: &str) -> (std::path::PathBuf, TaskId) {
    let (root, project) = python_project(cluster, name).await;
    let request = tasks::CreateTaskRequest {
        project_id: project.id,
        description: "add a greet(name) function in greet.py with a unit test".into(),
        ..Default::default()
    };
    let task = within("the plan", cluster.tasks().await.create_task(request)).await.expect("plan").into_inner();
    assert_eq!(task.status(), turbo_proto::common::v1::TaskStatus::Planned, "{task:?}");
    (root, task.id.parse().expect("a task id"))
}

/// Plans a task of a new project, executes it and follows its watch to the end, which must be
/// a completed run: the project's root, the task and the run's events.
async fn completed_task(cluster: &Cluster, name: &str) -> (std::path::PathBuf, TaskId, Vec<TaskEvent>) {
    let (root, id) = planned_task(cluster, name).await;
    let last_seq = execute(cluster, id).await;
    let (run, error) = follow(&mut watch(cluster, id, last_seq).await).await;
    assert!(error.is_none(), "{error:?}");
    assert_eq!(statuses(&run), [TaskStatus::InProgress, TaskStatus::Completed]);
    (root, id, run)
}

/// Executes the task; returns the seq to watch from.
async fn execute(cluster: &Cluster, id: TaskId) -> u64 {
    let request = tasks::ExecuteTaskRequest { task_id: id.to_string() };
    within("execute", cluster.tasks().await.execute_task(request)).await.expect("execute").into_inner().last_seq
}

async fn watch(cluster: &Cluster, id: TaskId, after_seq: u64) -> Streaming<tasks::TaskEvent> {
    let request = tasks::WatchTaskRequest { task_id: id.to_string(), after_seq };
    cluster.tasks().await.watch_task(request).await.expect("watch").into_inner()
}

/// Every event of the watch until it ends (after the terminal status), or until it fails (its
/// orchestrator died): then the events seen so far and the error.
async fn follow(stream: &mut Streaming<tasks::TaskEvent>) -> (Vec<TaskEvent>, Option<tonic::Status>) {
    let mut events = Vec::new();
    loop {
        match within("the next event", stream.message()).await {
            Ok(Some(e)) => events.push(TaskEvent::try_from(e).expect("a valid event")),
            Ok(None) => return (events, None),
            Err(status) => return (events, Some(status)),
        }
    }
}

fn statuses(events: &[TaskEvent]) -> Vec<TaskStatus> {
    events
        .iter()
        .filter_map(|e| if let EventKind::StatusChanged { to, .. } = e.kind { Some(to) } else { None })
        .collect()
}

fn phase_starts(events: &[TaskEvent]) -> Vec<(String, AgentRole, u32)> {
    events
        .iter()
        .filter_map(|e| match &e.kind {
            EventKind::PhaseStarted { phase, role, attempt } => Some((phase.clone(), *role, *attempt)),
            _ => None,
        })
        .collect()
}

/// Every message stored on `subject` of `stream`, oldest first.
async fn stored(cluster: &Cluster, stream: &str, subject: String) -> Vec<jetstream::Message> {
    let js = jetstream::new(cluster.nats().await);
    let consumer: jetstream::consumer::PullConsumer = js
        .get_stream(stream)
        .await
        .expect("the stream exists")
        .create_consumer(jetstream::consumer::pull::Config {
            filter_subject: subject,
            deliver_policy: DeliverPolicy::All,
            ack_policy: jetstream::consumer::AckPolicy::None,
            ..Default::default()
        })
        .await
        .expect("a reader");
    let mut messages = consumer.fetch().max_messages(10_000).messages().await.expect("read the stream");
    let mut out = Vec::new();
    while let Some(message) = messages.next().await {
        out.push(message.expect("a stored message"));
    }
    out
}

/// Chat requests the coder's model received so far.
fn coder_calls(cluster: &Cluster) -> usize {
    cluster.models().requests_to("/api/chat").iter().filter(|r| r.body["model"] == CODER_MODEL).count()
}

/// Checks what a completed run leaves: the files, the events in the store and on NATS, the rows.
async fn assert_completed(cluster: &Cluster, root: &std::path::Path, id: TaskId) -> Vec<TaskEvent> {
    assert_eq!(std::fs::read_to_string(root.join("greet.py")).ok().as_deref(), Some(GREET));
    assert_eq!(std::fs::read_to_string(root.join("test_greet.py")).ok().as_deref(), Some(GREET_TEST));
    let store = cluster.store().await;
    let task = store.get_task(id).await.unwrap().expect("the task is stored").task;
    assert_eq!(task.status, TaskStatus::Completed);
    assert_eq!(task.progress_percentage, 100.0);
    let phases = store.phases(id).await.unwrap();
    let rows: Vec<(&str, PhaseStatus)> = phases.iter().map(|p| (p.name.as_str(), p.status)).collect();
    assert_eq!(
        rows,
        [("implement", PhaseStatus::Succeeded), ("test", PhaseStatus::Succeeded), ("review", PhaseStatus::Succeeded)]
    );
    assert!(store.tool_calls(id).await.unwrap().iter().any(|c| c.tool == "fs_write"), "tool calls are stored");
    let usage = store.usage_by_role(id).await.unwrap();
    for role in [AgentRole::Planner, AgentRole::Coder, AgentRole::Reviewer] {
        assert!(usage.contains_key(&role), "no token usage of the {role} in {usage:?}");
    }

    // The store has every event, numbered without gaps, and the workers' among them.
    let events = store.events(id, 0).await.unwrap();
    assert_eq!(events.iter().map(|e| e.seq).collect::<Vec<_>>(), (1..=events.len() as u64).collect::<Vec<_>>());
    let kinds: Vec<&str> = events.iter().map(|e| e.kind.name()).collect();
    for kind in ["plan_ready", "phase_started", "model_call", "tool_call", "tool_result", "test_run", "review"] {
        assert!(kinds.contains(&kind), "no {kind} in {kinds:?}");
    }
    // ... and each is on turbo.events.task.<id> as stored, for watchers of the stream.
    let published = eventually("every stored event on the task's subject", PATIENCE, || async {
        let published: Vec<TaskEvent> = stored(cluster, subjects::EVENTS_STREAM, subjects::events_task(id))
            .await
            .iter()
            .map(|m| turbo_bus::decode::<TaskEvent>(&m.payload).expect("a recorded event"))
            .collect();
        if published.len() >= events.len() { Ok(published) } else { Err(format!("{} published", published.len())) }
    })
    .await;
    assert_eq!(published, events, "the stream carries the stored events in order");
    events
}

#[tokio::test(flavor = "multi_thread")]
async fn a_task_runs_through_the_workers_and_is_recorded_in_postgres_and_on_nats() {
    let cluster = greet_cluster().start().await;
    let (root, id, run) = completed_task(&cluster, "greeter").await;
    let kinds: Vec<&str> = run.iter().map(|e| e.kind.name()).collect();
    for kind in ["phase_started", "model_call", "tool_call", "tool_result", "test_run", "review", "phase_finished"] {
        assert!(kinds.contains(&kind), "the watch shows no {kind}: {kinds:?}");
    }
    let events = assert_completed(&cluster, &root, id).await;
    assert_eq!(run[..], events[events.len() - run.len()..], "the watch and the store agree");
    // A phase's events come between its start and its end, though they travel over NATS.
    let kinds: Vec<&str> = events.iter().map(|e| e.kind.name()).collect();
    let started = kinds.iter().position(|k| *k == "phase_started").expect("a phase started");
    let finished = kinds.iter().position(|k| *k == "phase_finished").expect("a phase finished");
    let implement = &kinds[started..finished];
    for (kind, n) in [("tool_call", 2), ("tool_result", 2), ("model_call", 3), ("agent_message", 1)] {
        assert_eq!(implement.iter().filter(|k| **k == kind).count(), n, "{kind} in the implement phase: {kinds:?}");
    }

    // Each role's worker did its part: one result per call, each from a worker of that role.
    let results: Vec<WorkResult> = stored(&cluster, subjects::RESULTS_STREAM, subjects::results(id))
        .await
        .iter()
        .map(|m| turbo_bus::decode::<WorkResult>(&m.payload).expect("a result"))
        .collect();
    let roles: Vec<AgentRole> = results.iter().map(|r| r.role).collect();
    assert_eq!(roles, [AgentRole::Planner, AgentRole::Coder, AgentRole::Tester, AgentRole::Reviewer]);
    assert!(results.iter().all(|r| !matches!(r.reply, WorkReply::Failed(_))), "{results:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_task_runs_with_its_tool_calls_going_through_the_job_queue_to_one_runner() {
    let cluster = greet_cluster().with_queued_tool_runners(2).start().await;
    let (root, id, _) = completed_task(&cluster, "queued").await;
    // The files, the tool calls, the reviewer's diff (which needs the baseline the orchestrator
    // began the task with on the same runner): all as with one runner over gRPC.
    assert_completed(&cluster, &root, id).await;

    // The project's workspace is claimed by one of the runners, which did every call.
    let queue = turbo_tool_runner::JobQueue::open(cluster.nats().await).await.expect("the queue");
    let key = turbo_tool_runner::workspace_key(&root.display().to_string());
    let (holder, _) = queue.holder(&key).await.unwrap().expect("the workspace is claimed");
    assert!(holder == "tool-runner-0" || holder == "tool-runner-1", "{holder}");
    let js = jetstream::new(cluster.nats().await);
    let jobs = js.get_stream(subjects::TOOL_JOBS_STREAM).await.unwrap().info().await.unwrap().clone();
    assert!(jobs.state.last_sequence >= 4, "the calls went through the stream: {:?}", jobs.state);
    assert_eq!(jobs.state.messages, 0, "every job was taken");
}

/// What a model's shell call finds in a cluster tool-runner's sandbox: its host name, a secret
/// of the runner's environment, a write beside the workspace (it lands in the sandbox's private
/// /tmp when the workspace is under /tmp, never on the host) and one into /usr, a connection to
/// a port the host listens on.
const PROBE: &str = "hostname; printenv TURBO_TEST_SECRET || echo no-secret; \
    touch ../escaped; touch /usr/escaped || echo cannot-write-system; \
    python3 -c \"import socket, sys; socket.create_connection(('127.0.0.1', int(sys.argv[1])), timeout=2)\" PORT \
    || echo no-network";

#[tokio::test(flavor = "multi_thread")]
async fn a_cluster_tool_runner_confines_the_models_calls_to_the_workspace() {
    let host_service = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    host_service.set_nonblocking(true).unwrap();
    let port = host_service.local_addr().unwrap().port().to_string();
    let mut coder = vec![
        Reply::tool_call("fs_write", json!({"path": "../outside.txt", "content": "x"})),
        Reply::tool_call("shell_run", json!({"command": PROBE.replace("PORT", &port)})),
    ];
    coder.extend(implement());
    let cluster = Cluster::builder()
        .planner(vec![Reply::Json(plan())])
        .coder(coder)
        .reviewer(vec![approve()])
        // The runner is a process of its own with a secret in its environment, as a pod has.
        .with_env("TURBO_TEST_SECRET", "s3cret-of-the-runner")
        .start()
        .await;
    let (root, id, _) = completed_task(&cluster, "confined").await;
    assert_completed(&cluster, &root, id).await;

    let calls = cluster.store().await.tool_calls(id).await.unwrap();
    let write = calls.iter().find(|c| c.tool == "fs_write").expect("the first write");
    assert_eq!(write.success, Some(false));
    assert!(write.output.as_deref().unwrap_or_default().contains("outside the workspace"), "{write:?}");
    let outside = root.parent().unwrap();
    assert!(!outside.join("outside.txt").exists() && !outside.join("escaped").exists());
    assert!(!std::path::Path::new("/usr/escaped").exists());
    let probe = calls.iter().find(|c| c.tool == "shell_run").expect("the probe");
    let said = probe.output.clone().unwrap_or_default();
    for expected in ["turbo-sandbox", "no-secret", "cannot-write-system", "no-network"] {
        assert!(said.contains(expected), "{expected} not in {said}");
    }
    assert!(!said.contains("s3cret"), "{said}");
    let accepted = host_service.accept();
    assert!(matches!(&accepted, Err(e) if e.kind() == std::io::ErrorKind::WouldBlock), "{accepted:?}");
    let events = serde_json::to_string(&cluster.store().await.events(id, 0).await.unwrap()).unwrap();
    assert!(!events.contains("s3cret-of-the-runner"), "the runner's secret is in no event");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_phase_is_taken_over_when_its_coder_worker_is_killed() {
    // The first coder call answers only long after the worker holding it is killed.
    let mut coder = vec![write("greet.py", "# never written\n").delayed(Duration::from_secs(120))];
    coder.extend(implement());
    let mut cluster = Cluster::builder()
        .planner(vec![Reply::Json(plan())])
        .coder(coder)
        .reviewer(vec![approve()])
        .with_role_workers(AgentRole::Coder, 2)
        .start()
        .await;
    let coders: Vec<u32> = cluster.workers(AgentRole::Coder).map(|w| w.process.pid).collect();
    assert_eq!(coders.len(), 2, "two coder replicas");
    let nats = cluster.nats().await;
    let mut heartbeats = nats.subscribe(subjects::heartbeats(AgentRole::Coder)).await.unwrap();
    nats.flush().await.unwrap();

    let (root, id) = planned_task(&cluster, "takeover").await;
    let last_seq = execute(&cluster, id).await;
    eventually("the coder's model call", PATIENCE, || async {
        if coder_calls(&cluster) >= 1 { Ok(()) } else { Err("no call yet".to_string()) }
    })
    .await;
    // The replica with the phase in flight says so in its next heartbeat.
    let busy = within("a busy coder's heartbeat", async {
        loop {
            let message = heartbeats.next().await.expect("heartbeats");
            let beat: Heartbeat = turbo_bus::decode(&message.payload).expect("a heartbeat");
            if beat.in_flight > 0 {
                return beat.worker_id;
            }
        }
    })
    .await;
    let pid = coders
        .iter()
        .copied()
        .find(|pid| busy.contains(&format!("-{pid}-")))
        .unwrap_or_else(|| panic!("worker id {busy} names none of the coder processes {coders:?}"));
    cluster.kill_worker(pid).await;

    // The other replica takes the phase over after the ack wait; the task completes.
    let (run, error) = follow(&mut watch(&cluster, id, last_seq).await).await;
    assert!(error.is_none(), "{error:?}");
    assert_eq!(statuses(&run), [TaskStatus::InProgress, TaskStatus::Completed]);
    assert_completed(&cluster, &root, id).await;
    assert_eq!(coder_calls(&cluster), 4, "the killed call, then the rescuer's three");
    let results: Vec<WorkResult> = stored(&cluster, subjects::RESULTS_STREAM, subjects::results(id))
        .await
        .iter()
        .map(|m| turbo_bus::decode::<WorkResult>(&m.payload).expect("a result"))
        .collect();
    let coder_results: Vec<&WorkResult> = results.iter().filter(|r| r.role == AgentRole::Coder).collect();
    assert_eq!(coder_results.len(), 1, "the phase was done once: {results:?}");
    assert_ne!(coder_results[0].worker_id, busy, "by the replica that took it over");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_standby_orchestrator_takes_over_and_resumes_the_task_when_the_leader_is_killed() {
    // The implement phase runs twice: the killed orchestrator's call still finishes on the
    // worker (nobody waits for it), then the new orchestrator's run of the phase.
    let mut cluster = interrupted_implement_cluster().start().await;
    // A second orchestrator on the same store stands by: alive, its services not serving, and
    // the calls that run or watch tasks refused with a reason (the lease is the running
    // orchestrator's); reads are answered from the store.
    cluster.start_standby().await;
    let standby = cluster.standby_addr().to_string();
    assert_eq!(health(&standby, "turbo.tasks.v1.TaskService").await, Ok(ServingStatus::NotServing));
    assert_eq!(health(&standby, "").await, Ok(ServingStatus::Serving));
    let channel = tonic::transport::Channel::from_shared(format!("http://{standby}")).unwrap().connect().await.unwrap();
    let mut client = TaskServiceClient::new(channel);
    let listed = client.list_tasks(tasks::ListTasksRequest::default()).await.expect("a read from the store");
    assert!(listed.into_inner().tasks.is_empty());
    let request = tasks::WatchTaskRequest { task_id: TaskId::new().to_string(), after_seq: 0 };
    let refused = client.watch_task(request).await.map(|_| ()).expect_err("a standby runs no tasks");
    assert_eq!(refused.code(), tonic::Code::Unavailable, "{refused:?}");
    assert!(refused.message().contains("standby"), "{refused:?}");

    let (root, id) = planned_task(&cluster, "resume").await;
    let last_seq = execute(&cluster, id).await;
    let mut stream = watch(&cluster, id, last_seq).await;
    // The phase is under way: its start is stored (the watch shows only stored events) and the
    // coder's model call is waiting for its answer.
    let mut before = Vec::new();
    while !phase_starts(&before).iter().any(|(p, _, _)| p == "implement") {
        let e = within("the phase to start", stream.message()).await.expect("events").expect("more events");
        before.push(TaskEvent::try_from(e).expect("a valid event"));
    }
    eventually("the coder's model call", PATIENCE, || async {
        if coder_calls(&cluster) >= 1 { Ok(()) } else { Err("no call yet".to_string()) }
    })
    .await;

    cluster.kill_orchestrator().await;
    let (rest, error) = follow(&mut stream).await;
    before.extend(rest);
    assert!(error.is_some(), "the watch breaks with its orchestrator");
    // The standby takes the lease over (its holder's session ended with the process).
    cluster.await_takeover().await;

    // The watcher comes back to the new orchestrator with the last seq it saw.
    let resume_from = before.last().map(|e| e.seq).unwrap_or(last_seq);
    let (after, error) = follow(&mut watch(&cluster, id, resume_from).await).await;
    assert!(error.is_none(), "{error:?}");
    assert_eq!(statuses(&after).last(), Some(&TaskStatus::Completed), "{after:?}");
    let events = assert_completed(&cluster, &root, id).await;
    let kinds: Vec<&str> = events.iter().map(|e| e.kind.name()).collect();
    assert_eq!(statuses(&events), [TaskStatus::Planned, TaskStatus::InProgress, TaskStatus::Completed], "{kinds:?}");
    // Across the two orchestrators the watcher saw every event once, in order.
    let seen: Vec<TaskEvent> = before.into_iter().chain(after).collect();
    assert_eq!(seen[..], events[last_seq as usize..], "no gap, no duplicate");
    let starts = phase_starts(&events);
    let implement_starts: Vec<u32> =
        starts.iter().filter(|(p, r, _)| p == "implement" && *r == AgentRole::Coder).map(|(_, _, a)| *a).collect();
    assert_eq!(implement_starts, [1, 2], "the interrupted phase ran again, as attempt 2: {starts:?}");
}

/// An Interact stream of `session` on the orchestrator at `addr`, attached, then sent `then`.
async fn interact(
    addr: &str,
    session: &str,
    then: Vec<sessions::ClientMessage>,
) -> (tokio::sync::mpsc::Sender<sessions::ClientMessage>, Streaming<sessions::ServerMessage>) {
    let channel = tonic::transport::Channel::from_shared(format!("http://{addr}")).unwrap().connect().await.unwrap();
    let (tx, rx) = tokio::sync::mpsc::channel(8);
    let attach = sessions::ClientMessage { session_id: session.to_string(), ..Default::default() };
    tx.send(attach).await.unwrap();
    for message in then {
        tx.send(message).await.unwrap();
    }
    let mut client = SessionServiceClient::new(channel);
    let stream =
        within("attach to the session", client.interact(tokio_stream::wrappers::ReceiverStream::new(rx))).await;
    (tx, stream.expect("attached").into_inner())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_session_gets_the_answer_to_its_request_from_the_orchestrator_that_took_over() {
    use sessions::server_message::Message as M;
    // The request's implement phase is under way when the leader dies (its first write waits
    // 3 s); the standby resumes the task and runs the phase again.
    let mut cluster = interrupted_implement_cluster().start().await;
    cluster.start_standby().await;
    let (root, project) = python_project(&cluster, "owed").await;
    let channel = tonic::transport::Channel::from_shared(format!("http://{}", cluster.orchestrator_addr()))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let start = sessions::StartSessionRequest { project_id: project.id, user: "ana".into(), ..Default::default() };
    let session = SessionServiceClient::new(channel).start_session(start).await.unwrap().into_inner().session_id;

    let ask = sessions::ClientMessage {
        message_id: "ask-1".into(),
        message: Some(sessions::client_message::Message::AiRequest(sessions::AiRequest {
            query: "add a greet(name) function in greet.py with a unit test".into(),
            ..Default::default()
        })),
        ..Default::default()
    };
    let (_tx, mut replies) = interact(cluster.orchestrator_addr(), &session, vec![ask]).await;
    let started = within("the task to start", replies.message()).await.expect("a message").expect("not the end");
    assert_eq!(started.reply_to.as_deref(), Some("ask-1"), "{started:?}");
    let Some(M::SystemNotification(note)) = &started.message else { panic!("{started:?}") };
    assert_eq!(note.actions[0].kind, "watch_task", "{note:?}");
    eventually("the coder's model call", PATIENCE, || async {
        if coder_calls(&cluster) >= 1 { Ok(()) } else { Err("no call yet".to_string()) }
    })
    .await;

    cluster.kill_orchestrator().await;
    let broken = within("the stream to break", replies.message()).await;
    assert!(!matches!(broken, Ok(Some(_))), "nothing more from a killed orchestrator: {broken:?}");
    cluster.await_takeover().await;

    // Attached again, to the orchestrator that took over: the answer comes when the task ends.
    let (_tx, mut replies) = interact(cluster.orchestrator_addr(), &session, Vec::new()).await;
    let answer = within("the answer", replies.message()).await.expect("a message").expect("not the end");
    assert_eq!(answer.reply_to.as_deref(), Some("ask-1"), "{answer:?}");
    let Some(M::AiResponse(response)) = &answer.message else { panic!("an ai_response: {answer:?}") };
    assert!(response.response.contains("completed"), "{response:?}");
    assert_eq!(std::fs::read_to_string(root.join("greet.py")).unwrap(), GREET);
    let stored = cluster.store().await.get_session(session.parse().unwrap()).await.unwrap().unwrap();
    assert_eq!(stored.pending_reply, None, "delivered, so no longer owed");
}

/// Polls GetTask until the task reaches a terminal status; returns it.
async fn terminal_task(cluster: &Cluster, id: TaskId) -> tasks::DevelopmentTask {
    let client = cluster.tasks().await;
    eventually("the task to finish", PATIENCE, || {
        let mut client = client.clone();
        async move {
            let request = tasks::GetTaskRequest { task_id: id.to_string() };
            let task = client.get_task(request).await.map_err(|e| e.to_string())?.into_inner();
            use turbo_proto::common::v1::TaskStatus as Proto;
            match task.status() {
                Proto::Completed | Proto::Failed | Proto::Cancelled => Ok(task),
                other => Err(format!("still {other:?}")),
            }
        }
    })
    .await
}

/// Waits until every worker's health check says `serving` (or, for false, anything else).
async fn workers_serving(cluster: &Cluster, serving: bool) {
    let addrs: Vec<String> = AgentRole::ALL
        .iter()
        .flat_map(|role| cluster.workers(*role).map(|w| w.process.addr.clone()).collect::<Vec<_>>())
        .collect();
    for addr in addrs {
        eventually(&format!("the worker on {addr} serving: {serving}"), PATIENCE, || async {
            let status = health(&addr, WORKER_HEALTH_SERVICE).await?;
            if (status == ServingStatus::Serving) == serving { Ok(()) } else { Err(format!("{status:?}")) }
        })
        .await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn services_reconnect_after_nats_restarts_and_nothing_is_lost() {
    // The coder's first model call answers only after nats-server was stopped and started
    // again, so the implement phase is in flight across the outage.
    let mut coder = implement();
    coder[0] = write("greet.py", GREET).delayed(Duration::from_secs(3));
    let mut cluster =
        Cluster::builder().planner(vec![Reply::Json(plan())]).coder(coder).reviewer(vec![approve()]).start().await;
    let (root, id) = planned_task(&cluster, "nats-restart").await;
    execute(&cluster, id).await;
    eventually("the coder's model call", PATIENCE, || async {
        if coder_calls(&cluster) >= 1 { Ok(()) } else { Err("no call yet".to_string()) }
    })
    .await;

    cluster.stop_nats().await;
    // Every worker noticed the outage, then the same server (port, store) comes back.
    workers_serving(&cluster, false).await;
    cluster.restart_nats().await;
    workers_serving(&cluster, true).await;

    let task = terminal_task(&cluster, id).await;
    assert_eq!(task.status(), turbo_proto::common::v1::TaskStatus::Completed, "{task:?}");
    assert_completed(&cluster, &root, id).await;
    assert_eq!(coder_calls(&cluster), 3, "the phase ran once, not again after the outage");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_brief_postgres_outage_is_retried_or_reported_clearly() {
    // The coder's first model call answers only after the database connections were closed,
    // so the orchestrator stores the rest of the task on new connections.
    let mut coder = implement();
    coder[0] = write("greet.py", GREET).delayed(Duration::from_secs(2));
    let cluster =
        Cluster::builder().planner(vec![Reply::Json(plan())]).coder(coder).reviewer(vec![approve()]).start().await;
    let (root, id) = planned_task(&cluster, "postgres-outage").await;
    execute(&cluster, id).await;
    eventually("the coder's model call", PATIENCE, || async {
        if coder_calls(&cluster) >= 1 { Ok(()) } else { Err("no call yet".to_string()) }
    })
    .await;

    // The orchestrator loses every connection it holds to the database (the server stays up).
    let closed = cluster.terminate_database_connections().await;
    assert!(closed >= 1, "the orchestrator held no connection to close");
    // The next call is answered on a new connection: the pool checks a connection before use.
    let request = tasks::GetTaskRequest { task_id: id.to_string() };
    let task = within("GetTask after the outage", cluster.tasks().await.get_task(request))
        .await
        .unwrap_or_else(|status| panic!("GetTask after the connections were closed: {status:?}"))
        .into_inner();
    assert_eq!(task.id, id.to_string());

    let task = terminal_task(&cluster, id).await;
    assert_eq!(task.status(), turbo_proto::common::v1::TaskStatus::Completed, "{task:?}");
    assert_completed(&cluster, &root, id).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_database_down_longer_than_the_reconnect_window_fails_calls_clearly_then_recovers() {
    let mut cluster = greet_cluster().with_own_postgres().start().await;
    let (root, id) = planned_task(&cluster, "postgres-down").await;

    cluster.stop_postgres().await;
    // The call waits while the pool tries to reconnect, then fails with a status a client can
    // act on and a message that says what is wrong.
    let request = tasks::GetTaskRequest { task_id: id.to_string() };
    let down = within("GetTask while the database is down", cluster.tasks().await.get_task(request))
        .await
        .expect_err("no database, no task");
    assert_eq!(down.code(), tonic::Code::Unavailable, "{down:?}");
    assert!(down.message().contains("the database is unreachable"), "{down:?}");
    assert!(down.message().contains("check that it is running"), "{down:?}");
    // The orchestrator is still up, holding on (nobody else can take its lease meanwhile).
    assert_eq!(health(cluster.orchestrator_addr(), "").await, Ok(ServingStatus::Serving));

    cluster.restart_postgres().await;
    let client = cluster.tasks().await;
    eventually("GetTask once the database is back", PATIENCE, || {
        let mut client = client.clone();
        async move {
            let request = tasks::GetTaskRequest { task_id: id.to_string() };
            client.get_task(request).await.map(|_| ()).map_err(|e| e.to_string())
        }
    })
    .await;
    // The same orchestrator, still the store's one, carries the task out.
    let last_seq = execute(&cluster, id).await;
    let (run, error) = follow(&mut watch(&cluster, id, last_seq).await).await;
    assert!(error.is_none(), "{error:?}");
    assert_eq!(statuses(&run), [TaskStatus::InProgress, TaskStatus::Completed]);
    assert_completed(&cluster, &root, id).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn one_trace_follows_a_task_from_the_client_through_nats_and_the_workers_to_the_tool_runner() {
    let collector = Collector::start().await.expect("an OTLP receiver");
    let cluster = greet_cluster()
        .with_env("TURBO_CODER__TELEMETRY__OTLP_ENDPOINT", collector.url())
        // Export finished spans every 200 ms rather than every 5 s.
        .with_env("OTEL_BSP_SCHEDULE_DELAY", "200")
        .start()
        .await;
    let (root, id) = planned_task(&cluster, "traced").await;

    // The client (a gateway, say) sends its trace context in the request metadata.
    let trace_id = uuid::Uuid::new_v4().simple().to_string();
    let mut request = tonic::Request::new(tasks::ExecuteTaskRequest { task_id: id.to_string() });
    let traceparent = format!("00-{trace_id}-{}-01", &uuid::Uuid::new_v4().simple().to_string()[..16]);
    request.metadata_mut().insert("traceparent", traceparent.parse().expect("an ascii header"));
    let last_seq = within("execute", cluster.tasks().await.execute_task(request)).await.expect("execute").into_inner();
    let (run, error) = follow(&mut watch(&cluster, id, last_seq.last_seq).await).await;
    assert!(error.is_none(), "{error:?}");
    assert_eq!(statuses(&run).last(), Some(&TaskStatus::Completed));
    assert_completed(&cluster, &root, id).await;

    // Every service the task went through exported spans of that one trace: the orchestrator
    // (the request and the run), the workers (the work items from NATS headers) and the
    // tool-runner (the tool calls from gRPC metadata).
    let services = ["turbo-orchestrator", "turbo-agent-worker", "turbo-tool-runner"];
    let spans = eventually("spans of the trace from every service", PATIENCE, || async {
        let spans: Vec<_> = collector.spans().into_iter().filter(|s| s.trace_id == trace_id).collect();
        let missing: Vec<&str> = services.iter().copied().filter(|s| !spans.iter().any(|x| x.service == *s)).collect();
        if missing.is_empty() { Ok(spans) } else { Err(format!("none yet from {missing:?}; have {spans:?}")) }
    })
    .await;
    let names = |service: &str| -> Vec<String> {
        spans.iter().filter(|s| s.service == service).map(|s| s.name.clone()).collect()
    };
    assert!(names("turbo-orchestrator").iter().any(|n| n == "task_run"), "{spans:?}");
    assert!(names("turbo-tool-runner").iter().any(|n| n == "turbo.tools.v1.ToolService/CallTool"), "{spans:?}");
    // The planning request carried no trace context: its spans are in another trace.
    assert!(collector.spans().iter().any(|s| s.trace_id != trace_id), "the plan's own trace was exported too");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_cli_runs_a_task_on_the_cluster_with_server_and_lists_it() {
    let cluster = greet_cluster().start().await;
    let root = cluster.project_dir("cli-remote").canonicalize().expect("the project directory");
    let home = tempfile::tempdir().expect("a scratch home");
    let server = format!("http://{}", cluster.orchestrator_addr());
    // The real binary in the project directory, with no local configuration to read.
    let turbo_coder = |args: &[&str]| {
        let mut cmd = tokio::process::Command::new(turbo_tests::turbo_coder_bin());
        cmd.args(args)
            .current_dir(&root)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("HOME", home.path())
            .env("XDG_CONFIG_HOME", home.path().join(".config"))
            .env("XDG_DATA_HOME", home.path().join(".local/share"))
            .stdin(std::process::Stdio::null());
        async move {
            let out = within("turbo-coder", cmd.output()).await.expect("run turbo-coder");
            turbo_tests::Output {
                code: out.status.code().unwrap_or(-1),
                stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
                stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
            }
        }
    };

    let task = "add a greet(name) function in greet.py with a unit test";
    let out = turbo_coder(&["--server", &server, "run", task, "--apply", "--json"]).await;
    out.assert_code(0);
    let plans = out.events_of("plan_ready");
    assert_eq!(plans.len(), 1, "the plan is shown once\n{}", out.stdout);
    assert_eq!(plans[0]["phases"], json!(["implement", "test", "review"]));
    for kind in ["task_created", "phase_started", "tool_call", "test_run", "review"] {
        assert!(!out.events_of(kind).is_empty(), "no {kind} line\n{}", out.stdout);
    }
    let result = out.result();
    assert_eq!(result["status"], "completed", "{result}");
    assert_eq!(result["exit_code"], 0);
    assert!(result["failure"].is_null(), "{result}");
    assert!(result["prompt_tokens"].as_u64().unwrap_or(0) > 0, "tokens are counted: {result}");
    let id: TaskId = result["task_id"].as_str().expect("a task id").parse().expect("a task id");

    // The files, the task and its events, as for any task of the cluster; the project is the
    // directory the CLI ran in.
    let events = assert_completed(&cluster, &root, id).await;
    let seqs: Vec<u64> = out.json_lines().iter().filter_map(|l| l["seq"].as_u64()).collect();
    assert_eq!(seqs, events.iter().map(|e| e.seq).collect::<Vec<_>>(), "every stored event was shown once, in order");
    let store = cluster.store().await;
    let stored = store.get_task(id).await.unwrap().expect("the task is stored");
    let project = store.get_project(stored.task.project_id).await.unwrap().expect("the project is stored").project;
    assert_eq!(project.root_path, root.display().to_string());
    assert_eq!(project.name, "cli-remote");

    let out = turbo_coder(&["--server", &server, "tasks", "list", "--json"]).await;
    out.assert_code(0);
    let listed: Value = serde_json::from_str(&out.stdout).expect("a JSON list");
    let row = listed
        .as_array()
        .and_then(|rows| rows.iter().find(|r| r["id"] == id.to_string()))
        .unwrap_or_else(|| panic!("task {id} is not listed: {listed}"));
    assert_eq!(row["status"], "completed", "{row}");
    assert_eq!(
        row["total_tokens"].as_u64(),
        Some(result["prompt_tokens"].as_u64().unwrap() + result["completion_tokens"].as_u64().unwrap())
    );

    // Nothing listens on port 1: a clear message naming the URL, and its own exit code.
    let down = turbo_coder(&["--server", "http://127.0.0.1:1", "tasks", "list"]).await;
    down.assert_code(7);
    assert!(down.stderr.contains("cannot reach the orchestrator at http://127.0.0.1:1"), "{}", down.stderr);
    assert!(down.stderr.contains("turbo-coder serve orchestrator"), "{}", down.stderr);
}
