//! The tool-runners' NATS job queue: [`JobQueue`] (the stream, the routing buckets) and
//! [`serve_jobs`], a runner's side. The client's side is [`crate::QueuedToolRunner`].
//!
//! A job is one `turbo.tools.v1.ToolService` request, protobuf-encoded as over gRPC, stored in
//! the work-queue stream `TURBO_TOOL_JOBS` with headers saying which RPC it is, where to reply
//! and by when it must start. Routing keeps every job of a workspace on one runner:
//!
//! - A workspace's routing key is a hash of its absolute path ([`workspace_key`]). A runner
//!   that takes a job for a workspace claims the key in the KV bucket `turbo_tool_workspaces`;
//!   live runners refresh their key in `turbo_tool_runners` every few seconds.
//! - A client sends a job to `turbo.tools.jobs.runner.<id>` when a live runner holds the
//!   workspace, else to `turbo.tools.jobs.any`, which every runner pulls from one shared
//!   consumer. The runner that takes an `any` job claims the workspace (atomically, by
//!   revision), or forwards the job to the live runner that got there first; a workspace whose
//!   holder stopped is taken over.
//! - A runner acknowledges a job when it takes it, so a job runs at most once: a runner that
//!   dies mid-call loses that call (its caller hits the deadline), never runs it twice. A job
//!   still queued when its start-by time passes is dropped: nobody waits for it any more.
//! - Replies are core NATS messages on the job's reply subject: for CallTool the stream of
//!   `ToolCallChunk`s ending with the result, for the others one response. An error is a reply
//!   with the gRPC status in headers (`grpc-status`, `grpc-message`, `grpc-status-details-bin`),
//!   so the client maps it exactly as it maps a gRPC status.
//! - `turbo.tools.cancel.<job_id>` stops a job (a waiting approval is withdrawn), and
//!   `turbo.tools.tasks.end` ends a task on every runner.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures::StreamExt;
use prost::Message as _;
use sha2::{Digest, Sha256};
use tokio::sync::{Semaphore, mpsc};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;
use turbo_bus::async_nats::jetstream::consumer::{AckPolicy, DeliverPolicy, pull};
use turbo_bus::async_nats::jetstream::kv::{self, Operation};
use turbo_bus::async_nats::jetstream::stream::{self, RetentionPolicy};
use turbo_bus::async_nats::jetstream::{self, Context};
use turbo_bus::async_nats::{self, HeaderMap};
use turbo_bus::{headers, subjects};
use turbo_proto::tools::v1 as pb;

use crate::ToolGrpc;
use crate::error::{Error, Result};

/// The headers of a job, for clients other than [`crate::QueuedToolRunner`].
pub mod header {
    /// Which `ToolService` RPC the payload is a request of ([`super::Rpc`]).
    pub const RPC: &str = "Turbo-Rpc";
    /// Where the runner sends the replies.
    pub const REPLY: &str = "Turbo-Reply";
    /// Unix milliseconds after which the job is not started.
    pub const START_BY_MS: &str = "Turbo-Start-By-Ms";
    /// The workspace's routing key, when the job has a workspace.
    pub const WORKSPACE_KEY: &str = "Turbo-Workspace-Key";
    /// The job's id (also its `Nats-Msg-Id`, so a repeated publish is stored once).
    pub const JOB_ID: &str = "Turbo-Job-Id";
}

/// How long a job id is remembered to drop a repeated publish.
const DUPLICATE_WINDOW: Duration = Duration::from_secs(120);
/// How long a queued job is kept at most (its start-by time is usually much sooner).
const JOB_MAX_AGE: Duration = Duration::from_secs(3600);
/// How often a runner says it is alive, and how long after its last word it counts as gone.
const HEARTBEAT: Duration = Duration::from_secs(3);
const RUNNER_TTL: Duration = Duration::from_secs(10);
/// Jobs one runner carries out at once; the rest wait in the queue.
const JOBS_AT_ONCE: usize = 32;
/// Replies buffered per call before the call waits.
const CHUNK_BUFFER: usize = 16;
/// How long a stopping runner waits for its jobs in flight.
const DRAIN_WAIT: Duration = Duration::from_secs(10);
/// Attempts to claim a workspace whose claim keeps changing underneath.
const CLAIM_ATTEMPTS: usize = 5;

/// The `ToolService` RPCs a job may carry. EndTask is a broadcast, approvals have their own
/// subjects (`crate::nats`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Rpc {
    ListTools,
    CallTool,
    BeginTask,
    TaskDiff,
}

