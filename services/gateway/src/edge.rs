//! What every routed request passes through before and after its handler: the caller's rate
//! limit, and the audit of every request that changes something.
//!
//! - **Rate limit**, per user, `gateway.rate_limit_per_hour` (1000 by default, as the spec
//!   says), counted in the store's `rate_limits` table that every replica shares (one atomic
//!   upsert per request; `turbo_store::Store::count_request`). The estimate slides: the
//!   previous hour's count weighs as much as is left of it. Answers carry `X-RateLimit-Limit`,
//!   `X-RateLimit-Remaining` and `X-RateLimit-Reset` (seconds); past the limit the answer is 429
//!   with `Retry-After`. Requests without a valid token are not counted (they end in 401).
//! - **Audit**: every POST, PATCH, PUT and DELETE is recorded in the store's audit log: who
//!   (`user:<name>`, or `anonymous`), what (`project.create`, `task.execute`, ...), the id in its
//!   path, and the outcome (`ok`, or `error: <status>`), with the route and status as detail;
//!   never the body or the token. `GET /v1/audit` lists entries for admins.
//!
//! When the store cannot be reached, a request is let through (and the failure logged):
//! availability over counting.

use std::time::{SystemTime, UNIX_EPOCH};

use axum::Json;
use axum::extract::{MatchedPath, Query, Request, State};
use axum::http::{HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use turbo_store::{AuditFilter, NewAuditEntry, Store};

use crate::auth::{Permission, Principal};
use crate::problem::ApiError;
use crate::rest::{App, Caller};

/// The rate limit's window.
const WINDOW_S: u64 = 3600;

/// The store and the limit, shared by the middleware.
#[derive(Clone)]
pub struct Edge {
    pub store: Store,
    pub per_hour: u64,
}

fn now_s() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_secs()
}

/// The sliding estimate of requests in the last hour, and when the current window ends.
fn estimate(counts: turbo_store::WindowCounts, now: u64) -> (u64, u64) {
    let elapsed = now % WINDOW_S;
    let previous_share = counts.previous * (WINDOW_S - elapsed) / WINDOW_S;
    (counts.current + previous_share, WINDOW_S - elapsed)
}

/// The middleware: limits, runs the handler, audits.
pub async fn edge(State(app): State<App>, mut request: Request, next: Next) -> Response {
    let header = request.headers().get(axum::http::header::AUTHORIZATION).and_then(|v| v.to_str().ok());
    let caller: Option<Principal> = match header {
        Some(_) => app.authenticate(header).await.ok(),
        None => None,
    };
    if let Some(who) = &caller {
        // The handler's `Caller` reads it from here instead of checking the token again.
        request.extensions_mut().insert(who.clone());
    }
    let method = request.method().clone();
    let route = request.extensions().get::<MatchedPath>().map(|p| p.as_str().to_string()).unwrap_or_default();
    let target = target_of(request.uri().path(), &route);

    let mut limit_headers = None;
    if let (Some(edge), Some(who)) = (&app.edge, &caller) {
        let now = now_s();
        match edge.store.count_request(&format!("user:{}", who.user), WINDOW_S, now).await {
            Ok(counts) => {
                let (used, reset) = estimate(counts, now);
                if used > edge.per_hour {
                    let mut response = ApiError::new(
                        StatusCode::TOO_MANY_REQUESTS,
                        format!("more than {} requests in an hour: wait {reset} s", edge.per_hour),
                    )
                    .into_response();
                    set_limit_headers(&mut response, edge.per_hour, 0, reset);
                    response.headers_mut().insert("retry-after", HeaderValue::from(reset.max(1)));
                    audit(edge, who, &method, &route, &target, response.status()).await;
                    return response;
                }
                limit_headers = Some((edge.per_hour, edge.per_hour - used, reset));
            }
            Err(error) => tracing::warn!(%error, "cannot count the request for its rate limit; it is let through"),
        }
    }

    let mut response = next.run(request).await;
    if let Some((limit, remaining, reset)) = limit_headers {
        set_limit_headers(&mut response, limit, remaining, reset);
    }
    if let (Some(edge), true) = (&app.edge, mutating(&method)) {
        let anonymous = Principal { user: String::new(), roles: Vec::new() };
        audit(edge, caller.as_ref().unwrap_or(&anonymous), &method, &route, &target, response.status()).await;
    }
    response
}

impl Edge {
    /// Counts one request of `user` (a WebSocket message) against the rate limit; Err with the
    /// seconds until the window ends when over it. A store that cannot count lets it through.
    pub(crate) async fn count(&self, user: &str) -> Result<(), u64> {
        let now = now_s();
        match self.store.count_request(&format!("user:{user}"), WINDOW_S, now).await {
            Ok(counts) => {
                let (used, reset) = estimate(counts, now);
                if used > self.per_hour { Err(reset.max(1)) } else { Ok(()) }
            }
            Err(error) => {
                tracing::warn!(%error, "cannot count the message for its rate limit; it is let through");
                Ok(())
            }
        }
    }
}

fn set_limit_headers(response: &mut Response, limit: u64, remaining: u64, reset: u64) {
    let headers = response.headers_mut();
    headers.insert("x-ratelimit-limit", HeaderValue::from(limit));
    headers.insert("x-ratelimit-remaining", HeaderValue::from(remaining));
    headers.insert("x-ratelimit-reset", HeaderValue::from(reset));
}

