//! The knowledge service: the only owner of the LanceDB dataset of knowledge chunks. It
//! indexes a project's workspace (code-aware chunks, embedded by the configured model, re-indexed
//! incrementally by content hash), stores knowledge added by hand, answers hybrid searches
//! (vector, BM25 over the text and over qualified names, ranked by [`rerank`]) and builds the
//! agents' context from them ([`context`]).
//!
//! It serves gRPC (`turbo.knowledge.v1.KnowledgeService`, health, reflection) and the
//! `turbo.knowledge.*` NATS subjects, started by [`run`], from `turbo-coder serve knowledge` or
//! its own binary `turbo-knowledge` (`src/main.rs`); the one-process mode embeds
//! [`KnowledgeBase`] directly.
//!
//! The tree-sitter grammars are C compiled by this crate's build and are used nowhere else:
//! other crates stay fast to build by never depending on them.
//!
//! # Layout
//! - `error`: errors.
//! - `chunk`: [`Chunker`], one file's bytes to [`Chunk`]s, with one submodule per step
//!   (language, screening, syntax walk, per-grammar units, Markdown, line windows).
//! - `base`: [`KnowledgeBase`], the [`Knowledge`] implementation over the dataset and an
//!   embedder; `dataset`: the LanceDB table; `embed`: the embedders; `index`: a workspace's
//!   incremental index; `search` and `rerank`: hybrid retrieval; `context`: the agents' context;
//!   `eval`: the retrieval-quality evaluation's corpus and scores.
//! - `scan`: workspace walk with content hashes, and the diff between two walks.
//! - `hash`: SHA-256 hex of files and chunks, shared by both.
//! - `grpc`: [`KnowledgeGrpc`], `turbo.knowledge.v1.KnowledgeService` over any
//!   `Arc<dyn Knowledge>` (agents call it through `turbo_proto::RemoteKnowledge`).
//! - `nats`: the `turbo.knowledge.*` request-reply subjects for operators, plain JSON.
//! - this file: [`run`] and [`serve`], the network entry points, and [`GRPC_SERVICES`].
//! - `main.rs`: the `turbo-knowledge` binary: arguments, config, telemetry, then [`run`].

pub mod base;
pub mod chunk;
pub mod context;
pub mod dataset;
pub mod embed;
mod error;
pub mod eval;
mod grpc;
mod hash;
pub mod index;
pub mod nats;
pub mod rerank;
pub mod scan;
pub mod search;
#[cfg(test)]
mod tests;

use std::sync::Arc;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use turbo_core::knowledge::Knowledge;

pub use base::KnowledgeBase;
pub use chunk::{Chunk, ChunkKind, Chunked, Chunker, Fallback, Language, Limits, SkipReason};
pub use embed::{EmbedError, Embedder};
pub use error::{Error, Result};
pub use grpc::KnowledgeGrpc;
pub use hash::sha256_hex;
pub use scan::{Changes, Scan, ScannedFile, diff, scan};

/// The gRPC services the knowledge service reports as serving in its health checks.
pub const GRPC_SERVICES: &[&str] = &["turbo.knowledge.v1.KnowledgeService"];

/// Opens the configured knowledge base and [`serve`]s it on `listener` until `shutdown` is
/// cancelled. What keeps the service from starting (a missing model directory, a dataset built
/// with another embedding model, no NATS at `cluster.nats_url`) is a
/// [`turbo_service::Misconfigured`], so the binary exits with its usage code (2); this is why
/// `run` answers an `anyhow::Error`, which `turbo_service::finish` reads. A failure while
/// serving is any other error.
pub async fn run(
    config: &turbo_config::Config,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let misconfigured = |e: Error| turbo_service::Misconfigured(e.to_string());
    let knowledge = KnowledgeBase::open(config).await.map_err(misconfigured)?;
    let nats = connect_nats(config).await.map_err(misconfigured)?;
    serve_with(Arc::new(knowledge), nats, listener, shutdown).await?;
    Ok(())
}

/// Serves `knowledge` on `listener` until `shutdown` is cancelled, then reports not-serving
/// and drains: `turbo.knowledge.v1.KnowledgeService` ([`KnowledgeGrpc`]) with gRPC health
/// ([`GRPC_SERVICES`]) and reflection, and, when `cluster.nats_url` is set, the
/// `turbo.knowledge.*` NATS subjects ([`nats::serve_nats`]). Fails when NATS cannot be reached
/// at start or the gRPC server fails; the NATS subjects stopping early is logged, and gRPC goes
/// on.
pub async fn serve(
    knowledge: Arc<dyn Knowledge>,
    config: &turbo_config::Config,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> Result<()> {
    let nats = connect_nats(config).await?;
    serve_with(knowledge, nats, listener, shutdown).await
}

async fn connect_nats(config: &turbo_config::Config) -> Result<Option<turbo_bus::async_nats::Client>> {
    let Some(url) = &config.cluster.nats_url else { return Ok(None) };
    let client = turbo_bus::connect(url).await.map_err(|e| Error::Serve {
        addr: format!("NATS at {url}"),
        reason: format!("{e}; or unset cluster.nats_url to serve gRPC only"),
    })?;
    Ok(Some(client))
}

async fn serve_with(
    knowledge: Arc<dyn Knowledge>,
    nats: Option<turbo_bus::async_nats::Client>,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> Result<()> {
    let addr = listener.local_addr().map(|a| a.to_string()).unwrap_or_else(|_| "an unknown address".into());
    // Stops the NATS subjects when gRPC stops, also when it fails without a shutdown.
    let stop_nats = shutdown.child_token();
    let responder = nats.map(|client| {
        let (knowledge, stop) = (knowledge.clone(), stop_nats.clone());
        tokio::spawn(async move {
            if let Err(error) = nats::serve_nats(client, knowledge, stop).await {
                tracing::error!(%error, "the knowledge NATS subjects stopped; gRPC goes on");
            }
        })
    });
    tracing::info!(%addr, services = ?GRPC_SERVICES, nats = responder.is_some(), "knowledge service serving");
    let routes = KnowledgeGrpc::new(knowledge).routes();
    let served = turbo_proto::server::serve(GRPC_SERVICES, routes, listener, shutdown).await;
    stop_nats.cancel();
    if let Some(responder) = responder
        && let Err(error) = responder.await
    {
        tracing::error!(%error, "the knowledge NATS subjects failed");
    }
    served.map_err(|e| Error::Serve { addr, reason: e.to_string() })
}