impl Rpc {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Rpc::ListTools => "ListTools",
            Rpc::CallTool => "CallTool",
            Rpc::BeginTask => "BeginTask",
            Rpc::TaskDiff => "TaskDiff",
        }
    }

    fn parse(name: &str) -> Option<Rpc> {
        [Rpc::ListTools, Rpc::CallTool, Rpc::BeginTask, Rpc::TaskDiff].into_iter().find(|r| r.as_str() == name)
    }
}

/// The routing key of the workspace at `absolute_path`: the first 32 hex digits of its SHA-256,
/// a valid KV key whatever the path holds.
pub fn workspace_key(absolute_path: &str) -> String {
    let digest = Sha256::digest(absolute_path.as_bytes());
    digest.iter().take(16).map(|b| format!("{b:02x}")).collect()
}

/// Unix milliseconds `after` from now.
pub(crate) fn unix_ms_in(after: Duration) -> u64 {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
    u64::try_from((now + after).as_millis()).unwrap_or(u64::MAX)
}

/// The job stream and the routing buckets, on one NATS connection; cheap to clone.
#[derive(Clone)]
pub struct JobQueue {
    client: async_nats::Client,
    js: Context,
    workspaces: kv::Store,
    runners: kv::Store,
}

impl JobQueue {
    /// Creates the stream and the buckets where missing (idempotent: every runner and client
    /// may do it at start) and opens them.
    pub async fn open(client: async_nats::Client) -> Result<Self> {
        let js = jetstream::new(client.clone());
        let config = stream::Config {
            name: subjects::TOOL_JOBS_STREAM.into(),
            description: Some("turbo-coder tool-runner jobs, one subject per runner and one shared".into()),
            subjects: vec![subjects::TOOL_JOBS_SUBJECTS.into()],
            retention: RetentionPolicy::WorkQueue,
            max_age: JOB_MAX_AGE,
            duplicate_window: DUPLICATE_WINDOW,
            ..Default::default()
        };
        retried(&format!("the stream {}", subjects::TOOL_JOBS_STREAM), || {
            let (js, config) = (js.clone(), config.clone());
            async move { turbo_bus::ensure_stream(&js, config).await }
        })
        .await?;
        let workspaces =
            bucket(&js, subjects::TOOL_WORKSPACES_BUCKET, "which tool-runner holds each workspace", None).await?;
        let runners = bucket(&js, subjects::TOOL_RUNNERS_BUCKET, "live tool-runners", Some(RUNNER_TTL)).await?;
        Ok(Self { client, js, workspaces, runners })
    }

    pub(crate) fn client(&self) -> &async_nats::Client {
        &self.client
    }

    pub(crate) fn jetstream(&self) -> &Context {
        &self.js
    }

    /// The runner holding the workspace of `key`, if any, with the claim's revision.
    pub async fn holder(&self, key: &str) -> Result<Option<(String, u64)>> {
        let entry = self.workspaces.entry(key).await.map_err(|e| queue_error(format!("cannot read a claim: {e}")))?;
        Ok(entry
            .filter(|e| e.operation == Operation::Put)
            .map(|e| (String::from_utf8_lossy(&e.value).into_owned(), e.revision)))
    }

    /// Whether `runner` said it was alive within the last few seconds.
    pub async fn is_alive(&self, runner: &str) -> Result<bool> {
        let value = self
            .runners
            .get(subjects::token(runner))
            .await
            .map_err(|e| queue_error(format!("cannot read the live runners: {e}")))?;
        Ok(value.is_some())
    }

    /// The subject a job for the workspace of `key` goes to: its live holder's, else the
    /// shared one.
    pub async fn route(&self, key: Option<&str>) -> Result<String> {
        if let Some(key) = key
            && let Some((runner, _)) = self.holder(key).await?
            && self.is_alive(&runner).await?
        {
            return Ok(subjects::tool_jobs(&runner));
        }
        Ok(subjects::TOOL_JOBS_ANY.into())
    }

    /// Claims the workspace of `key` for `me`: None when it is `me`'s now, or the live runner
    /// that holds it. A claim whose holder is gone is taken over.
    pub async fn claim(&self, key: &str, me: &str) -> Result<Option<String>> {
        for _ in 0..CLAIM_ATTEMPTS {
            let taken = match self.holder(key).await? {
                Some((holder, _)) if holder == me => return Ok(None),
                Some((holder, revision)) => {
                    if self.is_alive(&holder).await? {
                        return Ok(Some(holder));
                    }
                    tracing::info!(key, from = %holder, "taking over the workspace of a runner that stopped");
                    self.workspaces.update(key, me.to_string().into(), revision).await.is_ok()
                }
                None => self.workspaces.create(key, me.to_string().into()).await.is_ok(),
            };
            if taken {
                return Ok(None);
            }
            // Another runner changed the claim between the read and the write: read it again.
        }
        Err(queue_error(format!("the claim of workspace {key} kept changing while it was taken")))
    }

