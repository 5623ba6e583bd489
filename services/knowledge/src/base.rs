//! [`KnowledgeBase`]: the [`Knowledge`] API over the LanceDB dataset and an embedding model.
//! The service serves it over gRPC and NATS; the one-process mode calls it directly.

use std::path::Path;
use std::sync::Arc;

use tokio::sync::Mutex;
use turbo_core::Validate;
use turbo_core::knowledge::{
    ContextRequest, IndexReport, IndexRequest, Knowledge, KnowledgeChunk, KnowledgeError, KnowledgeStats,
    MAX_QUERY_BYTES, RetrievedContext, SearchFilter, SearchHit, SearchMode, SearchRequest,
};

use crate::dataset::{Dataset, Row, sql_str};
use crate::embed::{self, Embedder};
use crate::index::{Indexer, check_project_id, chrono_ms};
use crate::{Chunker, Error, Limits, Result, context, search};

/// How long a context build may spend indexing before it searches: a few slices of embedding
/// on a CPU, a small share of a model call.
pub const CONTEXT_INDEX_BUDGET: std::time::Duration = std::time::Duration::from_secs(15);

/// Chunk types of knowledge added through the API (the spec's KnowledgeChunk.chunk_type) are
/// free text; file chunks use [`crate::ChunkKind`] names.
pub struct KnowledgeBase {
    dataset: Arc<Dataset>,
    embedder: Arc<dyn Embedder>,
    indexer: Indexer,
    /// One index run at a time: two runs of one project would both see the same changes.
    indexing: Mutex<()>,
}

impl KnowledgeBase {
    /// Opens the configured dataset with the configured embedder. Fails when the model
    /// directory is missing, the embedding server cannot be reached, or the dataset was built
    /// with another model.
    pub async fn open(config: &turbo_config::Config) -> Result<Self> {
        let k = &config.knowledge;
        let embedder = embed::from_config(k, &config.store, &config.models.coder).await?;
        let limits = Limits { max_file_bytes: k.max_file_bytes as usize, ..Limits::default() };
        Self::with_embedder(&k.dataset_uri(&config.store), embedder, k.ann_threshold, limits).await
    }

    pub async fn with_embedder(
        uri: &str,
        embedder: Arc<dyn Embedder>,
        ann_threshold: usize,
        limits: Limits,
    ) -> Result<Self> {
        let dataset = Arc::new(Dataset::open(uri, embedder.model_id(), embedder.dimension(), ann_threshold).await?);
        let indexer = Indexer { dataset: dataset.clone(), embedder: embedder.clone(), chunker: Chunker::new(limits) };
        Ok(Self { dataset, embedder, indexer, indexing: Mutex::new(()) })
    }

    pub fn dataset(&self) -> &Dataset {
        &self.dataset
    }

    pub fn embedder(&self) -> &Arc<dyn Embedder> {
        &self.embedder
    }

    #[cfg(test)]
    pub(crate) fn indexer(&self) -> &Indexer {
        &self.indexer
    }

    async fn index(&self, req: &IndexRequest) -> Result<IndexReport> {
        let _one = self.indexing.lock().await;
        let root = Path::new(&req.workspace);
        if !root.is_absolute() {
            return Err(Error::Invalid(format!(
                "workspace: '{}' must be an absolute path the knowledge service can read",
                req.workspace
            )));
        }
        self.indexer.index(&req.project_id, root).await
    }

    /// Brings the workspace's chunks up to date before a context search, within
    /// [`CONTEXT_INDEX_BUDGET`]: a large repository seen for the first time is indexed over
    /// several context builds, each searching what is indexed so far, instead of holding the
    /// agent for minutes. Behind another index run, it searches what is there.
    async fn index_for_context(&self, project_id: &str, workspace: &str) -> Result<()> {
        let deadline = tokio::time::Instant::now() + CONTEXT_INDEX_BUDGET;
        let Ok(_one) = tokio::time::timeout_at(deadline, self.indexing.lock()).await else {
            tracing::info!(project_id, "another index run is going on: searching what is indexed");
            return Ok(());
        };
        let root = Path::new(workspace);
        if !root.is_absolute() {
            return Err(Error::Invalid(format!(
                "workspace: '{workspace}' must be an absolute path the knowledge service can read"
            )));
        }
        self.indexer.index_until(project_id, root, Some(deadline)).await?;
        Ok(())
    }

