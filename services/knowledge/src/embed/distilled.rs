//! A static embedding model distilled from all-MiniLM-L6-v2 (the recipe of Model2Vec): one
//! vector per token of the vocabulary, read off the model once, and a text's vector is the
//! weighted mean of its tokens' vectors. No attention, no matrix products per text: it embeds
//! thousands of chunks a second on a CPU where the model itself embeds about twenty, and ranks
//! worse (docs/benchmarks.md measures both). For a first index of a large repository.
//!
//! The distillation, from the files of the MiniLM directory:
//! 1. every token id through the model alone (`[CLS] token [SEP]`, mean-pooled);
//! 2. the mean over the vocabulary subtracted from each, so that what every token shares does
//!    not dominate every text's vector (the centring of Model2Vec's PCA; the rest of a PCA
//!    that keeps every dimension is a rotation, which changes no cosine);
//! 3. each scaled by a smooth inverse frequency weight, `a / (a + p)`, with the token's
//!    probability `p` estimated from its rank by Zipf's law (a BERT vocabulary lists words
//!    roughly by frequency), so that frequent tokens count less.
//!
//! The table (30,522 x 384 floats, 47 MB) takes about a minute to distil on two cores, and is
//! kept beside the model as `static-v1.safetensors` for the next start; a model directory that
//! cannot be written to costs that minute at every start, said in the log. The table is checked
//! against the tokenizer's vocabulary, not against the weights it came from: weights replaced
//! in place need the table deleted too.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use candle_core::{Device, Tensor};
use tokenizers::{Tokenizer, TruncationParams};

use super::{EmbedError, Embedder, MiniLm, check_vectors};

/// What [`Distilled::model_id`](Embedder::model_id) returns.
pub const DISTILLED_MODEL_ID: &str = "minilm-static:all-MiniLM-L6-v2";

/// The distilled table's file in the model directory; the version names the recipe, so a
/// changed recipe distils again rather than reading an old table.
const TABLE_FILE: &str = "static-v1.safetensors";
const TABLE_TENSOR: &str = "token_vectors";

/// The smooth inverse frequency constant `a` (Model2Vec's default).
const SIF: f64 = 1e-4;

/// A static model embeds every token of a text at the same small cost, so texts are not cut at
/// MiniLM's 128 tokens; this bounds the work of a pathological one.
const MAX_TOKENS: usize = 8192;

/// A static embedding model distilled from all-MiniLM-L6-v2. Clones share the table.
#[derive(Clone)]
pub struct Distilled {
    inner: Arc<Inner>,
}

struct Inner {
    tokenizer: Tokenizer,
    /// Row `id` of `dimension` values is token `id`'s weighted vector.
    table: Vec<f32>,
    dimension: usize,
}

impl std::fmt::Debug for Distilled {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Distilled")
            .field("model_id", &DISTILLED_MODEL_ID)
            .field("dimension", &self.inner.dimension)
            .finish()
    }
}

impl Distilled {
    /// Reads the distilled table from the MiniLM directory `dir`, distilling it from the model
    /// first when it is not there (or is not a table of this tokenizer's vocabulary). Blocking.
    pub fn load(dir: &Path) -> Result<Self, EmbedError> {
        let path = dir.join(TABLE_FILE);
        if path.is_file() {
            let tokenizer = load_tokenizer(dir)?;
            match read_table(&path, tokenizer.get_vocab_size(true)) {
                Ok((table, dimension)) => return Ok(Self::new(tokenizer, table, dimension)),
                Err(reason) => tracing::warn!(path = %path.display(), %reason, "distilling the static model again"),
            }
        }
        let model = MiniLm::load(dir)?;
        let started = std::time::Instant::now();
        let distilled = Self::distill(&model)?;
        tracing::info!(seconds = started.elapsed().as_secs_f64(), "distilled the static model from MiniLM");
        if let Err(reason) = distilled.save(&path) {
            tracing::warn!(
                path = %path.display(), %reason,
                "cannot keep the distilled static model: it is distilled again at the next start"
            );
        }
        Ok(distilled)
    }

