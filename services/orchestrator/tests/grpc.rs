//! The orchestrator's public gRPC API, black box: `turbo_orchestrator::run` on `127.0.0.1:0`
//! with a real SQLite file and the scripted model servers, driven by the generated tonic
//! clients of `turbo.tasks.v1.TaskService` and `turbo.projects.v1.ProjectService`.

use std::future::Future;
use std::path::PathBuf;
use std::time::Duration;

use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;
use tonic::{Code, Status, Streaming};
use turbo_config::{Config, ModelSettings, Provider};
use turbo_proto::common::v1::{Language, ProjectType, TaskStatus};
use turbo_proto::projects::v1 as projects;
use turbo_proto::projects::v1::project_service_client::ProjectServiceClient;
use turbo_proto::tasks::v1 as tasks;
use turbo_proto::tasks::v1::task_event::Kind;
use turbo_proto::tasks::v1::task_service_client::TaskServiceClient;
use turbo_testkit::{ModelDef, Reply, Script, ScriptedModelServer};

const PLANNER: &str = "planner:test";
const CODER: &str = "coder:test";
const TASK: &str = "add a greet(name) function in greet.py with a unit test";
const GREET: &str = "def greet(name):\n    return f\"Hello, {name}!\"\n";
const GREET_TEST: &str = "import unittest\n\nfrom greet import greet\n\n\nclass GreetTest(unittest.TestCase):\n    def test_greets_by_name(self):\n        self.assertEqual(greet(\"Ada\"), \"Hello, Ada!\")\n";

/// Upper bound for anything to happen, so a broken server fails the test instead of hanging
/// it. Not a timing assertion: a healthy run finishes far sooner.
const WAIT: Duration = Duration::from_secs(60);

// ---------------------------------------------------------------------------------------------
// Harness
// ---------------------------------------------------------------------------------------------

fn plan() -> Value {
    json!({
        "phases": [
            {"name": "implement", "description": "write greet() and its test", "agent": "coder", "depends_on": [],
             "estimated_minutes": 5, "deliverables": ["greet.py", "test_greet.py"], "files_to_create": ["greet.py", "test_greet.py"]},
            {"name": "test", "description": "run the tests", "agent": "tester", "depends_on": ["implement"], "estimated_minutes": 2},
            {"name": "review", "description": "review the diff", "agent": "reviewer", "depends_on": ["test"], "estimated_minutes": 3}
        ],
        "confidence_score": 0.9,
        "risk_factors": ["greet may already exist elsewhere"]
    })
}

fn write(path: &str, content: &str) -> Reply {
    Reply::tool_call("fs_write", json!({"path": path, "content": content}))
}

/// The coder's replies for a run that writes greet.py and its test, then the review's approval.
fn coder_writes_greet() -> Vec<Reply> {
    vec![
        write("greet.py", GREET),
        write("test_greet.py", GREET_TEST),
        Reply::text("added greet and its test"),
        Reply::Json(json!({"verdict": "approve", "summary": "does what was asked", "findings": []})),
    ]
}

/// Fails the test when `fut` does not finish within [`WAIT`].
async fn within<T>(what: &str, fut: impl Future<Output = T>) -> T {
    tokio::time::timeout(WAIT, fut).await.unwrap_or_else(|_| panic!("{what}: nothing within {WAIT:?}"))
}

/// An orchestrator served by `turbo_orchestrator::run`, with its model servers and a scratch
/// directory holding the data directory and project roots.
struct Server {
    addr: std::net::SocketAddr,
    shutdown: CancellationToken,
    served: Option<tokio::task::JoinHandle<turbo_orchestrator::Result<()>>>,
    dir: tempfile::TempDir,
    _models: Vec<ScriptedModelServer>,
}

impl Server {
    async fn start(planner: Vec<Reply>, coder: Vec<Reply>) -> Server {
        Self::start_with(planner, coder, |_| {}).await
    }

    async fn start_with(planner: Vec<Reply>, coder: Vec<Reply>, adjust: impl FnOnce(&mut Config)) -> Server {
        let turbo =
            ScriptedModelServer::start(Script::new().model(ModelDef::new(PLANNER, 131072)).replies(PLANNER, planner))
                .await
                .unwrap();
        let local = ScriptedModelServer::start(Script::new().model(ModelDef::new(CODER, 16384)).replies(CODER, coder))
            .await
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let mut config = Config::default();
        config.models.planner = ModelSettings::new(Provider::Ollama, turbo.url(), PLANNER);
        config.models.coder = ModelSettings::new(Provider::Ollama, local.url(), CODER);
        config.store.data_dir = Some(dir.path().join("data"));
        adjust(&mut config);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let shutdown = CancellationToken::new();
        let served = tokio::spawn({
            let shutdown = shutdown.clone();
            async move { turbo_orchestrator::run(&config, listener, shutdown).await }
        });
        Server { addr, shutdown, served: Some(served), dir, _models: vec![turbo, local] }
    }

