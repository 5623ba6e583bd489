//! `turbo.tools.v1.ToolService` over a [`LocalToolRunner`]: what [`crate::run`] serves and
//! [`crate::RemoteToolRunner`] calls.
//!
//! - A call the model made wrongly is not an error status: CallTool ends with an unsuccessful
//!   result marked `model_correctable`, its content the message the local runner gives the
//!   model. Other errors map to statuses once, in `error.rs` (`Error::code`).
//! - CallTool runs the call on its own task and streams, in order: `approval_required` and
//!   `approval_decided` when the approval policy asks a person, `stdout` and `stderr` pieces as
//!   the call's processes print them (best effort: dropped while the client is behind), then
//!   the result, which holds the capped output either way. A client that cancels the stream
//!   withdraws a waiting call and stops a running one.
//! - Approve, Deny and ListApprovals decide and list the calls waiting in this runner.
//!
//! Handlers do their work in methods returning [`crate::Result`], each in a span that is a
//! child of the request's (itself continuing the caller's trace, see `turbo_proto::trace`).

use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tokio_stream::Stream;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};
use tracing::Instrument;
use turbo_config::ApprovalAction;
use turbo_core::ValidationErrors;
use turbo_core::ids::{ProjectId, SessionId, TaskId};
use turbo_core::tool::ToolCall;
use turbo_proto::convert::{ProtoEnum, id_from_proto, json_value_from_proto, opt_id_from_proto};
use turbo_proto::server::Routes;
use turbo_proto::tools::v1 as pb;
use turbo_proto::tools::v1::tool_service_server::{ToolService as ToolServiceApi, ToolServiceServer};

use crate::approval::{ApprovalUpdate, CallScope};
use crate::error::Result;
use crate::{LocalToolRunner, RunnerLimits, ToolService, wire};

/// Chunks of a call buffered for a slow client; the call waits for room.
const CHUNK_BUFFER: usize = 16;
/// Pieces of live output (up to 64 KiB each) held for the stream; more are dropped while the
/// client is behind (the result keeps the capped output).
const OUTPUT_BUFFER: usize = 32;

/// A call request, checked: what to run, where, with which limits, for whom.
pub(crate) struct Prepared {
    workspace: String,
    call: ToolCall,
    limits: RunnerLimits,
    task_id: Option<TaskId>,
    session_id: Option<SessionId>,
    project_id: Option<ProjectId>,
    phase: Option<String>,
    step: Option<u32>,
}

/// Largest request accepted (a file written whole by `fs_write` travels in one).
const MAX_REQUEST_BYTES: usize = 64 * 1024 * 1024;

/// The tool-runner's gRPC API; cheap to clone.
#[derive(Clone)]
pub struct ToolGrpc {
    runner: Arc<LocalToolRunner>,
}

impl ToolGrpc {
    pub fn new(runner: Arc<LocalToolRunner>) -> Self {
        Self { runner }
    }

    /// The service, ready for [`turbo_proto::server::serve`].
    pub fn routes(self) -> Routes {
        Routes::new(self.server())
    }

    /// The service, to add to another process's routes (the one-process `serve`).
    pub fn server(self) -> ToolServiceServer<ToolGrpc> {
        ToolServiceServer::new(self).max_decoding_message_size(MAX_REQUEST_BYTES)
    }

    #[tracing::instrument(name = "list_tools", skip_all, fields(names = ?names))]
    pub(crate) async fn list(&self, names: Vec<String>) -> Result<pb::ListToolsResponse> {
        let specs = if names.is_empty() {
            self.runner.specs(None).await?
        } else {
            let names: Vec<&str> = names.iter().map(String::as_str).collect();
            self.runner.specs(Some(&names)).await?
        };
        let metrics = self.runner.toolbox.metrics();
        let tools = specs
            .into_iter()
            .map(|spec| {
                let m = metrics.get(spec.name.as_str()).copied().unwrap_or_default();
                let risk = self.runner.toolbox.get(&spec.name).map(|t| t.risk().to_proto()).unwrap_or_default();
                let asks = self
                    .runner
                    .toolbox
                    .get(&spec.name)
                    .is_some_and(|t| self.runner.approvals.policy().action(None, t.risk()) == ApprovalAction::Ask);
                pb::ToolEntry {
                    spec: Some(spec.into()),
                    risk_level: risk,
                    requires_approval: asks,
                    execution_count: m.execution_count,
                    success_rate: m.success_rate,
                }
            })
            .collect();
        Ok(pb::ListToolsResponse { tools })
    }

