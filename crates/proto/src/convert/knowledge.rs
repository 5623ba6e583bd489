//! `KnowledgeChunk`, the requests and answers of `turbo_core::knowledge::Knowledge`, and the
//! one mapping between [`KnowledgeError`] and a gRPC status, both ways.
//!
//! Wire compatibility: a [`pb::SearchRequest`] of an older client may carry one `language`
//! (an enum) and one `chunk_type`; they are folded into `languages` and `chunk_types`. A limit
//! of 0 means [`DEFAULT_SEARCH_LIMIT`] and an unspecified mode means hybrid, as the proto
//! documents. Counts travel as `uint64`/`uint32` and saturate when a platform's `usize` is
//! smaller, which no real count reaches.

use turbo_core::knowledge::{
    ContextRequest, IndexReport, IndexRequest, KnowledgeChunk, KnowledgeError, KnowledgeErrorKind, KnowledgeStats,
    RetrievedContext, SearchFilter, SearchHit, SearchMode, SearchRequest, SkippedFile,
};
use turbo_core::project::Language;

use super::enums::opt_enum_from_proto;
use super::{ProtoEnum, duration_to_proto, opt_timestamp, req_duration, req_timestamp, timestamp_to_proto, validated};
use crate::Error;
use crate::knowledge::v1 as pb;

/// Hits a search returns when its request says `limit: 0`.
pub const DEFAULT_SEARCH_LIMIT: usize = 10;

/// The `google.rpc.ErrorInfo` domain of the reasons knowledge statuses carry.
pub const KNOWLEDGE_ERROR_DOMAIN: &str = "turbo.knowledge.v1";

impl From<KnowledgeChunk> for pb::KnowledgeChunk {
    fn from(k: KnowledgeChunk) -> Self {
        pb::KnowledgeChunk {
            id: k.id,
            title: k.title,
            content: k.content,
            chunk_type: k.chunk_type,
            category: k.category,
            subcategory: k.subcategory,
            language: k.language.map(ProtoEnum::to_proto),
            framework: k.framework.map(ProtoEnum::to_proto),
            keywords: k.keywords,
            tags: k.tags,
            source: k.source,
            source_url: k.source_url,
            author: k.author,
            quality_score: k.quality_score,
            usage_count: k.usage_count,
            success_rate: k.success_rate,
            embedding: k.embedding.map(|values| pb::Embedding { values }),
            embedding_model: k.embedding_model,
            created_at: Some(timestamp_to_proto(k.created_at)),
            updated_at: Some(timestamp_to_proto(k.updated_at)),
            last_used: k.last_used.map(timestamp_to_proto),
        }
    }
}

impl TryFrom<pb::KnowledgeChunk> for KnowledgeChunk {
    type Error = Error;

    fn try_from(k: pb::KnowledgeChunk) -> Result<Self, Error> {
        validated(KnowledgeChunk {
            id: k.id,
            title: k.title,
            content: k.content,
            chunk_type: k.chunk_type,
            category: k.category,
            subcategory: k.subcategory,
            language: opt_enum_from_proto("language", k.language)?,
            framework: opt_enum_from_proto("framework", k.framework)?,
            keywords: k.keywords,
            tags: k.tags,
            source: k.source,
            source_url: k.source_url,
            author: k.author,
            quality_score: k.quality_score,
            usage_count: k.usage_count,
            success_rate: k.success_rate,
            embedding: k.embedding.map(|e| e.values),
            embedding_model: k.embedding_model,
            created_at: req_timestamp("created_at", k.created_at)?,
            updated_at: req_timestamp("updated_at", k.updated_at)?,
            last_used: opt_timestamp("last_used", k.last_used)?,
        })
    }
}

/// The chunk of an AddChunk request, validated; `project_id` must be absent (chunks added
/// through the API are shared knowledge).
impl TryFrom<pb::AddChunkRequest> for KnowledgeChunk {
    type Error = Error;

    fn try_from(req: pb::AddChunkRequest) -> Result<Self, Error> {
        if let Some(project) = req.project_id {
            return Err(invalid(
                "project_id",
                format!(
                    "'{project}': chunks added through the API are shared by every project; leave project_id unset"
                ),
            ));
        }
        KnowledgeChunk::try_from(super::required("chunk", req.chunk)?).map_err(|e| e.under("chunk"))
    }
}

