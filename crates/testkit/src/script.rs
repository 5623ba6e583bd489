//! What the scripted server answers: the models it serves and, per model, the replies it gives
//! in order, to chat requests and to embedding requests.

use std::collections::HashMap;
use std::time::Duration;

use serde::Deserialize;
use serde_json::Value;

use crate::error::{Error, Result};

pub const DEFAULT_CONTEXT_LENGTH: u32 = 32768;
pub const DEFAULT_ARCHITECTURE: &str = "llama";
/// Length of the vectors the embedding endpoints return unless `Script::embedding_dimension`.
pub const DEFAULT_EMBEDDING_DIMENSION: usize = 64;

/// A model the server claims to have (listed by `/api/tags` and `/v1/models`, described by
/// `/api/show`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ModelDef {
    pub name: String,
    /// Reported as `model_info["<architecture>.context_length"]` and `max_model_len`.
    pub context_length: u32,
    pub architecture: String,
}

impl ModelDef {
    pub fn new(name: impl Into<String>, context_length: u32) -> Self {
        Self { name: name.into(), context_length, architecture: DEFAULT_ARCHITECTURE.to_owned() }
    }

    pub fn architecture(mut self, architecture: impl Into<String>) -> Self {
        self.architecture = architecture.into();
        self
    }
}

/// One scripted answer to a chat request.
#[derive(Clone, Debug, PartialEq)]
pub enum Reply {
    /// Plain assistant text.
    Text(String),
    /// Native tool calls `(name, arguments)`, encoded as the request's protocol dictates.
    ToolCalls(Vec<(String, Value)>),
    /// Assistant content that is this JSON's text (structured output, schema-mode tool calls).
    Json(Value),
    /// An HTTP error with this status and body (sent as JSON when it parses as JSON).
    Status(u16, String),
    /// A 200 whose body is this text verbatim instead of the protocol.
    Garbage(String),
    /// The inner reply, after a pause.
    Delayed(Duration, Box<Reply>),
    /// The inner reply with these prompt/completion token counts instead of the estimate.
    WithUsage(Box<Reply>, u32, u32),
}

impl Reply {
    pub fn text(text: impl Into<String>) -> Self {
        Reply::Text(text.into())
    }

    pub fn tool_call(name: impl Into<String>, arguments: Value) -> Self {
        Reply::ToolCalls(vec![(name.into(), arguments)])
    }

    pub fn delayed(self, pause: Duration) -> Self {
        Reply::Delayed(pause, Box::new(self))
    }

    pub fn with_usage(self, prompt_tokens: u32, completion_tokens: u32) -> Self {
        Reply::WithUsage(Box::new(self), prompt_tokens, completion_tokens)
    }
}

/// One scripted answer to an embedding request (`/api/embed`, `/v1/embeddings`). A model's
/// are consumed in order; once they are used up, or when none were given, requests get
/// `EmbedReply::Hashed`.
#[derive(Clone, Debug, PartialEq)]
pub enum EmbedReply {
    /// The inputs' `hashed_embedding`s, of the server's dimension.
    Hashed,
    /// The inputs' `hashed_embedding`s, of this dimension instead of the server's.
    Dimension(usize),
    /// The inputs' `hashed_embedding`s without the last one: fewer vectors than inputs.
    DropLast,
    /// An HTTP error with this status and body (sent as JSON when it parses as JSON).
    Status(u16, String),
    /// A 200 whose body is this text verbatim instead of the protocol.
    Garbage(String),
}

/// The whole behaviour of a `ScriptedModelServer`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Script {
    pub(crate) models: Vec<ModelDef>,
    pub(crate) replies: HashMap<String, Vec<Reply>>,
    pub(crate) embed_replies: HashMap<String, Vec<EmbedReply>>,
    /// `None`: `DEFAULT_EMBEDDING_DIMENSION`.
    pub(crate) embedding_dimension: Option<usize>,
    pub(crate) api_key: Option<String>,
    pub(crate) repeat: bool,
}

impl Script {
    pub fn new() -> Self {
        Self::default()
    }

    /// Serves `def`, replacing an earlier definition of the same name.
    pub fn model(mut self, def: ModelDef) -> Self {
        match self.models.iter_mut().find(|m| same_model(&m.name, &def.name)) {
            Some(existing) => *existing = def,
            None => self.models.push(def),
        }
        self
    }

