//! Interactive sessions: `POST /v1/projects/{project_id}/sessions` opens one, `GET` and
//! `DELETE /v1/sessions/{session_id}` read and end it, and `GET /v1/sessions/{session_id}/ws`
//! is its WebSocket, bridged to the orchestrator's `SessionService.Interact` stream and to
//! `TaskService.WatchTask` for the task the session follows.
//!
//! # The WebSocket protocol
//! JSON text messages with a `message_type`. From the client: `code_edit`, `execute_code`,
//! `ai_request`, `tool_execution` (the spec's fields, plus an optional `message_id` echoed as
//! `reply_to` on the answers). From the server: `code_suggestion`, `execution_result`,
//! `ai_response`, `system_notification` (each with `session_id`, `reply_to`, `sent_at`), and
//! `task_event`: one event of the followed task with its `task_id` and `seq` (1-based, gapless
//! per task). A client that reconnects with `?after_seq=N` gets the task's events after N
//! only. When an `ai_request` starts a task, a `system_notification` with a `watch_task`
//! action names it and its events follow.
//!
//! Only the session's user (or an admin) may connect; the bearer token goes in the
//! `Authorization` header of the upgrade request. Each client message counts against the
//! user's rate limit. A message that is not JSON, has an unknown `message_type` or bad fields
//! is answered with a `system_notification` of level `error` naming the problem; the
//! connection stays open. A message larger than `gateway.ws_max_message_bytes` closes it with
//! code 1009.
//!
//! # Backpressure
//! Messages are forwarded one at a time: the gateway reads the next server message or task
//! event only once the previous one is written to the socket, so a slow client holds back the
//! streams behind it (gRPC flow control) instead of growing a buffer. A client that takes
//! longer than [`SEND_TIMEOUT`] to take one message is disconnected with code 1013; it
//! reconnects with `after_seq` and loses no task event. Client messages wait the same way when
//! the orchestrator already runs 8 requests of the stream (its `IN_FLIGHT`): the socket is not
//! read until one finishes.

use std::time::Duration;

use axum::Json;
use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Streaming;
use turbo_core::agent::AgentRole;
use turbo_proto::common::v1 as common;
use turbo_proto::convert::{ProtoEnum, duration_to_proto};
use turbo_proto::sessions::v1 as pb;
use turbo_proto::tasks::v1 as tasks;

use crate::auth::Permission;
use crate::problem::{ApiError, ErrorBody};
use crate::rest::{App, Caller, QUICK_TIMEOUT, body, change_as, path_id, request, rfc3339};

/// Longest a client may take to accept one message before it is disconnected (code 1013).
pub const SEND_TIMEOUT: Duration = Duration::from_secs(30);
/// The read and write buffers of a WebSocket connection.
const WS_BUFFER: usize = 8 * 1024;
/// Client messages queued for the orchestrator before the socket is no longer read.
const TO_ORCHESTRATOR: usize = 8;
/// The client message types, as the error for an unknown one lists them.
const CLIENT_TYPES: &str = "code_edit, execute_code, ai_request, tool_execution";

/// `POST /v1/projects/{project_id}/sessions`.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StartSessionBody {
    /// A task of the project to follow (its events stream over the WebSocket).
    pub task_id: Option<String>,
    /// Ended after this long without messages: 1 to 86400 (default 1800).
    #[schema(minimum = 1, maximum = 86400)]
    pub idle_timeout_seconds: Option<u64>,
}

/// A session.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct SessionView {
    pub session_id: String,
    pub project_id: String,
    pub task_id: Option<String>,
    pub user: String,
    /// active or ended.
    pub status: &'static str,
    pub started_at: Option<String>,
    pub last_active_at: Option<String>,
    pub ended_at: Option<String>,
    pub end_reason: Option<String>,
    pub idle_timeout_seconds: u64,
    /// Where to open its WebSocket (with the same bearer token).
    pub websocket_url: String,
}

fn view(s: pb::Session) -> SessionView {
    SessionView {
        websocket_url: format!("/v1/sessions/{}/ws", s.session_id),
        status: if s.ended_at.is_some() { "ended" } else { "active" },
        session_id: s.session_id,
        project_id: s.project_id,
        task_id: s.task_id,
        user: s.user,
        started_at: rfc3339(s.started_at),
        last_active_at: rfc3339(s.last_active_at),
        ended_at: rfc3339(s.ended_at),
        end_reason: s.end_reason,
        idle_timeout_seconds: s.idle_timeout.map_or(0, |d| u64::try_from(d.seconds).unwrap_or(0)),
    }
}

