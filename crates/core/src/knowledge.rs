//! Knowledge: the spec's KnowledgeChunk, the unit the retrieval system stores and returns.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::error::ValidationErrors;
use crate::project::{Framework, Language};
use crate::validate::{Validate, not_blank, opt_in_range};

/// Weight of the newest outcome in the success-rate moving average (the spec's alpha).
pub const SUCCESS_ALPHA: f64 = 0.1;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct KnowledgeChunk {
    pub id: String,
    pub title: String,
    /// At least 10 characters.
    pub content: String,
    /// code, documentation, pattern, example.
    pub chunk_type: String,
    pub category: String,
    pub subcategory: Option<String>,
    pub language: Option<Language>,
    pub framework: Option<Framework>,
    #[serde(default)]
    pub keywords: Vec<String>,
    #[serde(default)]
    pub tags: Vec<String>,
    pub source: String,
    pub source_url: Option<String>,
    pub author: Option<String>,
    /// 0..=1.
    pub quality_score: Option<f64>,
    pub usage_count: u64,
    /// 0..=1.
    pub success_rate: Option<f64>,
    pub embedding: Option<Vec<f32>>,
    pub embedding_model: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub last_used: Option<DateTime<Utc>>,
}

impl KnowledgeChunk {
    /// Records one use: count, timestamp, and an exponential moving average of success.
    pub fn update_usage(&mut self, success: bool, now: DateTime<Utc>) {
        self.usage_count += 1;
        self.last_used = Some(now);
        let outcome = if success { 1.0 } else { 0.0 };
        self.success_rate = Some(match self.success_rate {
            None => outcome,
            Some(rate) => SUCCESS_ALPHA * outcome + (1.0 - SUCCESS_ALPHA) * rate,
        });
    }
}

impl Validate for KnowledgeChunk {
    fn validate(&self) -> Result<(), ValidationErrors> {
        let mut errs = ValidationErrors::default();
        not_blank(&mut errs, "id", &self.id);
        not_blank(&mut errs, "title", &self.title);
        let n = self.content.chars().count();
        if n < 10 {
            errs.push("content", format!("must be at least 10 characters, got {n}"));
        }
        not_blank(&mut errs, "chunk_type", &self.chunk_type);
        not_blank(&mut errs, "category", &self.category);
        not_blank(&mut errs, "source", &self.source);
        opt_in_range(&mut errs, "quality_score", self.quality_score, 0.0, 1.0);
        opt_in_range(&mut errs, "success_rate", self.success_rate, 0.0, 1.0);
        if self.embedding.as_ref().is_some_and(|e| e.iter().any(|x| !x.is_finite())) {
            errs.push("embedding", "must contain only finite numbers");
        }
        errs.into_result()
    }
}

/// What the retrieval system can do, whoever serves it: the knowledge service in this process
/// or over gRPC. Agents hold an `Arc<dyn Knowledge>`.
#[async_trait::async_trait]
pub trait Knowledge: Send + Sync {
    /// Brings the project's chunks in line with the files under `workspace`: changed files are
    /// re-chunked and re-embedded, deleted ones removed, unchanged ones left alone.
    async fn index_workspace(&self, req: IndexRequest) -> Result<IndexReport, KnowledgeError>;
    /// Stores a knowledge chunk (the spec's POST /knowledge); returns its id.
    async fn add_chunk(&self, chunk: KnowledgeChunk) -> Result<String, KnowledgeError>;
    async fn search(&self, req: SearchRequest) -> Result<Vec<SearchHit>, KnowledgeError>;
    /// Whether a chunk with that id existed.
    async fn delete_chunk(&self, id: &str) -> Result<bool, KnowledgeError>;
    async fn stats(&self, project_id: Option<&str>) -> Result<KnowledgeStats, KnowledgeError>;
    /// Retrieves for `req.query`, drops overlapping chunks and packs the rest into
    /// `req.budget_chars`, each labelled with its path and lines and marked untrusted.
    async fn build_context(&self, req: ContextRequest) -> Result<RetrievedContext, KnowledgeError>;
    /// Counts one use of each chunk and folds `success` into its success rate
    /// ([`KnowledgeChunk::update_usage`]).
    async fn record_outcome(&self, chunk_ids: &[String], success: bool) -> Result<(), KnowledgeError>;
}

/// Why a knowledge call failed; `kind` maps onto a gRPC status code.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
#[error("{message}")]
pub struct KnowledgeError {
    pub kind: KnowledgeErrorKind,
    pub message: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KnowledgeErrorKind {
    /// The request is wrong: an empty or oversized query, a bad filter, a missing workspace.
    InvalidArgument,
    /// The dataset and the configuration disagree (another embedding model); needs a re-index.
    FailedPrecondition,
    NotFound,
    /// The service, the dataset or the embedding server cannot be reached now.
    Unavailable,
    Internal,
}

impl KnowledgeError {
    pub fn new(kind: KnowledgeErrorKind, message: impl Into<String>) -> Self {
        Self { kind, message: message.into() }
    }
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(KnowledgeErrorKind::InvalidArgument, message)
    }
    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(KnowledgeErrorKind::Unavailable, message)
    }
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(KnowledgeErrorKind::Internal, message)
    }
}

/// Longest query accepted, bytes; longer ones are refused rather than truncated silently.
pub const MAX_QUERY_BYTES: usize = 8 * 1024;
/// Most hits one search returns.
pub const MAX_SEARCH_LIMIT: usize = 200;