    /// Distils the table from `model` (steps 1-3 of the module's documentation). Blocking.
    pub fn distill(model: &MiniLm) -> Result<Self, EmbedError> {
        let vectors = model.token_vectors()?;
        let dimension = model.dimension();
        let mut mean = vec![0f64; dimension];
        for v in &vectors {
            mean.iter_mut().zip(v).for_each(|(m, x)| *m += f64::from(*x));
        }
        mean.iter_mut().for_each(|m| *m /= vectors.len() as f64);
        // Zipf: p(rank) = 1 / (rank · H), ranks counted from 2 as Model2Vec does.
        let harmonic: f64 = (0..vectors.len()).map(|id| 1.0 / (id as f64 + 2.0)).sum();
        let mut table = Vec::with_capacity(vectors.len() * dimension);
        for (id, v) in vectors.iter().enumerate() {
            let p = 1.0 / ((id as f64 + 2.0) * harmonic);
            let weight = SIF / (SIF + p);
            table.extend(v.iter().zip(&mean).map(|(x, m)| ((f64::from(*x) - m) * weight) as f32));
        }
        let mut tokenizer = model.tokenizer().clone();
        unbounded(&mut tokenizer).map_err(|reason| EmbedError::Inference { reason })?;
        Ok(Self::new(tokenizer, table, dimension))
    }

    fn new(tokenizer: Tokenizer, table: Vec<f32>, dimension: usize) -> Self {
        Self { inner: Arc::new(Inner { tokenizer, table, dimension }) }
    }

    /// Writes the table to `path` through a temporary file renamed over it, so a crash never
    /// leaves half a table to read.
    fn save(&self, path: &Path) -> Result<(), String> {
        let rows = self.inner.table.len() / self.inner.dimension;
        let tensor = Tensor::from_slice(&self.inner.table, (rows, self.inner.dimension), &Device::Cpu)
            .map_err(|e| e.to_string())?;
        let temp = PathBuf::from(format!("{}.{}.tmp", path.display(), std::process::id()));
        let written = tensor.save_safetensors(TABLE_TENSOR, &temp).map_err(|e| e.to_string());
        let renamed = written.and_then(|()| std::fs::rename(&temp, path).map_err(|e| e.to_string()));
        if renamed.is_err() {
            let _ = std::fs::remove_file(&temp);
        }
        renamed
    }
}

/// The tokenizer of the MiniLM directory, unpadded and cut at [`MAX_TOKENS`].
fn load_tokenizer(dir: &Path) -> Result<Tokenizer, EmbedError> {
    let file = dir.join("tokenizer.json");
    if !file.is_file() {
        return Err(EmbedError::ModelMissing { dir: dir.to_path_buf(), file: "tokenizer.json" });
    }
    let fail = |reason: String| EmbedError::Load { dir: dir.to_path_buf(), reason };
    let mut tokenizer = Tokenizer::from_file(file).map_err(|e| fail(format!("tokenizer.json: {e}")))?;
    unbounded(&mut tokenizer).map_err(|reason| fail(format!("tokenizer.json: {reason}")))?;
    Ok(tokenizer)
}

/// No padding (each text is summed alone) and truncation at [`MAX_TOKENS`] only.
fn unbounded(tokenizer: &mut Tokenizer) -> Result<(), String> {
    tokenizer.with_padding(None);
    tokenizer
        .with_truncation(Some(TruncationParams { max_length: MAX_TOKENS, ..TruncationParams::default() }))
        .map(|_| ())
        .map_err(|e| format!("cannot truncate to {MAX_TOKENS} tokens: {e}"))
}