impl From<SearchMode> for pb::SearchMode {
    fn from(mode: SearchMode) -> Self {
        match mode {
            SearchMode::Hybrid => pb::SearchMode::Hybrid,
            SearchMode::Vector => pb::SearchMode::Vector,
            SearchMode::Text => pb::SearchMode::Text,
        }
    }
}

/// The mode in a request's `mode` field; unspecified is hybrid, an unknown number an error.
fn search_mode_from_proto(field: &str, value: i32) -> Result<SearchMode, Error> {
    match pb::SearchMode::try_from(value) {
        Ok(pb::SearchMode::Unspecified | pb::SearchMode::Hybrid) => Ok(SearchMode::Hybrid),
        Ok(pb::SearchMode::Vector) => Ok(SearchMode::Vector),
        Ok(pb::SearchMode::Text) => Ok(SearchMode::Text),
        Err(_) => Err(Error::UnknownEnum {
            field: field.to_string(),
            value,
            expected: [pb::SearchMode::Hybrid, pb::SearchMode::Vector, pb::SearchMode::Text]
                .map(|m| m.as_str_name())
                .join(", "),
        }),
    }
}

impl From<SearchRequest> for pb::SearchRequest {
    fn from(r: SearchRequest) -> Self {
        pb::SearchRequest {
            query: r.query,
            project_id: r.filter.project_id,
            language: None,
            path_prefix: r.filter.path_prefix,
            chunk_type: None,
            // Over u32 is over the maximum too: the server refuses it either way.
            limit: u32::try_from(r.limit).unwrap_or(u32::MAX),
            mode: pb::SearchMode::from(r.mode) as i32,
            languages: r.filter.languages,
            chunk_types: r.filter.chunk_types,
        }
    }
}

impl TryFrom<pb::SearchRequest> for SearchRequest {
    type Error = Error;

    fn try_from(r: pb::SearchRequest) -> Result<Self, Error> {
        let mut languages = r.languages;
        if let Some(language) = opt_enum_from_proto::<Language>("language", r.language)? {
            push_new(&mut languages, language.to_string());
        }
        let mut chunk_types = r.chunk_types;
        if let Some(chunk_type) = r.chunk_type {
            push_new(&mut chunk_types, chunk_type);
        }
        let limit = match r.limit {
            0 => DEFAULT_SEARCH_LIMIT,
            n => usize::try_from(n).unwrap_or(usize::MAX),
        };
        Ok(SearchRequest {
            query: r.query,
            limit,
            filter: SearchFilter { project_id: r.project_id, languages, path_prefix: r.path_prefix, chunk_types },
            mode: search_mode_from_proto("mode", r.mode)?,
        })
    }
}

fn push_new(values: &mut Vec<String>, value: String) {
    if !values.contains(&value) {
        values.push(value);
    }
}

impl From<SearchHit> for pb::SearchHit {
    fn from(h: SearchHit) -> Self {
        pb::SearchHit {
            id: h.id,
            project_id: h.project_id,
            path: h.path,
            start_line: h.start_line,
            end_line: h.end_line,
            language: h.language,
            chunk_type: h.chunk_type,
            symbol: h.symbol,
            content: h.content,
            score: h.score,
            usage_count: h.usage_count,
            success_rate: h.success_rate,
        }
    }
}

impl From<pb::SearchHit> for SearchHit {
    fn from(h: pb::SearchHit) -> Self {
        SearchHit {
            id: h.id,
            project_id: h.project_id,
            path: h.path,
            start_line: h.start_line,
            end_line: h.end_line,
            language: h.language,
            chunk_type: h.chunk_type,
            symbol: h.symbol,
            content: h.content,
            score: h.score,
            usage_count: h.usage_count,
            success_rate: h.success_rate,
        }
    }
}

impl From<IndexRequest> for pb::IndexWorkspaceRequest {
    fn from(r: IndexRequest) -> Self {
        pb::IndexWorkspaceRequest { project_id: r.project_id, root_path: r.workspace, force: false }
    }
}

impl TryFrom<pb::IndexWorkspaceRequest> for IndexRequest {
    type Error = Error;

    fn try_from(r: pb::IndexWorkspaceRequest) -> Result<Self, Error> {
        if r.force {
            return Err(invalid(
                "force",
                "is not supported: unchanged files are found by content hash and are already up to date; send false",
            ));
        }
        Ok(IndexRequest { project_id: r.project_id, workspace: r.root_path })
    }
}

