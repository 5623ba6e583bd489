//! The knowledge base end to end on a real LanceDB directory: indexing, incremental
//! re-indexing, hybrid search with filters, context packing, usage counts and bad input. The
//! embedder here is a double (a bag of hashed words, so similar texts are close) that counts
//! the texts it is given; the real models are tested in `embed`.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use chrono::Utc;
use turbo_core::knowledge::{
    ContextRequest, IndexRequest, Knowledge, KnowledgeChunk, KnowledgeErrorKind, SearchFilter, SearchMode,
    SearchRequest,
};

use crate::dataset::{self, FullText};
use crate::embed::{EmbedError, Embedder};
use crate::{Chunker, Error, KnowledgeBase, Limits};

const DIM: usize = 64;

/// Hashes each lowercase word (identifiers split at `_` and case changes) into one of `DIM`
/// buckets; fails on the `fail_after`-th call when set.
struct BagOfWords {
    id: String,
    texts: AtomicUsize,
    calls: AtomicUsize,
    fail_after: Option<usize>,
}

impl BagOfWords {
    fn with(id: &str, fail_after: Option<usize>) -> Arc<Self> {
        Arc::new(Self { id: id.into(), texts: AtomicUsize::new(0), calls: AtomicUsize::new(0), fail_after })
    }
    fn new(id: &str) -> Arc<Self> {
        Self::with(id, None)
    }
    fn failing_after(calls: usize) -> Arc<Self> {
        Self::with("bow", Some(calls))
    }
    fn embedded(&self) -> usize {
        self.texts.load(Ordering::SeqCst)
    }
}

fn words(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut prev_lower = false;
    for ch in text.chars() {
        if ch.is_alphanumeric() {
            if ch.is_uppercase() && prev_lower && !cur.is_empty() {
                out.push(std::mem::take(&mut cur));
            }
            prev_lower = ch.is_lowercase();
            cur.extend(ch.to_lowercase());
        } else {
            if !cur.is_empty() {
                out.push(std::mem::take(&mut cur));
            }
            prev_lower = false;
        }
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    // Like a real model, it ignores what carries no meaning and sees "parsed" as "parse".
    const STOP: &[&str] = &["where", "is", "the", "a", "an", "of", "to", "in", "and", "how", "what", "which"];
    out.retain(|w| !STOP.contains(&w.as_str()));
    out.into_iter()
        .map(|w| {
            let stem =
                ["ed", "es", "s", "e", "d"].iter().find_map(|suffix| w.strip_suffix(suffix).filter(|s| s.len() > 2));
            stem.map(str::to_owned).unwrap_or(w)
        })
        .collect()
}

#[async_trait::async_trait]
impl Embedder for BagOfWords {
    fn model_id(&self) -> &str {
        &self.id
    }
    fn dimension(&self) -> usize {
        DIM
    }
    async fn embed(&self, texts: &[String]) -> Result<Vec<Vec<f32>>, EmbedError> {
        let call = self.calls.fetch_add(1, Ordering::SeqCst) + 1;
        if self.fail_after.is_some_and(|n| call > n) {
            return Err(EmbedError::Inference { reason: "the test embedder fails now".into() });
        }
        self.texts.fetch_add(texts.len(), Ordering::SeqCst);
        Ok(texts
            .iter()
            .map(|t| {
                let mut v = vec![0f32; DIM];
                for w in words(t) {
                    let h =
                        w.bytes().fold(0xcbf29ce484222325u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x100000001b3));
                    v[(h % DIM as u64) as usize] += 1.0;
                }
                v[DIM - 1] += 0.01; // never the zero vector
                let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
                v.into_iter().map(|x| x / norm).collect()
            })
            .collect())
    }
}

fn write(root: &Path, path: &str, content: impl AsRef<[u8]>) {
    let full = root.join(path);
    std::fs::create_dir_all(full.parent().unwrap()).unwrap();
    std::fs::write(full, content).unwrap();
}