/// The table in `path` and its dimension, if it is one of `vocab` rows of finite values.
fn read_table(path: &Path, vocab: usize) -> Result<(Vec<f32>, usize), String> {
    let tensors = candle_core::safetensors::load(path, &Device::Cpu).map_err(|e| e.to_string())?;
    let tensor = tensors.get(TABLE_TENSOR).ok_or_else(|| format!("no tensor {TABLE_TENSOR}"))?;
    let (rows, dimension) = tensor.dims2().map_err(|e| e.to_string())?;
    if rows != vocab || dimension == 0 {
        return Err(format!("a table of {rows} x {dimension} for a vocabulary of {vocab} tokens"));
    }
    let table = tensor.flatten_all().and_then(|t| t.to_vec1::<f32>()).map_err(|e| e.to_string())?;
    if table.iter().any(|x| !x.is_finite()) {
        return Err("the table has non-finite values".into());
    }
    Ok((table, dimension))
}

#[async_trait::async_trait]
impl Embedder for Distilled {
    fn model_id(&self) -> &str {
        DISTILLED_MODEL_ID
    }

    fn dimension(&self) -> usize {
        self.inner.dimension
    }

    async fn embed(&self, texts: &[String]) -> Result<Vec<Vec<f32>>, EmbedError> {
        if texts.is_empty() {
            return Ok(Vec::new());
        }
        let inner = Arc::clone(&self.inner);
        let texts = texts.to_vec();
        // Tokenizing a batch of long chunks is milliseconds of CPU: off the async workers.
        tokio::task::spawn_blocking(move || inner.embed(texts))
            .await
            .map_err(|e| EmbedError::Inference { reason: format!("the embedding task failed: {e}") })?
    }
}

impl Inner {
    /// The sum of each text's token rows, normalised. `[CLS]` and `[SEP]` are always among
    /// the tokens, so an empty text has a direction too.
    fn embed(&self, texts: Vec<String>) -> Result<Vec<Vec<f32>>, EmbedError> {
        let count = texts.len();
        let encodings = self
            .tokenizer
            .encode_batch(texts, true)
            .map_err(|e| EmbedError::Inference { reason: format!("tokenizer: {e}") })?;
        let dim = self.dimension;
        let mut vectors: Vec<Vec<f32>> = encodings
            .iter()
            .map(|encoding| {
                let mut v = vec![0f32; dim];
                for &id in encoding.get_ids() {
                    let start = id as usize * dim;
                    if let Some(row) = self.table.get(start..start + dim) {
                        v.iter_mut().zip(row).for_each(|(x, r)| *x += r);
                    }
                }
                v
            })
            .collect();
        check_vectors(&mut vectors, count, dim).map_err(|reason| EmbedError::Inference { reason })?;
        Ok(vectors)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::OnceLock;

    use super::*;
    use crate::embed::minilm::tests::test_model_dir;

    /// The model as the service loads it, from the test model directory: the first test
    /// process on a machine distils it and keeps the table there, the next ones read it.
    fn model() -> &'static Distilled {
        static MODEL: OnceLock<Distilled> = OnceLock::new();
        MODEL.get_or_init(|| {
            Distilled::load(&test_model_dir()).unwrap_or_else(|e| {
                panic!("{e}\n(the distilled model's tests need the real MiniLM: run deploy/scripts/setup.sh)")
            })
        })
    }

    async fn embed(model: &Distilled, texts: &[&str]) -> Vec<Vec<f32>> {
        let texts: Vec<String> = texts.iter().map(|t| (*t).to_owned()).collect();
        model.embed(&texts).await.unwrap_or_else(|e| panic!("embedding failed: {e}"))
    }

    fn cosine(a: &[f32], b: &[f32]) -> f32 {
        a.iter().zip(b).map(|(x, y)| x * y).sum()
    }

    fn link(from: &Path, to: &Path, file: &str) {
        std::os::unix::fs::symlink(from.join(file), to.join(file)).expect("link a model file");
    }

