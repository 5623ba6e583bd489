//! Incremental indexing of a workspace: walk and hash the files, compare with the hashes the
//! dataset holds for the project, chunk and embed only added and changed files, and write the
//! new chunks and drop the old (changed and deleted files), a slice of files per commit, so an
//! index with a deadline (the agents' context builds) can stop between slices. A re-index of an
//! unchanged tree reads and hashes the files and does nothing else: no chunking, no embedding,
//! no new dataset version.
//!
//! Files the chunker skips (binaries, invalid UTF-8, minified or oversized files) and files
//! that cannot be read are listed in the report with the reason, and logged.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio::time::Instant;

use turbo_core::knowledge::{IndexReport, SkippedFile};

use crate::dataset::{Dataset, Row};
use crate::embed::Embedder;
use crate::{Chunk, Chunked, Chunker, Error, Result, sha256_hex};

/// Chunks embedded per model call and written per commit (whole files: a slice holds at least
/// one file), so memory stays bounded on a large tree and a deadline is checked every few
/// seconds of embedding.
const EMBED_SLICE: usize = 128;

/// Indexes workspaces into a [`Dataset`].
#[derive(Clone)]
pub struct Indexer {
    pub dataset: Arc<Dataset>,
    pub embedder: Arc<dyn Embedder>,
    pub chunker: Chunker,
}

/// How far an index run got.
#[derive(Debug)]
pub struct Indexed {
    pub report: IndexReport,
    /// Changed files left for the next run because the deadline passed (0: the dataset matches
    /// the workspace).
    pub files_pending: usize,
}

impl Indexer {
    /// Brings `project_id`'s chunks in line with the files under `root`.
    pub async fn index(&self, project_id: &str, root: &Path) -> Result<IndexReport> {
        Ok(self.index_until(project_id, root, None).await?.report)
    }

    /// [`Indexer::index`]; with a `deadline`, committing the changed files a slice at a time
    /// and stopping after the slice during which it passes: each commit is whole (a file's old
    /// chunks go with its new ones), so what is left is indexed by the next run, and searches
    /// meanwhile see every file either as it was or as it is. Without one, the run is a single
    /// commit: a failure leaves the dataset as it was.
    pub async fn index_until(&self, project_id: &str, root: &Path, deadline: Option<Instant>) -> Result<Indexed> {
        let started = Instant::now();
        check_project_id(project_id)?;
        let root_buf = root.to_path_buf();
        let scan = tokio::task::spawn_blocking(move || crate::scan(&root_buf))
            .await
            .map_err(|e| Error::Search(format!("the workspace walk stopped: {e}")))??;
        let stored = self.dataset.file_hashes(project_id).await?;
        let current = scan.hashes().into_iter().map(|(path, hash)| (path, versioned(&hash))).collect();
        let changes = crate::diff(&stored, &current);
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
            return Ok(Indexed { report, files_pending: 0 });
        }

        let to_index: Vec<(String, u64, String)> = scan
            .files
            .iter()
            .filter(|f| changes.added.binary_search(&f.path).is_ok() || changes.changed.binary_search(&f.path).is_ok())
            .map(|f| (f.path.clone(), f.bytes, versioned(&f.hash)))
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
        // Removed files go with the first commit; each slice of files replaces their rows.
        let mut gone: Vec<String> = changes.removed.clone();
        report.files_removed = gone.len();
        let mut files = chunked.into_iter().peekable();
        let mut files_pending = 0;
        let mut uncommitted: (Vec<String>, Vec<Row>) = (Vec::new(), Vec::new());
        while files.peek().is_some() || !gone.is_empty() {
            if deadline.is_some_and(|d| Instant::now() >= d) {
                files_pending = files.count();
                break;
            }
            let mut paths = std::mem::take(&mut gone);
            let mut chunks: Vec<(Chunk, String)> = Vec::new();
            while let Some((_, _, next)) = files.peek()
                && (chunks.is_empty() || chunks.len() + next.len() <= EMBED_SLICE)
            {
                let Some((path, hash, file_chunks)) = files.next() else { break };
                paths.push(path);
                report.files_changed += 1;
                chunks.extend(file_chunks.into_iter().map(|c| (c, hash.clone())));
            }
            let texts: Vec<String> = chunks.iter().map(|(c, _)| embedding_text(c)).collect();
            let vectors = self.embedder.embed(&texts).await?;
            if vectors.len() != chunks.len() {
                let (got, want) = (vectors.len(), chunks.len());
                return Err(Error::Search(format!("the embedder returned {got} vectors for {want} texts")));
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
            report.chunks_embedded += texts.len();
            report.chunks_added += rows.len();
            uncommitted.0.extend(paths);
            uncommitted.1.extend(rows);
            // With a deadline each slice is committed, so the time spent is kept; without one
            // the run is one commit, all or nothing.
            if deadline.is_some() {
                self.commit(project_id, &mut report, std::mem::take(&mut uncommitted)).await?;
            }
        }
        self.commit(project_id, &mut report, uncommitted).await?;
        self.dataset.maintain_indexes().await?;
        report.version = self.dataset.version().await?;
        report.duration_ms = started.elapsed().as_millis() as u64;
        if files_pending > 0 {
            tracing::info!(project_id, files_pending, "indexing goes on at the next run: its time was up");
        }
        Ok(Indexed { report, files_pending })
    }

