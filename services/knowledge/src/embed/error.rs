//! [`EmbedError`]: why no vectors came back, and what to change so they do. No variant ever
//! holds an api key: bodies quoted from servers have it redacted.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum EmbedError {
    #[error(
        "no embedding model at {} ({file} missing): run deploy/scripts/setup.sh or set knowledge.model_dir",
        dir.display()
    )]
    ModelMissing { dir: PathBuf, file: &'static str },

    #[error(
        "cannot load the embedding model from {}: {reason}; run deploy/scripts/setup.sh again to replace its \
         files, or point knowledge.model_dir at an all-MiniLM-L6-v2 directory",
        dir.display()
    )]
    Load { dir: PathBuf, reason: String },

    #[error("the embedding model failed on a batch of texts: {reason}")]
    Inference { reason: String },

    #[error(
        "cannot reach the embedding server at {url}: {reason}; start it, or point knowledge.embed_url at a \
         running server"
    )]
    Unavailable { url: String, reason: String },

    #[error("the embedding server at {url} answered HTTP {status}: {body}; {}", status_hint(.status))]
    Http { url: String, status: u16, body: String },

    #[error(
        "the embedding model {model} sent a bad reply: {reason}; check that knowledge.embed_model names an embedding model"
    )]
    BadResponse { model: String, reason: String },

    #[error("invalid {key}: {problem}")]
    Config { key: &'static str, problem: String },
}

impl EmbedError {
    /// The embedder cannot be reached or is not serving for now (connection failure, timeout,
    /// HTTP 429, 502, 503, 504): worth trying again later, unlike a missing model, a wrong
    /// setting or a bad reply, which need a change first.
    pub fn is_unavailable(&self) -> bool {
        match self {
            EmbedError::Unavailable { .. } => true,
            EmbedError::Http { status, .. } => matches!(status, 429 | 502 | 503 | 504),
            _ => false,
        }
    }
}

fn status_hint(status: &u16) -> &'static str {
    match *status {
        401 | 403 => "check knowledge.embed_api_key",
        404 => "check knowledge.embed_model (is the model pulled or served?) and knowledge.embed_url",
        429 | 502 | 503 | 504 => "the server is busy or restarting: try again later",
        _ => "check knowledge.embed_model and the server's log",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn model_missing_names_the_directory_the_file_and_the_fix() {
        let e = EmbedError::ModelMissing { dir: PathBuf::from("/m/all-MiniLM-L6-v2"), file: "tokenizer.json" };
        assert_eq!(
            e.to_string(),
            "no embedding model at /m/all-MiniLM-L6-v2 (tokenizer.json missing): run deploy/scripts/setup.sh or \
             set knowledge.model_dir"
        );
    }

    #[test]
    fn only_transport_failures_and_busy_servers_are_unavailable() {
        let http = |status| EmbedError::Http { url: "u".into(), status, body: String::new() };
        assert!(EmbedError::Unavailable { url: "u".into(), reason: "refused".into() }.is_unavailable());
        assert!(http(503).is_unavailable());
        assert!(!http(404).is_unavailable());
        assert!(!http(500).is_unavailable());
        assert!(!EmbedError::BadResponse { model: "m".into(), reason: "r".into() }.is_unavailable());
        assert!(http(401).to_string().contains("knowledge.embed_api_key"));
    }
}
