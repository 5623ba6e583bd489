//! `turbo-knowledge-bench`: the knowledge service's figures for docs/benchmarks.md, run by
//! `make bench`. Everything is measured in this run on this machine:
//!
//! 1. Corpus: Rust crates from the local cargo registry, their function doc comments removed
//!    (the evaluation's queries, see `turbo_knowledge::eval`).
//! 2. Index throughput with all-MiniLM-L6-v2 in process: chunks/s of the whole incremental
//!    index (walk, chunk, embed, commit), beside chunking alone and embedding alone.
//! 3. Retrieval quality: MRR@10, recall@10 and top-1 of vector, BM25 and hybrid search.
//! 4. Scale: tables of 10k and 100k chunks made from the corpus's real vectors (each a copy
//!    with Gaussian noise, renormalised, keeping its source's text): exact search, then the
//!    IVF-HNSW-SQ index, its latency and its recall@10 against exact search on the same vectors,
//!    and hybrid search latency.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use turbo_core::knowledge::{IndexRequest, Knowledge, SearchFilter, SearchMode, SearchRequest};
use turbo_knowledge::dataset::Row;
use turbo_knowledge::embed::{EmbedError, Embedder, MiniLm};
use turbo_knowledge::eval::{self, Pair};
use turbo_knowledge::{Chunked, Chunker, KnowledgeBase, Limits};

#[derive(Parser)]
#[command(about = "Knowledge service benchmarks: index throughput, retrieval quality, search latency at scale")]
struct Args {
    /// all-MiniLM-L6-v2 directory (default: $TURBO_MINILM_DIR or ~/.cache/turbo-coder/models/all-MiniLM-L6-v2).
    #[arg(long)]
    model_dir: Option<PathBuf>,
    /// Registry crates making the corpus.
    #[arg(long, value_delimiter = ',', default_value = "semver,globset,humantime,ignore,url")]
    crates: Vec<String>,
    /// Table sizes of the scale test.
    #[arg(long, value_delimiter = ',', default_value = "10000,100000")]
    sizes: Vec<usize>,
    /// Queries timed per measurement.
    #[arg(long, default_value_t = 200)]
    queries: usize,
}

#[tokio::main]
async fn main() {
    if let Err(e) = run(Args::parse()).await {
        eprintln!("turbo-knowledge-bench: {e}");
        std::process::exit(1);
    }
}

type AnyResult<T> = Result<T, Box<dyn std::error::Error>>;

