//! The REST API under `/v1`, each route forwarded to the orchestrator's gRPC services with the
//! caller checked first: projects (create, list, get, update, soft delete, restore), a
//! project's tasks (create = plan), a task (get, execute), sessions and their WebSocket
//! (`crate::sessions`), and the OpenAPI document generated from these handlers and types
//! (`/v1/openapi.json`, no token needed).
//!
//! Bodies follow the spec's API contracts; a project or a task is returned as the spec's data
//! model (`ProjectMetadata`, `DevelopmentTask`, as `turbo-core` serializes them). A project a
//! caller may not see answers 404, as one that does not exist.

use std::time::Duration;

use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequestParts, Path, Query, State};
use axum::http::StatusCode;
use axum::http::request::Parts;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;
use turbo_core::ValidationErrors;
use turbo_core::project::{Framework, Language, ProjectMetadata, ProjectType};
use turbo_core::task::{Complexity, DevelopmentTask};
use turbo_proto::convert::ProtoEnum;
use turbo_proto::projects::v1 as projects;
use turbo_proto::projects::v1::project_service_client::ProjectServiceClient;
use turbo_proto::sessions::v1::session_service_client::SessionServiceClient;
use turbo_proto::tasks::v1 as tasks;
use turbo_proto::tasks::v1::task_service_client::TaskServiceClient;
use turbo_proto::trace::TraceInterceptor;
use utoipa::OpenApi;

use crate::auth::{Permission, Principal, Tokens};
use crate::problem::{ApiError, ErrorBody};

/// Deadline of a request that plans a task (the planner model thinks).
const PLAN_TIMEOUT: Duration = Duration::from_secs(600);
/// Deadline of every other request to the orchestrator.
pub(crate) const QUICK_TIMEOUT: Duration = Duration::from_secs(30);

type Intercepted = InterceptedService<Channel, TraceInterceptor>;

/// What every handler shares; cheap to clone.
#[derive(Clone)]
pub struct App {
    pub tokens: Tokens,
    /// The store of rate limits and the audit log; None: neither (unit tests).
    pub edge: Option<crate::edge::Edge>,
    projects: ProjectServiceClient<Intercepted>,
    pub(crate) tasks: TaskServiceClient<Intercepted>,
    pub(crate) sessions: SessionServiceClient<Intercepted>,
    /// Largest WebSocket message accepted (`gateway.ws_max_message_bytes`).
    pub ws_max_message_bytes: usize,
    /// The orchestrator's channel, for the gRPC edge.
    channel: Channel,
    /// The knowledge service (`knowledge.url`), when there is one.
    pub knowledge: Option<turbo_proto::knowledge_client::RemoteKnowledge>,
}

impl App {
    /// Clients of the orchestrator at `channel` (connected lazily), tokens checked with `tokens`.
    pub fn new(tokens: Tokens, edge: Option<crate::edge::Edge>, channel: Channel) -> Self {
        Self {
            tokens,
            edge,
            projects: ProjectServiceClient::with_interceptor(channel.clone(), TraceInterceptor),
            tasks: TaskServiceClient::with_interceptor(channel.clone(), TraceInterceptor),
            sessions: SessionServiceClient::with_interceptor(channel.clone(), TraceInterceptor),
            ws_max_message_bytes: 1 << 20,
            channel,
            knowledge: None,
        }
    }

    /// The same, with the knowledge service.
    pub fn with_knowledge(mut self, knowledge: Option<turbo_proto::knowledge_client::RemoteKnowledge>) -> Self {
        self.knowledge = knowledge;
        self
    }
}

/// The routes, with `app` as their state.
pub fn routes(app: App) -> Router {
    Router::new()
        .route("/v1/openapi.json", get(openapi))
        .route("/v1/projects", post(create_project).get(list_projects))
        .route("/v1/projects/{project_id}", get(get_project).patch(update_project).delete(delete_project))
        .route("/v1/projects/{project_id}/restore", post(restore_project))
        .route("/v1/projects/{project_id}/tasks", post(create_task))
        .route("/v1/tasks/{task_id}", get(get_task))
        .route("/v1/tasks/{task_id}/execute", post(execute_task))
        .route("/v1/projects/{project_id}/sessions", post(crate::sessions::start))
        .route("/v1/sessions/{session_id}", get(crate::sessions::get).delete(crate::sessions::end))
        .route("/v1/sessions/{session_id}/ws", get(crate::sessions::websocket))
        .route("/v1/audit", get(crate::edge::list_audit))
        .route("/v1/knowledge", post(crate::knowledge::add))
        .route("/v1/knowledge/search", post(crate::knowledge::search))
        .route("/turbo.tasks.v1.TaskService/{method}", post(grpc_edge))
        .route("/turbo.projects.v1.ProjectService/{method}", post(grpc_edge))
        .route("/turbo.sessions.v1.SessionService/{method}", post(grpc_edge))
        .method_not_allowed_fallback(method_not_allowed)
        .route_layer(axum::middleware::from_fn_with_state(app.clone(), crate::edge::edge))
        .with_state(app)
}

/// A known path asked with a method it does not take: 405 in the error shape (axum adds the
/// `Allow` header).
async fn method_not_allowed(method: axum::http::Method, uri: axum::http::Uri) -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        format!("{} does not take {method}: the Allow header lists what it takes", uri.path()),
    )
}

/// The caller of a request, from its bearer token.
pub struct Caller(pub Principal);

