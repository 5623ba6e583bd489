//! What every routed request passes through before and after its handler: the caller's rate
//! limit, and the audit of every request that changes something.
//!
//! - **Rate limit**, per user, `gateway.rate_limit_per_hour` (1000 by default, as the spec
//!   says), counted in the store's `rate_limits` table that every replica shares
//!   (`turbo_store::Store::count_requests`, one atomic upsert). The estimate slides: the
//!   previous hour's count weighs as much as is left of it. Answers carry `X-RateLimit-Limit`,
//!   `X-RateLimit-Remaining` and `X-RateLimit-Reset` (seconds); past the limit the answer is 429
//!   with `Retry-After`. Requests without a valid token are not counted (they end in 401).
//!
//!   A replica does not write once per request: it claims a [`Budget`] of requests in the
//!   store and serves them from memory. The first claim of a user is one request; each later
//!   one is a sixteenth of what the user has left (at most [`CLAIM_MAX`]), so a user far from
//!   the limit costs one write per 32 requests and a user near it one per request: the limit
//!   is never exceeded across replicas. What a replica claimed and did not serve still counts
//!   (at most a sixteenth of the remainder per replica a user used), as a refused request does.
//! - **Audit**: every request that changes something is recorded once in the store's audit
//!   log: who (`user:<name>`, or `anonymous`), what (`project.create`, `task.execute`, ...),
//!   the id acted on, and the outcome; never the body or the token. A change the gateway sends
//!   on is sent naming the caller (identity metadata), and the orchestrator that carries it
//!   out records it (outcome `ok` or `error: <gRPC code>: <message>`); the gateway records
//!   what it answers itself (outcome `error: <HTTP status>`: no valid token, a role without
//!   the permission, a body it refuses, the rate limit) and a change the orchestrator never
//!   answered (503, 504). For a gRPC-edge call it records only its own refusals, as the
//!   `<noun>.<verb>` of the method with the gRPC status. Reads are not audited. `GET
//!   /v1/audit` lists entries for admins.
//!
//! When the store cannot be reached, a request is let through (and the failure logged):
//! availability over counting.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
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

/// A claim is at most this many requests.
const CLAIM_MAX: u64 = 32;
/// A claim is this fraction of what the user has left.
const CLAIM_SHARE: u64 = 16;
/// Past this many users in memory, budgets of past windows are dropped.
const BUDGETS_KEPT: usize = 10_000;

/// The store and the limit, shared by the middleware.
#[derive(Clone)]
pub struct Edge {
    pub store: Store,
    pub per_hour: u64,
    budgets: Arc<Mutex<Budgets>>,
}

/// Each user's budget, and the window budgets were last dropped in.
#[derive(Default)]
struct Budgets {
    by_user: HashMap<String, Arc<tokio::sync::Mutex<Budget>>>,
    swept: u64,
}

/// Requests of one user this replica has counted in the store and not served yet.
#[derive(Debug, Default)]
struct Budget {
    /// The window the claim was counted in; a budget does not outlive its window.
    window: u64,
    left: u64,
    /// The user's estimated use when the budget was claimed, the claim included.
    used: u64,
    /// The size of the next claim.
    next: u64,
}

/// What the limit says of one request.
#[derive(Debug, PartialEq, Eq)]
enum Verdict {
    Served { remaining: u64, reset: u64 },
    Refused { reset: u64 },
}

impl Budget {
    /// Serves one request from the budget, when it has one left in this window.
    fn take(&mut self, per_hour: u64, window: u64, reset: u64) -> Option<Verdict> {
        if self.window != window || self.left == 0 {
            return None;
        }
        self.left -= 1;
        Some(Verdict::Served { remaining: per_hour.saturating_sub(self.used - self.left), reset })
    }

