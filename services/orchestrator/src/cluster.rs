//! The orchestrator in the cluster (`cluster.nats_url` set): the same orchestrator, recorder
//! and task runs as the embedded stack ([`crate::local`]), with the agents and the event
//! streams on NATS JetStream:
//!
//! - agents are [`NatsAgents`]: each plan or phase is a work item on `turbo.work.<role>`,
//!   carried out by the role's agent-worker services;
//! - the workers' agent events arrive on `turbo.events.raw.<task_id>`; [`record_raw_events`]
//!   reads them through the durable consumer [`subjects::RECORDER_CONSUMER`], hands them to the
//!   recorder in batches and acknowledges each batch only once the recorder has stored it, so
//!   an orchestrator that dies loses none (the next one reads them again); how far it has
//!   recorded holds back each agent call's outcome until the call's events are recorded
//!   ([`NatsAgents::with_events_recorded`]), so a phase ends after its events;
//! - every event the recorder stores and numbers is published to `turbo.events.task.<task_id>`
//!   (stream [`subjects::EVENTS_STREAM`], message id `<task_id>:<seq>`) by [`publish_events`];
//!   at start, what an orchestrator that died stored but did not publish yet, of the tasks it
//!   left running, is published first ([`publish_backlog`]);
//! - at start, the tasks an earlier orchestrator left `in_progress` are resumed from their
//!   first unfinished phase ([`crate::OrchestratorHandle::resume_interrupted`]); at shutdown the
//!   runs are detached, not cancelled, so the next orchestrator resumes them.
//!
//! The orchestrator and the workers share the task workspaces and the data directory (task
//! baselines live in `<data_dir>/baselines`). One orchestrator serves a store at a time.

