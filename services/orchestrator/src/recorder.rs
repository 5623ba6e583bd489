//! The recorder: the single writer of task events. It numbers each task's events, stores them
//! (the store projects phases, steps, tool calls and token usage from them) and only then
//! broadcasts them, so a watcher never sees an event the store does not have. It also keeps a
//! task `blocked` while one of its calls waits for approval: an approval request moves the
//! task from `in_progress` to `blocked`, its decision back, each with a status change event.
//!
//! Events come from this process's sink ([`Recorder::sink`], fire and forget) or, in the
//! cluster, from the workers through [`Recorder::record`], which answers once the events are
//! stored so the caller can acknowledge them to NATS only then. With an outbox
//! ([`Recorder::start_with_outbox`]) every stored event is also handed on, numbered, to be
//! published (`turbo.events.task.<task_id>` in the cluster).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use chrono::{DateTime, Utc};
use tokio::sync::{broadcast, mpsc, oneshot};
use turbo_core::event::{EventKind, EventSink, TaskEvent};
use turbo_core::ids::TaskId;
use turbo_core::task::TaskStatus;
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

/// The recorder's memory of tasks: the seq each one's next event gets, and which ones it
/// marked blocked for an approval.
#[derive(Default)]
struct Tasks {
    next_seq: HashMap<TaskId, u64>,
    blocked: HashSet<TaskId>,
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

/// Where stored events go.
struct Out {
    broadcast: broadcast::Sender<TaskEvent>,
    outbox: Option<mpsc::Sender<TaskEvent>>,
    outbox_full: u64,
}

impl Out {
    fn send(&mut self, event: TaskEvent) {
        if let Some(outbox) = &self.outbox
            && let Err(mpsc::error::TrySendError::Full(_)) = outbox.try_send(event.clone())
        {
            self.outbox_full += 1;
            if self.outbox_full.is_power_of_two() {
                tracing::warn!(dropped = self.outbox_full, "the event outbox is full; stored events not handed on");
            }
        }
        let _ = self.broadcast.send(event);
    }
}

/// Stores `batch` (emptying it) and hands its events on.
async fn write(
    store: &Store,
    batch: &mut Vec<TaskEvent>,
    state: &mut Tasks,
    failed: &AtomicU64,
    out: &mut Out,
) -> Result<(), String> {
    let events = std::mem::take(batch);
    let stored = append_with_retry(store, &events).await;
    if let Err(error) = &stored {
        failed.fetch_add(events.len() as u64, Ordering::Relaxed);
        tracing::error!(%error, events = events.len(), "cannot store task events");
        // Number the affected tasks' next events from what the store really has, so events
        // sent again leave no gap. Never broadcast what the store lacks: a watcher must be
        // able to re-read every event it saw. Recorded events come again (their sender was
        // told).
        for event in &events {
            state.next_seq.remove(&event.task_id);
        }
        return stored;
    }
    for event in events {
        out.send(event);
    }
    Ok(())
}

/// Numbers an event into `batch`. An approval event is followed by the status change it
/// makes (a task waits `blocked` from a call's approval request to its decision), stored
/// before the batch is: a watcher that sees the change finds the task so.
async fn enqueue(
    store: &Store,
    state: &mut Tasks,
    batch: &mut Vec<TaskEvent>,
    (task_id, kind, at): (TaskId, EventKind, DateTime<Utc>),
) {
    let change = approval_status(&kind);
    if let EventKind::StatusChanged { to, .. } = &kind
        && to.is_terminal()
    {
        state.blocked.remove(&task_id);
    }
    let seq = take_seq(store, &mut state.next_seq, task_id).await;
    batch.push(TaskEvent { task_id, seq, at, kind });
    let Some((from, to, reason)) = change else { return };
    let changed = match store.swap_task_status(task_id, from, to).await {
        Ok(Some(had)) if had == from => {
            if to == TaskStatus::Blocked {
                state.blocked.insert(task_id);
            }
            true
        }
        // The run went on after the decision reached it, before the decision's event reached
        // this recorder, and stored the task since (in progress, or ended): the change is
        // told all the same, in its place after the decision (the run's own later changes
        // come after it). Not after the run's end, which forgets the task here.
        Ok(Some(_)) => to == TaskStatus::InProgress && state.blocked.contains(&task_id),
        // It is gone, it ended meanwhile, or this is a repeat.
        Ok(None) => false,
        Err(error) => {
            tracing::warn!(%error, %task_id, to = to.as_str(), "cannot record the task's approval status");
            false
        }
    };
    if to == TaskStatus::InProgress {
        state.blocked.remove(&task_id);
    }
    if changed {
        let seq = take_seq(store, &mut state.next_seq, task_id).await;
        batch.push(TaskEvent { task_id, seq, at, kind: EventKind::StatusChanged { from, to, reason } });
    }
}

/// The status change an approval event makes, with its reason.
fn approval_status(kind: &EventKind) -> Option<(TaskStatus, TaskStatus, Option<String>)> {
    match kind {
        EventKind::ApprovalRequested { tool, approval_id, .. } => Some((
            TaskStatus::InProgress,
            TaskStatus::Blocked,
            Some(format!(
                "{tool} call {approval_id} waits for approval: `turbo-coder approvals approve|deny {approval_id}`"
            )),
        )),
        EventKind::ApprovalDecided { tool, approved, decided_by, .. } => Some((
            TaskStatus::Blocked,
            TaskStatus::InProgress,
            Some(format!("{tool} call {} by {decided_by}", if *approved { "approved" } else { "denied" })),
        )),
        _ => None,
    }
}

async fn run(
    store: Store,
    mut rx: mpsc::UnboundedReceiver<Cmd>,
    broadcast: broadcast::Sender<TaskEvent>,
    failed: Arc<AtomicU64>,
    outbox: Option<mpsc::Sender<TaskEvent>>,
) {
    let mut state = Tasks::default();
    let mut batch: Vec<TaskEvent> = Vec::new();
    let mut flushes = Vec::new();
    let mut recorded = Vec::new();
    let mut out = Out { broadcast, outbox, outbox_full: 0 };
    while let Some(first) = rx.recv().await {
        let mut cmd = Some(first);
        while let Some(c) = cmd.take() {
            match c {
                Cmd::Flush(done) => flushes.push(done),
                Cmd::Event(task_id, kind, at) => enqueue(&store, &mut state, &mut batch, (task_id, kind, at)).await,
                Cmd::Record(events, done) => {
                    for event in events {
                        enqueue(&store, &mut state, &mut batch, event).await;
                    }
                    recorded.push(done);
                }
            }
            if batch.len() < MAX_BATCH {
                cmd = rx.try_recv().ok();
            }
        }
        if !batch.is_empty() {
            let stored = write(&store, &mut batch, &mut state, &failed, &mut out).await;
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
