//! The gateway: the cluster's front door for clients (the CLI, the web UI, scripts), which will
//! authenticate requests and route them to the orchestrator.
//!
//! At this stage the gateway serves gRPC health checking, reporting [`GRPC_SERVICES`] as
//! serving, and server reflection, and nothing else: its task, project and session APIs (and
//! the HTTP edge) come later, behind the same entry point. It is started by [`run`], from
//! `turbo-coder serve gateway` or from its own binary `turbo-gateway` (`src/main.rs`).
//!
//! # Layout
//! - `error`: errors.
//! - this file: [`run`], the network entry point, and [`GRPC_SERVICES`].
//! - `main.rs`: the `turbo-gateway` binary: arguments, config, telemetry, then [`run`].

mod error;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use error::{Error, Result};

/// The gRPC services the gateway reports as serving in its health checks.
pub const GRPC_SERVICES: &[&str] =
    &["turbo.tasks.v1.TaskService", "turbo.projects.v1.ProjectService", "turbo.sessions.v1.SessionService"];

/// Serves the gateway on `listener` until `shutdown` is cancelled, then reports not-serving and
/// drains. For now: gRPC health ([`GRPC_SERVICES`]) and reflection; `_config` is not read yet.
pub async fn run(_config: &turbo_config::Config, listener: TcpListener, shutdown: CancellationToken) -> Result<()> {
    let addr = listener.local_addr().map(|a| a.to_string()).unwrap_or_else(|_| "an unknown address".into());
    tracing::info!(%addr, services = ?GRPC_SERVICES, "gateway serving health and reflection");
    turbo_proto::server::serve_health(GRPC_SERVICES, listener, shutdown)
        .await
        .map_err(|e| Error::Serve { addr, reason: e.to_string() })
}