impl FromRequestParts<App> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, app: &App) -> Result<Self, Self::Rejection> {
        // The edge layer has authenticated the request already when it could.
        if let Some(who) = parts.extensions.get::<Principal>() {
            return Ok(Caller(who.clone()));
        }
        let header = parts.headers.get(axum::http::header::AUTHORIZATION).and_then(|v| v.to_str().ok());
        Ok(Caller(app.authenticate(header).await?))
    }
}

/// How often an API key's last use is written at most.
const KEY_TOUCH_EVERY: chrono::TimeDelta = chrono::TimeDelta::seconds(60);

impl App {
    /// The caller of a request with this `Authorization` header: an API key's user, or a JWT's
    /// (with the user's stored roles when the store knows the user; refused once disabled).
    /// Without a store (unit tests) only JWTs are checked. When the store cannot be read, a JWT
    /// keeps its own roles (availability; the failure is logged) and an API key is refused.
    pub(crate) async fn authenticate(&self, header: Option<&str>) -> Result<Principal, ApiError> {
        use crate::auth::{API_KEY_PREFIX, TokenError, api_key_hash, bearer, roles_of};
        let refused = |why: String| ApiError::from(TokenError::Invalid(why));
        let token = bearer(header)?;
        if token.starts_with(API_KEY_PREFIX) {
            let edge = self.edge.as_ref().ok_or_else(|| refused("API keys need the gateway's store".into()))?;
            let found = edge.store.api_key_by_hash(&api_key_hash(token)).await.map_err(|e| {
                tracing::warn!(error = %e, "cannot look up an API key");
                ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "cannot check the API key now: try again")
            })?;
            let (key, user) = found.ok_or_else(|| refused("the API key is unknown".into()))?;
            if key.revoked_at.is_some() {
                return Err(refused(format!(
                    "the API key {}… was revoked; make a new one with `turbo-coder user key {}`",
                    key.prefix, user.name
                )));
            }
            if user.disabled_at.is_some() {
                return Err(refused(format!("user '{}' is disabled", user.name)));
            }
            let now = chrono::Utc::now();
            if key.last_used_at.is_none_or(|t| now - t > KEY_TOUCH_EVERY) {
                let store = edge.store.clone();
                tokio::spawn(async move {
                    if let Err(error) = store.touch_api_key(key.id, now).await {
                        tracing::warn!(%error, "cannot record an API key's use");
                    }
                });
            }
            let roles = roles_of(&user.roles);
            if roles.is_empty() {
                return Err(ApiError::from(TokenError::NoRole));
            }
            return Ok(Principal { user: user.name, roles });
        }
        let mut who = match self.tokens.check_jwt(token) {
            // The identity provider may have rotated its keys: fetch them again (rate-limited).
            Err(TokenError::UnknownKey(kid)) => match self.tokens.refresh(false).await {
                Ok(true) => self.tokens.check_jwt(token)?,
                Ok(false) => return Err(ApiError::from(TokenError::UnknownKey(kid))),
                Err(error) => {
                    tracing::warn!(%error, "cannot fetch the identity provider's keys");
                    return Err(ApiError::from(TokenError::UnknownKey(kid)));
                }
            },
            checked => checked?,
        };
        if let Some(edge) = &self.edge {
            match edge.store.get_user(&who.user).await {
                Ok(Some(user)) if user.disabled_at.is_some() => {
                    return Err(refused(format!("user '{}' is disabled", user.name)));
                }
                Ok(Some(user)) => who.roles = roles_of(&user.roles),
                Ok(None) => {}
                Err(error) => tracing::warn!(%error, "cannot read the caller's user; the token's roles apply"),
            }
        }
        if who.roles.is_empty() {
            return Err(ApiError::from(TokenError::NoRole));
        }
        Ok(who)
    }
}

impl Caller {
    pub(crate) fn needs(&self, permission: Permission) -> Result<(), ApiError> {
        if self.0.may(permission) {
            return Ok(());
        }
        let role = match permission {
            Permission::Read => "viewer",
            Permission::Write => "developer",
            Permission::Admin => "admin",
        };
        Err(ApiError::forbidden(format!("this needs the {role} role; your token has {:?}", self.0.roles)))
    }
}

pub(crate) fn request<T>(message: T, timeout: Duration) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.set_timeout(timeout);
    request
}

/// [`request`] for a call that changes something, naming `caller` to the orchestrator, which
/// holds the call to the caller's roles and audits it under them (so the edge does not:
/// [`crate::edge::forwarded`]).
pub(crate) fn change_as<T>(caller: &Caller, message: T, timeout: Duration) -> tonic::Request<T> {
    let mut request = request(message, timeout);
    identify(request.metadata_mut(), &caller.0);
    crate::edge::forwarded();
    request
}

/// A 201 answer: the new resource's address in `Location`, and its body.
pub(crate) type Created<T> = (StatusCode, [(axum::http::HeaderName, String); 1], Json<T>);

pub(crate) fn created<T>(location: String, body: T) -> Created<T> {
    (StatusCode::CREATED, [(axum::http::header::LOCATION, location)], Json(body))
}

/// A JSON body, or the error saying what is wrong with it.
pub(crate) fn body<T>(body: Result<Json<T>, JsonRejection>) -> Result<T, ApiError> {
    body.map(|Json(b)| b).map_err(ApiError::from)
}

