//! The worker's side of the bus: [`serve_role`] takes a role's work items from its queue and
//! carries them out on the local agent actors.
//!
//! Delivery rules, in the order a work item meets them:
//! - Every replica of a role pulls from the role's one durable consumer, so each item goes to
//!   one replica; a replica pulls only as many items as it has free slots (`capacity`).
//! - An item that cannot be decoded (not JSON, another envelope version, wrong kind or role) is
//!   poison: it can never succeed, so it goes to the dead-letter queue with the reason at once
//!   and is terminated, and the consumer goes on with the next item.
//! - An item delivered more often than the consumer's redelivery limit crashed or stalled a
//!   worker each time; it goes to the dead-letter queue instead of running again.
//! - While the agent works, the worker tells NATS it is still working every third of the ack
//!   wait, so a long model call is not given to another replica; a worker that dies stops
//!   saying so, and after the ack wait another replica takes the item over.
//! - The result, success or [`AgentFailure`], is stored on `turbo.results.<task_id>` and only
//!   once the server confirmed it is the item acknowledged: a crash before that means the item
//!   is delivered again, never lost. An agent that fails gives a result like any other; only
//!   work that never produced a result is delivered again.
//! - A delivery after the first first looks for a result an earlier delivery stored, so work
//!   whose acknowledgement was lost is not done twice.
//! - `turbo.cancel.<task_id>` cancels the task's running work here, and work of that task that
//!   arrives later (still queued when the task was cancelled) is answered as cancelled unrun.
//!
//! Every few seconds the worker publishes a [`Heartbeat`]. On shutdown it stops pulling, hands
//! back to the queue what arrives from a pull still open, finishes the work in flight, and
//! returns.

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_nats::HeaderMap;
use async_nats::jetstream::consumer::PullConsumer;
use async_nats::jetstream::{self, AckKind, Context};
use backon::{ExponentialBuilder, Retryable};
use chrono::{DateTime, Utc};
use futures::StreamExt;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tokio_util::task::AbortOnDropHandle;
use tracing::Instrument;
use turbo_bus::publish::{publish_core, publish_stored, publish_stored_raw};
use turbo_bus::{CancelRequest, Heartbeat, WorkItem, WorkReply, WorkRequest, WorkResult, decode, headers, subjects};
use turbo_core::agent::AgentRole;
use turbo_core::ids::TaskId;
use turbo_core::protocol::{AgentFailure, FailureKind};
use uuid::Uuid;

use crate::NatsEventSink;
use crate::handle::AgentHandle;

/// Cancelled tasks remembered, so their queued work is not started later.
const CANCELLED_MEMORY: Duration = Duration::from_secs(3600);
const CANCELLED_MAX: usize = 10_000;
/// Pause after a failed pull before the next, so a NATS outage is not a busy loop.
const PULL_RETRY: Duration = Duration::from_secs(1);
/// How often a stopping worker checks whether the open pull can still bring anything.
const STOP_CHECK: Duration = Duration::from_millis(100);
/// Attempts to store a result before the item is left to be delivered again.
const RESULT_ATTEMPTS: usize = 5;

/// How a worker serves its role.
#[derive(Clone, Debug)]
pub struct ServeOptions {
    /// Work items carried out at once at most.
    pub capacity: usize,
    /// Names this worker in heartbeats, results and dead letters.
    pub worker_id: String,
    pub heartbeat_every: Duration,
    /// How long one pull waits for work. Shutdown waits at most this long for the pull open at
    /// the time, handing back what it brings (not at all when the connection is down).
    pub pull_wait: Duration,
    /// The sink the agents emit their events to, when it is NATS: flushed before a result is
    /// stored, so a phase's events are in their stream before its outcome.
    pub events: Option<NatsEventSink>,
}

impl ServeOptions {
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity: capacity.max(1),
            worker_id: default_worker_id(),
            heartbeat_every: Duration::from_secs(5),
            pull_wait: Duration::from_secs(5),
            events: None,
        }
    }
}

