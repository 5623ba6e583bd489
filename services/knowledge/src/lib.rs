//! The knowledge service: indexes projects and documentation into knowledge chunks and will
//! answer the agents' context queries.
//!
//! What exists so far is the indexing front end, without storage or embeddings:
//! [`scan::scan`] walks a workspace (gitignore-aware) and hashes each file, [`scan::diff`]
//! compares two walks so a re-index only touches added, changed and removed files, and
//! [`Chunker`] turns one file into code-aware [`Chunk`]s (tree-sitter units with signatures and
//! scopes for Rust, Python, JavaScript, TypeScript, Go and Java; Markdown sections; text by
//! size), skipping binaries, invalid UTF-8, oversized and generated files with a reason. The
//! LanceDB table, embeddings and search come next, behind the same entry point.
//!
//! The network side serves gRPC health checking, reporting [`GRPC_SERVICES`] as serving, and
//! server reflection, and nothing else yet. It is started by [`run`], from `turbo-coder serve
//! knowledge` or from its own binary `turbo-knowledge` (`src/main.rs`).
//!
//! The tree-sitter grammars are C compiled by this crate's build and are used nowhere else:
//! other crates stay fast to build by never depending on them.
//!
//! # Layout
//! - `error`: errors.
//! - `chunk`: [`Chunker`], one file's bytes to [`Chunk`]s, with one submodule per step
//!   (language, screening, syntax walk, per-grammar units, Markdown, line windows).
//! - `scan`: workspace walk with content hashes, and the diff between two walks.
//! - `hash`: SHA-256 hex of files and chunks, shared by both.
//! - this file: [`run`], the network entry point, and [`GRPC_SERVICES`].
//! - `main.rs`: the `turbo-knowledge` binary: arguments, config, telemetry, then [`run`].

pub mod chunk;
mod error;
mod hash;
pub mod scan;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use chunk::{Chunk, ChunkKind, Chunked, Chunker, Fallback, Language, Limits, SkipReason};
pub use error::{Error, Result};
pub use hash::sha256_hex;
pub use scan::{Changes, Scan, ScannedFile, diff, scan};

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