    /// Appends replies for `model`, defining it (default context length and architecture) if
    /// it was not yet.
    pub fn replies(mut self, model: &str, replies: Vec<Reply>) -> Self {
        let name = self.declare(model);
        self.replies.entry(name).or_default().extend(replies);
        self
    }

    /// Appends answers to `model`'s embedding requests, defining the model if it was not yet.
    /// A model's embedding requests need no script: unscripted ones get `EmbedReply::Hashed`.
    pub fn embed_replies(mut self, model: &str, replies: Vec<EmbedReply>) -> Self {
        let name = self.declare(model);
        self.embed_replies.entry(name).or_default().extend(replies);
        self
    }

    /// Length of the embedding vectors (default `DEFAULT_EMBEDDING_DIMENSION`), for every model.
    pub fn embedding_dimension(mut self, dimension: usize) -> Self {
        self.embedding_dimension = Some(dimension);
        self
    }

    /// The declared name of `model`, declaring it (default context length and architecture)
    /// if it was not yet.
    fn declare(&mut self, model: &str) -> String {
        match self.models.iter().find(|m| same_model(&m.name, model)) {
            Some(def) => def.name.clone(),
            None => {
                self.models.push(ModelDef::new(model, DEFAULT_CONTEXT_LENGTH));
                model.to_owned()
            }
        }
    }

    /// Answers 401 to every request without `Authorization: Bearer <key>`.
    pub fn require_api_key(mut self, key: impl Into<String>) -> Self {
        self.api_key = Some(key.into());
        self
    }

    /// Starts a model's replies over when they are used up, for benchmarks and manual runs.
    pub fn repeat(mut self, repeat: bool) -> Self {
        self.repeat = repeat;
        self
    }

    /// Reads a scenario:
    ///
    /// ```json
    /// {
    ///   "api_key": "secret",
    ///   "repeat": false,
    ///   "embedding_dimension": 64,
    ///   "models": [{
    ///     "name": "qwen3:8b",
    ///     "context_length": 40960,
    ///     "architecture": "qwen3",
    ///     "replies": [
    ///       {"text": "hello"},
    ///       {"tool_calls": [{"name": "read_file", "arguments": {"path": "a.rs"}}]},
    ///       {"json": {"final": "done"}},
    ///       {"status": {"code": 503, "body": "busy"}},
    ///       {"garbage": "not json"},
    ///       {"delayed": {"ms": 250, "reply": {"text": "slow"}}},
    ///       {"with_usage": {"prompt_tokens": 10, "completion_tokens": 5, "reply": {"text": "hi"}}}
    ///     ]
    ///   }]
    /// }
    /// ```
    ///
    /// Only `models[].name` is required; `context_length` defaults to 32768, `architecture` to
    /// "llama", `embedding_dimension` to 64, the rest to empty / off. Embedding requests to
    /// any declared model get the hashed embeddings of their inputs.
    pub fn from_json(scenario: &Value) -> Result<Self> {
        let file = ScenarioFile::deserialize(scenario).map_err(|e| Error::Scenario { reason: e.to_string() })?;
        let mut script = Script::new().repeat(file.repeat);
        if let Some(key) = file.api_key {
            script = script.require_api_key(key);
        }
        if let Some(dimension) = file.embedding_dimension {
            if dimension == 0 {
                return Err(Error::Scenario { reason: "embedding_dimension must be at least 1".to_owned() });
            }
            script = script.embedding_dimension(dimension);
        }
        for model in file.models {
            if model.name.trim().is_empty() {
                return Err(Error::Scenario { reason: "a model has an empty name".to_owned() });
            }
            let def = ModelDef {
                name: model.name.clone(),
                context_length: model.context_length,
                architecture: model.architecture,
            };
            let replies = model.replies.into_iter().map(ReplySpec::into_reply).collect();
            script = script.model(def).replies(&model.name, replies);
        }
        Ok(script)
    }
}

