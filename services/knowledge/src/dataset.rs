//! The LanceDB table of chunks, the only place vectors live. One table, `chunks`, holds every
//! project's code chunks and the knowledge chunks added through the API; its schema metadata
//! records the embedding model and dimension the vectors were made with, and opening it with
//! another model fails with a re-index message instead of mixing vectors.
//!
//! Every write is one LanceDB commit (one new dataset version): a file's chunks are replaced
//! by a single merge-insert that inserts the new rows and deletes the old ones together, so a
//! crash mid-index leaves the previous version whole and readable. Writers are serialised by
//! a lock; readers never wait.
//!
//! A search reads two columns of each row it returns: its id and `hit`, the fields a search
//! returns packed into one JSON value ([`Packed`]). Lance reads each column of a found row on
//! its own, and reading the 17 columns of ten hits was a third of an ANN query's time at 100k
//! chunks (docs/benchmarks.md, section 7). The fields keep their own columns too, for filters,
//! the full-text indexes and the incremental index; a table written before the packed column
//! (schema version 1) gets it when opened, computed from those columns in one commit.
//!
//! Searches are exact (a flat scan of the vectors) until the table passes the configured row
//! count, then an IVF-HNSW-FLAT index is built (an HNSW graph over the vectors themselves, so
//! a search needs no refine step; a table indexed earlier with IVF-HNSW-SQ keeps it and is
//! searched with one); rows added after an index is built are still found, by a flat search
//! over them that LanceDB merges in. Two full-text indexes, over the
//! chunk's text and over its qualified name alone, use Lance's code tokenizer with identifier
//! splitting (`parse_config` and `parseConfig` also index `parse` and `config`), stemming and
//! stop words.

use std::borrow::Cow;
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, PoisonError};

use arrow_array::types::Float32Type;
use arrow_array::{
    Array, FixedSizeListArray, Float32Array, Float64Array, Int64Array, RecordBatch, RecordBatchIterator, StringArray,
    UInt32Array, UInt64Array,
};
use arrow_schema::{DataType, Field, Schema, SchemaRef};
use futures::TryStreamExt;
use lance::dataset::BatchUDF;
use lancedb::DistanceType;
use lancedb::index::scalar::FtsIndexBuilder;
use lancedb::index::vector::{IvfHnswFlatIndexBuilder, IvfHnswSqIndexBuilder};
use lancedb::index::{Index, IndexType};
use lancedb::query::{ExecutableQuery, QueryBase, Select};
use lancedb::table::{NewColumnTransform, OptimizeAction};
use serde::{Deserialize, Serialize};
use tokio::sync::Mutex;

use turbo_core::knowledge::SUCCESS_ALPHA;

use crate::{Error, Result};

const TABLE: &str = "chunks";
const META_MODEL: &str = "turbo.embedding_model";
const META_DIMENSION: &str = "turbo.dimension";
const META_SCHEMA: &str = "turbo.schema_version";
/// 2: the packed `hit` column.
const SCHEMA_VERSION: &str = "2";
/// The column of the fields a search returns, packed ([`Packed`]).
const HIT: &str = "hit";

/// One stored chunk: a piece of a workspace file or a knowledge chunk from the API.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct Row {
    pub id: String,
    /// Empty for shared knowledge.
    pub project_id: String,
    /// Workspace-relative path; empty for an API chunk.
    pub path: String,
    /// Hash of the whole file the chunk came from; empty for an API chunk.
    pub file_hash: String,
    pub language: String,
    pub chunk_type: String,
    /// Scope and name, `Parser::parse`; a heading path for Markdown; the title of an API chunk.
    pub symbol: String,
    pub start_line: u32,
    pub end_line: u32,
    pub content: String,
    pub content_hash: String,
    /// What the full-text index sees: path, symbol, signature and content.
    pub text: String,
    pub usage_count: u64,
    pub success_rate: Option<f64>,
    /// Milliseconds since the Unix epoch.
    pub updated_at: i64,
    /// The API chunk's other fields as JSON; empty for file chunks.
    pub meta: String,
    pub vector: Vec<f32>,
}

/// The full-text indexes: both tokenized for code (identifiers split into their words,
/// stemmed, stop words dropped).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FullText {
    /// Where the chunk is, its qualified name, its signature and its lines.
    Text,
    /// Its qualified name alone (`WalkBuilder::hidden`): a name matching a query's words is
    /// the strongest sign a unit is what was asked for, and in the long text it is one term
    /// among hundreds.
    Symbol,
}

impl FullText {
    fn column(self) -> &'static str {
        match self {
            FullText::Text => "text",
            FullText::Symbol => "symbol",
        }
    }
}

/// A row found by a search, with its rank score (`_distance` for vectors, `_score` for text).
/// A search reads the packed fields of a row ([`Packed`]): the row's `text` is only its first
/// line (path, name and signature, what ranking reads), and a vector search leaves `vector`
/// empty (its score is the cosine distance). [`Dataset::get`] reads whole rows.
#[derive(Clone, Debug, PartialEq)]
pub struct Found {
    pub row: Row,
    pub score: f32,
}

/// How hard an ANN search looks: IVF partitions probed, HNSW candidate list, and the factor
/// of extra candidates re-ranked by their exact distance (0: none, the index's distances
/// stand). A search uses the settings of the index the table has ([`AnnTuning::of`]);
/// `make bench-knowledge` prints the latency and recall@10 against exact search of those and
/// of other settings (docs/benchmarks.md, section 7).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AnnTuning {
    pub nprobes: usize,
    pub ef: usize,
    pub refine_factor: u32,
}

impl AnnTuning {
    /// The settings that reach recall@10 >= 0.95 at 100k chunks through an index of `graph`'s
    /// kind (docs/benchmarks.md, section 7): every partition of a table up to 400k rows (see
    /// [`ROWS_PER_PARTITION`]; probing more partitions than the index has probes them all),
    /// an HNSW candidate list of 400, and for 8-bit codes five times the hits re-ranked by
    /// their exact distance.
    pub fn of(graph: Graph) -> Self {
        match graph {
            Graph::Quantized => Self { nprobes: 4, ef: 400, refine_factor: 5 },
            Graph::Flat => Self { nprobes: 4, ef: 400, refine_factor: 0 },
        }
    }
}