fn model<P, D>(field: &str, message: Option<P>) -> Result<D, ApiError>
where
    D: TryFrom<P, Error = turbo_proto::Error>,
{
    let message =
        message.ok_or_else(|| ApiError::new(StatusCode::BAD_GATEWAY, format!("the orchestrator sent no {field}")))?;
    D::try_from(message).map_err(|e| {
        ApiError::new(StatusCode::BAD_GATEWAY, format!("the orchestrator sent an unreadable {field}: {e}"))
    })
}

/// A path id that is a UUID, or 404: no such thing can exist.
pub(crate) fn path_id(kind: &str, id: &str) -> Result<String, ApiError> {
    uuid::Uuid::parse_str(id).map(|u| u.to_string()).map_err(|_| ApiError::not_found(format!("no {kind} '{id}'")))
}

impl App {
    /// The project, if the caller may see it (404 otherwise, as for none).
    pub(crate) async fn visible_project(&self, caller: &Caller, id: &str) -> Result<ProjectMetadata, ApiError> {
        let id = path_id("project", id)?;
        let answer = self
            .projects
            .clone()
            .get_project(request(projects::GetProjectRequest { project_id: id.clone() }, QUICK_TIMEOUT))
            .await?;
        let project: ProjectMetadata = model("project", Some(answer.into_inner()))?;
        if !caller.0.sees(&project.team_members) {
            return Err(ApiError::not_found(format!("no project '{id}'")));
        }
        Ok(project)
    }

    /// The project, if the caller may change its life (its owner, the first member, or an admin).
    async fn owned_project(&self, caller: &Caller, id: &str) -> Result<ProjectMetadata, ApiError> {
        let project = self.visible_project(caller, id).await?;
        let owner = project.team_members.first().is_some_and(|m| *m == caller.0.user);
        if !owner && !caller.0.may(Permission::Admin) {
            return Err(ApiError::forbidden(
                "only the project's owner (its first team member) or an admin may do this",
            ));
        }
        Ok(project)
    }

    /// The task, if the caller may see its project.
    async fn visible_task(&self, caller: &Caller, id: &str) -> Result<DevelopmentTask, ApiError> {
        let id = path_id("task", id)?;
        // One call: named in the identity metadata, as on the gRPC edge, the caller sees the task
        // only if the orchestrator finds it may see the task's (live) project.
        let mut message = request(tasks::GetTaskRequest { task_id: id.clone() }, QUICK_TIMEOUT);
        identify(message.metadata_mut(), &caller.0);
        match self.tasks.clone().get_task(message).await {
            Ok(answer) => model("task", Some(answer.into_inner())),
            Err(status) if status.code() == tonic::Code::NotFound => {
                Err(ApiError::not_found(format!("no task '{id}'")))
            }
            Err(status) => Err(status.into()),
        }
    }
}

/// `POST /v1/projects`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateProjectBody {
    /// 1 to 100 characters, unique.
    #[schema(min_length = 1, max_length = 100)]
    pub name: String,
    pub description: Option<String>,
    /// web_application, api_service, mobile_app, desktop_app, data_science, machine_learning,
    /// blockchain, game_development, embedded_system or devops_infrastructure.
    #[schema(
        example = "api_service",
        pattern = "^(web_application|api_service|mobile_app|desktop_app|data_science|machine_learning|blockchain|game_development|embedded_system|devops_infrastructure)$"
    )]
    pub project_type: String,
    /// Languages and frameworks (e.g. python, fastapi), at least one language (a fresh
    /// workspace has no code to tell it from); others (e.g. postgresql) are kept in the
    /// configuration under "technologies".
    #[serde(default)]
    pub technologies: Vec<String>,
    pub repository_url: Option<String>,
    /// Absolute path of an existing directory of the project's own: not /, a shared directory
    /// (/home, /tmp, /srv, ...) or in a system one (/etc, /usr, /proc, ...); a fresh workspace
    /// when absent.
    #[schema(pattern = "^/")]
    pub root_path: Option<String>,
    #[schema(pattern = "\\S")]
    pub main_branch: Option<String>,
    /// Extra settings for the agents (python_version, framework, database, ...).
    #[serde(default)]
    #[schema(value_type = Object)]
    pub configuration: serde_json::Map<String, Value>,
    /// Further members besides the caller, who becomes the owner.
    #[serde(default)]
    pub team_members: Vec<String>,
}

/// The created project and its first analysis.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct CreateProjectResponse {
    pub project_id: String,
    /// Always "created".
    pub status: &'static str,
    pub analysis: ProjectAnalysis,
    pub next_steps: Vec<String>,
    /// The project as stored (the spec's ProjectMetadata).
    #[schema(value_type = Object)]
    pub project: ProjectMetadata,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ProjectAnalysis {
    pub detected_languages: Vec<String>,
    pub recommended_tools: Vec<String>,
    /// low, medium, high or very_high.
    pub estimated_complexity: String,
    /// e.g. "15 minutes".
    pub setup_time_estimate: String,
}

fn minutes(d: Option<prost_types::Duration>) -> String {
    let secs = d.map(|d| d.seconds.max(0)).unwrap_or(0);
    match (secs + 59) / 60 {
        1 => "1 minute".into(),
        n => format!("{n} minutes"),
    }
}

