//! The recorder: the single writer of task events. It numbers each task's events, stores them
//! (the store projects phases, steps, tool calls and token usage from them) and only then
//! broadcasts them, so a watcher never sees an event the store does not have.
//!
//! Events come from this process's sink ([`Recorder::sink`], fire and forget) or, in the
//! cluster, from the workers through [`Recorder::record`], which answers once the events are
//! stored so the caller can acknowledge them to NATS only then. With an outbox
//! ([`Recorder::start_with_outbox`]) every stored event is also handed on, numbered, to be
//! published (`turbo.events.task.<task_id>` in the cluster).

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use chrono::{DateTime, Utc};
use tokio::sync::{broadcast, mpsc, oneshot};
use turbo_core::event::{EventKind, EventSink, TaskEvent};
use turbo_core::ids::TaskId;
use turbo_store::Store;

/// Events written per transaction at most; batching keeps per-event cost low under load.
const MAX_BATCH: usize = 256;
/// Broadcast buffer; a watcher that falls further behind reads the gap back from the store.
const BROADCAST_CAPACITY: usize = 4096;

enum Cmd {
    Event(TaskId, EventKind, DateTime<Utc>),
    /// Events to store together; the answer says whether they were.
    Record(Vec<(TaskId, EventKind, DateTime<Utc>)>, oneshot::Sender<Result<(), String>>),
    Flush(oneshot::Sender<()>),
}

struct Sink {
    tx: mpsc::UnboundedSender<Cmd>,
}

impl EventSink for Sink {
    fn emit(&self, task_id: TaskId, kind: EventKind) {
        // After shutdown there is nobody to record for; dropping is the only option.
        let _ = self.tx.send(Cmd::Event(task_id, kind, Utc::now()));
    }
}

#[derive(Clone)]
pub struct Recorder {
    tx: mpsc::UnboundedSender<Cmd>,
    broadcast: broadcast::Sender<TaskEvent>,
    failed: Arc<AtomicU64>,
}

impl Recorder {
    pub fn start(store: Store) -> (Recorder, tokio::task::JoinHandle<()>) {
        Self::start_inner(store, None)
    }

    /// A recorder that also hands every stored event, in order, to `outbox`. The outbox must
    /// not make the recorder wait: when it is full, events are not handed on (the store has
    /// them) and a warning is logged.
    pub fn start_with_outbox(store: Store, outbox: mpsc::Sender<TaskEvent>) -> (Recorder, tokio::task::JoinHandle<()>) {
        Self::start_inner(store, Some(outbox))
    }

    fn start_inner(store: Store, outbox: Option<mpsc::Sender<TaskEvent>>) -> (Recorder, tokio::task::JoinHandle<()>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let (broadcast, _) = broadcast::channel(BROADCAST_CAPACITY);
        let failed = Arc::new(AtomicU64::new(0));
        let join = tokio::spawn(run(store, rx, broadcast.clone(), failed.clone(), outbox));
        (Recorder { tx, broadcast, failed }, join)
    }

    /// Numbers and stores `events` (in order, after what was emitted before) and answers once
    /// they are stored, or with why they were not; only stored events are broadcast.
    pub async fn record(&self, events: Vec<(TaskId, EventKind, DateTime<Utc>)>) -> Result<(), String> {
        let (tx, rx) = oneshot::channel();
        self.tx.send(Cmd::Record(events, tx)).map_err(|_| "the recorder has stopped".to_string())?;
        rx.await.map_err(|_| "the recorder has stopped".to_string())?
    }

    pub fn sink(&self) -> Arc<dyn EventSink> {
        Arc::new(Sink { tx: self.tx.clone() })
    }

    /// Events stored from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<TaskEvent> {
        self.broadcast.subscribe()
    }

    /// Waits until every event emitted before this call is stored and broadcast.
    pub async fn flush(&self) {
        let (tx, rx) = oneshot::channel();
        if self.tx.send(Cmd::Flush(tx)).is_ok() {
            let _ = rx.await;
        }
    }

    /// Events that could not be stored after retries; they were not broadcast either.
    pub fn failed_writes(&self) -> u64 {
        self.failed.load(Ordering::Relaxed)
    }
}

