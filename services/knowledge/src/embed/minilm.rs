//! all-MiniLM-L6-v2 run in this process on the CPU with candle: the sentence-transformers
//! recipe of BERT, mean pooling over the real tokens, then L2 normalisation.
//!
//! The weights are read into memory rather than memory-mapped: candle's mmap loader is an
//! `unsafe fn`, which this workspace forbids, and 90 MB read once at start costs little.

use std::path::Path;
use std::sync::Arc;

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::bert::{BertModel, Config};
use tokenizers::{PaddingParams, PaddingStrategy, Tokenizer, TruncationParams};

use super::{EmbedError, Embedder, check_vectors};

/// What [`MiniLm::model_id`](Embedder::model_id) returns.
pub const MINILM_MODEL_ID: &str = "minilm:all-MiniLM-L6-v2";

/// The files of the model directory, in the order a missing one is reported.
const FILES: [&str; 3] = ["model.safetensors", "tokenizer.json", "config.json"];

/// all-MiniLM-L6-v2 was fine-tuned on sequences of at most 128 tokens (its tokenizer.json
/// truncates there too); longer inputs embed worse, not better, so they are cut to this.
const MAX_TOKENS: usize = 128;

/// Texts per forward pass: large enough to keep the matrix products efficient, small enough
/// that one long text pads few others.
const BATCH: usize = 32;

/// The first tensor of a BERT checkpoint; the file may name it with or without `bert.`.
const WORD_EMBEDDINGS: &str = "embeddings.word_embeddings.weight";

/// all-MiniLM-L6-v2, loaded from a directory holding `model.safetensors`, `tokenizer.json`
/// and `config.json` (what `deploy/scripts/setup.sh` fetches). Cheap to share: clones of the
/// [`Arc`] it is used through share the weights.
pub struct MiniLm {
    inner: Arc<Inner>,
    dimension: usize,
}

struct Inner {
    model: BertModel,
    tokenizer: Tokenizer,
    device: Device,
}

impl std::fmt::Debug for MiniLm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MiniLm").field("model_id", &MINILM_MODEL_ID).field("dimension", &self.dimension).finish()
    }
}

impl MiniLm {
    /// Reads the model from `dir`. Blocking: it reads and parses 90 MB of weights.
    pub fn load(dir: &Path) -> Result<Self, EmbedError> {
        if let Some(file) = FILES.into_iter().find(|file| !dir.join(file).is_file()) {
            return Err(EmbedError::ModelMissing { dir: dir.to_path_buf(), file });
        }
        let fail = |reason: String| EmbedError::Load { dir: dir.to_path_buf(), reason };

        let config = std::fs::read_to_string(dir.join("config.json"))
            .map_err(|e| fail(format!("cannot read config.json: {e}")))?;
        let config: Config =
            serde_json::from_str(&config).map_err(|e| fail(format!("config.json is not a BERT config: {e}")))?;

        let mut tokenizer =
            Tokenizer::from_file(dir.join("tokenizer.json")).map_err(|e| fail(format!("tokenizer.json: {e}")))?;
        // The shipped tokenizer pads every input to 128 tokens; padding a batch only to its
        // longest text does the same work on short texts several times faster. The pad token
        // and id stay the file's.
        let padding = tokenizer.get_padding().cloned().unwrap_or_default();
        tokenizer.with_padding(Some(PaddingParams { strategy: PaddingStrategy::BatchLongest, ..padding }));
        tokenizer
            .with_truncation(Some(TruncationParams { max_length: MAX_TOKENS, ..TruncationParams::default() }))
            .map_err(|e| fail(format!("tokenizer.json: cannot truncate to {MAX_TOKENS} tokens: {e}")))?;

        let device = Device::Cpu;
        let weights = std::fs::read(dir.join("model.safetensors"))
            .map_err(|e| fail(format!("cannot read model.safetensors: {e}")))?;
        let vb = VarBuilder::from_buffered_safetensors(weights, DType::F32, &device)
            .map_err(|e| fail(format!("model.safetensors: {e}")))?;
        // sentence-transformers saves the bare BertModel; checkpoints of a task model put it
        // under `bert.`.
        let vb = if vb.contains_tensor(WORD_EMBEDDINGS) {
            vb
        } else if vb.contains_tensor(&format!("bert.{WORD_EMBEDDINGS}")) {
            vb.pp("bert")
        } else {
            return Err(fail(format!("model.safetensors has no {WORD_EMBEDDINGS}: it is not a BERT model")));
        };
        let model = BertModel::load(vb, &config).map_err(|e| fail(format!("model.safetensors: {e}")))?;
        Ok(Self { inner: Arc::new(Inner { model, tokenizer, device }), dimension: config.hidden_size })
    }

    /// The tokenizer this model reads with (batch padding, truncation at 128 tokens).
    pub(super) fn tokenizer(&self) -> &Tokenizer {
        &self.inner.tokenizer
    }