/// What the HNSW graph of an ANN index holds of each vector.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Graph {
    /// 8-bit codes (IVF-HNSW-SQ), four times smaller; exact distances need a refine step,
    /// which reads the vectors from the table. Tables indexed before FLAT was the default
    /// keep it, searched with that step.
    Quantized,
    /// The vectors themselves (IVF-HNSW-FLAT): exact distances without a refine step, about
    /// 1.5 KB per chunk of 384 dimensions. The index the dataset builds.
    #[default]
    Flat,
}

impl Graph {
    /// The graph of a vector index of lance's `kind`: the flat kinds hold the vectors, every
    /// other kind (SQ, PQ, RQ codes, or one this version does not know) is searched with a
    /// refine step, which costs time but never recall.
    fn of(kind: &IndexType) -> Self {
        match kind {
            IndexType::IvfHnswFlat | IndexType::IvfFlat => Graph::Flat,
            _ => Graph::Quantized,
        }
    }
}

/// Rows per IVF partition of the ANN index. Each partition holds an HNSW graph, walked rather
/// than scanned, so a search costs little more in a graph of 100k rows than in one of 300; each
/// probed partition adds a fixed cost. At 100k chunks one partition searched with ef 400
/// reaches recall@10 0.96 in about half the time of 40 probes of lance's default of sqrt(rows)
/// partitions (docs/benchmarks.md, section 7). The count is fixed when the index is built;
/// rows written later are folded into its partitions.
pub const ROWS_PER_PARTITION: usize = 100_000;

/// The IVF partitions of an ANN index over `rows` rows.
pub fn ann_partitions(rows: usize) -> u32 {
    u32::try_from(rows.div_ceil(ROWS_PER_PARTITION).max(1)).unwrap_or(u32::MAX)
}

/// The chunks table and the model its vectors belong to.
pub struct Dataset {
    /// The graph of the table's ANN index, if it has one: read when the table is opened, set
    /// when an index is built (this dataset is the table's only writer). Searches use its
    /// settings.
    graph: std::sync::Mutex<Option<Graph>>,
    table: lancedb::Table,
    model_id: String,
    dimension: usize,
    ann_threshold: usize,
    /// One writer at a time, so read-modify-write steps (usage counts) do not interleave.
    write: Mutex<()>,
}

impl Dataset {
    /// Opens (or creates) the table at `uri` for vectors of `model_id` with `dimension`
    /// values. Fails with [`Error::ModelChanged`] when the table was built with another model.
    pub async fn open(uri: &str, model_id: &str, dimension: usize, ann_threshold: usize) -> Result<Self> {
        let dataset_error = |e: lancedb::Error| Error::Dataset { uri: uri.to_string(), reason: e.to_string() };
        if !uri.contains("://") {
            std::fs::create_dir_all(uri).map_err(|e| Error::Dataset { uri: uri.into(), reason: e.to_string() })?;
        }
        let conn = lancedb::connect(uri).execute().await.map_err(dataset_error)?;
        let names = conn.table_names().execute().await.map_err(dataset_error)?;
        let table = if names.iter().any(|n| n == TABLE) {
            let table = conn.open_table(TABLE).execute().await.map_err(dataset_error)?;
            let schema = table.schema().await.map_err(dataset_error)?;
            let stored_model = schema.metadata.get(META_MODEL).cloned().unwrap_or_default();
            let stored_dim: usize = schema.metadata.get(META_DIMENSION).and_then(|d| d.parse().ok()).unwrap_or(0);
            if stored_model != model_id || stored_dim != dimension {
                return Err(Error::ModelChanged {
                    uri: uri.to_string(),
                    stored: format!("{stored_model} ({stored_dim} dimensions)"),
                    configured: format!("{model_id} ({dimension} dimensions)"),
                });
            }
            if schema.field_with_name(HIT).is_err() {
                add_hit_column(&table).await.map_err(dataset_error)?;
            }
            table
        } else {
            conn.create_empty_table(TABLE, schema(model_id, dimension)).execute().await.map_err(dataset_error)?
        };
        let indices = table.list_indices().await.map_err(dataset_error)?;
        let graph = indices.iter().find(|i| i.columns.iter().any(|c| c == "vector")).map(|i| Graph::of(&i.index_type));
        let dataset = Self {
            table,
            model_id: model_id.to_string(),
            dimension,
            ann_threshold,
            graph: std::sync::Mutex::new(graph),
            write: Mutex::new(()),
        };
        if dataset.table.count_rows(None).await.map_err(dataset_error)? > 0 {
            let _w = dataset.write.lock().await;
            dataset.build_full_text_indexes().await?;
        }
        Ok(dataset)
    }

