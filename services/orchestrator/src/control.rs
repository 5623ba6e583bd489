//! The operators' control plane: NATS request-reply subjects answered by the orchestrator, in
//! plain JSON so `nats req` is all an operator needs.
//!
//! | subject | request | reply |
//! |---|---|---|
//! | `turbo.ctl.tasks.list` | `{"status": "...", "limit": N}`, both optional | `{"v":1,"tasks":[{id,title,status,progress,current_phase,created_at,total_tokens}]}` |
//! | `turbo.ctl.tasks.get` | `{"id": "<uuid or unique prefix>"}` | `{"v":1,"task":{...},"workspace":...,"phases":[...],"usage":{role:{...}},"total_tokens":N}` |
//! | `turbo.ctl.tasks.cancel` | `{"id": ..., "reason": "..."}` (reason optional) | `{"v":1,"id":...,"cancelled":bool,"status":...,"stopping":bool}` |
//! | `turbo.ctl.workers.list` | `{}` or `{"role": "coder"}` | `{"v":1,"heartbeat_interval_ms":N,"roles":{role:{in_flight,capacity,workers:[...]}}}` |
//!
//! Every failure is a reply too, `{"v":1,"error":{"code":"invalid_argument","message":...}}`,
//! with the code of the crate's one mapping ([`Error::code_name`]); invalid arguments also
//! list the broken `fields`. A request is answered on its own task, so a slow or failing one
//! (even one that panics) never stops the subscription, and each has a deadline.
//!
//! Replicas subscribe in the queue group [`subjects::CTL_QUEUE_GROUP`], so each request is
//! answered by one orchestrator. Each replica keeps its own table of live workers from every
//! heartbeat (`turbo.workers.heartbeat.>`, not queue-grouped): a worker is live until it has
//! been silent for [`MISSED_HEARTBEATS`] heartbeat intervals. A replica that has just started
//! knows the workers after one interval.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::{Map, Value, json};
use tokio::time::Instant;
use tokio_stream::{StreamExt, StreamMap};
use tokio_util::sync::CancellationToken;
use turbo_bus::async_nats::{self, Message, Subscriber};
use turbo_bus::{Heartbeat, subjects};
use turbo_core::agent::AgentRole;
use turbo_core::task::TaskStatus;
use turbo_store::{Store, TaskFilter};

use crate::error::{Error, Result, code_name};
use crate::{CancelOutcome, OrchestratorHandle};

/// The version every reply carries as `"v"`.
pub const REPLY_VERSION: u64 = 1;
/// A worker silent for more than this many heartbeat intervals is no longer listed.
pub const MISSED_HEARTBEATS: u32 = 3;
/// `limit` of `tasks.list` when the request gives none (as `turbo-coder tasks list`).
pub const DEFAULT_LIST_LIMIT: u64 = 20;
/// Largest `limit` of `tasks.list`, so a reply stays well under NATS's payload limit.
pub const MAX_LIST_LIMIT: u64 = 500;

/// Requests answered at once; more wait in the subscription until one is done.
const MAX_IN_FLIGHT: usize = 64;
/// Longest a request may take, beyond what `tasks.cancel` may wait for a run to end, before it
/// is answered `deadline_exceeded` (a stuck database).
const REQUEST_DEADLINE: Duration = Duration::from_secs(10);
/// At shutdown, how long requests already delivered may take to be read from the subscription
/// (the server confirms the unsubscribe; on a broken connection it never does).
const DRAIN_WAIT: Duration = Duration::from_secs(5);

/// How the control plane serves.
#[derive(Clone, Debug)]
pub struct ControlOptions {
    /// How often workers send heartbeats; a worker silent for [`MISSED_HEARTBEATS`] of these
    /// drops out of `workers.list`.
    pub heartbeat_every: Duration,
    /// How long `tasks.cancel` waits for a running task to record its cancellation before it
    /// answers `"stopping": true` with the status as stored. Kept under `nats req`'s default
    /// timeout of 2 s.
    pub cancel_wait: Duration,
}

impl Default for ControlOptions {
    fn default() -> Self {
        Self {
            // The workers' own default, so the two agree unless configured otherwise.
            heartbeat_every: turbo_agent_worker::ServeOptions::new(1).heartbeat_every,
            cancel_wait: Duration::from_secs(1),
        }
    }
}