    #[tokio::test]
    async fn vectors_are_unit_length_and_rank_paraphrases_above_unrelated_texts() {
        let model = model();
        assert_eq!((model.model_id(), model.dimension()), ("minilm-static:all-MiniLM-L6-v2", 384));
        let v = embed(
            model,
            &[
                "how do I read a file into a string",
                "load the contents of a file as text",
                "parse a JWT bearer token",
                "the cat sat on the mat",
                "",
            ],
        )
        .await;
        for v in &v {
            assert!((cosine(v, v) - 1.0).abs() < 1e-4, "norm² = {}", cosine(v, v));
        }
        let (paraphrase, unrelated) = (cosine(&v[0], &v[1]), cosine(&v[2], &v[3]));
        assert!(unrelated < 0.3, "unrelated texts score {unrelated}");
        assert!(paraphrase > unrelated + 0.2, "paraphrase {paraphrase} vs unrelated {unrelated}");
        assert!(model.embed(&[]).await.is_ok_and(|v| v.is_empty()));

        // In a batch or alone, a text gets the same vector.
        let long = "fn read_config(path: &Path) -> Result<Config> { toml::from_str(&std::fs::read_to_string(path)?) }";
        let batched = embed(model, &[long, "parse a JWT bearer token", long]).await;
        assert_eq!(batched[1], v[2]);
        assert_eq!(batched[0], batched[2]);
    }

    #[tokio::test]
    async fn the_table_is_distilled_kept_and_read_back_without_the_weights() {
        let models = test_model_dir();
        let dir = tempfile::tempdir().expect("temp dir");
        for file in ["model.safetensors", "tokenizer.json", "config.json"] {
            link(&models, dir.path(), file);
        }
        let distilled = Distilled::load(dir.path()).expect("distil");
        let table = dir.path().join(TABLE_FILE);
        assert!(table.is_file(), "the distilled table is kept beside the model");
        let names: Vec<String> = std::fs::read_dir(dir.path())
            .expect("list")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into())
            .collect();
        assert!(names.iter().all(|n| !n.ends_with(".tmp")), "temporary files left: {names:?}");

        // A directory with the tokenizer and the table but no weights: loading must read the
        // table, since distilling again would need model.safetensors.
        let bare = tempfile::tempdir().expect("temp dir");
        link(&models, bare.path(), "tokenizer.json");
        std::fs::copy(&table, bare.path().join(TABLE_FILE)).expect("copy the table");
        let read = Distilled::load(bare.path()).expect("the kept table loads");
        let texts = ["walk a directory tree", "fn walk(root: &Path) -> WalkDir"];
        assert_eq!(embed(&read, &texts).await, embed(&distilled, &texts).await);
    }

    #[test]
    fn a_broken_table_is_distilled_again_which_needs_the_model() {
        let dir = tempfile::tempdir().expect("temp dir");
        link(&test_model_dir(), dir.path(), "tokenizer.json");
        let table = dir.path().join(TABLE_FILE);
        // A table of the wrong shape, then one that is not a table at all.
        Tensor::zeros((3, 4), candle_core::DType::F32, &Device::Cpu)
            .and_then(|t| t.save_safetensors(TABLE_TENSOR, &table))
            .expect("write a small table");
        let reason = read_table(&table, 30522).expect_err("wrong shape");
        assert!(reason.contains("a table of 3 x 4 for a vocabulary of 30522 tokens"), "{reason}");
        let err = Distilled::load(dir.path()).expect_err("no weights to distil from");
        assert!(matches!(&err, EmbedError::ModelMissing { file: "model.safetensors", .. }), "{err}");

        std::fs::write(&table, "not a table").expect("write garbage");
        assert!(read_table(&table, 30522).is_err());
        let err = Distilled::load(dir.path()).expect_err("no weights to distil from");
        assert!(matches!(&err, EmbedError::ModelMissing { file: "model.safetensors", .. }), "{err}");
    }
}
