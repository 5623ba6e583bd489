//! Ollama's native protocol (`/api/chat`, `/api/show`, `/api/tags`). Preferred over Ollama's
//! OpenAI shim because only the native API lets each call set `num_ctx`; without it Ollama
//! silently truncates prompts to its small default window.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use futures::StreamExt;
use reqwest::Method;
use serde::Deserialize;
use serde_json::{Map, Value, json};
use tokio::sync::OnceCell;
use turbo_core::tool::ToolCall;

use crate::error::{Error, Result, truncate};
use crate::http::{AttemptResult, Transport};
use crate::message::{ChatRequest, ChatResponse, Message, ModelInfo, ResponseFormat, Role};
use crate::model::{ChatModel, OnDelta, Outcome, finish, next_call_id, parse_arguments, resolve_context, same_model};
use crate::settings::ModelSettings;

pub(crate) struct OllamaModel {
    http: Transport,
    info: OnceCell<ModelInfo>,
}

/// One reply object; a non-streamed reply and every NDJSON line share this shape.
#[derive(Debug, Deserialize)]
struct Chunk {
    #[serde(default)]
    model: Option<String>,
    #[serde(default)]
    message: Option<ChunkMessage>,
    #[serde(default)]
    done: bool,
    #[serde(default)]
    done_reason: Option<String>,
    #[serde(default)]
    prompt_eval_count: Option<u32>,
    #[serde(default)]
    eval_count: Option<u32>,
    /// Nanoseconds.
    #[serde(default)]
    eval_duration: Option<u64>,
    #[serde(default)]
    error: Option<String>,
}

#[derive(Debug, Deserialize)]
struct ChunkMessage {
    #[serde(default)]
    content: Option<String>,
    #[serde(default)]
    tool_calls: Option<Vec<WireToolCall>>,
}

#[derive(Debug, Deserialize)]
struct WireToolCall {
    #[serde(default)]
    id: Option<String>,
    function: WireFunction,
}

#[derive(Debug, Deserialize)]
struct WireFunction {
    name: String,
    #[serde(default)]
    arguments: Value,
}

