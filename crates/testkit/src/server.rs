//! The HTTP server: records every request, checks the key, and routes to the protocol modules.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, to_bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::script::{DEFAULT_EMBEDDING_DIMENSION, EmbedReply, ModelDef, Reply, Script, same_model};
use crate::{ollama, openai};

/// Larger bodies are cut off; no test prompt comes close.
const MAX_BODY_BYTES: usize = 64 * 1024 * 1024;

/// One request as the server saw it.
#[derive(Clone, Debug, PartialEq)]
pub struct RecordedRequest {
    pub method: String,
    pub path: String,
    /// Lowercased names; repeated headers joined with ", ".
    pub headers: BTreeMap<String, String>,
    /// The JSON body, `Value::String` when it is not JSON, `Null` when empty.
    pub body: Value,
}

impl RecordedRequest {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(&name.to_ascii_lowercase()).map(String::as_str)
    }
}

/// A real HTTP server on 127.0.0.1 speaking enough of Ollama's and OpenAI's APIs for end-to-end
/// tests, answering chat requests from a `Script`. Stops when dropped.
pub struct ScriptedModelServer {
    addr: SocketAddr,
    shared: Arc<Shared>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

pub(crate) struct Shared {
    pub models: Vec<ModelDef>,
    pub embedding_dimension: usize,
    api_key: Option<String>,
    repeat: bool,
    originals: HashMap<String, Vec<Reply>>,
    state: Mutex<ServerState>,
}

#[derive(Default)]
struct ServerState {
    queues: HashMap<String, VecDeque<Reply>>,
    embed_queues: HashMap<String, VecDeque<EmbedReply>>,
    requests: Vec<RecordedRequest>,
    next_id: u64,
}

/// A scripted reply with `Delayed` and `WithUsage` applied.
pub(crate) enum Resolved {
    Answer { content: String, tool_calls: Vec<(String, Value)>, usage: Option<(u32, u32)> },
    Status(u16, String),
    Garbage(String),
}

impl ScriptedModelServer {
    /// Serves `script` on a free port of 127.0.0.1.
    pub async fn start(script: Script) -> std::io::Result<Self> {
        Self::start_on(script, SocketAddr::from(([127, 0, 0, 1], 0))).await
    }

