//! `turbo-knowledge-bench`: the knowledge service's figures for docs/benchmarks.md, run by
//! `make bench`. Everything is measured in this run on this machine:
//!
//! 1. Corpus: Rust crates from the local cargo registry, their function doc comments removed
//!    (the evaluation's queries, see `turbo_knowledge::eval`).
//! 2. Index throughput with all-MiniLM-L6-v2 in process: chunks/s of the whole incremental
//!    index (walk, chunk, embed, commit), beside chunking alone and embedding alone.
//! 3. Retrieval quality: MRR@10, recall@10 and top-1 of vector search, BM25 over the text,
//!    BM25 over the qualified names, the RRF of vector and text, and the hybrid search (the
//!    three fused, then weighed); each crate is a project of its own, as a repository is.
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
use turbo_knowledge::dataset::{AnnTuning, Dataset, Found, FullText, Row};
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
    /// Only the corpus, its index and the retrieval quality (no throughput sample, no scale).
    #[arg(long)]
    only_quality: bool,
    /// Writes each query's vector and full-text candidates (30 of each) as JSON lines, for
    /// studying the fusion.
    #[arg(long)]
    dump: Option<PathBuf>,
    /// Keeps the corpus and its index in this directory, so a second run embeds nothing
    /// (default: a temporary directory).
    #[arg(long)]
    data: Option<PathBuf>,
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
    let temp = tempfile::tempdir()?;
    let dir = args.data.clone().unwrap_or_else(|| temp.path().to_owned());
    let ws = dir.join("ws");

    // 1. Corpus: each crate a project of its own, as a repository is.
    let mut projects: Vec<String> = Vec::new();
    let mut pairs: Vec<(String, Pair)> = Vec::new();
    for name in &args.crates {
        let src =
            eval::registry_crate(name).ok_or_else(|| format!("crate {name} is not in the local cargo registry"))?;
        let crate_dir = src.file_name().map(|n| n.to_string_lossy().to_string()).unwrap_or_default();
        let found = eval::mine_rust_crate(&src, &ws.join(&crate_dir))?;
        println!("corpus: {crate_dir}: {} doc-comment queries", found.len());
        pairs.extend(found.into_iter().map(|p| (crate_dir.clone(), p)));
        projects.push(crate_dir);
    }

    // 2. Index throughput.
    let load = Instant::now();
    let minilm = Arc::new(MiniLm::load(&model_dir)?);
    println!("\nmodel: {} loaded in {:.2} s", minilm.model_id(), load.elapsed().as_secs_f64());
    let (texts, chunk_secs) = chunk_all(&ws)?;
    if !args.only_quality {
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
    }

    let kb = KnowledgeBase::with_embedder(
        dir.join("kb").to_str().ok_or("the data directory is not UTF-8")?,
        minilm.clone(),
        usize::MAX,
        Limits::default(),
    )
    .await?;
    let index_all = || async {
        let (mut files, mut chunks, mut embedded, mut ms) = (0, 0, 0, 0);
        for project in &projects {
            let workspace = ws.join(project).display().to_string();
            let report = kb.index_workspace(IndexRequest { project_id: project.clone(), workspace }).await?;
            files += report.files_changed;
            chunks += report.chunks_added;
            embedded += report.chunks_embedded;
            ms += report.duration_ms;
        }
        Ok::<_, Box<dyn std::error::Error>>((files, chunks, embedded, ms as f64 / 1000.0))
    };
    let (files, chunks, _, secs) = index_all().await?;
    println!(
        "index (walk + chunk + embed + commit): {files} files, {chunks} chunks in {secs:.1} s = {:.1} chunks/s",
        chunks as f64 / secs
    );
    let (_, _, embedded, secs) = index_all().await?;
    println!("re-index of the unchanged trees: {:.0} ms, {embedded} chunks embedded", secs * 1000.0);

    // 3. Retrieval quality, each query searching its crate's project.
    println!("\nretrieval quality over {} queries (answer = the chunk holding the documented function):", pairs.len());
    // A sentence that documents several functions of a crate is answered by any of them: the
    // last two columns count those (the first three only the function it was taken from).
    let same = eval::same_query(&pairs);
    let shared = same.iter().filter(|s| s.len() > 1).count();
    println!("({shared} of the queries document more than one function of their crate with the same sentence)");
    println!(
        "| retriever | MRR@10 | recall@10 | top-1 | MRR@10, any same-doc fn | top-1, any same-doc fn |\n|---|---|---|---|---|---|"
    );
    // Each retriever alone, the fusion of vector and BM25 as it was first built (RRF of the
    // two), and the hybrid search as it is (RRF of three, then the priors).
    let names = ["Vector", "Text (BM25)", "Names (BM25 over qualified names)", "Vector + text, RRF", "Hybrid"];
    let mut ranks: Vec<Vec<Option<usize>>> = vec![Vec::with_capacity(pairs.len()); names.len()];
    let mut ranks_any: Vec<Vec<Option<usize>>> = vec![Vec::with_capacity(pairs.len()); names.len()];
    for ((project, p), answers) in pairs.iter().zip(&same) {
        let filter = SearchFilter { project_id: Some(project.clone()), ..SearchFilter::default() };
        let ds = kb.dataset();
        let sql = turbo_knowledge::search::filter_sql(&filter)?;
        let query_vector =
            minilm.embed(std::slice::from_ref(&p.query)).await?.into_iter().next().ok_or("the model gave no vector")?;
        let vector = ds.nearest(&query_vector, 30, sql.clone()).await?;
        let text = ds.full_text(&p.query, 30, sql.clone()).await?;
        let symbol = ds.full_text_in(FullText::Symbol, &p.query, 30, sql).await?;
        let two = turbo_knowledge::search::rrf(&[vector.clone(), text.clone()]);
        let hybrid =
            kb.search(SearchRequest { query: p.query.clone(), limit: 10, filter, mode: SearchMode::Hybrid }).await?;
        let span = |r: &Row| (r.path.clone(), r.start_line, r.end_line);
        let found = |list: &[Found]| list.iter().map(|f| span(&f.row)).collect::<Vec<_>>();
        let lists = [
            found(&vector),
            found(&text),
            found(&symbol),
            two.iter().map(|(r, _)| span(r)).collect(),
            hybrid.iter().map(|h| (h.path.clone(), h.start_line, h.end_line)).collect(),
        ];
        for (i, list) in lists.iter().enumerate() {
            ranks[i].push(eval::rank_of(p, list, 10));
            ranks_any[i].push(eval::rank_of_any(answers, list, 10));
        }
    }
    for ((name, ranks), ranks_any) in names.iter().zip(&ranks).zip(&ranks_any) {
        let (s, any) = (eval::score(ranks), eval::score(ranks_any));
        println!(
            "| {name} | {:.3} | {:.3} | {:.3} | {:.3} | {:.3} |",
            s.mrr_at_10, s.recall_at_10, s.top1, any.mrr_at_10, any.top1
        );
    }

    if let Some(path) = &args.dump {
        dump(&kb, &pairs, path).await?;
    }
    if args.only_quality {
        return Ok(());
    }

    // 4. Scale.
    let base_rows = kb.dataset().sample(usize::MAX).await?;
    let queries: Vec<String> = pairs.iter().take(args.queries).map(|(_, p)| p.query.clone()).collect();
    let query_vectors = minilm.embed(&queries).await?;
    let fixed = Arc::new(Fixed {
        id: minilm.model_id().to_string(),
        dim: minilm.dimension(),
        vectors: queries.iter().cloned().zip(query_vectors.iter().cloned()).collect(),
    });
    for &n in &args.sizes {
        scale(&dir, n, &base_rows, &queries, &query_vectors, fixed.clone()).await?;
    }
    Ok(())
}