    /// The graph of the table's ANN index, if it has one.
    pub fn graph(&self) -> Option<Graph> {
        *self.graph.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The settings searches use: those of the table's index (with none, a search is exact
    /// and reads none of them).
    pub fn tuning(&self) -> AnnTuning {
        AnnTuning::of(self.graph().unwrap_or_default())
    }

    /// Up to `limit` rows, in storage order.
    pub async fn sample(&self, limit: usize) -> Result<Vec<Row>> {
        let batches = self.select(ROW_COLUMNS, None, Some(limit)).await?;
        batches.iter().map(|b| rows(b, self.dimension)).collect::<Result<Vec<_>>>().map(|v| v.concat())
    }

    pub fn model_id(&self) -> &str {
        &self.model_id
    }

    pub fn dimension(&self) -> usize {
        self.dimension
    }

    pub async fn version(&self) -> Result<u64> {
        self.table.version().await.map_err(lance_error)
    }

    pub async fn count(&self, filter: Option<String>) -> Result<usize> {
        self.table.count_rows(filter).await.map_err(lance_error)
    }

    /// Path to file hash of a project's file chunks: what the last index saw. A file whose
    /// rows disagree (cannot happen through [`Dataset::replace_files`]) maps to "" so the next
    /// index redoes it.
    pub async fn file_hashes(&self, project_id: &str) -> Result<HashMap<String, String>> {
        let filter = format!("project_id = {} AND path <> ''", sql_str(project_id));
        let batches = self.select(&["path", "file_hash"], Some(filter), None).await?;
        let mut out: HashMap<String, String> = HashMap::new();
        for b in &batches {
            let (paths, hashes) = (strings(b, "path")?, strings(b, "file_hash")?);
            for i in 0..b.num_rows() {
                let (path, hash) = (paths.value(i), hashes.value(i));
                match out.get_mut(path) {
                    Some(seen) if seen != hash => seen.clear(),
                    Some(_) => {}
                    None => {
                        out.insert(path.to_string(), hash.to_string());
                    }
                }
            }
        }
        Ok(out)
    }

    /// Usage count and success rate of a project's chunks in `paths`, by (path, content hash),
    /// so chunks that survive an edit keep their history.
    pub async fn usage_of(
        &self,
        project_id: &str,
        paths: &[String],
    ) -> Result<HashMap<(String, String), (u64, Option<f64>)>> {
        let mut out = HashMap::new();
        if paths.is_empty() {
            return Ok(out);
        }
        let filter = format!("project_id = {} AND path IN ({})", sql_str(project_id), sql_list(paths));
        for b in self.select(&["path", "content_hash", "usage_count", "success_rate"], Some(filter), None).await? {
            let (p, h) = (strings(&b, "path")?, strings(&b, "content_hash")?);
            let counts = column::<UInt64Array>(&b, "usage_count")?;
            let rates = column::<Float64Array>(&b, "success_rate")?;
            for i in 0..b.num_rows() {
                let rate = (!rates.is_null(i)).then(|| rates.value(i));
                out.insert((p.value(i).to_string(), h.value(i).to_string()), (counts.value(i), rate));
            }
        }
        Ok(out)
    }

    /// In one commit: deletes every row of `project_id` whose path is in `replaced` and inserts
    /// `rows`. Does nothing (no new version) when both are empty.
    pub async fn replace_files(&self, project_id: &str, replaced: &[String], rows: Vec<Row>) -> Result<()> {
        if replaced.is_empty() && rows.is_empty() {
            return Ok(());
        }
        let _w = self.write.lock().await;
        let mut merge = self.table.merge_insert(&["id"]);
        merge.when_matched_update_all(None).when_not_matched_insert_all();
        if !replaced.is_empty() {
            merge.when_not_matched_by_source_delete(Some(format!(
                "project_id = {} AND path IN ({})",
                sql_str(project_id),
                sql_list(replaced)
            )));
        }
        let batch = self.batch(&rows)?;
        let schema = batch.schema();
        merge.execute(Box::new(RecordBatchIterator::new([Ok(batch)], schema))).await.map_err(lance_error)?;
        Ok(())
    }

    /// Inserts or replaces rows by id, in one commit.
    pub async fn upsert(&self, rows: Vec<Row>) -> Result<()> {
        self.replace_files("", &[], rows).await
    }

    /// Deletes rows matching `filter`; returns how many went.
    pub async fn delete(&self, filter: &str) -> Result<u64> {
        let _w = self.write.lock().await;
        let before = self.table.count_rows(Some(filter.to_string())).await.map_err(lance_error)?;
        if before == 0 {
            return Ok(0);
        }
        self.table.delete(filter).await.map_err(lance_error)?;
        Ok(before as u64)
    }

    /// Rows by id.
    pub async fn get(&self, ids: &[String]) -> Result<Vec<Row>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let filter = format!("id IN ({})", sql_list(ids));
        let batches = self.select(ROW_COLUMNS, Some(filter), None).await?;
        batches.iter().map(|b| rows(b, self.dimension)).collect::<Result<Vec<_>>>().map(|v| v.concat())
    }

    /// Counts one use of each chunk and folds `success` into its success rate, an exponential
    /// moving average (the spec's alpha, as `KnowledgeChunk::update_usage`), in one commit.
    /// Ids that are not stored (a chunk re-indexed away meanwhile) are skipped.
    pub async fn record_outcome(&self, ids: &[String], success: bool, now_ms: i64) -> Result<()> {
        if ids.is_empty() {
            return Ok(());
        }
        // Read, update and write under the writer lock, so two outcomes never lose one another.
        let _w = self.write.lock().await;
        let mut rows = self.get(ids).await?;
        if rows.is_empty() {
            return Ok(());
        }
        let outcome = if success { 1.0 } else { 0.0 };
        for r in &mut rows {
            r.usage_count += 1;
            r.success_rate = Some(match r.success_rate {
                None => outcome,
                Some(rate) => SUCCESS_ALPHA * outcome + (1.0 - SUCCESS_ALPHA) * rate,
            });
            r.updated_at = now_ms;
        }
        let batch = self.batch(&rows)?;
        let schema = batch.schema();
        let mut merge = self.table.merge_insert(&["id"]);
        merge.when_matched_update_all(None);
        merge.execute(Box::new(RecordBatchIterator::new([Ok(batch)], schema))).await.map_err(lance_error)?;
        Ok(())
    }

    /// The `limit` nearest rows to `vector` by cosine distance (smaller is closer): through
    /// the ANN index when there is one, exact otherwise.
    pub async fn nearest(&self, vector: &[f32], limit: usize, filter: Option<String>) -> Result<Vec<Found>> {
        self.nearest_with(vector, limit, filter, Some(self.tuning())).await
    }