    async fn add(&self, chunk: KnowledgeChunk) -> Result<String> {
        chunk.validate().map_err(|e| Error::Invalid(e.to_string()))?;
        let vector = match (&chunk.embedding, &chunk.embedding_model) {
            (Some(v), Some(model)) if model == self.embedder.model_id() => {
                if v.len() != self.dataset.dimension() {
                    return Err(Error::Dimension { expected: self.dataset.dimension(), got: v.len() });
                }
                v.clone()
            }
            (Some(_), model) => {
                return Err(Error::Invalid(format!(
                    "embedding: made with {}, but this knowledge base uses {}; omit the embedding and the service computes it",
                    model.as_deref().unwrap_or("an unnamed model"),
                    self.embedder.model_id()
                )));
            }
            (None, _) => {
                let text = format!("{}\n{}", chunk.title, chunk.content);
                self.embedder
                    .embed(&[text])
                    .await?
                    .pop()
                    .ok_or_else(|| Error::Search("the embedder returned no vector".into()))?
            }
        };
        let mut meta = chunk.clone();
        meta.content.clear();
        meta.embedding = None;
        let language = chunk
            .language
            .map(|l| serde_json::to_value(l).ok().and_then(|v| v.as_str().map(str::to_lowercase)).unwrap_or_default())
            .unwrap_or_default();
        let text = format!("{} {} {}\n{}", chunk.title, chunk.keywords.join(" "), chunk.tags.join(" "), chunk.content);
        let row = Row {
            id: chunk.id.clone(),
            project_id: String::new(),
            path: String::new(),
            file_hash: String::new(),
            language,
            chunk_type: chunk.chunk_type.clone(),
            symbol: chunk.title.clone(),
            start_line: 0,
            end_line: 0,
            content_hash: crate::sha256_hex(chunk.content.as_bytes()),
            content: chunk.content,
            text,
            usage_count: chunk.usage_count,
            success_rate: chunk.success_rate,
            updated_at: chrono_ms(),
            meta: serde_json::to_string(&meta).map_err(|e| Error::Search(e.to_string()))?,
            vector,
        };
        self.dataset.upsert(vec![row]).await?;
        self.dataset.maintain_indexes().await?;
        Ok(chunk.id)
    }

    async fn run_search(&self, req: &SearchRequest) -> Result<Vec<SearchHit>> {
        req.check().map_err(|e| Error::Invalid(e.message))?;
        search::search(&self.dataset, self.embedder.as_ref(), req).await
    }

    async fn context(&self, req: ContextRequest) -> Result<RetrievedContext> {
        check_project_id(&req.project_id)?;
        if let Some(ws) = &req.workspace {
            self.index_for_context(&req.project_id, ws).await?;
        }
        let query = clip_bytes(&req.query, MAX_QUERY_BYTES);
        if query.trim().is_empty() || req.budget_chars == 0 {
            return Ok(RetrievedContext::default());
        }
        let search = SearchRequest {
            query: query.to_string(),
            limit: req.limit.clamp(1, turbo_core::knowledge::MAX_SEARCH_LIMIT),
            filter: SearchFilter { project_id: Some(req.project_id.clone()), ..SearchFilter::default() },
            mode: SearchMode::Hybrid,
        };
        let hits = self.run_search(&search).await?;
        Ok(context::pack(&hits, req.budget_chars))
    }

    async fn stats_of(&self, project_id: Option<&str>) -> Result<KnowledgeStats> {
        let filter = match project_id {
            Some(p) => {
                check_project_id(p)?;
                Some(format!("project_id = {}", sql_str(p)))
            }
            None => None,
        };
        let chunks = self.dataset.count(filter.clone()).await? as u64;
        let (files, projects) = self.dataset.distinct_files(filter).await?;
        Ok(KnowledgeStats {
            chunks,
            files,
            projects,
            embedding_model: self.embedder.model_id().to_string(),
            dimension: self.dataset.dimension() as u32,
            version: self.dataset.version().await?,
            ann_index: self.dataset.has_index("vector").await?,
        })
    }
}

/// The longest prefix of `s` of at most `max` bytes that ends on a character boundary.
fn clip_bytes(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

#[async_trait::async_trait]
impl Knowledge for KnowledgeBase {
    async fn index_workspace(&self, req: IndexRequest) -> std::result::Result<IndexReport, KnowledgeError> {
        Ok(self.index(&req).await?)
    }

    async fn add_chunk(&self, chunk: KnowledgeChunk) -> std::result::Result<String, KnowledgeError> {
        Ok(self.add(chunk).await?)
    }

    async fn search(&self, req: SearchRequest) -> std::result::Result<Vec<SearchHit>, KnowledgeError> {
        Ok(self.run_search(&req).await?)
    }

    async fn delete_chunk(&self, id: &str) -> std::result::Result<bool, KnowledgeError> {
        if id.trim().is_empty() {
            return Err(KnowledgeError::invalid("id: must not be empty"));
        }
        let n = self.dataset.delete(&format!("id = {}", sql_str(id))).await.map_err(KnowledgeError::from)?;
        Ok(n > 0)
    }

    async fn stats(&self, project_id: Option<&str>) -> std::result::Result<KnowledgeStats, KnowledgeError> {
        Ok(self.stats_of(project_id).await?)
    }

    async fn build_context(&self, req: ContextRequest) -> std::result::Result<RetrievedContext, KnowledgeError> {
        Ok(self.context(req).await?)
    }

    async fn record_outcome(&self, chunk_ids: &[String], success: bool) -> std::result::Result<(), KnowledgeError> {
        Ok(self.dataset.record_outcome(chunk_ids, success, chrono_ms()).await?)
    }
}