impl App {
    /// The session, if the caller opened it or is an admin (404 otherwise, as for none).
    async fn own_session(&self, caller: &Caller, id: &str) -> Result<pb::Session, ApiError> {
        let id = path_id("session", id)?;
        let session = self
            .sessions
            .clone()
            .get_session(request(pb::GetSessionRequest { session_id: id.clone() }, QUICK_TIMEOUT))
            .await?
            .into_inner();
        if session.user != caller.0.user && !caller.0.may(Permission::Admin) {
            return Err(ApiError::not_found(format!("no session '{id}'")));
        }
        Ok(session)
    }
}

#[utoipa::path(post, path = "/v1/projects/{project_id}/sessions", params(("project_id" = String, Path)),
    request_body = StartSessionBody,
    responses((status = 201, body = SessionView, headers(("Location" = String, description = "/v1/sessions/{session_id}"))), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 422, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn start(
    State(app): State<App>,
    caller: Caller,
    Path(project_id): Path<String>,
    payload: Result<Json<StartSessionBody>, JsonRejection>,
) -> Result<crate::rest::Created<SessionView>, ApiError> {
    caller.needs(Permission::Write)?;
    let b = body(payload)?;
    let project = app.visible_project(&caller, &project_id).await?;
    let idle_timeout = match b.idle_timeout_seconds {
        Some(s) if !(1..=86_400).contains(&s) => {
            return Err(ApiError::field("idle_timeout_seconds", "must be from 1 to 86400"));
        }
        Some(s) => Some(duration_to_proto(Duration::from_secs(s))),
        None => None,
    };
    let task_id = match b.task_id {
        Some(t) => Some(
            uuid::Uuid::parse_str(&t)
                .map_err(|_| ApiError::field("task_id", format!("'{t}' is not a task id (a UUID)")))?
                .to_string(),
        ),
        None => None,
    };
    let message = pb::StartSessionRequest {
        project_id: project.id.to_string(),
        task_id,
        idle_timeout,
        user: caller.0.user.clone(),
    };
    let session = app.sessions.clone().start_session(change_as(&caller, message, QUICK_TIMEOUT)).await?.into_inner();
    let view = view(session);
    Ok(crate::rest::created(format!("/v1/sessions/{}", view.session_id), view))
}

#[utoipa::path(get, path = "/v1/sessions/{session_id}", params(("session_id" = String, Path)),
    responses((status = 200, body = SessionView), (status = 404, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn get(
    State(app): State<App>,
    caller: Caller,
    Path(session_id): Path<String>,
) -> Result<Json<SessionView>, ApiError> {
    caller.needs(Permission::Read)?;
    Ok(Json(view(app.own_session(&caller, &session_id).await?)))
}

#[utoipa::path(delete, path = "/v1/sessions/{session_id}", params(("session_id" = String, Path)),
    responses((status = 200, body = SessionView), (status = 404, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn end(
    State(app): State<App>,
    caller: Caller,
    Path(session_id): Path<String>,
) -> Result<Json<SessionView>, ApiError> {
    caller.needs(Permission::Read)?;
    let session = app.own_session(&caller, &session_id).await?;
    let message = pb::EndSessionRequest { session_id: session.session_id, user: caller.0.user.clone() };
    Ok(Json(view(app.sessions.clone().end_session(change_as(&caller, message, QUICK_TIMEOUT)).await?.into_inner())))
}

/// `GET /v1/sessions/{session_id}/ws` query.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct WsQuery {
    /// Resume the followed task's events after this seq (0 or absent: from the first).
    pub after_seq: Option<u64>,
}

#[utoipa::path(get, path = "/v1/sessions/{session_id}/ws", params(("session_id" = String, Path), WsQuery),
    responses((status = 101, description = "Switching to the WebSocket protocol"),
        (status = 400, body = ErrorBody, description = "Not a WebSocket handshake (Upgrade: websocket)"), (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody, description = "The session has ended")),
    security(("bearer" = [])))]
pub async fn websocket(
    State(app): State<App>,
    caller: Caller,
    Path(session_id): Path<String>,
    query: Result<Query<WsQuery>, QueryRejection>,
    upgrade: Result<WebSocketUpgrade, axum::extract::ws::rejection::WebSocketUpgradeRejection>,
) -> Result<Response, ApiError> {
    caller.needs(Permission::Read)?;
    let Query(q) = query.map_err(ApiError::from)?;
    let session = app.own_session(&caller, &session_id).await?;
    if session.ended_at.is_some() {
        let why = session.end_reason.unwrap_or_default();
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            format!("session {session_id} has ended ({why}): start a new one"),
        ));
    }
    let upgrade = upgrade.map_err(|e| {
        ApiError::new(StatusCode::BAD_REQUEST, format!("{e}: open this path as a WebSocket (Upgrade: websocket)"))
    })?;
    let max = app.ws_max_message_bytes;
    let who = caller.0;
    // Small buffers (the defaults are 128 KiB each, per connection): messages are small, a
    // larger one grows the read buffer, and every send is flushed at once.
    let upgrade =
        upgrade.max_message_size(max).max_frame_size(max).read_buffer_size(WS_BUFFER).write_buffer_size(WS_BUFFER);
    Ok(upgrade.on_upgrade(move |socket| async move {
        Bridge { app, who, session, after_seq: q.after_seq.unwrap_or(0), max }.run(socket).await
    }))
}