    /// [`Dataset::nearest`] with the ANN index searched as `ann` says, or exact (`None`) even
    /// when there is an index: the reference the index's recall is measured against.
    pub async fn nearest_with(
        &self,
        vector: &[f32],
        limit: usize,
        filter: Option<String>,
        ann: Option<AnnTuning>,
    ) -> Result<Vec<Found>> {
        let q = self.nearest_query(vector, limit, filter, ann, NEAREST_COLUMNS)?;
        let batches: Vec<RecordBatch> =
            q.execute().await.map_err(lance_error)?.try_collect().await.map_err(lance_error)?;
        found(&batches, "_distance", self.dimension)
    }

    /// [`Dataset::nearest_with`] reading each hit's 17 columns rather than the packed one, as
    /// searches did before it: `make bench-knowledge` measures it beside the packed read.
    pub async fn nearest_reading_columns(
        &self,
        vector: &[f32],
        limit: usize,
        ann: Option<AnnTuning>,
    ) -> Result<Vec<Found>> {
        let q = self.nearest_query(vector, limit, None, ann, ROW_COLUMNS)?;
        let batches: Vec<RecordBatch> =
            q.execute().await.map_err(lance_error)?.try_collect().await.map_err(lance_error)?;
        found(&batches, "_distance", self.dimension)
    }

    /// Runs [`Dataset::nearest_with`]'s query and returns lance's account of it: each step of
    /// the plan with its time and rows (`make bench-knowledge` prints it for the ANN query).
    pub async fn analyze_nearest(&self, vector: &[f32], limit: usize, ann: Option<AnnTuning>) -> Result<String> {
        self.nearest_query(vector, limit, None, ann, NEAREST_COLUMNS)?.analyze_plan().await.map_err(lance_error)
    }

    fn nearest_query(
        &self,
        vector: &[f32],
        limit: usize,
        filter: Option<String>,
        ann: Option<AnnTuning>,
        columns: &[&str],
    ) -> Result<lancedb::query::VectorQuery> {
        if vector.len() != self.dimension {
            return Err(Error::Dimension { expected: self.dimension, got: vector.len() });
        }
        let mut q = self
            .table
            .query()
            .nearest_to(vector)
            .map_err(lance_error)?
            .distance_type(DistanceType::Cosine)
            .limit(limit)
            .select(Select::columns(&with_column(columns, "_distance")));
        q = match ann {
            None => q.bypass_vector_index(),
            Some(t) => {
                let q = q.nprobes(t.nprobes).map_err(lance_error)?.ef(t.ef.max(limit));
                if t.refine_factor > 0 { q.refine_factor(t.refine_factor) } else { q }
            }
        };
        if let Some(f) = filter {
            q = q.only_if(f);
        }
        Ok(q)
    }

    /// The `limit` best rows for `query` by BM25 over the full-text index of the chunks' text
    /// (larger is better). Empty until the first rows are written (the index is built with them).
    pub async fn full_text(&self, query: &str, limit: usize, filter: Option<String>) -> Result<Vec<Found>> {
        self.full_text_in(FullText::Text, query, limit, filter).await
    }

    /// As [`Dataset::full_text`], over one of the full-text indexes.
    pub async fn full_text_in(
        &self,
        column: FullText,
        query: &str,
        limit: usize,
        filter: Option<String>,
    ) -> Result<Vec<Found>> {
        let column = column.column();
        if !self.has_index(column).await? {
            return Ok(Vec::new());
        }
        let fts = lancedb::index::scalar::FullTextSearchQuery::new(query.to_string())
            .with_column(column.to_string())
            .map_err(|e| Error::Search(e.to_string()))?;
        let mut q = self
            .table
            .query()
            .full_text_search(fts)
            .limit(limit)
            .select(Select::columns(&with_column(TEXT_COLUMNS, "_score")));
        if let Some(f) = filter {
            q = q.only_if(f);
        }
        let batches: Vec<RecordBatch> =
            q.execute().await.map_err(lance_error)?.try_collect().await.map_err(lance_error)?;
        found(&batches, "_score", self.dimension)
    }

    /// Builds or refreshes the indexes after a write: the full-text index once there are rows
    /// (then compacts and folds new rows in), the ANN index once there are more than the
    /// threshold.
    pub async fn maintain_indexes(&self) -> Result<()> {
        let _w = self.write.lock().await;
        let rows = self.table.count_rows(None).await.map_err(lance_error)?;
        if rows == 0 {
            return Ok(());
        }
        let mut built = self.build_full_text_indexes().await?;
        if rows > self.ann_threshold && !self.has_index("vector").await? {
            tracing::info!(rows, threshold = self.ann_threshold, "building the ANN index of the knowledge vectors");
            self.create_ann_index_with(Graph::default(), ann_partitions(rows)).await?;
            built = true;
        }
        if !built {
            // Merges the small files the writes since the last time left, folds their rows into
            // the indexes, and drops versions older than a week.
            self.table.optimize(OptimizeAction::All).await.map_err(lance_error)?;
        }
        Ok(())
    }

    /// Builds the full-text indexes that are missing (a dataset written before one existed
    /// gets it when opened); whether it built any. The writer lock must be held.
    async fn build_full_text_indexes(&self) -> Result<bool> {
        let indices = self.table.list_indices().await.map_err(lance_error)?;
        let mut built = false;
        for column in [FullText::Text, FullText::Symbol] {
            if !indices.iter().any(|i| i.columns.iter().any(|c| c == column.column())) {
                let params =
                    FtsIndexBuilder::code().split_identifiers(true).stem(true).remove_stop_words(true).lower_case(true);
                let columns = [column.column()];
                self.table.create_index(&columns, Index::FTS(params)).execute().await.map_err(lance_error)?;
                built = true;
            }
        }
        Ok(built)
    }

    /// Builds the ANN index of the vectors (cosine, [`Graph::default`]), replacing any earlier
    /// one: one partition per [`ROWS_PER_PARTITION`] rows.
    pub async fn create_ann_index(&self) -> Result<()> {
        let rows = self.table.count_rows(None).await.map_err(lance_error)?;
        self.create_ann_index_with(Graph::default(), ann_partitions(rows)).await
    }