/// One JSON line per query: the answer, and the candidates of each retriever, best first.
async fn dump(kb: &KnowledgeBase, pairs: &[(String, Pair)], path: &std::path::Path) -> AnyResult<()> {
    use std::io::Write;
    let mut out = std::io::BufWriter::new(std::fs::File::create(path)?);
    for (project, p) in pairs {
        let mut line = serde_json::json!({
            "project": project, "query": p.query, "path": p.path, "line": p.line, "function": p.function,
        });
        for (name, mode) in [("vector", SearchMode::Vector), ("text", SearchMode::Text)] {
            let filter = SearchFilter { project_id: Some(project.clone()), ..SearchFilter::default() };
            let req = SearchRequest { query: p.query.clone(), limit: 30, filter, mode };
            let hits: Vec<serde_json::Value> = kb
                .search(req)
                .await?
                .into_iter()
                .map(|h| serde_json::json!([h.path, h.start_line, h.end_line, h.symbol, h.score, h.chunk_type]))
                .collect();
            line[name] = hits.into();
        }
        writeln!(out, "{line}")?;
    }
    out.flush()?;
    let mut chunks = std::io::BufWriter::new(std::fs::File::create(path.with_extension("chunks.jsonl"))?);
    for r in kb.dataset().sample(usize::MAX).await? {
        let row = serde_json::json!([r.project_id, r.path, r.start_line, r.end_line, r.symbol, r.chunk_type]);
        writeln!(chunks, "{row}")?;
    }
    chunks.flush()?;
    println!("candidates written to {} (and the chunks beside it)", path.display());
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
        let found = ds.nearest_with(v, 10, None, None).await?;
        exact_lat.push(t.elapsed());
        exact_ids.push(found.into_iter().map(|f| f.row.id).collect::<Vec<_>>());
    }
    println!("  exact vector search: {}", percentiles(&mut exact_lat));
    let mut lat = hybrid(&kb, queries).await?;
    println!("  hybrid search, exact vectors (vector + BM25 + fusion): {}", percentiles(&mut lat));

    let t = Instant::now();
    ds.create_ann_index().await?;
    println!("  IVF-HNSW-SQ index built in {:.1} s", t.elapsed().as_secs_f64());
    let (mut lat, recall) = ann(ds, vectors, &exact_ids, AnnTuning::default()).await?;
    println!("  ANN vector search: {}; recall@10 vs exact = {recall:.3}", percentiles(&mut lat));
    // What recall costs: other settings of the same index, on the same queries.
    for t in [
        AnnTuning { nprobes: 10, ef: 50, refine_factor: 1 },
        AnnTuning { nprobes: 20, ef: 100, refine_factor: 2 },
        AnnTuning { nprobes: 20, ef: 100, refine_factor: 5 },
        AnnTuning { nprobes: 80, ef: 300, refine_factor: 10 },
    ] {
        let (mut lat, recall) = ann(ds, vectors, &exact_ids, t).await?;
        println!(
            "    nprobes {:>2}, ef {:>3}, refine x{:<2}: {}; recall@10 = {recall:.3}",
            t.nprobes,
            t.ef,
            t.refine_factor,
            percentiles(&mut lat)
        );
    }
    let mut lat = hybrid(&kb, queries).await?;
    println!("  hybrid search, ANN vectors: {}", percentiles(&mut lat));
    Ok(())
}

/// Times one ANN search per vector; its recall@10 against the exact results.
async fn ann(
    ds: &Dataset,
    vectors: &[Vec<f32>],
    exact_ids: &[Vec<String>],
    tuning: AnnTuning,
) -> AnyResult<(Vec<Duration>, f64)> {
    let mut lat = Vec::with_capacity(vectors.len());
    let (mut hits, mut total) = (0usize, 0usize);
    for (v, exact) in vectors.iter().zip(exact_ids) {
        let t = Instant::now();
        let found = ds.nearest_with(v, 10, None, Some(tuning)).await?;
        lat.push(t.elapsed());
        hits += found.iter().filter(|f| exact.contains(&f.row.id)).count();
        total += exact.len();
    }
    Ok((lat, hits as f64 / total.max(1) as f64))
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