    /// Checks a call request before anything runs.
    pub(crate) fn prepare(&self, req: pb::ToolCallRequest) -> Result<Prepared> {
        let task_id = opt_id_from_proto("task_id", &req.task_id)?;
        let session_id = opt_id_from_proto("session_id", &req.session_id)?;
        let project_id = opt_id_from_proto("project_id", &req.project_id)?;
        let workspace = workspace("workspace", &req.workspace)?.to_string();
        let call = ToolCall {
            id: String::new(),
            arguments: json_value_from_proto("arguments_json", &req.arguments_json)?,
            name: req.tool,
        };
        let limits = self.limits(req.timeout_ms, req.output_cap_bytes);
        let phase = Some(req.phase).filter(|p| !p.is_empty());
        let step = Some(req.step).filter(|s| *s > 0);
        Ok(Prepared { workspace, call, limits, task_id, session_id, project_id, phase, step })
    }

    /// Runs a checked call; a call the model made wrongly is an unsuccessful result.
    async fn call(&self, p: Prepared, scope: CallScope) -> Result<pb::ToolResult> {
        let started = Instant::now();
        match self.runner.call_with(&p.workspace, &p.call, &p.limits, &scope).await {
            Ok(out) => Ok(wire::output_to_proto(out)),
            Err(e) if e.is_model_correctable() => {
                tracing::debug!(error = %e, "the model's call was refused; it gets the message");
                Ok(wire::correctable_to_proto(&e, started.elapsed()))
            }
            Err(e) => Err(e),
        }
    }

    /// Streams the call's approval updates and then its result into `chunks`; stops the call
    /// (withdrawing it if it waits) when the client goes away.
    pub(crate) async fn stream_call(
        self,
        p: Prepared,
        chunks: mpsc::Sender<std::result::Result<pb::ToolCallChunk, Status>>,
    ) {
        let (updates, mut updated) = mpsc::unbounded_channel();
        let (output, mut printed) = mpsc::channel(OUTPUT_BUFFER);
        let scope = CallScope {
            task_id: p.task_id,
            session_id: p.session_id,
            project_id: p.project_id,
            phase: p.phase.clone(),
            step: p.step,
            updates: Some(updates),
            output: Some(output),
        };
        let call = self.call(p, scope);
        tokio::pin!(call);
        let result = loop {
            tokio::select! {
                biased;
                Some(update) = updated.recv() => {
                    if chunks.send(Ok(update_chunk(update))).await.is_err() {
                        return;
                    }
                }
                Some(piece) = printed.recv() => {
                    if chunks.send(Ok(output_chunk(piece))).await.is_err() {
                        return;
                    }
                }
                result = &mut call => break result,
                _ = chunks.closed() => {
                    tracing::debug!("the client went away; the call is stopped");
                    return;
                }
            }
        };
        while let Ok(update) = updated.try_recv() {
            if chunks.send(Ok(update_chunk(update))).await.is_err() {
                return;
            }
        }
        while let Ok(piece) = printed.try_recv() {
            if chunks.send(Ok(output_chunk(piece))).await.is_err() {
                return;
            }
        }
        let last = result.map(|r| pb::ToolCallChunk { chunk: Some(pb::tool_call_chunk::Chunk::Result(r)) });
        let _ = chunks.send(last.map_err(Status::from)).await;
    }

