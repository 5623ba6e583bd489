//! Errors of the model layer. Every message says what went wrong and what the user can do.

use std::time::Duration;

use crate::settings::Provider;

pub type Result<T> = std::result::Result<T, Error>;

/// Bodies and model outputs quoted in errors are cut here so a huge reply cannot flood a log.
pub(crate) const MAX_QUOTED_CHARS: usize = 500;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot reach {provider} at {url}: {reason}; is it running? set OLLAMA_LOCAL / TURBO_HOST")]
    Unreachable { provider: Provider, url: String, reason: String },

    #[error("the server at {url} rejected the api key; check OLLAMA_API_KEY")]
    Unauthorized { url: String },

    #[error(
        "model {model} is not available on the server (available: {}); run `ollama pull {model}` or pick one of them",
        list_or_none(.available)
    )]
    ModelNotFound { model: String, available: Vec<String> },

    #[error("the model server answered http {status}: {body}; {}", http_hint(*.status))]
    Http { status: u16, body: String },

    #[error("no answer from {url} after {after:?}; raise request_timeout_s or use a smaller model")]
    Timeout { url: String, after: Duration },

    #[error(
        "the model server sent a response that is not its protocol: {reason}; check that base_url points at an ollama or openai-compatible api"
    )]
    InvalidResponse { reason: String },

    #[error(
        "the model answered in the wrong shape: {reason}; retry, or use a model that follows instructions better (output: {raw})"
    )]
    InvalidOutput { reason: String, raw: String },

    #[error("the model server reported an error: {message}; see the server log")]
    Server { message: String },

    #[error("invalid model settings: {reason}; fix the model section of the config")]
    InvalidSettings { reason: String },
}

impl Error {
    /// True for failures that may go away by themselves (overload, restarts, network blips).
    /// Auth, missing models and malformed requests would fail the same way again.
    pub fn is_retryable(&self) -> bool {
        match self {
            Error::Unreachable { .. } | Error::Timeout { .. } => true,
            Error::Http { status, .. } => matches!(status, 429 | 500..=504),
            Error::Unauthorized { .. }
            | Error::ModelNotFound { .. }
            | Error::InvalidResponse { .. }
            | Error::InvalidOutput { .. }
            | Error::Server { .. }
            | Error::InvalidSettings { .. } => false,
        }
    }

    pub(crate) fn invalid_output(reason: impl Into<String>, raw: &str) -> Self {
        Error::InvalidOutput { reason: reason.into(), raw: truncate(raw, MAX_QUOTED_CHARS) }
    }

    pub(crate) fn invalid_response(reason: impl Into<String>) -> Self {
        Error::InvalidResponse { reason: reason.into() }
    }
}

fn list_or_none(items: &[String]) -> String {
    if items.is_empty() { "none".to_owned() } else { items.join(", ") }
}

fn http_hint(status: u16) -> &'static str {
    match status {
        400 | 422 => "the server rejected the request; check the model settings and the server log",
        404 => "check base_url and the model name",
        429 => "the server is rate limiting; lower concurrency or wait",
        500..=599 => "the server failed; see its log or try again later",
        _ => "see the server log",
    }
}

/// Cuts `text` to at most `max` characters (on a char boundary) and marks the cut.
pub(crate) fn truncate(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((idx, _)) => format!("{}…", &text[..idx]),
        None => text.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truncate_keeps_short_text_and_cuts_long_text_on_char_boundary() {
        assert_eq!(truncate("abc", 5), "abc");
        assert_eq!(truncate("ééééé", 2), "éé…");
    }

    #[test]
    fn only_transient_failures_are_retryable() {
        let http = |status| Error::Http { status, body: String::new() };
        assert!(http(429).is_retryable());
        assert!(http(503).is_retryable());
        assert!(!http(400).is_retryable());
        assert!(!http(404).is_retryable());
        assert!(!Error::Unauthorized { url: "http://x".into() }.is_retryable());
    }

    #[test]
    fn model_not_found_lists_available_models_and_says_what_to_do() {
        let e = Error::ModelNotFound {
            model: "qwen3:8b".into(),
            available: vec!["llama3:latest".into(), "phi4:latest".into()],
        };
        let msg = e.to_string();
        assert!(msg.contains("llama3:latest, phi4:latest"), "{msg}");
        assert!(msg.contains("ollama pull qwen3:8b"), "{msg}");
    }
}
