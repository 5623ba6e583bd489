//! The embedding servers: Ollama's `POST /api/embed` and the OpenAI-compatible
//! `POST /v1/embeddings` (vLLM, llama.cpp, LM Studio, OpenAI itself; Ollama serves it too).
//!
//! `connect` probes the server once with a short text. That proves the server, the model and
//! the key work before anything is indexed, and learns the dimension every later vector must
//! have: a server whose model is swapped underneath must not slip vectors of another space into
//! the dataset. Texts go out `batch` per request, one request at a time.
//!
//! The api key is sent as a bearer token and kept out of `Debug`, errors and logs: server
//! bodies quoted in errors have it replaced by `<redacted>`.

use std::time::Duration;

use reqwest::Url;
use serde::Deserialize;
use serde_json::{Value, json};

use super::{EmbedError, Embedder, check_vectors};

/// Texts per request unless `with_batch` says otherwise (the default of `knowledge.embed_batch`).
const DEFAULT_BATCH: usize = 64;
/// A server that does not accept the connection within this is down, whatever the request
/// timeout allows for a slow answer.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Characters of a server's error body quoted in an error.
const MAX_QUOTED_CHARS: usize = 300;
const PROBE_TEXT: &str = "dimension probe";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocol {
    /// `POST /api/embed`.
    Ollama,
    /// `POST /v1/embeddings`.
    OpenAi,
}

impl Protocol {
    fn name(self) -> &'static str {
        match self {
            Protocol::Ollama => "ollama",
            Protocol::OpenAi => "openai",
        }
    }

    /// The endpoint under `base`, which has no trailing slash; OpenAI bases may end in `/v1`.
    fn endpoint(self, base: &str) -> String {
        match self {
            Protocol::Ollama => format!("{base}/api/embed"),
            Protocol::OpenAi => format!("{}/v1/embeddings", base.strip_suffix("/v1").unwrap_or(base)),
        }
    }

    fn body(self, model: &str, texts: &[String]) -> Value {
        match self {
            Protocol::Ollama => json!({"model": model, "input": texts}),
            Protocol::OpenAi => json!({"model": model, "input": texts, "encoding_format": "float"}),
        }
    }

    /// The vectors of a 2xx reply, in input order. `Err` says what is wrong with the reply.
    fn parse(self, body: &[u8]) -> Result<Vec<Vec<f32>>, String> {
        #[derive(Deserialize)]
        struct OllamaReply {
            embeddings: Vec<Vec<f32>>,
        }
        #[derive(Deserialize)]
        struct OpenAiReply {
            data: Vec<OpenAiItem>,
        }
        #[derive(Deserialize)]
        struct OpenAiItem {
            index: usize,
            embedding: Vec<f32>,
        }
        let not_protocol = |e: serde_json::Error| {
            let start = String::from_utf8_lossy(&body[..body.len().min(80)]).into_owned();
            format!("the reply is not {} embeddings JSON ({e}); it starts {start:?}", self.name())
        };
        match self {
            Protocol::Ollama => serde_json::from_slice::<OllamaReply>(body).map(|r| r.embeddings).map_err(not_protocol),
            Protocol::OpenAi => {
                let mut items = serde_json::from_slice::<OpenAiReply>(body).map_err(not_protocol)?.data;
                // OpenAI documents no order for `data`; `index` ties each vector to its input.
                items.sort_by_key(|item| item.index);
                if let Some((at, item)) = items.iter().enumerate().find(|(at, item)| item.index != *at) {
                    return Err(format!(
                        "the reply's indexes are not 0..{}: index {} at {at}",
                        items.len(),
                        item.index
                    ));
                }
                Ok(items.into_iter().map(|item| item.embedding).collect())
            }
        }
    }
}

/// What both protocols share: the client, where to send, and what was learnt at the probe.
struct Client {
    protocol: Protocol,
    http: reqwest::Client,
    endpoint: String,
    /// `endpoint` without any user name or password, for errors.
    shown: String,
    model: String,
    model_id: String,
    api_key: Option<String>,
    timeout: Duration,
    dimension: usize,
    batch: usize,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("endpoint", &self.shown)
            .field("model_id", &self.model_id)
            .field("api_key", &self.api_key.as_ref().map(|_| "<redacted>"))
            .field("dimension", &self.dimension)
            .field("batch", &self.batch)
            .finish()
    }
}