    async fn channel(&self) -> Channel {
        let uri = format!("http://{}", self.addr);
        within("connect", Channel::from_shared(uri).unwrap().connect()).await.expect("connect to the orchestrator")
    }

    async fn tasks(&self) -> TaskServiceClient<Channel> {
        TaskServiceClient::new(self.channel().await)
    }

    async fn projects(&self) -> ProjectServiceClient<Channel> {
        ProjectServiceClient::new(self.channel().await)
    }

    /// A fresh directory for a project's root.
    fn project_dir(&self, name: &str) -> PathBuf {
        let dir = self.dir.path().join(name);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// Cancels the shutdown token and returns what `run` returned.
    async fn stop(&mut self) -> turbo_orchestrator::Result<()> {
        self.shutdown.cancel();
        let served = self.served.take().expect("not stopped yet");
        within("the server to stop", served).await.expect("the server task")
    }
}

/// Creates a project rooted at a fresh directory named `name`.
async fn create_project(server: &Server, name: &str) -> projects::ProjectMetadata {
    let root = server.project_dir(name);
    let reply = server
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
        .expect("create the project");
    reply.into_inner().project.expect("the created project")
}

async fn create_task(server: &Server, project_id: &str) -> Result<tasks::DevelopmentTask, Status> {
    let request = tasks::CreateTaskRequest {
        project_id: project_id.into(),
        description: TASK.into(),
        requirements: vec!["greet returns 'Hello, NAME!'".into()],
        ..Default::default()
    };
    within("create the task", server.tasks().await.create_task(request)).await.map(|r| r.into_inner())
}

async fn watch(server: &Server, task_id: &str, after_seq: u64) -> Streaming<tasks::TaskEvent> {
    let request = tasks::WatchTaskRequest { task_id: task_id.into(), after_seq };
    within("watch", server.tasks().await.watch_task(request)).await.expect("watch the task").into_inner()
}

/// The next event of a watch, None when the stream ended.
async fn next(stream: &mut Streaming<tasks::TaskEvent>) -> Option<tasks::TaskEvent> {
    within("the next event", stream.message()).await.expect("the stream carries events, not an error")
}

/// Every event until the stream ends.
async fn drain(stream: &mut Streaming<tasks::TaskEvent>) -> Vec<tasks::TaskEvent> {
    let mut events = Vec::new();
    while let Some(e) = next(stream).await {
        events.push(e);
    }
    events
}

fn kind(e: &tasks::TaskEvent) -> &'static str {
    match e.kind.as_ref().expect("every event has a kind") {
        Kind::TaskCreated(_) => "task_created",
        Kind::StatusChanged(_) => "status_changed",
        Kind::PlanReady(_) => "plan_ready",
        Kind::PhaseStarted(_) => "phase_started",
        Kind::PhaseFinished(_) => "phase_finished",
        Kind::ModelCall(_) => "model_call",
        Kind::ToolCall(_) => "tool_call",
        Kind::ToolResult(_) => "tool_result",
        Kind::TestRun(_) => "test_run",
        Kind::Review(_) => "review",
        Kind::Progress(_) => "progress",
        Kind::AgentMessage(_) => "agent_message",
        Kind::ContextRetrieved(_) => "context_retrieved",
        Kind::ApprovalRequested(_) => "approval_requested",
        Kind::ApprovalDecided(_) => "approval_decided",
    }
}

/// The statuses the events moved the task to, in order.
fn statuses(events: &[tasks::TaskEvent]) -> Vec<TaskStatus> {
    events
        .iter()
        .filter_map(|e| match &e.kind {
            Some(Kind::StatusChanged(s)) => Some(s.to()),
            _ => None,
        })
        .collect()
}

fn seqs(events: &[tasks::TaskEvent]) -> Vec<u64> {
    events.iter().map(|e| e.seq).collect()
}

/// Asserts the status's code and that its message contains every one of `says`.
fn assert_status<T: std::fmt::Debug>(result: Result<T, Status>, code: Code, says: &[&str]) -> Status {
    let status = result.expect_err("the call must fail");
    assert_eq!(status.code(), code, "{status:?}");
    for s in says {
        assert!(status.message().contains(s), "'{s}' not in: {}", status.message());
    }
    status
}

/// The field a status names in its `ValidationErrors` detail.
fn detail_field(status: &Status) -> String {
    let fields = turbo_proto::error::field_errors_of(status).expect("INVALID_ARGUMENT carries field details");
    fields.0[0].field.clone()
}