    /// Takes in the counts the store returned for a claim of `claimed` requests, and serves
    /// one request from it when it fits under the limit.
    fn claimed(&mut self, claimed: u64, used: u64, per_hour: u64, window: u64, reset: u64) -> Verdict {
        // Of the claim, what fits under the limit (the claim may overshoot: others used it too).
        let fits = per_hour.saturating_sub(used.saturating_sub(claimed)).min(claimed);
        self.next = (per_hour.saturating_sub(used) / CLAIM_SHARE).clamp(1, CLAIM_MAX);
        if fits == 0 {
            self.left = 0;
            return Verdict::Refused { reset: reset.max(1) };
        }
        // What does not fit counts as used, as a refused request does.
        *self = Budget { window, left: fits - 1, used: used - (claimed - fits), next: self.next };
        Verdict::Served { remaining: per_hour.saturating_sub(self.used - self.left), reset }
    }
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
    // A call of the gRPC edge: audited by the orchestrator once forwarded, here only when the
    // gateway itself refuses it, and then only a call that would change something.
    let rpc = route.starts_with("/turbo.").then(|| request.uri().path().to_string());
    let action = match &rpc {
        Some(path) => rpc_action(path).map(str::to_string),
        None => action_of(&method, &route),
    };
    let target = target_of(request.uri().path(), &route);

    let mut limit_headers = None;
    if let (Some(edge), Some(who)) = (&app.edge, &caller) {
        match edge.admit(&who.user).await {
            Some(Verdict::Served { remaining, reset }) => limit_headers = Some((edge.per_hour, remaining, reset)),
            Some(Verdict::Refused { reset }) => {
                let message = format!("more than {} requests in an hour: wait {reset} s", edge.per_hour);
                let mut response = match rpc {
                    Some(_) => tonic::Status::resource_exhausted(message).into_http::<axum::body::Body>(),
                    None => ApiError::new(StatusCode::TOO_MANY_REQUESTS, message).into_response(),
                };
                set_limit_headers(&mut response, edge.per_hour, 0, reset);
                response.headers_mut().insert("retry-after", HeaderValue::from(reset));
                if let Some(action) = &action {
                    audit(edge, who, action, &target, detail(&method, &route, rpc.as_deref(), &response)).await;
                }
                return response;
            }
            None => {}
        }
    }

    let (mut response, forwarded) = FORWARDED
        .scope(std::cell::Cell::new(false), async move {
            let response = next.run(request).await;
            (response, FORWARDED.with(std::cell::Cell::get))
        })
        .await;
    if let Some((limit, remaining, reset)) = limit_headers {
        set_limit_headers(&mut response, limit, remaining, reset);
    }
    // What the orchestrator carried out it audited itself, under the caller; an answer that
    // says it could not be reached or did not answer is audited here too.
    let unanswered = matches!(response.status(), StatusCode::SERVICE_UNAVAILABLE | StatusCode::GATEWAY_TIMEOUT);
    let audited = match rpc {
        Some(_) => response.extensions().get::<RefusedAtEdge>().is_some(),
        None => !forwarded || unanswered,
    };
    if let (Some(edge), Some(action), true) = (&app.edge, &action, audited) {
        let anonymous = Principal { user: String::new(), roles: Vec::new() };
        let who = caller.as_ref().unwrap_or(&anonymous);
        audit(edge, who, action, &target, detail(&method, &route, rpc.as_deref(), &response)).await;
    }
    response
}

tokio::task_local! {
    /// Set while a REST request is served once its change was sent to the orchestrator naming
    /// the caller ([`forwarded`]).
    static FORWARDED: std::cell::Cell<bool>;
}

/// Notes that the request being served sent its change to the orchestrator naming the caller:
/// the orchestrator audits it, so the edge does not (unless it was never answered).
pub(crate) fn forwarded() {
    let _ = FORWARDED.try_with(|f| f.set(true));
}

/// Marks a gRPC-edge answer the gateway gave itself (no token, the orchestrator unreachable):
/// the orchestrator never saw the call, so the gateway audits it.
#[derive(Clone, Copy, Debug)]
pub(crate) struct RefusedAtEdge;

impl Edge {
    pub fn new(store: Store, per_hour: u64) -> Edge {
        Edge { store, per_hour, budgets: Arc::default() }
    }

    /// Counts one request of `user` (a WebSocket message) against the rate limit; Err with the
    /// seconds until the window ends when over it. A store that cannot count lets it through.
    pub(crate) async fn count(&self, user: &str) -> Result<(), u64> {
        match self.admit(user).await {
            Some(Verdict::Refused { reset }) => Err(reset),
            Some(Verdict::Served { .. }) | None => Ok(()),
        }
    }

