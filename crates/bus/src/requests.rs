//! Serving request-reply subjects for people and scripts (`nats req`): each request is answered
//! on its own task, a bounded number at once, so a slow or failing one never stops the
//! subscription; on shutdown the subscriptions are drained and what was already delivered is
//! answered. The orchestrator's control subjects and the knowledge subjects are served so.

use std::future::Future;
use std::time::Duration;

use async_nats::{Message, Subscriber};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_stream::{StreamExt, StreamMap};
use tokio_util::sync::CancellationToken;

/// How many requests are answered at once, and how long a drain may wait at shutdown for the
/// server to confirm the unsubscribe (on a broken connection it never does).
#[derive(Clone, Copy, Debug)]
pub struct RequestLimits {
    pub max_in_flight: usize,
    pub drain_wait: Duration,
}

/// The connection closed while the subjects were being served.
#[derive(Debug, thiserror::Error)]
#[error("the NATS connection closed")]
pub struct ConnectionClosed;

/// Answers the requests arriving on `subscriptions` with `answer`, one task per request and at
/// most `limits.max_in_flight` at once, until `shutdown`; then drains the subscriptions,
/// answers the requests delivered before the drain, and returns once every answer is done.
/// `what` names the subjects in logs (e.g. "control").
pub async fn serve_requests<F, Fut>(
    subscriptions: &mut StreamMap<&'static str, Subscriber>,
    shutdown: &CancellationToken,
    limits: RequestLimits,
    what: &str,
    mut answer: F,
) -> Result<(), ConnectionClosed>
where
    F: FnMut(Message) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let mut answering = JoinSet::new();
    let mut drain_deadline: Option<Instant> = None;
    let ended = loop {
        let drain_timeout = async {
            match drain_deadline {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = shutdown.cancelled(), if drain_deadline.is_none() => {
                for subscriber in subscriptions.values_mut() {
                    if let Err(error) = subscriber.drain().await {
                        tracing::debug!(%error, what, "cannot drain a request subscription");
                    }
                }
                drain_deadline = Some(Instant::now() + limits.drain_wait);
            }
            _ = drain_timeout => break Ok(()),
            message = subscriptions.next() => match message {
                Some((_, message)) => {
                    while answering.len() >= limits.max_in_flight {
                        answering.join_next().await;
                    }
                    answering.spawn(answer(message));
                }
                None if drain_deadline.is_some() => break Ok(()),
                None => break Err(ConnectionClosed),
            },
            Some(done) = answering.join_next() => {
                if let Err(error) = done {
                    tracing::error!(%error, what, "a request task failed");
                }
            }
        }
    };
    while let Some(done) = answering.join_next().await {
        if let Err(error) = done {
            tracing::error!(%error, what, "a request task failed");
        }
    }
    ended
}