impl From<SkippedFile> for pb::SkippedFile {
    fn from(s: SkippedFile) -> Self {
        pb::SkippedFile { path: s.path, reason: s.reason }
    }
}

impl From<pb::SkippedFile> for SkippedFile {
    fn from(s: pb::SkippedFile) -> Self {
        SkippedFile { path: s.path, reason: s.reason }
    }
}

impl From<IndexReport> for pb::IndexWorkspaceResponse {
    fn from(r: IndexReport) -> Self {
        pb::IndexWorkspaceResponse {
            files_indexed: count(r.files_changed),
            files_skipped: count(r.files_skipped.len()),
            chunks_added: count(r.chunks_added),
            chunks_removed: count(r.chunks_removed),
            duration: Some(duration_to_proto(std::time::Duration::from_millis(r.duration_ms))),
            files_seen: count(r.files_seen),
            files_changed: count(r.files_changed),
            files_removed: count(r.files_removed),
            skipped: r.files_skipped.into_iter().map(Into::into).collect(),
            chunks_embedded: count(r.chunks_embedded),
            version: r.version,
        }
    }
}

impl TryFrom<pb::IndexWorkspaceResponse> for IndexReport {
    type Error = Error;

    /// Reads the fields this version sends; `files_indexed` and `files_skipped` repeat
    /// `files_changed` and the length of `skipped` for older clients and are not read.
    fn try_from(r: pb::IndexWorkspaceResponse) -> Result<Self, Error> {
        let duration = req_duration("duration", r.duration)?;
        Ok(IndexReport {
            files_seen: size(r.files_seen),
            files_changed: size(r.files_changed),
            files_removed: size(r.files_removed),
            files_skipped: r.skipped.into_iter().map(Into::into).collect(),
            chunks_added: size(r.chunks_added),
            chunks_removed: size(r.chunks_removed),
            chunks_embedded: size(r.chunks_embedded),
            version: r.version,
            duration_ms: u64::try_from(duration.as_millis()).unwrap_or(u64::MAX),
        })
    }
}

impl From<KnowledgeStats> for pb::StatsResponse {
    fn from(s: KnowledgeStats) -> Self {
        pb::StatsResponse {
            total_chunks: s.chunks,
            by_chunk_type: Default::default(),
            by_language: Default::default(),
            embedding_model: s.embedding_model,
            last_indexed: None,
            files: s.files,
            projects: s.projects,
            dimension: s.dimension,
            version: s.version,
            ann_index: s.ann_index,
        }
    }
}

impl From<pb::StatsResponse> for KnowledgeStats {
    fn from(s: pb::StatsResponse) -> Self {
        KnowledgeStats {
            chunks: s.total_chunks,
            files: s.files,
            projects: s.projects,
            embedding_model: s.embedding_model,
            dimension: s.dimension,
            version: s.version,
            ann_index: s.ann_index,
        }
    }
}

impl From<ContextRequest> for pb::BuildContextRequest {
    fn from(r: ContextRequest) -> Self {
        pb::BuildContextRequest {
            project_id: r.project_id,
            workspace: r.workspace,
            query: r.query,
            budget_chars: count(r.budget_chars),
            limit: u32::try_from(r.limit).unwrap_or(u32::MAX),
        }
    }
}

impl From<pb::BuildContextRequest> for ContextRequest {
    fn from(r: pb::BuildContextRequest) -> Self {
        ContextRequest {
            project_id: r.project_id,
            workspace: r.workspace,
            query: r.query,
            budget_chars: size(r.budget_chars),
            limit: usize::try_from(r.limit).unwrap_or(usize::MAX),
        }
    }
}

impl From<RetrievedContext> for pb::BuildContextResponse {
    fn from(c: RetrievedContext) -> Self {
        pb::BuildContextResponse { text: c.text, chunk_ids: c.chunk_ids, sources: c.sources, excerpts: c.excerpts }
    }
}

impl From<pb::BuildContextResponse> for RetrievedContext {
    fn from(c: pb::BuildContextResponse) -> Self {
        RetrievedContext { text: c.text, chunk_ids: c.chunk_ids, sources: c.sources, excerpts: c.excerpts }
    }
}

fn count(n: usize) -> u64 {
    u64::try_from(n).unwrap_or(u64::MAX)
}

fn size(n: u64) -> usize {
    usize::try_from(n).unwrap_or(usize::MAX)
}

fn invalid(field: &str, problem: impl Into<String>) -> Error {
    let mut errs = turbo_core::ValidationErrors::default();
    errs.push(field, problem);
    Error::Invalid(errs)
}