    /// The vector of every token of the vocabulary embedded alone, as `[CLS] token [SEP]`
    /// mean-pooled like any text (not normalised), in id order: what a static model is
    /// distilled from. Blocking: about 90k token positions through the model.
    pub(super) fn token_vectors(&self) -> Result<Vec<Vec<f32>>, EmbedError> {
        let inner = &self.inner;
        let special = |token: &str| {
            inner.tokenizer.token_to_id(token).ok_or_else(|| EmbedError::Inference {
                reason: format!("tokenizer.json has no {token} token: it is not a BERT tokenizer"),
            })
        };
        let (cls, sep) = (special("[CLS]")?, special("[SEP]")?);
        let vocab = u32::try_from(inner.tokenizer.get_vocab_size(true))
            .map_err(|_| EmbedError::Inference { reason: "the vocabulary has more than 2^32 tokens".into() })?;
        let mut vectors = Vec::with_capacity(vocab as usize);
        let ids: Vec<u32> = (0..vocab).collect();
        for batch in ids.chunks(1024) {
            let run = || -> candle_core::Result<Vec<Vec<f32>>> {
                let count = batch.len();
                let ids: Vec<u32> = batch.iter().flat_map(|&id| [cls, id, sep]).collect();
                let ids = Tensor::from_vec(ids, (count, 3), &inner.device)?;
                let type_ids = ids.zeros_like()?;
                let mask = ids.ones_like()?;
                inner.model.forward(&ids, &type_ids, Some(&mask))?.mean(1)?.to_vec2::<f32>()
            };
            vectors.extend(run().map_err(|e| EmbedError::Inference { reason: e.to_string() })?);
        }
        Ok(vectors)
    }
}

#[async_trait::async_trait]
impl Embedder for MiniLm {
    fn model_id(&self) -> &str {
        MINILM_MODEL_ID
    }

    fn dimension(&self) -> usize {
        self.dimension
    }

    async fn embed(&self, texts: &[String]) -> Result<Vec<Vec<f32>>, EmbedError> {
        if texts.is_empty() {
            return Ok(Vec::new());
        }
        let inner = Arc::clone(&self.inner);
        let texts = texts.to_vec();
        let dimension = self.dimension;
        // Inference is seconds of CPU work: keep it off the async workers.
        tokio::task::spawn_blocking(move || inner.embed(&texts, dimension))
            .await
            .map_err(|e| EmbedError::Inference { reason: format!("the inference task failed: {e}") })?
    }
}

impl Inner {
    /// Embeds in batches of texts of similar length, so little of each batch is padding, and
    /// returns the vectors in the order of `texts`.
    fn embed(&self, texts: &[String], dimension: usize) -> Result<Vec<Vec<f32>>, EmbedError> {
        let mut order: Vec<usize> = (0..texts.len()).collect();
        order.sort_by_key(|&i| texts[i].len());
        let mut vectors = vec![Vec::new(); texts.len()];
        for batch in order.chunks(BATCH) {
            let inputs: Vec<&str> = batch.iter().map(|&i| texts[i].as_str()).collect();
            let mut pooled = self.forward(inputs).map_err(|reason| EmbedError::Inference { reason })?;
            check_vectors(&mut pooled, batch.len(), dimension).map_err(|reason| EmbedError::Inference { reason })?;
            for (&i, vector) in batch.iter().zip(pooled) {
                vectors[i] = vector;
            }
        }
        Ok(vectors)
    }