    pub async fn start_on(script: Script, addr: SocketAddr) -> std::io::Result<Self> {
        let listener = tokio::net::TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let queues =
            script.replies.iter().map(|(model, replies)| (model.clone(), replies.iter().cloned().collect())).collect();
        let embed_queues =
            script.embed_replies.into_iter().map(|(model, replies)| (model, replies.into_iter().collect())).collect();
        let shared = Arc::new(Shared {
            models: script.models,
            embedding_dimension: script.embedding_dimension.unwrap_or(DEFAULT_EMBEDDING_DIMENSION),
            api_key: script.api_key,
            repeat: script.repeat,
            originals: script.replies,
            state: Mutex::new(ServerState { queues, embed_queues, ..ServerState::default() }),
        });
        let router = Router::new().fallback(handle).with_state(Arc::clone(&shared));
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let serve = axum::serve(listener, router).with_graceful_shutdown(async {
                // A dropped sender means the server handle is gone: stop as well.
                let _ = stopped.await;
            });
            if let Err(error) = serve.await {
                tracing::warn!(%error, "scripted model server stopped");
            }
        });
        Ok(Self { addr, shared, stop: Some(stop), task: Some(task) })
    }

    /// `http://127.0.0.1:PORT`, usable as an Ollama or OpenAI `base_url`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Every request received so far, in order.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.shared.lock().requests.clone()
    }

    /// The requests made to `path`, in order.
    pub fn requests_to(&self, path: &str) -> Vec<RecordedRequest> {
        self.shared.lock().requests.iter().filter(|r| r.path == path).cloned().collect()
    }

    /// Replies not yet consumed for `model`.
    pub fn remaining(&self, model: &str) -> usize {
        let Some(def) = self.shared.model(model) else {
            return 0;
        };
        self.shared.lock().queues.get(&def.name).map_or(0, VecDeque::len)
    }

    /// Stops accepting connections and waits for open ones to finish.
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for ScriptedModelServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, ServerState> {
        // A panicking test thread must not hide the requests from the next assertion.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub fn model(&self, requested: &str) -> Option<&ModelDef> {
        self.models
            .iter()
            .find(|m| m.name == requested)
            .or_else(|| self.models.iter().find(|m| same_model(&m.name, requested)))
    }

    pub fn next_id(&self) -> u64 {
        let mut state = self.lock();
        state.next_id += 1;
        state.next_id
    }

    /// The next reply for `model`, `None` once the script is used up.
    fn take_reply(&self, model: &str) -> Option<Reply> {
        let mut state = self.lock();
        let queue = state.queues.entry(model.to_owned()).or_default();
        if queue.is_empty() && self.repeat {
            queue.extend(self.originals.get(model).into_iter().flatten().cloned());
        }
        queue.pop_front()
    }

    /// The answer to the next embedding request for `model`: the scripted one, else `Hashed`.
    pub fn take_embed_reply(&self, model: &str) -> EmbedReply {
        self.lock().embed_queues.get_mut(model).and_then(VecDeque::pop_front).unwrap_or(EmbedReply::Hashed)
    }

    /// The reply for a chat request to `def`, with delays served and wrappers applied.
    pub async fn resolve(&self, def: &ModelDef) -> Option<Resolved> {
        let mut reply = self.take_reply(&def.name)?;
        let mut usage = None;
        loop {
            reply = match reply {
                Reply::Delayed(pause, inner) => {
                    tokio::time::sleep(pause).await;
                    *inner
                }
                Reply::WithUsage(inner, prompt, completion) => {
                    usage.get_or_insert((prompt, completion));
                    *inner
                }
                Reply::Text(content) => {
                    return Some(Resolved::Answer { content, tool_calls: Vec::new(), usage });
                }
                Reply::Json(value) => {
                    return Some(Resolved::Answer { content: value.to_string(), tool_calls: Vec::new(), usage });
                }
                Reply::ToolCalls(tool_calls) => {
                    return Some(Resolved::Answer { content: String::new(), tool_calls, usage });
                }
                Reply::Status(code, body) => return Some(Resolved::Status(code, body)),
                Reply::Garbage(body) => return Some(Resolved::Garbage(body)),
            };
        }
    }
}

async fn handle(State(shared): State<Arc<Shared>>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let bytes = to_bytes(body, MAX_BODY_BYTES).await.unwrap_or_default();
    let body = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes).unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()))
    };
    let mut headers: BTreeMap<String, String> = BTreeMap::new();
    for (name, value) in &parts.headers {
        let value = String::from_utf8_lossy(value.as_bytes()).into_owned();
        headers
            .entry(name.as_str().to_ascii_lowercase())
            .and_modify(|existing| {
                existing.push_str(", ");
                existing.push_str(&value);
            })
            .or_insert(value);
    }
    let path = parts.uri.path().to_owned();
    let authorization = headers.get("authorization").cloned();
    shared.lock().requests.push(RecordedRequest {
        method: parts.method.to_string(),
        path: path.clone(),
        headers,
        body: body.clone(),
    });
    let openai_path = path.starts_with("/v1/");
    if let Some(key) = &shared.api_key
        && authorization.as_deref() != Some(format!("Bearer {key}").as_str())
    {
        return if openai_path {
            openai::error(StatusCode::UNAUTHORIZED, "invalid api key", "invalid_api_key")
        } else {
            ollama::error(StatusCode::UNAUTHORIZED, "unauthorized")
        };
    }
    match (&parts.method, path.as_str()) {
        (&Method::POST, "/api/chat") => ollama::chat(&shared, &body).await,
        (&Method::POST, "/api/show") => ollama::show(&shared, &body),
        (&Method::GET, "/api/tags") => ollama::tags(&shared),
        (&Method::POST, "/api/embed") => ollama::embed(&shared, &body),
        (&Method::POST, "/v1/chat/completions") => openai::chat(&shared, &body).await,
        (&Method::GET, "/v1/models") => openai::models(&shared),
        (&Method::POST, "/v1/embeddings") => openai::embeddings(&shared, &body),
        _ => (StatusCode::NOT_FOUND, format!("no such endpoint: {} {path}", parts.method)).into_response(),
    }
}