/// Serves the control subjects with [`ControlOptions::default`] until `shutdown` is
/// cancelled; see [`serve_control_with`].
pub async fn serve_control(
    client: async_nats::Client,
    store: Store,
    handle: OrchestratorHandle,
    shutdown: CancellationToken,
) -> Result<()> {
    serve_control_with(client, store, handle, ControlOptions::default(), shutdown).await
}

/// Subscribes to the control subjects (in the queue group [`subjects::CTL_QUEUE_GROUP`]) and to
/// every worker heartbeat, then answers requests until `shutdown` is cancelled. On shutdown it
/// unsubscribes, answers the requests already delivered, flushes the replies and returns.
/// Fails when it cannot subscribe, or when the connection closes for good while serving.
pub async fn serve_control_with(
    client: async_nats::Client,
    store: Store,
    handle: OrchestratorHandle,
    options: ControlOptions,
    shutdown: CancellationToken,
) -> Result<()> {
    let heartbeats = subscribe(&client, subjects::HEARTBEAT_ALL, None).await?;
    let mut requests = StreamMap::new();
    for subject in subjects::CTL_SUBJECTS {
        requests.insert(*subject, subscribe(&client, subject, Some(subjects::CTL_QUEUE_GROUP)).await?);
    }
    // The server has the subscriptions once it answers a ping sent after them.
    client.flush().await.map_err(|e| serve_error("NATS", format!("cannot reach the server: {e}")))?;
    tracing::info!(subjects = ?subjects::CTL_SUBJECTS, queue_group = subjects::CTL_QUEUE_GROUP, "control plane serving");

    let workers = Workers::new(options.heartbeat_every);
    let tracker = tokio::spawn(track_heartbeats(heartbeats, workers.clone(), shutdown.clone()));
    let ctx = Arc::new(Ctx { store, handle, workers, options });
    let limits = turbo_bus::RequestLimits { max_in_flight: MAX_IN_FLIGHT, drain_wait: DRAIN_WAIT };
    let served = turbo_bus::serve_requests(&mut requests, &shutdown, limits, "control", |message| {
        answer(client.clone(), ctx.clone(), message)
    })
    .await
    .map_err(|closed| serve_error("turbo.ctl.*", closed.to_string()));
    // Replies handed to the client are sent before returning, so a requester gets them.
    if let Err(error) = client.flush().await {
        tracing::warn!(%error, "cannot flush the last control replies");
    }
    tracker.abort();
    let _ = tracker.await;
    served
}

async fn subscribe(client: &async_nats::Client, subject: &str, queue: Option<&str>) -> Result<Subscriber> {
    let subscribed = match queue {
        Some(group) => client.queue_subscribe(subject.to_string(), group.to_string()).await,
        None => client.subscribe(subject.to_string()).await,
    };
    subscribed.map_err(|e| serve_error(subject, format!("cannot subscribe: {e}")))
}

fn serve_error(subject: &str, reason: String) -> Error {
    Error::Serve { addr: format!("NATS subject {subject}"), reason }
}

/// What every request handler works with.
struct Ctx {
    store: Store,
    handle: OrchestratorHandle,
    workers: Workers,
    options: ControlOptions,
}

/// Answers one request: the reply is always sent, whatever happens to the handler.
async fn answer(client: async_nats::Client, ctx: Arc<Ctx>, message: Message) {
    let Some(reply_to) = message.reply.clone() else {
        tracing::debug!(subject = %message.subject, "ignoring a control message without a reply subject: use `nats req`");
        return;
    };
    let subject = message.subject.to_string();
    let deadline = REQUEST_DEADLINE + ctx.options.cancel_wait;
    // On its own task, so a panic becomes an `internal` reply instead of silence.
    let handler = tokio::spawn(async move {
        tokio::time::timeout(deadline, handle_request(&ctx, message.subject.as_str(), &message.payload)).await
    });
    let reply = match handler.await {
        Ok(Ok(Ok(body))) => body,
        Ok(Ok(Err(error))) => error_reply(&error),
        Ok(Err(_)) => {
            tracing::warn!(%subject, ?deadline, "control request past its deadline");
            error_body(
                code_name(tonic::Code::DeadlineExceeded),
                format!("the request took longer than {deadline:?}: the database may be overloaded; retry"),
                None,
            )
        }
        Err(error) => {
            tracing::error!(%subject, %error, "control request handler failed");
            error_body(code_name(tonic::Code::Internal), format!("internal error answering {subject}: {error}"), None)
        }
    };
    let mut bytes = serde_json::to_vec(&reply).unwrap_or_default();
    let max = client.server_info().max_payload;
    if max > 0 && bytes.len() > max {
        let too_big = error_body(
            code_name(tonic::Code::ResourceExhausted),
            format!(
                "the reply is {} bytes, over the server's max_payload of {max}: ask for less (a smaller limit)",
                bytes.len()
            ),
            None,
        );
        bytes = serde_json::to_vec(&too_big).unwrap_or_default();
    }
    if let Err(error) = client.publish(reply_to, bytes.into()).await {
        tracing::warn!(%subject, %error, "cannot send a control reply");
    }
}