/// `<host>-<pid>-<random>`: operators see which machine (pod) and process a worker is; the
/// random part keeps several workers of one process apart.
fn default_worker_id() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "host".into());
    let random = Uuid::new_v4().simple().to_string();
    format!("{}-{}-{}", subjects::token(&host), std::process::id(), &random[..8])
}

/// Serves the role of `handle` from its work queue, at most `capacity` items at once, until
/// `shutdown` is cancelled; then finishes the work in flight and returns. The streams and
/// consumers must exist: run [`turbo_bus::setup`] first.
pub async fn serve_role(
    client: async_nats::Client,
    handle: AgentHandle,
    capacity: usize,
    shutdown: CancellationToken,
) -> turbo_bus::Result<()> {
    serve_role_with(client, handle, ServeOptions::new(capacity), shutdown).await
}

/// [`serve_role`] with every option.
pub async fn serve_role_with(
    client: async_nats::Client,
    handle: AgentHandle,
    options: ServeOptions,
    shutdown: CancellationToken,
) -> turbo_bus::Result<()> {
    let role = handle.role();
    let js = jetstream::new(client.clone());
    // Each step of the start waits for the server; without a connection that is a while, and
    // shutdown must not wait for it (nothing has been taken yet).
    let consumer = tokio::select! {
        biased;
        _ = shutdown.cancelled() => return Ok(()),
        consumer = work_consumer(&js, role) => consumer?,
    };
    let info = consumer.cached_info();
    let capacity = options.capacity.max(1);
    let worker = Arc::new(Worker {
        js,
        events: options.events.clone(),
        role,
        worker_id: options.worker_id.clone(),
        handle,
        cancels: Cancels::default(),
        in_flight: AtomicUsize::new(0),
        capacity,
        ack_wait: info.config.ack_wait,
        delivery_limit: turbo_bus::delivery_limit(info),
        started_at: Utc::now(),
    });

    // Listen for cancellations before taking work, so none for work taken here is missed.
    let subscribed = async {
        let subscription = client.subscribe(subjects::CANCEL_ALL).await.map_err(|e| e.to_string())?;
        client.flush().await.map_err(|e| e.to_string())?;
        Ok::<_, String>(subscription)
    };
    let cancel_subscription = tokio::select! {
        biased;
        _ = shutdown.cancelled() => return Ok(()),
        subscribed = subscribed => subscribed
            .map_err(|reason| turbo_bus::Error::Subscribe { subject: subjects::CANCEL_ALL.into(), reason })?,
    };
    let _cancel_listener =
        AbortOnDropHandle::new(tokio::spawn(listen_for_cancels(cancel_subscription, worker.clone())));
    let stop_heartbeats = CancellationToken::new();
    let heartbeats = AbortOnDropHandle::new(tokio::spawn(heartbeats(
        client.clone(),
        worker.clone(),
        options.heartbeat_every,
        stop_heartbeats.clone(),
    )));

    tracing::info!(%role, worker = %worker.worker_id, capacity, ack_wait_ms = worker.ack_wait.as_millis() as u64,
        delivery_limit = worker.delivery_limit, "serving the role's work queue");
    // Dropped (the serve task aborted) it aborts the work in flight without acknowledging it,
    // as a crash would: the items are delivered again after the ack wait.
    let mut running = JoinSet::new();
    let slots = Arc::new(Semaphore::new(capacity));
    let mut stopping = false;
    let mut stop_by = None;
    let mut stop_check = tokio::time::interval(STOP_CHECK);
    while !stopping {
        let first = tokio::select! {
            biased;
            _ = shutdown.cancelled() => break,
            permit = slots.clone().acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => break,
            },
        };
        reap(&mut running);
        let mut permits = vec![first];
        while let Ok(permit) = slots.clone().try_acquire_owned() {
            permits.push(permit);
        }
        // Asking for a pull waits for the server; without a connection that is a while, and
        // shutdown must not wait for it.
        let pull = tokio::select! {
            biased;
            _ = shutdown.cancelled() => break,
            pull = consumer.batch().max_messages(permits.len()).expires(options.pull_wait).messages() => pull,
        };
        let mut batch = match pull {
            Ok(batch) => batch,
            Err(error) => {
                tracing::warn!(%error, %role, "cannot pull work; retrying");
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = tokio::time::sleep(PULL_RETRY) => continue,
                }
            }
        };
        loop {
            tokio::select! {
                biased;
                _ = shutdown.cancelled(), if !stopping => {
                    // Without a connection nothing more can arrive from the pull: stop now.
                    if client.connection_state() != async_nats::connection::State::Connected {
                        break;
                    }
                    stopping = true;
                    stop_by = Some(tokio::time::Instant::now() + options.pull_wait);
                }
                // The pull should end by itself within pull_wait; it may not if the connection
                // breaks meanwhile. What arrives after is delivered again after the ack wait.
                _ = stop_check.tick(), if stopping => {
                    let connected = client.connection_state() == async_nats::connection::State::Connected;
                    if !connected || stop_by.is_some_and(|by| tokio::time::Instant::now() >= by) {
                        break;
                    }
                }
                message = batch.next() => match message {
                    None => break,
                    Some(Err(error)) => {
                        tracing::warn!(%error, %role, "pull ended with an error");
                        break;
                    }
                    Some(Ok(message)) if stopping => hand_back(message).await,
                    Some(Ok(message)) => match permits.pop() {
                        Some(permit) => {
                            running.spawn(process(worker.clone(), message, permit));
                        }
                        // The server never sends more than was asked for; hand back just in case.
                        None => hand_back(message).await,
                    },
                },
            }
        }
    }

    tracing::info!(
        %role, worker = %worker.worker_id, in_flight = running.len(),
        "stopped pulling; finishing the work in flight"
    );
    while let Some(joined) = running.join_next().await {
        log_join(joined);
    }
    stop_heartbeats.cancel();
    let _ = heartbeats.await;
    tracing::info!(%role, worker = %worker.worker_id, "stopped");
    Ok(())
}