    /// Says `me` is alive, for the next [`RUNNER_TTL`].
    async fn alive(&self, me: &str) -> Result<()> {
        self.runners
            .put(subjects::token(me), unix_ms_in(Duration::ZERO).to_string().into())
            .await
            .map(|_| ())
            .map_err(|e| queue_error(format!("cannot say the runner is alive: {e}")))
    }

    /// Says `me` stopped, so its workspaces are taken over at once rather than after the TTL.
    async fn gone(&self, me: &str) {
        if let Err(error) = self.runners.delete(subjects::token(me)).await {
            tracing::warn!(%error, "cannot tell the others this runner stopped; they notice in seconds");
        }
    }
}

/// Opens the key-value bucket `name`, creating its stream first where missing. The stream is
/// made here, shaped as `create_key_value` would make it, because that call first asks for the
/// account's info, whose reply from nats-server 2.9 the client cannot read.
async fn bucket(js: &Context, name: &str, description: &str, max_age: Option<Duration>) -> Result<kv::Store> {
    let config = stream::Config {
        name: format!("KV_{name}"),
        description: Some(description.into()),
        subjects: vec![format!("$KV.{name}.>")],
        max_messages_per_subject: 1,
        max_age: max_age.unwrap_or_default(),
        allow_rollup: true,
        deny_delete: true,
        allow_direct: true,
        discard: stream::DiscardPolicy::New,
        ..Default::default()
    };
    retried(&format!("the key-value bucket {name}"), || {
        let (js, config) = (js.clone(), config.clone());
        async move {
            turbo_bus::ensure_stream(&js, config).await.map_err(|e| e.to_string())?;
            js.get_key_value(name).await.map_err(|e| e.to_string())
        }
    })
    .await
}

/// Runs `create` until it succeeds, a few times: runners and clients that start together race
/// to create the same stream or bucket, and the losers' requests can fail while the winner's
/// is applied.
async fn retried<T, E: std::fmt::Display, F: Future<Output = std::result::Result<T, E>>>(
    what: &str,
    mut create: impl FnMut() -> F,
) -> Result<T> {
    let mut failure = String::new();
    for attempt in 0..5u32 {
        if attempt > 0 {
            tokio::time::sleep(Duration::from_millis(50 << attempt)).await;
        }
        match create().await {
            Ok(made) => return Ok(made),
            Err(e) => failure = e.to_string(),
        }
    }
    Err(queue_error(format!("cannot create {what}: {failure}")))
}

fn queue_error(reason: String) -> Error {
    Error::Queue { reason }
}

/// One job as the runner received it.
struct Job {
    id: String,
    rpc: Rpc,
    reply: String,
    payload: bytes::Bytes,
}