impl Client {
    async fn connect(
        protocol: Protocol,
        url: &str,
        model: &str,
        api_key: Option<String>,
        timeout: Duration,
    ) -> Result<Self, EmbedError> {
        let invalid_url = |problem: String| EmbedError::Config { key: "knowledge.embed_url", problem };
        let base = url.trim().trim_end_matches('/');
        let parsed = Url::parse(base).map_err(|e| invalid_url(format!("{url:?} is not a URL ({e})")))?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(invalid_url(format!("{url:?} must start with http:// or https://")));
        }
        let model = model.trim();
        if model.is_empty() {
            return Err(EmbedError::Config {
                key: "knowledge.embed_model",
                problem: "is empty: name an embedding model, e.g. nomic-embed-text".into(),
            });
        }
        if timeout.is_zero() {
            return Err(EmbedError::Config { key: "request_timeout_s", problem: "must be at least 1 second".into() });
        }
        let http =
            reqwest::Client::builder().timeout(timeout).connect_timeout(CONNECT_TIMEOUT.min(timeout)).build().map_err(
                |e| EmbedError::Config { key: "knowledge.embed_url", problem: format!("no HTTP client: {e}") },
            )?;
        let endpoint = protocol.endpoint(base);
        let mut client = Self {
            protocol,
            http,
            shown: without_credentials(&endpoint),
            endpoint,
            model: model.to_owned(),
            model_id: format!("{}:{model}", protocol.name()),
            api_key: api_key.filter(|key| !key.is_empty()),
            timeout,
            dimension: 0,
            batch: DEFAULT_BATCH,
        };
        let mut probe = client.request(&[PROBE_TEXT.to_owned()]).await?;
        client.dimension = probe.first().map_or(0, Vec::len);
        if client.dimension == 0 {
            return Err(client.bad(format!("the probe got {} vectors, the first of 0 values", probe.len())));
        }
        check_vectors(&mut probe, 1, client.dimension).map_err(|reason| client.bad(format!("probe: {reason}")))?;
        tracing::info!(endpoint = %client.shown, model_id = %client.model_id, dimension = client.dimension, "embedding server probed");
        Ok(client)
    }

    async fn embed(&self, texts: &[String]) -> Result<Vec<Vec<f32>>, EmbedError> {
        let mut vectors = Vec::with_capacity(texts.len());
        for batch in texts.chunks(self.batch) {
            let mut got = self.request(batch).await?;
            check_vectors(&mut got, batch.len(), self.dimension).map_err(|reason| self.bad(reason))?;
            vectors.append(&mut got);
        }
        Ok(vectors)
    }

    /// One request for `texts`: the reply's vectors as sent, not yet checked.
    async fn request(&self, texts: &[String]) -> Result<Vec<Vec<f32>>, EmbedError> {
        let mut request = self.http.post(&self.endpoint).json(&self.protocol.body(&self.model, texts));
        if let Some(key) = &self.api_key {
            request = request.bearer_auth(key);
        }
        let response = request.send().await.map_err(|e| self.unavailable(&e))?;
        let status = response.status();
        if !status.is_success() {
            // The body explains the failure; if it cannot be read the status alone still does.
            let body = response.text().await.unwrap_or_default();
            return Err(EmbedError::Http {
                url: self.shown.clone(),
                status: status.as_u16(),
                body: self.redact(&quote(body.trim())),
            });
        }
        let body = response.bytes().await.map_err(|e| self.unavailable(&e))?;
        self.protocol.parse(&body).map_err(|reason| self.bad(reason))
    }

    fn unavailable(&self, error: &reqwest::Error) -> EmbedError {
        let reason = if error.is_timeout() {
            format!("no answer within {} s", self.timeout.as_secs_f64())
        } else {
            // reqwest's own message is generic ("error sending request"); the cause is at the bottom.
            let mut cause: &dyn std::error::Error = error;
            while let Some(source) = cause.source() {
                cause = source;
            }
            self.redact(&cause.to_string())
        };
        EmbedError::Unavailable { url: self.shown.clone(), reason }
    }

    fn bad(&self, reason: String) -> EmbedError {
        EmbedError::BadResponse {
            model: self.model_id.clone(),
            reason: format!("{} (from {})", self.redact(&reason), self.shown),
        }
    }

    /// Servers sometimes echo request headers in error bodies.
    fn redact(&self, text: &str) -> String {
        match &self.api_key {
            Some(key) if text.contains(key.as_str()) => text.replace(key.as_str(), "<redacted>"),
            _ => text.to_owned(),
        }
    }
}

/// `url` without its user name and password, if it has any.
fn without_credentials(url: &str) -> String {
    match Url::parse(url) {
        Ok(mut parsed) if !parsed.username().is_empty() || parsed.password().is_some() => {
            // Both only fail for URLs that cannot have credentials, which these have.
            let _ = parsed.set_username("");
            let _ = parsed.set_password(None);
            parsed.to_string()
        }
        _ => url.to_owned(),
    }
}

/// At most `MAX_QUOTED_CHARS` of `text`, marked when cut.
fn quote(text: &str) -> String {
    match text.char_indices().nth(MAX_QUOTED_CHARS) {
        Some((cut, _)) => format!("{}...", &text[..cut]),
        None => text.to_owned(),
    }
}

