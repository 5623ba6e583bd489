//! [`RemoteToolRunner`]: the [`ToolService`] of a tool-runner service, over gRPC
//! (`turbo.tools.v1.ToolService`, served by `grpc.rs`).
//!
//! It behaves as the local runner does: a call the model made wrongly comes back as an error
//! the model can correct with the local message, a task without a baseline as
//! [`Error::NoBaseline`]. The channel connects on first use and again after a failure, so the
//! tool-runner may start after its clients. Each request carries the caller's trace context
//! and a deadline; a runner that cannot be reached or does not answer in time is an error
//! naming its URL.

use std::time::Duration;

use async_trait::async_trait;
use tokio::time::Instant;
use tokio_stream::{Stream, StreamExt};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint};
use turbo_core::ids::TaskId;
use turbo_core::tool::{ToolCall, ToolSpec};
use turbo_proto::convert::json_value_to_proto;
use turbo_proto::tools::v1 as pb;
use turbo_proto::tools::v1::tool_service_client::ToolServiceClient;
use turbo_proto::trace::TraceInterceptor;

use crate::approval::{ApprovalUpdate, CallScope, PendingApproval};
use crate::baseline::TaskDiff;
use crate::error::{Error, Result};
use crate::{RunnerLimits, ToolOutput, ToolService, wire};

/// Longest a connection attempt may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Deadline of ListTools and EndTask, which do no real work.
const QUICK_TIMEOUT: Duration = Duration::from_secs(15);
/// Deadline of BeginTask and TaskDiff, which read the whole workspace.
const SNAPSHOT_TIMEOUT: Duration = Duration::from_secs(120);
/// Added to a call's own timeout for its deadline: the runner stops the tool at the timeout,
/// then still has to kill its processes and answer.
const CALL_GRACE: Duration = Duration::from_secs(15);
/// Largest answer accepted: a task diff holds every changed text file (the baseline keeps at
/// most 64 MiB of them), before and after.
const MAX_RESPONSE_BYTES: usize = 256 * 1024 * 1024;

type Client = ToolServiceClient<InterceptedService<Channel, TraceInterceptor>>;

/// A tool-runner service reached over gRPC; cheap to clone.
#[derive(Clone)]
pub struct RemoteToolRunner {
    url: String,
    client: Client,
    limits: RunnerLimits,
}

impl RemoteToolRunner {
    /// The tool-runner at `url` (`http://HOST:PORT`). Nothing is sent until the first call, so
    /// this succeeds while the runner is still starting. Each call asks for `limits` (the
    /// runner lowers them to its own if they are higher) and waits at most the call's timeout
    /// plus a grace period. Needs a Tokio runtime.
    pub fn connect(url: &str, limits: RunnerLimits) -> Result<Self> {
        let bad = |reason: String| Error::BadUrl { url: url.to_string(), reason };
        if !url.starts_with("http://") {
            return Err(bad("it must start with http:// (TLS is not supported yet)".into()));
        }
        let endpoint = Endpoint::from_shared(url.to_string()).map_err(|e| bad(e.to_string()))?;
        let channel = endpoint.connect_timeout(CONNECT_TIMEOUT).tcp_nodelay(true).connect_lazy();
        let client = ToolServiceClient::with_interceptor(channel, TraceInterceptor)
            .max_decoding_message_size(MAX_RESPONSE_BYTES)
            .max_encoding_message_size(MAX_RESPONSE_BYTES);
        Ok(Self { url: url.to_string(), client, limits })
    }

    /// The URL this client sends to.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The calls waiting for approval on the runner (of one task when given), oldest first.
    pub async fn list_approvals(&self, task_id: Option<TaskId>) -> Result<Vec<PendingApproval>> {
        let mut client = self.client.clone();
        let message = pb::ListApprovalsRequest { task_id: task_id.map(|t| t.to_string()) };
        let answer = self
            .within(
                "ListApprovals",
                QUICK_TIMEOUT,
                task_id,
                client.list_approvals(Self::request(message, QUICK_TIMEOUT)),
            )
            .await?;
        answer.into_inner().approvals.into_iter().map(wire::pending_from_proto).collect()
    }

    /// Approves or denies a waiting call; false when it no longer waits.
    pub async fn decide(
        &self,
        approval_id: &str,
        approve: bool,
        decided_by: &str,
        note: Option<String>,
    ) -> Result<bool> {
        let mut client = self.client.clone();
        let message =
            pb::ApprovalDecision { approval_id: approval_id.to_string(), decided_by: decided_by.to_string(), note };
        let request = Self::request(message, QUICK_TIMEOUT);
        let answer = if approve {
            self.within("Approve", QUICK_TIMEOUT, None, client.approve(request)).await?
        } else {
            self.within("Deny", QUICK_TIMEOUT, None, client.deny(request)).await?
        };
        Ok(answer.into_inner().applied)
    }