/// One WebSocket connection and the streams behind it.
struct Bridge {
    app: App,
    /// The caller, named to the orchestrator on both streams (it audits the session's
    /// requests under them).
    who: crate::auth::Principal,
    session: pb::Session,
    after_seq: u64,
    max: usize,
}

/// What ends a connection: a close frame to send, if any.
type Close = Option<(u16, String)>;

impl Bridge {
    async fn run(self, mut socket: WebSocket) {
        let close = self.serve(&mut socket).await;
        if let Some((code, reason)) = close {
            let frame = CloseFrame { code, reason: reason.into() };
            let _ = tokio::time::timeout(SEND_TIMEOUT, socket.send(Message::Close(Some(frame)))).await;
        }
    }

    async fn serve(&self, socket: &mut WebSocket) -> Close {
        let session_id = self.session.session_id.clone();
        let (to_orchestrator, rx) = mpsc::channel(TO_ORCHESTRATOR);
        let attach = pb::ClientMessage { session_id: session_id.clone(), message_id: String::new(), message: None };
        let _ = to_orchestrator.send(attach).await;
        let mut attach = tonic::Request::new(ReceiverStream::new(rx));
        crate::rest::identify(attach.metadata_mut(), &self.who);
        let mut replies = match self.app.sessions.clone().interact(attach).await {
            Ok(stream) => stream.into_inner(),
            Err(status) => return self.refused(socket, &status).await,
        };
        let mut events = match &self.session.task_id {
            Some(task) => self.watch(task, self.after_seq).await,
            None => None,
        };
        loop {
            tokio::select! {
                incoming = socket.recv() => match incoming {
                    Some(Ok(Message::Text(text))) => {
                        if let Some(error) = self.forward(text.as_str(), &to_orchestrator).await
                            && let Err(close) = send(socket, error).await
                        {
                            return close;
                        }
                    }
                    Some(Ok(Message::Binary(_))) => {
                        let error = notification(&session_id, None, "error", "Invalid message", "send JSON text messages, not binary ones");
                        if let Err(close) = send(socket, error).await {
                            return close;
                        }
                    }
                    Some(Ok(Message::Close(_))) | None => return None,
                    Some(Ok(_)) => {} // pings are answered by the socket itself
                    Some(Err(e)) => return Some(receive_error(&e, self.max)),
                },
                reply = replies.message() => match reply {
                    Ok(Some(message)) => {
                        if let Some(task) = watched_task(&message) {
                            events = self.watch(&task, 0).await;
                        }
                        if let Err(close) = send(socket, server_json(&message)).await {
                            return close;
                        }
                    }
                    Ok(None) => return Some((1000, "the session has ended".into())),
                    Err(status) => return Some((1011, clip(&format!("the session's stream failed: {}", status.message())))),
                },
                event = next_event(&mut events) => match event {
                    Ok(Some(event)) => {
                        if let Err(close) = send(socket, event_json(&session_id, &event)).await {
                            return close;
                        }
                    }
                    // The task ended (its last event was sent), or its stream broke: stop following.
                    Ok(None) => events = None,
                    Err(status) => {
                        events = None;
                        let note = notification(&session_id, None, "warning", "Task events stopped",
                            &format!("{}; reconnect with after_seq to resume", status.message()));
                        if let Err(close) = send(socket, note).await {
                            return close;
                        }
                    }
                },
            }
        }
    }