    /// Builds an ANN index of the vectors (cosine) of `graph`'s kind with `partitions` IVF
    /// partitions, replacing any earlier one.
    pub async fn create_ann_index_with(&self, graph: Graph, partitions: u32) -> Result<()> {
        let partitions = partitions.max(1);
        let index = match graph {
            Graph::Quantized => Index::IvfHnswSq(
                IvfHnswSqIndexBuilder::default().distance_type(DistanceType::Cosine).num_partitions(partitions),
            ),
            Graph::Flat => Index::IvfHnswFlat(
                IvfHnswFlatIndexBuilder::default().distance_type(DistanceType::Cosine).num_partitions(partitions),
            ),
        };
        self.table.create_index(&["vector"], index).execute().await.map_err(lance_error)?;
        *self.graph.lock().unwrap_or_else(PoisonError::into_inner) = Some(graph);
        Ok(())
    }

    pub async fn has_index(&self, column: &str) -> Result<bool> {
        let indices = self.table.list_indices().await.map_err(lance_error)?;
        Ok(indices.iter().any(|i| i.columns.iter().any(|c| c == column)))
    }

    /// Distinct (project, path) pairs and projects among the rows matching `filter`.
    pub async fn distinct_files(&self, filter: Option<String>) -> Result<(u64, u64)> {
        let mut files = HashSet::new();
        let mut projects = HashSet::new();
        for b in self.select(&["project_id", "path"], filter, None).await? {
            let (p, f) = (strings(&b, "project_id")?, strings(&b, "path")?);
            for i in 0..b.num_rows() {
                projects.insert(p.value(i).to_string());
                if !f.value(i).is_empty() {
                    files.insert((p.value(i).to_string(), f.value(i).to_string()));
                }
            }
        }
        Ok((files.len() as u64, projects.len() as u64))
    }

    async fn select(&self, columns: &[&str], filter: Option<String>, limit: Option<usize>) -> Result<Vec<RecordBatch>> {
        let mut q = self.table.query().select(Select::columns(columns));
        if let Some(f) = filter {
            q = q.only_if(f);
        }
        if let Some(n) = limit {
            q = q.limit(n);
        }
        q.execute().await.map_err(lance_error)?.try_collect().await.map_err(lance_error)
    }

    fn batch(&self, rows: &[Row]) -> Result<RecordBatch> {
        if let Some(bad) = rows.iter().find(|r| r.vector.len() != self.dimension) {
            return Err(Error::Dimension { expected: self.dimension, got: bad.vector.len() });
        }
        let s = |f: fn(&Row) -> &str| Arc::new(StringArray::from_iter_values(rows.iter().map(f))) as Arc<dyn Array>;
        let vectors = FixedSizeListArray::from_iter_primitive::<Float32Type, _, _>(
            rows.iter().map(|r| Some(r.vector.iter().copied().map(Some))),
            self.dimension as i32,
        );
        let columns: Vec<Arc<dyn Array>> = vec![
            s(|r| &r.id),
            s(|r| &r.project_id),
            s(|r| &r.path),
            s(|r| &r.file_hash),
            s(|r| &r.language),
            s(|r| &r.chunk_type),
            s(|r| &r.symbol),
            Arc::new(UInt32Array::from_iter_values(rows.iter().map(|r| r.start_line))),
            Arc::new(UInt32Array::from_iter_values(rows.iter().map(|r| r.end_line))),
            s(|r| &r.content),
            s(|r| &r.content_hash),
            s(|r| &r.text),
            Arc::new(UInt64Array::from_iter_values(rows.iter().map(|r| r.usage_count))),
            Arc::new(Float64Array::from_iter(rows.iter().map(|r| r.success_rate))),
            Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.updated_at))),
            s(|r| &r.meta),
            Arc::new(vectors),
            Arc::new(packed(rows)?),
        ];
        RecordBatch::try_new(schema(&self.model_id, self.dimension), columns).map_err(|e| Error::Search(e.to_string()))
    }
}

/// `columns` and a search's scoring column, named so that lance does not add it on its own
/// (which it warns about at every search).
fn with_column<'a>(columns: &[&'a str], scoring: &'a str) -> Vec<&'a str> {
    columns.iter().copied().chain([scoring]).collect()
}

/// What a vector search reads of each hit: its id and packed fields (its distance is its score).
const NEAREST_COLUMNS: &[&str] = &["id", HIT];

/// What a full-text search reads of each hit: the same and the vector, which ranking compares
/// with the query's.
const TEXT_COLUMNS: &[&str] = &["id", HIT, "vector"];

/// The columns of a whole row, in schema order ([`Dataset::get`]).
const ROW_COLUMNS: &[&str] = &[
    "id",
    "project_id",
    "path",
    "file_hash",
    "language",
    "chunk_type",
    "symbol",
    "start_line",
    "end_line",
    "content",
    "content_hash",
    "text",
    "usage_count",
    "success_rate",
    "updated_at",
    "meta",
    "vector",
];

fn schema(model_id: &str, dimension: usize) -> SchemaRef {
    let utf8 = |name: &str| Field::new(name, DataType::Utf8, false);
    let fields = vec![
        utf8("id"),
        utf8("project_id"),
        utf8("path"),
        utf8("file_hash"),
        utf8("language"),
        utf8("chunk_type"),
        utf8("symbol"),
        Field::new("start_line", DataType::UInt32, false),
        Field::new("end_line", DataType::UInt32, false),
        utf8("content"),
        utf8("content_hash"),
        utf8("text"),
        Field::new("usage_count", DataType::UInt64, false),
        Field::new("success_rate", DataType::Float64, true),
        Field::new("updated_at", DataType::Int64, false),
        utf8("meta"),
        Field::new(
            "vector",
            DataType::FixedSizeList(Arc::new(Field::new("item", DataType::Float32, true)), dimension as i32),
            false,
        ),
        hit_field(),
    ];
    let metadata = HashMap::from([
        (META_MODEL.to_string(), model_id.to_string()),
        (META_DIMENSION.to_string(), dimension.to_string()),
        (META_SCHEMA.to_string(), SCHEMA_VERSION.to_string()),
    ]);
    Arc::new(Schema::new_with_metadata(fields, metadata))
}