fn sample_workspace(root: &Path) {
    write(
        root,
        "src/config.rs",
        "/// Reads the settings file.\npub fn parse_config(text: &str) -> Config {\n    toml::from_str(text).unwrap_or_default()\n}\n\npub fn unrelated_helper() -> u32 {\n    42\n}\n",
    );
    write(
        root,
        "app/auth.py",
        "def verify_token(token):\n    \"\"\"Checks a JWT bearer token.\"\"\"\n    return jwt.decode(token, KEY)\n\n\nclass Session:\n    def close(self):\n        self.open = False\n",
    );
    write(root, "web/client.js", "function sendRequest(url) {\n  return fetch(url);\n}\n");
    write(root, "README.md", "# Demo\n\nIntro text.\n\n## Deployment\n\nRun the container behind a proxy.\n");
}

async fn base(dir: &Path, embedder: Arc<dyn Embedder>) -> KnowledgeBase {
    KnowledgeBase::with_embedder(dir.join("kb").to_str().unwrap(), embedder, 256, Limits::default()).await.unwrap()
}

fn index_req(project: &str, root: &Path) -> IndexRequest {
    IndexRequest { project_id: project.into(), workspace: root.display().to_string() }
}

fn search(query: &str, mode: SearchMode, filter: SearchFilter) -> SearchRequest {
    SearchRequest { query: query.into(), limit: 5, filter, mode }
}

/// The symbols the names index finds for `q`, best first.
async fn names(kb: &KnowledgeBase, q: &str) -> Vec<String> {
    let found = kb.dataset().full_text_in(FullText::Symbol, q, 5, None).await.unwrap();
    found.into_iter().map(|f| f.row.symbol).collect()
}

fn project(p: &str) -> SearchFilter {
    SearchFilter { project_id: Some(p.into()), ..SearchFilter::default() }
}

#[tokio::test]
async fn a_workspace_is_indexed_and_searched_by_vector_text_and_both() {
    let dir = tempfile::tempdir().unwrap();
    let ws = dir.path().join("ws");
    sample_workspace(&ws);
    let emb = BagOfWords::new("bow");
    let kb = base(dir.path(), emb.clone()).await;

    let report = kb.index_workspace(index_req("p1", &ws)).await.unwrap();
    assert_eq!((report.files_seen, report.files_changed, report.files_removed), (4, 4, 0));
    assert!(report.chunks_added >= 6, "{report:?}");
    assert_eq!(report.chunks_embedded, report.chunks_added);
    assert_eq!(emb.embedded(), report.chunks_added);

    for mode in [SearchMode::Vector, SearchMode::Text, SearchMode::Hybrid] {
        let hits = kb.search(search("where is the config parsed", mode, project("p1"))).await.unwrap();
        let first = &hits[0];
        assert_eq!(
            (first.path.as_str(), first.symbol.as_str()),
            ("src/config.rs", "parse_config"),
            "{mode:?}: {hits:#?}"
        );
        assert_eq!((first.start_line, first.end_line, first.language.as_str()), (1, 4, "rust"));
        assert_eq!(first.chunk_type, "function");
    }
    // Identifier-aware full text: camelCase split into words.
    let hits = kb.search(search("send request", SearchMode::Text, project("p1"))).await.unwrap();
    assert_eq!(hits[0].symbol, "sendRequest", "{hits:#?}");
    // The names index holds qualified names alone, stemmed and split.
    assert_eq!(names(&kb, "verifying tokens").await, ["verify_token"]);
    assert_eq!(names(&kb, "sending requests").await, ["sendRequest"]);
    assert!(names(&kb, "JWT bearer settings").await.is_empty(), "the lines are not in it");
    // Methods keep their enclosing class.
    let hits = kb.search(search("close session", SearchMode::Hybrid, project("p1"))).await.unwrap();
    let top: Vec<&str> = hits.iter().take(2).map(|h| h.symbol.as_str()).collect();
    assert!(top.contains(&"Session::close") && top.contains(&"Session"), "the method and its class: {hits:#?}");

    // Filters: language, path prefix, chunk type, project.
    let only_python = SearchFilter { languages: vec!["Python".into()], ..project("p1") };
    let hits = kb.search(search("config token", SearchMode::Hybrid, only_python)).await.unwrap();
    assert!(!hits.is_empty() && hits.iter().all(|h| h.language == "python"), "{hits:#?}");
    let under_web = SearchFilter { path_prefix: Some("web/".into()), ..project("p1") };
    let hits = kb.search(search("config token request", SearchMode::Hybrid, under_web)).await.unwrap();
    assert!(!hits.is_empty() && hits.iter().all(|h| h.path.starts_with("web/")), "{hits:#?}");
    let sections = SearchFilter { chunk_types: vec!["section".into()], ..project("p1") };
    let hits = kb.search(search("deployment proxy", SearchMode::Hybrid, sections)).await.unwrap();
    assert!(!hits.is_empty() && hits.iter().all(|h| h.chunk_type == "section"), "{hits:#?}");
    assert!(hits[0].content.contains("behind a proxy"));
    let hits = kb.search(search("parse config", SearchMode::Hybrid, project("other"))).await.unwrap();
    assert!(hits.is_empty(), "another project sees nothing: {hits:#?}");

    let stats = kb.stats(Some("p1")).await.unwrap();
    assert_eq!((stats.files, stats.projects, stats.chunks), (4, 1, report.chunks_added as u64));
    assert_eq!((stats.embedding_model.as_str(), stats.dimension), ("bow", DIM as u32));
}