/// The reply body of one request, or the error to answer with.
async fn handle_request(ctx: &Ctx, subject: &str, payload: &[u8]) -> Result<Value> {
    match subject {
        subjects::CTL_TASKS_LIST => list_tasks(ctx, payload).await,
        subjects::CTL_TASKS_GET => get_task(ctx, payload).await,
        subjects::CTL_TASKS_CANCEL => cancel_task(ctx, payload).await,
        subjects::CTL_WORKERS_LIST => list_workers(ctx, payload),
        other => Err(Error::invalid(
            "subject",
            format!("{other} is not a control subject: use one of {}", subjects::CTL_SUBJECTS.join(", ")),
        )),
    }
}

/// `{"v":1,"error":{"code":...,"message":...}}`, with the broken fields of an invalid request.
fn error_reply(error: &Error) -> Value {
    if error.code() == tonic::Code::Internal {
        tracing::error!(%error, "internal error answering a control request");
    }
    let fields = match error {
        Error::Request(e) => Some(e.field_errors()),
        Error::InvalidTask(errs) => Some(errs.clone()),
        _ => None,
    };
    error_body(error.code_name(), error.to_string(), fields)
}

fn error_body(code: &str, message: String, fields: Option<turbo_core::ValidationErrors>) -> Value {
    let mut error = json!({"code": code, "message": message});
    if let Some(fields) = fields.filter(|f| !f.is_empty()) {
        error["fields"] = json!(fields.0);
    }
    json!({"v": REPLY_VERSION, "error": error})
}

fn reply(body: Value) -> Value {
    let mut body = body;
    if let Value::Object(map) = &mut body {
        map.insert("v".into(), REPLY_VERSION.into());
    }
    body
}

// ---------------------------------------------------------------------------------------------
// Requests

/// A request's fields: empty bytes are `{}` (a bare `nats req SUBJECT ''`); anything but a JSON
/// object, or a field not in `known`, is refused with an example of a good request.
struct Request {
    fields: Map<String, Value>,
}

impl Request {
    fn parse(payload: &[u8], known: &[&str], example: &str) -> Result<Request> {
        let text = payload.trim_ascii();
        if text.is_empty() {
            return Ok(Request { fields: Map::new() });
        }
        let value: Value = serde_json::from_slice(text).map_err(|e| {
            Error::invalid("request", format!("is not JSON ({e}): send a JSON object such as {example}"))
        })?;
        let Value::Object(fields) = value else {
            return Err(Error::invalid("request", format!("is not a JSON object: send one such as {example}")));
        };
        if let Some(unknown) = fields.keys().find(|k| !known.contains(&k.as_str())) {
            return Err(Error::invalid(
                unknown.clone(),
                format!("is not a field of this request: use {}, as in {example}", known.join(", ")),
            ));
        }
        Ok(Request { fields })
    }

    /// A string field; null counts as absent.
    fn string(&self, field: &str) -> Result<Option<&str>> {
        match self.fields.get(field) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(other) => Err(Error::invalid(field, format!("must be a string, got {other}"))),
        }
    }

    fn required_string(&self, field: &str, what: &str) -> Result<&str> {
        match self.string(field)? {
            Some(s) if !s.trim().is_empty() => Ok(s),
            _ => Err(Error::invalid(field, format!("is missing: give {what}"))),
        }
    }

    fn integer(&self, field: &str) -> Result<Option<u64>> {
        match self.fields.get(field) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Number(n)) if n.as_u64().is_some() => Ok(n.as_u64()),
            Some(other) => Err(Error::invalid(field, format!("must be a whole number, got {other}"))),
        }
    }
}