fn mutating(method: &Method) -> bool {
    matches!(*method, Method::POST | Method::PUT | Method::PATCH | Method::DELETE)
}

/// The id in a path, at the place of the route's first `{...}`.
fn target_of(path: &str, route: &str) -> String {
    route
        .split('/')
        .zip(path.split('/'))
        .find(|(r, _)| r.starts_with('{'))
        .map(|(_, p)| p.chars().take(64).collect())
        .unwrap_or_default()
}

/// The audit action of a route and method: `<noun>.<verb>`.
fn action_of(method: &Method, route: &str) -> String {
    match (method.as_str(), route) {
        ("POST", "/v1/projects") => "project.create",
        ("PATCH", "/v1/projects/{project_id}") => "project.update",
        ("DELETE", "/v1/projects/{project_id}") => "project.delete",
        ("POST", "/v1/projects/{project_id}/restore") => "project.restore",
        ("POST", "/v1/projects/{project_id}/tasks") => "task.create",
        ("POST", "/v1/tasks/{task_id}/execute") => "task.execute",
        ("POST", "/v1/projects/{project_id}/sessions") => "session.start",
        ("DELETE", "/v1/sessions/{session_id}") => "session.end",
        _ => "request",
    }
    .to_string()
}

async fn audit(edge: &Edge, who: &Principal, method: &Method, route: &str, target: &str, status: StatusCode) {
    let actor = if who.user.is_empty() { "anonymous".to_string() } else { format!("user:{}", who.user) };
    let mut entry = NewAuditEntry::new(actor, action_of(method, route), target).with_detail(serde_json::json!({
        "via": "gateway",
        "method": method.as_str(),
        "route": route,
        "status": status.as_u16(),
    }));
    if !status.is_success() {
        entry = entry.failed(format!("{} {}", status.as_u16(), status.canonical_reason().unwrap_or("")));
    }
    if let Err(error) = edge.store.record_audit(entry).await {
        tracing::warn!(%error, route, "cannot record the request in the audit log");
    }
}

/// `GET /v1/audit` filters.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct AuditQuery {
    /// e.g. user:ana
    pub actor: Option<String>,
    /// e.g. project.delete
    pub action: Option<String>,
    /// The id acted on.
    pub target: Option<String>,
    /// RFC 3339; entries at or after it.
    pub since: Option<String>,
    /// At most this many (1 to 1000; default 100).
    pub limit: Option<u64>,
}

/// One audit entry.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct AuditView {
    pub id: i64,
    pub at: String,
    pub actor: String,
    pub action: String,
    pub target: String,
    pub outcome: String,
    #[schema(value_type = Object)]
    pub detail: Option<serde_json::Value>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct AuditList {
    pub entries: Vec<AuditView>,
}

#[utoipa::path(get, path = "/v1/audit", params(AuditQuery),
    responses((status = 200, body = AuditList), (status = 400, body = crate::problem::ErrorBody),
        (status = 401, body = crate::problem::ErrorBody), (status = 403, body = crate::problem::ErrorBody)),
    security(("bearer" = [])))]
pub async fn list_audit(
    State(app): State<App>,
    caller: Caller,
    query: Result<Query<AuditQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<AuditList>, ApiError> {
    caller.needs(Permission::Admin)?;
    let Query(q) = query.map_err(ApiError::from)?;
    let since = match q.since.as_deref() {
        Some(text) => Some(
            chrono::DateTime::parse_from_rfc3339(text)
                .map_err(|e| {
                    ApiError::field("since", format!("is not an RFC 3339 time ({e}), e.g. 2026-12-01T00:00:00Z"))
                })?
                .with_timezone(&chrono::Utc),
        ),
        None => None,
    };
    let edge = app.edge.as_ref().ok_or_else(|| ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "no audit store"))?;
    let filter =
        AuditFilter { actor: q.actor, action: q.action, target: q.target, since, limit: q.limit.unwrap_or(100) };
    let entries = edge.store.list_audit(filter).await.map_err(|e| {
        tracing::error!(error = %e, "cannot read the audit log");
        ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "the audit log cannot be read now; try again")
    })?;
    Ok(Json(AuditList {
        entries: entries
            .into_iter()
            .map(|e| AuditView {
                id: e.id,
                at: e.at.to_rfc3339(),
                actor: e.actor,
                action: e.action,
                target: e.target,
                outcome: e.outcome,
                detail: e.detail,
            })
            .collect(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_estimate_slides_over_the_previous_window() {
        let counts = turbo_store::WindowCounts { current: 10, previous: 100 };
        // A quarter into the window: three quarters of the previous hour still count.
        assert_eq!(estimate(counts, 7200 + 900), (10 + 75, 2700));
        assert_eq!(estimate(counts, 7200), (110, 3600));
    }

    #[test]
    fn routes_name_their_action_and_target() {
        let id = "5f0c1d2e-0000-4000-8000-000000000000";
        assert_eq!(target_of(&format!("/v1/projects/{id}/tasks"), "/v1/projects/{project_id}/tasks"), id);
        assert_eq!(target_of("/v1/projects", "/v1/projects"), "");
        assert_eq!(action_of(&Method::DELETE, "/v1/projects/{project_id}"), "project.delete");
        assert_eq!(action_of(&Method::POST, "/v1/tasks/{task_id}/execute"), "task.execute");
    }
}
