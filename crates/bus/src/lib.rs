//! The bus of the cluster: the orchestrator and one agent-worker service per role talk over NATS
//! JetStream. This crate owns everything both ends must agree on: the subjects and streams, the
//! versioned message envelope, the messages themselves, and the setup of streams and consumers.
//! What runs on top (the remote agent client, the worker's consumer) lives with the agents in
//! `turbo-agent-worker`.
//!
//! ```no_run
//! # async fn demo() -> turbo_bus::Result<()> {
//! let client = turbo_bus::connect("nats://127.0.0.1:4222").await?;
//! let js = async_nats::jetstream::new(client);
//! turbo_bus::setup(&js).await?; // idempotent: every service may run it at start
//! # Ok(()) }
//! ```
//!
//! # Layout
//! - `subjects`: every subject, stream and consumer name, documented with who publishes and who
//!   consumes; nothing else builds a subject.
//! - `codec`: the `{"v": 1, "kind": ..., "body": ...}` envelope and its decode errors.
//! - `message`: the messages: work items, results, cancellations, heartbeats, raw events.
//! - `headers`: header names, and W3C trace context carried in headers.
//! - `publish`: publishing with the envelope and the trace context, stored or core.
//! - `results`: reading a stored result back by its request id.
//! - `setup`: creates or updates the streams, the per-role work consumers and the recorder's
//!   consumer of raw events.
//! - `error`: errors.

pub mod codec;
mod error;
pub mod headers;
pub mod message;
pub mod publish;
pub mod requests;
mod results;
mod setup;
pub mod subjects;

pub use async_nats;
pub use codec::{BusMessage, DecodeError, decode, encode};
pub use error::{Error, Result};
pub use message::{CancelRequest, Heartbeat, RawEvent, WorkItem, WorkReply, WorkRequest, WorkResult};
pub use requests::{ConnectionClosed, RequestLimits, serve_requests};
pub use results::find_result;
pub use setup::{BusConfig, delivery_limit, ensure_stream, setup, setup_with};

/// Connects to NATS at `url` (e.g. `nats://127.0.0.1:4222`), naming the connection after this
/// process so `nats-server` monitoring shows who is connected.
pub async fn connect(url: &str) -> Result<async_nats::Client> {
    let name = std::env::current_exe()
        .ok()
        .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        .unwrap_or_else(|| "turbo-coder".into());
    async_nats::ConnectOptions::new()
        .name(name)
        .connect(url)
        .await
        .map_err(|e| Error::Connect { url: url.to_string(), reason: e.to_string() })
}