// ---------------------------------------------------------------------------------------------
// Errors

/// The status code of a [`KnowledgeErrorKind`].
pub fn knowledge_code(kind: KnowledgeErrorKind) -> tonic::Code {
    match kind {
        KnowledgeErrorKind::InvalidArgument => tonic::Code::InvalidArgument,
        KnowledgeErrorKind::FailedPrecondition => tonic::Code::FailedPrecondition,
        KnowledgeErrorKind::NotFound => tonic::Code::NotFound,
        KnowledgeErrorKind::Unavailable => tonic::Code::Unavailable,
        KnowledgeErrorKind::Internal => tonic::Code::Internal,
    }
}

/// The [`KnowledgeErrorKind`] of a status code: the inverse of [`knowledge_code`], and for the
/// codes it never gives, the kind a caller should act on (a deadline or a cancelled call can be
/// retried: unavailable; a too-large message is fixed by asking for less: invalid argument).
pub fn knowledge_kind(code: tonic::Code) -> KnowledgeErrorKind {
    use tonic::Code;
    match code {
        Code::InvalidArgument | Code::OutOfRange => KnowledgeErrorKind::InvalidArgument,
        Code::FailedPrecondition => KnowledgeErrorKind::FailedPrecondition,
        Code::NotFound => KnowledgeErrorKind::NotFound,
        Code::Unavailable | Code::DeadlineExceeded | Code::Cancelled | Code::Aborted | Code::ResourceExhausted => {
            KnowledgeErrorKind::Unavailable
        }
        _ => KnowledgeErrorKind::Internal,
    }
}

/// The `google.rpc.ErrorInfo` reason of a kind: its code's name, e.g. `FAILED_PRECONDITION`.
fn reason(kind: KnowledgeErrorKind) -> &'static str {
    match kind {
        KnowledgeErrorKind::InvalidArgument => "INVALID_ARGUMENT",
        KnowledgeErrorKind::FailedPrecondition => "FAILED_PRECONDITION",
        KnowledgeErrorKind::NotFound => "NOT_FOUND",
        KnowledgeErrorKind::Unavailable => "UNAVAILABLE",
        KnowledgeErrorKind::Internal => "INTERNAL",
    }
}

/// The status a knowledge service answers `err` with: its kind's code, its message, and the
/// kind as a reason ([`KNOWLEDGE_ERROR_DOMAIN`]), which tells a client that the service said
/// this rather than the transport.
pub fn knowledge_error_to_status(err: &KnowledgeError) -> tonic::Status {
    crate::error::status_with_reason(
        knowledge_code(err.kind),
        err.message.clone(),
        KNOWLEDGE_ERROR_DOMAIN,
        reason(err.kind),
    )
}

/// Whether a knowledge service sent `status` ([`knowledge_error_to_status`]) rather than the
/// transport or a server in between making it up.
pub fn is_knowledge_status(status: &tonic::Status) -> bool {
    crate::error::reason_of(status, KNOWLEDGE_ERROR_DOMAIN).is_some()
}

/// The error a status stands for: the kind its reason names (else its code's,
/// [`knowledge_kind`]), and its message unchanged.
pub fn knowledge_error_from_status(status: &tonic::Status) -> KnowledgeError {
    let by_reason = crate::error::reason_of(status, KNOWLEDGE_ERROR_DOMAIN).and_then(|r| {
        [
            KnowledgeErrorKind::InvalidArgument,
            KnowledgeErrorKind::FailedPrecondition,
            KnowledgeErrorKind::NotFound,
            KnowledgeErrorKind::Unavailable,
            KnowledgeErrorKind::Internal,
        ]
        .into_iter()
        .find(|k| reason(*k) == r)
    });
    let kind = by_reason.unwrap_or_else(|| knowledge_kind(status.code()));
    KnowledgeError::new(kind, status.message())
}

#[cfg(test)]
mod tests {
    use super::*;

    const KINDS: [KnowledgeErrorKind; 5] = [
        KnowledgeErrorKind::InvalidArgument,
        KnowledgeErrorKind::FailedPrecondition,
        KnowledgeErrorKind::NotFound,
        KnowledgeErrorKind::Unavailable,
        KnowledgeErrorKind::Internal,
    ];

