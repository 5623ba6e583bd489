//! The OpenAI-compatible protocol (`/v1/chat/completions`, `/v1/models`), spoken by vLLM,
//! llama.cpp, LM Studio and hosted APIs.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use async_trait::async_trait;
use eventsource_stream::{EventStreamError, Eventsource};
use futures::StreamExt;
use reqwest::Method;
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::sync::OnceCell;
use turbo_core::tool::ToolCall;

use crate::error::{Error, Result, truncate};
use crate::http::{AttemptResult, Transport};
use crate::message::{ChatRequest, ChatResponse, Message, ModelInfo, ResponseFormat, Role};
use crate::model::{ChatModel, OnDelta, Outcome, finish, next_call_id, parse_arguments, same_model};
use crate::settings::ModelSettings;

/// Fields servers use in `/v1/models` entries for the context length (vLLM: `max_model_len`,
/// OpenRouter/LM Studio: `context_length`, llama.cpp: `meta.n_ctx_train`).
const CONTEXT_FIELDS: &[&str] = &["context_length", "max_model_len", "context_window", "max_context_length", "n_ctx"];

pub(crate) struct OpenAiModel {
    http: Transport,
    /// `base_url` normalised to end in `/v1`.
    api: String,
    info: OnceCell<ModelInfo>,
}

#[derive(Debug, Deserialize)]
struct Usage {
    #[serde(default)]
    prompt_tokens: Option<u32>,
    #[serde(default)]
    completion_tokens: Option<u32>,
}

#[derive(Debug, Deserialize)]
struct Completion {
    #[serde(default)]
    model: Option<String>,
    #[serde(default)]
    choices: Option<Vec<Choice>>,
    #[serde(default)]
    usage: Option<Usage>,
    #[serde(default)]
    error: Option<Value>,
}

#[derive(Debug, Deserialize)]
struct Choice {
    #[serde(default)]
    message: Option<ChoiceMessage>,
    #[serde(default)]
    delta: Option<ChoiceMessage>,
    #[serde(default)]
    finish_reason: Option<String>,
}

#[derive(Debug, Deserialize)]
struct ChoiceMessage {
    #[serde(default)]
    content: Option<String>,
    #[serde(default)]
    tool_calls: Option<Vec<ToolCallDelta>>,
}

/// A whole tool call in a reply, or a fragment of one in a stream.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct ToolCallDelta {
    #[serde(default)]
    pub index: Option<usize>,
    #[serde(default)]
    pub id: Option<String>,
    #[serde(default)]
    pub function: Option<FunctionDelta>,
}

#[derive(Debug, Default, Deserialize)]
pub(crate) struct FunctionDelta {
    #[serde(default)]
    pub name: Option<String>,
    /// A JSON string (or fragment of one); some servers send an object instead.
    #[serde(default)]
    pub arguments: Option<Value>,
}

/// Collects streamed tool-call fragments, which arrive keyed by `index`: the first fragment of a
/// call has its id and name, later ones append pieces of the arguments string.
#[derive(Debug, Default)]
pub(crate) struct ToolCallAccumulator {
    calls: Vec<PartialCall>,
}

#[derive(Debug)]
struct PartialCall {
    index: usize,
    id: Option<String>,
    name: String,
    arguments: String,
}

