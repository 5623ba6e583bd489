//! The `ChatModel` trait every provider implements, `connect`, and the bookkeeping shared by the
//! providers (context sizing, usage estimates, timing, call ids).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use serde_json::Value;
use turbo_core::tool::{TokenUsage, ToolCall};

use crate::error::{Error, Result};
use crate::message::{CallTiming, ChatRequest, ChatResponse, Message, ModelInfo, Role};
use crate::ollama::OllamaModel;
use crate::openai::OpenAiModel;
use crate::settings::{ModelSettings, Provider};

/// Context window assumed when neither the settings nor the server give one. Large enough for
/// an agent's system prompt plus a few files, small enough to fit any model served today.
pub const FALLBACK_CONTEXT_WINDOW: u32 = 8192;

/// Receives assistant text as it streams in.
pub type OnDelta<'a> = Option<&'a (dyn Fn(&str) + Send + Sync)>;

#[async_trait]
pub trait ChatModel: Send + Sync + 'static {
    fn settings(&self) -> &ModelSettings;

    /// One call. When `req.stream`, deltas of assistant text are passed to `on_delta` as they
    /// arrive. Transient failures are retried (up to `max_retries`) only while no delta has been
    /// passed on, so a caller never sees text twice.
    async fn chat(&self, req: ChatRequest, on_delta: OnDelta<'_>) -> Result<ChatResponse>;

    /// Ollama: `POST /api/show`, `model_info["<general.architecture>.context_length"]`.
    /// OpenAI: the model's `/v1/models` entry when it carries a context length field
    /// (`context_length`, `max_model_len`, ...), `None` otherwise. Cached after the first success.
    async fn model_info(&self) -> Result<ModelInfo>;

    /// Fails with `Error::ModelNotFound` (listing what the server has) unless the configured
    /// model is served. Ollama treats `name` and `name:latest` as the same model.
    async fn check_model(&self) -> Result<()>;

    /// The context length agents should budget prompts against: `num_ctx` when set, otherwise
    /// the detected length capped at `max_context`, otherwise `FALLBACK_CONTEXT_WINDOW` (8192,
    /// also capped). For Ollama this is the `options.num_ctx` sent with every call.
    async fn context_window(&self) -> u32 {
        let settings = self.settings();
        if let Some(n) = settings.num_ctx {
            return n;
        }
        match self.model_info().await {
            Ok(info) => resolve_context(settings, info.context_length),
            Err(error) => {
                tracing::warn!(model = %settings.model, %error, fallback = FALLBACK_CONTEXT_WINDOW, "cannot read the context length");
                resolve_context(settings, None)
            }
        }
    }
}

/// Builds the client for `settings` (HTTP timeout = `request_timeout_s`). Does not contact the
/// server; call `check_model` for that.
pub fn connect(settings: &ModelSettings) -> Result<Arc<dyn ChatModel>> {
    Ok(match settings.provider {
        Provider::Ollama => Arc::new(OllamaModel::new(settings)?),
        Provider::Openai => Arc::new(OpenAiModel::new(settings)?),
    })
}

pub(crate) fn resolve_context(settings: &ModelSettings, detected: Option<u32>) -> u32 {
    settings.num_ctx.unwrap_or_else(|| detected.unwrap_or(FALLBACK_CONTEXT_WINDOW).min(settings.max_context))
}

/// Ids for tool calls whose provider gives none. Process-wide so that ids stay unique across
/// a whole conversation, which is what tool results are matched by.
pub(crate) fn next_call_id() -> String {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    format!("call_{}", NEXT.fetch_add(1, Ordering::Relaxed))
}

/// Model names as Ollama resolves them: a missing tag means `:latest`.
pub(crate) fn same_model(a: &str, b: &str) -> bool {
    fn full(name: &str) -> std::borrow::Cow<'_, str> {
        if name.rsplit('/').next().is_some_and(|last| last.contains(':')) {
            name.into()
        } else {
            format!("{name}:latest").into()
        }
    }
    a == b || full(a) == full(b)
}

/// Turns provider tool-call arguments (an object, or JSON text of one) into an object.
pub(crate) fn parse_arguments(tool: &str, arguments: Value) -> Result<Value> {
    let not_object = |found: &str| {
        Error::invalid_response(format!(
            "the arguments of the {tool} tool call are not a json object: {}",
            crate::error::truncate(found, 200)
        ))
    };
    match arguments {
        Value::Null => Ok(Value::Object(Default::default())),
        Value::Object(_) => Ok(arguments),
        Value::String(text) if text.trim().is_empty() => Ok(Value::Object(Default::default())),
        Value::String(text) => match serde_json::from_str::<Value>(&text) {
            Ok(Value::Object(map)) => Ok(Value::Object(map)),
            Ok(Value::Null) => Ok(Value::Object(Default::default())),
            _ => Err(not_object(&text)),
        },
        other => Err(not_object(&other.to_string())),
    }
}

pub(crate) fn estimate_tokens(chars: usize) -> u32 {
    u32::try_from(chars / 4).unwrap_or(u32::MAX).max(1)
}

