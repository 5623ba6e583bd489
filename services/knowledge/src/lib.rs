//! The knowledge service: will index projects and documentation into knowledge chunks and
//! answer the agents' context queries.
//!
//! At this stage it serves gRPC health checking, reporting [`GRPC_SERVICES`] as serving, and
//! server reflection, and nothing else: indexing, embeddings and the knowledge API come later,
//! behind the same entry point. It is started by [`run`], from `turbo-coder serve knowledge` or
//! from its own binary `turbo-knowledge` (`src/main.rs`).
//!
//! # Layout
//! - `error`: errors.
//! - this file: [`run`], the network entry point, and [`GRPC_SERVICES`].
//! - `main.rs`: the `turbo-knowledge` binary: arguments, config, telemetry, then [`run`].

mod error;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use error::{Error, Result};

/// The gRPC services the knowledge service reports as serving in its health checks.
pub const GRPC_SERVICES: &[&str] = &["turbo.knowledge.v1.KnowledgeService"];

/// Serves the knowledge service on `listener` until `shutdown` is cancelled, then reports
/// not-serving and drains. For now: gRPC health ([`GRPC_SERVICES`]) and reflection; `_config`
/// is not read yet.
pub async fn run(_config: &turbo_config::Config, listener: TcpListener, shutdown: CancellationToken) -> Result<()> {
    let addr = listener.local_addr().map(|a| a.to_string()).unwrap_or_else(|_| "an unknown address".into());
    tracing::info!(%addr, services = ?GRPC_SERVICES, "knowledge service serving health and reflection");
    turbo_proto::server::serve_health(GRPC_SERVICES, listener, shutdown)
        .await
        .map_err(|e| Error::Serve { addr, reason: e.to_string() })
}