/// Last in the schema, where adding it to a version 1 table puts it.
fn hit_field() -> Field {
    Field::new(HIT, DataType::Utf8, false)
}

/// What a search returns of a row, packed as JSON into the `hit` column: every field but the
/// id (its own column), the vector, and the full-text line past its first line.
#[derive(Serialize, Deserialize)]
struct Packed<'a> {
    project_id: Cow<'a, str>,
    path: Cow<'a, str>,
    file_hash: Cow<'a, str>,
    language: Cow<'a, str>,
    chunk_type: Cow<'a, str>,
    symbol: Cow<'a, str>,
    start_line: u32,
    end_line: u32,
    content: Cow<'a, str>,
    content_hash: Cow<'a, str>,
    /// The full-text line's first line: path, name and signature.
    head: Cow<'a, str>,
    usage_count: u64,
    success_rate: Option<f64>,
    updated_at: i64,
    meta: Cow<'a, str>,
}

impl<'a> Packed<'a> {
    fn of(r: &'a Row) -> Self {
        Self {
            project_id: Cow::Borrowed(&r.project_id),
            path: Cow::Borrowed(&r.path),
            file_hash: Cow::Borrowed(&r.file_hash),
            language: Cow::Borrowed(&r.language),
            chunk_type: Cow::Borrowed(&r.chunk_type),
            symbol: Cow::Borrowed(&r.symbol),
            start_line: r.start_line,
            end_line: r.end_line,
            content: Cow::Borrowed(&r.content),
            content_hash: Cow::Borrowed(&r.content_hash),
            head: Cow::Borrowed(r.text.lines().next().unwrap_or_default()),
            usage_count: r.usage_count,
            success_rate: r.success_rate,
            updated_at: r.updated_at,
            meta: Cow::Borrowed(&r.meta),
        }
    }

    fn into_row(self, id: String, vector: Vec<f32>) -> Row {
        Row {
            id,
            project_id: self.project_id.into_owned(),
            path: self.path.into_owned(),
            file_hash: self.file_hash.into_owned(),
            language: self.language.into_owned(),
            chunk_type: self.chunk_type.into_owned(),
            symbol: self.symbol.into_owned(),
            start_line: self.start_line,
            end_line: self.end_line,
            content: self.content.into_owned(),
            content_hash: self.content_hash.into_owned(),
            text: self.head.into_owned(),
            usage_count: self.usage_count,
            success_rate: self.success_rate,
            updated_at: self.updated_at,
            meta: self.meta.into_owned(),
            vector,
        }
    }
}

/// The `hit` column of `rows`.
fn packed(rows: &[Row]) -> Result<StringArray> {
    let json = rows.iter().map(|r| serde_json::to_string(&Packed::of(r)));
    json.collect::<std::result::Result<Vec<_>, _>>()
        .map(StringArray::from_iter_values)
        .map_err(|e| Error::Search(format!("packing a row: {e}")))
}

/// Adds the `hit` column to a table written before it (schema version 1), computed from each
/// row's columns in one commit (a crash before it leaves the table as it was, and the next
/// open adds it again); vectors are kept, nothing is embedded again.
async fn add_hit_column(table: &lancedb::Table) -> lancedb::Result<()> {
    let count = table.count_rows(None).await?;
    tracing::info!(rows = count, "adding the packed hit column to the knowledge table (schema version 1 to 2)");
    let output = Arc::new(Schema::new(vec![hit_field()]));
    let schema = output.clone();
    let mapper = move |b: &RecordBatch| -> lance::Result<RecordBatch> {
        let hits = rows(b, 0).and_then(|rows| packed(&rows)).map_err(|e| lance::Error::invalid_input(e.to_string()))?;
        Ok(RecordBatch::try_new(schema.clone(), vec![Arc::new(hits)])?)
    };
    let udf = BatchUDF { mapper: Box::new(mapper), output_schema: output, result_checkpoint: None };
    let read = ROW_COLUMNS.iter().filter(|c| **c != "vector").copied();
    table.add_columns().transform(NewColumnTransform::BatchUDF(udf)).read_columns(read).execute().await?;
    if let Some(native) = table.as_native() {
        // Replaces the whole metadata: the model and dimension go with the new version.
        let mut metadata = table.schema().await?.metadata.clone();
        metadata.insert(META_SCHEMA.to_string(), SCHEMA_VERSION.to_string());
        native.replace_schema_metadata(metadata).await?;
    }
    Ok(())
}

/// The rows of a search's batches with their `score_column`: from the id, `hit` and, when read,
/// the vector; or whole rows when the batches hold [`ROW_COLUMNS`] instead of `hit`.
fn found(batches: &[RecordBatch], score_column: &str, dimension: usize) -> Result<Vec<Found>> {
    let mut out = Vec::new();
    for b in batches {
        let scores = column::<Float32Array>(b, score_column)?;
        let rows = if b.column_by_name(HIT).is_some() { unpacked(b, dimension)? } else { rows(b, dimension)? };
        out.extend(rows.into_iter().zip(scores.values()).map(|(row, &score)| Found { row, score }));
    }
    Ok(out)
}

/// The rows of a batch of ids, `hit` and optionally vectors.
fn unpacked(b: &RecordBatch, dimension: usize) -> Result<Vec<Row>> {
    let (ids, hits) = (strings(b, "id")?, strings(b, HIT)?);
    let mut vectors = vectors(b, dimension)?.map(Vec::into_iter);
    let mut out = Vec::with_capacity(b.num_rows());
    for i in 0..b.num_rows() {
        let packed: Packed = serde_json::from_str(hits.value(i))
            .map_err(|e| Error::Search(format!("the packed fields of chunk {} are unreadable: {e}", ids.value(i))))?;
        let vector = vectors.as_mut().and_then(Iterator::next).unwrap_or_default();
        out.push(packed.into_row(ids.value(i).to_string(), vector));
    }
    Ok(out)
}