    #[tracing::instrument(name = "list_approvals", skip_all)]
    fn approvals(&self, req: pb::ListApprovalsRequest) -> Result<pb::ListApprovalsResponse> {
        let task_id = match req.task_id.as_deref() {
            Some(id) => Some(id_from_proto::<TaskId>("task_id", id)?),
            None => None,
        };
        let approvals = self.runner.approvals.list(task_id).iter().map(wire::pending_to_proto).collect();
        Ok(pb::ListApprovalsResponse { approvals })
    }

    #[tracing::instrument(name = "decide_approval", skip_all, fields(approval_id = %req.approval_id, approve))]
    async fn decide(&self, req: pb::ApprovalDecision, approve: bool) -> Result<pb::ApprovalResponse> {
        if req.approval_id.is_empty() {
            return Err(turbo_proto::Error::Missing { field: "approval_id".into() }.into());
        }
        let applied = self.runner.approvals.decide(&req.approval_id, approve, &req.decided_by, req.note).await?;
        Ok(pb::ApprovalResponse { approval_id: req.approval_id, applied })
    }

    /// The runner's limits, lowered to what the request asks (0: the runner's).
    fn limits(&self, timeout_ms: u64, output_cap_bytes: u64) -> RunnerLimits {
        let own = &self.runner.limits;
        let timeout = match timeout_ms {
            0 => own.timeout,
            ms => own.timeout.min(Duration::from_millis(ms)),
        };
        let output_cap = match usize::try_from(output_cap_bytes) {
            Ok(0) | Err(_) => own.output_cap,
            Ok(cap) => own.output_cap.min(cap),
        };
        RunnerLimits { timeout, output_cap, sandbox: own.sandbox.clone() }
    }

    #[tracing::instrument(name = "begin_task", skip_all, fields(task_id = %req.task_id))]
    pub(crate) async fn begin(&self, req: pb::BeginTaskRequest) -> Result<pb::BeginTaskResponse> {
        let task_id = id_from_proto("task_id", &req.task_id)?;
        self.runner.begin_task(task_id, workspace("workspace", &req.workspace)?).await?;
        Ok(pb::BeginTaskResponse {})
    }

    #[tracing::instrument(name = "task_diff", skip_all, fields(task_id = %req.task_id))]
    pub(crate) async fn diff(&self, req: pb::TaskDiffRequest) -> Result<pb::TaskDiffResponse> {
        let task_id = id_from_proto("task_id", &req.task_id)?;
        Ok(self.runner.task_diff(task_id, workspace("workspace", &req.workspace)?).await?.into())
    }

    #[tracing::instrument(name = "end_task", skip_all, fields(task_id = %req.task_id))]
    pub(crate) async fn end(&self, req: pb::EndTaskRequest) -> Result<pb::EndTaskResponse> {
        self.runner.end_task(id_from_proto("task_id", &req.task_id)?).await;
        Ok(pb::EndTaskResponse {})
    }
}

/// A workspace path from a request: set and absolute (a relative path would be resolved
/// against the tool-runner's own directory, not the caller's).
fn workspace<'a>(field: &str, value: &'a str) -> std::result::Result<&'a str, turbo_proto::Error> {
    if value.is_empty() {
        return Err(turbo_proto::Error::Missing { field: field.to_string() });
    }
    if !Path::new(value).is_absolute() {
        let mut errs = ValidationErrors::default();
        errs.push(field, format!("'{value}' is not an absolute path: send the workspace's absolute path"));
        return Err(turbo_proto::Error::Invalid(errs));
    }
    Ok(value)
}

fn output_chunk((stream, bytes): (turbo_tools::OutputStream, Vec<u8>)) -> pb::ToolCallChunk {
    use pb::tool_call_chunk::Chunk;
    pb::ToolCallChunk {
        chunk: Some(match stream {
            turbo_tools::OutputStream::Stdout => Chunk::Stdout(bytes),
            turbo_tools::OutputStream::Stderr => Chunk::Stderr(bytes),
        }),
    }
}