    /// One padded batch through BERT, mean-pooled over each text's real tokens (not yet
    /// normalised). The padding must be masked out of the mean: left in, it pulls every vector
    /// towards the same "padding" direction and unrelated texts score a cosine of 0.7 and more.
    fn forward(&self, texts: Vec<&str>) -> Result<Vec<Vec<f32>>, String> {
        let count = texts.len();
        let encodings = self.tokenizer.encode_batch(texts, true).map_err(|e| format!("tokenizer: {e}"))?;
        let len = encodings.first().map_or(0, |e| e.len());
        let flat = |field: fn(&tokenizers::Encoding) -> &[u32]| -> Vec<u32> {
            encodings.iter().flat_map(|e| field(e).iter().copied()).collect()
        };
        let tensor = |values: Vec<u32>| Tensor::from_vec(values, (count, len), &self.device);
        let run = || -> candle_core::Result<Vec<Vec<f32>>> {
            let ids = tensor(flat(tokenizers::Encoding::get_ids))?;
            let type_ids = tensor(flat(tokenizers::Encoding::get_type_ids))?;
            let mask = tensor(flat(tokenizers::Encoding::get_attention_mask))?;
            let hidden = self.model.forward(&ids, &type_ids, Some(&mask))?; // (count, len, hidden)
            let mask = mask.to_dtype(DType::F32)?.unsqueeze(2)?; // (count, len, 1)
            let summed = hidden.broadcast_mul(&mask)?.sum(1)?; // (count, hidden)
            let tokens = mask.sum(1)?; // (count, 1): at least [CLS] and [SEP]
            summed.broadcast_div(&tokens)?.to_vec2::<f32>()
        };
        run().map_err(|e| e.to_string())
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::path::PathBuf;
    use std::sync::OnceLock;

    use super::*;

    /// The model directory for tests: `TURBO_MINILM_DIR`, else `all-MiniLM-L6-v2` in
    /// `TURBO_MODELS_DIR` or `~/.cache/turbo-coder/models`, where `deploy/scripts/setup.sh` puts it.
    pub(crate) fn test_model_dir() -> PathBuf {
        if let Some(dir) = std::env::var_os("TURBO_MINILM_DIR") {
            return PathBuf::from(dir);
        }
        let models = std::env::var_os("TURBO_MODELS_DIR").map(PathBuf::from).unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cache/turbo-coder/models")
        });
        models.join("all-MiniLM-L6-v2")
    }

    /// The real model, loaded once for all tests; a missing model fails the test with the fix.
    fn model() -> &'static MiniLm {
        static MODEL: OnceLock<MiniLm> = OnceLock::new();
        MODEL.get_or_init(|| {
            let dir = test_model_dir();
            MiniLm::load(&dir).unwrap_or_else(|e| {
                panic!(
                    "{e}\n(the MiniLM tests need the real model: run deploy/scripts/setup.sh, or set TURBO_MINILM_DIR)"
                )
            })
        })
    }

    async fn embed(texts: &[&str]) -> Vec<Vec<f32>> {
        let texts: Vec<String> = texts.iter().map(|t| (*t).to_owned()).collect();
        model().embed(&texts).await.unwrap_or_else(|e| panic!("embedding failed: {e}"))
    }

    fn cosine(a: &[f32], b: &[f32]) -> f32 {
        a.iter().zip(b).map(|(x, y)| x * y).sum()
    }

    #[tokio::test]
    async fn vectors_have_384_unit_length_dimensions() {
        assert_eq!(model().dimension(), 384);
        assert_eq!(model().model_id(), "minilm:all-MiniLM-L6-v2");
        let vectors = embed(&["fn main() { println!(\"hi\"); }", "", "a"]).await;
        assert_eq!(vectors.len(), 3);
        for v in &vectors {
            assert_eq!(v.len(), 384);
            assert!((cosine(v, v) - 1.0).abs() < 1e-4, "norm² = {}", cosine(v, v));
        }
        assert!(model().embed(&[]).await.is_ok_and(|v| v.is_empty()));
    }

    #[tokio::test]
    async fn paraphrases_score_clearly_higher_than_unrelated_texts() {
        let v = embed(&[
            "how do I read a file into a string",
            "load the contents of a file as text",
            "parse a JWT bearer token",
            "the cat sat on the mat",
        ])
        .await;
        let paraphrase = cosine(&v[0], &v[1]);
        let unrelated = cosine(&v[2], &v[3]);
        // Unmasked padding puts unrelated texts at 0.7 and more.
        assert!(unrelated < 0.5, "unrelated texts score {unrelated}");
        assert!(paraphrase > unrelated + 0.2, "paraphrase {paraphrase} vs unrelated {unrelated}");
    }

    #[tokio::test]
    async fn a_text_embeds_the_same_alone_and_padded_in_a_batch() {
        let short = "parse a JWT bearer token";
        let long = "fn read_config(path: &Path) -> Result<Config> { let text = std::fs::read_to_string(path)?; \
                    let config: Config = toml::from_str(&text)?; config.validate()?; Ok(config) } \
                    // reads, parses and validates the configuration file named on the command line";
        let alone = embed(&[short]).await;
        let batched = embed(&[long, short, long]).await;
        let diff = alone[0].iter().zip(&batched[1]).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
        assert!(diff < 1e-4, "the padded vector differs by up to {diff}");
        assert_eq!(batched[0], batched[2], "order is restored after sorting by length");
    }

    #[test]
    fn a_missing_directory_or_file_is_model_missing_naming_the_file() {
        let dir = tempfile::tempdir().expect("temp dir");
        let gone = dir.path().join("nothing-here");
        let err = MiniLm::load(&gone).expect_err("no directory");
        assert!(matches!(&err, EmbedError::ModelMissing { file: "model.safetensors", .. }), "unexpected error: {err}");
        assert!(err.to_string().contains("deploy/scripts/setup.sh"), "{err}");

        // The files are checked for before any is read, so empty ones stand in for the rest.
        for file in ["model.safetensors", "config.json"] {
            std::fs::write(dir.path().join(file), "").expect("write a stand-in file");
        }
        let err = MiniLm::load(dir.path()).expect_err("no tokenizer");
        assert!(matches!(&err, EmbedError::ModelMissing { file: "tokenizer.json", .. }), "unexpected error: {err}");
        assert!(err.to_string().contains("(tokenizer.json missing)"), "{err}");
    }

    #[test]
    fn unreadable_model_files_are_a_load_error_naming_the_file() {
        let dir = tempfile::tempdir().expect("temp dir");
        for file in FILES {
            std::fs::write(dir.path().join(file), "not a model").expect("write a broken file");
        }
        let err = MiniLm::load(dir.path()).expect_err("broken files");
        assert!(matches!(&err, EmbedError::Load { .. }), "unexpected error: {err}");
        assert!(err.to_string().contains("config.json is not a BERT config"), "{err}");
    }
}
