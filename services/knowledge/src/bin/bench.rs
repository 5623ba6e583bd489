//! `turbo-knowledge-bench`: the knowledge service's figures for docs/benchmarks.md, run by
//! `make bench`. Everything is measured in this run on this machine:
//!
//! 1. Corpus: Rust crates from the local cargo registry, their function doc comments removed
//!    (the evaluation's queries, see `turbo_knowledge::eval`).
//! 2. Index throughput with all-MiniLM-L6-v2 in process (or, with `--embedder minilm-static`,
//!    the static model distilled from it): chunks/s of the whole incremental index (walk,
//!    chunk, embed, commit), beside chunking alone, the distillation, and embedding alone by
//!    each model.
//! 3. Retrieval quality: MRR@10, recall@10 and top-1 of vector search, BM25 over the text,
//!    BM25 over the qualified names, the RRF of vector and text, and the hybrid search (the
//!    three fused, then weighed); each crate is a project of its own, as a repository is.
//! 4. Scale: tables of 10k and 100k chunks made from the corpus's real vectors (each a copy
//!    with Gaussian noise, renormalised, keeping its source's text): exact search, then the
//!    earlier IVF-HNSW-SQ indexes and the default IVF-HNSW-FLAT one, their latency and their
//!    recall@10 against exact search on the same vectors, and hybrid search latency.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use turbo_core::knowledge::{IndexRequest, Knowledge, SearchFilter, SearchMode, SearchRequest};
use turbo_knowledge::dataset::{self, AnnTuning, Dataset, Found, FullText, Graph, Row};
use turbo_knowledge::embed::{Distilled, EmbedError, Embedder, HttpEmbedder, MiniLm, Protocol};
use turbo_knowledge::eval::{self, Pair};
use turbo_knowledge::{Chunked, Chunker, KnowledgeBase, Limits, rerank, search};