/// Ollama's rule: a name without a tag means `:latest`.
pub(crate) fn same_model(a: &str, b: &str) -> bool {
    fn full(name: &str) -> String {
        if name.rsplit('/').next().is_some_and(|last| last.contains(':')) {
            name.to_owned()
        } else {
            format!("{name}:latest")
        }
    }
    a == b || full(a) == full(b)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ScenarioFile {
    #[serde(default)]
    api_key: Option<String>,
    #[serde(default)]
    repeat: bool,
    #[serde(default)]
    embedding_dimension: Option<usize>,
    #[serde(default)]
    models: Vec<ScenarioModel>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ScenarioModel {
    name: String,
    #[serde(default = "default_context_length")]
    context_length: u32,
    #[serde(default = "default_architecture")]
    architecture: String,
    #[serde(default)]
    replies: Vec<ReplySpec>,
}

fn default_context_length() -> u32 {
    DEFAULT_CONTEXT_LENGTH
}

fn default_architecture() -> String {
    DEFAULT_ARCHITECTURE.to_owned()
}

#[derive(Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
enum ReplySpec {
    Text(String),
    ToolCalls(Vec<CallSpec>),
    Json(Value),
    Status {
        code: u16,
        #[serde(default)]
        body: String,
    },
    Garbage(String),
    Delayed {
        ms: u64,
        reply: Box<ReplySpec>,
    },
    WithUsage {
        prompt_tokens: u32,
        completion_tokens: u32,
        reply: Box<ReplySpec>,
    },
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CallSpec {
    name: String,
    #[serde(default)]
    arguments: Value,
}

impl ReplySpec {
    fn into_reply(self) -> Reply {
        match self {
            ReplySpec::Text(text) => Reply::Text(text),
            ReplySpec::ToolCalls(calls) => Reply::ToolCalls(
                calls
                    .into_iter()
                    .map(|c| {
                        let arguments =
                            if c.arguments.is_null() { Value::Object(Default::default()) } else { c.arguments };
                        (c.name, arguments)
                    })
                    .collect(),
            ),
            ReplySpec::Json(value) => Reply::Json(value),
            ReplySpec::Status { code, body } => Reply::Status(code, body),
            ReplySpec::Garbage(text) => Reply::Garbage(text),
            ReplySpec::Delayed { ms, reply } => Reply::Delayed(Duration::from_millis(ms), Box::new(reply.into_reply())),
            ReplySpec::WithUsage { prompt_tokens, completion_tokens, reply } => {
                Reply::WithUsage(Box::new(reply.into_reply()), prompt_tokens, completion_tokens)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn scenario_json_builds_the_same_script_as_the_builder() {
        let scenario = json!({
            "api_key": "k",
            "embedding_dimension": 8,
            "models": [{
                "name": "qwen3:8b", "context_length": 40960, "architecture": "qwen3",
                "replies": [
                    {"text": "hello"},
                    {"tool_calls": [{"name": "read_file", "arguments": {"path": "a"}}]},
                    {"json": {"final": "x"}},
                    {"status": {"code": 503, "body": "busy"}},
                    {"garbage": "{nope"},
                    {"delayed": {"ms": 5, "reply": {"text": "slow"}}},
                    {"with_usage": {"prompt_tokens": 1, "completion_tokens": 2, "reply": {"text": "u"}}}
                ]
            }]
        });
        let built = Script::new()
            .require_api_key("k")
            .embedding_dimension(8)
            .model(ModelDef::new("qwen3:8b", 40960).architecture("qwen3"))
            .replies(
                "qwen3:8b",
                vec![
                    Reply::text("hello"),
                    Reply::tool_call("read_file", json!({"path": "a"})),
                    Reply::Json(json!({"final": "x"})),
                    Reply::Status(503, "busy".into()),
                    Reply::Garbage("{nope".into()),
                    Reply::text("slow").delayed(Duration::from_millis(5)),
                    Reply::text("u").with_usage(1, 2),
                ],
            );
        assert_eq!(Script::from_json(&scenario).ok(), Some(built));
    }

    #[test]
    fn unknown_reply_kind_is_a_scenario_error() {
        let scenario = json!({"models": [{"name": "m", "replies": [{"txt": "typo"}]}]});
        let err = Script::from_json(&scenario).expect_err("typo");
        assert!(err.to_string().contains("txt"), "{err}");
    }

    #[test]
    fn replies_for_an_undeclared_model_declare_it() {
        let script = Script::new().replies("phi4", vec![Reply::text("a")]);
        assert_eq!(script.models, vec![ModelDef::new("phi4", DEFAULT_CONTEXT_LENGTH)]);
    }
}
