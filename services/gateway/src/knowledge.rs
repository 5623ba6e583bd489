//! The spec's knowledge routes, forwarded to the knowledge service (`knowledge.url`):
//! `POST /v1/knowledge/search` and `POST /v1/knowledge`. A search filtered to a project needs
//! that project to be visible to the caller; without a project filter a non-admin sees only
//! knowledge added through the API (which belongs to no project).

use axum::Json;
use axum::extract::State;
use axum::extract::rejection::JsonRejection;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use turbo_core::knowledge::{
    Knowledge, KnowledgeChunk, KnowledgeError, KnowledgeErrorKind, SearchFilter, SearchMode, SearchRequest,
};

use crate::auth::Permission;
use crate::problem::{ApiError, ErrorBody};
use crate::rest::{App, Caller, body};

fn knowledge_error(e: KnowledgeError) -> ApiError {
    let status = match e.kind {
        KnowledgeErrorKind::InvalidArgument => StatusCode::UNPROCESSABLE_ENTITY,
        KnowledgeErrorKind::FailedPrecondition => StatusCode::CONFLICT,
        KnowledgeErrorKind::NotFound => StatusCode::NOT_FOUND,
        KnowledgeErrorKind::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        KnowledgeErrorKind::Internal => StatusCode::INTERNAL_SERVER_ERROR,
    };
    ApiError::new(status, e.message)
}

fn service(app: &App) -> Result<&turbo_proto::knowledge_client::RemoteKnowledge, ApiError> {
    app.knowledge.as_ref().ok_or_else(|| {
        ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "this gateway has no knowledge service: set knowledge.url")
    })
}

/// `POST /v1/knowledge/search`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SearchBody {
    #[schema(min_length = 1)]
    pub query: String,
    /// 1 to 50 (default 10).
    pub limit: Option<usize>,
    /// Only chunks of this project (its id).
    pub project_id: Option<String>,
    #[serde(default)]
    pub languages: Vec<String>,
    pub path_prefix: Option<String>,
    #[serde(default)]
    pub chunk_types: Vec<String>,
    /// hybrid (default), vector or text.
    #[schema(value_type = Option<String>)]
    pub mode: Option<SearchMode>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct SearchAnswer {
    /// Best first: path, lines, symbol, content, score.
    #[schema(value_type = Vec<Object>)]
    pub results: Vec<turbo_core::knowledge::SearchHit>,
}

#[utoipa::path(post, path = "/v1/knowledge/search", request_body = SearchBody,
    responses((status = 200, body = SearchAnswer), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody), (status = 422, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn search(
    State(app): State<App>,
    caller: Caller,
    payload: Result<Json<SearchBody>, JsonRejection>,
) -> Result<Json<SearchAnswer>, ApiError> {
    caller.needs(Permission::Read)?;
    let b = body(payload)?;
    if let Some(project) = &b.project_id {
        app.visible_project(&caller, project).await?;
    }
    let admin = caller.0.may(Permission::Admin);
    let request = SearchRequest {
        query: b.query,
        limit: b.limit.unwrap_or(10),
        filter: SearchFilter {
            project_id: b.project_id.clone(),
            languages: b.languages,
            path_prefix: b.path_prefix,
            chunk_types: b.chunk_types,
        },
        mode: b.mode.unwrap_or_default(),
    };
    request.check().map_err(knowledge_error)?;
    let mut results = service(&app)?.search(request).await.map_err(knowledge_error)?;
    if b.project_id.is_none() && !admin {
        results.retain(|hit| hit.project_id.is_empty());
    }
    Ok(Json(SearchAnswer { results }))
}

/// `POST /v1/knowledge`: a piece of knowledge for every project's agents.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AddKnowledgeBody {
    #[schema(min_length = 1, pattern = "\\S")]
    pub title: String,
    /// At least 10 characters.
    #[schema(min_length = 10)]
    pub content: String,
    /// code, documentation, pattern or example.
    #[schema(pattern = "\\S")]
    pub chunk_type: String,
    #[schema(pattern = "\\S")]
    pub category: String,
    pub subcategory: Option<String>,
    #[serde(default)]
    pub keywords: Vec<String>,
    #[serde(default)]
    pub tags: Vec<String>,
    pub source_url: Option<String>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct AddedKnowledge {
    pub id: String,
    /// Always "created".
    pub status: &'static str,
}

#[utoipa::path(post, path = "/v1/knowledge", request_body = AddKnowledgeBody,
    responses((status = 201, body = AddedKnowledge), (status = 403, body = ErrorBody), (status = 409, body = ErrorBody),
        (status = 422, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn add(
    State(app): State<App>,
    caller: Caller,
    payload: Result<Json<AddKnowledgeBody>, JsonRejection>,
) -> Result<(StatusCode, Json<AddedKnowledge>), ApiError> {
    caller.needs(Permission::Write)?;
    let b = body(payload)?;
    let now = chrono::Utc::now();
    let chunk = KnowledgeChunk {
        id: uuid::Uuid::new_v4().to_string(),
        title: b.title,
        content: b.content,
        chunk_type: b.chunk_type,
        category: b.category,
        subcategory: b.subcategory,
        language: None,
        framework: None,
        keywords: b.keywords,
        tags: b.tags,
        source: "api".into(),
        source_url: b.source_url,
        author: Some(caller.0.user.clone()),
        quality_score: None,
        usage_count: 0,
        success_rate: None,
        embedding: None,
        embedding_model: None,
        created_at: now,
        updated_at: now,
        last_used: None,
    };
    turbo_core::Validate::validate(&chunk).map_err(ApiError::invalid)?;
    let id = service(&app)?.add_chunk(chunk).await.map_err(knowledge_error)?;
    Ok((StatusCode::CREATED, Json(AddedKnowledge { id, status: "created" })))
}