/// The batch's vectors, `None` when it holds no vector column.
fn vectors(b: &RecordBatch, dimension: usize) -> Result<Option<Vec<Vec<f32>>>> {
    let Some(list) = b.column_by_name("vector") else { return Ok(None) };
    let list = list.as_any().downcast_ref::<FixedSizeListArray>().ok_or_else(|| bad_column("vector"))?;
    let mut out = Vec::with_capacity(list.len());
    for i in 0..list.len() {
        let v = list.value(i);
        let v = v.as_any().downcast_ref::<Float32Array>().ok_or_else(|| bad_column("vector"))?;
        if v.len() != dimension {
            return Err(Error::Dimension { expected: dimension, got: v.len() });
        }
        out.push(v.values().to_vec());
    }
    Ok(Some(out))
}

/// The whole rows of a batch of [`ROW_COLUMNS`]; without the vector column, rows with empty
/// vectors.
fn rows(b: &RecordBatch, dimension: usize) -> Result<Vec<Row>> {
    let s = |name| strings(b, name);
    let (id, project, path, file_hash, language, chunk_type, symbol, content, content_hash, text, meta) = (
        s("id")?,
        s("project_id")?,
        s("path")?,
        s("file_hash")?,
        s("language")?,
        s("chunk_type")?,
        s("symbol")?,
        s("content")?,
        s("content_hash")?,
        s("text")?,
        s("meta")?,
    );
    let start = column::<UInt32Array>(b, "start_line")?;
    let end = column::<UInt32Array>(b, "end_line")?;
    let usage = column::<UInt64Array>(b, "usage_count")?;
    let rate = column::<Float64Array>(b, "success_rate")?;
    let updated = column::<Int64Array>(b, "updated_at")?;
    let mut vectors = vectors(b, dimension)?.map(Vec::into_iter);
    let mut out = Vec::with_capacity(b.num_rows());
    for i in 0..b.num_rows() {
        out.push(Row {
            id: id.value(i).to_string(),
            project_id: project.value(i).to_string(),
            path: path.value(i).to_string(),
            file_hash: file_hash.value(i).to_string(),
            language: language.value(i).to_string(),
            chunk_type: chunk_type.value(i).to_string(),
            symbol: symbol.value(i).to_string(),
            start_line: start.value(i),
            end_line: end.value(i),
            content: content.value(i).to_string(),
            content_hash: content_hash.value(i).to_string(),
            text: text.value(i).to_string(),
            usage_count: usage.value(i),
            success_rate: (!rate.is_null(i)).then(|| rate.value(i)),
            updated_at: updated.value(i),
            meta: meta.value(i).to_string(),
            vector: vectors.as_mut().and_then(Iterator::next).unwrap_or_default(),
        });
    }
    Ok(out)
}

fn column<'a, T: 'static>(b: &'a RecordBatch, name: &str) -> Result<&'a T> {
    b.column_by_name(name).and_then(|c| c.as_any().downcast_ref::<T>()).ok_or_else(|| bad_column(name))
}

fn strings<'a>(b: &'a RecordBatch, name: &str) -> Result<&'a StringArray> {
    column::<StringArray>(b, name)
}

fn bad_column(name: &str) -> Error {
    Error::Search(format!("the dataset's column `{name}` is missing or of another type"))
}

fn lance_error(e: lancedb::Error) -> Error {
    Error::Search(e.to_string())
}

/// A SQL string literal: single quotes doubled.
pub(crate) fn sql_str(value: &str) -> String {
    format!("'{}'", value.replace('\'', "''"))
}