    /// `message` as a request with `deadline`, which the runner enforces too (grpc-timeout).
    fn request<T>(message: T, deadline: Duration) -> tonic::Request<T> {
        let mut request = tonic::Request::new(message);
        request.set_timeout(deadline);
        request
    }

    /// Runs `rpc`'s future with `deadline` also enforced here, so a runner that stopped
    /// answering (a partition, a hung process) cannot hold the caller forever.
    async fn within<T>(
        &self,
        rpc: &'static str,
        deadline: Duration,
        task_id: Option<TaskId>,
        fut: impl Future<Output = std::result::Result<T, tonic::Status>>,
    ) -> Result<T> {
        match tokio::time::timeout(deadline, fut).await {
            Ok(Ok(answer)) => Ok(answer),
            Ok(Err(status)) if status.code() == tonic::Code::DeadlineExceeded => {
                Err(Error::Deadline { url: self.url.clone(), rpc, after_s: deadline.as_secs() })
            }
            Ok(Err(status)) => Err(Error::from_status(status, &self.url, rpc, task_id)),
            Err(_) => Err(Error::Deadline { url: self.url.clone(), rpc, after_s: deadline.as_secs() }),
        }
    }
}

/// The specs of a ListTools answer.
pub(crate) fn specs_from_proto(answer: pb::ListToolsResponse) -> Result<Vec<ToolSpec>> {
    answer
        .tools
        .into_iter()
        .enumerate()
        .map(|(i, entry)| {
            let field = format!("tools[{i}].spec");
            let spec = turbo_proto::convert::required(&field, entry.spec)?;
            ToolSpec::try_from(spec).map_err(|e| Error::Request(e.under(&field)))
        })
        .collect()
}

/// The request of `call` in `workspace` for `scope`, asking for `limits`.
pub(crate) fn call_request(
    workspace: &str,
    call: &ToolCall,
    scope: &CallScope,
    limits: &RunnerLimits,
) -> pb::ToolCallRequest {
    pb::ToolCallRequest {
        task_id: scope.task_id.map(|t| t.to_string()).unwrap_or_default(),
        session_id: scope.session_id.map(|s| s.to_string()).unwrap_or_default(),
        workspace: absolute(workspace),
        tool: call.name.clone(),
        arguments_json: json_value_to_proto(&call.arguments),
        timeout_ms: u64::try_from(limits.timeout.as_millis()).unwrap_or(u64::MAX),
        output_cap_bytes: u64::try_from(limits.output_cap).unwrap_or(u64::MAX),
        project_id: scope.project_id.map(|p| p.to_string()).unwrap_or_default(),
        phase: scope.phase.clone().unwrap_or_default(),
        step: scope.step.unwrap_or_default(),
    }
}

/// Follows a call's chunks to its result, by `deadline`: tells `scope` of approvals (moving the
/// deadline past an approval's expiry while one waits, and `run_for` past its decision) and
/// skips output pieces: the result holds the output the model reads, capped, as the local
/// runner returns it. A stream that ends without a result is `ended()`'s error.
pub(crate) async fn follow_call(
    chunks: impl Stream<Item = Result<pb::ToolCallChunk>>,
    mut deadline: Instant,
    run_for: Duration,
    scope: &CallScope,
    deadline_error: impl Fn() -> Error,
    ended: impl Fn() -> Error,
) -> Result<ToolOutput> {
    use pb::tool_call_chunk::Chunk;
    tokio::pin!(chunks);
    loop {
        let chunk = match tokio::time::timeout_at(deadline, chunks.next()).await {
            Ok(Some(chunk)) => chunk?,
            Ok(None) => return Err(ended()),
            Err(_) => return Err(deadline_error()),
        };
        match chunk.chunk {
            Some(Chunk::Result(result)) => return wire::output_from_proto(result),
            Some(Chunk::ApprovalRequired(request)) => {
                let request = wire::pending_from_proto(request)?;
                let waits = (request.expires_at - chrono::Utc::now()).to_std().unwrap_or_default();
                deadline = Instant::now() + waits + run_for;
                scope.tell(ApprovalUpdate::Requested(request));
            }
            Some(Chunk::ApprovalDecided(outcome)) => {
                deadline = Instant::now() + run_for;
                scope.tell(ApprovalUpdate::Decided(wire::outcome_from_proto(outcome)));
            }
            Some(Chunk::Stdout(_) | Chunk::Stderr(_)) | None => {}
        }
    }
}

/// The workspace as the runner needs it: absolute, as the local runner would resolve it.
pub(crate) fn absolute(workspace: &str) -> String {
    std::path::absolute(workspace).map(|p| p.to_string_lossy().into_owned()).unwrap_or_else(|_| workspace.to_string())
}

