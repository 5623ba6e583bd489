//! Incremental indexing of a workspace: walk and hash the files, compare with the hashes the
//! dataset holds for the project, chunk and embed only added and changed files, and write the
//! new chunks and drop the old (changed and deleted files) in one commit. A re-index of an
//! unchanged tree reads and hashes the files and does nothing else: no chunking, no embedding,
//! no new dataset version.
//!
//! Files the chunker skips (binaries, invalid UTF-8, minified or oversized files) and files
//! that cannot be read are listed in the report with the reason, and logged.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use turbo_core::knowledge::{IndexReport, SkippedFile};

use crate::dataset::{Dataset, Row};
use crate::embed::Embedder;
use crate::{Chunk, Chunked, Chunker, Error, Result, sha256_hex};

/// Texts sent to the embedder per call, so progress and memory stay bounded on a large tree.
const EMBED_SLICE: usize = 256;

/// Indexes workspaces into a [`Dataset`].
#[derive(Clone)]
pub struct Indexer {
    pub dataset: Arc<Dataset>,
    pub embedder: Arc<dyn Embedder>,
    pub chunker: Chunker,
}

impl Indexer {
    /// Brings `project_id`'s chunks in line with the files under `root`.
    pub async fn index(&self, project_id: &str, root: &Path) -> Result<IndexReport> {
        let started = Instant::now();
        check_project_id(project_id)?;
        let root_buf = root.to_path_buf();
        let scan = tokio::task::spawn_blocking(move || crate::scan(&root_buf))
            .await
            .map_err(|e| Error::Search(format!("the workspace walk stopped: {e}")))??;
        let stored = self.dataset.file_hashes(project_id).await?;
        let changes = crate::diff(&stored, &scan.hashes());
        let mut report = IndexReport {
            files_seen: scan.files.len(),
            files_skipped: scan
                .unreadable
                .iter()
                .map(|u| SkippedFile { path: u.path.clone().unwrap_or_default(), reason: u.reason.clone() })
                .collect(),
            ..IndexReport::default()
        };
        if changes.is_empty() {
            report.version = self.dataset.version().await?;
            report.duration_ms = started.elapsed().as_millis() as u64;
            return Ok(report);
        }

        let to_index: Vec<(String, u64, String)> = scan
            .files
            .iter()
            .filter(|f| changes.added.binary_search(&f.path).is_ok() || changes.changed.binary_search(&f.path).is_ok())
            .map(|f| (f.path.clone(), f.bytes, f.hash.clone()))
            .collect();
        let chunker = self.chunker.clone();
        let root_buf = root.to_path_buf();
        let (chunked, skipped) = tokio::task::spawn_blocking(move || chunk_files(&chunker, &root_buf, to_index))
            .await
            .map_err(|e| Error::Search(format!("chunking stopped: {e}")))?;
        for s in &skipped {
            tracing::info!(path = %s.path, reason = %s.reason, "not indexed");
        }
        report.files_skipped.extend(skipped);

        let replaced: Vec<String> = changes.changed.iter().chain(&changes.removed).cloned().collect();
        let history = self.dataset.usage_of(project_id, &replaced).await?;
        let chunks: Vec<(Chunk, String)> =
            chunked.into_iter().flat_map(|(hash, chunks)| chunks.into_iter().map(move |c| (c, hash.clone()))).collect();
        let texts: Vec<String> = chunks.iter().map(|(c, _)| embedding_text(c)).collect();
        let mut vectors = Vec::with_capacity(texts.len());
        for slice in texts.chunks(EMBED_SLICE) {
            vectors.extend(self.embedder.embed(slice).await?);
        }
        if vectors.len() != chunks.len() {
            return Err(Error::Search(format!(
                "the embedder returned {} vectors for {} texts",
                vectors.len(),
                chunks.len()
            )));
        }
        let now = chrono_ms();
        let rows: Vec<Row> = chunks
            .into_iter()
            .zip(vectors)
            .map(|((chunk, file_hash), vector)| {
                let (usage_count, success_rate) =
                    history.get(&(chunk.path.clone(), chunk.content_hash.clone())).copied().unwrap_or((0, None));
                file_row(project_id, chunk, file_hash, vector, usage_count, success_rate, now)
            })
            .collect();

        report.files_changed = changes.added.len() + changes.changed.len();
        report.files_removed = changes.removed.len();
        report.chunks_embedded = texts.len();
        report.chunks_added = rows.len();
        let before = self.dataset.count(Some(removal_filter(project_id, &replaced))).await?;
        report.chunks_removed = before;
        self.dataset.replace_files(project_id, &replaced, rows).await?;
        self.dataset.maintain_indexes().await?;
        report.version = self.dataset.version().await?;
        report.duration_ms = started.elapsed().as_millis() as u64;
        Ok(report)
    }
}