pub(crate) fn sql_list(values: &[String]) -> String {
    values.iter().map(|v| sql_str(v)).collect::<Vec<_>>().join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    const DIM: usize = 4;

    fn sample_rows() -> Vec<Row> {
        (0..4u32)
            .map(|i| Row {
                id: format!("r{i}"),
                project_id: "p".into(),
                path: format!("src/f{i}.rs"),
                file_hash: format!("file{i}"),
                language: "rust".into(),
                chunk_type: "function".into(),
                symbol: format!("parse_number_{i}"),
                start_line: 1 + i,
                end_line: 3 + i,
                content: format!("fn parse_number_{i}(s: &str) -> u32 {{\n    s.len() as u32 + {i}\n}}"),
                content_hash: format!("content{i}"),
                text: format!("src/f{i}.rs parse_number_{i} fn parse_number_{i}(s: &str) -> u32\nfn parse_number_{i}"),
                usage_count: u64::from(i),
                success_rate: (i % 2 == 1).then_some(0.25 * f64::from(i)),
                updated_at: 1_700_000_000_000 + i64::from(i),
                meta: if i == 3 { r#"{"category":"\"quoted\" \u{1F600}"}"#.into() } else { String::new() },
                vector: (0..DIM).map(|d| if d == i as usize { 1.0 } else { 0.1 }).collect(),
            })
            .collect()
    }

    /// What a search returns of a row: its full-text line's first line and, from a vector
    /// search, no vector.
    fn as_found(r: &Row, keep_vector: bool) -> Row {
        let text = r.text.lines().next().unwrap().to_string();
        Row { text, vector: if keep_vector { r.vector.clone() } else { Vec::new() }, ..r.clone() }
    }

    async fn check_searches(ds: &Dataset, rows: &[Row]) {
        let hits = ds.nearest(&rows[2].vector, 2, None).await.unwrap();
        assert_eq!(hits[0].row, as_found(&rows[2], false));
        assert!(hits[0].score.abs() < 1e-6, "{}", hits[0].score);
        let hits = ds.full_text("parse_number_3", 2, None).await.unwrap();
        assert_eq!(hits[0].row, as_found(&rows[3], true), "{hits:#?}");
        assert_eq!(ds.get(&["r1".into()]).await.unwrap(), [rows[1].clone()], "get reads whole rows");
    }

    #[tokio::test]
    async fn searches_read_the_packed_fields_of_each_hit() {
        let dir = tempfile::tempdir().unwrap();
        let ds = Dataset::open(dir.path().to_str().unwrap(), "m", DIM, usize::MAX).await.unwrap();
        let rows = sample_rows();
        ds.upsert(rows.clone()).await.unwrap();
        ds.maintain_indexes().await.unwrap();
        check_searches(&ds, &rows).await;
        // A use of a chunk reaches what searches read of it.
        ds.record_outcome(&["r2".into()], true, 5).await.unwrap();
        let hit = ds.nearest(&rows[2].vector, 1, None).await.unwrap().remove(0).row;
        assert_eq!((hit.usage_count, hit.success_rate, hit.updated_at), (3, Some(1.0), 5));
        // Through an HNSW graph over the vectors themselves, with no refine step.
        ds.create_ann_index_with(Graph::Flat, 1).await.unwrap();
        assert!(ds.has_index("vector").await.unwrap());
        let graph = Some(AnnTuning { nprobes: 1, ef: 10, refine_factor: 0 });
        let hits = ds.nearest_with(&rows[1].vector, 1, None, graph).await.unwrap();
        assert_eq!(hits[0].row.id, "r1", "{hits:#?}");
        assert!(hits[0].score.abs() < 1e-5, "{}", hits[0].score);
    }

    #[tokio::test]
    async fn searches_use_the_settings_of_the_index_the_table_has() {
        let dir = tempfile::tempdir().unwrap();
        let uri = dir.path().to_str().unwrap();
        let rows = sample_rows();
        // Whether lance re-ranks the index's candidates by their exact distance: the refine
        // step, which reads their vectors from the table.
        let refines = |plan: &str| plan.contains("KNNVectorDistance");
        let ds = Dataset::open(uri, "m", DIM, 2).await.unwrap();
        assert_eq!(ds.graph(), None);
        ds.upsert(rows.clone()).await.unwrap();
        // Past the threshold of 2 rows: the default index, an HNSW graph of the vectors.
        ds.maintain_indexes().await.unwrap();
        assert_eq!(ds.graph(), Some(Graph::Flat));
        assert_eq!(ds.tuning().refine_factor, 0);
        let plan = ds.analyze_nearest(&rows[1].vector, 2, Some(ds.tuning())).await.unwrap();
        assert!(plan.contains("ANNSubIndex") && !refines(&plan), "{plan}");
        check_searches(&ds, &rows).await;

        // A table indexed with 8-bit codes, as tables were before, is searched with a refine
        // step, also once opened again.
        ds.create_ann_index_with(Graph::Quantized, 1).await.unwrap();
        assert_eq!(ds.tuning(), AnnTuning::of(Graph::Quantized));
        drop(ds);
        let ds = Dataset::open(uri, "m", DIM, 2).await.unwrap();
        assert_eq!(ds.graph(), Some(Graph::Quantized));
        let plan = ds.analyze_nearest(&rows[1].vector, 2, Some(ds.tuning())).await.unwrap();
        assert!(plan.contains("ANNSubIndex") && refines(&plan), "{plan}");
        check_searches(&ds, &rows).await;
        ds.create_ann_index().await.unwrap();
        drop(ds);
        let ds = Dataset::open(uri, "m", DIM, 2).await.unwrap();
        assert_eq!(ds.graph(), Some(Graph::Flat));
    }

    #[tokio::test]
    async fn a_table_written_before_the_packed_column_gets_it_when_opened() {
        let dir = tempfile::tempdir().unwrap();
        let uri = dir.path().join("v1");
        let uri = uri.to_str().unwrap();
        let rows = sample_rows();
        // A version 1 table: today's columns but `hit`, and schema version 1.
        let current = Dataset::open(dir.path().join("v2").to_str().unwrap(), "m", DIM, usize::MAX).await.unwrap();
        let batch = current.batch(&rows).unwrap();
        let keep: Vec<usize> = (0..batch.num_columns()).filter(|&i| batch.schema().field(i).name() != HIT).collect();
        let batch = batch.project(&keep).unwrap();
        let mut metadata = batch.schema().metadata().clone();
        metadata.insert(META_SCHEMA.into(), "1".into());
        let v1 = Arc::new(Schema::new_with_metadata(batch.schema().fields().clone(), metadata));
        let batch = RecordBatch::try_new(v1, batch.columns().to_vec()).unwrap();
        let conn = lancedb::connect(uri).execute().await.unwrap();
        let table = conn.create_table(TABLE, batch).execute().await.unwrap();
        let before = table.version().await.unwrap();

        let ds = Dataset::open(uri, "m", DIM, usize::MAX).await.unwrap();
        let schema = ds.table.schema().await.unwrap();
        assert!(schema.field_with_name(HIT).is_ok(), "{schema:?}");
        assert_eq!(schema.metadata.get(META_SCHEMA).map(String::as_str), Some(SCHEMA_VERSION));
        assert_eq!(ds.count(None).await.unwrap(), rows.len(), "every row kept");
        check_searches(&ds, &rows).await;
        // Opened again, nothing more is written; later writes carry the packed column.
        let migrated = ds.version().await.unwrap();
        assert!(migrated > before);
        drop(ds);
        let ds = Dataset::open(uri, "m", DIM, usize::MAX).await.unwrap();
        assert_eq!(ds.version().await.unwrap(), migrated);
        let mut changed = rows[0].clone();
        changed.content = "fn parse_number_0() {}".into();
        ds.upsert(vec![changed.clone()]).await.unwrap();
        let hits = ds.nearest(&changed.vector, 1, None).await.unwrap();
        assert_eq!(hits[0].row, as_found(&changed, false));
    }
}