/// Attempts at storing one batch; appends are idempotent on (task, seq), so retrying is safe.
const STORE_ATTEMPTS: u32 = 5;

/// Stores a batch, retrying with backoff (50 ms doubling, about 1.5 s in all) so a brief
/// database outage (a restart, dropped connections) loses nothing.
async fn append_with_retry(store: &Store, events: &[TaskEvent]) -> Result<(), String> {
    let mut pause = std::time::Duration::from_millis(50);
    let mut attempt = 1;
    loop {
        match store.append_events(events).await {
            Ok(()) => return Ok(()),
            Err(error) if attempt < STORE_ATTEMPTS => {
                tracing::warn!(%error, attempt, "storing task events failed; retrying");
                tokio::time::sleep(pause).await;
                pause *= 2;
                attempt += 1;
            }
            Err(error) => return Err(error.to_string()),
        }
    }
}

/// The seq the next event of `task_id` gets.
async fn take_seq(store: &Store, next_seq: &mut HashMap<TaskId, u64>, task_id: TaskId) -> u64 {
    let seq = match next_seq.get(&task_id) {
        Some(s) => *s,
        // A task seen for the first time may have events from an earlier run.
        None => store.next_seq(task_id).await.unwrap_or(1),
    };
    next_seq.insert(task_id, seq + 1);
    seq
}

async fn run(
    store: Store,
    mut rx: mpsc::UnboundedReceiver<Cmd>,
    broadcast: broadcast::Sender<TaskEvent>,
    failed: Arc<AtomicU64>,
    outbox: Option<mpsc::Sender<TaskEvent>>,
) {
    let mut next_seq: HashMap<TaskId, u64> = HashMap::new();
    // Each event with whether it came through `record` (its sender retries what fails).
    let mut batch: Vec<(TaskEvent, bool)> = Vec::new();
    let mut flushes = Vec::new();
    let mut recorded = Vec::new();
    let mut outbox_full = 0u64;
    while let Some(first) = rx.recv().await {
        let mut cmd = Some(first);
        while let Some(c) = cmd.take() {
            match c {
                Cmd::Flush(done) => flushes.push(done),
                Cmd::Event(task_id, kind, at) => {
                    let seq = take_seq(&store, &mut next_seq, task_id).await;
                    batch.push((TaskEvent { task_id, seq, at, kind }, false));
                }
                Cmd::Record(events, done) => {
                    for (task_id, kind, at) in events {
                        let seq = take_seq(&store, &mut next_seq, task_id).await;
                        batch.push((TaskEvent { task_id, seq, at, kind }, true));
                    }
                    recorded.push(done);
                }
            }
            if batch.len() < MAX_BATCH {
                cmd = rx.try_recv().ok();
            }
        }
        if !batch.is_empty() {
            let events: Vec<TaskEvent> = batch.iter().map(|(e, _)| e.clone()).collect();
            let stored = append_with_retry(&store, &events).await;
            if let Err(error) = &stored {
                failed.fetch_add(batch.len() as u64, Ordering::Relaxed);
                tracing::error!(%error, events = batch.len(), "cannot store task events");
                // Number the affected tasks' next events from what the store really has, so
                // events sent again leave no gap.
                for (event, _) in &batch {
                    next_seq.remove(&event.task_id);
                }
            }
            for (event, _) in batch.drain(..) {
                if stored.is_err() {
                    // Never broadcast what the store lacks: a watcher must be able to re-read
                    // every event it saw. Recorded events come again (their sender was told).
                    continue;
                }
                if let Some(outbox) = &outbox
                    && let Err(mpsc::error::TrySendError::Full(_)) = outbox.try_send(event.clone())
                {
                    outbox_full += 1;
                    if outbox_full.is_power_of_two() {
                        tracing::warn!(dropped = outbox_full, "the event outbox is full; stored events not handed on");
                    }
                }
                let _ = broadcast.send(event);
            }
            for done in recorded.drain(..) {
                let _ = done.send(stored.clone());
            }
        }
        for done in recorded.drain(..) {
            let _ = done.send(Ok(()));
        }
        for done in flushes.drain(..) {
            let _ = done.send(());
        }
    }
}