/// Reads and chunks each file; returns (file hash, chunks) per indexed file and the skips.
fn chunk_files(
    chunker: &Chunker,
    root: &Path,
    files: Vec<(String, u64, String)>,
) -> (Vec<(String, Vec<Chunk>)>, Vec<SkippedFile>) {
    let max = chunker.limits().max_file_bytes as u64;
    let mut out = Vec::new();
    let mut skipped = Vec::new();
    for (path, bytes, hash) in files {
        if bytes > max {
            skipped.push(SkippedFile {
                path,
                reason: format!("{bytes} bytes is larger than the {max}-byte limit (knowledge.max_file_bytes)"),
            });
            continue;
        }
        let full: PathBuf = root.join(&path);
        let content = match std::fs::read(&full) {
            Ok(c) => c,
            Err(e) => {
                skipped.push(SkippedFile { path, reason: format!("cannot read it: {e}") });
                continue;
            }
        };
        match chunker.chunk(&path, &content) {
            Chunked::Chunks { chunks, fallback } => {
                if let Some(f) = fallback {
                    tracing::debug!(%path, fallback = ?f, "chunked as text");
                }
                out.push((hash, chunks));
            }
            Chunked::Skip { reason } => skipped.push(SkippedFile { path, reason: reason.to_string() }),
        }
    }
    (out, skipped)
}

/// The text a chunk is embedded as: where it is and what it is, then its lines.
pub fn embedding_text(c: &Chunk) -> String {
    let mut t = format!("{} {}", c.path, qualified_symbol(c));
    if let Some(sig) = &c.signature {
        t.push('\n');
        t.push_str(sig);
    }
    t.push('\n');
    t.push_str(&c.content);
    t
}

fn qualified_symbol(c: &Chunk) -> String {
    let mut parts = c.scope.clone();
    parts.extend(c.symbol.clone());
    parts.join("::")
}

fn file_row(
    project_id: &str,
    c: Chunk,
    file_hash: String,
    vector: Vec<f32>,
    usage_count: u64,
    success_rate: Option<f64>,
    now: i64,
) -> Row {
    let symbol = qualified_symbol(&c);
    let text = format!("{} {} {}\n{}", c.path, symbol, c.signature.as_deref().unwrap_or(""), c.content);
    Row {
        id: chunk_id(project_id, &c.path, c.start_line, &c.content_hash),
        project_id: project_id.to_string(),
        path: c.path,
        file_hash,
        language: c.language.to_string(),
        chunk_type: c.kind.as_str().to_string(),
        symbol,
        start_line: c.start_line as u32,
        end_line: c.end_line as u32,
        content: c.content,
        content_hash: c.content_hash,
        text,
        usage_count,
        success_rate,
        updated_at: now,
        meta: String::new(),
        vector,
    }
}

/// A file chunk's id: stable while the chunk's place and content are.
pub(crate) fn chunk_id(project_id: &str, path: &str, start_line: usize, content_hash: &str) -> String {
    let digest = sha256_hex(format!("{project_id}\0{path}\0{start_line}\0{content_hash}").as_bytes());
    digest[..32].to_string()
}

fn removal_filter(project_id: &str, paths: &[String]) -> String {
    if paths.is_empty() {
        return "false".to_string();
    }
    format!("project_id = {} AND path IN ({})", crate::dataset::sql_str(project_id), crate::dataset::sql_list(paths))
}

/// A project id must be a plain name: it goes into filters and ids.
pub(crate) fn check_project_id(project_id: &str) -> Result<()> {
    if project_id.trim().is_empty() {
        return Err(Error::Invalid("project_id: must not be empty".into()));
    }
    if project_id.len() > 200 || project_id.chars().any(char::is_control) {
        return Err(Error::Invalid("project_id: must be at most 200 characters, without control characters".into()));
    }
    Ok(())
}

pub(crate) fn chrono_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or_default()
}