#[derive(Parser)]
#[command(about = "Knowledge service benchmarks: index throughput, retrieval quality, search latency at scale")]
struct Args {
    /// all-MiniLM-L6-v2 directory (default: $TURBO_MINILM_DIR or ~/.cache/turbo-coder/models/all-MiniLM-L6-v2).
    #[arg(long)]
    model_dir: Option<PathBuf>,
    /// The model the corpus is indexed and searched with: `minilm`, `minilm-static` (the
    /// static model distilled from it), or a server's model (`ollama`, `openai`, with
    /// `--embed-model` and `--embed-url`). The throughput sample times the two in-process ones.
    #[arg(long, default_value = "minilm", value_parser = ["minilm", "minilm-static", "ollama", "openai"])]
    embedder: String,
    /// The server's embedding model, e.g. `nomic-embed-code` (`--embedder ollama|openai`).
    #[arg(long, default_value = "nomic-embed-text")]
    embed_model: String,
    /// The embedding server (`--embedder ollama|openai`); its key, if any, from `EMBED_API_KEY`.
    #[arg(long, default_value = "http://127.0.0.1:11434")]
    embed_url: String,
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
    /// Writes each query's hybrid candidates with their features and the right answers as
    /// JSON lines (the training crates' too with `--fit`), for studying the ranking.
    #[arg(long)]
    dump: Option<PathBuf>,
    /// Fits the hybrid search's ranking weights on the training crates' queries (printed as
    /// the `rerank::WEIGHTS` array), and scores the evaluation with them beside the compiled-in
    /// weights.
    #[arg(long)]
    fit: bool,
    /// Registry crates whose queries train the ranking weights (`--fit`); none of the
    /// evaluation's.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "walkdir,tempfile,same-file,smallvec,similar,base64,itertools,bytes,http,indexmap,either,anyhow,bstr,num-traits,fst,arrayvec,dashmap,crossbeam-channel"
    )]
    train_crates: Vec<String>,
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
    if let Some(both) = args.crates.iter().find(|c| args.fit && args.train_crates.contains(c)) {
        return Err(format!("crate {both} is both trained on and evaluated: the figures would flatter").into());
    }
    let (projects, pairs) = mine(&args.crates, &ws)?;

    // 2. Index throughput.
    let load = Instant::now();
    let minilm = Arc::new(MiniLm::load(&model_dir)?);
    println!("\nmodel: {} loaded in {:.2} s", minilm.model_id(), load.elapsed().as_secs_f64());
    // The static model is loaded (and distilled, on a machine that has not kept its table yet)
    // only when it is timed or searched with.
    let distilled = if args.embedder == "minilm-static" || !args.only_quality {
        let load = Instant::now();
        let distilled = Arc::new(Distilled::load(&model_dir)?);
        println!(
            "model: {} loaded in {:.2} s (distilled from MiniLM when its table was not kept yet)",
            distilled.model_id(),
            load.elapsed().as_secs_f64()
        );
        Some(distilled)
    } else {
        None
    };
    let embedder: Arc<dyn Embedder> = match (args.embedder.as_str(), &distilled) {
        ("minilm", _) => minilm.clone(),
        ("minilm-static", Some(distilled)) => distilled.clone(),
        (server @ ("ollama" | "openai"), _) => {
            let protocol = if server == "ollama" { Protocol::Ollama } else { Protocol::OpenAi };
            let key = std::env::var("EMBED_API_KEY").ok();
            let timeout = Duration::from_secs(120);
            let model = HttpEmbedder::connect(protocol, &args.embed_url, &args.embed_model, key, timeout).await?;
            println!("model: {} at {}", model.model_id(), args.embed_url);
            Arc::new(model.with_batch(64))
        }
        (other, _) => return Err(format!("--embedder {other}: no such model here").into()),
    };
    let (texts, chunk_secs) = chunk_all(&ws)?;
    if let (false, Some(distilled)) = (args.only_quality, &distilled) {
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
        let t = Instant::now();
        let fresh = tokio::task::spawn_blocking({
            let minilm = minilm.clone();
            move || Distilled::distill(&minilm)
        })
        .await??;
        println!("distilling the static model from MiniLM (its first start): {:.1} s", t.elapsed().as_secs_f64());
        let probe = vec!["walk a directory tree".to_owned()];
        let (a, b) = (fresh.embed(&probe).await?, distilled.embed(&probe).await?);
        if a[0].iter().zip(&b[0]).any(|(x, y)| (x - y).abs() > 1e-4) {
            println!("  (the kept table differs from this distillation: delete it to distil it again)");
        }
        let t = Instant::now();
        distilled.embed(&texts).await?;
        let embed_rate = texts.len() as f64 / t.elapsed().as_secs_f64();
        println!(
            "embedding alone (static, distilled from MiniLM, {} chunk texts): {embed_rate:.0} chunks/s",
            texts.len()
        );
    }

    println!("\nindexed and searched with {}:", embedder.model_id());
    let kb = open_kb(&kb_dir(&dir, "kb", &args), embedder.clone()).await?;
    let (files, chunks, _, secs) = index_all(&kb, &ws, &projects).await?;
    println!(
        "index (walk + chunk + embed + commit): {files} files, {chunks} chunks in {secs:.1} s = {:.1} chunks/s",
        chunks as f64 / secs
    );
    let (_, _, embedded, secs) = index_all(&kb, &ws, &projects).await?;
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
    let names = [
        "Vector",
        "Text (BM25)",
        "Names (BM25 over qualified names)",
        "Vector + text, RRF",
        "Vector + text + names, RRF",
        "Hybrid (ranked by features)",
    ];
    let mut ranks: Vec<Vec<Option<usize>>> = vec![Vec::with_capacity(pairs.len()); names.len()];
    let mut ranks_any: Vec<Vec<Option<usize>>> = vec![Vec::with_capacity(pairs.len()); names.len()];
    for ((project, p), answers) in pairs.iter().zip(&same) {
        let filter = SearchFilter { project_id: Some(project.clone()), ..SearchFilter::default() };
        let ds = kb.dataset();
        let sql = search::filter_sql(&filter)?;
        let query_vector = search::embed_query(embedder.as_ref(), &p.query).await?;
        let vector = ds.nearest(&query_vector, 30, sql.clone()).await?;
        let text = ds.full_text(&p.query, 30, sql.clone()).await?;
        let symbol = ds.full_text_in(FullText::Symbol, &p.query, 30, sql).await?;
        let two = search::rrf(&[vector.clone(), text.clone()]);
        let three = search::rrf(&[vector.clone(), text.clone(), symbol.clone()]);
        let hybrid =
            kb.search(SearchRequest { query: p.query.clone(), limit: 10, filter, mode: SearchMode::Hybrid }).await?;
        let span = |r: &Row| (r.path.clone(), r.start_line, r.end_line);
        let found = |list: &[Found]| list.iter().map(|f| span(&f.row)).collect::<Vec<_>>();
        let lists = [
            found(&vector),
            found(&text),
            found(&symbol),
            two.iter().map(|(r, _)| span(r)).collect(),
            three.iter().map(|(r, _)| span(r)).collect(),
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

    let mut train = Vec::new();
    if args.fit {
        // The weights are fitted on the training crates only, indexed apart (BM25's statistics
        // are the table's), then the evaluation's queries are ranked with them (the same
        // candidates as the hybrid search's).
        let ws = dir.join("ws-train");
        let (projects, train_pairs) = mine(&args.train_crates, &ws)?;
        let train_kb = open_kb(&kb_dir(&dir, "kb-train", &args), embedder.clone()).await?;
        index_all(&train_kb, &ws, &projects).await?;
        let t = Instant::now();
        train = samples(&train_kb, embedder.as_ref(), &train_pairs).await?;
        let weights = rerank::fit(&train.iter().map(|(s, _, _)| s).cloned().collect::<Vec<_>>(), 2000);
        println!(
            "\nranking weights fitted on {} queries of {} in {:.1} s:",
            train.len(),
            args.train_crates.join(", "),
            t.elapsed().as_secs_f64()
        );
        println!("pub const WEIGHTS: [f32; FEATURES] = [");
        for (w, name) in weights.iter().zip(rerank::NAMES) {
            println!("    {w:.3}, // {name}");
        }
        println!("];");
        let own: Vec<Option<usize>> = train
            .iter()
            .map(|(s, _, _)| {
                let order = rerank::order(&s.features, &weights);
                order.iter().take(10).position(|i| s.right.contains(i))
            })
            .collect();
        let own = eval::score(&own);
        println!("(on its own training queries, any same-doc fn: MRR@10 {:.3}, top-1 {:.3})", own.mrr_at_10, own.top1);
        let (mut strict, mut any) = (Vec::new(), Vec::new());
        for (s, right, _) in samples(&kb, embedder.as_ref(), &pairs).await? {
            let order = rerank::order(&s.features, &weights);
            let rank = |right: &[usize]| order.iter().take(10).position(|i| right.contains(i));
            strict.push(rank(&right));
            any.push(rank(&s.right));
        }
        let (s, any) = (eval::score(&strict), eval::score(&any));
        println!(
            "| Hybrid, the weights fitted in this run | {:.3} | {:.3} | {:.3} | {:.3} | {:.3} |",
            s.mrr_at_10, s.recall_at_10, s.top1, any.mrr_at_10, any.top1
        );
    }

    if let Some(path) = &args.dump {
        dump(&samples(&kb, embedder.as_ref(), &pairs).await?, &train, path)?;
    }
    if args.only_quality {
        return Ok(());
    }

    // 4. Scale.
    let base_rows = kb.dataset().sample(usize::MAX).await?;
    let queries: Vec<String> = pairs.iter().take(args.queries).map(|(_, p)| p.query.clone()).collect();
    let query_vectors = embedder.embed(&queries).await?;
    let fixed = Arc::new(Fixed {
        id: embedder.model_id().to_string(),
        dim: embedder.dimension(),
        vectors: queries.iter().cloned().zip(query_vectors.iter().cloned()).collect(),
    });
    for &n in &args.sizes {
        scale(&dir, n, &base_rows, &queries, &query_vectors, fixed.clone()).await?;
    }
    Ok(())
}

/// Project names, and each query with its project.
type Corpus = (Vec<String>, Vec<(String, Pair)>);

/// Mines each registry crate into `ws/<name>-<version>`: the project names and the queries.
fn mine(crates: &[String], ws: &std::path::Path) -> AnyResult<Corpus> {
    let (mut projects, mut pairs) = (Vec::new(), Vec::new());
    for name in crates {
        let src =
            eval::registry_crate(name).ok_or_else(|| format!("crate {name} is not in the local cargo registry"))?;
        let crate_dir = src.file_name().map(|n| n.to_string_lossy().to_string()).unwrap_or_default();
        let found = eval::mine_rust_crate(&src, &ws.join(&crate_dir))?;
        println!("corpus: {crate_dir}: {} doc-comment queries", found.len());
        pairs.extend(found.into_iter().map(|p| (crate_dir.clone(), p)));
        projects.push(crate_dir);
    }
    Ok((projects, pairs))
}

/// A query's candidates and their features (any same-doc function right), the strict right
/// answers, and the candidates themselves.
type Scored = (rerank::Sample, Vec<usize>, Vec<rerank::Candidate>);

/// Each query's hybrid candidates and their features, the right answers marked (any function
/// with the same doc sentence), with the strict right answer (the function itself) beside.
async fn samples(kb: &KnowledgeBase, embedder: &dyn Embedder, pairs: &[(String, Pair)]) -> AnyResult<Vec<Scored>> {
    let same = eval::same_query(pairs);
    let mut out = Vec::with_capacity(pairs.len());
    for ((project, p), answers) in pairs.iter().zip(&same) {
        let filter = SearchFilter { project_id: Some(project.clone()), ..SearchFilter::default() };
        let sql = search::filter_sql(&filter)?;
        let v = search::embed_query(embedder, &p.query).await?;
        let candidates = search::candidates(kb.dataset(), &v, &p.query, 30, sql).await?;
        let features = rerank::features(&rerank::Query::new(&p.query, &v), &candidates);
        let right = |answers: &[&Pair]| -> Vec<usize> {
            (0..candidates.len())
                .filter(|&i| {
                    let r = &candidates[i].row;
                    eval::rank_of_any(answers, &[(r.path.clone(), r.start_line, r.end_line)], 1).is_some()
                })
                .collect()
        };
        let strict = right(&[p]);
        out.push((rerank::Sample { query: p.query.clone(), features, right: right(answers) }, strict, candidates));
    }
    Ok(out)
}

/// One JSON line per query of the evaluation (then of the training crates, after `--fit`):
/// its right answers and every hybrid candidate with what each retriever said of it, for
/// studying the ranking offline.
fn dump(eval: &[Scored], train: &[Scored], path: &std::path::Path) -> AnyResult<()> {
    use std::io::Write;
    let mut out = std::io::BufWriter::new(std::fs::File::create(path)?);
    for (set, samples) in [("eval", eval), ("train", train)] {
        for (s, strict, candidates) in samples {
            let cands: Vec<serde_json::Value> = candidates
                .iter()
                .zip(&s.features)
                .map(|(c, f)| {
                    let r = &c.row;
                    let head: String = r.text.lines().next().unwrap_or_default().chars().take(300).collect();
                    let body: String = r.content.chars().take(800).collect();
                    serde_json::json!({
                        "symbol": r.symbol, "path": r.path, "type": r.chunk_type, "lines": [r.start_line, r.end_line],
                        "found": c.found, "features": f, "head": head, "body": body,
                    })
                })
                .collect();
            let line = serde_json::json!({
                "set": set, "query": s.query, "right": s.right, "strict": strict, "candidates": cands,
            });
            writeln!(out, "{line}")?;
        }
    }
    out.flush()?;
    println!("candidates written to {}", path.display());
    Ok(())
}

/// A knowledge base in `dir` embedding with `embedder`, never building the ANN index (the
/// corpus is small: its searches are exact).
async fn open_kb(dir: &std::path::Path, embedder: Arc<dyn Embedder>) -> AnyResult<KnowledgeBase> {
    let uri = dir.to_str().ok_or("the data directory is not UTF-8")?;
    Ok(KnowledgeBase::with_embedder(uri, embedder, usize::MAX, Limits::default()).await?)
}

/// The directory of a knowledge base named `name` for the model of `args`: MiniLM's keep
/// their first names, so a `--data` directory of earlier runs is reused.
fn kb_dir(dir: &std::path::Path, name: &str, args: &Args) -> PathBuf {
    let model = match args.embedder.as_str() {
        "minilm" => return dir.join(name),
        "minilm-static" => args.embedder.clone(),
        server => format!("{server}-{}", args.embed_model),
    };
    let model: String = model.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' { c } else { '_' }).collect();
    dir.join(format!("{name}-{model}"))
}

/// Indexes each project's workspace under `ws`: files changed, chunks added, chunks embedded,
/// seconds.
async fn index_all(kb: &KnowledgeBase, ws: &std::path::Path, projects: &[String]) -> AnyResult<(u64, u64, u64, f64)> {
    let (mut files, mut chunks, mut embedded, mut ms) = (0, 0, 0, 0);
    for project in projects {
        let workspace = ws.join(project).display().to_string();
        let report = kb.index_workspace(IndexRequest { project_id: project.clone(), workspace }).await?;
        files += report.files_changed as u64;
        chunks += report.chunks_added as u64;
        embedded += report.chunks_embedded as u64;
        ms += report.duration_ms;
    }
    Ok((files, chunks, embedded, ms as f64 / 1000.0))
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

    // The baseline, in the same run: lance's default shape (sqrt(rows) partitions) searched
    // as this crate did before (40 partitions probed, ef 200).
    let sqrt = (n as f64).sqrt() as u32;
    let t = Instant::now();
    ds.create_ann_index_with(Graph::Quantized, sqrt).await?;
    println!("  IVF-HNSW-SQ index of {sqrt} partitions (lance's default) built in {:.1} s", t.elapsed().as_secs_f64());
    ann_row(ds, vectors, &exact_ids, AnnTuning { nprobes: 40, ef: 200, refine_factor: 5 }).await?;

    // The index this crate built before, in the same run: IVF-HNSW-SQ of one partition per
    // 100k rows, searched with a refine step, and what other refine settings cost.
    let partitions = dataset::ann_partitions(n);
    let t = Instant::now();
    ds.create_ann_index_with(Graph::Quantized, partitions).await?;
    println!("  IVF-HNSW-SQ index of {partitions} partition(s) built in {:.1} s", t.elapsed().as_secs_f64());
    for t in [
        AnnTuning::of(Graph::Quantized),
        AnnTuning { nprobes: 4, ef: 100, refine_factor: 1 },
        AnnTuning { nprobes: 4, ef: 400, refine_factor: 1 },
        AnnTuning { nprobes: 4, ef: 400, refine_factor: 2 },
        AnnTuning { nprobes: 4, ef: 600, refine_factor: 5 },
    ] {
        ann_row(ds, vectors, &exact_ids, t).await?;
    }

    // The index the dataset builds (`Graph::default`), searched with the settings that follow it.
    let t = Instant::now();
    ds.create_ann_index().await?;
    let graph = ds.graph().ok_or("no ANN index after create_ann_index")?;
    println!("  the default index, {graph:?} ({partitions} partition(s)), built in {:.1} s", t.elapsed().as_secs_f64());
    let tuning = ds.tuning();
    let (mut lat, recall) = ann(ds, vectors, &exact_ids, tuning).await?;
    println!("  ANN vector search {tuning:?}: {}; recall@10 vs exact = {recall:.3}", percentiles(&mut lat));
    // The baseline of the packed column, in the same run: the same search reading each hit's
    // 17 columns, the two alternating query by query so that the machine's noise falls on both.
    let (mut packed, mut columns) = packed_against_columns(ds, vectors, tuning).await?;
    println!("  the same, alternating query by query with a read of each hit's 17 columns instead of the packed one:");
    println!("    packed: {}", percentiles(&mut packed));
    println!("    17 columns: {}", percentiles(&mut columns));
    // What recall costs: other settings of the same index, on the same queries.
    for ef in [100, 200, 300, 600] {
        ann_row(ds, vectors, &exact_ids, AnnTuning { ef, ..tuning }).await?;
    }
    let mut lat = hybrid(&kb, queries).await?;
    println!("  hybrid search, ANN vectors: {}", percentiles(&mut lat));
    // Where an ANN query's time goes, by lance's own account (after the runs above, warm).
    if let Some(v) = vectors.first() {
        println!("  one ANN query, lance's analyze_plan (each step's time includes the steps below it):");
        for line in ds.analyze_nearest(v, 10, Some(tuning)).await?.lines() {
            println!("    {}", plan_step(line));
        }
    }
    Ok(())
}

/// Prints one row of the ANN table: the search settings, latency and recall@10.
async fn ann_row(ds: &Dataset, vectors: &[Vec<f32>], exact_ids: &[Vec<String>], t: AnnTuning) -> AnyResult<()> {
    let (mut lat, recall) = ann(ds, vectors, exact_ids, t).await?;
    println!(
        "    nprobes {:>2}, ef {:>3}, refine x{:<2}: {}; recall@10 = {recall:.3}",
        t.nprobes,
        t.ef,
        t.refine_factor,
        percentiles(&mut lat)
    );
    Ok(())
}

/// Times the ANN search of each vector as searches read hits (id and packed column) and as
/// they did before (17 columns), one after the other in alternating order, over three passes.
async fn packed_against_columns(
    ds: &Dataset,
    vectors: &[Vec<f32>],
    tuning: AnnTuning,
) -> AnyResult<(Vec<Duration>, Vec<Duration>)> {
    let (mut packed, mut columns) = (Vec::new(), Vec::new());
    for (i, v) in (0..3).flat_map(|_| vectors.iter()).enumerate() {
        for packed_now in [i % 2 == 0, i % 2 == 1] {
            let t = Instant::now();
            if packed_now {
                ds.nearest_with(v, 10, None, Some(tuning)).await?;
                packed.push(t.elapsed());
            } else {
                ds.nearest_reading_columns(v, 10, Some(tuning)).await?;
                columns.push(t.elapsed());
            }
        }
    }
    Ok((packed, columns))
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

/// One line of an analyzed plan, shortened to its step, time and the metrics that say where
/// the time went (rows, reads).
fn plan_step(line: &str) -> String {
    let indent = line.len() - line.trim_start().len();
    let line = line.trim_start();
    let name = line.split([':', ',', ' ']).next().unwrap_or_default();
    let keep =
        ["elapsed=", "output_rows=", "fragments_scanned=", "iops=", "partitions_searched=", "index_search_time="];
    let metrics: Vec<&str> =
        line.split([',', '[', ']', ' ']).map(str::trim).filter(|m| keep.iter().any(|k| m.starts_with(k))).collect();
    format!("{}{name} {}", " ".repeat(indent), metrics.join(" "))
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