fn status_field(request: &Request) -> Result<Option<TaskStatus>> {
    request
        .string("status")?
        .map(|s| s.parse::<TaskStatus>().map_err(|e| Error::invalid("status", e.to_string())))
        .transpose()
}

fn role_field(request: &Request) -> Result<Option<AgentRole>> {
    request
        .string("role")?
        .map(|s| s.parse::<AgentRole>().map_err(|e| Error::invalid("role", e.to_string())))
        .transpose()
}

const TASK_ID_HINT: &str = "the task id or a unique prefix of it (4+ characters), as turbo.ctl.tasks.list shows it";

// ---------------------------------------------------------------------------------------------
// Tasks

#[derive(Serialize)]
struct TaskItem {
    id: String,
    title: String,
    status: TaskStatus,
    progress: f64,
    current_phase: Option<String>,
    created_at: DateTime<Utc>,
    total_tokens: u64,
}

async fn list_tasks(ctx: &Ctx, payload: &[u8]) -> Result<Value> {
    let request = Request::parse(payload, &["status", "limit"], r#"{"status": "in_progress", "limit": 5}"#)?;
    let status = status_field(&request)?;
    let limit = match request.integer("limit")? {
        None => DEFAULT_LIST_LIMIT,
        Some(n) if (1..=MAX_LIST_LIMIT).contains(&n) => n,
        Some(n) => {
            return Err(Error::invalid("limit", format!("must be between 1 and {MAX_LIST_LIMIT}, got {n}")));
        }
    };
    let tasks: Vec<TaskItem> = ctx
        .store
        .list_tasks(TaskFilter { status, limit })
        .await?
        .into_iter()
        .map(|t| TaskItem {
            id: t.id.to_string(),
            title: t.title,
            status: t.status,
            progress: t.progress,
            current_phase: t.current_phase,
            created_at: t.created_at,
            total_tokens: t.total_tokens,
        })
        .collect();
    Ok(reply(json!({ "tasks": tasks })))
}

async fn get_task(ctx: &Ctx, payload: &[u8]) -> Result<Value> {
    let request = Request::parse(payload, &["id"], r#"{"id": "1a2b3c4d"}"#)?;
    let stored = ctx.store.find_task(request.required_string("id", TASK_ID_HINT)?).await?;
    let id = stored.task.id;
    let phases: Vec<Value> = ctx
        .store
        .phases(id)
        .await?
        .into_iter()
        .map(|p| {
            json!({
                "name": p.name, "position": p.position, "role": p.role, "status": p.status.as_str(),
                "attempt": p.attempt, "summary": p.summary, "started_at": p.started_at, "finished_at": p.finished_at,
            })
        })
        .collect();
    let usage = ctx.store.usage_by_role(id).await?;
    let total_tokens: u64 = usage.values().map(|u| u64::from(u.prompt_tokens) + u64::from(u.completion_tokens)).sum();
    let usage: BTreeMap<String, Value> = usage
        .into_iter()
        .map(|(role, u)| {
            let total = u64::from(u.prompt_tokens) + u64::from(u.completion_tokens);
            (
                role.to_string(),
                json!({"prompt_tokens": u.prompt_tokens, "completion_tokens": u.completion_tokens, "total_tokens": total}),
            )
        })
        .collect();
    Ok(reply(json!({
        "task": stored.task,
        "workspace": stored.workspace,
        "phases": phases,
        "usage": usage,
        "total_tokens": total_tokens,
    })))
}

async fn cancel_task(ctx: &Ctx, payload: &[u8]) -> Result<Value> {
    let request = Request::parse(payload, &["id", "reason"], r#"{"id": "1a2b3c4d", "reason": "not needed"}"#)?;
    let id = ctx.store.find_task(request.required_string("id", TASK_ID_HINT)?).await?.task.id;
    let reason = request.string("reason")?.map(str::to_string);
    // (cancelled by this request, status now, still stopping, a note for the operator)
    let (cancelled, status, stopping, message) = match ctx.handle.cancel_task(id, reason).await {
        Ok(CancelOutcome::Cancelled(task)) => (true, task.status, false, None),
        Ok(CancelOutcome::Stopping) => match tokio::time::timeout(ctx.options.cancel_wait, ctx.handle.wait(id)).await {
            // It may have finished otherwise just before the cancellation reached it.
            Ok(ended) => {
                let status = ended?.task.status;
                (status == TaskStatus::Cancelled, status, false, None)
            }
            // Agents stop at their next model or tool call; tasks.get shows the end.
            Err(_) => {
                let status = ctx.store.get_task(id).await?.map(|t| t.task.status).unwrap_or(TaskStatus::InProgress);
                (
                    true,
                    status,
                    true,
                    Some("the task is stopping: turbo.ctl.tasks.get shows when it is cancelled".to_string()),
                )
            }
        },
        // Not an error for an operator: the answer is that there was nothing to cancel.
        Err(Error::NotCancellable { task_id, status }) => {
            (false, status, false, Some(Error::NotCancellable { task_id, status }.to_string()))
        }
        Err(e) => return Err(e),
    };
    let entry = turbo_store::NewAuditEntry {
        at: chrono::Utc::now(),
        actor: format!("nats:{}", subjects::CTL_TASKS_CANCEL),
        action: "task.cancel".into(),
        target: id.to_string(),
        outcome: if cancelled { "ok".into() } else { format!("error: not cancelled: the task is {status}") },
        detail: None,
    };
    if let Err(error) = ctx.store.record_audit(entry).await {
        tracing::warn!(%error, "cannot record the cancel in the audit log");
    }
    let mut body = json!({
        "id": id.to_string(),
        "cancelled": cancelled,
        "status": status,
        "stopping": stopping,
    });
    if let Some(message) = message {
        body["message"] = message.into();
    }
    Ok(reply(body))
}

// ---------------------------------------------------------------------------------------------
// Workers

/// The workers heard from lately, by role and id.
#[derive(Clone)]
struct Workers {
    every: Duration,
    seen: Arc<Mutex<HashMap<(AgentRole, String), Seen>>>,
}

struct Seen {
    beat: Heartbeat,
    /// When this process received it: ages are measured on this clock, so a worker whose
    /// clock is off is not dropped or kept by mistake.
    received: Instant,
}

#[derive(Serialize)]
struct WorkerItem {
    worker_id: String,
    in_flight: usize,
    capacity: usize,
    started_at: DateTime<Utc>,
    /// The worker's own time of its last heartbeat.
    last_heartbeat_at: DateTime<Utc>,
    /// How long ago this orchestrator received it.
    last_heartbeat_age_ms: u64,
}

#[derive(Serialize, Default)]
struct RoleItem {
    in_flight: usize,
    capacity: usize,
    workers: Vec<WorkerItem>,
}

impl Workers {
    fn new(every: Duration) -> Self {
        Self { every, seen: Arc::default() }
    }

    fn expiry(&self) -> Duration {
        self.every * MISSED_HEARTBEATS
    }

    fn record(&self, beat: Heartbeat) {
        let key = (beat.role, beat.worker_id.clone());
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        seen.insert(key, Seen { beat, received: Instant::now() });
    }

    /// Forgets workers silent for longer than the expiry at `now`.
    fn prune(&self, now: Instant) {
        let expiry = self.expiry();
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        seen.retain(|_, s| now.saturating_duration_since(s.received) <= expiry);
    }

    /// The workers of each role live at `now` (every role listed, also without workers), by
    /// worker id.
    fn live(&self, only: Option<AgentRole>, now: Instant) -> BTreeMap<AgentRole, RoleItem> {
        self.prune(now);
        let mut roles: BTreeMap<AgentRole, RoleItem> = AgentRole::ALL
            .iter()
            .filter(|r| only.is_none_or(|o| o == **r))
            .map(|r| (*r, RoleItem::default()))
            .collect();
        let seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        for ((role, _), s) in seen.iter() {
            let Some(item) = roles.get_mut(role) else { continue };
            item.in_flight += s.beat.in_flight;
            item.capacity += s.beat.capacity;
            item.workers.push(WorkerItem {
                worker_id: s.beat.worker_id.clone(),
                in_flight: s.beat.in_flight,
                capacity: s.beat.capacity,
                started_at: s.beat.started_at,
                last_heartbeat_at: s.beat.at,
                last_heartbeat_age_ms: millis(now.saturating_duration_since(s.received)),
            });
        }
        for item in roles.values_mut() {
            item.workers.sort_by(|a, b| a.worker_id.cmp(&b.worker_id));
        }
        roles
    }
}

/// Keeps the table of live workers from every heartbeat until shutdown.
async fn track_heartbeats(mut heartbeats: Subscriber, workers: Workers, shutdown: CancellationToken) {
    let mut prune = tokio::time::interval(workers.every);
    prune.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = prune.tick() => workers.prune(Instant::now()),
            message = heartbeats.next() => match message {
                Some(message) => match turbo_bus::decode::<Heartbeat>(&message.payload) {
                    Ok(beat) => workers.record(beat),
                    Err(error) => tracing::debug!(subject = %message.subject, %error, "ignoring an unreadable heartbeat"),
                },
                None => return,
            },
        }
    }
}

fn list_workers(ctx: &Ctx, payload: &[u8]) -> Result<Value> {
    let request = Request::parse(payload, &["role"], r#"{"role": "coder"}"#)?;
    let role = role_field(&request)?;
    let roles: BTreeMap<String, RoleItem> =
        ctx.workers.live(role, Instant::now()).into_iter().map(|(r, item)| (r.to_string(), item)).collect();
    Ok(reply(json!({
        "heartbeat_interval_ms": millis(ctx.workers.every),
        "roles": roles,
    })))
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_say_what_is_wrong() {
        let cases: &[(&[u8], &str)] = &[
            (b"{not json", "is not JSON"),
            (b"[1, 2]", "is not a JSON object"),
            (b"\"x\"", "is not a JSON object"),
            (b"{\"limt\": 5}", "limt: is not a field of this request: use status, limit"),
        ];
        for (payload, says) in cases {
            let e = Request::parse(payload, &["status", "limit"], "{}").err().expect("refused");
            assert_eq!(e.code_name(), "invalid_argument");
            assert!(e.to_string().contains(says), "{e}");
        }
        let empty = Request::parse(b"  \n", &["id"], "{}").unwrap();
        assert!(empty.fields.is_empty(), "an empty body is an empty request");
        let r = Request::parse(br#"{"id": 7, "limit": -1, "status": null}"#, &["id", "limit", "status"], "{}").unwrap();
        assert!(r.string("id").unwrap_err().to_string().contains("id: must be a string, got 7"));
        assert!(r.integer("limit").unwrap_err().to_string().contains("limit: must be a whole number, got -1"));
        assert_eq!(r.string("status").unwrap(), None);
        let e = status_field(&Request::parse(br#"{"status": "running"}"#, &["status"], "{}").unwrap()).unwrap_err();
        assert!(e.to_string().contains("unknown task status 'running'"), "{e}");
    }

    #[test]
    fn error_replies_carry_the_code_and_the_fields() {
        let body = error_reply(&Error::invalid("limit", "must be between 1 and 500, got 0"));
        assert_eq!(body["v"], 1);
        assert_eq!(body["error"]["code"], "invalid_argument");
        assert_eq!(body["error"]["fields"][0]["field"], "limit");
        let body = error_reply(&Error::UnknownTask(turbo_core::ids::TaskId::new()));
        assert_eq!(body["error"]["code"], "not_found");
        assert!(body["error"].get("fields").is_none());
    }

    #[test]
    fn silent_workers_drop_out_and_every_role_is_listed() {
        let workers = Workers::new(Duration::from_secs(5));
        let beat = |id: &str, role, in_flight| Heartbeat {
            worker_id: id.into(),
            role,
            in_flight,
            capacity: 4,
            started_at: Utc::now(),
            at: Utc::now(),
        };
        workers.record(beat("c1", AgentRole::Coder, 1));
        workers.record(beat("c2", AgentRole::Coder, 2));
        workers.record(beat("t1", AgentRole::Tester, 0));
        // The tester has been silent for 16 s (over 3 intervals of 5 s); the coders just spoke.
        let later = Instant::now() + Duration::from_secs(16);
        workers
            .seen
            .lock()
            .unwrap()
            .values_mut()
            .filter(|s| s.beat.role == AgentRole::Coder)
            .for_each(|s| s.received = later);
        let live = workers.live(None, later);
        assert_eq!(live.len(), AgentRole::ALL.len());
        let coder = &live[&AgentRole::Coder];
        assert_eq!((coder.in_flight, coder.capacity, coder.workers.len()), (3, 8, 2));
        assert!(live[&AgentRole::Tester].workers.is_empty(), "a worker silent for 3+ intervals is gone");
        assert_eq!(coder.workers[1].last_heartbeat_age_ms, 0);
        assert_eq!(workers.live(Some(AgentRole::Coder), later).len(), 1);
        assert_eq!(workers.seen.lock().unwrap().len(), 2, "silent workers are forgotten, not only hidden");
    }
}
