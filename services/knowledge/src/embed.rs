//! Embeddings: the [`Embedder`] trait that turns chunk and query texts into L2-normalised
//! vectors, and the four models behind it, chosen by `knowledge.embedder`:
//!
//! - [`MiniLm`]: all-MiniLM-L6-v2 (384 dimensions) run on the CPU in this process with candle,
//!   from the files `deploy/scripts/setup.sh` fetches. No server, works offline.
//! - [`Distilled`]: a static model distilled once from the same MiniLM files: a text's vector
//!   is the weighted mean of its tokens' vectors. About a hundred times faster, ranks worse.
//! - [`HttpEmbedder`] with [`Protocol::Ollama`]: an Ollama server's `POST /api/embed`.
//! - [`HttpEmbedder`] with [`Protocol::OpenAi`]: an OpenAI-compatible server's
//!   `POST /v1/embeddings`.
//!
//! [`from_config`] builds the configured one. Vectors of different models live in different
//! spaces, so each embedder has a stable [`Embedder::model_id`] that is stored with the vectors.
//!
//! # Layout
//! - this file: the trait, [`from_config`], and the checks every model's vectors go through.
//! - `error`: [`EmbedError`], saying what to fix.
//! - `minilm`: the in-process model: tokenizer, BERT, masked mean pooling.
//! - `distilled`: the static model distilled from it, and its table's file.
//! - `http`: the two server protocols, with the probe that learns the dimension.

mod distilled;
mod error;
mod http;
pub(crate) mod minilm;

use std::sync::Arc;
use std::time::Duration;

use turbo_config::{EmbedderKind, KnowledgeConfig, ModelSettings, StoreConfig};

pub use distilled::{DISTILLED_MODEL_ID, Distilled};
pub use error::EmbedError;
pub use http::{HttpEmbedder, Protocol};
pub use minilm::{MINILM_MODEL_ID, MiniLm};

/// A text embedding model.
#[async_trait::async_trait]
pub trait Embedder: Send + Sync {
    /// Stable id stored with the vectors: "minilm:all-MiniLM-L6-v2", "ollama:<model>", "openai:<model>".
    fn model_id(&self) -> &str;
    fn dimension(&self) -> usize;
    /// One L2-normalised vector per text, in order. Empty input -> empty output, no model call.
    async fn embed(&self, texts: &[String]) -> Result<Vec<Vec<f32>>, EmbedError>;
}

/// Builds the configured embedder. For ollama/openai it makes one probe call to learn the dimension
/// (a clear Unavailable error naming the URL when the server cannot be reached).
///
/// The server defaults to the coder model's `base_url`; its api key then defaults to the coder's
/// too, since it is the same server. Requests time out after the coder's `request_timeout_s`.
pub async fn from_config(
    k: &KnowledgeConfig,
    store: &StoreConfig,
    coder: &ModelSettings,
) -> Result<Arc<dyn Embedder>, EmbedError> {
    match k.embedder {
        EmbedderKind::Minilm | EmbedderKind::MinilmStatic => {
            let dir = k.model_dir(store);
            let distilled = k.embedder == EmbedderKind::MinilmStatic;
            // Reading and parsing 90 MB of weights (and distilling them) is blocking work.
            tokio::task::spawn_blocking(move || -> Result<Arc<dyn Embedder>, EmbedError> {
                Ok(if distilled { Arc::new(Distilled::load(&dir)?) } else { Arc::new(MiniLm::load(&dir)?) })
            })
            .await
            .map_err(|e| EmbedError::Inference { reason: format!("the model loading task failed: {e}") })?
        }
        EmbedderKind::Ollama | EmbedderKind::Openai => {
            if k.embed_batch == 0 {
                return Err(EmbedError::Config { key: "knowledge.embed_batch", problem: "must be at least 1".into() });
            }
            let (url, api_key) = match &k.embed_url {
                Some(url) => (url.clone(), k.embed_api_key.clone()),
                None => (coder.base_url.clone(), k.embed_api_key.clone().or_else(|| coder.api_key.clone())),
            };
            let timeout = Duration::from_secs(coder.request_timeout_s.max(1));
            let protocol = if k.embedder == EmbedderKind::Ollama { Protocol::Ollama } else { Protocol::OpenAi };
            let embedder = HttpEmbedder::connect(protocol, &url, &k.embed_model, api_key, timeout).await?;
            Ok(Arc::new(embedder.with_batch(k.embed_batch)))
        }
    }
}

/// Scales `vector` to unit length in place, refusing vectors no index can use: non-finite
/// values, or all zeros (no direction). `Err` is the reason.
pub(crate) fn normalize(vector: &mut [f32]) -> Result<(), String> {
    if let Some(at) = vector.iter().position(|x| !x.is_finite()) {
        return Err(format!("a vector has a non-finite value ({}) at position {at}", vector[at]));
    }
    let norm = vector.iter().map(|x| f64::from(*x) * f64::from(*x)).sum::<f64>().sqrt();
    if norm == 0.0 || !norm.is_finite() {
        return Err("a vector is all zeros".to_owned());
    }
    vector.iter_mut().for_each(|x| *x = (f64::from(*x) / norm) as f32);
    Ok(())
}

/// Checks one model call's `vectors` against what was asked: `texts` vectors of `dimension`
/// values each, all usable; then normalises them. `Err` is the reason.
pub(crate) fn check_vectors(vectors: &mut [Vec<f32>], texts: usize, dimension: usize) -> Result<(), String> {
    if vectors.len() != texts {
        return Err(format!("{} vectors for {texts} texts", vectors.len()));
    }
    for (i, vector) in vectors.iter_mut().enumerate() {
        if vector.len() != dimension {
            return Err(format!(
                "vector {i} has {} dimensions, but the model had {dimension} when probed at start \
                 (was the model behind the server replaced?)",
                vector.len()
            ));
        }
        normalize(vector).map_err(|reason| format!("{reason} (vector {i})"))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalize_scales_to_unit_length() {
        let mut v = vec![3.0, 4.0];
        assert_eq!(normalize(&mut v), Ok(()));
        assert!((v[0] - 0.6).abs() < 1e-6 && (v[1] - 0.8).abs() < 1e-6, "{v:?}");
    }

    #[test]
    fn normalize_refuses_zero_and_non_finite_vectors() {
        assert!(normalize(&mut [0.0, 0.0]).is_err_and(|e| e.contains("zeros")));
        assert!(normalize(&mut [1.0, f32::NAN]).is_err_and(|e| e.contains("non-finite") && e.contains("position 1")));
        assert!(normalize(&mut [f32::INFINITY]).is_err_and(|e| e.contains("non-finite")));
    }

    #[test]
    fn check_vectors_names_the_count_and_both_dimensions() {
        let count = check_vectors(&mut [vec![1.0]], 2, 1).expect_err("too few");
        assert!(count.contains("1 vectors for 2 texts"), "{count}");
        let dim = check_vectors(&mut [vec![1.0, 0.0], vec![1.0]], 2, 2).expect_err("wrong dimension");
        assert!(dim.contains("vector 1 has 1 dimensions") && dim.contains("had 2"), "{dim}");
        let mut ok = [vec![0.0, 2.0]];
        assert_eq!(check_vectors(&mut ok, 1, 2), Ok(()));
        assert_eq!(ok[0], vec![0.0, 1.0]);
    }
}