fn update_chunk(update: ApprovalUpdate) -> pb::ToolCallChunk {
    use pb::tool_call_chunk::Chunk;
    pb::ToolCallChunk {
        chunk: Some(match update {
            ApprovalUpdate::Requested(p) => Chunk::ApprovalRequired(wire::pending_to_proto(&p)),
            ApprovalUpdate::Decided(o) => Chunk::ApprovalDecided(wire::outcome_to_proto(o)),
        }),
    }
}

type ChunkStream = Pin<Box<dyn Stream<Item = std::result::Result<pb::ToolCallChunk, Status>> + Send>>;

#[tonic::async_trait]
impl ToolServiceApi for ToolGrpc {
    async fn list_tools(
        &self,
        request: Request<pb::ListToolsRequest>,
    ) -> std::result::Result<Response<pb::ListToolsResponse>, Status> {
        Ok(Response::new(self.list(request.into_inner().names).await?))
    }

    type CallToolStream = ChunkStream;

    async fn call_tool(
        &self,
        request: Request<pb::ToolCallRequest>,
    ) -> std::result::Result<Response<Self::CallToolStream>, Status> {
        let req = request.into_inner();
        // A child of the request's span, carried onto the call's own task.
        let span = tracing::info_span!("call_tool", tool = %req.tool, task_id = %req.task_id);
        let prepared = span.in_scope(|| self.prepare(req))?;
        let (chunks, stream) = mpsc::channel(CHUNK_BUFFER);
        tokio::spawn(self.clone().stream_call(prepared, chunks).instrument(span));
        Ok(Response::new(Box::pin(ReceiverStream::new(stream))))
    }

    async fn begin_task(
        &self,
        request: Request<pb::BeginTaskRequest>,
    ) -> std::result::Result<Response<pb::BeginTaskResponse>, Status> {
        Ok(Response::new(self.begin(request.into_inner()).await?))
    }

    async fn task_diff(
        &self,
        request: Request<pb::TaskDiffRequest>,
    ) -> std::result::Result<Response<pb::TaskDiffResponse>, Status> {
        Ok(Response::new(self.diff(request.into_inner()).await?))
    }

    async fn end_task(
        &self,
        request: Request<pb::EndTaskRequest>,
    ) -> std::result::Result<Response<pb::EndTaskResponse>, Status> {
        Ok(Response::new(self.end(request.into_inner()).await?))
    }

    async fn approve(
        &self,
        request: Request<pb::ApprovalDecision>,
    ) -> std::result::Result<Response<pb::ApprovalResponse>, Status> {
        Ok(Response::new(self.decide(request.into_inner(), true).await?))
    }

    async fn deny(
        &self,
        request: Request<pb::ApprovalDecision>,
    ) -> std::result::Result<Response<pb::ApprovalResponse>, Status> {
        Ok(Response::new(self.decide(request.into_inner(), false).await?))
    }