use std::collections::{HashSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio_stream::StreamExt;
use tokio_util::sync::CancellationToken;
use turbo_agent_worker::{AgentClient, NatsAgents};
use turbo_bus::async_nats::jetstream::consumer::PullConsumer;
use turbo_bus::async_nats::jetstream::context::PublishAckFuture;
use turbo_bus::async_nats::jetstream::stream::LastRawMessageErrorKind;
use turbo_bus::async_nats::jetstream::{self, AckKind, Context};
use turbo_bus::async_nats::{self, HeaderMap};
use turbo_bus::publish::{publish_stored, send_stored};
use turbo_bus::{RawEvent, decode, headers, subjects};
use turbo_config::Config;
use turbo_core::event::TaskEvent;
use turbo_core::ids::TaskId;
use turbo_store::Store;
use turbo_tool_runner::{RunnerLimits, ToolRunnerClient};

use crate::error::Result;
use crate::local::run_settings;
use crate::{OrchestratorHandle, OrchestratorService, Recorder, RunDeps};

/// Raw events handed to the recorder (and stored) together at most.
const RAW_BATCH: usize = 256;
/// Pause before reading raw events again after the stream failed, so an outage is no busy loop.
const RAW_RETRY: Duration = Duration::from_secs(1);
/// How long a batch the recorder could not store waits before it is delivered again.
const RAW_REDELIVER: Duration = Duration::from_secs(2);
/// Tasks remembered as stored; past this the memory starts over (a lookup each, again).
const KNOWN_TASKS_MAX: usize = 100_000;
/// Stored events waiting to be published at most; past it they are not published (the store
/// and `WatchTask` have them).
const OUTBOX_CAPACITY: usize = 16_384;
/// Publishes awaiting the server's acknowledgement at most.
const PUBLISH_IN_FLIGHT: usize = 64;
/// Longest the last stored events may take to be published at shutdown.
const PUBLISH_DRAIN: Duration = Duration::from_secs(10);

/// The orchestrator with its agents on NATS, and the recorder fed from NATS.
pub struct Clustered {
    pub orchestrator: OrchestratorHandle,
    pub recorder: Recorder,
    /// The cluster's tool-runners, for calls made on a user's behalf (interactive sessions).
    pub tools: ToolRunnerClient,
    /// The connection to NATS, for whatever else the process serves over it.
    pub client: async_nats::Client,
    service: OrchestratorService,
    stop: CancellationToken,
    consumer: tokio::task::JoinHandle<()>,
    publisher: tokio::task::JoinHandle<()>,
    recorder_task: tokio::task::JoinHandle<()>,
}

impl Clustered {
    /// Connects to NATS at `url`, sets up the bus (idempotent), starts the recorder with its
    /// publisher, the raw-event consumer and the orchestrator, and resumes interrupted tasks.
    pub async fn start(config: &Config, store: Store, url: &str) -> Result<Clustered> {
        let client = turbo_bus::connect(url).await?;
        let js = jetstream::new(client.clone());
        turbo_agent_worker::setup_bus(&js, &turbo_agent_worker::bus_config(&config.cluster)).await?;

        // Before anything new is recorded, so each task's subject stays in seq order.
        publish_backlog(&js, &store).await;
        let (outbox, outbox_rx) = mpsc::channel(OUTBOX_CAPACITY);
        let (recorder, recorder_task) = Recorder::start_with_outbox(store.clone(), outbox);
        let publisher = tokio::spawn(publish_events(js.clone(), outbox_rx));
        let stop = CancellationToken::new();
        let (recorded, recorded_rx) = watch::channel(0);
        let consumer =
            tokio::spawn(record_raw_events(js.clone(), store.clone(), recorder.clone(), recorded, stop.clone()));

        let limits = RunnerLimits::from_config(config);
        let deps = RunDeps {
            // A phase's outcome is recorded after the events its agent emitted.
            agents: AgentClient::from_service(Arc::new(
                NatsAgents::new(client.clone()).with_events_recorded(recorded_rx),
            )),
            // The orchestrator's own tool calls are the task's baseline and its end; the
            // baseline goes to the shared directory, where the reviewer workers read it.
            tools: ToolRunnerClient::for_cluster(config, limits)
                .map_err(|e| crate::error::Error::Spawn(e.to_string()))?,
            store,
            events: recorder.sink(),
            settings: run_settings(config),
        };
        let tools = deps.tools.clone();
        let service = match OrchestratorService::start(deps).await {
            Ok(service) => service,
            Err(e) => {
                stop.cancel();
                recorder_task.abort();
                return Err(e);
            }
        };
        let clustered = Clustered {
            orchestrator: service.handle.clone(),
            recorder,
            tools,
            client,
            service,
            stop,
            consumer,
            publisher,
            recorder_task,
        };
        match clustered.orchestrator.resume_interrupted().await {
            Ok(resumed) if resumed.is_empty() => {}
            Ok(resumed) => tracing::info!(tasks = ?resumed, "resumed tasks an earlier orchestrator left running"),
            Err(error) => {
                clustered.shutdown().await;
                return Err(error);
            }
        }
        tracing::info!(nats = %url, "orchestrator running its agents over nats");
        Ok(clustered)
    }

    /// Detaches from the running tasks (they stay `in_progress`; the next orchestrator resumes
    /// them), stops reading raw events (the ones not stored yet stay unacknowledged, for the
    /// next orchestrator), drains the recorder and publishes what it stored.
    pub async fn shutdown(self) {
        let detached = self.service.detach().await;
        if !detached.is_empty() {
            tracing::info!(tasks = ?detached, "left running tasks for the next orchestrator to resume");
        }
        self.stop.cancel();
        let _ = self.consumer.await;
        self.recorder.flush().await;
        drop(self.recorder);
        // The recorder task holds the outbox; once it is gone the publisher drains and ends.
        self.recorder_task.abort();
        let _ = self.recorder_task.await;
        let mut publisher = self.publisher;
        if tokio::time::timeout(PUBLISH_DRAIN, &mut publisher).await.is_err() {
            tracing::warn!("the last events were not published in time; the store has them");
            publisher.abort();
        }
    }
}

/// Reads the workers' events from [`subjects::EVENTS_RAW_STREAM`] until `stop`, hands each
/// batch of what is ready to the recorder and acknowledges it once stored. A batch the store
/// refuses is handed back for redelivery; an event that can never be stored (unreadable, or of
/// a task this store does not have) is dropped with a warning. `recorded` follows the highest
/// stream sequence handled (stored or dropped).
pub async fn record_raw_events(
    js: Context,
    store: Store,
    recorder: Recorder,
    recorded: watch::Sender<u64>,
    stop: CancellationToken,
) {
    let mut known = HashSet::new();
    while !stop.is_cancelled() {
        let messages = async {
            let stream = js.get_stream(subjects::EVENTS_RAW_STREAM).await.map_err(|e| e.to_string())?;
            let consumer: PullConsumer =
                stream.get_consumer(subjects::RECORDER_CONSUMER).await.map_err(|e| e.to_string())?;
            consumer.messages().await.map_err(|e| e.to_string())
        };
        let mut messages = match messages.await {
            Ok(messages) => messages,
            Err(error) => {
                tracing::warn!(%error, "cannot read the agents' raw events; retrying");
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(RAW_RETRY) => continue,
                }
            }
        };
        loop {
            let first = tokio::select! {
                _ = stop.cancelled() => return,
                next = messages.next() => next,
            };
            let Some(first) = first else { break };
            let mut chunk = vec![first];
            // Whatever else is ready now joins the batch: one transaction for many events.
            while chunk.len() < RAW_BATCH {
                tokio::select! {
                    biased;
                    next = messages.next() => match next {
                        Some(next) => chunk.push(next),
                        None => break,
                    },
                    _ = std::future::ready(()) => break,
                }
            }
            let mut batch = Vec::with_capacity(chunk.len());
            for message in chunk {
                match message {
                    Ok(message) => batch.push(message),
                    Err(error) => tracing::warn!(%error, "reading raw events failed; going on"),
                }
            }
            let last = batch.iter().filter_map(|m| m.info().ok().map(|i| i.stream_sequence)).max();
            if record_batch(&store, &recorder, &mut known, batch).await
                && let Some(last) = last
            {
                recorded.send_if_modified(|seq| {
                    let advanced = last > *seq;
                    *seq = (*seq).max(last);
                    advanced
                });
            }
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(RAW_RETRY) => {}
        }
    }
}