/// An embedding server of either protocol; model id `<protocol>:<model>`.
#[derive(Debug)]
pub struct HttpEmbedder(Client);

impl HttpEmbedder {
    /// Probes `url` (an Ollama server, e.g. `http://localhost:11434`; or an OpenAI-compatible
    /// one, `https://host/v1` or without `/v1`) with one text to check it serves `model` and to
    /// learn its dimension. `api_key`, if any, goes out as a bearer token; `timeout` limits each
    /// request.
    pub async fn connect(
        protocol: Protocol,
        url: &str,
        model: &str,
        api_key: Option<String>,
        timeout: Duration,
    ) -> Result<Self, EmbedError> {
        Client::connect(protocol, url, model, api_key, timeout).await.map(Self)
    }

    /// Texts per request (default 64); 0 counts as 1.
    pub fn with_batch(mut self, batch: usize) -> Self {
        self.0.batch = batch.max(1);
        self
    }
}

#[async_trait::async_trait]
impl Embedder for HttpEmbedder {
    fn model_id(&self) -> &str {
        &self.0.model_id
    }

    fn dimension(&self) -> usize {
        self.0.dimension
    }

    async fn embed(&self, texts: &[String]) -> Result<Vec<Vec<f32>>, EmbedError> {
        self.0.embed(texts).await
    }
}

#[cfg(test)]
mod tests {
    use turbo_testkit::{EmbedReply, ModelDef, Script, ScriptedModelServer, hashed_embedding};

    use super::*;

    const MODEL: &str = "nomic-embed-text";
    const TIMEOUT: Duration = Duration::from_secs(30);

    async fn server(script: Script) -> ScriptedModelServer {
        ScriptedModelServer::start(script.model(ModelDef::new(MODEL, 2048))).await.expect("scripted server starts")
    }

    fn texts(items: &[&str]) -> Vec<String> {
        items.iter().map(|t| (*t).to_owned()).collect()
    }

    fn cosine(a: &[f32], b: &[f32]) -> f32 {
        a.iter().zip(b).map(|(x, y)| x * y).sum()
    }