#[async_trait]
impl ToolService for RemoteToolRunner {
    #[tracing::instrument(name = "remote_specs", skip_all)]
    async fn specs(&self, names: Option<&[&str]>) -> Result<Vec<ToolSpec>> {
        let names = match names {
            // The runner reads no names as all of them; none asked for is none.
            Some([]) => return Ok(Vec::new()),
            Some(names) => names.iter().map(|n| n.to_string()).collect(),
            None => Vec::new(),
        };
        let mut client = self.client.clone();
        let request = Self::request(pb::ListToolsRequest { names }, QUICK_TIMEOUT);
        let answer = self.within("ListTools", QUICK_TIMEOUT, None, client.list_tools(request)).await?;
        specs_from_proto(answer.into_inner())
    }

    #[tracing::instrument(name = "remote_call", skip_all, fields(tool = %call.name))]
    async fn call(&self, workspace: &str, call: &ToolCall, scope: &CallScope) -> Result<ToolOutput> {
        let message = call_request(workspace, call, scope, &self.limits);
        // The call's own deadline, moved past the approval's expiry while one waits. No
        // grpc-timeout goes with the request: the runner bounds the call itself, and a call
        // waiting for a person has no deadline the client could know in advance.
        let run_for = self.limits.timeout.saturating_add(CALL_GRACE);
        let deadline = Instant::now() + run_for;
        let deadline_error = || Error::Deadline { url: self.url.clone(), rpc: "CallTool", after_s: run_for.as_secs() };
        let status = |status: tonic::Status| Error::from_status(status, &self.url, "CallTool", scope.task_id);
        let mut client = self.client.clone();
        let chunks = match tokio::time::timeout_at(deadline, client.call_tool(tonic::Request::new(message))).await {
            Ok(answer) => answer.map_err(status)?.into_inner(),
            Err(_) => return Err(deadline_error()),
        };
        let ended = || Error::Remote {
            url: self.url.clone(),
            rpc: "CallTool",
            code: tonic::Code::Internal,
            message: "the call's stream ended without a result".into(),
        };
        follow_call(chunks.map(|c| c.map_err(status)), deadline, run_for, scope, deadline_error, ended).await
    }

    #[tracing::instrument(name = "remote_begin_task", skip_all, fields(%task_id))]
    async fn begin_task(&self, task_id: TaskId, workspace: &str) -> Result<()> {
        let message = pb::BeginTaskRequest { task_id: task_id.to_string(), workspace: absolute(workspace) };
        let mut client = self.client.clone();
        let request = Self::request(message, SNAPSHOT_TIMEOUT);
        self.within("BeginTask", SNAPSHOT_TIMEOUT, Some(task_id), client.begin_task(request)).await?;
        Ok(())
    }

    #[tracing::instrument(name = "remote_task_diff", skip_all, fields(%task_id))]
    async fn task_diff(&self, task_id: TaskId, workspace: &str) -> Result<TaskDiff> {
        let message = pb::TaskDiffRequest { task_id: task_id.to_string(), workspace: absolute(workspace) };
        let mut client = self.client.clone();
        let request = Self::request(message, SNAPSHOT_TIMEOUT);
        let answer = self.within("TaskDiff", SNAPSHOT_TIMEOUT, Some(task_id), client.task_diff(request)).await?;
        Ok(answer.into_inner().into())
    }

    #[tracing::instrument(name = "remote_end_task", skip_all, fields(%task_id))]
    async fn end_task(&self, task_id: TaskId) {
        let mut client = self.client.clone();
        let request = Self::request(pb::EndTaskRequest { task_id: task_id.to_string() }, QUICK_TIMEOUT);
        if let Err(error) = self.within("EndTask", QUICK_TIMEOUT, Some(task_id), client.end_task(request)).await {
            // As locally, ending is best effort: the baseline stays until the task is ended again.
            tracing::warn!(%task_id, %error, "cannot end the task on the tool-runner; its baseline is kept");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn urls_must_be_plain_http() {
        for url in ["runner:50054", "https://runner:50054", "http://run ner:1"] {
            let err = RemoteToolRunner::connect(url, RunnerLimits::default()).err().expect("refused");
            assert!(err.to_string().contains(url) && err.to_string().contains("cluster.tool_runner_url"), "{err}");
        }
        assert_eq!(
            RemoteToolRunner::connect("http://runner:50054", RunnerLimits::default()).unwrap().url(),
            "http://runner:50054"
        );
    }

    #[test]
    fn relative_workspaces_are_made_absolute_here() {
        assert!(std::path::Path::new(&absolute("proj")).is_absolute());
        assert_eq!(absolute("/srv/proj"), "/srv/proj");
    }
}