impl OllamaModel {
    pub fn new(settings: &ModelSettings) -> Result<Self> {
        Ok(Self { http: Transport::new(settings)?, info: OnceCell::new() })
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.http.base())
    }

    /// `options.num_ctx` for the next call. Failures that would sink the chat call anyway are
    /// returned; anything else (an odd `/api/show`) falls back so the call can still be made.
    async fn num_ctx(&self) -> Result<u32> {
        let settings = self.http.settings();
        if let Some(n) = settings.num_ctx {
            return Ok(n);
        }
        match self.model_info().await {
            Ok(info) => Ok(resolve_context(settings, info.context_length)),
            Err(
                e @ (Error::Unauthorized { .. }
                | Error::Unreachable { .. }
                | Error::Timeout { .. }
                | Error::ModelNotFound { .. }),
            ) => Err(e),
            Err(error) => {
                let fallback = resolve_context(settings, None);
                tracing::warn!(model = %settings.model, %error, fallback, "cannot read the context length; using the fallback");
                Ok(fallback)
            }
        }
    }

    async fn list_models(&self) -> Result<Vec<String>> {
        #[derive(Deserialize)]
        struct Tags {
            #[serde(default)]
            models: Vec<Tag>,
        }
        #[derive(Deserialize)]
        struct Tag {
            name: String,
        }
        let url = self.url("/api/tags");
        let (tags, _) = self
            .http
            .retry(&url, &|| true, || async {
                let response = self.http.send(self.http.request(Method::GET, &url), &url).await?;
                let bytes = response.bytes().await.map_err(|e| self.http.transport_error(e, &url))?;
                serde_json::from_slice::<Tags>(&bytes)
                    .map_err(|e| Error::invalid_response(format!("/api/tags: {e}")).into())
            })
            .await?;
        Ok(tags.models.into_iter().map(|t| t.name).collect())
    }

    /// `ModelNotFound` with whatever the server has; listing is best effort because the error
    /// is already being reported.
    async fn not_found(&self) -> Error {
        Error::ModelNotFound {
            model: self.http.settings().model.clone(),
            available: self.list_models().await.unwrap_or_default(),
        }
    }

    async fn show(&self) -> Result<ModelInfo> {
        let url = self.url("/api/show");
        let model = &self.http.settings().model;
        let body = json!({ "model": model });
        let result = self
            .http
            .retry(&url, &|| true, || async {
                let response = self.http.send(self.http.request(Method::POST, &url).json(&body), &url).await?;
                let bytes = response.bytes().await.map_err(|e| self.http.transport_error(e, &url))?;
                serde_json::from_slice::<Value>(&bytes)
                    .map_err(|e| Error::invalid_response(format!("/api/show: {e}")).into())
            })
            .await;
        let shown = match result {
            Err(Error::Http { status: 404, .. }) => return Err(self.not_found().await),
            other => other?.0,
        };
        Ok(ModelInfo { name: model.clone(), context_length: context_length_of(&shown) })
    }

    fn encode_request(&self, req: &ChatRequest, num_ctx: u32) -> Value {
        let settings = self.http.settings();
        let mut options = Map::new();
        options.insert("num_ctx".into(), num_ctx.into());
        if let Some(t) = req.temperature.or(settings.temperature) {
            options.insert("temperature".into(), json!(t));
        }
        if let Some(n) = req.max_tokens {
            options.insert("num_predict".into(), n.into());
        }
        let mut body = json!({
            "model": settings.model,
            "messages": req.messages.iter().map(encode_message).collect::<Vec<_>>(),
            "stream": req.stream,
            "options": options,
        });
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
            ResponseFormat::Json => body["format"] = json!("json"),
            ResponseFormat::JsonSchema { schema, .. } => body["format"] = schema.clone(),
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
        let response = match self.http.send(self.http.request(Method::POST, url).json(body), url).await {
            Err(f) if matches!(f.error, Error::Http { status: 404, .. }) => {
                return Err(self.not_found().await.into());
            }
            other => other?,
        };
        let mut acc = Accumulator {
            started,
            on_delta: if stream { on_delta } else { None },
            emitted,
            outcome: Outcome::default(),
            done: false,
        };
        if stream {
            let mut buffer: Vec<u8> = Vec::new();
            let mut bytes = response.bytes_stream();
            while let Some(piece) = bytes.next().await {
                let piece = piece.map_err(|e| self.http.transport_error(e, url))?;
                buffer.extend_from_slice(&piece);
                while let Some(end) = buffer.iter().position(|b| *b == b'\n') {
                    let line: Vec<u8> = buffer.drain(..=end).collect();
                    acc.absorb_line(&line)?;
                }
            }
            acc.absorb_line(&buffer)?;
            if !acc.done {
                return Err(Error::invalid_response("the stream ended without its final done message").into());
            }
        } else {
            let bytes = response.bytes().await.map_err(|e| self.http.transport_error(e, url))?;
            acc.absorb_line(&bytes)?;
        }
        acc.outcome.attempt_elapsed = started.elapsed();
        Ok(acc.outcome)
    }
}

struct Accumulator<'a> {
    started: Instant,
    on_delta: OnDelta<'a>,
    emitted: &'a AtomicBool,
    outcome: Outcome,
    done: bool,
}