async fn run(args: Args) -> AnyResult<()> {
    let model_dir = args.model_dir.clone().unwrap_or_else(default_model_dir);
    let dir = tempfile::tempdir()?;
    let ws = dir.path().join("ws");

    // 1. Corpus.
    let mut pairs: Vec<Pair> = Vec::new();
    for name in &args.crates {
        let src =
            eval::registry_crate(name).ok_or_else(|| format!("crate {name} is not in the local cargo registry"))?;
        let crate_dir = src.file_name().map(|n| n.to_string_lossy().to_string()).unwrap_or_default();
        let found = eval::mine_rust_crate(&src, &ws.join(&crate_dir))?;
        println!("corpus: {crate_dir}: {} doc-comment queries", found.len());
        pairs.extend(found.into_iter().map(|p| Pair { path: format!("{crate_dir}/{}", p.path), ..p }));
    }

    // 2. Index throughput.
    let load = Instant::now();
    let minilm = Arc::new(MiniLm::load(&model_dir)?);
    println!("\nmodel: {} loaded in {:.2} s", minilm.model_id(), load.elapsed().as_secs_f64());
    let (texts, chunk_secs) = chunk_all(&ws)?;
    println!(
        "chunking alone: {} chunks in {:.2} s = {:.0} chunks/s",
        texts.len(),
        chunk_secs,
        texts.len() as f64 / chunk_secs
    );
    let sample: Vec<String> = texts.iter().take(512).cloned().collect();
    let t = Instant::now();
    minilm.embed(&sample).await?;
    let embed_rate = sample.len() as f64 / t.elapsed().as_secs_f64();
    println!("embedding alone (MiniLM, {} chunk texts): {embed_rate:.1} chunks/s", sample.len());

    let kb = KnowledgeBase::with_embedder(
        dir.path().join("kb").to_str().ok_or("temp dir is not UTF-8")?,
        minilm.clone(),
        usize::MAX,
        Limits::default(),
    )
    .await?;
    let req = IndexRequest { project_id: "eval".into(), workspace: ws.display().to_string() };
    let report = kb.index_workspace(req.clone()).await?;
    let secs = report.duration_ms as f64 / 1000.0;
    println!(
        "index (walk + chunk + embed + commit): {} files, {} chunks in {secs:.1} s = {:.1} chunks/s",
        report.files_changed,
        report.chunks_added,
        report.chunks_added as f64 / secs
    );
    let again = kb.index_workspace(req).await?;
    println!(
        "re-index of the unchanged tree: {} ms, {} chunks embedded, version {} -> {}",
        again.duration_ms, again.chunks_embedded, report.version, again.version
    );

    // 3. Retrieval quality.
    let filter = SearchFilter { project_id: Some("eval".into()), ..SearchFilter::default() };
    println!("\nretrieval quality over {} queries (answer = the chunk holding the documented function):", pairs.len());
    println!("| retriever | MRR@10 | recall@10 | top-1 |\n|---|---|---|---|");
    for mode in [SearchMode::Vector, SearchMode::Text, SearchMode::Hybrid] {
        let mut ranks = Vec::with_capacity(pairs.len());
        for p in &pairs {
            let req = SearchRequest { query: p.query.clone(), limit: 10, filter: filter.clone(), mode };
            let hits = kb.search(req).await?;
            let spans: Vec<(String, u32, u32)> = hits.into_iter().map(|h| (h.path, h.start_line, h.end_line)).collect();
            ranks.push(eval::rank_of(p, &spans, 10));
        }
        let s = eval::score(&ranks);
        println!("| {mode:?} | {:.3} | {:.3} | {:.3} |", s.mrr_at_10, s.recall_at_10, s.top1);
    }

    // 4. Scale.
    let base_rows = kb.dataset().sample(usize::MAX).await?;
    let queries: Vec<String> = pairs.iter().take(args.queries).map(|p| p.query.clone()).collect();
    let query_vectors = minilm.embed(&queries).await?;
    let fixed = Arc::new(Fixed {
        id: minilm.model_id().to_string(),
        dim: minilm.dimension(),
        vectors: queries.iter().cloned().zip(query_vectors.iter().cloned()).collect(),
    });
    for &n in &args.sizes {
        scale(dir.path(), n, &base_rows, &queries, &query_vectors, fixed.clone()).await?;
    }
    Ok(())
}

fn default_model_dir() -> PathBuf {
    std::env::var_os("TURBO_MINILM_DIR").map(PathBuf::from).unwrap_or_else(|| {
        PathBuf::from(std::env::var("HOME").unwrap_or_default()).join(".cache/turbo-coder/models/all-MiniLM-L6-v2")
    })
}

/// Chunks every file under `ws` (what the indexer does before embedding) and times it.
fn chunk_all(ws: &std::path::Path) -> AnyResult<(Vec<String>, f64)> {
    let t = Instant::now();
    let scan = turbo_knowledge::scan(ws)?;
    let chunker = Chunker::new(Limits::default());
    let mut texts = Vec::new();
    for f in &scan.files {
        let bytes = std::fs::read(ws.join(&f.path))?;
        if let Chunked::Chunks { chunks, .. } = chunker.chunk(&f.path, &bytes) {
            texts.extend(chunks.iter().map(turbo_knowledge::index::embedding_text));
        }
    }
    Ok((texts, t.elapsed().as_secs_f64()))
}

/// Query vectors computed once, so the scale test times search, not the model.
struct Fixed {
    id: String,
    dim: usize,
    vectors: HashMap<String, Vec<f32>>,
}

#[async_trait::async_trait]
impl Embedder for Fixed {
    fn model_id(&self) -> &str {
        &self.id
    }
    fn dimension(&self) -> usize {
        self.dim
    }
    async fn embed(&self, texts: &[String]) -> Result<Vec<Vec<f32>>, EmbedError> {
        texts
            .iter()
            .map(|t| {
                self.vectors
                    .get(t)
                    .cloned()
                    .ok_or_else(|| EmbedError::Inference { reason: format!("no vector for {t:?}") })
            })
            .collect()
    }
}