    /// A port nothing listens on: bound, then released.
    async fn dead_url() -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("local addr");
        drop(listener);
        format!("http://{addr}")
    }

    #[tokio::test]
    async fn both_protocols_learn_the_dimension_and_return_the_servers_vectors_in_batches() {
        let server = server(Script::new().embedding_dimension(48)).await;
        let input = texts(&["read a file into a string", "load a file as text", "parse a jwt", "x", "y"]);
        let ollama = HttpEmbedder::connect(Protocol::Ollama, &server.url(), MODEL, None, TIMEOUT)
            .await
            .expect("ollama connects");
        let openai = HttpEmbedder::connect(Protocol::OpenAi, &format!("{}/v1/", server.url()), MODEL, None, TIMEOUT)
            .await
            .expect("openai connects");
        assert_eq!((ollama.model_id(), ollama.dimension()), ("ollama:nomic-embed-text", 48));
        assert_eq!((openai.model_id(), openai.dimension()), ("openai:nomic-embed-text", 48));
        for embedder in [&ollama.with_batch(2) as &dyn Embedder, &openai.with_batch(2)] {
            let vectors = embedder.embed(&input).await.expect("embeds");
            assert_eq!(vectors.len(), input.len());
            for (vector, text) in vectors.iter().zip(&input) {
                assert!((cosine(vector, &hashed_embedding(text, 48)) - 1.0).abs() < 1e-5, "{text}");
            }
            assert!(cosine(&vectors[0], &vectors[1]) > cosine(&vectors[0], &vectors[2]));
            assert!(embedder.embed(&[]).await.is_ok_and(|v| v.is_empty()));
        }
        // A probe each, then three batches of at most two each; no request for empty input.
        assert_eq!(server.requests_to("/api/embed").len(), 4);
        assert_eq!(server.requests_to("/v1/embeddings").len(), 4);
        let last = server.requests_to("/api/embed").pop().expect("a request");
        assert_eq!(last.body["input"], json!(["y"]));
    }

    #[tokio::test]
    async fn an_http_error_names_the_url_the_status_and_the_setting_to_check() {
        let server = server(Script::new().embed_replies(
            MODEL,
            vec![EmbedReply::Hashed, EmbedReply::Status(500, r#"{"error":"model crashed"}"#.into())],
        ))
        .await;
        let ollama =
            HttpEmbedder::connect(Protocol::Ollama, &server.url(), MODEL, None, TIMEOUT).await.expect("probe passes");
        let err = ollama.embed(&texts(&["a"])).await.expect_err("scripted 500");
        assert!(matches!(err, EmbedError::Http { status: 500, .. }), "{err:?}");
        let message = err.to_string();
        assert!(message.contains(&server.url()) && message.contains("model crashed"), "{message}");
        assert!(!err.is_unavailable());

        let err = HttpEmbedder::connect(Protocol::OpenAi, &server.url(), "no-such-model", None, TIMEOUT)
            .await
            .expect_err("unknown");
        assert!(matches!(err, EmbedError::Http { status: 404, .. }), "{err:?}");
        assert!(err.to_string().contains("knowledge.embed_model"), "{err}");
    }

    #[tokio::test]
    async fn replies_of_the_wrong_shape_are_bad_responses_saying_what_is_wrong() {
        let server = server(Script::new().embed_replies(
            MODEL,
            vec![
                EmbedReply::Hashed,
                EmbedReply::Dimension(7),
                EmbedReply::DropLast,
                EmbedReply::Garbage("<html>".into()),
            ],
        ))
        .await;
        let openai =
            HttpEmbedder::connect(Protocol::OpenAi, &server.url(), MODEL, None, TIMEOUT).await.expect("probe passes");
        let two = texts(&["a", "b"]);
        let dimension = openai.embed(&two).await.expect_err("7 dimensions");
        assert!(matches!(dimension, EmbedError::BadResponse { .. }), "{dimension:?}");
        assert!(dimension.to_string().contains("has 7 dimensions") && dimension.to_string().contains("had 64"));
        let count = openai.embed(&two).await.expect_err("one vector too few").to_string();
        assert!(count.contains("1 vectors for 2 texts"), "{count}");
        let garbage = openai.embed(&two).await.expect_err("not JSON").to_string();
        assert!(garbage.contains("not openai embeddings JSON") && garbage.contains("<html>"), "{garbage}");
    }

    #[tokio::test]
    async fn an_unreachable_server_is_unavailable_naming_the_url() {
        let url = dead_url().await;
        for err in [
            HttpEmbedder::connect(Protocol::Ollama, &url, MODEL, None, TIMEOUT).await.expect_err("nothing listens"),
            HttpEmbedder::connect(Protocol::OpenAi, &url, MODEL, None, TIMEOUT).await.expect_err("nothing listens"),
        ] {
            assert!(matches!(err, EmbedError::Unavailable { .. }), "{err:?}");
            assert!(err.is_unavailable());
            assert!(err.to_string().contains(&url), "{err}");
        }
    }

    #[tokio::test]
    async fn the_api_key_goes_as_a_bearer_token_and_never_into_errors_or_debug() {
        let key = "sk-test-0123456789";
        let server = server(
            Script::new()
                .require_api_key(key)
                .embed_replies(MODEL, vec![EmbedReply::Hashed, EmbedReply::Status(500, format!("bad token {key}"))]),
        )
        .await;
        let openai = HttpEmbedder::connect(Protocol::OpenAi, &server.url(), MODEL, Some(key.to_owned()), TIMEOUT)
            .await
            .expect("key accepted");
        let seen = server.requests_to("/v1/embeddings");
        assert_eq!(seen[0].header("authorization"), Some(format!("Bearer {key}").as_str()));
        assert!(!format!("{openai:?}").contains(key));

        let echoed = openai.embed(&texts(&["a"])).await.expect_err("scripted 500 echoing the key");
        let wrong = HttpEmbedder::connect(Protocol::OpenAi, &server.url(), MODEL, Some("sk-wrong-key".into()), TIMEOUT)
            .await
            .expect_err("wrong key");
        assert!(matches!(wrong, EmbedError::Http { status: 401, .. }), "{wrong:?}");
        for err in [echoed, wrong] {
            let shown = format!("{err} {err:?}");
            assert!(!shown.contains(key) && !shown.contains("sk-wrong-key"), "{shown}");
        }
    }

    #[tokio::test]
    async fn bad_settings_are_config_errors_naming_the_key() {
        let err = HttpEmbedder::connect(Protocol::Ollama, "localhost:11434", MODEL, None, TIMEOUT)
            .await
            .expect_err("no scheme");
        assert!(err.to_string().contains("knowledge.embed_url"), "{err}");
        let err = HttpEmbedder::connect(Protocol::Ollama, "http://localhost:1", " ", None, TIMEOUT)
            .await
            .expect_err("no model");
        assert!(err.to_string().contains("knowledge.embed_model"), "{err}");
    }

    #[test]
    fn credentials_in_the_url_are_not_shown() {
        assert_eq!(without_credentials("http://user:pw@host:1/api/embed"), "http://host:1/api/embed");
        assert_eq!(without_credentials("http://host:1/api/embed"), "http://host:1/api/embed");
        assert_eq!(Protocol::OpenAi.endpoint("http://h/v1"), "http://h/v1/embeddings");
        assert_eq!(Protocol::OpenAi.endpoint("http://h"), "http://h/v1/embeddings");
    }
}