    #[test]
    fn every_error_kind_has_its_code_and_comes_back_whole() {
        let codes = [
            tonic::Code::InvalidArgument,
            tonic::Code::FailedPrecondition,
            tonic::Code::NotFound,
            tonic::Code::Unavailable,
            tonic::Code::Internal,
        ];
        for (kind, code) in KINDS.into_iter().zip(codes) {
            let err = KnowledgeError::new(kind, format!("{kind:?} happened; do something"));
            let status = knowledge_error_to_status(&err);
            assert_eq!(status.code(), code);
            assert!(is_knowledge_status(&status));
            assert_eq!(knowledge_error_from_status(&status), err);
            assert_eq!(knowledge_kind(code), kind);
        }
    }

    #[test]
    fn statuses_without_a_reason_map_by_code() {
        let status = tonic::Status::deadline_exceeded("too slow");
        assert!(!is_knowledge_status(&status));
        let err = knowledge_error_from_status(&status);
        assert_eq!((err.kind, err.message.as_str()), (KnowledgeErrorKind::Unavailable, "too slow"));
        assert_eq!(knowledge_error_from_status(&tonic::Status::unimplemented("no")).kind, KnowledgeErrorKind::Internal);
        // Conversion errors (field details, no reason) are the caller's to fix.
        let status = tonic::Status::from(Error::Missing { field: "chunk".into() });
        assert_eq!(knowledge_error_from_status(&status).kind, KnowledgeErrorKind::InvalidArgument);
    }

    #[test]
    fn old_single_filters_fold_into_the_lists() {
        let old = pb::SearchRequest {
            query: "parse config".into(),
            language: Some(Language::Rust.to_proto()),
            chunk_type: Some("function".into()),
            languages: vec!["rust".into(), "python".into()],
            ..Default::default()
        };
        let req = SearchRequest::try_from(old).unwrap();
        assert_eq!(req.filter.languages, ["rust", "python"], "no duplicate of the folded language");
        assert_eq!(req.filter.chunk_types, ["function"]);
        assert_eq!(req.limit, DEFAULT_SEARCH_LIMIT, "0 is the default limit");
        assert_eq!(req.mode, SearchMode::Hybrid, "unspecified is hybrid");

        let bad = pb::SearchRequest { query: "q".into(), mode: 99, ..Default::default() };
        let err = SearchRequest::try_from(bad).unwrap_err().to_string();
        assert!(err.contains("mode") && err.contains("SEARCH_MODE_TEXT"), "{err}");
    }

    #[test]
    fn search_requests_round_trip() {
        let req = SearchRequest {
            query: "where is the config loaded".into(),
            limit: 7,
            filter: SearchFilter {
                project_id: Some("p1".into()),
                languages: vec!["go".into()],
                path_prefix: Some("src/".into()),
                chunk_types: vec!["method".into(), "class".into()],
            },
            mode: SearchMode::Text,
        };
        assert_eq!(SearchRequest::try_from(pb::SearchRequest::from(req.clone())).unwrap(), req);
    }

    #[test]
    fn unsupported_request_fields_are_refused_by_name() {
        let force = pb::IndexWorkspaceRequest { project_id: "p".into(), root_path: "/ws".into(), force: true };
        assert!(IndexRequest::try_from(force).unwrap_err().to_string().contains("force"));
        let add = pb::AddChunkRequest { chunk: None, project_id: Some("p".into()) };
        assert!(KnowledgeChunk::try_from(add).unwrap_err().to_string().contains("project_id"));
        let add = pb::AddChunkRequest { chunk: None, project_id: None };
        assert_eq!(KnowledgeChunk::try_from(add).unwrap_err(), Error::Missing { field: "chunk".into() });
    }

    #[test]
    fn index_reports_round_trip_and_fill_the_old_fields() {
        let report = IndexReport {
            files_seen: 9,
            files_changed: 3,
            files_removed: 1,
            files_skipped: vec![SkippedFile { path: "a.bin".into(), reason: "binary".into() }],
            chunks_added: 12,
            chunks_removed: 4,
            chunks_embedded: 12,
            version: 5,
            duration_ms: 1234,
        };
        let wire = pb::IndexWorkspaceResponse::from(report.clone());
        assert_eq!((wire.files_indexed, wire.files_skipped), (3, 1));
        assert_eq!(IndexReport::try_from(wire).unwrap(), report);
        let no_duration = pb::IndexWorkspaceResponse::default();
        assert_eq!(IndexReport::try_from(no_duration).unwrap_err(), Error::Missing { field: "duration".into() });
    }
}
