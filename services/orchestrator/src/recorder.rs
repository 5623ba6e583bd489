//! The recorder: the single writer of task events. It numbers each task's events, stores them
//! (the store projects phases, steps, tool calls and token usage from them) and only then
//! broadcasts them, so a watcher never sees an event the store does not have.

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
        let (tx, rx) = mpsc::unbounded_channel();
        let (broadcast, _) = broadcast::channel(BROADCAST_CAPACITY);
        let failed = Arc::new(AtomicU64::new(0));
        let join = tokio::spawn(run(store, rx, broadcast.clone(), failed.clone()));
        (Recorder { tx, broadcast, failed }, join)
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

    /// Events that could not be stored (the store was failing); they were still broadcast.
    pub fn failed_writes(&self) -> u64 {
        self.failed.load(Ordering::Relaxed)
    }
}

async fn run(
    store: Store,
    mut rx: mpsc::UnboundedReceiver<Cmd>,
    broadcast: broadcast::Sender<TaskEvent>,
    failed: Arc<AtomicU64>,
) {
    let mut next_seq: HashMap<TaskId, u64> = HashMap::new();
    let mut batch: Vec<TaskEvent> = Vec::new();
    let mut flushes = Vec::new();
    while let Some(first) = rx.recv().await {
        let mut cmd = Some(first);
        while let Some(c) = cmd.take() {
            match c {
                Cmd::Flush(done) => flushes.push(done),
                Cmd::Event(task_id, kind, at) => {
                    let seq = match next_seq.get(&task_id) {
                        Some(s) => *s,
                        // A task seen for the first time may have events from an earlier run.
                        None => store.next_seq(task_id).await.unwrap_or(1),
                    };
                    next_seq.insert(task_id, seq + 1);
                    batch.push(TaskEvent { task_id, seq, at, kind });
                }
            }
            if batch.len() < MAX_BATCH {
                cmd = rx.try_recv().ok();
            }
        }
        if !batch.is_empty() {
            if let Err(error) = store.append_events(&batch).await {
                failed.fetch_add(batch.len() as u64, Ordering::Relaxed);
                tracing::error!(%error, events = batch.len(), "cannot store task events");
            }
            for event in batch.drain(..) {
                let _ = broadcast.send(event);
            }
        }
        for done in flushes.drain(..) {
            let _ = done.send(());
        }
    }
}