#[utoipa::path(post, path = "/v1/projects", request_body = CreateProjectBody,
    responses((status = 201, body = CreateProjectResponse, headers(("Location" = String, description = "/v1/projects/{project_id}"))), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 409, body = ErrorBody), (status = 415, body = ErrorBody), (status = 422, body = ErrorBody)),
    security(("bearer" = [])))]
async fn create_project(
    State(app): State<App>,
    caller: Caller,
    payload: Result<Json<CreateProjectBody>, JsonRejection>,
) -> Result<Created<CreateProjectResponse>, ApiError> {
    caller.needs(Permission::Write)?;
    let b = body(payload)?;
    let mut errors = ValidationErrors::default();
    let project_type =
        b.project_type.parse::<ProjectType>().map_err(|e| errors.push("project_type", e.to_string())).ok();
    let (mut languages, mut frameworks, mut others) = (Vec::new(), Vec::new(), Vec::new());
    for tech in &b.technologies {
        let t = tech.trim().to_ascii_lowercase();
        if let Ok(language) = t.parse::<Language>() {
            languages.push(language.to_proto());
        } else if let Ok(framework) = t.parse::<Framework>() {
            frameworks.push(framework.to_proto());
        } else if t.is_empty() {
            errors.push("technologies", "an entry is empty");
        } else {
            others.push(Value::String(t));
        }
    }
    if b.team_members.iter().any(|m| m.trim().is_empty()) {
        errors.push("team_members", "an entry is empty");
    }
    let Some(project_type) = project_type.filter(|_| errors.is_empty()) else {
        return Err(ApiError::invalid(errors));
    };
    let mut configuration = b.configuration;
    if !others.is_empty() {
        configuration.insert("technologies".into(), Value::Array(others));
    }
    let mut members = vec![caller.0.user.clone()];
    members.extend(b.team_members.into_iter().filter(|m| *m != caller.0.user));
    let message = projects::CreateProjectRequest {
        name: b.name,
        slug: None,
        description: b.description,
        project_type: project_type.to_proto(),
        languages,
        frameworks,
        repository_url: b.repository_url,
        root_path: b.root_path,
        main_branch: b.main_branch,
        configuration_json: Value::Object(configuration).to_string(),
        team_members: members,
    };
    let answer = app.projects.clone().create_project(change_as(&caller, message, QUICK_TIMEOUT)).await?.into_inner();
    let project: ProjectMetadata = model("project", answer.project)?;
    let analysis = answer.analysis.unwrap_or_default();
    let detected: Vec<Language> = analysis
        .detected_languages
        .iter()
        .filter_map(|l| Language::from_proto("analysis.detected_languages", *l).ok())
        .collect();
    let complexity = Complexity::from_proto("analysis.estimated_complexity", analysis.estimated_complexity)
        .map(|c| c.to_string())
        .unwrap_or_else(|_| "medium".into());
    Ok(created(
        format!("/v1/projects/{}", project.id),
        CreateProjectResponse {
            project_id: project.id.to_string(),
            status: "created",
            analysis: ProjectAnalysis {
                detected_languages: detected.iter().map(|l| l.to_string()).collect(),
                recommended_tools: analysis.recommended_tools,
                estimated_complexity: complexity,
                setup_time_estimate: minutes(analysis.setup_time_estimate),
            },
            next_steps: answer.next_steps,
            project,
        },
    ))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    /// At most this many (default and cap chosen by the server).
    pub page_size: Option<u32>,
    /// `next_page_token` of the previous page.
    pub page_token: Option<String>,
    /// Also soft-deleted projects (admins only).
    pub include_deleted: Option<bool>,
}

/// A page of the projects the caller may see.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ProjectList {
    #[schema(value_type = Vec<Object>)]
    pub projects: Vec<ProjectMetadata>,
    /// Pass as page_token for the next page; empty on the last.
    pub next_page_token: String,
}

#[utoipa::path(get, path = "/v1/projects", params(ListQuery),
    responses((status = 200, body = ProjectList), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)),
    security(("bearer" = [])))]
async fn list_projects(
    State(app): State<App>,
    caller: Caller,
    query: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<ProjectList>, ApiError> {
    caller.needs(Permission::Read)?;
    let Query(q) = query.map_err(ApiError::from)?;
    let include_deleted = q.include_deleted.unwrap_or(false);
    if include_deleted {
        caller.needs(Permission::Admin)?;
    }
    let message = projects::ListProjectsRequest {
        page_size: q.page_size.unwrap_or(0),
        page_token: q.page_token.unwrap_or_default(),
        include_deleted,
    };
    let answer = app.projects.clone().list_projects(request(message, QUICK_TIMEOUT)).await?.into_inner();
    let mut list = Vec::new();
    for (i, p) in answer.projects.into_iter().enumerate() {
        let project: ProjectMetadata = model(&format!("projects[{i}]"), Some(p))?;
        if caller.0.sees(&project.team_members) {
            list.push(project);
        }
    }
    Ok(Json(ProjectList { projects: list, next_page_token: answer.next_page_token }))
}

#[utoipa::path(get, path = "/v1/projects/{project_id}", params(("project_id" = String, Path)),
    responses((status = 200, body = Object, description = "The project (ProjectMetadata)"), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)),
    security(("bearer" = [])))]
async fn get_project(
    State(app): State<App>,
    caller: Caller,
    Path(project_id): Path<String>,
) -> Result<Json<ProjectMetadata>, ApiError> {
    caller.needs(Permission::Read)?;
    Ok(Json(app.visible_project(&caller, &project_id).await?))
}

