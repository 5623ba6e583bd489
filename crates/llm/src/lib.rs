//! The provider-agnostic model layer: one `ChatModel` trait over Ollama's native API and
//! OpenAI-compatible servers, with retries, timing and token accounting, plus the tool-calling
//! loop step agents use (`toolcall::next_turn`) in native or JSON-schema mode.
//!
//! ```no_run
//! # async fn demo() -> turbo_llm::Result<()> {
//! use turbo_llm::{Message, ModelSettings, Provider, connect, toolcall};
//! let model = connect(&ModelSettings::new(Provider::Ollama, "http://localhost:11434", "qwen3:8b"))?;
//! model.check_model().await?;
//! let turn = toolcall::next_turn(model.as_ref(), &[Message::user("hi")], &[], false, None).await?;
//! # let _ = turn; Ok(()) }
//! ```
//!
//! # Layout
//! - `error`: the crate's `Error`; every message says what is wrong and what to do.
//! - `settings`: `ModelSettings` as read from the user's config (provider, url, key, limits).
//! - `message`: the provider-neutral conversation, request and response types.
//! - `model`: the `ChatModel` trait, `connect`, and accounting shared by providers (context
//!   window, usage estimates, timing).
//! - `http`: client, bearer key, status mapping and jittered retries shared by providers.
//! - `ollama`: the native Ollama protocol, which can size `num_ctx` per call.
//! - `openai`: the OpenAI-compatible protocol, including streamed tool-call accumulation.
//! - `json`: finding JSON in model output that wraps it in fences or prose.
//! - `toolcall`: one agent turn (tool calls or a final answer), text recovery of tool calls,
//!   schema mode for models without native tool calling, and structured output.

mod error;
mod http;
mod json;
mod message;
mod model;
mod ollama;
mod openai;
mod settings;
pub mod toolcall;

pub use error::{Error, Result};
pub use message::{CallTiming, ChatRequest, ChatResponse, Message, ModelInfo, ResponseFormat, Role};
pub use model::{ChatModel, FALLBACK_CONTEXT_WINDOW, OnDelta, connect};
pub use settings::{
    DEFAULT_MAX_CONTEXT, DEFAULT_MAX_RETRIES, DEFAULT_REQUEST_TIMEOUT_S, ModelSettings, Provider, ToolMode,
};
pub use toolcall::{Turn, TurnResult, next_turn, recover_tool_calls, structured};
pub use turbo_core::tool::{TokenUsage, ToolCall, ToolSpec};