impl Accumulator<'_> {
    fn absorb_line(&mut self, line: &[u8]) -> Result<()> {
        let text = String::from_utf8_lossy(line);
        let text = text.trim();
        if text.is_empty() {
            return Ok(());
        }
        let chunk: Chunk = serde_json::from_str(text)
            .map_err(|e| Error::invalid_response(format!("cannot parse the reply ({e}): {}", truncate(text, 200))))?;
        self.absorb(chunk)
    }

    fn absorb(&mut self, chunk: Chunk) -> Result<()> {
        if let Some(message) = chunk.error {
            return Err(Error::Server { message });
        }
        if let Some(message) = chunk.message {
            let content = message.content.unwrap_or_default();
            if !content.is_empty() {
                self.first_token();
                self.outcome.content.push_str(&content);
                if let Some(sink) = self.on_delta {
                    self.emitted.store(true, Ordering::Relaxed);
                    sink(&content);
                }
            }
            for call in message.tool_calls.unwrap_or_default() {
                self.first_token();
                let arguments = parse_arguments(&call.function.name, call.function.arguments)?;
                self.outcome.tool_calls.push(ToolCall {
                    id: call.id.filter(|id| !id.is_empty()).unwrap_or_else(next_call_id),
                    name: call.function.name,
                    arguments,
                });
            }
        }
        if chunk.model.is_some() {
            self.outcome.model = chunk.model;
        }
        if chunk.done {
            self.done = true;
            self.outcome.finish_reason = chunk.done_reason;
            self.outcome.prompt_tokens = chunk.prompt_eval_count;
            self.outcome.completion_tokens = chunk.eval_count;
            self.outcome.generation = chunk.eval_duration.map(Duration::from_nanos);
        }
        Ok(())
    }

    fn first_token(&mut self) {
        if self.outcome.first_token.is_none() {
            self.outcome.first_token = Some(self.started.elapsed());
        }
    }
}

fn encode_message(m: &Message) -> Value {
    let mut out = json!({ "role": m.role.as_str(), "content": m.content });
    if !m.tool_calls.is_empty() {
        out["tool_calls"] =
            m.tool_calls.iter().map(|c| json!({"function": {"name": c.name, "arguments": c.arguments}})).collect();
    }
    if m.role == Role::Tool
        && let Some(name) = &m.tool_name
    {
        out["tool_name"] = json!(name);
    }
    out
}

/// `model_info["<arch>.context_length"]`; any `*.context_length` when the architecture key is
/// missing, as some GGUF conversions name it differently.
fn context_length_of(shown: &Value) -> Option<u32> {
    let info = shown.get("model_info")?.as_object()?;
    let as_u32 = |v: &Value| v.as_u64().and_then(|n| u32::try_from(n).ok());
    info.get("general.architecture")
        .and_then(Value::as_str)
        .and_then(|arch| info.get(&format!("{arch}.context_length")))
        .and_then(as_u32)
        .or_else(|| info.iter().find(|(k, _)| k.ends_with(".context_length")).and_then(|(_, v)| as_u32(v)))
}

#[async_trait]
impl ChatModel for OllamaModel {
    fn settings(&self) -> &ModelSettings {
        self.http.settings()
    }

    async fn chat(&self, req: ChatRequest, on_delta: OnDelta<'_>) -> Result<ChatResponse> {
        let started = Instant::now();
        let num_ctx = self.num_ctx().await?;
        let body = self.encode_request(&req, num_ctx);
        let url = self.url("/api/chat");
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
        self.info.get_or_try_init(|| self.show()).await.cloned()
    }

    async fn check_model(&self) -> Result<()> {
        let available = self.list_models().await?;
        let wanted = &self.http.settings().model;
        if available.iter().any(|name| same_model(name, wanted)) {
            Ok(())
        } else {
            Err(Error::ModelNotFound { model: wanted.clone(), available })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn context_length_comes_from_the_architecture_key() {
        let shown = json!({"model_info": {
            "general.architecture": "qwen3",
            "qwen3.context_length": 40960,
            "clip.context_length": 77,
        }});
        assert_eq!(context_length_of(&shown), Some(40960));
        let no_arch = json!({"model_info": {"llama.context_length": 8192}});
        assert_eq!(context_length_of(&no_arch), Some(8192));
        assert_eq!(context_length_of(&json!({})), None);
    }

    #[test]
    fn tool_results_carry_the_tool_name() {
        let call = ToolCall { id: "call_1".into(), name: "read_file".into(), arguments: json!({"path": "a"}) };
        let encoded = encode_message(&Message::tool_result(&call, "contents"));
        assert_eq!(encoded, json!({"role": "tool", "content": "contents", "tool_name": "read_file"}));
        let assistant = encode_message(&Message::assistant_tool_calls("", vec![call]));
        assert_eq!(assistant["tool_calls"], json!([{"function": {"name": "read_file", "arguments": {"path": "a"}}}]));
    }
}