/// Serves the jobs of runner `runner_id` (its own subject, and the shared one) with `api`
/// until `shutdown`; then stops taking jobs, lets the ones in flight finish (for a while) and
/// says it is gone.
pub async fn serve_jobs(queue: JobQueue, runner_id: String, api: ToolGrpc, shutdown: CancellationToken) -> Result<()> {
    let stream = queue
        .js
        .get_stream(subjects::TOOL_JOBS_STREAM)
        .await
        .map_err(|e| queue_error(format!("cannot open the stream {}: {e}", subjects::TOOL_JOBS_STREAM)))?;
    let own = consumer(&stream, subjects::tool_runner_consumer(&runner_id), subjects::tool_jobs(&runner_id)).await?;
    let shared = consumer(&stream, subjects::TOOL_JOBS_ANY_CONSUMER.into(), subjects::TOOL_JOBS_ANY.into()).await?;
    let subscribe = |subject: &'static str| {
        let client = queue.client.clone();
        async move {
            client.subscribe(subject).await.map_err(|e| queue_error(format!("cannot subscribe to {subject}: {e}")))
        }
    };
    let mut cancels = subscribe(subjects::TOOL_CANCEL_ALL).await?;
    let mut ends = subscribe(subjects::TOOL_TASKS_END).await?;
    queue.alive(&runner_id).await?;
    tracing::info!(runner = %runner_id, subject = %subjects::tool_jobs(&runner_id), "tool-runner job queue serving");

    let server = Arc::new(JobServer {
        queue: queue.clone(),
        me: runner_id.clone(),
        api,
        running: Mutex::new(HashMap::new()),
        slots: Arc::new(Semaphore::new(JOBS_AT_ONCE)),
    });
    let mut pulls = JoinSet::new();
    for (consumer, shared) in [(own, false), (shared, true)] {
        pulls.spawn(server.clone().pull(consumer, shared, shutdown.clone()));
    }
    let mut heartbeat = tokio::time::interval(HEARTBEAT);
    heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let outcome = loop {
        tokio::select! {
            _ = shutdown.cancelled() => break Ok(()),
            _ = heartbeat.tick() => {
                if let Err(error) = queue.alive(&runner_id).await {
                    tracing::warn!(%error, "the heartbeat failed; the runner's workspaces may be taken over");
                }
            }
            Some(message) = cancels.next() => {
                let job_id = message.subject.as_str().rsplit('.').next().unwrap_or_default();
                if let Some(stop) = server.running.lock().unwrap_or_else(|p| p.into_inner()).get(job_id) {
                    tracing::debug!(job_id, "the caller stopped waiting: the job stops");
                    stop.cancel();
                }
            }
            Some(message) = ends.next() => match pb::EndTaskRequest::decode(message.payload) {
                Ok(request) => {
                    if let Err(error) = server.api.end(request).await {
                        tracing::debug!(%error, "an end of task that names no task");
                    }
                }
                Err(error) => tracing::debug!(%error, "an end of task that is not an EndTaskRequest"),
            },
            Some(pulled) = pulls.join_next() => break match pulled {
                Ok(result) => result,
                Err(error) => Err(queue_error(format!("a consumer's task failed: {error}"))),
            },
        }
    };
    shutdown.cancel();
    while pulls.join_next().await.is_some() {}
    // The jobs in flight hold slots: all of them free means all finished.
    let drained = tokio::time::timeout(DRAIN_WAIT, server.slots.acquire_many(JOBS_AT_ONCE as u32)).await;
    if drained.is_err() {
        tracing::warn!("stopping with tool jobs still running");
    }
    queue.gone(&runner_id).await;
    outcome
}

async fn consumer(stream: &stream::Stream, durable: String, filter: String) -> Result<pull::Stream> {
    let config = pull::Config {
        durable_name: Some(durable.clone()),
        description: Some(format!("tool-runner jobs on {filter}")),
        filter_subject: filter,
        deliver_policy: DeliverPolicy::All,
        ack_policy: AckPolicy::Explicit,
        ..Default::default()
    };
    let consumer = stream
        .get_or_create_consumer(&durable, config)
        .await
        .map_err(|e| queue_error(format!("cannot create the consumer {durable}: {e}")))?;
    // A small batch: jobs pulled here wait for this runner, so it takes no more than it can start.
    consumer
        .stream()
        .max_messages_per_batch(4)
        .messages()
        .await
        .map_err(|e| queue_error(format!("cannot pull from {durable}: {e}")))
}

struct JobServer {
    queue: JobQueue,
    me: String,
    api: ToolGrpc,
    /// Jobs running here, by id, to stop one its caller no longer waits for.
    running: Mutex<HashMap<String, CancellationToken>>,
    slots: Arc<Semaphore>,
}