/// The role's durable work consumer, set up by [`turbo_bus::setup`].
async fn work_consumer(js: &Context, role: AgentRole) -> turbo_bus::Result<PullConsumer> {
    let consumer_name = subjects::work_consumer(role);
    js.get_stream(subjects::WORK_STREAM)
        .await
        .map_err(|e| turbo_bus::Error::Read { stream: subjects::WORK_STREAM.into(), reason: e.to_string() })?
        .get_consumer(&consumer_name)
        .await
        .map_err(|e| turbo_bus::Error::Consumer {
            stream: subjects::WORK_STREAM.into(),
            consumer: consumer_name.clone(),
            reason: format!("{e}; run the bus setup first"),
        })
}

/// What every item's processing shares.
struct Worker {
    js: Context,
    events: Option<NatsEventSink>,
    role: AgentRole,
    worker_id: String,
    handle: AgentHandle,
    cancels: Cancels,
    in_flight: AtomicUsize,
    capacity: usize,
    ack_wait: Duration,
    delivery_limit: u32,
    started_at: DateTime<Utc>,
}

fn reap(running: &mut JoinSet<()>) {
    while let Some(joined) = running.try_join_next() {
        log_join(joined);
    }
}

fn log_join(joined: Result<(), tokio::task::JoinError>) {
    if let Err(error) = joined
        && error.is_panic()
    {
        tracing::error!(%error, "processing a work item panicked; it will be delivered again");
    }
}

/// Gives an item back to the queue at once (no wait for the ack wait).
async fn hand_back(message: jetstream::Message) {
    if let Err(error) = message.ack_with(AckKind::Nak(None)).await {
        tracing::debug!(%error, "cannot hand an item back; it returns after the ack wait");
    }
}

/// Counts an item as in flight while alive.
struct InFlight<'a>(&'a AtomicUsize);

