//! The tool-runner service over the network: [`turbo_tool_runner::run`] on `127.0.0.1:0`, used
//! through [`ToolRunnerClient::connect`] (the [`RemoteToolRunner`]) exactly as agents use a
//! local runner, plus a few raw gRPC requests for the status codes other clients see; and the
//! runners' NATS job queue with a real nats-server, through [`turbo_tool_runner::QueuedToolRunner`].

use std::path::Path;
use std::sync::OnceLock;
use std::time::Duration;

use futures::StreamExt;
use opentelemetry::trace::{TraceContextExt, TraceId, TracerProvider as _};
use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider};
use serde_json::json;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tonic::Code;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tracing::Instrument;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::layer::SubscriberExt;
use turbo_bus::async_nats;
use turbo_core::ids::{SessionId, TaskId};
use turbo_core::tool::ToolCall;
use turbo_proto::tools::v1 as pb;
use turbo_proto::tools::v1::tool_service_client::ToolServiceClient;
use turbo_tool_runner::{
    ApprovalUpdate, CallScope, Checkpoints, Error, JobQueue, RemoteToolRunner, RunnerLimits, ToolRunnerClient,
    job_headers, workspace_key,
};

/// A tool-runner service on a free port, with its data directory; stopped on drop.
struct Runner {
    url: String,
    shutdown: CancellationToken,
    served: Option<JoinHandle<turbo_tool_runner::Result<()>>>,
    _data: tempfile::TempDir,
}

impl Runner {
    async fn start() -> Runner {
        Runner::start_on(TcpListener::bind("127.0.0.1:0").await.expect("a free port")).await
    }

    async fn start_on(listener: TcpListener) -> Runner {
        Runner::start_with(listener, |_| {}).await
    }

    /// A runner whose configuration `edit` changes first.
    async fn start_with(listener: TcpListener, edit: impl FnOnce(&mut turbo_config::Config)) -> Runner {
        let data = tempfile::tempdir().unwrap();
        let mut config = turbo_config::Config::default();
        config.store.data_dir = Some(data.path().to_path_buf());
        edit(&mut config);
        let url = format!("http://{}", listener.local_addr().unwrap());
        let shutdown = CancellationToken::new();
        let token = shutdown.clone();
        let served = tokio::spawn(async move { turbo_tool_runner::run(&config, listener, token).await });
        Runner { url, shutdown, served: Some(served), _data: data }
    }

    fn client(&self) -> ToolRunnerClient {
        ToolRunnerClient::connect(&self.url, RunnerLimits::default()).expect("a valid url")
    }

    async fn raw(&self) -> ToolServiceClient<tonic::transport::Channel> {
        ToolServiceClient::connect(self.url.clone()).await.expect("the runner accepts connections")
    }

    async fn stop(mut self) {
        self.shutdown.cancel();
        if let Some(served) = self.served.take() {
            served.await.expect("the server task").expect("the server stops cleanly");
        }
    }
}