fn message_chars(m: &Message) -> usize {
    m.content.chars().count() + m.tool_calls.iter().map(|c| c.name.len() + c.arguments.to_string().len()).sum::<usize>()
}

/// What one successful attempt produced, before it becomes a `ChatResponse`.
#[derive(Debug, Default)]
pub(crate) struct Outcome {
    pub content: String,
    pub tool_calls: Vec<ToolCall>,
    pub model: Option<String>,
    pub finish_reason: Option<String>,
    pub prompt_tokens: Option<u32>,
    pub completion_tokens: Option<u32>,
    /// Generation time as measured by the server, when it reports it.
    pub generation: Option<Duration>,
    /// Since the attempt started, when streaming.
    pub first_token: Option<Duration>,
    pub attempt_elapsed: Duration,
}

pub(crate) fn finish(
    settings: &ModelSettings,
    req: &ChatRequest,
    outcome: Outcome,
    attempts: u32,
    started: Instant,
) -> ChatResponse {
    let total = started.elapsed();
    let reply = Message {
        role: Role::Assistant,
        content: outcome.content,
        tool_calls: outcome.tool_calls,
        tool_call_id: None,
        tool_name: None,
    };
    let mut estimated = false;
    let prompt_tokens = outcome.prompt_tokens.unwrap_or_else(|| {
        estimated = true;
        estimate_tokens(req.messages.iter().map(message_chars).sum())
    });
    let completion_tokens = outcome.completion_tokens.unwrap_or_else(|| {
        estimated = true;
        estimate_tokens(message_chars(&reply))
    });
    let ttft = outcome.first_token.unwrap_or(outcome.attempt_elapsed);
    let generation = outcome
        .generation
        .filter(|d| !d.is_zero())
        .or_else(|| Some(outcome.attempt_elapsed.saturating_sub(ttft)))
        .filter(|d| !d.is_zero())
        .unwrap_or(outcome.attempt_elapsed);
    let tokens_per_second = (!generation.is_zero()).then(|| f64::from(completion_tokens) / generation.as_secs_f64());
    let timing = CallTiming { total, time_to_first_token: Some(ttft.min(total)), tokens_per_second, attempts };
    let model = outcome.model.unwrap_or_else(|| settings.model.clone());
    tracing::debug!(
        provider = ?settings.provider,
        %model,
        prompt_tokens,
        completion_tokens,
        usage_estimated = estimated,
        tool_calls = reply.tool_calls.len(),
        latency_ms = u64::try_from(total.as_millis()).unwrap_or(u64::MAX),
        ttft_ms = u64::try_from(ttft.as_millis()).unwrap_or(u64::MAX),
        tokens_per_second,
        attempts,
        "model call finished"
    );
    ChatResponse {
        message: reply,
        usage: TokenUsage { prompt_tokens, completion_tokens },
        usage_estimated: estimated,
        timing,
        model,
        finish_reason: outcome.finish_reason,
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn context_is_override_then_detected_capped_then_fallback() {
        let mut s = ModelSettings::new(Provider::Ollama, "http://x", "m");
        s.max_context = 16384;
        assert_eq!(resolve_context(&s, Some(131072)), 16384);
        assert_eq!(resolve_context(&s, Some(4096)), 4096);
        assert_eq!(resolve_context(&s, None), FALLBACK_CONTEXT_WINDOW);
        s.num_ctx = Some(65536);
        assert_eq!(resolve_context(&s, Some(4096)), 65536);
    }

    #[test]
    fn missing_server_usage_is_estimated_from_characters_and_flagged() {
        let settings = ModelSettings::new(Provider::Openai, "http://x", "m");
        let req = ChatRequest::new(vec![Message::user("x".repeat(40))]);
        let outcome =
            Outcome { content: "y".repeat(8), attempt_elapsed: Duration::from_millis(10), ..Outcome::default() };
        let response = finish(&settings, &req, outcome, 1, Instant::now());
        assert!(response.usage_estimated);
        assert_eq!(response.usage.prompt_tokens, 10);
        assert_eq!(response.usage.completion_tokens, 2);
        assert!(response.timing.tokens_per_second.is_some_and(|t| t > 0.0));
    }

    #[test]
    fn untagged_model_name_equals_latest() {
        assert!(same_model("qwen3", "qwen3:latest"));
        assert!(same_model("qwen3:8b", "qwen3:8b"));
        assert!(!same_model("qwen3", "qwen3:8b"));
        assert!(same_model("hf.co/org/model", "hf.co/org/model:latest"));
    }

    #[test]
    fn arguments_accept_object_or_json_text_and_reject_other_text() {
        assert_eq!(parse_arguments("t", json!({"a": 1})).ok(), Some(json!({"a": 1})));
        assert_eq!(parse_arguments("t", json!("{\"a\":1}")).ok(), Some(json!({"a": 1})));
        assert_eq!(parse_arguments("t", json!("")).ok(), Some(json!({})));
        let err = parse_arguments("read_file", json!("{not json")).expect_err("invalid");
        assert!(matches!(err, Error::InvalidResponse { .. }));
        assert!(err.to_string().contains("read_file"), "{err}");
    }
}