    /// Replaces the rows of `paths` by `rows` in one commit, counting the rows it removes.
    async fn commit(
        &self,
        project_id: &str,
        report: &mut IndexReport,
        (paths, rows): (Vec<String>, Vec<Row>),
    ) -> Result<()> {
        if paths.is_empty() {
            return Ok(());
        }
        report.chunks_removed += self.dataset.count(Some(removal_filter(project_id, &paths))).await?;
        self.dataset.replace_files(project_id, &paths, rows).await
    }
}

/// A file read and chunked: its path, its content hash, its chunks.
type ChunkedFile = (String, String, Vec<Chunk>);

/// Reads and chunks each file; returns the indexed files and the skips.
fn chunk_files(
    chunker: &Chunker,
    root: &Path,
    files: Vec<(String, u64, String)>,
) -> (Vec<ChunkedFile>, Vec<SkippedFile>) {
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
                out.push((path, hash, chunks));
            }
            Chunked::Skip { reason } => skipped.push(SkippedFile { path, reason: reason.to_string() }),
        }
    }
    (out, skipped)
}

/// The version of [`embedding_text`]'s format, kept in each file's stored hash: a file indexed
/// with another format counts as changed, so its chunks are embedded again at the next index.
pub const TEXT_FORMAT: &str = "t2";

/// A file's content hash as stored: with the [`TEXT_FORMAT`] its vectors were made with.
pub fn versioned(hash: &str) -> String {
    format!("{TEXT_FORMAT}:{hash}")
}

/// The text a chunk is embedded as: what it is in words (its qualified name with identifiers
/// split, `WalkBuilder::hidden` as "walk builder hidden"), its kind and file, then its lines.
/// A sentence model reads words: split names match a query's wording where `WalkBuilder`
/// would be word pieces. The lines begin with the signature, so it is not repeated.
pub fn embedding_text(c: &Chunk) -> String {
    let mut t = identifier_words(&qualified_symbol(c));
    if !t.is_empty() {
        t.push_str(&format!(" ({}) in ", c.kind.as_str()));
    }
    t.push_str(&c.path);
    t.push('\n');
    t.push_str(&c.content);
    t
}

/// Identifiers as lowercase words: `snake_case`, `camelCase`, `HTTPServer` and `a::b` apart.
pub fn identifier_words(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 8);
    let chars: Vec<char> = text.chars().collect();
    for (i, &ch) in chars.iter().enumerate() {
        if !ch.is_alphanumeric() {
            if !out.ends_with(' ') && !out.is_empty() {
                out.push(' ');
            }
            continue;
        }
        let prev = i.checked_sub(1).map(|j| chars[j]);
        let next = chars.get(i + 1);
        let boundary = ch.is_uppercase()
            && prev.is_some_and(|p| {
                p.is_lowercase() || p.is_ascii_digit() || (p.is_uppercase() && next.is_some_and(|n| n.is_lowercase()))
            });
        if boundary && !out.ends_with(' ') {
            out.push(' ');
        }
        out.extend(ch.to_lowercase());
    }
    out.trim_end().to_string()
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

#[cfg(test)]
mod tests {
    use super::identifier_words;

    #[test]
    fn identifiers_become_words() {
        assert_eq!(identifier_words("WalkBuilder::hidden"), "walk builder hidden");
        assert_eq!(identifier_words("parse_config"), "parse config");
        assert_eq!(identifier_words("HTTPServer::get_URL2Path"), "http server get url2 path");
        assert_eq!(identifier_words("impl fmt::Display for Point"), "impl fmt display for point");
        assert_eq!(identifier_words(""), "");
    }
}