    async fn list_approvals(
        &self,
        request: Request<pb::ListApprovalsRequest>,
    ) -> std::result::Result<Response<pb::ListApprovalsResponse>, Status> {
        Ok(Response::new(self.approvals(request.into_inner())?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn api(limits: RunnerLimits) -> ToolGrpc {
        ToolGrpc::new(Arc::new(LocalToolRunner::new(limits)))
    }

    #[test]
    fn requests_may_lower_the_limits_but_never_raise_them() {
        let own = RunnerLimits { timeout: Duration::from_secs(60), output_cap: 1_000, ..RunnerLimits::default() };
        let api = api(own.clone());
        let same = api.limits(0, 0);
        assert_eq!((same.timeout, same.output_cap), (own.timeout, own.output_cap));
        let lower = api.limits(5_000, 10);
        assert_eq!((lower.timeout, lower.output_cap), (Duration::from_secs(5), 10));
        let higher = api.limits(600_000, 1_000_000);
        assert_eq!((higher.timeout, higher.output_cap), (own.timeout, own.output_cap));
    }

    #[test]
    fn workspaces_must_be_absolute() {
        assert!(matches!(workspace("workspace", ""), Err(turbo_proto::Error::Missing { .. })));
        let err = workspace("workspace", "proj/a").unwrap_err();
        assert!(err.to_string().contains("workspace") && err.to_string().contains("absolute"), "{err}");
        assert_eq!(workspace("workspace", "/srv/proj").unwrap(), "/srv/proj");
    }

    #[tokio::test]
    async fn bad_decisions_are_invalid_arguments_naming_the_field() {
        let api = api(RunnerLimits::default());
        let status = api.approve(Request::new(pb::ApprovalDecision::default())).await.unwrap_err();
        assert_eq!(status.code(), tonic::Code::InvalidArgument);
        assert!(status.message().contains("approval_id"), "{}", status.message());
        let unknown = pb::ApprovalDecision { approval_id: "apr_x".into(), decided_by: "ana".into(), note: None };
        assert!(!api.deny(Request::new(unknown)).await.unwrap().into_inner().applied);
        let bad_task = pb::ListApprovalsRequest { task_id: Some("t".into()) };
        let status = api.list_approvals(Request::new(bad_task)).await.unwrap_err();
        assert!(status.message().contains("task_id"), "{}", status.message());
    }

    #[tokio::test]
    async fn list_tools_reports_each_tools_risk_approval_and_calls_so_far() {
        let api = api(RunnerLimits::default());
        let ws = tempfile::tempdir().unwrap();
        let root = ws.path().to_str().unwrap();
        let call = |name: &str, arguments: serde_json::Value| ToolCall { id: "c".into(), name: name.into(), arguments };
        let scope = CallScope::default();
        api.runner
            .call(root, &call("fs_write", serde_json::json!({"path": "a.txt", "content": "a"})), &scope)
            .await
            .unwrap();
        api.runner.call(root, &call("fs_read", serde_json::json!({"path": "a.txt"})), &scope).await.unwrap();
        let missing = api.runner.call(root, &call("fs_read", serde_json::json!({"path": "nothing.txt"})), &scope).await;
        assert!(missing.is_err() || missing.is_ok_and(|out| !out.success), "reading a missing file fails");

        let names = ["fs_read", "fs_write", "shell_run", "cloud_services"].map(String::from).to_vec();
        let listed = api.list_tools(Request::new(pb::ListToolsRequest { names })).await.unwrap().into_inner().tools;
        let entry = |name: &str| listed.iter().find(|t| t.spec.as_ref().is_some_and(|s| s.name == name)).unwrap();
        // The spec's update_metrics: the first call sets the rate, later ones move it by a tenth.
        let read = entry("fs_read");
        assert_eq!(read.execution_count, 2);
        assert!((read.success_rate - 0.9).abs() < 1e-9, "one success, then one failure: {read:?}");
        assert_eq!((entry("fs_write").execution_count, entry("fs_write").success_rate), (1, 1.0));
        assert_eq!((entry("shell_run").execution_count, entry("shell_run").success_rate), (0, 0.0));
        use turbo_proto::common::v1::RiskLevel;
        assert_eq!(read.risk_level, RiskLevel::Safe as i32);
        assert_eq!(entry("shell_run").risk_level, RiskLevel::High as i32);
        // The default policy asks about critical calls only.
        let cloud = entry("cloud_services");
        assert_eq!((cloud.risk_level, cloud.requires_approval), (RiskLevel::Critical as i32, true));
        assert!(!read.requires_approval && !entry("shell_run").requires_approval);
    }

    #[tokio::test]
    async fn an_unknown_tool_name_is_invalid_argument_listing_the_tools() {
        let status = api(RunnerLimits::default())
            .list_tools(Request::new(pb::ListToolsRequest { names: vec!["fs_nuke".into()] }))
            .await
            .unwrap_err();
        assert_eq!(status.code(), tonic::Code::InvalidArgument);
        assert!(status.message().contains("fs_read"), "{}", status.message());
    }
}