/// A `Reply::Status`: the body goes out as JSON when it is JSON, as text otherwise.
pub(crate) fn status_response(code: u16, body: String) -> Response {
    let status = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let content_type =
        if serde_json::from_str::<Value>(&body).is_ok() { "application/json" } else { "text/plain; charset=utf-8" };
    with_type(status, content_type, body)
}

pub(crate) fn with_type(status: StatusCode, content_type: &'static str, body: impl Into<Body>) -> Response {
    let mut response = (status, body.into()).into_response();
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

pub(crate) fn json_response(status: StatusCode, value: &Value) -> Response {
    with_type(status, "application/json", value.to_string())
}

pub(crate) fn exhausted(model: &str) -> Response {
    tracing::warn!(model, "scripted model server has no reply left");
    (StatusCode::INTERNAL_SERVER_ERROR, format!("script exhausted for model {model}")).into_response()
}

/// Deterministic usage: a quarter of the characters, at least one token.
pub(crate) fn estimate(chars: usize) -> u32 {
    u32::try_from(chars / 4).unwrap_or(u32::MAX).max(1)
}

/// Characters of the request's message contents (strings, or the text parts of part lists).
pub(crate) fn prompt_chars(body: &Value) -> usize {
    body.get("messages")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .map(|m| match m.get("content") {
            Some(Value::String(text)) => text.chars().count(),
            Some(Value::Array(parts)) => {
                parts.iter().filter_map(|p| p.get("text").and_then(Value::as_str)).map(|t| t.chars().count()).sum()
            }
            _ => 0,
        })
        .sum()
}

/// Characters of what the model "generated": its text, or the calls' names and arguments.
pub(crate) fn completion_chars(content: &str, tool_calls: &[(String, Value)]) -> usize {
    content.chars().count()
        + tool_calls.iter().map(|(name, args)| name.chars().count() + args.to_string().chars().count()).sum::<usize>()
}

/// Streams send content in several pieces so clients are tested on reassembly.
pub(crate) fn split_content(content: &str) -> Vec<String> {
    let chars: Vec<char> = content.chars().collect();
    if chars.is_empty() {
        return Vec::new();
    }
    let size = chars.len().div_ceil(3).max(1);
    chars.chunks(size).map(|c| c.iter().collect()).collect()
}

/// Stand-in for a generation speed: 20 ms per completion token.
pub(crate) fn eval_duration(completion_tokens: u32) -> Duration {
    Duration::from_millis(20) * completion_tokens
}

pub(crate) fn model_of(body: &Value) -> Option<&str> {
    body.get("model").or_else(|| body.get("name")).and_then(Value::as_str)
}

pub(crate) fn missing_model() -> Value {
    json!({"error": "model is required"})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_is_split_into_several_pieces_that_join_back() {
        let pieces = split_content("Hello, world");
        assert!(pieces.len() >= 2);
        assert_eq!(pieces.concat(), "Hello, world");
        assert_eq!(split_content("é"), vec!["é".to_owned()]);
        assert!(split_content("").is_empty());
    }

    #[test]
    fn usage_estimate_is_a_quarter_of_the_characters_at_least_one() {
        assert_eq!(estimate(0), 1);
        assert_eq!(estimate(40), 10);
        let body = json!({"messages": [{"content": "abcd"}, {"content": [{"type": "text", "text": "efgh"}]}]});
        assert_eq!(prompt_chars(&body), 8);
    }
}
