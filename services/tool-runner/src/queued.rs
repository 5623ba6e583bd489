//! [`QueuedToolRunner`]: the [`ToolService`] of the tool-runners behind the NATS job queue
//! (`queue.rs`). Each request is a job routed to the runner holding its workspace; it behaves
//! as [`crate::RemoteToolRunner`] does (the same errors for the same mistakes, the same
//! deadlines), so callers cannot tell the transports apart.

use std::time::Duration;

use async_trait::async_trait;
use prost::Message as _;
use tokio::sync::OnceCell;
use tokio::time::Instant;
use tokio_stream::StreamExt;
use turbo_bus::async_nats::{self, HeaderMap};
use turbo_bus::{headers, subjects};
use turbo_core::ids::TaskId;
use turbo_core::tool::{ToolCall, ToolSpec};
use turbo_proto::tools::v1 as pb;
use uuid::Uuid;

use crate::approval::CallScope;
use crate::baseline::TaskDiff;
use crate::error::{Error, Result};
use crate::queue::{JobQueue, Rpc, header, reply_status, unix_ms_in, workspace_key};
use crate::remote::{absolute, call_request, follow_call, specs_from_proto};
use crate::{RunnerLimits, ToolOutput, ToolService};

/// Deadline of ListTools, which does no real work (a queued job may wait for a free runner).
const QUICK_TIMEOUT: Duration = Duration::from_secs(15);
/// Deadline of BeginTask and TaskDiff, which read the whole workspace.
const SNAPSHOT_TIMEOUT: Duration = Duration::from_secs(120);
/// Added to a call's own timeout for its deadline, as over gRPC.
const CALL_GRACE: Duration = Duration::from_secs(15);

/// The tool-runners behind the job queue on the NATS server at a URL; cheap to share.
pub struct QueuedToolRunner {
    nats_url: String,
    queue: OnceCell<JobQueue>,
    limits: RunnerLimits,
}

impl QueuedToolRunner {
    /// The runners on the NATS server at `nats_url`. Connects on first use (and again after a
    /// failure to), so this succeeds while NATS is still starting. Each call asks for `limits`.
    pub fn new(nats_url: &str, limits: RunnerLimits) -> Self {
        Self { nats_url: nats_url.to_string(), queue: OnceCell::new(), limits }
    }

    /// The runners behind an open queue.
    pub fn with_queue(queue: JobQueue, limits: RunnerLimits) -> Self {
        Self { nats_url: String::new(), queue: OnceCell::new_with(Some(queue)), limits }
    }

    async fn queue(&self) -> Result<&JobQueue> {
        self.queue
            .get_or_try_init(|| async {
                let client =
                    turbo_bus::connect(&self.nats_url).await.map_err(|e| Error::Queue { reason: e.to_string() })?;
                JobQueue::open(client).await
            })
            .await
    }

    /// Queues `request` as an `rpc` job for the runner holding `workspace` (any runner when
    /// None) that must start within `start_within`, and returns its replies.
    async fn send(
        &self,
        rpc: Rpc,
        workspace: Option<&str>,
        request: &impl prost::Message,
        start_within: Duration,
    ) -> Result<(SentJob, async_nats::Subscriber)> {
        let queue = self.queue().await?;
        let key = workspace.map(workspace_key);
        let subject = queue.route(key.as_deref()).await?;
        let client = queue.client().clone();
        let id = Uuid::new_v4().simple().to_string();
        let reply = client.new_inbox();
        let replies = client
            .subscribe(reply.clone())
            .await
            .map_err(|e| Error::Queue { reason: format!("cannot subscribe: {e}") })?;
        let mut hdrs = HeaderMap::new();
        hdrs.insert(headers::MSG_ID, id.as_str());
        hdrs.insert(header::JOB_ID, id.as_str());
        hdrs.insert(header::RPC, rpc.as_str());
        hdrs.insert(header::REPLY, reply.as_str());
        hdrs.insert(header::START_BY_MS, unix_ms_in(start_within).to_string().as_str());
        if let Some(key) = &key {
            hdrs.insert(header::WORKSPACE_KEY, key.as_str());
        }
        headers::inject_trace(&mut hdrs);
        let publish = async_nats::jetstream::message::PublishMessage::build()
            .payload(request.encode_to_vec().into())
            .headers(hdrs);
        let queued = match queue.jetstream().send_publish(subject.clone(), publish).await {
            Ok(ack) => ack.await.map(|_| ()).map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        queued.map_err(|reason| Error::Queue {
            reason: format!("cannot queue a {} job on {subject}: {reason}", rpc.as_str()),
        })?;
        tracing::debug!(%subject, job_id = %id, rpc = rpc.as_str(), "tool job queued");
        Ok((SentJob { id, rpc, subject, client, done: false }, replies))
    }

    /// One answer of a unary job, decoded, within `deadline`.
    async fn unary<T: prost::Message + Default>(
        &self,
        rpc: Rpc,
        workspace: Option<&str>,
        request: &impl prost::Message,
        deadline: Duration,
        task_id: Option<TaskId>,
    ) -> Result<T> {
        let (mut job, mut replies) = self.send(rpc, workspace, request, deadline).await?;
        let answer = match tokio::time::timeout(deadline, replies.next()).await {
            Ok(Some(message)) => message,
            Ok(None) => return Err(job.lost()),
            Err(_) => return Err(job.late(deadline)),
        };
        job.done = true;
        job.decode(&answer, task_id)
    }
}

/// A queued job. Dropped before its last reply (the caller stopped waiting), it tells the
/// runner to stop the job.
struct SentJob {
    id: String,
    rpc: Rpc,
    subject: String,
    client: async_nats::Client,
    done: bool,
}

impl SentJob {
    /// Who a message names as the runner: the queue's subject the job went to.
    fn runner(&self) -> String {
        format!("NATS {}", self.subject)
    }