/// `PATCH /v1/projects/{id}`: the fields to change; absent fields stay as they are.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateProjectBody {
    pub name: Option<String>,
    pub description: Option<String>,
    pub repository_url: Option<String>,
    pub main_branch: Option<String>,
    pub team_members: Option<Vec<String>>,
    pub build_commands: Option<Vec<String>>,
    pub test_commands: Option<Vec<String>>,
    pub coding_standards: Option<String>,
}

#[utoipa::path(patch, path = "/v1/projects/{project_id}", params(("project_id" = String, Path)), request_body = UpdateProjectBody,
    responses((status = 200, body = Object, description = "The updated project"), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody), (status = 422, body = ErrorBody)),
    security(("bearer" = [])))]
async fn update_project(
    State(app): State<App>,
    caller: Caller,
    Path(project_id): Path<String>,
    payload: Result<Json<UpdateProjectBody>, JsonRejection>,
) -> Result<Json<ProjectMetadata>, ApiError> {
    caller.needs(Permission::Write)?;
    let b = body(payload)?;
    let current = app.visible_project(&caller, &project_id).await?;
    if let Some(members) = &b.team_members {
        // Only the owner or an admin changes who may see the project, and the owner stays.
        app.owned_project(&caller, &project_id).await?;
        if members.first() != current.team_members.first() {
            return Err(ApiError::field("team_members", "must start with the project's owner, as it does now"));
        }
    }
    let mut paths = Vec::new();
    let mut p = projects::ProjectMetadata::default();
    macro_rules! set {
        ($field:ident, $value:expr) => {
            if let Some(v) = b.$field {
                p.$field = $value(v);
                paths.push(stringify!($field).to_string());
            }
        };
    }
    set!(name, |v| v);
    set!(description, Some);
    set!(repository_url, Some);
    set!(main_branch, |v| v);
    set!(team_members, |v| v);
    set!(build_commands, |v| v);
    set!(test_commands, |v| v);
    set!(coding_standards, Some);
    let message = projects::UpdateProjectRequest {
        project_id: current.id.to_string(),
        project: Some(p),
        update_mask: Some(prost_types::FieldMask { paths }),
    };
    let answer = app.projects.clone().update_project(change_as(&caller, message, QUICK_TIMEOUT)).await?;
    Ok(Json(model("project", Some(answer.into_inner()))?))
}

/// A soft-deleted project.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct DeletedProject {
    pub project_id: String,
    /// Always "deleted".
    pub status: &'static str,
    pub deleted_at: String,
    /// POST /v1/projects/{id}/restore works until then (30 days).
    pub restorable_until: String,
}

/// A protobuf time as RFC 3339 text.
pub(crate) fn rfc3339(t: Option<prost_types::Timestamp>) -> Option<String> {
    t.and_then(|t| chrono::DateTime::from_timestamp(t.seconds, u32::try_from(t.nanos).unwrap_or(0)))
        .map(|t| t.to_rfc3339())
}

fn timestamp(t: Option<prost_types::Timestamp>) -> String {
    rfc3339(t).unwrap_or_default()
}

#[utoipa::path(delete, path = "/v1/projects/{project_id}", params(("project_id" = String, Path)),
    responses((status = 200, body = DeletedProject), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)),
    security(("bearer" = [])))]
async fn delete_project(
    State(app): State<App>,
    caller: Caller,
    Path(project_id): Path<String>,
) -> Result<Json<DeletedProject>, ApiError> {
    caller.needs(Permission::Write)?;
    let project = app.owned_project(&caller, &project_id).await?;
    let message = projects::DeleteProjectRequest { project_id: project.id.to_string() };
    let answer = app.projects.clone().delete_project(change_as(&caller, message, QUICK_TIMEOUT)).await?.into_inner();
    Ok(Json(DeletedProject {
        project_id: answer.project_id,
        status: "deleted",
        deleted_at: timestamp(answer.deleted_at),
        restorable_until: timestamp(answer.purge_after),
    }))
}

#[utoipa::path(post, path = "/v1/projects/{project_id}/restore", params(("project_id" = String, Path)),
    responses((status = 200, body = Object, description = "The restored project"), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)),
    security(("bearer" = [])))]
async fn restore_project(
    State(app): State<App>,
    caller: Caller,
    Path(project_id): Path<String>,
) -> Result<Json<ProjectMetadata>, ApiError> {
    caller.needs(Permission::Admin)?;
    let id = path_id("project", &project_id)?;
    let answer = app
        .projects
        .clone()
        .restore_project(change_as(&caller, projects::RestoreProjectRequest { project_id: id }, QUICK_TIMEOUT))
        .await?;
    Ok(Json(model("project", Some(answer.into_inner()))?))
}

/// `POST /v1/projects/{id}/tasks`: what to build.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateTaskBody {
    /// At least 10 characters.
    #[schema(min_length = 10)]
    pub description: String,
    pub title: Option<String>,
    /// feature (default), bugfix, refactor, ...
    pub task_type: Option<String>,
    #[serde(default)]
    pub requirements: Vec<String>,
    /// deadline, max_complexity, testing_required, security_review, ...
    #[serde(default)]
    #[schema(value_type = Object)]
    pub constraints: serde_json::Map<String, Value>,
    #[serde(default)]
    pub context: TaskContext,
    #[serde(default)]
    pub acceptance_criteria: Vec<String>,
}