/// True when the batch is handled (stored, or dropped for good), false when it comes again.
async fn record_batch(
    store: &Store,
    recorder: &Recorder,
    known: &mut HashSet<TaskId>,
    batch: Vec<jetstream::Message>,
) -> bool {
    let mut events = Vec::with_capacity(batch.len());
    let mut accepted = Vec::with_capacity(batch.len());
    let mut handled = true;
    for message in batch {
        let event = match decode::<RawEvent>(&message.payload) {
            Ok(event) => event,
            Err(error) => {
                tracing::warn!(%error, subject = %message.subject, "dropping an unreadable agent event");
                terminate(&message).await;
                continue;
            }
        };
        if !known.contains(&event.task_id) {
            match store.get_task(event.task_id).await {
                Ok(Some(_)) => {
                    if known.len() >= KNOWN_TASKS_MAX {
                        known.clear();
                    }
                    known.insert(event.task_id);
                }
                Ok(None) => {
                    tracing::warn!(
                        task_id = %event.task_id, kind = event.kind.name(),
                        "dropping an agent event of a task this orchestrator's store does not have"
                    );
                    terminate(&message).await;
                    continue;
                }
                Err(error) => {
                    tracing::warn!(%error, task_id = %event.task_id, "cannot look the task up; the event comes again");
                    redeliver(&message).await;
                    handled = false;
                    continue;
                }
            }
        }
        events.push((event.task_id, event.kind, event.at));
        accepted.push(message);
    }
    if accepted.is_empty() {
        return handled;
    }
    match recorder.record(events).await {
        Ok(()) => {
            for message in &accepted {
                if let Err(error) = message.ack().await {
                    // Delivered again after the ack wait and stored a second time: a duplicate,
                    // never a loss.
                    tracing::warn!(%error, "cannot acknowledge a stored agent event");
                }
            }
            handled
        }
        Err(error) => {
            tracing::error!(%error, events = accepted.len(), "cannot store agent events; they come again");
            for message in &accepted {
                redeliver(message).await;
            }
            false
        }
    }
}

async fn terminate(message: &jetstream::Message) {
    if let Err(error) = message.ack_with(AckKind::Term).await {
        tracing::debug!(%error, "cannot drop an agent event; it comes again");
    }
}