    fn late(&self, after: Duration) -> Error {
        Error::Deadline { url: self.runner(), rpc: self.rpc.as_str(), after_s: after.as_secs() }
    }

    fn lost(&self) -> Error {
        Error::Queue { reason: format!("the reply subscription of a {} job closed", self.rpc.as_str()) }
    }

    /// A reply's message, or its error status mapped as a gRPC client maps it.
    fn decode<T: prost::Message + Default>(&self, reply: &async_nats::Message, task_id: Option<TaskId>) -> Result<T> {
        if let Some(status) = reply_status(reply.headers.as_ref()) {
            return Err(Error::from_status(status, &self.runner(), self.rpc.as_str(), task_id));
        }
        T::decode(reply.payload.clone()).map_err(|e| Error::Remote {
            url: self.runner(),
            rpc: self.rpc.as_str(),
            code: tonic::Code::Internal,
            message: format!("an undecodable reply: {e}"),
        })
    }
}

impl Drop for SentJob {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        let client = self.client.clone();
        let subject = subjects::tool_cancel(&self.id);
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                if let Err(error) = client.publish(subject, bytes::Bytes::new()).await {
                    tracing::debug!(%error, "cannot cancel a tool job the caller left");
                }
            });
        }
    }
}

#[async_trait]
impl ToolService for QueuedToolRunner {
    #[tracing::instrument(name = "queued_specs", skip_all)]
    async fn specs(&self, names: Option<&[&str]>) -> Result<Vec<ToolSpec>> {
        let names = match names {
            // The runner reads no names as all of them; none asked for is none.
            Some([]) => return Ok(Vec::new()),
            Some(names) => names.iter().map(|n| n.to_string()).collect(),
            None => Vec::new(),
        };
        let request = pb::ListToolsRequest { names };
        specs_from_proto(self.unary(Rpc::ListTools, None, &request, QUICK_TIMEOUT, None).await?)
    }

    #[tracing::instrument(name = "queued_call", skip_all, fields(tool = %call.name))]
    async fn call(&self, workspace: &str, call: &ToolCall, scope: &CallScope) -> Result<ToolOutput> {
        let request = call_request(workspace, call, scope, &self.limits);
        let run_for = self.limits.timeout.saturating_add(CALL_GRACE);
        let deadline = Instant::now() + run_for;
        let (mut job, replies) = self.send(Rpc::CallTool, Some(&request.workspace), &request, run_for).await?;
        let output = {
            let job = &job;
            let chunks = replies.map(|reply| job.decode::<pb::ToolCallChunk>(&reply, scope.task_id));
            follow_call(chunks, deadline, run_for, scope, || job.late(run_for), || job.lost()).await
        };
        // Past its deadline the job is stopped; otherwise the runner has finished it.
        job.done = !matches!(output, Err(Error::Deadline { .. }));
        output
    }

    #[tracing::instrument(name = "queued_begin_task", skip_all, fields(%task_id))]
    async fn begin_task(&self, task_id: TaskId, workspace: &str) -> Result<()> {
        let workspace = absolute(workspace);
        let request = pb::BeginTaskRequest { task_id: task_id.to_string(), workspace: workspace.clone() };
        let _: pb::BeginTaskResponse =
            self.unary(Rpc::BeginTask, Some(&workspace), &request, SNAPSHOT_TIMEOUT, Some(task_id)).await?;
        Ok(())
    }

    #[tracing::instrument(name = "queued_task_diff", skip_all, fields(%task_id))]
    async fn task_diff(&self, task_id: TaskId, workspace: &str) -> Result<TaskDiff> {
        let workspace = absolute(workspace);
        let request = pb::TaskDiffRequest { task_id: task_id.to_string(), workspace: workspace.clone() };
        let answer: pb::TaskDiffResponse =
            self.unary(Rpc::TaskDiff, Some(&workspace), &request, SNAPSHOT_TIMEOUT, Some(task_id)).await?;
        Ok(answer.into())
    }

    #[tracing::instrument(name = "queued_end_task", skip_all, fields(%task_id))]
    async fn end_task(&self, task_id: TaskId) {
        let ended = async {
            let queue = self.queue().await?;
            let request = pb::EndTaskRequest { task_id: task_id.to_string() };
            queue
                .client()
                .publish(subjects::TOOL_TASKS_END, request.encode_to_vec().into())
                .await
                .map_err(|e| Error::Queue { reason: e.to_string() })
        };
        if let Err(error) = ended.await {
            // As over gRPC, ending is best effort: the baseline stays until the task is ended again.
            tracing::warn!(%task_id, %error, "cannot end the task on the tool-runners; its baseline is kept");
        }
    }
}