    /// The limit's verdict on one request of `user`: from the replica's budget when it has one,
    /// else from a claim in the store. None when the store cannot count (logged).
    async fn admit(&self, user: &str) -> Option<Verdict> {
        let budget = {
            let mut budgets = self.budgets.lock().unwrap_or_else(|p| p.into_inner());
            let window = now_s() / WINDOW_S * WINDOW_S;
            // At most once a window: more users than kept, all active now, would sweep at
            // every request and drop nothing.
            if budgets.by_user.len() > BUDGETS_KEPT && budgets.swept != window {
                budgets.swept = window;
                budgets.by_user.retain(|_, b| b.try_lock().map_or(true, |b| b.window == window));
            }
            budgets.by_user.entry(user.to_string()).or_default().clone()
        };
        // Requests of one user wait for each other's claim instead of each making one.
        let mut budget = budget.lock().await;
        let now = now_s();
        let (window, reset) = (now / WINDOW_S * WINDOW_S, WINDOW_S - now % WINDOW_S);
        if let Some(verdict) = budget.take(self.per_hour, window, reset) {
            return Some(verdict);
        }
        let claim = budget.next.max(1);
        match self.store.count_requests(&format!("user:{user}"), claim, WINDOW_S, now).await {
            Ok(counts) => {
                let (used, reset) = estimate(counts, now);
                Some(budget.claimed(claim, used, self.per_hour, window, reset))
            }
            Err(error) => {
                tracing::warn!(%error, "cannot count the request for its rate limit; it is let through");
                None
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

/// The audit action of a gRPC call that changes something, by its path
/// (`/turbo.projects.v1.ProjectService/DeleteProject`); None for a read.
fn rpc_action(path: &str) -> Option<&'static str> {
    Some(match path.rsplit('/').next()? {
        "CreateProject" => "project.create",
        "UpdateProject" => "project.update",
        "DeleteProject" => "project.delete",
        "RestoreProject" => "project.restore",
        "CreateTask" => "task.create",
        "CancelTask" => "task.cancel",
        "ExecuteTask" => "task.execute",
        "StartSession" => "session.start",
        "EndSession" => "session.end",
        "Interact" => "session.interact",
        _ => return None,
    })
}

/// The audit action of a route and method, `<noun>.<verb>`, for a request that changes
/// something; None for the others: reads, a POST that only searches, a method the route does
/// not take (405: nothing happened).
fn action_of(method: &Method, route: &str) -> Option<String> {
    if !mutating(method) {
        return None;
    }
    let action = match (method.as_str(), route) {
        ("POST", "/v1/projects") => "project.create",
        ("PATCH", "/v1/projects/{project_id}") => "project.update",
        ("DELETE", "/v1/projects/{project_id}") => "project.delete",
        ("POST", "/v1/projects/{project_id}/restore") => "project.restore",
        ("POST", "/v1/projects/{project_id}/tasks") => "task.create",
        ("POST", "/v1/tasks/{task_id}/execute") => "task.execute",
        ("POST", "/v1/projects/{project_id}/sessions") => "session.start",
        ("DELETE", "/v1/sessions/{session_id}") => "session.end",
        ("POST", "/v1/knowledge") => "knowledge.add",
        _ => return None,
    };
    Some(action.to_string())
}

/// What an audit entry says of a request besides who and what: the route (or the gRPC
/// method) and the answer's status; its outcome from the status.
struct Detail {
    json: serde_json::Value,
    failure: Option<String>,
}

fn detail(method: &Method, route: &str, rpc: Option<&str>, response: &Response) -> Detail {
    let status = response.status();
    if let Some(path) = rpc {
        // A gRPC answer the gateway gives itself carries its status in the headers.
        let code = response
            .headers()
            .get("grpc-status")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<i32>().ok())
            .map(tonic::Code::from)
            .unwrap_or(tonic::Code::Ok);
        return Detail {
            json: serde_json::json!({ "via": "gateway", "rpc": path, "grpc_status": code as i32 }),
            failure: (code != tonic::Code::Ok).then(|| format!("{code:?}")),
        };
    }
    Detail {
        json: serde_json::json!({
            "via": "gateway",
            "method": method.as_str(),
            "route": route,
            "status": status.as_u16(),
        }),
        failure: (!status.is_success())
            .then(|| format!("{} {}", status.as_u16(), status.canonical_reason().unwrap_or(""))),
    }
}

async fn audit(edge: &Edge, who: &Principal, action: &str, target: &str, detail: Detail) {
    let actor = if who.user.is_empty() { "anonymous".to_string() } else { format!("user:{}", who.user) };
    let mut entry = NewAuditEntry::new(actor, action, target).with_detail(detail.json);
    if let Some(failure) = detail.failure {
        entry = entry.failed(failure);
    }
    if let Err(error) = edge.store.record_audit(entry).await {
        tracing::warn!(%error, action, "cannot record the request in the audit log");
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
    fn a_budget_is_claimed_small_near_the_limit_and_never_serves_past_it() {
        let (limit, window, reset) = (1000, 7200, 600);
        let mut budget = Budget::default();
        assert_eq!(budget.take(limit, window, reset), None, "nothing claimed yet");
        // A first claim is one request; the user had used 10 before (another replica).
        assert_eq!(budget.claimed(1, 11, limit, window, reset), Verdict::Served { remaining: 989, reset });
        assert_eq!(budget.next, CLAIM_MAX, "far from the limit: the largest claim");
        assert_eq!(budget.take(limit, window, reset), None);
        assert_eq!(budget.claimed(32, 43, limit, window, reset), Verdict::Served { remaining: 988, reset });
        for remaining in (957..988).rev() {
            assert_eq!(budget.take(limit, window, reset), Some(Verdict::Served { remaining, reset }));
        }
        assert_eq!(budget.take(limit, window, reset), None, "all 32 served");
        assert_eq!(budget.take(limit, window + 3600, reset), None, "a budget ends with its window");

        // Near the limit claims shrink to one request; an overshooting claim serves what fits.
        let mut near = Budget::default();
        assert_eq!(near.claimed(1, 990, limit, window, reset), Verdict::Served { remaining: 10, reset });
        assert_eq!(near.next, 1);
        let mut raced = Budget::default();
        assert_eq!(raced.claimed(4, 1002, limit, window, reset), Verdict::Served { remaining: 1, reset });
        assert_eq!(raced.take(limit, window, reset), Some(Verdict::Served { remaining: 0, reset }));
        assert_eq!(raced.take(limit, window, reset), None, "two of the four fit");
        assert_eq!(raced.claimed(1, 1003, limit, window, reset), Verdict::Refused { reset });
        assert_eq!(raced.claimed(1, 1004, limit, window, 0), Verdict::Refused { reset: 1 }, "Retry-After >= 1");
    }

    #[test]
    fn routes_name_their_action_and_target() {
        let id = "5f0c1d2e-0000-4000-8000-000000000000";
        assert_eq!(target_of(&format!("/v1/projects/{id}/tasks"), "/v1/projects/{project_id}/tasks"), id);
        assert_eq!(target_of("/v1/projects", "/v1/projects"), "");
        assert_eq!(action_of(&Method::DELETE, "/v1/projects/{project_id}").as_deref(), Some("project.delete"));
        assert_eq!(action_of(&Method::POST, "/v1/tasks/{task_id}/execute").as_deref(), Some("task.execute"));
        assert_eq!(action_of(&Method::GET, "/v1/tasks/{task_id}"), None, "reads are not audited");
        assert_eq!(action_of(&Method::POST, "/v1/knowledge/search"), None, "nor is a search");
        assert_eq!(action_of(&Method::PUT, "/v1/projects"), None, "nor a method the route does not take");
        assert_eq!(rpc_action("/turbo.projects.v1.ProjectService/DeleteProject"), Some("project.delete"));
        assert_eq!(rpc_action("/turbo.sessions.v1.SessionService/Interact"), Some("session.interact"));
        assert_eq!(rpc_action("/turbo.tasks.v1.TaskService/WatchTask"), None);
    }
}