#[tokio::test]
async fn re_indexing_touches_only_what_changed() {
    let dir = tempfile::tempdir().unwrap();
    let ws = dir.path().join("ws");
    sample_workspace(&ws);
    let emb = BagOfWords::new("bow");
    let kb = base(dir.path(), emb.clone()).await;
    let first = kb.index_workspace(index_req("p1", &ws)).await.unwrap();
    let embedded = emb.embedded();

    // Unchanged: no embedding, no new version.
    let again = kb.index_workspace(index_req("p1", &ws)).await.unwrap();
    assert_eq!((again.files_changed, again.files_removed, again.chunks_embedded, again.chunks_added), (0, 0, 0, 0));
    assert_eq!(again.version, first.version);
    assert_eq!(emb.embedded(), embedded);

    // Rows whose vectors were made with another text format (an older version's dataset)
    // count as changed: that file's chunks are embedded again, the rest are left alone.
    let rows = kb.dataset().sample(usize::MAX).await.unwrap();
    assert!(rows.iter().all(|r| r.file_hash.starts_with(&format!("{}:", crate::index::TEXT_FORMAT))), "{rows:#?}");
    let old: Vec<_> = rows
        .into_iter()
        .filter(|r| r.path == "web/client.js")
        .map(|r| dataset::Row { file_hash: r.file_hash.split_once(':').unwrap().1.to_string(), ..r })
        .collect();
    let old_chunks = old.len();
    kb.dataset().upsert(old).await.unwrap();
    let refreshed = kb.index_workspace(index_req("p1", &ws)).await.unwrap();
    assert_eq!((refreshed.files_changed, refreshed.chunks_embedded), (1, old_chunks), "{refreshed:?}");
    let embedded = emb.embedded();

    // A chunk that is used keeps its history across an edit elsewhere in its file.
    let hit = kb.search(search("parse config", SearchMode::Text, project("p1"))).await.unwrap().remove(0);
    kb.record_outcome(std::slice::from_ref(&hit.id), true).await.unwrap();
    kb.record_outcome(std::slice::from_ref(&hit.id), false).await.unwrap();

    // One file edited (one function changed), one deleted, one added.
    write(
        &ws,
        "src/config.rs",
        "/// Reads the settings file.\npub fn parse_config(text: &str) -> Config {\n    toml::from_str(text).unwrap_or_default()\n}\n\npub fn renamed_helper() -> u32 {\n    43\n}\n",
    );
    std::fs::remove_file(ws.join("web/client.js")).unwrap();
    write(&ws, "go/main.go", "package main\n\nfunc Serve(addr string) error {\n\treturn nil\n}\n");
    let r = kb.index_workspace(index_req("p1", &ws)).await.unwrap();
    assert_eq!((r.files_changed, r.files_removed), (2, 1), "{r:?}");
    assert_eq!(emb.embedded() - embedded, r.chunks_embedded);
    // Only the two changed and added files are chunked and embedded, every chunk of them.
    let chunker = Chunker::new(Limits::default());
    let chunks_of = |path: &str| chunker.chunk(path, &std::fs::read(ws.join(path)).unwrap()).chunks().len();
    assert_eq!(r.chunks_embedded, chunks_of("src/config.rs") + chunks_of("go/main.go"), "{r:?}");
    assert!(r.chunks_embedded >= 3, "two functions of config.rs and one of main.go at least: {r:?}");
    assert!(r.version > first.version);

    let hits = kb.search(search("send request", SearchMode::Text, project("p1"))).await.unwrap();
    assert!(hits.iter().all(|h| h.path != "web/client.js"), "deleted file's chunks are gone: {hits:#?}");
    let hits = kb.search(search("renamed helper", SearchMode::Text, project("p1"))).await.unwrap();
    assert_eq!(hits[0].symbol, "renamed_helper");
    assert!(hits.iter().all(|h| h.symbol != "unrelated_helper"), "{hits:#?}");
    let kept = kb.search(search("parse config", SearchMode::Text, project("p1"))).await.unwrap().remove(0);
    assert_eq!(kept.id, hit.id, "the unchanged function keeps its id");
    assert_eq!(kept.usage_count, 2);
    let rate = kept.success_rate.unwrap();
    assert!((rate - 0.9).abs() < 1e-9, "1.0 then a failure at alpha 0.1 -> 0.9, got {rate}");
}