impl ToolCallAccumulator {
    /// `position` is the fragment's place in its chunk, used when a server omits `index`.
    pub fn push(&mut self, position: usize, delta: ToolCallDelta) {
        let index = delta.index.unwrap_or(position);
        let slot = match self.calls.iter().position(|c| c.index == index) {
            Some(slot) => slot,
            None => {
                self.calls.push(PartialCall { index, id: None, name: String::new(), arguments: String::new() });
                self.calls.len() - 1
            }
        };
        let call = &mut self.calls[slot];
        if let Some(id) = delta.id.filter(|id| !id.is_empty()) {
            call.id.get_or_insert(id);
        }
        let Some(function) = delta.function else {
            return;
        };
        // Most servers send the name once; some repeat it whole in every fragment.
        if let Some(name) = function.name.filter(|n| !n.is_empty())
            && call.name != name
        {
            call.name.push_str(&name);
        }
        match function.arguments {
            Some(Value::String(piece)) => call.arguments.push_str(&piece),
            Some(Value::Null) | None => {}
            Some(whole) => call.arguments = whole.to_string(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.calls.is_empty()
    }

    pub fn finish(mut self) -> Result<Vec<ToolCall>> {
        self.calls.sort_by_key(|c| c.index);
        self.calls
            .into_iter()
            .map(|c| {
                if c.name.is_empty() {
                    return Err(Error::invalid_response(format!("tool call {} has no function name", c.index)));
                }
                let arguments = parse_arguments(&c.name, Value::String(c.arguments))?;
                Ok(ToolCall { id: c.id.unwrap_or_else(next_call_id), name: c.name, arguments })
            })
            .collect()
    }
}

impl OpenAiModel {
    pub fn new(settings: &ModelSettings) -> Result<Self> {
        let http = Transport::new(settings)?;
        let base = http.base();
        let api = format!("{}/v1", base.strip_suffix("/v1").unwrap_or(base));
        Ok(Self { http, api, info: OnceCell::new() })
    }

    async fn list_models(&self) -> Result<Vec<Value>> {
        #[derive(Deserialize)]
        struct Models {
            #[serde(default)]
            data: Vec<Value>,
        }
        let url = format!("{}/models", self.api);
        let (models, _) = self
            .http
            .retry(&url, &|| true, || async {
                let response = self.http.send(self.http.request(Method::GET, &url), &url).await?;
                let bytes = response.bytes().await.map_err(|e| self.http.transport_error(e, &url))?;
                serde_json::from_slice::<Models>(&bytes)
                    .map_err(|e| Error::invalid_response(format!("/v1/models: {e}")).into())
            })
            .await?;
        Ok(models.data)
    }

    fn encode_request(&self, req: &ChatRequest) -> Value {
        let settings = self.http.settings();
        let mut body = json!({
            "model": settings.model,
            "messages": req.messages.iter().map(encode_message).collect::<Vec<_>>(),
            "stream": req.stream,
        });
        if req.stream {
            body["stream_options"] = json!({"include_usage": true});
        }
        if !req.tools.is_empty() {
            body["tools"] = req
                .tools
                .iter()
                .map(|t| {
                    json!({"type": "function", "function": {
                        "name": t.name, "description": t.description, "parameters": t.parameters,
                    }})
                })
                .collect();
        }
        match &req.response_format {
            ResponseFormat::Text => {}
            ResponseFormat::Json => body["response_format"] = json!({"type": "json_object"}),
            ResponseFormat::JsonSchema { name, schema } => {
                body["response_format"] = json!({"type": "json_schema", "json_schema": {
                    "name": name, "schema": schema, "strict": false,
                }});
            }
        }
        if let Some(t) = req.temperature.or(settings.temperature) {
            body["temperature"] = json!(t);
        }
        if let Some(n) = req.max_tokens {
            body["max_tokens"] = json!(n);
        }
        body
    }

    async fn attempt(
        &self,
        url: &str,
        body: &Value,
        stream: bool,
        on_delta: OnDelta<'_>,
        emitted: &AtomicBool,
    ) -> AttemptResult<Outcome> {
        let started = Instant::now();
        let response = self.http.send(self.http.request(Method::POST, url).json(body), url).await?;
        let mut outcome = if stream {
            self.read_stream(response, url, started, on_delta, emitted).await?
        } else {
            let bytes = response.bytes().await.map_err(|e| self.http.transport_error(e, url))?;
            read_completion(&bytes)?
        };
        outcome.attempt_elapsed = started.elapsed();
        Ok(outcome)
    }

    async fn read_stream(
        &self,
        response: reqwest::Response,
        url: &str,
        started: Instant,
        on_delta: OnDelta<'_>,
        emitted: &AtomicBool,
    ) -> Result<Outcome> {
        let mut outcome = Outcome::default();
        let mut calls = ToolCallAccumulator::default();
        let mut finished = false;
        let mut events = response.bytes_stream().eventsource();
        while let Some(event) = events.next().await {
            let event = event.map_err(|e| match e {
                EventStreamError::Transport(e) => self.http.transport_error(e, url),
                EventStreamError::Utf8(e) => Error::invalid_response(format!("sse: {e}")),
                EventStreamError::Parser(e) => Error::invalid_response(format!("sse: {e}")),
            })?;
            let data = event.data.trim();
            if data.is_empty() {
                continue;
            }
            if data == "[DONE]" {
                finished = true;
                break;
            }
            let chunk: Completion = serde_json::from_str(data).map_err(|e| {
                Error::invalid_response(format!("cannot parse a stream chunk ({e}): {}", truncate(data, 200)))
            })?;
            if let Some(error) = chunk.error {
                return Err(server_error(&error));
            }
            if chunk.model.is_some() {
                outcome.model = chunk.model;
            }
            if let Some(usage) = chunk.usage {
                outcome.prompt_tokens = usage.prompt_tokens;
                outcome.completion_tokens = usage.completion_tokens;
            }
            // Only the first choice is ever requested (no `n`).
            let Some(choice) = chunk.choices.and_then(|c| c.into_iter().next()) else {
                continue;
            };
            if choice.finish_reason.is_some() {
                outcome.finish_reason = choice.finish_reason;
            }
            let Some(delta) = choice.delta else { continue };
            if let Some(text) = delta.content.filter(|t| !t.is_empty()) {
                outcome.first_token.get_or_insert_with(|| started.elapsed());
                outcome.content.push_str(&text);
                if let Some(sink) = on_delta {
                    emitted.store(true, Ordering::Relaxed);
                    sink(&text);
                }
            }
            for (position, fragment) in delta.tool_calls.unwrap_or_default().into_iter().enumerate() {
                outcome.first_token.get_or_insert_with(|| started.elapsed());
                calls.push(position, fragment);
            }
        }
        if !finished && outcome.finish_reason.is_none() {
            return Err(Error::invalid_response("the stream ended before a finish_reason or [DONE]"));
        }
        if !calls.is_empty() {
            outcome.tool_calls = calls.finish()?;
        }
        Ok(outcome)
    }
}

fn read_completion(bytes: &[u8]) -> Result<Outcome> {
    let completion: Completion = serde_json::from_slice(bytes).map_err(|e| {
        Error::invalid_response(format!(
            "cannot parse the reply ({e}): {}",
            truncate(&String::from_utf8_lossy(bytes), 200)
        ))
    })?;
    if let Some(error) = completion.error {
        return Err(server_error(&error));
    }
    let choice = completion
        .choices
        .and_then(|c| c.into_iter().next())
        .ok_or_else(|| Error::invalid_response("the reply has no choices"))?;
    let message = choice.message.ok_or_else(|| Error::invalid_response("the reply's choice has no message"))?;
    let mut calls = ToolCallAccumulator::default();
    for (position, call) in message.tool_calls.unwrap_or_default().into_iter().enumerate() {
        // Whole calls have no meaningful index; their order is their identity.
        calls.push(position, ToolCallDelta { index: Some(position), ..call });
    }
    let usage = completion.usage;
    Ok(Outcome {
        content: message.content.unwrap_or_default(),
        tool_calls: calls.finish()?,
        model: completion.model,
        finish_reason: choice.finish_reason,
        prompt_tokens: usage.as_ref().and_then(|u| u.prompt_tokens),
        completion_tokens: usage.as_ref().and_then(|u| u.completion_tokens),
        ..Outcome::default()
    })
}

fn server_error(error: &Value) -> Error {
    let message = error
        .get("message")
        .and_then(Value::as_str)
        .map(str::to_owned)
        .unwrap_or_else(|| truncate(&error.to_string(), 500));
    Error::Server { message }
}

fn encode_message(m: &Message) -> Value {
    match m.role {
        Role::Assistant if !m.tool_calls.is_empty() => json!({
            "role": "assistant",
            "content": if m.content.is_empty() { Value::Null } else { json!(m.content) },
            "tool_calls": m.tool_calls.iter().map(|c| json!({
                "id": c.id,
                "type": "function",
                "function": {"name": c.name, "arguments": c.arguments.to_string()},
            })).collect::<Vec<_>>(),
        }),
        Role::Tool => json!({
            "role": "tool",
            "tool_call_id": m.tool_call_id.as_deref().unwrap_or_default(),
            "content": m.content,
        }),
        role => json!({ "role": role.as_str(), "content": m.content }),
    }
}

fn context_length_of(entry: &Value) -> Option<u32> {
    let as_u32 = |v: &Value| v.as_u64().and_then(|n| u32::try_from(n).ok());
    CONTEXT_FIELDS
        .iter()
        .find_map(|field| entry.get(*field).and_then(as_u32))
        .or_else(|| entry.pointer("/meta/n_ctx_train").and_then(as_u32))
}

#[async_trait]
impl ChatModel for OpenAiModel {
    fn settings(&self) -> &ModelSettings {
        self.http.settings()
    }

    async fn chat(&self, req: ChatRequest, on_delta: OnDelta<'_>) -> Result<ChatResponse> {
        let started = Instant::now();
        let body = self.encode_request(&req);
        let url = format!("{}/chat/completions", self.api);
        let emitted = AtomicBool::new(false);
        let (outcome, attempts) = self
            .http
            .retry(&url, &|| !emitted.load(Ordering::Relaxed), || {
                self.attempt(&url, &body, req.stream, on_delta, &emitted)
            })
            .await?;
        Ok(finish(self.settings(), &req, outcome, attempts, started))
    }

    async fn model_info(&self) -> Result<ModelInfo> {
        self.info
            .get_or_try_init(|| async {
                let model = &self.http.settings().model;
                let models = self.list_models().await?;
                let entry =
                    models.iter().find(|m| m.get("id").and_then(Value::as_str).is_some_and(|id| same_model(id, model)));
                Ok(ModelInfo { name: model.clone(), context_length: entry.and_then(context_length_of) })
            })
            .await
            .cloned()
    }

    async fn check_model(&self) -> Result<()> {
        let wanted = &self.http.settings().model;
        let available: Vec<String> = self
            .list_models()
            .await?
            .iter()
            .filter_map(|m| m.get("id").and_then(Value::as_str).map(str::to_owned))
            .collect();
        if available.iter().any(|id| same_model(id, wanted)) {
            Ok(())
        } else {
            Err(Error::ModelNotFound { model: wanted.clone(), available })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fragment(index: usize, id: Option<&str>, name: Option<&str>, args: &str) -> ToolCallDelta {
        ToolCallDelta {
            index: Some(index),
            id: id.map(str::to_owned),
            function: Some(FunctionDelta { name: name.map(str::to_owned), arguments: Some(json!(args)) }),
        }
    }

    #[test]
    fn stream_fragments_are_joined_by_index() {
        let mut acc = ToolCallAccumulator::default();
        acc.push(0, fragment(0, Some("call_a"), Some("read_file"), ""));
        acc.push(0, fragment(1, Some("call_b"), Some("list_dir"), "{\"pa"));
        acc.push(0, fragment(0, None, None, "{\"path\":"));
        acc.push(0, fragment(0, None, None, "\"src/main.rs\"}"));
        acc.push(0, fragment(1, None, None, "th\":\".\"}"));
        let calls = acc.finish().expect("valid calls");
        assert_eq!(calls.len(), 2);
        assert_eq!(calls[0].id, "call_a");
        assert_eq!(calls[0].name, "read_file");
        assert_eq!(calls[0].arguments, json!({"path": "src/main.rs"}));
        assert_eq!(calls[1].id, "call_b");
        assert_eq!(calls[1].arguments, json!({"path": "."}));
    }

    #[test]
    fn repeated_whole_name_is_not_doubled_and_missing_id_is_generated() {
        let mut acc = ToolCallAccumulator::default();
        acc.push(0, fragment(0, None, Some("read_file"), "{}"));
        acc.push(0, fragment(0, None, Some("read_file"), ""));
        let calls = acc.finish().expect("valid calls");
        assert_eq!(calls[0].name, "read_file");
        assert!(calls[0].id.starts_with("call_"));
    }

    #[test]
    fn broken_argument_json_is_an_invalid_response_naming_the_tool() {
        let mut acc = ToolCallAccumulator::default();
        acc.push(0, fragment(0, Some("c"), Some("write_file"), "{\"path\": "));
        let err = acc.finish().expect_err("truncated json");
        assert!(matches!(err, Error::InvalidResponse { .. }));
        assert!(err.to_string().contains("write_file"), "{err}");
    }

    #[test]
    fn non_streamed_reply_with_tool_calls_parses_string_arguments() {
        let body = json!({
            "model": "m",
            "choices": [{"message": {"role": "assistant", "content": null, "tool_calls": [
                {"id": "x1", "type": "function", "function": {"name": "a", "arguments": "{\"k\":1}"}},
                {"id": "x2", "type": "function", "function": {"name": "b", "arguments": "{}"}},
            ]}, "finish_reason": "tool_calls"}],
            "usage": {"prompt_tokens": 10, "completion_tokens": 3},
        });
        let outcome = read_completion(body.to_string().as_bytes()).expect("valid reply");
        assert_eq!(outcome.tool_calls.len(), 2);
        assert_eq!(outcome.tool_calls[0].arguments, json!({"k": 1}));
        assert_eq!(outcome.tool_calls[1].name, "b");
        assert_eq!(outcome.prompt_tokens, Some(10));
    }

    #[test]
    fn context_length_is_read_from_known_fields() {
        assert_eq!(context_length_of(&json!({"id": "m", "max_model_len": 32768})), Some(32768));
        assert_eq!(context_length_of(&json!({"id": "m", "meta": {"n_ctx_train": 4096}})), Some(4096));
        assert_eq!(context_length_of(&json!({"id": "m"})), None);
    }
}
