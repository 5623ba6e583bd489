//! The provider-neutral conversation: messages, requests and what a call returns.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use turbo_core::tool::{TokenUsage, ToolCall, ToolSpec};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    System,
    User,
    Assistant,
    Tool,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::System => "system",
            Role::User => "user",
            Role::Assistant => "assistant",
            Role::Tool => "tool",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Message {
    pub role: Role,
    #[serde(default)]
    pub content: String,
    /// Calls requested by an assistant message.
    #[serde(default)]
    pub tool_calls: Vec<ToolCall>,
    /// On a tool result: the call it answers (OpenAI matches results by id).
    #[serde(default)]
    pub tool_call_id: Option<String>,
    /// On a tool result: the tool's name (Ollama matches results by name).
    #[serde(default)]
    pub tool_name: Option<String>,
}

impl Message {
    fn new(role: Role, content: impl Into<String>) -> Self {
        Self { role, content: content.into(), tool_calls: Vec::new(), tool_call_id: None, tool_name: None }
    }

    pub fn system(content: impl Into<String>) -> Self {
        Self::new(Role::System, content)
    }

    pub fn user(content: impl Into<String>) -> Self {
        Self::new(Role::User, content)
    }

    pub fn assistant(content: impl Into<String>) -> Self {
        Self::new(Role::Assistant, content)
    }

    pub fn assistant_tool_calls(content: impl Into<String>, calls: Vec<ToolCall>) -> Self {
        Self { tool_calls: calls, ..Self::new(Role::Assistant, content) }
    }

    /// The answer to `call`, carrying both its id and its name so every provider can match it.
    pub fn tool_result(call: &ToolCall, content: impl Into<String>) -> Self {
        Self {
            tool_call_id: Some(call.id.clone()),
            tool_name: Some(call.name.clone()),
            ..Self::new(Role::Tool, content)
        }
    }
}

#[derive(Clone, Debug, PartialEq, Default)]
pub enum ResponseFormat {
    #[default]
    Text,
    /// Any JSON value.
    Json,
    /// JSON constrained by `schema` (Ollama's `format`, OpenAI's `json_schema`).
    JsonSchema { name: String, schema: serde_json::Value },
}

#[derive(Clone, Debug, PartialEq, Default)]
pub struct ChatRequest {
    pub messages: Vec<Message>,
    pub tools: Vec<ToolSpec>,
    pub response_format: ResponseFormat,
    /// Overrides `ModelSettings::temperature` for this call.
    pub temperature: Option<f32>,
    pub max_tokens: Option<u32>,
    pub stream: bool,
}

impl ChatRequest {
    pub fn new(messages: Vec<Message>) -> Self {
        Self { messages, ..Self::default() }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct ChatResponse {
    /// Always an assistant message.
    pub message: Message,
    /// When the server reports no counts, they are estimated as characters / 4 and
    /// `usage_estimated` is set.
    pub usage: TokenUsage,
    pub usage_estimated: bool,
    pub timing: CallTiming,
    /// The model name the server reports (falls back to the configured one).
    pub model: String,
    pub finish_reason: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Default)]
pub struct CallTiming {
    /// From the start of the call to the end of the reply, retries and backoff included.
    pub total: Duration,
    /// From the start of the successful attempt to the first content or tool-call delta when
    /// streaming; the attempt's whole duration otherwise.
    pub time_to_first_token: Option<Duration>,
    /// Completion tokens per second of generation (the server's own figure when it gives one).
    pub tokens_per_second: Option<f64>,
    /// HTTP attempts made, 1 when the first one succeeded.
    pub attempts: u32,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ModelInfo {
    pub name: String,
    /// What the server says the model can handle; `None` when it does not say.
    pub context_length: Option<u32>,
}