#[tokio::test]
async fn bad_files_are_skipped_with_reasons_and_the_rest_is_indexed() {
    let dir = tempfile::tempdir().unwrap();
    let ws = dir.path().join("ws");
    write(&ws, "ok.rs", "pub fn fine() -> bool {\n    true\n}\n");
    write(&ws, "image.png", [0x89u8, b'P', b'N', b'G', 0, 0, 0, 13, 0, 1, 2, 3]);
    write(&ws, "latin1.txt", b"caf\xe9 cr\xe8me\n".as_slice());
    // 50 MB of minified JavaScript on one line.
    write(&ws, "dist/bundle.min.js", "var a=1;".repeat(50 * 1024 * 1024 / 8));
    // A file name that is not UTF-8.
    {
        use std::os::unix::ffi::OsStrExt;
        let name = std::ffi::OsStr::from_bytes(b"bad\xffname.rs");
        std::fs::write(ws.join(name), "fn x() {}\n").unwrap();
    }
    let kb = base(dir.path(), BagOfWords::new("bow")).await;
    let r = kb.index_workspace(index_req("p1", &ws)).await.unwrap();
    let reason = |p: &str| r.files_skipped.iter().find(|s| s.path == p).map(|s| s.reason.clone());
    assert!(reason("image.png").is_some_and(|s| s.contains("binary")), "{r:#?}");
    assert!(reason("latin1.txt").is_some_and(|s| s.contains("UTF-8")), "{r:#?}");
    assert!(reason("dist/bundle.min.js").is_some_and(|s| s.contains("limit")), "{r:#?}");
    assert!(r.files_skipped.iter().any(|s| s.reason.contains("not valid UTF-8")), "{r:#?}");
    assert_eq!(r.chunks_added, 1, "{r:#?}");
    let hits = kb.search(search("fine", SearchMode::Hybrid, project("p1"))).await.unwrap();
    assert_eq!(hits[0].path, "ok.rs");

    let err = kb.index_workspace(index_req("p1", &dir.path().join("missing"))).await.unwrap_err();
    assert_eq!(err.kind, KnowledgeErrorKind::InvalidArgument, "{err}");
    assert!(err.message.contains("missing"), "{err}");
    let err = kb
        .index_workspace(IndexRequest { project_id: "p1".into(), workspace: "relative/dir".into() })
        .await
        .unwrap_err();
    assert!(err.message.contains("absolute path"), "{err}");
    let err = kb.index_workspace(index_req(" ", &ws)).await.unwrap_err();
    assert!(err.message.contains("project_id"), "{err}");
}