impl JobServer {
    /// Takes jobs from one consumer until `shutdown`: one free slot per job, acknowledged when
    /// taken, then run on its own task.
    async fn pull(self: Arc<Self>, mut jobs: pull::Stream, shared: bool, shutdown: CancellationToken) -> Result<()> {
        loop {
            let slot = tokio::select! {
                _ = shutdown.cancelled() => return Ok(()),
                slot = self.slots.clone().acquire_owned() => slot.expect("the semaphore is never closed"),
            };
            let message = tokio::select! {
                _ = shutdown.cancelled() => return Ok(()),
                message = jobs.next() => message,
            };
            let message = match message {
                Some(Ok(message)) => message,
                Some(Err(error)) => {
                    tracing::warn!(%error, "pulling tool jobs failed; trying again");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
                None => return Err(queue_error("the job consumer ended".into())),
            };
            if let Err(error) = message.ack().await {
                // Not taken: it will be delivered again (to this runner or another).
                tracing::warn!(%error, "cannot take a tool job");
                continue;
            }
            let server = self.clone();
            tokio::spawn(async move {
                let _slot = slot;
                server.take(message, shared).await;
            });
        }
    }

    /// Checks a taken job's headers, forwards it if another runner holds its workspace, else
    /// runs it.
    async fn take(&self, message: jetstream::Message, shared: bool) {
        let hdrs = message.headers.as_ref();
        let Some(reply) = headers::get(hdrs, header::REPLY).map(str::to_string) else {
            tracing::warn!(subject = %message.subject, "a tool job without a reply subject is dropped");
            return;
        };
        let rpc_name = headers::get(hdrs, header::RPC).unwrap_or_default();
        let Some(rpc) = Rpc::parse(rpc_name) else {
            let status = tonic::Status::invalid_argument(format!(
                "'{rpc_name}' is not a job of the tool-runner: use ListTools, CallTool, BeginTask or TaskDiff"
            ));
            self.reply_error(&reply, status).await;
            return;
        };
        if let Some(start_by) = headers::get(hdrs, header::START_BY_MS).and_then(|v| v.parse::<u64>().ok())
            && start_by < unix_ms_in(Duration::ZERO)
        {
            tracing::info!(
                rpc = rpc.as_str(),
                "a tool job queued past its start-by time is dropped: nobody waits for it"
            );
            return;
        }
        if shared && let Some(key) = headers::get(hdrs, header::WORKSPACE_KEY) {
            match self.queue.claim(key, &self.me).await {
                Ok(None) => {}
                Ok(Some(holder)) => return self.forward(&message, &holder, &reply).await,
                Err(error) => {
                    self.reply_error(&reply, tonic::Status::unavailable(error.to_string())).await;
                    return;
                }
            }
        }
        let id = headers::get(hdrs, header::JOB_ID).unwrap_or_default().to_string();
        let span = tracing::info_span!("tool_job", rpc = rpc.as_str(), job_id = %id, runner = %self.me);
        headers::continue_trace(&span, hdrs);
        let job = Job { id, rpc, reply, payload: message.payload.clone() };
        self.run(job).instrument(span).await;
    }

    /// Sends a job on to the runner holding its workspace, as it came.
    async fn forward(&self, message: &jetstream::Message, holder: &str, reply: &str) {
        let subject = subjects::tool_jobs(holder);
        tracing::debug!(%subject, "the workspace is held by another runner: forwarding the job");
        let mut forwarded = HeaderMap::new();
        if let Some(hdrs) = &message.headers {
            for (name, values) in hdrs.iter() {
                // A new message id: the original's is in the stream's duplicate window.
                if AsRef::<str>::as_ref(name) == headers::MSG_ID {
                    continue;
                }
                for value in values {
                    forwarded.append(name.clone(), value.clone());
                }
            }
        }
        let publish = jetstream::message::PublishMessage::build().payload(message.payload.clone()).headers(forwarded);
        let sent = match self.queue.js.send_publish(subject.clone(), publish).await {
            Ok(ack) => ack.await.map(|_| ()).map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        if let Err(reason) = sent {
            let status = tonic::Status::unavailable(format!("cannot forward the job to {subject}: {reason}"));
            self.reply_error(reply, status).await;
        }
    }

    async fn run(&self, job: Job) {
        let answer = match job.rpc {
            Rpc::ListTools => match pb::ListToolsRequest::decode(job.payload) {
                Ok(request) => self.api.list(request.names).await.map(|r| r.encode_to_vec()),
                Err(e) => Err(undecodable(job.rpc, e)),
            },
            Rpc::BeginTask => match pb::BeginTaskRequest::decode(job.payload) {
                Ok(request) => self.api.begin(request).await.map(|r| r.encode_to_vec()),
                Err(e) => Err(undecodable(job.rpc, e)),
            },
            Rpc::TaskDiff => match pb::TaskDiffRequest::decode(job.payload) {
                Ok(request) => self.api.diff(request).await.map(|r| r.encode_to_vec()),
                Err(e) => Err(undecodable(job.rpc, e)),
            },
            Rpc::CallTool => return self.call(job).await,
        };
        match answer {
            Ok(bytes) => self.reply(&job.reply, HeaderMap::new(), bytes).await,
            Err(error) => self.reply_error(&job.reply, error.into()).await,
        }
    }

    /// Runs a call, sending its chunks as they come; stops it when its caller cancels.
    async fn call(&self, job: Job) {
        let request = match pb::ToolCallRequest::decode(job.payload) {
            Ok(request) => request,
            Err(e) => return self.reply_error(&job.reply, undecodable(job.rpc, e).into()).await,
        };
        let prepared = match self.api.prepare(request) {
            Ok(prepared) => prepared,
            Err(error) => return self.reply_error(&job.reply, error.into()).await,
        };
        let stop = CancellationToken::new();
        self.running.lock().unwrap_or_else(|p| p.into_inner()).insert(job.id.clone(), stop.clone());
        let (chunks, mut sent) = mpsc::channel(CHUNK_BUFFER);
        let call = tokio::spawn(self.api.clone().stream_call(prepared, chunks).in_current_span());
        loop {
            tokio::select! {
                // Dropping the receiver makes the call stop (and withdraw a waiting approval).
                _ = stop.cancelled() => break,
                chunk = sent.recv() => match chunk {
                    Some(Ok(chunk)) => self.reply(&job.reply, HeaderMap::new(), chunk.encode_to_vec()).await,
                    Some(Err(status)) => self.reply_error(&job.reply, status).await,
                    None => break,
                },
            }
        }
        drop(sent);
        let _ = call.await;
        self.running.lock().unwrap_or_else(|p| p.into_inner()).remove(&job.id);
    }

    async fn reply(&self, subject: &str, hdrs: HeaderMap, payload: Vec<u8>) {
        if let Err(error) = self.queue.client.publish_with_headers(subject.to_string(), hdrs, payload.into()).await {
            tracing::warn!(%error, "cannot send a tool job's reply");
        }
    }

    async fn reply_error(&self, subject: &str, status: tonic::Status) {
        self.reply(subject, status_headers(&status), Vec::new()).await;
    }
}

fn undecodable(rpc: Rpc, error: prost::DecodeError) -> Error {
    let mut errs = turbo_core::ValidationErrors::default();
    errs.push("payload", format!("is not a {} request: {error}", rpc.as_str()));
    Error::Request(turbo_proto::Error::Invalid(errs))
}

/// The gRPC status as NATS headers, as gRPC sends it in trailers.
pub(crate) fn status_headers(status: &tonic::Status) -> HeaderMap {
    let mut http = http::HeaderMap::new();
    let mut hdrs = HeaderMap::new();
    if status.add_header(&mut http).is_err() {
        // Only an unencodable message fails; the code alone still says what happened.
        hdrs.insert("grpc-status", (status.code() as i32).to_string().as_str());
        return hdrs;
    }
    for (name, value) in &http {
        if let Ok(value) = value.to_str() {
            hdrs.insert(name.as_str(), value);
        }
    }
    hdrs
}

/// The gRPC status a reply carries, if it is an error.
pub(crate) fn reply_status(hdrs: Option<&HeaderMap>) -> Option<tonic::Status> {
    let hdrs = hdrs?;
    hdrs.get("grpc-status")?;
    let mut http = http::HeaderMap::new();
    for name in ["grpc-status", "grpc-message", "grpc-status-details-bin"] {
        if let Some(value) = hdrs.get(name)
            && let Ok(value) = http::HeaderValue::from_str(value.as_str())
        {
            http.insert(name, value);
        }
    }
    tonic::Status::from_header_map(&http)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn workspace_keys_are_stable_valid_kv_keys() {
        let key = workspace_key("/srv/projects/a b/ünï");
        assert_eq!(key.len(), 32);
        assert!(key.chars().all(|c| c.is_ascii_hexdigit()), "{key}");
        assert_eq!(key, workspace_key("/srv/projects/a b/ünï"));
        assert_ne!(key, workspace_key("/srv/projects/other"));
    }

    #[test]
    fn statuses_cross_headers_with_their_details() {
        let status = Error::NoBaseline(turbo_core::ids::TaskId::new());
        let sent = tonic::Status::from(status);
        let hdrs = status_headers(&sent);
        let back = reply_status(Some(&hdrs)).expect("an error reply");
        assert_eq!(back.code(), sent.code());
        assert_eq!(back.message(), sent.message());
        assert_eq!(back.details(), sent.details());
        assert!(reply_status(Some(&HeaderMap::new())).is_none());
        assert!(reply_status(None).is_none());
    }

    #[test]
    fn rpc_names_round_trip() {
        for rpc in [Rpc::ListTools, Rpc::CallTool, Rpc::BeginTask, Rpc::TaskDiff] {
            assert_eq!(Rpc::parse(rpc.as_str()), Some(rpc));
        }
        assert_eq!(Rpc::parse("EndTask"), None);
    }
}