impl<'a> InFlight<'a> {
    fn new(counter: &'a AtomicUsize) -> Self {
        counter.fetch_add(1, Ordering::Relaxed);
        Self(counter)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

async fn process(worker: Arc<Worker>, message: jetstream::Message, _slot: OwnedSemaphorePermit) {
    let _in_flight = InFlight::new(&worker.in_flight);
    let delivered = message.info().map(|i| u32::try_from(i.delivered).unwrap_or(u32::MAX)).unwrap_or(1);
    let span = tracing::info_span!(
        "agent_work",
        role = %worker.role,
        worker = %worker.worker_id,
        delivered,
        task_id = tracing::field::Empty,
        request_id = tracing::field::Empty,
    );
    headers::continue_trace(&span, message.headers.as_ref());
    process_inner(&worker, &message, delivered).instrument(span).await;
}

async fn process_inner(worker: &Worker, message: &jetstream::Message, delivered: u32) {
    let item = match decode::<WorkItem>(&message.payload) {
        Ok(item) if item.role == worker.role => item,
        Ok(item) => {
            let reason = format!(
                "a {} work item on the {} queue; check who publishes to {}",
                item.role, worker.role, message.subject
            );
            return dead_letter(worker, message, delivered, &reason, Some((item.task_id, item.request_id))).await;
        }
        Err(error) => {
            let ids = ids_from_headers(message.headers.as_ref());
            return dead_letter(worker, message, delivered, &error.to_string(), ids).await;
        }
    };
    let span = tracing::Span::current();
    span.record("task_id", tracing::field::display(item.task_id));
    span.record("request_id", tracing::field::display(item.request_id));

    if delivered > worker.delivery_limit {
        let reason = format!(
            "delivered {delivered} times (limit {}): the work crashed or stalled its worker every time",
            worker.delivery_limit
        );
        return dead_letter(worker, message, delivered, &reason, Some((item.task_id, item.request_id))).await;
    }

    if delivered > 1 {
        // An earlier delivery may have stored its result and died before acknowledging.
        match turbo_bus::find_result(&worker.js, item.task_id, item.request_id).await {
            Ok(Some(_)) => {
                tracing::info!("the result of this work is already stored; acknowledging without running it again");
                return acknowledge(message).await;
            }
            Ok(None) => {}
            Err(error) => tracing::warn!(%error, "cannot look for an earlier result; running the work"),
        }
    }

    let (task_id, request_id) = (item.task_id, item.request_id);
    let work = async {
        let reply = match worker.cancels.register(task_id) {
            Some(registration) => run(&worker.handle, item.request, registration.token.clone()).await,
            None => WorkReply::Failed(AgentFailure::new(
                FailureKind::Cancelled,
                format!("the task was cancelled before a {} agent took this work", worker.role),
            )),
        };
        let events_through = match &worker.events {
            Some(events) => {
                events.flush().await;
                events.stored_through()
            }
            None => None,
        };
        let result = WorkResult {
            request_id,
            task_id,
            role: worker.role,
            worker_id: worker.worker_id.clone(),
            reply,
            events_through,
        };
        store_result(worker, &result).await
    };
    match with_progress(message, worker.ack_wait, work).await {
        Ok(()) => acknowledge(message).await,
        Err(error) => {
            tracing::error!(%error, "cannot store the result; the work will be delivered again");
            if let Err(error) = message.ack_with(AckKind::Nak(Some(worker.ack_wait))).await {
                tracing::debug!(%error, "cannot hand the item back; it returns after the ack wait");
            }
        }
    }
}

async fn run(handle: &AgentHandle, request: WorkRequest, cancel: CancellationToken) -> WorkReply {
    let reply = match request {
        WorkRequest::Plan(request) => handle.plan(*request, cancel).await.map(|o| WorkReply::Planned(Box::new(o))),
        WorkRequest::RunPhase(assignment) => {
            handle.run_phase(*assignment, cancel).await.map(|o| WorkReply::PhaseDone(Box::new(o)))
        }
    };
    reply.unwrap_or_else(|failure| {
        tracing::info!(
            kind = %failure.kind, failure = %failure.message,
            "the agent failed; storing the failure as the result"
        );
        WorkReply::Failed(failure)
    })
}

/// Runs `work`, telling NATS every third of the ack wait that the item is still being worked on.
async fn with_progress<T>(message: &jetstream::Message, ack_wait: Duration, work: impl Future<Output = T>) -> T {
    let every = (ack_wait / 3).max(Duration::from_millis(100));
    let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tokio::pin!(work);
    loop {
        tokio::select! {
            biased;
            out = &mut work => return out,
            _ = ticks.tick() => {
                if let Err(error) = message.ack_with(AckKind::Progress).await {
                    tracing::warn!(%error, "cannot report progress; the item may be given to another worker");
                }
            }
        }
    }
}

/// Stores `result`, retrying a few times: redoing the work is far dearer than a retry.
async fn store_result(worker: &Worker, result: &WorkResult) -> turbo_bus::Result<()> {
    let subject = subjects::results(result.task_id);
    let publish = || async {
        let mut result_headers = HeaderMap::new();
        // A second delivery's result for the same request is stored once.
        result_headers.insert(headers::MSG_ID, result.request_id.to_string().as_str());
        result_headers.insert(headers::TASK_ID, result.task_id.to_string().as_str());
        result_headers.insert(headers::REQUEST_ID, result.request_id.to_string().as_str());
        publish_stored(&worker.js, subject.clone(), result, result_headers).await
    };
    publish
        .retry(ExponentialBuilder::default().with_max_times(RESULT_ATTEMPTS - 1).with_jitter())
        .notify(
            |error, after| tracing::warn!(%error, retry_in_ms = after.as_millis() as u64, "cannot store the result"),
        )
        .await?;
    tracing::debug!(%subject, "result stored");
    Ok(())
}

/// The final acknowledgement, confirmed by the server: only after it is the item gone.
async fn acknowledge(message: &jetstream::Message) {
    if let Err(error) = message.double_ack().await {
        // The result is stored; a redelivery finds it and does not run the work again.
        tracing::warn!(%error, "cannot confirm the acknowledgement; a redelivery will find the stored result");
    }
}

fn ids_from_headers(map: Option<&HeaderMap>) -> Option<(TaskId, Uuid)> {
    let task_id = headers::get(map, headers::TASK_ID)?.parse().ok()?;
    let request_id = headers::get(map, headers::REQUEST_ID)?.parse().ok()?;
    Some((task_id, request_id))
}

/// Moves an item that must not run (again) to the role's dead-letter queue with `reason`, tells
/// a waiting caller, when the item says who that is, and terminates the item.
async fn dead_letter(
    worker: &Worker,
    message: &jetstream::Message,
    delivered: u32,
    reason: &str,
    ids: Option<(TaskId, Uuid)>,
) {
    let stream_seq = message.info().map(|i| i.stream_sequence).unwrap_or_default();
    tracing::warn!(%reason, stream_seq, "dead-lettering a work item");
    let mut dlq_headers = HeaderMap::new();
    dlq_headers.insert(headers::DLQ_REASON, headers::value(reason).as_str());
    dlq_headers.insert(headers::DLQ_SUBJECT, message.subject.as_str());
    dlq_headers.insert(headers::DLQ_DELIVERED, delivered.to_string().as_str());
    dlq_headers.insert(headers::DLQ_STREAM_SEQ, stream_seq.to_string().as_str());
    dlq_headers.insert(headers::DLQ_WORKER, headers::value(&worker.worker_id).as_str());
    if let Some((task_id, request_id)) = ids {
        dlq_headers.insert(headers::TASK_ID, task_id.to_string().as_str());
        dlq_headers.insert(headers::REQUEST_ID, request_id.to_string().as_str());
    }
    let stored = publish_stored_raw(&worker.js, subjects::dlq(worker.role), dlq_headers, message.payload.clone()).await;
    if let Err(error) = stored {
        tracing::error!(%error, "cannot dead-letter the item; it will be delivered again");
        if let Err(error) = message.ack_with(AckKind::Nak(Some(worker.ack_wait))).await {
            tracing::debug!(%error, "cannot hand the item back; it returns after the ack wait");
        }
        return;
    }
    if let Some((task_id, request_id)) = ids {
        let failure = AgentFailure::new(
            FailureKind::Internal,
            format!("the {} work could not be done and was dead-lettered: {reason}", worker.role),
        );
        let result = WorkResult {
            request_id,
            task_id,
            role: worker.role,
            worker_id: worker.worker_id.clone(),
            reply: WorkReply::Failed(failure),
            events_through: None,
        };
        if let Err(error) = store_result(worker, &result).await {
            tracing::error!(%error, %task_id, "cannot tell the caller its work was dead-lettered");
        }
    }
    if let Err(error) = message.ack_with(AckKind::Term).await {
        tracing::warn!(%error, "cannot terminate the dead-lettered item; it may be delivered again");
    }
}

async fn listen_for_cancels(mut subscription: async_nats::Subscriber, worker: Arc<Worker>) {
    while let Some(message) = subscription.next().await {
        match decode::<CancelRequest>(&message.payload) {
            Ok(cancel) => {
                tracing::info!(task_id = %cancel.task_id, reason = %cancel.reason, "task cancelled");
                worker.cancels.cancel(cancel.task_id);
            }
            Err(error) => tracing::warn!(%error, subject = %message.subject, "ignoring an unreadable cancellation"),
        }
    }
}

async fn heartbeats(client: async_nats::Client, worker: Arc<Worker>, every: Duration, stop: CancellationToken) {
    let subject = subjects::heartbeat(worker.role, &worker.worker_id);
    loop {
        let beat = Heartbeat {
            worker_id: worker.worker_id.clone(),
            role: worker.role,
            in_flight: worker.in_flight.load(Ordering::Relaxed),
            capacity: worker.capacity,
            started_at: worker.started_at,
            at: Utc::now(),
        };
        if let Err(error) = publish_core(&client, subject.clone(), &beat).await {
            tracing::debug!(%error, "cannot publish a heartbeat");
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(every) => {}
        }
    }
}

/// The cancellation tokens of the work running here, by task, and the tasks cancelled lately.
#[derive(Default)]
struct Cancels {
    state: Mutex<CancelState>,
}

#[derive(Default)]
struct CancelState {
    /// Running work per task: the task's token and how many items use it.
    running: HashMap<TaskId, (CancellationToken, usize)>,
    cancelled: HashMap<TaskId, Instant>,
}

/// A task's token while an item of it runs; unregisters on drop.
struct Registration<'a> {
    cancels: &'a Cancels,
    task_id: TaskId,
    token: CancellationToken,
}

impl Cancels {
    /// The token for an item of `task_id`, or None when the task was cancelled already.
    fn register(&self, task_id: TaskId) -> Option<Registration<'_>> {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if state.cancelled.contains_key(&task_id) {
            return None;
        }
        let entry = state.running.entry(task_id).or_insert_with(|| (CancellationToken::new(), 0));
        entry.1 += 1;
        Some(Registration { cancels: self, task_id, token: entry.0.clone() })
    }

    fn cancel(&self, task_id: TaskId) {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        state.cancelled.retain(|_, at| now.duration_since(*at) < CANCELLED_MEMORY);
        if state.cancelled.len() >= CANCELLED_MAX
            && let Some(oldest) = state.cancelled.iter().min_by_key(|(_, at)| **at).map(|(id, _)| *id)
        {
            state.cancelled.remove(&oldest);
        }
        state.cancelled.insert(task_id, now);
        if let Some((token, _)) = state.running.get(&task_id) {
            token.cancel();
        }
    }
}

impl Drop for Registration<'_> {
    fn drop(&mut self) {
        let mut state = self.cancels.state.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(entry) = state.running.get_mut(&self.task_id) {
            entry.1 -= 1;
            if entry.1 == 0 {
                state.running.remove(&self.task_id);
            }
        }
    }
}