#[tokio::test]
async fn a_failure_mid_index_leaves_the_previous_version_whole() {
    let dir = tempfile::tempdir().unwrap();
    let ws = dir.path().join("ws");
    sample_workspace(&ws);
    // Enough files that embedding takes several calls; the second one fails.
    for i in 0..300 {
        write(&ws, &format!("gen/f{i}.py"), format!("def function_{i}():\n    return {i}\n"));
    }
    let ok = base(dir.path(), BagOfWords::new("bow")).await;
    std::fs::remove_dir_all(ws.join("gen")).unwrap();
    let before = ok.index_workspace(index_req("p1", &ws)).await.unwrap();
    let count = ok.stats(Some("p1")).await.unwrap().chunks;
    drop(ok);
    for i in 0..300 {
        write(&ws, &format!("gen/f{i}.py"), format!("def function_{i}():\n    return {i}\n"));
    }
    let failing = base(dir.path(), BagOfWords::failing_after(1)).await;
    let err = failing.index_workspace(index_req("p1", &ws)).await.unwrap_err();
    assert!(err.message.contains("fails now"), "{err}");
    let stats = failing.stats(Some("p1")).await.unwrap();
    assert_eq!((stats.version, stats.chunks), (before.version, count), "nothing half-written");
    let hits = failing.search(search("parse config", SearchMode::Text, project("p1"))).await.unwrap();
    assert_eq!(hits[0].symbol, "parse_config");
}

#[tokio::test]
async fn an_index_with_a_deadline_commits_slices_and_the_next_run_finishes() {
    let dir = tempfile::tempdir().unwrap();
    let ws = dir.path().join("ws");
    sample_workspace(&ws);
    for i in 0..300 {
        write(&ws, &format!("gen/f{i}.py"), format!("def function_{i}():\n    return {i}\n"));
    }
    let emb = BagOfWords::new("bow");
    let kb = base(dir.path(), emb.clone()).await;
    let indexer = kb.indexer();
    // A deadline already passed: nothing is embedded or written, everything is pending.
    let late = indexer.index_until("p1", &ws, Some(tokio::time::Instant::now())).await.unwrap();
    assert_eq!((late.files_pending, late.report.chunks_embedded), (304, 0), "{late:?}");
    assert_eq!(kb.stats(Some("p1")).await.unwrap().chunks, 0);
    // The next run without a deadline indexes all of it, in one commit.
    let done = indexer.index_until("p1", &ws, None).await.unwrap();
    assert_eq!((done.files_pending, done.report.files_changed), (0, 304), "{done:?}");
    let again = indexer.index_until("p1", &ws, Some(tokio::time::Instant::now())).await.unwrap();
    assert_eq!((again.files_pending, again.report.chunks_embedded), (0, 0), "nothing left: {again:?}");
    // A context build indexes within its budget and finds the code.
    let ctx = kb
        .build_context(turbo_core::knowledge::ContextRequest {
            project_id: "p1".into(),
            workspace: Some(ws.display().to_string()),
            query: "function 7".into(),
            budget_chars: 4000,
            limit: 5,
        })
        .await
        .unwrap();
    assert!(ctx.sources.iter().any(|s| s.starts_with("gen/f7.py")), "{:?}", ctx.sources);
}