/// Which retrievers a search uses.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SearchMode {
    /// Vector and full-text results fused by reciprocal rank.
    #[default]
    Hybrid,
    Vector,
    /// BM25 over identifier-aware tokens.
    Text,
}

/// Restricts a search; empty fields do not restrict.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct SearchFilter {
    pub project_id: Option<String>,
    pub languages: Vec<String>,
    pub path_prefix: Option<String>,
    /// function, method, class, impl, module, section, text, or a knowledge chunk's type.
    pub chunk_types: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SearchRequest {
    pub query: String,
    pub limit: usize,
    #[serde(default)]
    pub filter: SearchFilter,
    #[serde(default)]
    pub mode: SearchMode,
}

impl SearchRequest {
    pub fn new(query: impl Into<String>, limit: usize) -> Self {
        Self { query: query.into(), limit, filter: SearchFilter::default(), mode: SearchMode::Hybrid }
    }

    /// The request's problems, worded for the caller: a blank or oversized query, a limit of 0
    /// or above [`MAX_SEARCH_LIMIT`], a filter value that is not a plain name.
    pub fn check(&self) -> Result<(), KnowledgeError> {
        if self.query.trim().is_empty() {
            return Err(KnowledgeError::invalid("query: must not be empty; say what to look for"));
        }
        if self.query.len() > MAX_QUERY_BYTES {
            return Err(KnowledgeError::invalid(format!(
                "query: {} bytes is too long; at most {MAX_QUERY_BYTES} bytes (search for the key part)",
                self.query.len()
            )));
        }
        if self.limit == 0 || self.limit > MAX_SEARCH_LIMIT {
            return Err(KnowledgeError::invalid(format!(
                "limit: must be between 1 and {MAX_SEARCH_LIMIT}, got {}",
                self.limit
            )));
        }
        Ok(())
    }
}

/// One retrieved chunk.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SearchHit {
    pub id: String,
    pub project_id: String,
    /// Workspace-relative path; empty for a knowledge chunk added through the API.
    pub path: String,
    pub start_line: u32,
    pub end_line: u32,
    pub language: String,
    pub chunk_type: String,
    /// The function, method, class or heading the chunk holds, with its enclosing scope.
    pub symbol: String,
    pub content: String,
    /// Fused (or single-retriever) score; higher is better.
    pub score: f32,
    pub usage_count: u64,
    pub success_rate: Option<f64>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IndexRequest {
    pub project_id: String,
    /// Directory the service can read (the shared workspace volume in a cluster).
    pub workspace: String,
}

/// A file the indexer left out, and why.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SkippedFile {
    pub path: String,
    pub reason: String,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct IndexReport {
    pub files_seen: usize,
    pub files_changed: usize,
    pub files_removed: usize,
    pub files_skipped: Vec<SkippedFile>,
    pub chunks_added: usize,
    pub chunks_removed: usize,
    /// Texts sent to the embedding model: 0 when nothing changed.
    pub chunks_embedded: usize,
    /// Dataset version after the index (unchanged when nothing changed).
    pub version: u64,
    pub duration_ms: u64,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KnowledgeStats {
    pub chunks: u64,
    pub files: u64,
    pub projects: u64,
    pub embedding_model: String,
    pub dimension: u32,
    pub version: u64,
    /// Whether the vector column has an ANN index (else searches are exact).
    pub ann_index: bool,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ContextRequest {
    pub project_id: String,
    /// When set, the workspace is re-indexed (incrementally) before retrieving.
    pub workspace: Option<String>,
    pub query: String,
    /// Characters the packed context may take (a share of the model's context window).
    pub budget_chars: usize,
    /// Candidates retrieved before de-duplication and packing.
    pub limit: usize,
}

/// Retrieved text ready for a prompt, and the chunks it holds (for [`Knowledge::record_outcome`]).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RetrievedContext {
    pub text: String,
    pub chunk_ids: Vec<String>,
    /// `path:start-end` of each packed chunk, in order.
    pub sources: Vec<String>,
    /// The start of each packed chunk's text ([`EXCERPT_CHARS`] at most), in order.
    #[serde(default)]
    pub excerpts: Vec<String>,
}

/// Characters of a chunk kept as its excerpt in a [`RetrievedContext`].
pub const EXCERPT_CHARS: usize = 400;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usage_updates_follow_the_moving_average() {
        let now = Utc::now();
        let mut c = KnowledgeChunk {
            id: "k1".into(),
            title: "t".into(),
            content: "0123456789".into(),
            chunk_type: "code".into(),
            category: "c".into(),
            subcategory: None,
            language: None,
            framework: None,
            keywords: vec![],
            tags: vec![],
            source: "s".into(),
            source_url: None,
            author: None,
            quality_score: None,
            usage_count: 0,
            success_rate: None,
            embedding: None,
            embedding_model: None,
            created_at: now,
            updated_at: now,
            last_used: None,
        };
        c.update_usage(true, now);
        assert_eq!(c.success_rate, Some(1.0));
        c.update_usage(false, now);
        assert!((c.success_rate.unwrap() - 0.9).abs() < 1e-12);
        assert_eq!(c.usage_count, 2);
        assert_eq!(c.last_used, Some(now));
        assert_eq!(c.validate(), Ok(()));
    }
}