impl Drop for Runner {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

fn call(name: &str, args: serde_json::Value) -> ToolCall {
    ToolCall { id: "c1".into(), name: name.into(), arguments: args }
}

fn path(dir: &Path) -> &str {
    dir.to_str().expect("a UTF-8 temporary directory")
}

/// Polls `check` every 20 ms until it returns something, for at most `limit`.
async fn eventually<T>(limit: Duration, mut check: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if let Some(found) = check() {
            return Some(found);
        }
        if tokio::time::Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn lists_the_same_tools_as_a_local_runner() {
    let runner = Runner::start().await;
    let (remote, local) = (runner.client(), ToolRunnerClient::local(RunnerLimits::default()));
    assert_eq!(remote.specs(None).await.unwrap(), local.specs(None).await.unwrap());
    let narrowed = remote.specs(Some(&["fs_read", "fs_list"])).await.unwrap();
    assert_eq!(narrowed.iter().map(|s| s.name.as_str()).collect::<Vec<_>>(), ["fs_read", "fs_list"]);
    assert!(remote.specs(Some(&[])).await.unwrap().is_empty());

    let remote_err = remote.specs(Some(&["fs_nuke"])).await.unwrap_err();
    let local_err = local.specs(Some(&["fs_nuke"])).await.unwrap_err();
    assert!(remote_err.is_model_correctable(), "{remote_err:?}");
    assert_eq!(remote_err.to_string(), local_err.to_string());
    runner.stop().await;
}

#[tokio::test]
async fn writes_and_reads_a_file_in_the_workspace() {
    let runner = Runner::start().await;
    let ws = tempfile::tempdir().unwrap();
    let tools = runner.client();
    let wrote = tools
        .call(path(ws.path()), &call("fs_write", json!({"path": "app.py", "content": "print(1)\n"})))
        .await
        .unwrap();
    assert!(wrote.success, "{}", wrote.content);
    assert_eq!(wrote.files_changed, ["app.py"]);
    assert_eq!(std::fs::read_to_string(ws.path().join("app.py")).unwrap(), "print(1)\n");

    let read = tools.call(path(ws.path()), &call("fs_read", json!({"path": "app.py"}))).await.unwrap();
    assert!(read.success);
    assert!(read.content.contains("print(1)"), "{}", read.content);
    runner.stop().await;
}

#[tokio::test]
async fn a_path_escape_is_the_same_correctable_error_as_locally() {
    let runner = Runner::start().await;
    let ws = tempfile::tempdir().unwrap();
    let escape = call("fs_read", json!({"path": "../../etc/passwd"}));
    let remote = runner.client().call(path(ws.path()), &escape).await.unwrap_err();
    let local = ToolRunnerClient::local(RunnerLimits::default()).call(path(ws.path()), &escape).await.unwrap_err();
    assert!(remote.is_model_correctable(), "{remote:?}");
    assert!(remote.to_string().contains("outside the workspace"), "{remote}");
    assert_eq!(remote.to_string(), local.to_string());

    // Other clients see it as the call's result, not as an error status.
    let mut raw = runner.raw().await;
    let request = pb::ToolCallRequest {
        workspace: path(ws.path()).into(),
        tool: "fs_read".into(),
        arguments_json: r#"{"path": "../../etc/passwd"}"#.into(),
        ..Default::default()
    };
    let mut chunks = raw.call_tool(request).await.unwrap().into_inner();
    let Some(pb::ToolCallChunk { chunk: Some(pb::tool_call_chunk::Chunk::Result(result)) }) =
        chunks.message().await.unwrap()
    else {
        panic!("the first chunk is the result");
    };
    assert!(!result.success && result.model_correctable);
    assert_eq!(result.content, local.to_string());
    assert!(chunks.message().await.unwrap().is_none(), "the result is the last chunk");
    runner.stop().await;
}

#[tokio::test]
async fn a_task_baseline_is_shared_by_every_client_of_the_service() {
    let runner = Runner::start().await;
    let ws = tempfile::tempdir().unwrap();
    std::fs::write(ws.path().join("app.py"), "print(0)\n").unwrap();
    let (orchestrator, reviewer) = (runner.client(), runner.client());
    let task = TaskId::new();
    orchestrator.begin_task(task, path(ws.path())).await.unwrap();
    reviewer
        .call(path(ws.path()), &call("fs_write", json!({"path": "app.py", "content": "print(1)\n"})))
        .await
        .unwrap();
    reviewer.call(path(ws.path()), &call("fs_write", json!({"path": "new.py", "content": "x = 1\n"}))).await.unwrap();

    let diff = reviewer.task_diff(task, path(ws.path())).await.unwrap();
    assert_eq!(diff.modified, ["app.py"]);
    assert_eq!(diff.added, ["new.py"]);
    assert!(diff.unified.contains("-print(0)\n+print(1)"), "{}", diff.unified);
    // Begun again (a resumed run): the baseline stays the first one.
    reviewer.begin_task(task, path(ws.path())).await.unwrap();
    assert_eq!(orchestrator.task_diff(task, path(ws.path())).await.unwrap(), diff);

    orchestrator.end_task(task).await;
    assert!(matches!(reviewer.task_diff(task, path(ws.path())).await, Err(Error::NoBaseline(t)) if t == task));
    runner.stop().await;
}

#[tokio::test]
async fn a_sessions_write_outside_a_task_is_checkpointed_under_the_session_over_grpc() {
    let runner = Runner::start().await;
    let ws = tempfile::tempdir().unwrap();
    std::fs::write(ws.path().join("app.py"), "print(0)\n").unwrap();
    let session = SessionId::new();
    let scope = CallScope { session_id: Some(session), phase: Some("session".into()), ..CallScope::default() };
    let write = call("fs_write", json!({"path": "app.py", "content": "print(1)\n"}));
    assert!(runner.client().call_in(path(ws.path()), &write, &scope).await.unwrap().success);

    // The runner's repository holds the checkpoint under the session, taken before the write.
    let checkpoints = Checkpoints::new(runner._data.path().join("checkpoints"));
    let taken = checkpoints.list(ws.path(), session).await.unwrap();
    assert_eq!(taken.iter().map(|c| c.label.as_str()).collect::<Vec<_>>(), ["session: fs_write"]);
    checkpoints.rewind(ws.path(), session, None).await.unwrap();
    assert_eq!(std::fs::read_to_string(ws.path().join("app.py")).unwrap(), "print(0)\n");
    runner.stop().await;
}

#[tokio::test]
async fn bad_requests_get_the_status_that_names_the_problem() {
    let runner = Runner::start().await;
    let ws = tempfile::tempdir().unwrap();
    let workspace = path(ws.path()).to_string();
    let mut raw = runner.raw().await;

    let unknown = TaskId::new();
    let status = raw
        .task_diff(pb::TaskDiffRequest { task_id: unknown.to_string(), workspace: workspace.clone() })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition);
    assert!(status.message().contains(&unknown.to_string()) && status.message().contains("begin_task"));
    let err = runner.client().task_diff(unknown, &workspace).await.unwrap_err();
    assert!(matches!(err, Error::NoBaseline(t) if t == unknown), "{err:?}");

    let status = raw
        .begin_task(pb::BeginTaskRequest { task_id: "task-1".into(), workspace: workspace.clone() })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(status.message().contains("task_id") && status.message().contains("task-1"), "{}", status.message());
    assert_eq!(turbo_proto::error::field_errors_of(&status).unwrap().0[0].field, "task_id");

    let status = raw.end_task(pb::EndTaskRequest::default()).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(status.message().contains("task_id"), "{}", status.message());

    let status = raw
        .begin_task(pb::BeginTaskRequest { task_id: unknown.to_string(), workspace: "relative/dir".into() })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(status.message().contains("workspace") && status.message().contains("absolute"), "{}", status.message());

    // A workspace that does not exist is the caller's problem, not the model's.
    let missing = ws.path().join("gone");
    let err = runner.client().call(path(&missing), &call("fs_list", json!({"path": "."}))).await.unwrap_err();
    assert!(!err.is_model_correctable(), "{err:?}");
    assert!(err.to_string().contains("gone") && err.to_string().contains(&runner.url), "{err}");
    assert!(matches!(err, Error::Remote { code: Code::InvalidArgument, .. }), "{err:?}");

    let status = raw.approve(pb::ApprovalDecision::default()).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(status.message().contains("approval_id"), "{}", status.message());
    let status = raw
        .call_tool(pb::ToolCallRequest {
            workspace: path(ws.path()).into(),
            tool: "fs_list".into(),
            arguments_json: "{}".into(),
            project_id: "proj-1".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(status.message().contains("project_id") && status.message().contains("proj-1"), "{}", status.message());
    runner.stop().await;
}

#[tokio::test]
async fn a_runner_that_is_not_up_yet_is_named_and_used_once_it_is() {
    // A port nobody listens on, until the runner starts on it.
    let reserved = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = reserved.local_addr().unwrap();
    drop(reserved);
    let url = format!("http://{addr}");
    let remote = RemoteToolRunner::connect(&url, RunnerLimits::default()).expect("connecting is lazy");
    let tools = ToolRunnerClient::from_service(std::sync::Arc::new(remote));

    let err = tools.specs(None).await.unwrap_err();
    assert!(matches!(err, Error::Unreachable { .. }), "{err:?}");
    assert!(!err.is_model_correctable());
    let text = err.to_string();
    assert!(text.contains(&url) && text.contains("cluster.tool_runner_url"), "{text}");

    let runner = Runner::start_on(TcpListener::bind(addr).await.expect("the port is still free")).await;
    // The same client connects now: no restart of the caller is needed.
    let specs = tools.specs(None).await.expect("the runner answers once it is up");
    assert!(!specs.is_empty());
    runner.stop().await;
}

#[tokio::test]
async fn health_reports_the_tool_service_serving() {
    let runner = Runner::start().await;
    let channel = tonic::transport::Endpoint::from_shared(runner.url.clone()).unwrap().connect().await.unwrap();
    let reply = HealthClient::new(channel)
        .check(HealthCheckRequest { service: "turbo.tools.v1.ToolService".into() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(reply.status(), ServingStatus::Serving);
    runner.stop().await;
}

/// Spans of this test binary, exported when they end. Installed once, for the whole process:
/// the server's spans are made on the runtime's threads, which a scoped subscriber would miss.
fn exported_spans() -> &'static InMemorySpanExporter {
    static EXPORTER: OnceLock<InMemorySpanExporter> = OnceLock::new();
    EXPORTER.get_or_init(|| {
        let exporter = InMemorySpanExporter::default();
        let provider = SdkTracerProvider::builder().with_simple_exporter(exporter.clone()).build();
        let subscriber =
            tracing_subscriber::registry().with(tracing_opentelemetry::layer().with_tracer(provider.tracer("test")));
        tracing::subscriber::set_global_default(subscriber).expect("no other global subscriber in this binary");
        exporter
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_runner_continues_the_callers_trace() {
    let exporter = exported_spans();
    let runner = Runner::start().await;
    let ws = tempfile::tempdir().unwrap();
    let tools = runner.client();

    let caller = tracing::info_span!("agent_step");
    let trace_id = caller.context().span().span_context().trace_id();
    assert_ne!(trace_id, TraceId::INVALID);
    tools.call(path(ws.path()), &call("fs_list", json!({"path": "."}))).instrument(caller.clone()).await.unwrap();
    drop(caller);

    // The handler's span, made in the server's task, is in the caller's trace.
    let handler = eventually(Duration::from_secs(5), || {
        exporter.get_finished_spans().unwrap().into_iter().find(|s| s.name == "call_tool")
    })
    .await
    .expect("the server exported its call_tool span");
    assert_eq!(handler.span_context.trace_id(), trace_id);
    let request = exporter
        .get_finished_spans()
        .unwrap()
        .into_iter()
        .find(|s| s.name == "turbo.tools.v1.ToolService/CallTool")
        .expect("the request's span");
    assert_eq!(request.span_context.trace_id(), trace_id);
    assert!(request.parent_span_is_remote, "the request's parent is the client's span, across the network");
    runner.stop().await;
}

/// The next approval update a caller hears, within 10 s.
/// Runs `command` with shell_run in `ws` on its own task; the call's approval updates come on
/// the receiver.
fn spawn_shell(
    tools: &ToolRunnerClient,
    ws: &Path,
    command: &str,
) -> (
    JoinHandle<turbo_tool_runner::Result<turbo_tool_runner::ToolOutput>>,
    tokio::sync::mpsc::UnboundedReceiver<ApprovalUpdate>,
) {
    let (tx, updates) = tokio::sync::mpsc::unbounded_channel();
    let scope = CallScope { updates: Some(tx), ..CallScope::default() };
    let (tools, ws, shell) = (tools.clone(), path(ws).to_string(), call("shell_run", json!({ "command": command })));
    (tokio::spawn(async move { tools.call_in(&ws, &shell, &scope).await }), updates)
}

async fn next_update(updates: &mut tokio::sync::mpsc::UnboundedReceiver<ApprovalUpdate>) -> ApprovalUpdate {
    tokio::time::timeout(Duration::from_secs(10), updates.recv())
        .await
        .expect("an approval update in time")
        .expect("the call is still running")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_the_policy_asks_about_waits_for_approve_over_grpc_and_is_audited() {
    let project = turbo_core::ids::ProjectId::new();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let runner = Runner::start_with(listener, |c| {
        c.approval.medium = turbo_config::ApprovalAction::Ask;
        c.approval.projects.insert(
            project.to_string(),
            turbo_config::ApprovalOverride { medium: Some(turbo_config::ApprovalAction::Deny), ..Default::default() },
        );
    })
    .await;
    let ws = tempfile::tempdir().unwrap();
    let tools = runner.client();
    let admin = RemoteToolRunner::connect(&runner.url, RunnerLimits::default()).unwrap();
    let task = TaskId::new();

    // fs_write is medium risk: it waits, and the caller hears of it through the stream.
    let (tx, mut updates) = tokio::sync::mpsc::unbounded_channel();
    let scope = CallScope { task_id: Some(task), updates: Some(tx), ..CallScope::default() };
    let write = call("fs_write", json!({"path": "app.py", "content": "print(1)\n"}));
    let running = {
        let (tools, ws, scope) = (tools.clone(), path(ws.path()).to_string(), scope.clone());
        tokio::spawn(async move { tools.call_in(&ws, &write, &scope).await })
    };
    let ApprovalUpdate::Requested(request) = next_update(&mut updates).await else { panic!("a request first") };
    assert_eq!((request.tool.as_str(), request.task_id), ("fs_write", Some(task)));
    // The person asked sees what the call is expected to take (fs_write: the default estimate).
    assert!(
        request.reason.ends_with("expected to take about 1 s of CPU, 10 MB of memory, 0 MB of disk"),
        "{}",
        request.reason
    );
    assert!(!ws.path().join("app.py").exists(), "nothing runs before the decision");
    assert_eq!(admin.list_approvals(Some(task)).await.unwrap(), std::slice::from_ref(&request));
    let listed = tools.specs(None).await.unwrap();
    assert!(listed.iter().any(|s| s.name == "fs_write"));

    let err = admin.decide(&request.approval_id, true, "", None).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err}");
    assert!(admin.decide(&request.approval_id, true, "ana", None).await.unwrap());
    let ApprovalUpdate::Decided(outcome) = next_update(&mut updates).await else { panic!("then the decision") };
    assert!(outcome.approved && outcome.decided_by == "ana", "{outcome:?}");
    let out = running.await.unwrap().unwrap();
    assert!(out.success, "{}", out.content);
    assert_eq!(std::fs::read_to_string(ws.path().join("app.py")).unwrap(), "print(1)\n");
    assert!(admin.list_approvals(None).await.unwrap().is_empty());
    assert!(!admin.decide(&request.approval_id, false, "bob", None).await.unwrap(), "decided once");

    // The project denies medium calls: no wait, an unsuccessful result saying why.
    let denied = CallScope { task_id: Some(task), project_id: Some(project), ..CallScope::default() };
    let out = tools.call_in(path(ws.path()), &call("fs_write", json!({"path": "b.py", "content": ""})), &denied).await;
    let out = out.unwrap();
    assert!(!out.success && out.content.contains("denies medium-risk calls"), "{}", out.content);
    assert!(!ws.path().join("b.py").exists());
    // Safe calls never wait, nor do low ones under this policy; those are audited.
    assert!(
        tools.call_in(path(ws.path()), &call("fs_read", json!({"path": "app.py"})), &denied).await.unwrap().success
    );
    let backup = call("advanced_fs", json!({"operation": "backup_files", "parameters": {"paths": ["app.py"]}}));
    let out = tools.call_in(path(ws.path()), &backup, &denied).await.unwrap();
    assert!(out.success, "{}", out.content);

    let store = turbo_store::Store::open_sqlite(&runner._data.path().join("turbo.db")).await.unwrap();
    let audit = store.list_audit(turbo_store::AuditFilter::default()).await.unwrap();
    let mut actions: Vec<(&str, &str)> = audit.iter().map(|e| (e.actor.as_str(), e.action.as_str())).collect();
    actions.sort();
    assert_eq!(actions, [("ana", "tool.approve"), ("policy", "tool.auto_approve"), ("policy", "tool.deny")]);
    runner.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operators_deny_a_waiting_call_over_nats_and_the_model_is_told() {
    let nats = turbo_testkit::NatsServer::start().await.expect("nats-server starts");
    let nats_url = nats.url();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let runner = Runner::start_with(listener, |c| {
        c.approval.high = turbo_config::ApprovalAction::Ask;
        c.cluster.nats_url = Some(nats_url);
    })
    .await;
    let ws = tempfile::tempdir().unwrap();
    let tools = runner.client();
    let (running, mut updates) = spawn_shell(&tools, ws.path(), "touch ran");
    let ApprovalUpdate::Requested(request) = next_update(&mut updates).await else { panic!("a request first") };

    let client = turbo_bus::connect(&nats.url()).await.unwrap();
    let ask = |subject: &'static str, body: serde_json::Value| {
        let client = client.clone();
        async move {
            let reply = client.request(subject, body.to_string().into()).await.expect("a reply");
            serde_json::from_slice::<serde_json::Value>(&reply.payload).unwrap()
        }
    };
    let list = ask("turbo.tools.approvals.list", json!({})).await;
    assert_eq!(list["approvals"][0]["approval_id"], request.approval_id.as_str(), "{list}");
    let bad = ask("turbo.tools.deny", json!({"approval_id": request.approval_id})).await;
    assert_eq!(bad["error"]["code"], "invalid_argument", "{bad}");
    let denied = ask(
        "turbo.tools.deny",
        json!({"approval_id": request.approval_id, "decided_by": "ops", "note": "no shell today"}),
    )
    .await;
    assert_eq!(denied["applied"], true, "{denied}");

    let out = running.await.unwrap().unwrap();
    assert!(!out.success, "{}", out.content);
    assert!(out.content.contains("ops denied") && out.content.contains("no shell today"), "{}", out.content);
    assert!(!ws.path().join("ran").exists(), "a denied command never runs");
    let ApprovalUpdate::Decided(outcome) = next_update(&mut updates).await else { panic!("then the decision") };
    assert!(!outcome.approved && outcome.decided_by == "ops");
    runner.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn call_tool_streams_a_commands_output_as_it_is_printed_then_the_result() {
    let runner = Runner::start().await;
    let ws = tempfile::tempdir().unwrap();
    let mut raw = runner.raw().await;
    let request = pb::ToolCallRequest {
        workspace: path(ws.path()).into(),
        tool: "shell_run".into(),
        arguments_json: json!({"command": "echo one; sleep 1; echo two >&2"}).to_string(),
        ..Default::default()
    };
    let mut chunks = raw.call_tool(request).await.unwrap().into_inner();
    let (mut stdout, mut stderr, mut order) = (Vec::new(), Vec::new(), Vec::new());
    let result = loop {
        match chunks.message().await.unwrap().expect("the stream ends with a result").chunk {
            Some(pb::tool_call_chunk::Chunk::Stdout(bytes)) => {
                order.push("stdout");
                stdout.extend(bytes);
            }
            Some(pb::tool_call_chunk::Chunk::Stderr(bytes)) => {
                order.push("stderr");
                stderr.extend(bytes);
            }
            Some(pb::tool_call_chunk::Chunk::Result(result)) => break result,
            other => panic!("unexpected chunk {other:?}"),
        }
    };
    assert!(result.success, "{}", result.content);
    assert_eq!((stdout.as_slice(), stderr.as_slice()), (&b"one\n"[..], &b"two\n"[..]));
    assert_eq!(order, ["stdout", "stderr"], "each piece as it was printed, before the result");
    assert!(result.content.contains("one") && result.content.contains("two"), "the result keeps the output");
    assert!(chunks.message().await.unwrap().is_none());
    runner.stop().await;
}

// The NATS job queue: runners started by `run` with `cluster.nats_url`, used through the
// queue's client ([`QueuedToolRunner`], as agents get it with `cluster.tool_runner = "queue"`).

/// A tool-runner named `id` serving the job queue on `nats_url`.
async fn queue_runner(nats_url: &str, id: &str, edit: impl FnOnce(&mut turbo_config::Config)) -> Runner {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let (nats_url, id) = (nats_url.to_string(), id.to_string());
    Runner::start_with(listener, move |c| {
        c.cluster.nats_url = Some(nats_url);
        c.cluster.tool_runner_id = Some(id);
        edit(c);
    })
    .await
}

/// The queue's client, as `ToolRunnerClient::for_cluster` makes it for an agent.
fn queue_client(nats_url: &str) -> ToolRunnerClient {
    let mut config = turbo_config::Config::default();
    config.cluster.nats_url = Some(nats_url.to_string());
    config.cluster.tool_runner = turbo_config::ToolRunnerRoute::Queue;
    ToolRunnerClient::for_cluster(&config, RunnerLimits::default()).expect("a queue client")
}

async fn open_queue(nats_url: &str) -> JobQueue {
    JobQueue::open(turbo_bus::connect(nats_url).await.unwrap()).await.expect("the queue opens")
}

/// nats-server, a runner named `runner-a` configured by `edit`, and the queue once it is live.
async fn nats_with_runner(
    edit: impl FnOnce(&mut turbo_config::Config),
) -> (turbo_testkit::NatsServer, Runner, JobQueue) {
    let nats = turbo_testkit::NatsServer::start().await.expect("nats-server starts");
    let runner = queue_runner(&nats.url(), "runner-a", edit).await;
    let queue = open_queue(&nats.url()).await;
    wait_alive(&queue, "runner-a").await;
    (nats, runner, queue)
}

/// Waits until runner `id` says it is alive.
async fn wait_alive(queue: &JobQueue, id: &str) {
    for _ in 0..250 {
        if queue.is_alive(id).await.unwrap() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("runner {id} never said it was alive");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_workspaces_jobs_stay_on_the_runner_that_claimed_it() {
    let nats = turbo_testkit::NatsServer::start().await.expect("nats-server starts");
    let a = queue_runner(&nats.url(), "runner-a", |_| {}).await;
    let b = queue_runner(&nats.url(), "runner-b", |_| {}).await;
    let queue = open_queue(&nats.url()).await;
    wait_alive(&queue, "runner-a").await;
    wait_alive(&queue, "runner-b").await;
    let tools = queue_client(&nats.url());
    assert!(tools.specs(None).await.unwrap().iter().any(|s| s.name == "fs_write"));

    // Each runner keeps baselines in its own data directory: a diff works only on the runner
    // that began the task, so eight workspaces' begin / write / diff all succeeding means every
    // workspace's jobs went to one runner.
    let dirs: Vec<_> = (0..8).map(|_| tempfile::tempdir().unwrap()).collect();
    let mut holders = Vec::new();
    for dir in &dirs {
        let ws = path(dir.path());
        let task = TaskId::new();
        tools.begin_task(task, ws).await.unwrap();
        let out = tools.call(ws, &call("fs_write", json!({"path": "app.py", "content": "print(1)\n"}))).await.unwrap();
        assert!(out.success, "{}", out.content);
        assert_eq!(tools.task_diff(task, ws).await.unwrap().added, ["app.py"]);
        let (holder, _) = queue.holder(&workspace_key(ws)).await.unwrap().expect("the workspace is claimed");
        let data = if holder == "runner-a" { a._data.path() } else { b._data.path() };
        assert!(data.join("baselines").join(format!("{task}.json")).exists(), "the holder {holder} began the task");
        tools.end_task(task).await;
        holders.push(holder);
    }
    assert!(holders.iter().all(|h| h == "runner-a" || h == "runner-b"), "{holders:?}");

    // A model's mistake comes back as the same correctable error as from a local runner.
    let err =
        tools.call(path(dirs[0].path()), &call("fs_read", json!({"path": "../../etc/passwd"}))).await.unwrap_err();
    assert!(err.is_model_correctable() && err.to_string().contains("outside the workspace"), "{err}");
    let err = tools.task_diff(TaskId::new(), path(dirs[0].path())).await.unwrap_err();
    assert!(matches!(err, Error::NoBaseline(_)), "{err}");
    a.stop().await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_for_a_workspace_held_elsewhere_is_forwarded_and_waits_for_its_runner() {
    let (nats, a, queue) = nats_with_runner(|_| {}).await;
    let client = turbo_bus::connect(&nats.url()).await.unwrap();
    let js = async_nats::jetstream::new(client.clone());

    // runner-b holds the workspace and is alive, but is not serving yet.
    let ws = tempfile::tempdir().unwrap();
    let key = workspace_key(path(ws.path()));
    let runners = js.get_key_value("turbo_tool_runners").await.unwrap();
    runners.put("runner-b", "0".into()).await.unwrap();
    assert_eq!(queue.claim(&key, "runner-b").await.unwrap(), None);

    // A job sent to every runner (as a client that routed before the claim would): runner-a
    // takes it and forwards it to runner-b's queue, where it waits.
    let task = TaskId::new();
    let reply = client.new_inbox();
    let mut replies = client.subscribe(reply.clone()).await.unwrap();
    let mut hdrs = async_nats::HeaderMap::new();
    hdrs.insert(job_headers::RPC, "BeginTask");
    hdrs.insert(job_headers::REPLY, reply.as_str());
    hdrs.insert(job_headers::WORKSPACE_KEY, key.as_str());
    hdrs.insert(job_headers::JOB_ID, "job-1");
    let request = pb::BeginTaskRequest { task_id: task.to_string(), workspace: path(ws.path()).to_string() };
    let payload = prost::Message::encode_to_vec(&request);
    js.publish_with_headers("turbo.tools.jobs.any", hdrs, payload.clone().into()).await.unwrap().await.unwrap();
    let stream = js.get_stream("TURBO_TOOL_JOBS").await.unwrap();
    let mut forwarded = None;
    for _ in 0..250 {
        forwarded = stream.get_last_raw_message_by_subject("turbo.tools.jobs.runner.runner-b").await.ok();
        if forwarded.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let forwarded = forwarded.expect("the job is forwarded to runner-b's subject");
    assert_eq!(forwarded.payload, payload, "as it came");
    let waiting = stream.clone().info().await.unwrap().state.messages;
    assert_eq!(waiting, 1, "the forwarded job waits in the queue for runner-b");
    assert!(tokio::time::timeout(Duration::from_millis(300), replies.next()).await.is_err(), "nobody ran it yet");

    // runner-b starts, takes the job and answers; the task's baseline is in its data directory.
    let b = queue_runner(&nats.url(), "runner-b", |_| {}).await;
    let answer = tokio::time::timeout(Duration::from_secs(20), replies.next()).await.expect("an answer").unwrap();
    assert!(answer.headers.as_ref().and_then(|h| h.get("grpc-status")).is_none(), "{answer:?}");
    assert!(b._data.path().join("baselines").join(format!("{task}.json")).exists());
    assert!(!a._data.path().join("baselines").join(format!("{task}.json")).exists());
    a.stop().await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_runners_workspace_is_taken_over() {
    let (nats, a, queue) = nats_with_runner(|_| {}).await;
    let tools = queue_client(&nats.url());
    let ws = tempfile::tempdir().unwrap();
    let key = workspace_key(path(ws.path()));
    assert!(
        tools.call(path(ws.path()), &call("fs_write", json!({"path": "a", "content": "1"}))).await.unwrap().success
    );
    assert_eq!(queue.holder(&key).await.unwrap().unwrap().0, "runner-a");

    a.stop().await;
    assert!(!queue.is_alive("runner-a").await.unwrap(), "a runner that stops says so");
    let b = queue_runner(&nats.url(), "runner-b", |_| {}).await;
    wait_alive(&queue, "runner-b").await;
    let out = tools.call(path(ws.path()), &call("fs_read", json!({"path": "a"}))).await.unwrap();
    assert!(out.success && out.content.contains('1'), "{}", out.content);
    assert_eq!(queue.holder(&key).await.unwrap().unwrap().0, "runner-b");
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queued_call_waits_for_approval_and_a_caller_that_leaves_withdraws_it() {
    let (nats, runner, _queue) = nats_with_runner(|c| c.approval.high = turbo_config::ApprovalAction::Ask).await;
    let tools = queue_client(&nats.url());
    let ws = tempfile::tempdir().unwrap();
    let client = turbo_bus::connect(&nats.url()).await.unwrap();
    let pending = || {
        let client = client.clone();
        async move {
            let reply = client.request("turbo.tools.approvals.list", "{}".into()).await.expect("a reply");
            let list: serde_json::Value = serde_json::from_slice(&reply.payload).unwrap();
            list["approvals"].as_array().unwrap().len()
        }
    };

    // Approved over NATS: the command runs, and the caller heard both updates.
    let (running, mut updates) = spawn_shell(&tools, ws.path(), "touch ran");
    let ApprovalUpdate::Requested(request) = next_update(&mut updates).await else { panic!("a request first") };
    let approve = json!({"approval_id": request.approval_id, "decided_by": "ops"}).to_string();
    client.request("turbo.tools.approve", approve.into()).await.unwrap();
    let out = running.await.unwrap().unwrap();
    assert!(out.success, "{}", out.content);
    assert!(ws.path().join("ran").exists());
    assert!(matches!(next_update(&mut updates).await, ApprovalUpdate::Decided(o) if o.approved));

    // A caller that stops waiting (its task was cancelled) withdraws the call.
    let (running, mut updates) = spawn_shell(&tools, ws.path(), "touch later");
    assert!(matches!(next_update(&mut updates).await, ApprovalUpdate::Requested(_)));
    assert_eq!(pending().await, 1);
    running.abort();
    let mut left = 1;
    for _ in 0..250 {
        left = pending().await;
        if left == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(left, 0, "the withdrawn call no longer waits");
    assert!(!ws.path().join("later").exists());
    runner.stop().await;
}
