//! Test helpers for turbo-coder. The centrepiece is `ScriptedModelServer`: a real HTTP server
//! that speaks Ollama's and OpenAI's chat APIs and answers from a script, so the model layer and
//! everything above it can be tested end to end without a model.
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
//! # Layout
//! - `error`: the crate's `Error` (scenario loading).
//! - `script`: `Script`, `ModelDef` and `Reply`, built in code or read from a JSON scenario.
//! - `server`: `ScriptedModelServer`, request recording, API-key check and routing.
//! - `ollama`: the `/api/chat`, `/api/show` and `/api/tags` answers.
//! - `openai`: the `/v1/chat/completions` and `/v1/models` answers.
//! - `nats`: `NatsServer`, a real `nats-server` with JetStream on a free port, per test.
//! - `postgres`: `PostgresServer`, a Postgres server of a test's own (initdb, free port), to stop
//!   and restart as an outage.
//! - `bin/scripted-model-server`: the server as a program, for manual tries and benchmarks.

mod error;
mod nats;
mod ollama;
mod openai;
mod postgres;
mod script;
mod server;

pub use error::{Error, Result};
pub use nats::NatsServer;
pub use postgres::PostgresServer;
pub use script::{DEFAULT_ARCHITECTURE, DEFAULT_CONTEXT_LENGTH, ModelDef, Reply, Script};
pub use server::{RecordedRequest, ScriptedModelServer};