#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TaskContext {
    #[serde(default)]
    pub related_files: Vec<String>,
    #[serde(default)]
    pub dependencies: Vec<String>,
    pub environment: Option<String>,
}

/// The planned task, as the spec's create_task response.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct CreateTaskResponse {
    pub task_id: String,
    pub status: String,
    pub execution_plan: PlanSummary,
    #[schema(value_type = Object)]
    pub resource_requirements: Value,
    /// The task as stored (the spec's DevelopmentTask, with its full plan).
    #[schema(value_type = Object)]
    pub task: DevelopmentTask,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct PlanSummary {
    pub phases: Vec<PhaseSummary>,
    /// e.g. "90 minutes".
    pub total_estimated_duration: String,
    pub confidence_score: f64,
    pub risk_factors: Vec<String>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct PhaseSummary {
    pub name: String,
    /// The spec's agent name: `ArchitectAgent`, `CoderAgent`, `TestAgent`, `ReviewAgent`.
    pub agent: String,
    /// The role that runs it: `planner`, `coder`, `tester`, `reviewer` (the plan's own word
    /// when it names none of them).
    pub agent_type: String,
    pub estimated_duration: String,
    pub deliverables: Vec<String>,
}

fn spoken(d: Duration) -> String {
    minutes(Some(prost_types::Duration { seconds: i64::try_from(d.as_secs()).unwrap_or(i64::MAX), nanos: 0 }))
}

#[utoipa::path(post, path = "/v1/projects/{project_id}/tasks", params(("project_id" = String, Path)), request_body = CreateTaskBody,
    responses((status = 201, body = CreateTaskResponse, headers(("Location" = String, description = "/v1/tasks/{task_id}"))), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 415, body = ErrorBody), (status = 422, body = ErrorBody)),
    security(("bearer" = [])))]
async fn create_task(
    State(app): State<App>,
    caller: Caller,
    Path(project_id): Path<String>,
    payload: Result<Json<CreateTaskBody>, JsonRejection>,
) -> Result<Created<CreateTaskResponse>, ApiError> {
    caller.needs(Permission::Write)?;
    let b = body(payload)?;
    let project = app.visible_project(&caller, &project_id).await?;
    let mut constraints = b.constraints;
    if let Some(environment) = b.context.environment {
        constraints.insert("environment".into(), Value::String(environment));
    }
    let message = tasks::CreateTaskRequest {
        project_id: project.id.to_string(),
        description: b.description,
        title: b.title,
        task_type: b.task_type,
        requirements: b.requirements,
        constraints_json: Value::Object(constraints).to_string(),
        acceptance_criteria: b.acceptance_criteria,
        related_files: b.context.related_files,
        dependencies: b.context.dependencies,
        ..Default::default()
    };
    let answer = app.tasks.clone().create_task(change_as(&caller, message, PLAN_TIMEOUT)).await?;
    let task: DevelopmentTask = model("task", Some(answer.into_inner()))?;
    let plan = task.execution_plan.as_ref().ok_or_else(|| {
        ApiError::new(StatusCode::BAD_GATEWAY, "the orchestrator answered with a task that has no plan")
    })?;
    let summary = PlanSummary {
        phases: plan
            .phases
            .iter()
            .map(|p| {
                let role = p.role();
                PhaseSummary {
                    name: p.name.clone(),
                    agent: role.map_or_else(|| p.agent_type.clone(), |r| r.spec_name().to_string()),
                    agent_type: role.map_or_else(|| p.agent_type.clone(), |r| r.to_string()),
                    estimated_duration: spoken(p.estimated_duration),
                    deliverables: p.deliverables.clone(),
                }
            })
            .collect(),
        total_estimated_duration: spoken(plan.total_estimated_duration),
        confidence_score: plan.confidence_score,
        risk_factors: plan.risk_factors.clone(),
    };
    let resources = serde_json::to_value(&plan.resource_requirements).unwrap_or(Value::Null);
    Ok(created(
        format!("/v1/tasks/{}", task.id),
        CreateTaskResponse {
            task_id: task.id.to_string(),
            status: task.status.to_string(),
            execution_plan: summary,
            resource_requirements: resources,
            task,
        },
    ))
}

#[utoipa::path(get, path = "/v1/tasks/{task_id}", params(("task_id" = String, Path)),
    responses((status = 200, body = Object, description = "The task (DevelopmentTask) with its status and progress"),
        (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)),
    security(("bearer" = [])))]
async fn get_task(
    State(app): State<App>,
    caller: Caller,
    Path(task_id): Path<String>,
) -> Result<Json<DevelopmentTask>, ApiError> {
    caller.needs(Permission::Read)?;
    Ok(Json(app.visible_task(&caller, &task_id).await?))
}

/// A task set running.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ExecutedTask {
    pub task_id: String,
    pub status: String,
    /// The last event already stored: events after it describe this run.
    pub last_seq: u64,
}

#[utoipa::path(post, path = "/v1/tasks/{task_id}/execute", params(("task_id" = String, Path)),
    responses((status = 202, body = ExecutedTask), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)),
    security(("bearer" = [])))]
