//! `turbo.tools.v1.ToolService` over a [`LocalToolRunner`]: what [`crate::run`] serves and
//! [`crate::RemoteToolRunner`] calls.
//!
//! - A call the model made wrongly is not an error status: CallTool ends with an unsuccessful
//!   result marked `model_correctable`, its content the message the local runner gives the
//!   model. Other errors map to statuses once, in `error.rs` (`Error::code`).
//! - CallTool sends one chunk, the result, once the call has finished: the tools collect
//!   their output before returning it, so there is nothing to stream yet. Streaming stdout and
//!   stderr as they come is for later; clients must already skip those chunks.
//! - Approve, Deny and ListApprovals answer UNIMPLEMENTED: approvals come with the sandbox
//!   policy, which decides which calls need them.
//!
//! Handlers do their work in methods returning [`crate::Result`], each in a span that is a
//! child of the request's (itself continuing the caller's trace, see `turbo_proto::trace`).

use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_stream::Stream;
use tonic::{Request, Response, Status};
use turbo_core::ValidationErrors;
use turbo_core::ids::TaskId;
use turbo_core::tool::ToolCall;
use turbo_proto::convert::{ProtoEnum, id_from_proto, json_value_from_proto};
use turbo_proto::server::Routes;
use turbo_proto::tools::v1 as pb;
use turbo_proto::tools::v1::tool_service_server::{ToolService as ToolServiceApi, ToolServiceServer};

use crate::error::Result;
use crate::{LocalToolRunner, RunnerLimits, ToolService, wire};

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
        Routes::new(ToolServiceServer::new(self).max_decoding_message_size(MAX_REQUEST_BYTES))
    }

    #[tracing::instrument(name = "list_tools", skip_all, fields(names = ?names))]
    async fn list(&self, names: Vec<String>) -> Result<pb::ListToolsResponse> {
        let specs = if names.is_empty() {
            self.runner.specs(None).await?
        } else {
            let names: Vec<&str> = names.iter().map(String::as_str).collect();
            self.runner.specs(Some(&names)).await?
        };
        let tools = specs
            .into_iter()
            .map(|spec| {
                let risk = self.runner.toolbox.get(&spec.name).map(|t| t.risk().to_proto()).unwrap_or_default();
                // Which calls need approval is the sandbox policy's to say; until then none do.
                pb::ToolEntry { spec: Some(spec.into()), risk_level: risk, requires_approval: false }
            })
            .collect();
        Ok(pb::ListToolsResponse { tools })
    }

    #[tracing::instrument(name = "call_tool", skip_all, fields(tool = %req.tool, task_id = %req.task_id))]
    async fn call(&self, req: pb::ToolCallRequest) -> Result<pb::ToolResult> {
        if !req.task_id.is_empty() {
            id_from_proto::<TaskId>("task_id", &req.task_id)?;
        }
        let workspace = workspace("workspace", &req.workspace)?;
        let call = ToolCall {
            id: String::new(),
            arguments: json_value_from_proto("arguments_json", &req.arguments_json)?,
            name: req.tool,
        };
        let limits = self.limits(req.timeout_ms, req.output_cap_bytes);
        let started = Instant::now();
        match self.runner.call_with(workspace, &call, &limits).await {
            Ok(out) => Ok(wire::output_to_proto(out)),
            Err(e) if e.is_model_correctable() => {
                tracing::debug!(error = %e, "the model's call was refused; it gets the message");
                Ok(wire::correctable_to_proto(&e, started.elapsed()))
            }
            Err(e) => Err(e),
        }
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
    async fn begin(&self, req: pb::BeginTaskRequest) -> Result<pb::BeginTaskResponse> {
        let task_id = id_from_proto("task_id", &req.task_id)?;
        self.runner.begin_task(task_id, workspace("workspace", &req.workspace)?).await?;
        Ok(pb::BeginTaskResponse {})
    }

    #[tracing::instrument(name = "task_diff", skip_all, fields(task_id = %req.task_id))]
    async fn diff(&self, req: pb::TaskDiffRequest) -> Result<pb::TaskDiffResponse> {
        let task_id = id_from_proto("task_id", &req.task_id)?;
        Ok(self.runner.task_diff(task_id, workspace("workspace", &req.workspace)?).await?.into())
    }

    #[tracing::instrument(name = "end_task", skip_all, fields(task_id = %req.task_id))]
    async fn end(&self, req: pb::EndTaskRequest) -> Result<pb::EndTaskResponse> {
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

/// Approvals have no policy to come from yet.
fn approvals_unimplemented() -> Status {
    Status::unimplemented(
        "approvals are not available yet: they come with the tool-runner's sandbox policy; until then no call waits for one",
    )
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
        // The call runs here, inside the request's span, before the one chunk is sent.
        let result = self.call(request.into_inner()).await?;
        let chunk = pb::ToolCallChunk { chunk: Some(pb::tool_call_chunk::Chunk::Result(result)) };
        Ok(Response::new(Box::pin(tokio_stream::once(Ok(chunk)))))
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
        _request: Request<pb::ApprovalDecision>,
    ) -> std::result::Result<Response<pb::ApprovalResponse>, Status> {
        Err(approvals_unimplemented())
    }

    async fn deny(
        &self,
        _request: Request<pb::ApprovalDecision>,
    ) -> std::result::Result<Response<pb::ApprovalResponse>, Status> {
        Err(approvals_unimplemented())
    }

    async fn list_approvals(
        &self,
        _request: Request<pb::ListApprovalsRequest>,
    ) -> std::result::Result<Response<pb::ListApprovalsResponse>, Status> {
        Err(approvals_unimplemented())
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
    async fn approvals_are_unimplemented_and_say_why() {
        let api = api(RunnerLimits::default());
        let status = api.list_approvals(Request::new(pb::ListApprovalsRequest::default())).await.unwrap_err();
        assert_eq!(status.code(), tonic::Code::Unimplemented);
        assert!(status.message().contains("sandbox policy"), "{}", status.message());
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
