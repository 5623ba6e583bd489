//! Test helpers for turbo-coder. The centrepiece is `ScriptedModelServer`: a real HTTP server
//! that speaks Ollama's and OpenAI's chat and embedding APIs and answers from a script, so the
//! model layer, the knowledge service and everything above them can be tested end to end
//! without a model.
//!
//! ```no_run
//! # async fn demo() -> std::io::Result<()> {
//! use turbo_testkit::{ModelDef, Reply, Script, ScriptedModelServer};
//! let server = ScriptedModelServer::start(
//!     Script::new()
//!         .model(ModelDef::new("qwen3:8b", 40960).architecture("qwen3"))
//!         .replies("qwen3:8b", vec![Reply::text("hello")]),
//! )
//! .await?;
//! // point an Ollama or OpenAI client at server.url(), then inspect server.requests()
//! # Ok(()) }
//! ```
//!
//! Chat replies are consumed per model name in order. A chat request for a model with no reply
//! left gets HTTP 500 "script exhausted for model X"; one for an unknown model gets 404 in the
//! protocol's error shape. Usage not given by `Reply::WithUsage` is deterministic: a quarter of
//! the characters of the request's messages and of the reply (at least 1 each).
//!
//! Embedding requests (`/api/embed`, `/v1/embeddings`) to a declared model need no script: each
//! input gets its `hashed_embedding` (a unit bag-of-words vector, 64 long unless
//! `Script::embedding_dimension`), so similar texts score higher. `Script::embed_replies` makes
//! the next requests fail instead (`EmbedReply::Status`, `Dimension`, `DropLast`, `Garbage`).
//!
//! # Layout
//! - `error`: the crate's `Error` (scenario loading).
//! - `script`: `Script`, `ModelDef`, `Reply` and `EmbedReply`, built in code or read from a JSON
//!   scenario.
//! - `server`: `ScriptedModelServer`, request recording, API-key check and routing.
//! - `ollama`: the `/api/chat`, `/api/show`, `/api/tags` and `/api/embed` answers.
//! - `openai`: the `/v1/chat/completions`, `/v1/models` and `/v1/embeddings` answers.
//! - `embed`: what both embedding endpoints share: inputs, scripted replies, `hashed_embedding`.
//! - `nats`: `NatsServer`, a real `nats-server` with JetStream on a free port, per test.
//! - `postgres`: `PostgresServer`, a Postgres server of a test's own (initdb, free port), to stop
//!   and restart as an outage.
//! - `bin/scripted-model-server`: the server as a program, for manual tries and benchmarks.

mod embed;
mod error;
mod nats;
mod ollama;
mod openai;
mod postgres;
mod script;
mod server;

pub use embed::hashed_embedding;
pub use error::{Error, Result};
pub use nats::NatsServer;
pub use postgres::PostgresServer;
pub use script::{
    DEFAULT_ARCHITECTURE, DEFAULT_CONTEXT_LENGTH, DEFAULT_EMBEDDING_DIMENSION, EmbedReply, ModelDef, Reply, Script,
};
pub use server::{RecordedRequest, ScriptedModelServer};