async fn scale(
    dir: &std::path::Path,
    n: usize,
    base: &[Row],
    queries: &[String],
    vectors: &[Vec<f32>],
    fixed: Arc<Fixed>,
) -> AnyResult<()> {
    println!(
        "\nscale: {n} chunks (copies of the corpus's {} real vectors with N(0, 0.02) noise per value):",
        base.len()
    );
    let uri = dir.join(format!("scale-{n}"));
    let kb = KnowledgeBase::with_embedder(
        uri.to_str().ok_or("temp dir is not UTF-8")?,
        fixed.clone(),
        usize::MAX,
        Limits::default(),
    )
    .await?;
    let mut rng = Lcg(0x2545F4914F6CDD1D);
    let t = Instant::now();
    let mut batch = Vec::with_capacity(10_000);
    for i in 0..n {
        let src = &base[i % base.len()];
        let mut v: Vec<f32> = src.vector.iter().map(|x| x + 0.02 * rng.gaussian()).collect();
        let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        v.iter_mut().for_each(|x| *x /= norm);
        batch.push(Row {
            id: format!("s{i}"),
            project_id: "scale".into(),
            path: format!("{}#{i}", src.path),
            vector: v,
            ..src.clone()
        });
        if batch.len() == 10_000 || i + 1 == n {
            kb.dataset().upsert(std::mem::take(&mut batch)).await?;
        }
    }
    kb.dataset().maintain_indexes().await?;
    println!("  write + full-text index: {:.1} s", t.elapsed().as_secs_f64());

    let ds = kb.dataset();
    let mut exact_lat = Vec::new();
    let mut exact_ids = Vec::new();
    for v in vectors {
        let t = Instant::now();
        let found = ds.nearest_with(v, 10, None, true).await?;
        exact_lat.push(t.elapsed());
        exact_ids.push(found.into_iter().map(|f| f.row.id).collect::<Vec<_>>());
    }
    println!("  exact vector search: {}", percentiles(&mut exact_lat));
    let mut lat = hybrid(&kb, queries).await?;
    println!("  hybrid search, exact vectors (vector + BM25 + fusion): {}", percentiles(&mut lat));

    let t = Instant::now();
    ds.create_ann_index().await?;
    println!("  IVF-HNSW-SQ index built in {:.1} s", t.elapsed().as_secs_f64());
    let mut ann_lat = Vec::new();
    let mut hits = 0usize;
    let mut total = 0usize;
    for (v, exact) in vectors.iter().zip(&exact_ids) {
        let t = Instant::now();
        let found = ds.nearest(v, 10, None).await?;
        ann_lat.push(t.elapsed());
        hits += found.iter().filter(|f| exact.contains(&f.row.id)).count();
        total += exact.len();
    }
    println!(
        "  ANN vector search: {}; recall@10 vs exact = {:.3}",
        percentiles(&mut ann_lat),
        hits as f64 / total.max(1) as f64
    );
    let mut lat = hybrid(&kb, queries).await?;
    println!("  hybrid search, ANN vectors: {}", percentiles(&mut lat));
    Ok(())
}

/// Times one hybrid search per query.
async fn hybrid(kb: &KnowledgeBase, queries: &[String]) -> AnyResult<Vec<Duration>> {
    let mut lat = Vec::with_capacity(queries.len());
    for q in queries {
        let req =
            SearchRequest { query: q.clone(), limit: 10, filter: SearchFilter::default(), mode: SearchMode::Hybrid };
        let t = Instant::now();
        kb.search(req).await?;
        lat.push(t.elapsed());
    }
    Ok(lat)
}

fn percentiles(lat: &mut [Duration]) -> String {
    lat.sort();
    let at = |q: f64| {
        lat.get(((lat.len() as f64 * q) as usize).min(lat.len().saturating_sub(1))).copied().unwrap_or_default()
    };
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    format!("p50 {:.2} ms, p99 {:.2} ms ({} queries)", ms(at(0.50)), ms(at(0.99)), lat.len())
}

/// A small deterministic generator: the same noise every run.
struct Lcg(u64);

impl Lcg {
    fn next_f32(&mut self) -> f32 {
        self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        ((self.0 >> 40) as f32 + 0.5) / (1u64 << 24) as f32
    }
    /// Box-Muller.
    fn gaussian(&mut self) -> f32 {
        let (u, v) = (self.next_f32(), self.next_f32());
        (-2.0 * u.ln()).sqrt() * (2.0 * std::f32::consts::PI * v).cos()
    }
}
