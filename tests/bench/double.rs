//! An in-process `ChatModel` that answers at once from a script, so that what is timed is
//! turbo-coder itself and not a model or an HTTP round trip.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use serde_json::Value;
use turbo_core::tool::{TokenUsage, ToolCall};
use turbo_llm::{
    CallTiming, ChatModel, ChatRequest, ChatResponse, Message, ModelInfo, ModelSettings, OnDelta, Provider,
};

/// Context window the doubles claim (set as `num_ctx`, so nobody asks `model_info`).
const CONTEXT: u32 = 32_768;

/// What a double answers.
pub enum Behaviour {
    /// The same JSON text to every call (the planner's plan).
    Json(Value),
    /// `tool_steps` calls of `tool` with `arguments`, then a final answer; again for the next phase.
    Tool { tool: String, arguments: Value, tool_steps: u32 },
    /// A final answer to every call (roles the benchmark's plan never reaches).
    Idle,
}

pub struct ScriptedDouble {
    settings: ModelSettings,
    behaviour: Behaviour,
    /// When each `chat` call arrived, in order.
    calls: Mutex<Vec<Instant>>,
}

impl ScriptedDouble {
    pub fn new(name: &str, behaviour: Behaviour, expected_calls: usize) -> Self {
        let mut settings = ModelSettings::new(Provider::Ollama, "http://bench.invalid", name);
        settings.num_ctx = Some(CONTEXT);
        Self { settings, behaviour, calls: Mutex::new(Vec::with_capacity(expected_calls)) }
    }

    /// The arrival time of every call so far.
    pub fn call_times(&self) -> Vec<Instant> {
        self.calls.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn response(&self, message: Message, finish: &str) -> ChatResponse {
        ChatResponse {
            message,
            usage: TokenUsage { prompt_tokens: 1, completion_tokens: 1 },
            usage_estimated: false,
            timing: CallTiming {
                total: Duration::ZERO,
                time_to_first_token: Some(Duration::ZERO),
                tokens_per_second: None,
                attempts: 1,
            },
            model: self.settings.model.clone(),
            finish_reason: Some(finish.to_owned()),
        }
    }
}

#[async_trait]
impl ChatModel for ScriptedDouble {
    fn settings(&self) -> &ModelSettings {
        &self.settings
    }

    async fn chat(&self, req: ChatRequest, _on_delta: OnDelta<'_>) -> turbo_llm::Result<ChatResponse> {
        let n = {
            let mut calls = self.calls.lock().unwrap_or_else(|p| p.into_inner());
            calls.push(Instant::now());
            calls.len()
        };
        // The request (the whole history) is dropped here, as a provider would after sending it.
        drop(req);
        Ok(match &self.behaviour {
            Behaviour::Json(value) => self.response(Message::assistant(value.to_string()), "stop"),
            // Phase after phase: `tool_steps` tool calls, then the final answer.
            Behaviour::Tool { tool, arguments, tool_steps }
                if (n - 1) % (*tool_steps as usize + 1) < *tool_steps as usize =>
            {
                let call = ToolCall { id: format!("bench_{n}"), name: tool.clone(), arguments: arguments.clone() };
                self.response(Message::assistant_tool_calls("", vec![call]), "tool_calls")
            }
            Behaviour::Tool { .. } | Behaviour::Idle => self.response(Message::assistant("done"), "stop"),
        })
    }

    async fn model_info(&self) -> turbo_llm::Result<ModelInfo> {
        Ok(ModelInfo { name: self.settings.model.clone(), context_length: Some(CONTEXT) })
    }

    async fn check_model(&self) -> turbo_llm::Result<()> {
        Ok(())
    }
}