async fn execute_task(
    State(app): State<App>,
    caller: Caller,
    Path(task_id): Path<String>,
) -> Result<(StatusCode, Json<ExecutedTask>), ApiError> {
    caller.needs(Permission::Write)?;
    let task = app.visible_task(&caller, &task_id).await?;
    let message = tasks::ExecuteTaskRequest { task_id: task.id.to_string() };
    let answer = app.tasks.clone().execute_task(change_as(&caller, message, QUICK_TIMEOUT)).await?.into_inner();
    let task: DevelopmentTask = model("task", answer.task)?;
    Ok((
        StatusCode::ACCEPTED,
        Json(ExecutedTask { task_id: task.id.to_string(), status: task.status.to_string(), last_seq: answer.last_seq }),
    ))
}

/// The gRPC edge: a call to the orchestrator's `TaskService`, `ProjectService` or
/// `SessionService` through the gateway, forwarded as it is (streams included) once its bearer
/// token (`authorization` metadata) is checked, naming the caller in identity metadata
/// ([`turbo_proto::identity`]): the orchestrator applies the caller's roles and projects.
async fn grpc_edge(State(app): State<App>, request: axum::extract::Request) -> axum::response::Response {
    use tonic::codegen::Service;
    let header = request.headers().get(axum::http::header::AUTHORIZATION).and_then(|v| v.to_str().ok());
    // The gateway's own refusals are marked for the audit (the orchestrator never sees them).
    let refused = |status: tonic::Status| {
        let mut response = status.into_http();
        response.extensions_mut().insert(crate::edge::RefusedAtEdge);
        response
    };
    let who = match app.authenticate(header).await {
        Err(e) => return refused(tonic::Status::unauthenticated(e.message)),
        Ok(who) => who,
    };
    let (mut parts, body) = request.into_parts();
    // The token stays at the edge; the orchestrator learns the user from the identity
    // metadata, which only the gateway sets (a client's own values are replaced).
    let mut metadata = tonic::metadata::MetadataMap::from_headers(std::mem::take(&mut parts.headers));
    metadata.remove("authorization");
    identify(&mut metadata, &who);
    parts.headers = metadata.into_headers();
    let forwarded = axum::http::Request::from_parts(parts, tonic::body::Body::new(body));
    let mut channel = app.channel.clone();
    let answer = match std::future::poll_fn(|cx| channel.poll_ready(cx)).await {
        Ok(()) => channel.call(forwarded).await,
        Err(e) => Err(e),
    };
    match answer {
        Ok(response) => response.map(axum::body::Body::new),
        Err(e) => {
            refused(tonic::Status::unavailable(format!("the orchestrator cannot be reached ({e}); try again shortly")))
        }
    }
}

/// Names the authenticated caller in a call's identity metadata, replacing whatever named
/// someone before: the orchestrator holds the call to that user's roles and projects.
pub(crate) fn identify(metadata: &mut tonic::metadata::MetadataMap, who: &Principal) {
    let roles: Vec<&str> = who.roles.iter().map(|r| r.name()).collect();
    turbo_proto::identity::set_user(metadata, &who.user, &roles);
}

struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).bearer_format("JWT").build()),
        );
    }
}

/// The answers every route may give whatever its handler does: 401 (no token), 429 (the rate
/// limit), 503 (the orchestrator or the store unreachable), and for a route with a body 400,
/// 413 and 415; each with the error body.
struct CommonAnswers;

impl utoipa::Modify for CommonAnswers {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::{ContentBuilder, Ref, RefOr, ResponseBuilder};
        let answer = |description: &str| {
            let content = ContentBuilder::new().schema(Some(Ref::from_schema_name("ErrorBody"))).build();
            RefOr::T(ResponseBuilder::new().description(description).content("application/json", content).build())
        };
        for item in openapi.paths.paths.values_mut() {
            for operation in
                [&mut item.get, &mut item.post, &mut item.patch, &mut item.put, &mut item.delete].into_iter().flatten()
            {
                let with_body = operation.request_body.is_some();
                let responses = &mut operation.responses.responses;
                let mut add = |code: &str, description: &str| {
                    responses.entry(code.to_string()).or_insert_with(|| answer(description));
                };
                add("401", "No or an invalid bearer token");
                add("429", "Past the rate limit; see Retry-After");
                add("503", "The orchestrator or the store cannot be reached now");
                if with_body {
                    add("400", "The body is not JSON of the documented shape");
                    add("413", "The body is larger than gateway.max_body_bytes");
                    add("415", "The body is not application/json");
                }
            }
        }
    }
}

/// The REST API's OpenAPI document, generated from the handlers above.
#[derive(OpenApi)]
#[openapi(
    info(title = "turbo-coder", description = "Projects, tasks and their plans behind the turbo-coder gateway."),
    paths(create_project, list_projects, get_project, update_project, delete_project, restore_project, create_task, get_task, execute_task,
        crate::sessions::start, crate::sessions::get, crate::sessions::end, crate::sessions::websocket,
        crate::edge::list_audit, crate::knowledge::search, crate::knowledge::add),
    components(schemas(ErrorBody)),
    modifiers(&BearerAuth, &CommonAnswers)
)]
pub struct ApiDoc;

/// What a 201 answer's id leads to.
struct Links {
    /// The path whose POST creates.
    created_by: &'static str,
    /// The id in its body, as a JSON pointer.
    id: &'static str,
    /// The operations that take it, by path and method.
    uses: &'static [(&'static str, &'static str)],
    /// The path parameter it fills.
    parameter: &'static str,
}