#[tokio::test]
async fn another_embedding_model_is_refused_with_a_re_index_message() {
    let dir = tempfile::tempdir().unwrap();
    let ws = dir.path().join("ws");
    sample_workspace(&ws);
    base(dir.path(), BagOfWords::new("bow")).await.index_workspace(index_req("p1", &ws)).await.unwrap();
    let uri = dir.path().join("kb");
    let err =
        KnowledgeBase::with_embedder(uri.to_str().unwrap(), BagOfWords::new("other-model"), 256, Limits::default())
            .await
            .err()
            .unwrap();
    assert!(matches!(err, Error::ModelChanged { .. }), "{err}");
    let msg = err.to_string();
    assert!(msg.contains("bow (64 dimensions)") && msg.contains("other-model (64 dimensions)"), "{msg}");
    assert!(msg.contains("knowledge.dataset_uri"), "{msg}");
}

/// `knowledge.embedder = "minilm-static"` opens a base that indexes and ranks with the static
/// model distilled from the real MiniLM files; the dataset then refuses MiniLM itself, whose
/// vectors live in another space.
#[tokio::test]
async fn the_static_model_is_chosen_by_configuration_and_not_mixed_with_minilm() {
    let dir = tempfile::tempdir().unwrap();
    let ws = dir.path().join("ws");
    sample_workspace(&ws);
    let mut config = turbo_config::Config::default();
    config.knowledge.embedder = turbo_config::EmbedderKind::MinilmStatic;
    config.knowledge.model_dir = Some(crate::embed::minilm::tests::test_model_dir());
    config.knowledge.dataset_uri = Some(dir.path().join("kb").display().to_string());
    let kb = KnowledgeBase::open(&config).await.unwrap();
    let report = kb.index_workspace(index_req("p1", &ws)).await.unwrap();
    assert_eq!(report.chunks_embedded, report.chunks_added);
    let hits = kb.search(search("where are the settings parsed", SearchMode::Hybrid, project("p1"))).await.unwrap();
    assert_eq!(hits[0].symbol, "parse_config", "{hits:#?}");
    let hits = kb.search(search("check a bearer token", SearchMode::Vector, project("p1"))).await.unwrap();
    assert_eq!(hits[0].symbol, "verify_token", "{hits:#?}");
    let stats = kb.stats(Some("p1")).await.unwrap();
    assert_eq!((stats.embedding_model.as_str(), stats.dimension), ("minilm-static:all-MiniLM-L6-v2", 384));
    drop(kb);

    config.knowledge.embedder = turbo_config::EmbedderKind::Minilm;
    let err = KnowledgeBase::open(&config).await.err().expect("MiniLM's vectors are not the static model's");
    assert!(matches!(err, Error::ModelChanged { .. }), "{err}");
    assert!(err.to_string().contains("minilm-static:all-MiniLM-L6-v2 (384 dimensions)"), "{err}");
}

#[tokio::test]
async fn bad_queries_get_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let kb = base(dir.path(), BagOfWords::new("bow")).await;
    let cases = [
        (SearchRequest::new("   ", 5), "must not be empty"),
        (SearchRequest::new("x".repeat(100 * 1024), 5), "too long"),
        (SearchRequest::new("ok", 0), "limit"),
        (
            SearchRequest {
                filter: SearchFilter { languages: vec!["".into()], ..Default::default() },
                ..SearchRequest::new("ok", 5)
            },
            "filter.languages",
        ),
    ];
    for (req, expected) in cases {
        let err = kb.search(req).await.unwrap_err();
        assert_eq!(err.kind, KnowledgeErrorKind::InvalidArgument, "{err}");
        assert!(err.message.contains(expected), "{expected}: {err}");
    }
    // A search of an empty dataset finds nothing, without error.
    assert!(kb.search(SearchRequest::new("anything", 5)).await.unwrap().is_empty());
}