async fn redeliver(message: &jetstream::Message) {
    if let Err(error) = message.ack_with(AckKind::Nak(Some(RAW_REDELIVER))).await {
        tracing::debug!(%error, "cannot hand an agent event back; it comes again after the ack wait");
    }
}

/// Publishes each stored event, in order, to `turbo.events.task.<task_id>` with the message id
/// `<task_id>:<seq>` (a repeated publish is stored once), keeping a window of publishes in
/// flight. Ends when the recorder is gone and everything it handed on is published.
pub async fn publish_events(js: Context, mut events: mpsc::Receiver<TaskEvent>) {
    let mut pending: VecDeque<PublishAckFuture> = VecDeque::new();
    while let Some(event) = events.recv().await {
        match send_stored(&js, subjects::events_task(event.task_id), &event, event_headers(&event)).await {
            Ok(ack) => pending.push_back(ack),
            Err(error) => {
                tracing::warn!(%error, task_id = %event.task_id, seq = event.seq, "cannot publish a task event")
            }
        }
        if pending.len() >= PUBLISH_IN_FLIGHT
            && let Some(ack) = pending.pop_front()
        {
            settle(ack).await;
        }
        if events.is_empty() {
            while let Some(ack) = pending.pop_front() {
                settle(ack).await;
            }
        }
    }
    while let Some(ack) = pending.pop_front() {
        settle(ack).await;
    }
}

/// The message id `<task_id>:<seq>` (a repeated publish is stored once) and the task id.
fn event_headers(event: &TaskEvent) -> HeaderMap {
    let mut map = HeaderMap::new();
    map.insert(headers::MSG_ID, format!("{}:{}", event.task_id, event.seq).as_str());
    map.insert(headers::TASK_ID, event.task_id.to_string().as_str());
    map
}

/// Publishes, for every task left `in_progress` (its orchestrator died), the stored events
/// after the last one on its subject: an orchestrator killed between storing an event and
/// publishing it leaves that gap. Best effort: a failure is logged, the store has the events.
pub async fn publish_backlog(js: &Context, store: &Store) {
    let stream = match js.get_stream(subjects::EVENTS_STREAM).await {
        Ok(stream) => stream,
        Err(error) => return tracing::warn!(%error, "cannot read the task events stream to fill its gaps"),
    };
    let mut after = None;
    loop {
        let query = turbo_store::TaskQuery {
            project: None,
            statuses: vec![turbo_core::task::TaskStatus::InProgress, turbo_core::task::TaskStatus::Blocked],
            limit: 200,
            after,
        };
        let page = match store.page_tasks(query).await {
            Ok(page) => page,
            Err(error) => return tracing::warn!(%error, "cannot list the interrupted tasks to publish their events"),
        };
        for task in page.items {
            let id = task.task.id;
            let subject = subjects::events_task(id);
            let published = match stream.get_last_raw_message_by_subject(&subject).await {
                Ok(last) => match decode::<TaskEvent>(&last.payload) {
                    Ok(event) => event.seq,
                    Err(error) => {
                        tracing::warn!(%error, task_id = %id, "the last published event is unreadable; not filling in");
                        continue;
                    }
                },
                Err(e) if e.kind() == LastRawMessageErrorKind::NoMessageFound => 0,
                Err(error) => {
                    tracing::warn!(%error, task_id = %id, "cannot read the last published event");
                    continue;
                }
            };
            let missing = match store.events(id, published).await {
                Ok(events) => events,
                Err(error) => {
                    tracing::warn!(%error, task_id = %id, "cannot read the task's events to publish");
                    continue;
                }
            };
            if !missing.is_empty() {
                tracing::info!(task_id = %id, events = missing.len(), "publishing stored events an earlier orchestrator did not");
            }
            for event in missing {
                if let Err(error) = publish_stored(js, subject.clone(), &event, event_headers(&event)).await {
                    tracing::warn!(%error, task_id = %id, seq = event.seq, "cannot publish a task event");
                    break;
                }
            }
        }
        match page.next {
            Some(next) => after = Some(next),
            None => return,
        }
    }
}

async fn settle(ack: PublishAckFuture) {
    if let Err(error) = ack.await {
        tracing::warn!(%error, "nats did not store a task event");
    }
}