const LINKS: &[Links] = &[
    Links {
        created_by: "/v1/projects",
        id: "/project_id",
        uses: &[
            ("/v1/projects/{project_id}", "get"),
            ("/v1/projects/{project_id}", "patch"),
            ("/v1/projects/{project_id}", "delete"),
            ("/v1/projects/{project_id}/restore", "post"),
            ("/v1/projects/{project_id}/tasks", "post"),
            ("/v1/projects/{project_id}/sessions", "post"),
        ],
        parameter: "project_id",
    },
    Links {
        created_by: "/v1/projects/{project_id}/tasks",
        id: "/task_id",
        uses: &[("/v1/tasks/{task_id}", "get"), ("/v1/tasks/{task_id}/execute", "post")],
        parameter: "task_id",
    },
    Links {
        created_by: "/v1/projects/{project_id}/sessions",
        id: "/session_id",
        uses: &[
            ("/v1/sessions/{session_id}", "get"),
            ("/v1/sessions/{session_id}", "delete"),
            ("/v1/sessions/{session_id}/ws", "get"),
        ],
        parameter: "session_id",
    },
];

/// The OpenAPI document with its links: how the id a POST answers with is used next (clients
/// and stateful testers such as schemathesis follow them).
pub fn document() -> Value {
    let mut doc = serde_json::to_value(ApiDoc::openapi()).expect("the OpenAPI document always serializes");
    for Links { created_by, id, uses, parameter } in LINKS {
        let mut links = serde_json::Map::new();
        for (path, method) in *uses {
            // A route without one is left out (the document's test checks every link is there).
            let Some(operation) = doc["paths"][*path][*method]["operationId"].as_str().map(str::to_string) else {
                continue;
            };
            links.insert(
                operation.clone(),
                serde_json::json!({"operationId": operation, "parameters": {*parameter: format!("$response.body#{id}")}}),
            );
        }
        doc["paths"][*created_by]["post"]["responses"]["201"]["links"] = Value::Object(links);
    }
    // A project needs a language among its technologies: a constraint the derive cannot say.
    let languages: Vec<&str> = Language::ALL.iter().map(|l| l.as_str()).collect();
    let body = &mut doc["components"]["schemas"]["CreateProjectBody"];
    body["properties"]["technologies"]["minItems"] = 1.into();
    body["properties"]["technologies"]["items"]["pattern"] = "\\S".into();
    body["properties"]["technologies"]["contains"] = serde_json::json!({"type": "string", "enum": languages});
    if let Some(required) = body["required"].as_array_mut() {
        required.push("technologies".into());
    }
    doc
}

/// The OpenAPI document, generated once.
async fn openapi() -> axum::response::Response {
    use axum::response::IntoResponse;
    static DOC: std::sync::OnceLock<bytes::Bytes> = std::sync::OnceLock::new();
    let doc =
        DOC.get_or_init(|| serde_json::to_vec(&document()).expect("the OpenAPI document always serializes").into());
    ([(axum::http::header::CONTENT_TYPE, "application/json")], doc.clone()).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_openapi_document_lists_every_route_with_bearer_auth() {
        let doc = document();
        for path in [
            "/v1/projects",
            "/v1/projects/{project_id}",
            "/v1/projects/{project_id}/restore",
            "/v1/projects/{project_id}/tasks",
            "/v1/tasks/{task_id}",
            "/v1/tasks/{task_id}/execute",
            "/v1/projects/{project_id}/sessions",
            "/v1/sessions/{session_id}",
            "/v1/sessions/{session_id}/ws",
        ] {
            assert!(doc["paths"][path].is_object(), "{path} missing");
        }
        assert_eq!(doc["components"]["securitySchemes"]["bearer"]["scheme"], "bearer");
        assert!(doc["paths"]["/v1/projects"]["post"]["responses"]["409"].is_object());

        for path in ["/v1/projects", "/v1/projects/{project_id}/tasks", "/v1/projects/{project_id}/sessions"] {
            let created = &doc["paths"][path]["post"]["responses"]["201"];
            assert!(created["headers"]["Location"].is_object(), "{path} says where it created");
        }
        let links = doc["paths"]["/v1/projects"]["post"]["responses"]["201"]["links"].as_object().unwrap();
        assert_eq!(links.len(), 6);
        let get = &links[doc["paths"]["/v1/projects/{project_id}"]["get"]["operationId"].as_str().unwrap()];
        assert_eq!(get["parameters"]["project_id"], "$response.body#/project_id");
        let task_links =
            doc["paths"]["/v1/projects/{project_id}/tasks"]["post"]["responses"]["201"]["links"].as_object().unwrap();
        assert_eq!(task_links.len(), 2);
        assert!(task_links.values().all(|l| l["parameters"]["task_id"] == "$response.body#/task_id"));
        let session_links = &doc["paths"]["/v1/projects/{project_id}/sessions"]["post"]["responses"]["201"]["links"];
        assert_eq!(session_links.as_object().unwrap().len(), 3);
        let technologies = &doc["components"]["schemas"]["CreateProjectBody"]["properties"]["technologies"];
        assert!(technologies["contains"]["enum"].as_array().unwrap().contains(&"python".into()), "{technologies}");
    }

    #[test]
    fn durations_read_as_minutes() {
        assert_eq!(spoken(Duration::from_secs(600)), "10 minutes");
        assert_eq!(spoken(Duration::from_secs(61)), "2 minutes");
        assert_eq!(spoken(Duration::from_secs(60)), "1 minute");
    }
}