    /// Tells the client why the orchestrator refused to attach. A session that ended between
    /// the handshake and the attach ends the connection as one that ends while attached: its
    /// last notification, then 1000.
    async fn refused(&self, socket: &mut WebSocket, status: &tonic::Status) -> Close {
        let session_id = &self.session.session_id;
        if status.code() == tonic::Code::FailedPrecondition {
            let now = pb::GetSessionRequest { session_id: session_id.clone() };
            let now = self.app.sessions.clone().get_session(request(now, QUICK_TIMEOUT)).await;
            if let Ok(now) = now.map(tonic::Response::into_inner)
                && now.ended_at.is_some()
            {
                let why = format!("the session has ended: {}", now.end_reason.unwrap_or_default());
                let note = notification(session_id, None, "info", "Session ended", &why);
                return match send(socket, note).await {
                    Ok(()) => Some((1000, "the session has ended".into())),
                    Err(close) => close,
                };
            }
        }
        Some((1011, clip(&format!("cannot attach to the session: {}", status.message()))))
    }

    /// Starts following `task`'s events after `after_seq`; None (with a log) when it cannot.
    async fn watch(&self, task: &str, after_seq: u64) -> Option<Streaming<tasks::TaskEvent>> {
        let message = tasks::WatchTaskRequest { task_id: task.to_string(), after_seq };
        let mut message = tonic::Request::new(message);
        crate::rest::identify(message.metadata_mut(), &self.who);
        match self.app.tasks.clone().watch_task(message).await {
            Ok(stream) => Some(stream.into_inner()),
            Err(status) => {
                tracing::warn!(%status, task, "cannot follow the session's task");
                None
            }
        }
    }

    /// Forwards a client's text message; Some(error notification) when it is refused.
    async fn forward(&self, text: &str, to_orchestrator: &mpsc::Sender<pb::ClientMessage>) -> Option<Value> {
        let session_id = &self.session.session_id;
        let parsed = client_message(text);
        let message_id = parsed.as_ref().ok().map(|m| m.message_id.clone());
        let refuse =
            |title: &str, message: &str| Some(notification(session_id, message_id.as_deref(), "error", title, message));
        let mut message = match parsed {
            Ok(message) => message,
            Err(problem) => {
                return Some(notification(
                    session_id,
                    problem.message_id.as_deref(),
                    "error",
                    "Invalid message",
                    &problem.text,
                ));
            }
        };
        if let Some(edge) = &self.app.edge
            && let Err(reset) = edge.count(&self.who.user).await
        {
            return refuse("Rate limit", &format!("more than {} requests in an hour: wait {reset} s", edge.per_hour));
        }
        message.session_id.clear();
        if to_orchestrator.send(message).await.is_err() {
            return refuse("Session closed", "the session's stream has ended; reconnect");
        }
        None
    }
}

async fn next_event(
    events: &mut Option<Streaming<tasks::TaskEvent>>,
) -> Result<Option<tasks::TaskEvent>, tonic::Status> {
    match events {
        Some(stream) => stream.message().await,
        None => std::future::pending().await,
    }
}

/// Writes one message, or says how to close when the client is gone or too slow.
async fn send<S>(socket: &mut S, message: Value) -> Result<(), Close>
where
    S: futures::Sink<Message> + Unpin,
{
    use futures::SinkExt;
    match tokio::time::timeout(SEND_TIMEOUT, socket.send(Message::Text(message.to_string().into()))).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(_)) => Err(None),
        Err(_) => Err(Some((
            1013,
            format!(
                "the client took more than {} s to read a message; reconnect with after_seq",
                SEND_TIMEOUT.as_secs()
            ),
        ))),
    }
}