#[tokio::test]
async fn knowledge_chunks_are_added_found_in_context_and_deleted() {
    let dir = tempfile::tempdir().unwrap();
    let ws = dir.path().join("ws");
    sample_workspace(&ws);
    let kb = base(dir.path(), BagOfWords::new("bow")).await;
    let now = Utc::now();
    let chunk = KnowledgeChunk {
        id: "k-sql".into(),
        title: "SQL injection".into(),
        content: "Always use parameterised queries; never format user input into SQL.".into(),
        chunk_type: "pattern".into(),
        category: "security".into(),
        subcategory: None,
        language: None,
        framework: None,
        keywords: vec!["sql".into()],
        tags: vec![],
        source: "team handbook".into(),
        source_url: None,
        author: None,
        quality_score: Some(0.9),
        usage_count: 0,
        success_rate: None,
        embedding: None,
        embedding_model: None,
        created_at: now,
        updated_at: now,
        last_used: None,
    };
    assert_eq!(kb.add_chunk(chunk.clone()).await.unwrap(), "k-sql");
    let bad = KnowledgeChunk { content: "short".into(), ..chunk.clone() };
    let err = kb.add_chunk(bad).await.unwrap_err();
    assert!(err.message.contains("content"), "{err}");
    let wrong = KnowledgeChunk { embedding: Some(vec![0.5; 3]), embedding_model: Some("bow".into()), ..chunk };
    let err = kb.add_chunk(wrong).await.unwrap_err();
    assert!(err.message.contains("3 values") && err.message.contains("64"), "{err}");

    // Context for a task in p1 holds the project's code and the shared knowledge chunk.
    let ctx = kb
        .build_context(ContextRequest {
            project_id: "p1".into(),
            workspace: Some(ws.display().to_string()),
            query: "parse the config with sql queries".into(),
            budget_chars: 4000,
            limit: 10,
        })
        .await
        .unwrap();
    assert!(ctx.sources.iter().any(|s| s == "knowledge: SQL injection"), "{ctx:#?}");
    assert!(ctx.sources.iter().any(|s| s.starts_with("src/config.rs:1-4")), "{ctx:#?}");
    assert!(ctx.text.contains("trust=\"untrusted\""));
    assert!(ctx.text.chars().count() <= 4000);

    assert!(kb.delete_chunk("k-sql").await.unwrap());
    assert!(!kb.delete_chunk("k-sql").await.unwrap());
    let hits = kb.search(search("sql injection", SearchMode::Hybrid, project("p1"))).await.unwrap();
    assert!(hits.iter().all(|h| h.id != "k-sql"), "{hits:#?}");
}

#[test]
fn the_ann_index_has_one_partition_per_hundred_thousand_rows() {
    assert_eq!(dataset::ann_partitions(0), 1);
    assert_eq!(dataset::ann_partitions(400), 1);
    assert_eq!(dataset::ann_partitions(dataset::ROWS_PER_PARTITION), 1);
    assert_eq!(dataset::ann_partitions(dataset::ROWS_PER_PARTITION + 1), 2);
    assert_eq!(dataset::ann_partitions(10 * dataset::ROWS_PER_PARTITION), 10);
}

#[tokio::test]
async fn past_the_threshold_searches_use_an_ann_index_and_still_find_new_rows() {
    let dir = tempfile::tempdir().unwrap();
    let ws = dir.path().join("ws");
    for i in 0..400 {
        write(&ws, &format!("m/f{i}.py"), format!("def handler_number_{i}(event):\n    return event + {i}\n"));
    }
    let kb = base(dir.path(), BagOfWords::new("bow")).await;
    kb.index_workspace(index_req("p1", &ws)).await.unwrap();
    let stats = kb.stats(None).await.unwrap();
    assert!(stats.ann_index, "{stats:?}");
    write(&ws, "late.rs", "pub fn freshly_added_function() {}\n");
    kb.index_workspace(index_req("p1", &ws)).await.unwrap();
    let hits = kb.search(search("freshly added function", SearchMode::Vector, project("p1"))).await.unwrap();
    assert_eq!(hits[0].path, "late.rs", "{hits:#?}");
    let hits = kb.search(search("freshly added function", SearchMode::Text, project("p1"))).await.unwrap();
    assert_eq!(hits[0].path, "late.rs", "{hits:#?}");
}
