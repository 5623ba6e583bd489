//! [`NatsEventSink`]: agent events from a worker to `turbo.events.raw.<task_id>`, where the
//! orchestrator reads, numbers and stores them.
//!
//! `emit` must never block an agent, so it only puts the event in a bounded channel; one task
//! publishes from it in order, keeping a window of publishes in flight. When NATS is slower than
//! the agents for long enough to fill the channel, further events are dropped and counted rather
//! than stalling the work.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use async_nats::HeaderMap;
use async_nats::jetstream::{self, Context};
use chrono::Utc;
use tokio::sync::{mpsc, oneshot};
use turbo_bus::publish::send_stored;
use turbo_bus::{RawEvent, subjects};
use turbo_core::event::{EventKind, EventSink};
use turbo_core::ids::TaskId;

/// Events waiting to be published at most.
const CHANNEL_CAPACITY: usize = 4096;
/// Publishes awaiting the server's acknowledgement at most.
const IN_FLIGHT: usize = 64;

enum Cmd {
    Event(Box<RawEvent>),
    Flush(oneshot::Sender<()>),
}

/// Publishes agent events to the raw events stream; cheap to clone.
#[derive(Clone)]
pub struct NatsEventSink {
    tx: mpsc::Sender<Cmd>,
    dropped: Arc<AtomicU64>,
    failed: Arc<AtomicU64>,
    /// The highest stream sequence the server confirmed for an event of this sink; 0 for none.
    stored: Arc<AtomicU64>,
}

impl std::fmt::Debug for NatsEventSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NatsEventSink").field("dropped", &self.dropped()).field("failed", &self.failed()).finish()
    }
}

impl NatsEventSink {
    /// Starts the publishing task; it ends once every clone of the sink is dropped and the
    /// events already emitted are published.
    pub fn start(client: async_nats::Client) -> (NatsEventSink, tokio::task::JoinHandle<()>) {
        let (tx, rx) = mpsc::channel(CHANNEL_CAPACITY);
        let failed = Arc::new(AtomicU64::new(0));
        let stored = Arc::new(AtomicU64::new(0));
        let join = tokio::spawn(publish_events(jetstream::new(client), rx, failed.clone(), stored.clone()));
        (NatsEventSink { tx, dropped: Arc::new(AtomicU64::new(0)), failed, stored }, join)
    }

    /// The sequence in `TURBO_EVENTS_RAW` up to which this sink's events are stored: after
    /// [`NatsEventSink::flush`], every event emitted before it is at or below it. None before
    /// the first event is stored.
    pub fn stored_through(&self) -> Option<u64> {
        Some(self.stored.load(Ordering::Relaxed)).filter(|s| *s > 0)
    }

    /// Waits until every event emitted before this call is stored (or failed to be).
    pub async fn flush(&self) {
        let (tx, rx) = oneshot::channel();
        if self.tx.send(Cmd::Flush(tx)).await.is_ok() {
            let _ = rx.await;
        }
    }

    /// Events dropped because the channel was full.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Events NATS did not store.
    pub fn failed(&self) -> u64 {
        self.failed.load(Ordering::Relaxed)
    }
}

impl EventSink for NatsEventSink {
    fn emit(&self, task_id: TaskId, kind: EventKind) {
        let event = RawEvent { task_id, at: Utc::now(), kind };
        match self.tx.try_send(Cmd::Event(Box::new(event))) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(_)) => {
                let dropped = self.dropped.fetch_add(1, Ordering::Relaxed) + 1;
                if dropped.is_power_of_two() {
                    tracing::warn!(%task_id, dropped, "nats is too slow for the agent events; dropping some");
                }
            }
            // The publishing task is gone (runtime shutting down); nobody can record this event.
            Err(mpsc::error::TrySendError::Closed(_)) => {}
        }
    }
}

async fn publish_events(js: Context, mut rx: mpsc::Receiver<Cmd>, failed: Arc<AtomicU64>, stored: Arc<AtomicU64>) {
    let mut pending = std::collections::VecDeque::new();
    while let Some(cmd) = rx.recv().await {
        match cmd {
            Cmd::Event(event) => {
                let subject = subjects::events_raw(event.task_id);
                match send_stored(&js, subject, event.as_ref(), HeaderMap::new()).await {
                    Ok(ack) => pending.push_back(ack),
                    Err(error) => {
                        failed.fetch_add(1, Ordering::Relaxed);
                        tracing::warn!(
                            %error, task_id = %event.task_id, kind = event.kind.name(),
                            "cannot publish an agent event"
                        );
                    }
                }
                if pending.len() >= IN_FLIGHT {
                    settle(pending.drain(..1), &failed, &stored).await;
                }
            }
            Cmd::Flush(done) => {
                settle(pending.drain(..), &failed, &stored).await;
                let _ = done.send(());
            }
        }
        if rx.is_empty() {
            settle(pending.drain(..), &failed, &stored).await;
        }
    }
    settle(pending.drain(..), &failed, &stored).await;
}

async fn settle(
    acks: impl Iterator<Item = async_nats::jetstream::context::PublishAckFuture>,
    failed: &AtomicU64,
    stored: &AtomicU64,
) {
    for ack in acks {
        match ack.await {
            Ok(ack) => {
                stored.fetch_max(ack.sequence, Ordering::Relaxed);
            }
            Err(error) => {
                failed.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(%error, "nats did not store an agent event");
            }
        }
    }
}
