//! Where a model lives and how to talk to it; one `ModelSettings` per agent role, read from the
//! user's config.

use std::fmt;

use serde::{Deserialize, Serialize};

/// The wire protocol spoken by the server.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Provider {
    /// Ollama's native `/api/*` protocol, which can size the context window per call.
    #[default]
    Ollama,
    /// Any OpenAI-compatible `/v1/chat/completions` server (vLLM, llama.cpp, LM Studio, ...).
    Openai,
}

impl fmt::Display for Provider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Provider::Ollama => "ollama",
            Provider::Openai => "the openai-compatible server",
        })
    }
}

/// How tools are offered to the model.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum ToolMode {
    /// The provider's own `tools` field; best for models trained on tool calling.
    #[default]
    Native,
    /// Tools described in a system message and the answer forced into a JSON schema; for small
    /// local models whose native tool calling is missing or unreliable.
    Schema,
}

/// One role's model endpoint.
#[derive(Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ModelSettings {
    pub provider: Provider,
    /// `http://localhost:11434` for Ollama, `https://host/v1` (or without `/v1`) for OpenAI.
    pub base_url: String,
    pub model: String,
    /// Sent as a bearer token. Redacted from `Debug` and never put in logs or errors.
    #[serde(default)]
    pub api_key: Option<String>,
    #[serde(default)]
    pub tool_mode: ToolMode,
    /// Context length to use instead of the one the server reports (not capped by `max_context`).
    #[serde(default)]
    pub num_ctx: Option<u32>,
    /// Cap on the detected context length: models advertise 128k+ windows that would not fit in
    /// a workstation's memory if Ollama allocated them.
    #[serde(default = "default_max_context")]
    pub max_context: u32,
    #[serde(default)]
    pub temperature: Option<f32>,
    /// Limit on one HTTP attempt, streaming the whole reply included.
    #[serde(default = "default_request_timeout_s")]
    pub request_timeout_s: u64,
    /// Retries after the first attempt, for transient failures only (see `Error::is_retryable`).
    #[serde(default = "default_max_retries")]
    pub max_retries: u32,
}

pub const DEFAULT_MAX_CONTEXT: u32 = 32768;
pub const DEFAULT_REQUEST_TIMEOUT_S: u64 = 120;
pub const DEFAULT_MAX_RETRIES: u32 = 3;

fn default_max_context() -> u32 {
    DEFAULT_MAX_CONTEXT
}

fn default_request_timeout_s() -> u64 {
    DEFAULT_REQUEST_TIMEOUT_S
}

fn default_max_retries() -> u32 {
    DEFAULT_MAX_RETRIES
}

impl ModelSettings {
    /// Settings with every optional field at its default.
    pub fn new(provider: Provider, base_url: impl Into<String>, model: impl Into<String>) -> Self {
        Self {
            provider,
            base_url: base_url.into(),
            model: model.into(),
            api_key: None,
            tool_mode: ToolMode::default(),
            num_ctx: None,
            max_context: DEFAULT_MAX_CONTEXT,
            temperature: None,
            request_timeout_s: DEFAULT_REQUEST_TIMEOUT_S,
            max_retries: DEFAULT_MAX_RETRIES,
        }
    }
}

impl fmt::Debug for ModelSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ModelSettings")
            .field("provider", &self.provider)
            .field("base_url", &self.base_url)
            .field("model", &self.model)
            .field("api_key", &self.api_key.as_ref().map(|_| "<redacted>"))
            .field("tool_mode", &self.tool_mode)
            .field("num_ctx", &self.num_ctx)
            .field("max_context", &self.max_context)
            .field("temperature", &self.temperature)
            .field("request_timeout_s", &self.request_timeout_s)
            .field("max_retries", &self.max_retries)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_redacts_the_api_key() {
        let mut s = ModelSettings::new(Provider::Openai, "https://x/v1", "m");
        s.api_key = Some("sk-very-secret".into());
        let dbg = format!("{s:?}");
        assert!(!dbg.contains("sk-very-secret"), "{dbg}");
        assert!(dbg.contains("<redacted>"), "{dbg}");
    }

    #[test]
    fn minimal_settings_deserialize_with_defaults() {
        let s: ModelSettings = serde_json::from_value(serde_json::json!({
            "provider": "ollama", "base_url": "http://localhost:11434", "model": "qwen3:8b"
        }))
        .expect("valid settings");
        assert_eq!(s, ModelSettings::new(Provider::Ollama, "http://localhost:11434", "qwen3:8b"));
    }

    #[test]
    fn unknown_settings_fields_are_rejected() {
        let r: Result<ModelSettings, _> = serde_json::from_value(serde_json::json!({
            "provider": "openai", "base_url": "x", "model": "m", "num_ctxx": 3
        }));
        assert!(r.is_err());
    }
}