/// The close frame for a failed read: 1009 for a message past the size limit.
fn receive_error(e: &axum::Error, max: usize) -> (u16, String) {
    let text = e.to_string();
    if text.contains("Message too long")
        || text.contains("message too long")
        || text.contains("Space limit")
        || text.contains("frame") && text.contains("size")
    {
        (1009, format!("a message is larger than {max} bytes (gateway.ws_max_message_bytes)"))
    } else {
        (1002, clip(&format!("cannot read the message: {text}")))
    }
}

/// A close reason fits in 123 bytes.
fn clip(text: &str) -> String {
    let mut end = text.len().min(123);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].to_string()
}

/// The task a server message asks the client to follow (a `watch_task` action).
fn watched_task(message: &pb::ServerMessage) -> Option<String> {
    let Some(pb::server_message::Message::SystemNotification(note)) = &message.message else { return None };
    note.actions
        .iter()
        .find(|a| a.kind == "watch_task")
        .and_then(|a| serde_json::from_str::<Value>(&a.payload_json).ok())
        .and_then(|p| p["task_id"].as_str().map(str::to_string))
}

// ---------------------------------------------------------------------------------------------
// JSON <-> protobuf
// ---------------------------------------------------------------------------------------------

/// Why a client message was refused, and its message_id when it could be read.
#[derive(Debug)]
struct Problem {
    message_id: Option<String>,
    text: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct PositionJson {
    line: u32,
    column: u32,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RangeJson {
    start: PositionJson,
    end: PositionJson,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TextChangeJson {
    range: RangeJson,
    text: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CodeEditJson {
    file_path: String,
    changes: Vec<TextChangeJson>,
    #[serde(default)]
    cursor_position: Option<PositionJson>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ExecutionContextJson {
    #[serde(default)]
    working_directory: String,
    #[serde(default)]
    env: std::collections::HashMap<String, String>,
    /// Seconds.
    timeout: Option<f64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ExecuteCodeJson {
    code: String,
    language: String,
    #[serde(default)]
    context: Option<ExecutionContextJson>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct DevelopmentContextJson {
    current_file: Option<String>,
    selection: Option<RangeJson>,
    #[serde(default)]
    open_files: Vec<String>,
    #[serde(default)]
    extra: Option<serde_json::Map<String, Value>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AiRequestJson {
    query: String,
    #[serde(default)]
    context: Option<DevelopmentContextJson>,
    preferred_agent: Option<AgentRole>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ToolExecutionJson {
    tool_name: String,
    #[serde(default)]
    parameters: Option<serde_json::Map<String, Value>>,
    #[serde(default)]
    async_execution: bool,
}

fn position(p: PositionJson) -> pb::Position {
    pb::Position { line: p.line, column: p.column }
}

fn range(r: RangeJson) -> pb::Range {
    pb::Range { start: Some(position(r.start)), end: Some(position(r.end)) }
}

/// A client's JSON text as the ClientMessage it stands for.
fn client_message(text: &str) -> Result<pb::ClientMessage, Problem> {
    use pb::client_message::Message as M;
    let value: Value = serde_json::from_str(text)
        .map_err(|e| Problem { message_id: None, text: format!("the message is not JSON: {e}") })?;
    let Value::Object(mut fields) = value else {
        return Err(Problem { message_id: None, text: "the message must be a JSON object with a message_type".into() });
    };
    let message_id = match fields.remove("message_id") {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(id)) => id,
        Some(_) => return Err(Problem { message_id: None, text: "message_id must be a string".into() }),
    };
    let problem = |text: String| Problem { message_id: Some(message_id.clone()), text };
    let kind = match fields.remove("message_type") {
        Some(Value::String(kind)) => kind,
        _ => return Err(problem(format!("the message has no message_type: use one of {CLIENT_TYPES}"))),
    };
    fields.remove("session_id");
    let rest = Value::Object(fields);
    let typed = |e: serde_json::Error| problem(format!("invalid {kind}: {e}"));
    let message = match kind.as_str() {
        "code_edit" => {
            let m: CodeEditJson = serde_json::from_value(rest).map_err(typed)?;
            M::CodeEdit(pb::CodeEdit {
                file_path: m.file_path,
                changes: m
                    .changes
                    .into_iter()
                    .map(|c| pb::TextChange { range: Some(range(c.range)), text: c.text })
                    .collect(),
                cursor_position: m.cursor_position.map(|p| pb::CursorPosition { line: p.line, column: p.column }),
            })
        }
        "execute_code" => {
            let m: ExecuteCodeJson = serde_json::from_value(rest).map_err(typed)?;
            let context = m.context.unwrap_or_default();
            let timeout = match context.timeout {
                Some(t) if !(t.is_finite() && t > 0.0 && t <= 86_400.0) => {
                    return Err(problem("invalid execute_code: context.timeout must be 0 < seconds <= 86400".into()));
                }
                Some(t) => Some(duration_to_proto(Duration::from_secs_f64(t))),
                None => None,
            };
            M::ExecuteCode(pb::ExecuteCode {
                code: m.code,
                language: m.language,
                context: Some(pb::ExecutionContext {
                    working_directory: context.working_directory,
                    env: context.env,
                    timeout,
                }),
            })
        }
        "ai_request" => {
            let m: AiRequestJson = serde_json::from_value(rest).map_err(typed)?;
            let context = m.context.unwrap_or_default();
            M::AiRequest(pb::AiRequest {
                query: m.query,
                context: Some(pb::DevelopmentContext {
                    current_file: context.current_file,
                    selection: context.selection.map(range),
                    open_files: context.open_files,
                    extra_json: context.extra.map(|e| Value::Object(e).to_string()).unwrap_or_default(),
                }),
                preferred_agent: m.preferred_agent.map_or(0, |r| r.to_proto()),
            })
        }
        "tool_execution" => {
            let m: ToolExecutionJson = serde_json::from_value(rest).map_err(typed)?;
            M::ToolExecution(pb::ToolExecution {
                tool_name: m.tool_name,
                parameters_json: Value::Object(m.parameters.unwrap_or_default()).to_string(),
                async_execution: m.async_execution,
            })
        }
        other => return Err(problem(format!("unknown message_type '{other}': use one of {CLIENT_TYPES}"))),
    };
    Ok(pb::ClientMessage { session_id: String::new(), message_id, message: Some(message) })
}

fn level_name(level: i32) -> &'static str {
    match common::Severity::try_from(level) {
        Ok(common::Severity::Warning) => "warning",
        Ok(common::Severity::Error) => "error",
        _ => "info",
    }
}

fn action_json(a: &pb::Action) -> Value {
    let payload: Value = serde_json::from_str(&a.payload_json).unwrap_or(Value::Object(Default::default()));
    json!({ "kind": a.kind, "label": a.label, "payload": payload })
}

fn position_json(p: Option<pb::Position>) -> Value {
    let p = p.unwrap_or_default();
    json!({ "line": p.line, "column": p.column })
}

fn seconds(d: Option<prost_types::Duration>) -> f64 {
    d.map_or(0.0, |d| d.seconds as f64 + f64::from(d.nanos) / 1e9)
}

/// A server message as the client reads it.
fn server_json(m: &pb::ServerMessage) -> Value {
    use pb::server_message::Message as M;
    let mut out = json!({ "session_id": m.session_id, "reply_to": m.reply_to, "sent_at": rfc3339(m.sent_at) });
    let body = match &m.message {
        Some(M::CodeSuggestion(s)) => json!({
            "message_type": "code_suggestion",
            "suggestions": s.suggestions.iter().map(|s| json!({
                "file_path": s.file_path,
                "range": s.range.map(|r| json!({ "start": position_json(r.start), "end": position_json(r.end) })),
                "replacement": s.replacement,
                "description": s.description,
            })).collect::<Vec<_>>(),
            "confidence": s.confidence,
            "reasoning": s.reasoning,
        }),
        Some(M::ExecutionResult(r)) => json!({
            "message_type": "execution_result",
            "success": r.success,
            "output": r.output,
            "errors": r.errors.iter().map(|e| json!({ "message": e.message, "kind": e.kind, "line": e.line, "column": e.column })).collect::<Vec<_>>(),
            "execution_time": seconds(r.execution_time),
        }),
        Some(M::AiResponse(r)) => json!({
            "message_type": "ai_response",
            "response": r.response,
            "agent": AgentRole::from_proto("agent", r.agent).map(|a| a.to_string()).unwrap_or_default(),
            "context_used": r.context_used.iter().map(|c| json!({ "id": c.id, "title": c.title, "content": c.content })).collect::<Vec<_>>(),
            "follow_up_actions": r.follow_up_actions.iter().map(action_json).collect::<Vec<_>>(),
        }),
        Some(M::SystemNotification(n)) => json!({
            "message_type": "system_notification",
            "level": level_name(n.level),
            "title": n.title,
            "message": n.message,
            "actions": n.actions.iter().map(action_json).collect::<Vec<_>>(),
        }),
        None => json!({ "message_type": "system_notification", "level": "warning", "title": "Empty message",
                        "message": "the server sent a message without content", "actions": [] }),
    };
    if let (Value::Object(out), Value::Object(body)) = (&mut out, body) {
        out.extend(body);
    }
    out
}

/// A system notification made by the gateway itself.
fn notification(session_id: &str, reply_to: Option<&str>, level: &str, title: &str, message: &str) -> Value {
    json!({
        "message_type": "system_notification",
        "session_id": session_id,
        "reply_to": reply_to.filter(|r| !r.is_empty()),
        "sent_at": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        "level": level,
        "title": title,
        "message": message,
        "actions": [],
    })
}

/// A task event as the client reads it: the event as the store records it (`turbo-core`'s
/// serialization), with its task and seq.
fn event_json(session_id: &str, e: &tasks::TaskEvent) -> Value {
    let event = turbo_core::event::TaskEvent::try_from(e.clone())
        .ok()
        .and_then(|e| serde_json::to_value(e.kind).ok())
        .unwrap_or(Value::Null);
    json!({
        "message_type": "task_event",
        "session_id": session_id,
        "task_id": e.task_id,
        "seq": e.seq,
        "at": rfc3339(e.at),
        "event": event,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A client's side of the socket: takes `accepts` messages, then never reads again (its
    /// buffers full), or is gone when `gone`.
    struct Client {
        accepts: usize,
        gone: bool,
        took: Vec<Message>,
    }

    impl futures::Sink<Message> for Client {
        type Error = axum::Error;

        fn poll_ready(
            self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<Result<(), Self::Error>> {
            if self.gone {
                std::task::Poll::Ready(Err(axum::Error::new("connection reset")))
            } else if self.took.len() < self.accepts {
                std::task::Poll::Ready(Ok(()))
            } else {
                std::task::Poll::Pending
            }
        }

        fn start_send(mut self: std::pin::Pin<&mut Self>, message: Message) -> Result<(), Self::Error> {
            self.took.push(message);
            Ok(())
        }

        fn poll_flush(
            self: std::pin::Pin<&mut Self>,
            cx: &mut std::task::Context<'_>,
        ) -> std::task::Poll<Result<(), Self::Error>> {
            self.poll_ready(cx)
        }

        fn poll_close(
            self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<Result<(), Self::Error>> {
            std::task::Poll::Ready(Ok(()))
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_client_that_stops_reading_is_closed_with_1013_after_the_send_timeout_and_one_gone_quietly() {
        let mut slow = Client { accepts: 2, gone: false, took: Vec::new() };
        let started = tokio::time::Instant::now();
        assert_eq!(send(&mut slow, json!({"n": 1})).await, Ok(()));
        let close = send(&mut slow, json!({"n": 2})).await.expect_err("the second is never read");
        let (code, reason) = close.expect("a close frame for a slow client");
        assert_eq!(code, 1013, "{reason}");
        assert!(reason.contains("after_seq") && reason.len() <= 123, "{reason}");
        assert_eq!(started.elapsed(), SEND_TIMEOUT, "it waits the whole timeout, no longer");
        assert_eq!(slow.took.len(), 2, "nothing is queued beyond what the socket took");

        let mut gone = Client { accepts: 10, gone: true, took: Vec::new() };
        assert_eq!(send(&mut gone, json!({"n": 1})).await, Err(None), "no close frame to a client that is gone");
    }

    #[test]
    fn client_messages_map_onto_the_protocol() {
        let m = client_message(
            r#"{"message_type":"code_edit","message_id":"m1","file_path":"a.py",
                "changes":[{"range":{"start":{"line":0,"column":1},"end":{"line":0,"column":2}},"text":"x"}],
                "cursor_position":{"line":0,"column":2}}"#,
        )
        .unwrap();
        assert_eq!(m.message_id, "m1");
        let Some(pb::client_message::Message::CodeEdit(edit)) = m.message else { panic!("{m:?}") };
        assert_eq!(edit.changes[0].range.unwrap().end.unwrap().column, 2);

        let m = client_message(r#"{"message_type":"ai_request","query":"why?","preferred_agent":"reviewer"}"#).unwrap();
        let Some(pb::client_message::Message::AiRequest(ask)) = m.message else { panic!() };
        assert_eq!(ask.preferred_agent, AgentRole::Reviewer.to_proto());

        let m = client_message(r#"{"message_type":"tool_execution","tool_name":"fs_list","parameters":{"path":"."}}"#)
            .unwrap();
        let Some(pb::client_message::Message::ToolExecution(run)) = m.message else { panic!() };
        assert_eq!(serde_json::from_str::<Value>(&run.parameters_json).unwrap()["path"], ".");
    }

    #[test]
    fn bad_client_messages_say_what_is_wrong() {
        let e = client_message(r#"{"message_type":"dance","message_id":"m9"}"#).unwrap_err();
        assert_eq!(e.message_id.as_deref(), Some("m9"));
        assert!(e.text.contains("unknown message_type 'dance'") && e.text.contains("code_edit"), "{}", e.text);
        assert!(client_message("{").unwrap_err().text.contains("not JSON"));
        assert!(client_message("[1]").unwrap_err().text.contains("JSON object"));
        assert!(client_message(r#"{"query":"x"}"#).unwrap_err().text.contains("no message_type"));
        let e = client_message(r#"{"message_type":"execute_code","code":"1"}"#).unwrap_err();
        assert!(e.text.contains("invalid execute_code") && e.text.contains("language"), "{}", e.text);
        let e =
            client_message(r#"{"message_type":"execute_code","code":"1","language":"python","colour":1}"#).unwrap_err();
        assert!(e.text.contains("colour"), "{}", e.text);
        let e = client_message(r#"{"message_type":"ai_request","query":"x","preferred_agent":"wizard"}"#).unwrap_err();
        assert!(e.text.contains("invalid ai_request"), "{}", e.text);
    }

    #[test]
    fn server_messages_read_as_the_spec_names_them() {
        let m = pb::ServerMessage {
            session_id: "s".into(),
            reply_to: Some("m1".into()),
            sent_at: None,
            message: Some(pb::server_message::Message::ExecutionResult(pb::ExecutionResult {
                success: false,
                output: "boom".into(),
                errors: vec![pb::ExecutionError {
                    message: "x".into(),
                    kind: "ValueError".into(),
                    line: Some(3),
                    column: None,
                }],
                execution_time: Some(prost_types::Duration { seconds: 1, nanos: 500_000_000 }),
            })),
        };
        let v = server_json(&m);
        assert_eq!(v["message_type"], "execution_result");
        assert_eq!((v["reply_to"].as_str(), v["execution_time"].as_f64()), (Some("m1"), Some(1.5)));
        assert_eq!(v["errors"][0]["line"], 3);

        let watch =
            pb::Action { kind: "watch_task".into(), label: "Watch".into(), payload_json: r#"{"task_id":"t1"}"#.into() };
        let note = pb::ServerMessage {
            message: Some(pb::server_message::Message::SystemNotification(pb::SystemNotification {
                level: common::Severity::Warning as i32,
                title: "T".into(),
                message: "M".into(),
                actions: vec![watch],
            })),
            ..Default::default()
        };
        assert_eq!(watched_task(&note).as_deref(), Some("t1"));
        let v = server_json(&note);
        assert_eq!(
            (v["level"].as_str(), v["actions"][0]["payload"]["task_id"].as_str()),
            (Some("warning"), Some("t1"))
        );
    }

    #[test]
    fn close_reasons_fit_a_frame() {
        let long = "é".repeat(200);
        assert!(clip(&long).len() <= 123);
        assert_eq!(receive_error(&axum::Error::new("Space limit exceeded: Message too long: 11 > 10"), 10).0, 1009);
    }
}