// ---------------------------------------------------------------------------------------------
// Tasks
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn a_task_is_planned_executed_watched_to_completion_and_listed() {
    let mut server = Server::start(vec![Reply::Json(plan())], coder_writes_greet()).await;
    let project = create_project(&server, "greeter").await;
    let root = PathBuf::from(&project.root_path);

    // CreateTask answers with the plan: phases with estimates, confidence, risk factors.
    let task = create_task(&server, &project.id).await.expect("create the task");
    assert_eq!(task.status(), TaskStatus::Planned);
    assert_eq!(task.project_id, project.id);
    assert_eq!(task.requirements, ["greet returns 'Hello, NAME!'"]);
    let plan = task.execution_plan.clone().expect("the task carries its plan");
    assert_eq!(plan.task_id, task.id);
    let phases: Vec<(&str, &str, i64)> = plan
        .phases
        .iter()
        .map(|p| (p.name.as_str(), p.agent_type.as_str(), p.estimated_duration.expect("estimate").seconds))
        .collect();
    assert_eq!(phases, [("implement", "coder", 300), ("test", "tester", 120), ("review", "reviewer", 180)]);
    assert_eq!(plan.phases[0].deliverables, ["greet.py", "test_greet.py"]);
    assert_eq!(plan.total_estimated_duration.expect("total").seconds, 600);
    assert_eq!(plan.confidence_score, 0.9);
    assert_eq!(plan.risk_factors, ["greet may already exist elsewhere"]);
    assert!(plan.resource_requirements.is_some());
    assert!(root.read_dir().unwrap().next().is_none(), "planning writes nothing");

    // ExecuteTask answers at once with the seq to watch from; the watch streams the run.
    let mut client = server.tasks().await;
    let started = client
        .execute_task(tasks::ExecuteTaskRequest { task_id: task.id.clone() })
        .await
        .expect("execute")
        .into_inner();
    assert!(started.last_seq >= 3, "the planning run's events come first: {}", started.last_seq);
    assert_eq!(started.task.expect("the task").id, task.id);
    let run = drain(&mut watch(&server, &task.id, started.last_seq).await).await;
    assert_eq!(run.first().map(|e| e.seq), Some(started.last_seq + 1), "nothing of the run is missed");
    assert_eq!(seqs(&run), (started.last_seq + 1..=started.last_seq + run.len() as u64).collect::<Vec<_>>());
    assert_eq!(statuses(&run), [TaskStatus::InProgress, TaskStatus::Completed]);
    assert_eq!(kind(run.last().unwrap()), "status_changed", "the stream ends with the terminal status");
    let kinds: Vec<&str> = run.iter().map(kind).collect();
    for k in ["phase_started", "model_call", "tool_call", "tool_result", "test_run", "review", "progress"] {
        assert!(kinds.contains(&k), "no {k} in {kinds:?}");
    }
    assert_eq!(std::fs::read_to_string(root.join("greet.py")).unwrap(), GREET);
    assert_eq!(std::fs::read_to_string(root.join("test_greet.py")).unwrap(), GREET_TEST);

    // The whole story from the start, and resuming from any seq gives only what follows it.
    let all = drain(&mut watch(&server, &task.id, 0).await).await;
    assert_eq!(seqs(&all), (1..=all.len() as u64).collect::<Vec<_>>());
    assert_eq!(kind(&all[0]), "task_created");
    assert_eq!(statuses(&all), [TaskStatus::Planned, TaskStatus::InProgress, TaskStatus::Completed]);
    assert_eq!(all[all.len() - run.len()..], run[..]);
    let middle = all[all.len() / 2].seq;
    let resumed = drain(&mut watch(&server, &task.id, middle).await).await;
    assert_eq!(resumed[..], all[middle as usize..], "after seq {middle}");
    let last = all.last().unwrap().seq;
    assert!(drain(&mut watch(&server, &task.id, last).await).await.is_empty(), "nothing after the end");

    // Get and list.
    let got = client.get_task(tasks::GetTaskRequest { task_id: task.id.clone() }).await.unwrap().into_inner();
    assert_eq!(got.status(), TaskStatus::Completed);
    assert_eq!(got.progress_percentage, 100.0);
    assert_eq!(got.generated_files, ["greet.py", "test_greet.py"]);
    assert_eq!(got.execution_plan, task.execution_plan, "the plan that was shown is the plan that ran");
    let list = |project_id: Option<String>, status: Vec<TaskStatus>| {
        let mut client = client.clone();
        async move {
            let request = tasks::ListTasksRequest {
                project_id,
                status: status.into_iter().map(|s| s as i32).collect(),
                ..Default::default()
            };
            client.list_tasks(request).await.unwrap().into_inner()
        }
    };
    let listed = list(Some(project.id.clone()), vec![]).await;
    assert_eq!(listed.tasks.iter().map(|t| t.id.as_str()).collect::<Vec<_>>(), [task.id.as_str()]);
    assert!(listed.next_page_token.is_empty());
    let done = list(None, vec![TaskStatus::Completed, TaskStatus::Failed]).await;
    assert_eq!(done.tasks.len(), 1);
    assert!(list(None, vec![TaskStatus::Planned]).await.tasks.is_empty());
    let other = create_project(&server, "empty-one").await;
    assert!(list(Some(other.id), vec![]).await.tasks.is_empty());

    server.stop().await.expect("a clean stop");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_watcher_follows_a_run_live_and_resumes_where_it_left_off() {
    let server = Server::start(vec![Reply::Json(plan())], coder_writes_greet()).await;
    let project = create_project(&server, "live").await;
    let task = create_task(&server, &project.id).await.unwrap();

    // Watching a planned task: the stored events, then the stream stays open for live ones.
    let mut early = watch(&server, &task.id, 0).await;
    let mut seen = Vec::new();
    while statuses(&seen) != [TaskStatus::Planned] {
        seen.push(next(&mut early).await.expect("the planning events"));
    }
    let started = server
        .tasks()
        .await
        .execute_task(tasks::ExecuteTaskRequest { task_id: task.id.clone() })
        .await
        .expect("execute")
        .into_inner();
    assert_eq!(started.last_seq, seen.last().unwrap().seq, "last_seq is the last event stored before the run");
    // Two live events, then the watcher goes away (a dropped connection).
    for _ in 0..2 {
        seen.push(next(&mut early).await.expect("a live event"));
    }
    drop(early);
    // It comes back with the last seq it saw and gets exactly what it missed.
    let resumed = drain(&mut watch(&server, &task.id, seen.last().unwrap().seq).await).await;
    seen.extend(resumed);
    assert_eq!(seqs(&seen), (1..=seen.len() as u64).collect::<Vec<_>>(), "no gap, no duplicate");
    assert_eq!(statuses(&seen), [TaskStatus::Planned, TaskStatus::InProgress, TaskStatus::Completed]);
    assert_eq!(seen, drain(&mut watch(&server, &task.id, 0).await).await, "the same events as the store's");
}

#[tokio::test(flavor = "multi_thread")]
async fn planned_and_running_tasks_can_be_cancelled_once() {
    // The second task's coder never answers in time: it is cancelled while waiting on the model.
    let slow = Reply::text("too late").delayed(Duration::from_secs(120));
    let server = Server::start(vec![Reply::Json(plan()), Reply::Json(plan())], vec![slow]).await;
    let project = create_project(&server, "cancels").await;
    let mut client = server.tasks().await;

    // A planned task is cancelled at once, with the reason recorded.
    let planned = create_task(&server, &project.id).await.unwrap();
    let cancel = |id: &str| tasks::CancelTaskRequest { task_id: id.into(), reason: Some("not needed any more".into()) };
    let cancelled = client.cancel_task(cancel(&planned.id)).await.expect("cancel").into_inner();
    assert_eq!(cancelled.status(), TaskStatus::Cancelled);
    assert!(cancelled.completed_at.is_some());
    let events = drain(&mut watch(&server, &planned.id, 0).await).await;
    match &events.last().unwrap().kind {
        Some(Kind::StatusChanged(s)) => {
            assert_eq!((s.from(), s.to()), (TaskStatus::Planned, TaskStatus::Cancelled));
            assert_eq!(s.reason.as_deref(), Some("not needed any more"));
        }
        other => panic!("the watch ends with the cancellation, not {other:?}"),
    }
    assert_status(client.cancel_task(cancel(&planned.id)).await, Code::FailedPrecondition, &["already cancelled"]);
    assert_status(
        client.execute_task(tasks::ExecuteTaskRequest { task_id: planned.id.clone() }).await,
        Code::FailedPrecondition,
        &["is cancelled", "only planned tasks can be executed"],
    );

    // A running task stops; CancelTask answers once the run recorded the end.
    let running = create_task(&server, &project.id).await.unwrap();
    let started =
        client.execute_task(tasks::ExecuteTaskRequest { task_id: running.id.clone() }).await.unwrap().into_inner();
    let mut stream = watch(&server, &running.id, started.last_seq).await;
    loop {
        let e = next(&mut stream).await.expect("the run's events");
        if kind(&e) == "phase_started" {
            break;
        }
    }
    let cancelled = client.cancel_task(cancel(&running.id)).await.expect("cancel").into_inner();
    assert_eq!(cancelled.status(), TaskStatus::Cancelled);
    let rest = drain(&mut stream).await;
    assert_eq!(statuses(&rest), [TaskStatus::Cancelled], "the watch ends with the cancellation");
    let got = client.get_task(tasks::GetTaskRequest { task_id: running.id.clone() }).await.unwrap().into_inner();
    assert_eq!(got.status(), TaskStatus::Cancelled);
    assert_status(client.cancel_task(cancel(&running.id)).await, Code::FailedPrecondition, &["already cancelled"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn task_errors_carry_their_codes_and_say_what_to_fix() {
    let bad = json!({"phases": [{"name": "a", "description": "d", "agent": "coder", "depends_on": ["ghost"]}], "confidence_score": 0.5, "risk_factors": []});
    let server =
        Server::start(vec![Reply::Json(bad.clone()), Reply::Json(bad.clone()), Reply::Json(bad)], vec![]).await;
    let project = create_project(&server, "errors").await;
    let mut client = server.tasks().await;
    let unknown = "67e55044-10b1-426f-9247-bb680e5fe0c8";

    // INVALID_ARGUMENT, naming the field (in the message and as a detail).
    let s = assert_status(create_task(&server, "p-1").await, Code::InvalidArgument, &["project_id", "not a valid id"]);
    assert_eq!(detail_field(&s), "project_id");
    let short =
        tasks::CreateTaskRequest { project_id: project.id.clone(), description: "fix it".into(), ..Default::default() };
    let s = assert_status(
        client.create_task(short).await,
        Code::InvalidArgument,
        &["description", "at least 10 characters"],
    );
    assert_eq!(detail_field(&s), "description");
    let s = assert_status(
        client.get_task(tasks::GetTaskRequest { task_id: "nope".into() }).await,
        Code::InvalidArgument,
        &["task_id", "send a UUID"],
    );
    assert_eq!(detail_field(&s), "task_id");
    assert_status(
        client.get_task(tasks::GetTaskRequest::default()).await,
        Code::InvalidArgument,
        &["task_id is missing"],
    );
    let s = assert_status(
        client.list_tasks(tasks::ListTasksRequest { page_token: "zzz".into(), ..Default::default() }).await,
        Code::InvalidArgument,
        &["page_token", "next_page_token"],
    );
    assert_eq!(detail_field(&s), "page_token");
    let s = assert_status(
        client.list_tasks(tasks::ListTasksRequest { status: vec![0], ..Default::default() }).await,
        Code::InvalidArgument,
        &["status[0]", "TASK_STATUS_PLANNED"],
    );
    assert_eq!(detail_field(&s), "status[0]");
    assert_status(
        client.watch_task(tasks::WatchTaskRequest { task_id: "42".into(), after_seq: 0 }).await,
        Code::InvalidArgument,
        &["task_id"],
    );

    // NOT_FOUND for ids nothing is stored under.
    assert_status(
        client.get_task(tasks::GetTaskRequest { task_id: unknown.into() }).await,
        Code::NotFound,
        &[unknown, "ListTasks"],
    );
    assert_status(
        client.watch_task(tasks::WatchTaskRequest { task_id: unknown.into(), after_seq: 0 }).await,
        Code::NotFound,
        &[unknown],
    );
    assert_status(
        client.execute_task(tasks::ExecuteTaskRequest { task_id: unknown.into() }).await,
        Code::NotFound,
        &[unknown],
    );
    assert_status(
        client.cancel_task(tasks::CancelTaskRequest { task_id: unknown.into(), reason: None }).await,
        Code::NotFound,
        &[unknown],
    );
    assert_status(create_task(&server, unknown).await, Code::NotFound, &[unknown, "ListProjects"]);
    assert_status(
        client.list_tasks(tasks::ListTasksRequest { project_id: Some(unknown.into()), ..Default::default() }).await,
        Code::NotFound,
        &[unknown],
    );

    // No valid plan: the task comes back FAILED, and executing it is a FAILED_PRECONDITION.
    let failed = create_task(&server, &project.id).await.expect("a task whose planning failed");
    assert_eq!(failed.status(), TaskStatus::Failed);
    assert!(failed.execution_plan.is_none());
    assert_status(
        client.execute_task(tasks::ExecuteTaskRequest { task_id: failed.id.clone() }).await,
        Code::FailedPrecondition,
        &["is failed", "only planned tasks can be executed"],
    );
    assert_status(
        client.cancel_task(tasks::CancelTaskRequest { task_id: failed.id.clone(), reason: None }).await,
        Code::FailedPrecondition,
        &["already failed"],
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_model_server_that_is_down_is_unavailable() {
    // A port nothing listens on.
    let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap().local_addr().unwrap();
    let server = Server::start_with(vec![], vec![], |c| {
        c.models.planner = ModelSettings::new(Provider::Ollama, format!("http://{closed}"), PLANNER);
        c.models.planner.max_retries = 0;
    })
    .await;
    let project = create_project(&server, "offline").await;
    assert_status(create_task(&server, &project.id).await, Code::Unavailable, &["cannot reach", &closed.to_string()]);
    let listed = server.tasks().await.list_tasks(tasks::ListTasksRequest::default()).await.unwrap().into_inner();
    assert!(listed.tasks.is_empty(), "nothing is created while the planner is down");
}

#[tokio::test(flavor = "multi_thread")]
async fn shutdown_cancels_running_tasks_and_ends_their_watches() {
    let slow = Reply::text("too late").delayed(Duration::from_secs(120));
    let mut server = Server::start(vec![Reply::Json(plan())], vec![slow]).await;
    let project = create_project(&server, "drained").await;
    let task = create_task(&server, &project.id).await.unwrap();
    let started = server
        .tasks()
        .await
        .execute_task(tasks::ExecuteTaskRequest { task_id: task.id.clone() })
        .await
        .unwrap()
        .into_inner();
    let mut stream = watch(&server, &task.id, started.last_seq).await;
    while kind(&next(&mut stream).await.expect("the run's events")) != "phase_started" {}

    server.shutdown.cancel();
    let rest = drain(&mut stream).await;
    assert_eq!(statuses(&rest), [TaskStatus::Cancelled], "the watcher sees the run end, then the stream ends");
    server.stop().await.expect("run returns Ok after draining");

    let store = turbo_store::Store::open_sqlite(&server.data_dir().join("turbo.db")).await.unwrap();
    let id: turbo_core::ids::TaskId = task.id.parse().unwrap();
    let stored = store.get_task(id).await.unwrap().expect("the task");
    assert_eq!(stored.task.status.as_str(), "cancelled", "the end was recorded");
}

// ---------------------------------------------------------------------------------------------
// Projects
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn projects_are_created_read_listed_updated_deleted_and_restored() {
    let server = Server::start(vec![], vec![]).await;
    let mut client = server.projects().await;

    // Created from an existing directory: languages detected, analysed.
    let root = server.project_dir("shop");
    std::fs::write(root.join("app.py"), "print('hi')\n").unwrap();
    std::fs::write(root.join("requirements.txt"), "fastapi\n").unwrap();
    let created = client
        .create_project(projects::CreateProjectRequest {
            name: "Shop API".into(),
            description: Some("sells things".into()),
            project_type: ProjectType::WebApplication as i32,
            root_path: Some(root.display().to_string()),
            configuration_json: r#"{"python_version": "3.11"}"#.into(),
            ..Default::default()
        })
        .await
        .expect("create")
        .into_inner();
    let shop = created.project.clone().unwrap();
    assert_eq!((shop.name.as_str(), shop.slug.as_str(), shop.main_branch.as_str()), ("Shop API", "shop-api", "main"));
    assert_eq!(shop.languages, [Language::Python as i32], "detected from the directory");
    assert_eq!(shop.dependency_files, ["requirements.txt"]);
    assert!(shop.ai_context_json.contains("python_version"), "{}", shop.ai_context_json);
    let analysis = created.analysis.unwrap();
    assert_eq!(analysis.detected_languages, [Language::Python as i32]);
    assert!(analysis.recommended_tools.contains(&"pytest".to_string()), "{:?}", analysis.recommended_tools);
    assert!(analysis.setup_time_estimate.is_some());
    assert!(!created.next_steps.is_empty());

    // Without a root path: a fresh workspace under the data directory.
    let fresh = client
        .create_project(projects::CreateProjectRequest {
            name: "Fresh".into(),
            project_type: ProjectType::ApiService as i32,
            languages: vec![Language::Rust as i32],
            ..Default::default()
        })
        .await
        .expect("create")
        .into_inner()
        .project
        .unwrap();
    assert!(PathBuf::from(&fresh.root_path).is_dir(), "{}", fresh.root_path);
    assert!(fresh.root_path.starts_with(&server.data_dir().display().to_string()), "{}", fresh.root_path);

    // Duplicates: the name, then the slug, each named.
    let dup = |name: &str, slug: Option<&str>| projects::CreateProjectRequest {
        name: name.into(),
        slug: slug.map(str::to_string),
        project_type: ProjectType::ApiService as i32,
        languages: vec![Language::Go as i32],
        ..Default::default()
    };
    assert_status(
        client.create_project(dup("Shop API", Some("other"))).await,
        Code::AlreadyExists,
        &["name 'Shop API'", &shop.id],
    );
    assert_status(
        client.create_project(dup("Other", Some("shop-api"))).await,
        Code::AlreadyExists,
        &["slug 'shop-api'"],
    );

    // Invalid requests name the field.
    let s = assert_status(client.create_project(dup("", None)).await, Code::InvalidArgument, &["name"]);
    assert_eq!(detail_field(&s), "name");
    let s = assert_status(
        client.create_project(projects::CreateProjectRequest { project_type: 0, ..dup("Typeless", None) }).await,
        Code::InvalidArgument,
        &["project_type", "PROJECT_TYPE_API_SERVICE"],
    );
    assert_eq!(detail_field(&s), "project_type");
    let s = assert_status(
        client.create_project(projects::CreateProjectRequest { languages: vec![], ..dup("Langless", None) }).await,
        Code::InvalidArgument,
        &["languages", "at least one language"],
    );
    assert_eq!(detail_field(&s), "languages");
    let s = assert_status(
        client
            .create_project(projects::CreateProjectRequest {
                root_path: Some("/no/such/dir".into()),
                ..dup("Rootless", None)
            })
            .await,
        Code::InvalidArgument,
        &["/no/such/dir", "not a directory"],
    );
    assert_eq!(detail_field(&s), "root_path");
    // Nor the host itself: not `/`, a top-level or system directory, however it is spelled.
    let outside = tempfile::tempdir().unwrap();
    let to_root = outside.path().join("to-root");
    std::os::unix::fs::symlink("/", &to_root).unwrap();
    let depth = outside.path().components().count() - 1;
    let dotted = format!("{}{}", outside.path().display(), "/..".repeat(depth));
    for root in ["/", "/proc", "/etc/ssl", "/usr/lib", "/tmp", &dotted, &to_root.display().to_string()] {
        let s = assert_status(
            client
                .create_project(projects::CreateProjectRequest { root_path: Some(root.into()), ..dup("Host", None) })
                .await,
            Code::InvalidArgument,
            &[root, "cannot be a project's root"],
        );
        assert_eq!(detail_field(&s), "root_path");
    }

    // Get and list (newest first, a page at a time).
    let get = |id: &str| projects::GetProjectRequest { project_id: id.into() };
    assert_eq!(client.get_project(get(&shop.id)).await.unwrap().into_inner(), shop);
    let page1 = client
        .list_projects(projects::ListProjectsRequest { page_size: 1, ..Default::default() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(page1.projects.iter().map(|p| p.name.as_str()).collect::<Vec<_>>(), ["Fresh"]);
    let page2 = client
        .list_projects(projects::ListProjectsRequest {
            page_size: 1,
            page_token: page1.next_page_token,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(page2.projects.iter().map(|p| p.name.as_str()).collect::<Vec<_>>(), ["Shop API"]);
    assert!(page2.next_page_token.is_empty(), "the last page");

    // Update by field mask; fields outside the mask stay.
    let update = |mask: &[&str], project: projects::ProjectMetadata| projects::UpdateProjectRequest {
        project_id: shop.id.clone(),
        project: Some(project),
        update_mask: Some(prost_types::FieldMask { paths: mask.iter().map(|p| p.to_string()).collect() }),
    };
    let change = projects::ProjectMetadata {
        name: "ignored, not in the mask".into(),
        description: Some("sells more things".into()),
        frameworks: vec![turbo_proto::common::v1::Framework::Fastapi as i32],
        ..Default::default()
    };
    let updated = client.update_project(update(&["description", "frameworks"], change)).await.unwrap().into_inner();
    assert_eq!(updated.name, "Shop API");
    assert_eq!(updated.description.as_deref(), Some("sells more things"));
    assert_eq!(updated.frameworks, [turbo_proto::common::v1::Framework::Fastapi as i32]);
    assert_eq!(client.get_project(get(&shop.id)).await.unwrap().into_inner(), updated);
    let taken = projects::ProjectMetadata { name: "Fresh".into(), ..Default::default() };
    assert_status(client.update_project(update(&["name"], taken)).await, Code::AlreadyExists, &["name 'Fresh'"]);
    let bad_slug = projects::ProjectMetadata { slug: "Not A Slug".into(), ..Default::default() };
    let s = assert_status(
        client.update_project(update(&["slug"], bad_slug)).await,
        Code::InvalidArgument,
        &["project.slug"],
    );
    assert_eq!(detail_field(&s), "project.slug");
    let to_etc = projects::ProjectMetadata { root_path: "/etc".into(), ..Default::default() };
    let s = assert_status(
        client.update_project(update(&["root_path"], to_etc)).await,
        Code::InvalidArgument,
        &["/etc", "cannot be a project's root"],
    );
    assert_eq!(detail_field(&s), "project.root_path");
    let s = assert_status(
        client.update_project(update(&["created_at"], projects::ProjectMetadata::default())).await,
        Code::InvalidArgument,
        &["update_mask.paths[0]", "cannot be changed"],
    );
    assert_eq!(detail_field(&s), "update_mask.paths[0]");

    // Soft delete: hidden, no new tasks, the name stays reserved; then restored.
    let deleted = client
        .delete_project(projects::DeleteProjectRequest { project_id: shop.id.clone() })
        .await
        .expect("delete")
        .into_inner();
    let (deleted_at, purge_after) = (deleted.deleted_at.unwrap(), deleted.purge_after.unwrap());
    assert_eq!(purge_after.seconds - deleted_at.seconds, 30 * 24 * 3600, "restorable for 30 days");
    assert_eq!((purge_after.nanos, deleted.project_id.as_str()), (deleted_at.nanos, shop.id.as_str()));
    assert_status(client.get_project(get(&shop.id)).await, Code::NotFound, &[&shop.id, "RestoreProject"]);
    let live = client.list_projects(projects::ListProjectsRequest::default()).await.unwrap().into_inner();
    assert_eq!(live.projects.iter().map(|p| p.name.as_str()).collect::<Vec<_>>(), ["Fresh"]);
    let all = client
        .list_projects(projects::ListProjectsRequest { include_deleted: true, ..Default::default() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(all.projects.len(), 2);
    assert_status(create_task(&server, &shop.id).await, Code::NotFound, &[&shop.id]);
    assert_status(
        client.update_project(update(&["description"], projects::ProjectMetadata::default())).await,
        Code::NotFound,
        &[&shop.id],
    );
    assert_status(
        client.delete_project(projects::DeleteProjectRequest { project_id: shop.id.clone() }).await,
        Code::NotFound,
        &[&shop.id],
    );
    assert_status(
        client.create_project(dup("Shop API", Some("shop-2"))).await,
        Code::AlreadyExists,
        &["name 'Shop API'", "deleted project", "restored"],
    );
    let restored = client
        .restore_project(projects::RestoreProjectRequest { project_id: shop.id.clone() })
        .await
        .expect("restore")
        .into_inner();
    assert_eq!(restored, updated);
    assert_eq!(client.get_project(get(&shop.id)).await.unwrap().into_inner(), updated);
    assert_status(
        client.restore_project(projects::RestoreProjectRequest { project_id: shop.id.clone() }).await,
        Code::FailedPrecondition,
        &["is not deleted"],
    );

    // Ids: malformed and unknown.
    let s =
        assert_status(client.get_project(get("shop")).await, Code::InvalidArgument, &["project_id", "not a valid id"]);
    assert_eq!(detail_field(&s), "project_id");
    let unknown = "67e55044-10b1-426f-9247-bb680e5fe0c8";
    assert_status(client.get_project(get(unknown)).await, Code::NotFound, &[unknown, "ListProjects"]);
    assert_status(
        client.restore_project(projects::RestoreProjectRequest { project_id: unknown.into() }).await,
        Code::NotFound,
        &[unknown],
    );

    // Every change asked for is in the audit log, oldest last, with the caller and the outcome;
    // reads are not.
    let store = turbo_store::Store::open_sqlite(&server.data_dir().join("turbo.db")).await.unwrap();
    let log = store.list_audit(turbo_store::AuditFilter { limit: 1000, ..Default::default() }).await.unwrap();
    let rows: Vec<(&str, &str, bool)> =
        log.iter().rev().map(|e| (e.action.as_str(), e.target.as_str(), e.outcome == "ok")).collect();
    let shop_id = shop.id.as_str();
    assert_eq!(
        rows,
        [
            ("project.create", shop_id, true),
            ("project.create", fresh.id.as_str(), true),
            ("project.create", "", false), // the name is taken
            ("project.create", "", false), // the slug is taken
            ("project.create", "", false), // no name
            ("project.create", "", false), // no type
            ("project.create", "", false), // no language
            ("project.create", "", false), // no such root
            ("project.create", "", false), // the host's roots, seven of them
            ("project.create", "", false),
            ("project.create", "", false),
            ("project.create", "", false),
            ("project.create", "", false),
            ("project.create", "", false),
            ("project.create", "", false),
            ("project.update", shop_id, true),
            ("project.update", shop_id, false), // the name is taken
            ("project.update", shop_id, false), // a bad slug
            ("project.update", shop_id, false), // /etc
            ("project.update", shop_id, false), // created_at is fixed
            ("project.delete", shop_id, true),
            ("task.create", "", false), // the project is deleted
            ("project.update", shop_id, false),
            ("project.delete", shop_id, false),
            ("project.create", "", false),
            ("project.restore", shop_id, true),
            ("project.restore", shop_id, false), // not deleted
            ("project.restore", unknown, false),
        ]
    );
    assert!(log.iter().all(|e| e.actor.starts_with("grpc:127.0.0.1:")), "{log:?}");
    let failed = log.iter().find(|e| e.action == "project.restore" && e.target == unknown).unwrap();
    assert!(failed.outcome.starts_with("error: NotFound: "), "{failed:?}");
    assert_eq!(log.iter().find(|e| e.target == fresh.id).unwrap().detail, Some(serde_json::json!({"name": "Fresh"})));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_task_left_running_by_a_killed_orchestrator_is_resumed_when_one_starts_again() {
    let mut first = Server::start(vec![Reply::Json(plan())], vec![]).await;
    let project = create_project(&first, "resumed").await;
    let planned = create_task(&first, &project.id).await.expect("plan");
    first.stop().await.expect("a clean stop");
    // As if the orchestrator had been killed while running the task: stored in progress.
    let id: turbo_core::ids::TaskId = planned.id.parse().unwrap();
    let store = turbo_store::Store::open_sqlite(&first.data_dir().join("turbo.db")).await.unwrap();
    let mut task = store.get_task(id).await.unwrap().expect("stored").task;
    task.status = turbo_core::task::TaskStatus::InProgress;
    store.update_task(&task).await.unwrap();
    drop(store);

    let data_dir = first.data_dir();
    let second = Server::start_with(vec![], coder_writes_greet(), |c| c.store.data_dir = Some(data_dir)).await;
    let mut client = second.tasks().await;
    let done = within("the resumed task to finish", async {
        loop {
            let t = client.get_task(tasks::GetTaskRequest { task_id: planned.id.clone() }).await;
            match t.map(|t| t.into_inner()) {
                Ok(t) if t.status() == TaskStatus::Completed || t.status() == TaskStatus::Failed => return t,
                _ => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
    })
    .await;
    assert_eq!(done.status(), TaskStatus::Completed, "{done:?}");
    assert_eq!(std::fs::read_to_string(PathBuf::from(&project.root_path).join("greet.py")).unwrap(), GREET);
}
