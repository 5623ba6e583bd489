//! `--server URL`: `run` and `tasks` against a running cluster, through its orchestrator's gRPC
//! API (`turbo.projects.v1.ProjectService`, `turbo.tasks.v1.TaskService`), instead of the
//! embedded stack and the local store. What is printed and the exit codes are those of the
//! local commands: events arrive as `turbo.tasks.v1.TaskEvent`, become `turbo_core` events and
//! go through the same [`Renderer`]; `tasks list|show` print the same rows
//! ([`crate::tasks::print_list`], [`crate::tasks::print_show`]), rebuilt from the task and its
//! events.
//!
//! - `run`: the project is the one whose root path is the workdir (created, from what the
//!   directory holds, when there is none), `CreateTask` plans the task, and the planning run's
//!   events are rendered; with `--apply`, `ExecuteTask` and `WatchTask` from the seq it returns.
//!   Ctrl-C sends `CancelTask` and waits for the end; a second Ctrl-C stops waiting. A watch that
//!   breaks (the orchestrator restarting, a standby taking over) resumes after the last event
//!   seen for up to [`RECONNECT_FOR`].
//! - `tasks list|show`: tokens are summed from the task's `model_call` events, phases and tool
//!   calls rebuilt from its events as the store projects them.
//! - The API carries a task's status and the reason it ended, not the kind of failure behind a
//!   local run's exit code; [`failure_kind`] infers what it can, and a failure it cannot place
//!   exits with `TASK_FAILED`.
//! - gRPC statuses become exit codes in one place, [`exit_for`]: the orchestrator unreachable or
//!   `UNAVAILABLE` is [`exit::ORCHESTRATOR_UNAVAILABLE`]; a request it refuses (`INVALID_ARGUMENT`,
//!   `NOT_FOUND`, `FAILED_PRECONDITION`) is [`exit::USAGE`] with its message; anything else
//!   [`exit::INTERNAL`].

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Status, Streaming};
use turbo_core::agent::AgentRole;
use turbo_core::event::{EventKind, TaskEvent};
use turbo_core::ids::TaskId;
use turbo_core::protocol::{FailureKind, ReviewVerdict};
use turbo_core::task::{DevelopmentTask, TaskStatus};
use turbo_core::tool::TokenUsage;
use turbo_core::validate::Validate;
use turbo_proto::convert::ProtoEnum;
use turbo_proto::projects::v1 as projects;
use turbo_proto::projects::v1::project_service_client::ProjectServiceClient;
use turbo_proto::tasks::v1 as tasks;
use turbo_proto::tasks::v1::task_service_client::TaskServiceClient;
use turbo_proto::trace::TraceInterceptor;
use turbo_store::{PhaseRow, PhaseStatus, StoredTask, TaskSummary, ToolCallRow};

use crate::exit::{self, Exit};
use crate::project::Guess;
use crate::render::Renderer;
use crate::run::{Failure, RunArgs, report};
use crate::tasks::{TasksCommand, print_list, print_show};

/// How long connecting may take before the orchestrator counts as unreachable.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Page size of list calls: the orchestrator's maximum.
const PAGE_SIZE: u32 = 500;
/// How long a broken watch is retried (the orchestrator restarting, a standby taking over).
const RECONNECT_FOR: Duration = Duration::from_secs(30);
/// Pause between two attempts to watch again.
const RECONNECT_PAUSE: Duration = Duration::from_secs(1);
/// A watch of a task that has not ended never ends by itself: its stored events arrive at once,
/// so reading stops once none arrived for this long (or after [`READ_LIVE_AT_MOST`]).
const QUIET: Duration = Duration::from_millis(500);
const READ_LIVE_AT_MOST: Duration = Duration::from_secs(5);
/// Upper bound for reading the events of a task that has ended (its watch ends by itself).
const READ_ENDED_AT_MOST: Duration = Duration::from_secs(60);
/// Tasks whose events `tasks list` reads at the same time.
const CONCURRENT_READS: usize = 8;
/// Names tried for a new project: the directory's name, then `name-2` ... `name-50`.
const MAX_NAME_TRIES: u32 = 50;
/// The longest project name the API takes.
const MAX_NAME_CHARS: usize = 100;
/// Shortest task id prefix `tasks show|execute` accept, as the local store.
const MIN_PREFIX: usize = 4;
/// The reason Ctrl-C gives when it cancels a task.
const CANCEL_REASON: &str = "cancelled with Ctrl-C in turbo-coder";

/// Checks a `--server` value: `http://HOST:PORT`, nothing else. Returns it without a trailing
/// slash, as messages show it.
pub fn server_url(text: &str) -> Result<String, Exit> {
    let text = text.trim();
    let bad = |why: String| {
        Exit::new(
            exit::USAGE,
            format!(
                "--server '{text}' {why}: give the orchestrator's gRPC address as http://HOST:PORT, e.g. http://127.0.0.1:50051 (or set TURBO_CODER_SERVER)"
            ),
        )
    };
    let uri: http::Uri = text.parse().map_err(|e| bad(format!("is not a URL ({e})")))?;
    match uri.scheme_str() {
        Some("http") => {}
        Some("https") => {
            return Err(bad(
                "uses https, and this build has no TLS for gRPC yet; reach the orchestrator over http (through a TLS tunnel or proxy if it is remote)"
                    .into(),
            ));
        }
        Some(other) => return Err(bad(format!("has the scheme {other}://, not http://"))),
        None => return Err(bad("has no scheme".into())),
    }
    let authority = uri.authority().ok_or_else(|| bad("names no host".into()))?;
    if authority.as_str().contains('@') {
        return Err(bad("carries user info, which the orchestrator does not take".into()));
    }
    if authority.host().is_empty() {
        return Err(bad("names no host".into()));
    }
    match authority.port_u16() {
        None => return Err(bad("names no port".into())),
        Some(0) => return Err(bad("has port 0".into())),
        Some(_) => {}
    }
    if !matches!(uri.path(), "" | "/") || uri.query().is_some() {
        return Err(bad("has a path or a query; the orchestrator serves at the root".into()));
    }
    Ok(format!("http://{authority}"))
}

/// An error and its causes, one after the other, without repeats.
fn causes(err: &dyn std::error::Error) -> String {
    let mut parts: Vec<String> = vec![err.to_string()];
    let mut next = err.source();
    while let Some(e) = next {
        let text = e.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        next = e.source();
    }
    parts.join(": ")
}

fn unreachable(url: &str, cause: &str) -> Exit {
    Exit::new(
        exit::ORCHESTRATOR_UNAVAILABLE,
        format!(
            "cannot reach the orchestrator at {url}: {cause}; check it is running (turbo-coder serve orchestrator) and the URL"
        ),
    )
}

/// Why a call failed on this side of the connection (refused, reset, timed out), or None for a
/// status the orchestrator sent: tonic keeps the underlying error of the former as its source.
fn transport_failure(status: &Status) -> Option<String> {
    std::error::Error::source(status).map(|_| causes(status))
}

/// The exit a failed call ends the command with: the one mapping from gRPC status to exit code.
pub fn exit_for(url: &str, status: &Status) -> Exit {
    if let Some(cause) = transport_failure(status) {
        return unreachable(url, &cause);
    }
    let message = status.message();
    match status.code() {
        Code::Unavailable => Exit::new(
            exit::ORCHESTRATOR_UNAVAILABLE,
            format!("the orchestrator at {url} cannot serve this now: {message}"),
        ),
        // The orchestrator's messages say what to fix.
        Code::InvalidArgument | Code::NotFound | Code::FailedPrecondition => Exit::new(exit::USAGE, message),
        code => Exit::new(
            exit::INTERNAL,
            format!("the orchestrator at {url} failed ({code:?}): {message}; its log has the details"),
        ),
    }
}

/// Whether a broken watch may work again when retried.
fn retryable(status: &Status) -> bool {
    status.code() == Code::Unavailable || transport_failure(status).is_some()
}

type Intercepted = InterceptedService<Channel, TraceInterceptor>;

/// Clients of the orchestrator at one URL; cheap to clone (they share one connection).
#[derive(Clone)]
pub struct Remote {
    url: String,
    tasks: TaskServiceClient<Intercepted>,
    projects: ProjectServiceClient<Intercepted>,
}

impl Remote {
    /// Connects to the orchestrator at `url` (checked by [`server_url`]); every call carries the
    /// current trace context.
    pub async fn connect(url: &str) -> Result<Remote, Exit> {
        let endpoint = Endpoint::from_shared(url.to_string())
            .map_err(|e| Exit::new(exit::USAGE, format!("--server '{url}' is not a usable address: {e}")))?
            .connect_timeout(CONNECT_TIMEOUT);
        let channel = endpoint.connect().await.map_err(|e| unreachable(url, &causes(&e)))?;
        Ok(Remote {
            url: url.to_string(),
            tasks: TaskServiceClient::with_interceptor(channel.clone(), TraceInterceptor),
            projects: ProjectServiceClient::with_interceptor(channel, TraceInterceptor),
        })
    }

    fn exit(&self, status: &Status) -> Exit {
        exit_for(&self.url, status)
    }

    fn task(&self, t: tasks::DevelopmentTask) -> Result<DevelopmentTask, Exit> {
        DevelopmentTask::try_from(t).map_err(|e| self.unreadable("task", e))
    }

    fn event(&self, e: tasks::TaskEvent) -> Result<TaskEvent, Exit> {
        TaskEvent::try_from(e).map_err(|e| self.unreadable("event", e))
    }

    fn unreadable(&self, what: &str, e: turbo_proto::Error) -> Exit {
        Exit::new(
            exit::INTERNAL,
            format!(
                "the orchestrator at {} sent a {what} this turbo-coder cannot read ({e}); use the same version of turbo-coder as the cluster",
                self.url
            ),
        )
    }

    async fn get_task(&self, id: &str) -> Result<DevelopmentTask, Exit> {
        let request = tasks::GetTaskRequest { task_id: id.to_string() };
        let task = self.tasks.clone().get_task(request).await.map_err(|s| self.exit(&s))?.into_inner();
        self.task(task)
    }

    /// Tasks newest first, `limit` at most (0: all), in the given status if any.
    async fn list_tasks(&self, status: Option<TaskStatus>, limit: u64) -> Result<Vec<tasks::DevelopmentTask>, Exit> {
        let mut found = Vec::new();
        let mut page_token = String::new();
        loop {
            let left = if limit == 0 { u64::from(PAGE_SIZE) } else { limit.saturating_sub(found.len() as u64) };
            let request = tasks::ListTasksRequest {
                project_id: None,
                status: status.map(|s| vec![s.to_proto()]).unwrap_or_default(),
                page_size: u32::try_from(left).unwrap_or(PAGE_SIZE).min(PAGE_SIZE),
                page_token,
            };
            let page = self.tasks.clone().list_tasks(request).await.map_err(|s| self.exit(&s))?.into_inner();
            found.extend(page.tasks);
            page_token = page.next_page_token;
            if page_token.is_empty() || (limit > 0 && found.len() as u64 >= limit) {
                break;
            }
        }
        if limit > 0 {
            found.truncate(usize::try_from(limit).unwrap_or(usize::MAX));
        }
        Ok(found)
    }

    /// A task by its id or a unique prefix of it (at least [`MIN_PREFIX`] characters).
    async fn find_task(&self, id: &str) -> Result<DevelopmentTask, Exit> {
        let text = id.trim();
        if let Ok(id) = uuid::Uuid::parse_str(text) {
            return self.get_task(&id.to_string()).await;
        }
        let prefix = id_prefix(text)?;
        let mut matches: Vec<tasks::DevelopmentTask> = self
            .list_tasks(None, 0)
            .await?
            .into_iter()
            .filter(|t| t.id.replace('-', "").starts_with(&prefix))
            .collect();
        match matches.len() {
            0 => Err(Exit::new(
                exit::USAGE,
                format!(
                    "no task on the orchestrator at {url} has an id starting with '{text}'; list them with `turbo-coder --server {url} tasks list`",
                    url = self.url
                ),
            )),
            1 => self.task(matches.remove(0)),
            n => {
                let ids: Vec<String> = matches.into_iter().map(|t| t.id).collect();
                Err(Exit::new(
                    exit::USAGE,
                    format!(
                        "id prefix '{text}' matches {n} tasks ({}); type more characters of the id",
                        ids.join(", ")
                    ),
                ))
            }
        }
    }

    /// The stored events of a task. The watch of a task that has ended ends by itself; for one
    /// that has not, reading stops once the stored events are in (nothing new for [`QUIET`]).
    async fn events(&self, task_id: TaskId, ended: bool) -> Result<Vec<TaskEvent>, Exit> {
        let request = tasks::WatchTaskRequest { task_id: task_id.to_string(), after_seq: 0 };
        let mut stream = self.tasks.clone().watch_task(request).await.map_err(|s| self.exit(&s))?.into_inner();
        let deadline = Instant::now() + if ended { READ_ENDED_AT_MOST } else { READ_LIVE_AT_MOST };
        let mut events = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let wait = if ended { left } else { QUIET.min(left) };
            match tokio::time::timeout(wait, stream.message()).await {
                Ok(Ok(Some(e))) => events.push(self.event(e)?),
                Ok(Ok(None)) => return Ok(events),
                Ok(Err(status)) => return Err(self.exit(&status)),
                Err(_) if !ended => return Ok(events),
                Err(_) => {
                    return Err(Exit::new(
                        exit::ORCHESTRATOR_UNAVAILABLE,
                        format!(
                            "the orchestrator at {} sent the events of task {task_id} for over {}s without ending; try again",
                            self.url,
                            READ_ENDED_AT_MOST.as_secs()
                        ),
                    ));
                }
            }
        }
    }

    /// The id of the live project rooted at `root_path`, the most recently updated one if
    /// several are.
    async fn project_at(&self, root_path: &str) -> Result<Option<String>, Exit> {
        let mut best: Option<projects::ProjectMetadata> = None;
        let mut page_token = String::new();
        loop {
            let request = projects::ListProjectsRequest { page_size: PAGE_SIZE, page_token, include_deleted: false };
            let page = self.projects.clone().list_projects(request).await.map_err(|s| self.exit(&s))?.into_inner();
            for p in page.projects.into_iter().filter(|p| p.root_path == root_path) {
                let newer = |p: &projects::ProjectMetadata| p.updated_at.map(|t| (t.seconds, t.nanos));
                if best.as_ref().is_none_or(|b| newer(&p) > newer(b)) {
                    best = Some(p);
                }
            }
            page_token = page.next_page_token;
            if page_token.is_empty() {
                return Ok(best.map(|p| p.id));
            }
        }
    }

    /// The project the workdir `root` belongs to: found by its root path, or created from what
    /// the directory holds, named after it (`name-2`, `name-3` ... when the name is taken).
    async fn project_for(&self, root: &Path) -> Result<String, Exit> {
        let root_path = root.to_string_lossy().to_string();
        if let Some(id) = self.project_at(&root_path).await? {
            return Ok(id);
        }
        let guess = Guess::of(root);
        for n in 1..=MAX_NAME_TRIES {
            let request = projects::CreateProjectRequest {
                name: numbered(&guess.name, n),
                project_type: guess.project_type.to_proto(),
                languages: guess.languages.iter().map(|l| l.to_proto()).collect(),
                root_path: Some(root_path.clone()),
                configuration_json: if guess.languages_guessed {
                    r#"{"languages_guessed":true}"#.into()
                } else {
                    String::new()
                },
                ..Default::default()
            };
            match self.projects.clone().create_project(request).await {
                Ok(created) => {
                    return created.into_inner().project.map(|p| p.id).ok_or_else(|| {
                        Exit::new(
                            exit::INTERNAL,
                            format!("the orchestrator at {} created a project but did not return it", self.url),
                        )
                    });
                }
                Err(status) if status.code() == Code::AlreadyExists => {
                    // Another run may have just created this directory's project.
                    if let Some(id) = self.project_at(&root_path).await? {
                        return Ok(id);
                    }
                }
                Err(status) => return Err(self.exit(&status)),
            }
        }
        Err(Exit::new(
            exit::USAGE,
            format!(
                "the names '{name}' to '{last}' are all taken by projects on the orchestrator at {}; rename the directory or delete projects you no longer need",
                self.url,
                name = guess.name,
                last = numbered(&guess.name, MAX_NAME_TRIES)
            ),
        ))
    }

    /// Renders the task's events after `after_seq` until the watch ends (after the terminal
    /// status) or, with `Until::Planned`, until the planning run is over. Ctrl-C cancels the
    /// task and keeps following it to its end; a second Ctrl-C stops waiting.
    async fn follow(&self, view: &mut View, task_id: TaskId, after_seq: u64, until: Until) -> Result<(), Exit> {
        let mut stream: Option<Streaming<tasks::TaskEvent>> = None;
        // When the watch broke, and why; it is opened again until RECONNECT_FOR has passed.
        let mut broken: Option<(Instant, Status)> = None;
        loop {
            let step = async {
                match stream.as_mut() {
                    Some(s) => Step::Message(s.message().await),
                    None => {
                        if broken.is_some() {
                            tokio::time::sleep(RECONNECT_PAUSE).await;
                        }
                        let after_seq = view.seen.max(after_seq);
                        let request = tasks::WatchTaskRequest { task_id: task_id.to_string(), after_seq };
                        Step::Opened(self.tasks.clone().watch_task(request).await)
                    }
                }
            };
            let step = tokio::select! {
                step = step => step,
                _ = tokio::signal::ctrl_c() => {
                    if view.interrupted {
                        return Err(Exit::new(
                            exit::INTERRUPTED,
                            format!(
                                "stopped waiting; task {task_id} may still be running on the orchestrator at {url}: `turbo-coder --server {url} tasks show {task_id}` shows it",
                                url = self.url
                            ),
                        ));
                    }
                    view.interrupted = true;
                    eprintln!("cancelling the task (Ctrl-C again to stop waiting)...");
                    self.cancel_in_background(task_id);
                    continue;
                }
            };
            match step {
                Step::Opened(Ok(response)) => stream = Some(response.into_inner()),
                Step::Message(Ok(Some(e))) => {
                    broken = None;
                    let e = self.event(e)?;
                    let to = match &e.kind {
                        EventKind::StatusChanged { to, .. } => Some(*to),
                        _ => None,
                    };
                    view.event(e);
                    if matches!(until, Until::Planned)
                        && to.is_some_and(|s| s == TaskStatus::Planned || s.is_terminal())
                    {
                        return Ok(());
                    }
                }
                Step::Message(Ok(None)) => return Ok(()),
                Step::Opened(Err(status)) | Step::Message(Err(status)) => {
                    let since = broken.as_ref().map_or_else(Instant::now, |(at, _)| *at);
                    if !retryable(&status) || since.elapsed() >= RECONNECT_FOR {
                        return Err(self.exit(&status));
                    }
                    if broken.is_none() {
                        eprintln!(
                            "lost the watch of task {task_id} ({}); watching again from event {}...",
                            status.message(),
                            view.seen.max(after_seq)
                        );
                    }
                    stream = None;
                    broken = Some((since, status));
                }
            }
        }
    }

    /// Sends CancelTask without waiting for its answer (it comes once the task has stopped;
    /// the watch shows that).
    fn cancel_in_background(&self, task_id: TaskId) {
        let remote = self.clone();
        tokio::spawn(async move {
            let request = tasks::CancelTaskRequest { task_id: task_id.to_string(), reason: Some(CANCEL_REASON.into()) };
            if let Err(status) = remote.tasks.clone().cancel_task(request).await {
                eprintln!("warning: cannot cancel task {task_id}: {}", remote.exit(&status));
            }
        });
    }
}

/// How far [`Remote::follow`] goes.
enum Until {
    /// The planning run: up to the move to `planned` (or a terminal status).
    Planned,
    /// The end of the watch, after the task's terminal status.
    End,
}

/// What a step of [`Remote::follow`] brought.
enum Step {
    Opened(Result<tonic::Response<Streaming<tasks::TaskEvent>>, Status>),
    Message(Result<Option<tasks::TaskEvent>, Status>),
}

/// A run as it is shown: the renderer, and what the summary needs from the events.
struct View {
    renderer: Renderer,
    /// The seq of the last event taken in.
    seen: u64,
    /// Tokens of the `model_call` events taken in.
    usage: TokenUsage,
    /// Why the task ended, from its terminal status change.
    reason: Option<String>,
    /// Ctrl-C was pressed and the task is being cancelled.
    interrupted: bool,
}

impl View {
    fn new(json: bool) -> Self {
        View { renderer: Renderer::new(json), seen: 0, usage: TokenUsage::default(), reason: None, interrupted: false }
    }

    /// Clears the status line before the command ends with `e`.
    fn abandon(self, e: Exit) -> Exit {
        self.renderer.finish();
        e
    }

    fn event(&mut self, e: TaskEvent) {
        if e.seq > self.seen {
            self.seen = e.seq;
            match &e.kind {
                EventKind::ModelCall { prompt_tokens, completion_tokens, .. } => {
                    self.usage += TokenUsage { prompt_tokens: *prompt_tokens, completion_tokens: *completion_tokens };
                }
                EventKind::StatusChanged { to, reason, .. } if to.is_terminal() => self.reason = reason.clone(),
                _ => {}
            }
        }
        self.renderer.event(&e);
    }

    /// The summary (or the JSON result line) and the exit code of a run that ended as `task`.
    fn report(self, task: &DevelopmentTask, execute: bool, json: bool) -> u8 {
        self.renderer.finish();
        let kind = failure_kind(task);
        let code = code_for(task, kind, execute);
        let message =
            self.reason.clone().unwrap_or_else(|| format!("the orchestrator reports the task {}", task.status));
        let failure = matches!(task.status, TaskStatus::Failed | TaskStatus::Cancelled)
            .then(|| Failure { kind, message: &message });
        report(task, failure, code, self.usage, json, execute, self.renderer.elapsed());
        code
    }
}

/// Why a task ended as it did, as far as the task itself tells (the API carries its status and
/// reason, not the failure kind): planning that failed made no valid plan; failing tests and
/// requested changes leave their results. Anything else is not known.
fn failure_kind(task: &DevelopmentTask) -> Option<FailureKind> {
    match task.status {
        TaskStatus::Cancelled => Some(FailureKind::Cancelled),
        TaskStatus::Failed if task.execution_plan.is_none() => Some(FailureKind::InvalidPlan),
        TaskStatus::Failed if task.test_results.as_ref().is_some_and(|t| !t.success) => Some(FailureKind::TestsFailed),
        TaskStatus::Failed if task.review_status.as_deref() == Some(ReviewVerdict::ChangesRequested.as_str()) => {
            Some(FailureKind::ChangesRequested)
        }
        _ => None,
    }
}

/// The exit code of a run that ended as `task`, as a local run would exit.
fn code_for(task: &DevelopmentTask, kind: Option<FailureKind>, execute: bool) -> u8 {
    match task.status {
        TaskStatus::Completed => exit::OK,
        TaskStatus::Planned if !execute => exit::OK,
        TaskStatus::Cancelled => exit::for_failure(FailureKind::Cancelled),
        TaskStatus::Failed => kind.map_or(exit::TASK_FAILED, exit::for_failure),
        _ => exit::INTERNAL,
    }
}

/// `name` for the first try, then `name-2`, `name-3` ..., within the API's name length.
fn numbered(name: &str, n: u32) -> String {
    if n <= 1 {
        return name.to_string();
    }
    let suffix = format!("-{n}");
    let mut out: String = name.chars().take(MAX_NAME_CHARS.saturating_sub(suffix.len())).collect();
    out.push_str(&suffix);
    out
}

/// The hex digits of a task id prefix (dashes as `tasks list` shows them allowed), lowercased.
fn id_prefix(text: &str) -> Result<String, Exit> {
    if let Some(c) = text.chars().find(|c| !(c.is_ascii_hexdigit() || *c == '-')) {
        return Err(Exit::new(
            exit::USAGE,
            format!("task id '{text}' has '{c}': ids are hex digits and dashes, as `tasks list` shows them"),
        ));
    }
    let hex: String = text.chars().filter(|c| *c != '-').map(|c| c.to_ascii_lowercase()).collect();
    if hex.len() < MIN_PREFIX {
        return Err(Exit::new(
            exit::USAGE,
            format!(
                "task id '{text}' is too short: give at least {MIN_PREFIX} characters of the id, as `tasks list` shows it"
            ),
        ));
    }
    Ok(hex)
}

/// The rows `tasks show` prints, rebuilt from the task and its events as the store projects
/// them: the phases of the task's plan in execution order, each tool call with its result, and
/// tokens per role.
fn rows(
    task: &DevelopmentTask,
    events: &[TaskEvent],
) -> (Vec<PhaseRow>, Vec<ToolCallRow>, BTreeMap<AgentRole, TokenUsage>) {
    let mut phases: Vec<PhaseRow> = match &task.execution_plan {
        Some(plan) => {
            let order = plan.execution_order().unwrap_or_else(|| plan.phases.iter().collect());
            order
                .into_iter()
                .enumerate()
                .map(|(i, p)| PhaseRow {
                    task_id: task.id,
                    plan_id: plan.plan_id,
                    name: p.name.clone(),
                    position: u32::try_from(i).unwrap_or(u32::MAX),
                    role: p.role(),
                    status: PhaseStatus::Pending,
                    attempt: 0,
                    summary: None,
                    started_at: None,
                    finished_at: None,
                })
                .collect()
        }
        None => Vec::new(),
    };
    let mut calls: Vec<ToolCallRow> = Vec::new();
    let mut usage: BTreeMap<AgentRole, TokenUsage> = BTreeMap::new();
    for e in events {
        match &e.kind {
            EventKind::PhaseStarted { phase, role, attempt } => {
                if let Some(row) = phases.iter_mut().find(|r| &r.name == phase) {
                    row.role = Some(*role);
                    row.status = PhaseStatus::Running;
                    row.attempt = *attempt;
                    row.started_at = Some(e.at);
                    // A repeated phase is running again: the earlier attempt's end no longer holds.
                    row.summary = None;
                    row.finished_at = None;
                }
            }
            EventKind::PhaseFinished { phase, success, summary, .. } => {
                if let Some(row) = phases.iter_mut().find(|r| &r.name == phase) {
                    row.status = if *success { PhaseStatus::Succeeded } else { PhaseStatus::Failed };
                    row.summary = Some(summary.clone());
                    row.finished_at = Some(e.at);
                }
            }
            EventKind::ToolCall { phase, step, tool, arguments } => calls.push(ToolCallRow {
                task_id: task.id,
                phase: phase.clone(),
                attempt: attempt_of(&phases, phase),
                step: *step,
                tool: tool.clone(),
                call_seq: e.seq,
                arguments: arguments.clone(),
                success: None,
                output: None,
                duration_ms: None,
                created_at: e.at,
                finished_at: None,
            }),
            EventKind::ToolResult { phase, step, tool, success, output, duration_ms } => {
                let attempt = attempt_of(&phases, phase);
                let open = calls.iter_mut().rev().find(|c| {
                    c.success.is_none()
                        && &c.phase == phase
                        && c.attempt == attempt
                        && c.step == *step
                        && &c.tool == tool
                });
                if let Some(call) = open {
                    call.success = Some(*success);
                    call.output = Some(output.clone());
                    call.duration_ms = Some(*duration_ms);
                    call.finished_at = Some(e.at);
                }
            }
            EventKind::ModelCall { role, prompt_tokens, completion_tokens, .. } => {
                *usage.entry(*role).or_default() +=
                    TokenUsage { prompt_tokens: *prompt_tokens, completion_tokens: *completion_tokens };
            }
            _ => {}
        }
    }
    (phases, calls, usage)
}

/// The attempt a phase is at, as the store numbers its steps and tool calls: that of its latest
/// `PhaseStarted`, 1 when it has none.
fn attempt_of(phases: &[PhaseRow], phase: &str) -> u32 {
    phases.iter().find(|r| r.name == phase).map_or(1, |r| r.attempt.max(1))
}

/// `--max-steps`, `--planner-model` and `--coder-model` change this process's configuration;
/// the orchestrator runs with its own.
fn refuse_local_flags(args: &RunArgs, url: &str) -> Result<(), Exit> {
    let given: Vec<&str> = [
        (args.max_steps.is_some(), "--max-steps"),
        (args.planner_model.is_some(), "--planner-model"),
        (args.coder_model.is_some(), "--coder-model"),
    ]
    .into_iter()
    .filter_map(|(set, flag)| set.then_some(flag))
    .collect();
    if given.is_empty() {
        return Ok(());
    }
    Err(Exit::new(
        exit::USAGE,
        format!(
            "{} cannot be used with --server: the orchestrator at {url} runs tasks with its own configuration; drop them, or set them in the orchestrator's configuration",
            given.join(", ")
        ),
    ))
}

/// `turbo-coder --server URL run "TASK" [--apply]`.
pub async fn run(url: &str, args: RunArgs) -> Result<u8, Exit> {
    refuse_local_flags(&args, url)?;
    let probe = DevelopmentTask::from_request(Default::default(), &args.task);
    if let Err(e) = probe.validate() {
        return Err(Exit::new(exit::USAGE, format!("the task is not usable: {e}")));
    }
    // The orchestrator reads and writes the workdir (at the same path on its host): whether it
    // can is its to check.
    let dir = crate::run::workdir(&args, false)?;
    let remote = Remote::connect(url).await?;
    let project_id = remote.project_for(&dir).await?;

    let mut view = View::new(args.json);
    match plan_and_carry_out(&remote, &mut view, project_id, &args).await {
        Ok((task, execute)) => Ok(view.report(&task, execute, args.json)),
        Err(e) => Err(view.abandon(e)),
    }
}

/// CreateTask and the planning run's events; with `--apply`, the run too. Returns the task as
/// it ended and whether it was to be carried out.
async fn plan_and_carry_out(
    remote: &Remote,
    view: &mut View,
    project_id: String,
    args: &RunArgs,
) -> Result<(DevelopmentTask, bool), Exit> {
    let url = &remote.url;
    view.renderer.waiting(&format!("planning on the orchestrator at {url}"));
    let request = tasks::CreateTaskRequest { project_id, description: args.task.clone(), ..Default::default() };
    let mut client = remote.tasks.clone();
    let created = tokio::select! {
        created = client.create_task(request) => created.map_err(|s| remote.exit(&s))?,
        _ = tokio::signal::ctrl_c() => {
            // The task has no id here yet, so it cannot be cancelled.
            return Err(Exit::new(
                exit::INTERRUPTED,
                format!("stopped waiting for the plan; the orchestrator at {url} may still make it: `turbo-coder --server {url} tasks list` shows the task"),
            ));
        }
    };
    let planned = remote.task(created.into_inner())?;
    // The planning run's events, as a local run shows them.
    remote.follow(view, planned.id, 0, Until::Planned).await?;
    if !args.apply || planned.status != TaskStatus::Planned || view.interrupted {
        return Ok((remote.get_task(&planned.id.to_string()).await?, args.apply));
    }
    Ok((carry_out(remote, view, planned.id).await?, true))
}

/// ExecuteTask, then the run's events to its end; returns the task as it ended. `view` has
/// seen the planning run's events, or (`tasks execute`) their model calls are counted here.
async fn carry_out(remote: &Remote, view: &mut View, task_id: TaskId) -> Result<DevelopmentTask, Exit> {
    let request = tasks::ExecuteTaskRequest { task_id: task_id.to_string() };
    let started = remote.tasks.clone().execute_task(request).await.map_err(|s| remote.exit(&s))?;
    let last_seq = started.into_inner().last_seq;
    let planning_seen = view.seen >= last_seq;
    remote.follow(view, task_id, last_seq, Until::End).await?;
    let task = remote.get_task(&task_id.to_string()).await?;
    if !planning_seen {
        // Every model call of the task counts, its planning run's too.
        for e in remote.events(task_id, task.status.is_terminal()).await? {
            if let (true, EventKind::ModelCall { prompt_tokens, completion_tokens, .. }) = (e.seq <= last_seq, e.kind) {
                view.usage += TokenUsage { prompt_tokens, completion_tokens };
            }
        }
    }
    Ok(task)
}

/// `turbo-coder --server URL tasks list|show|execute`.
pub async fn tasks(url: &str, command: TasksCommand) -> Result<u8, Exit> {
    let remote = Remote::connect(url).await?;
    match command {
        TasksCommand::List { status, limit, json } => {
            let found = remote.list_tasks(status, limit).await?;
            let found: Vec<DevelopmentTask> = found.into_iter().map(|t| remote.task(t)).collect::<Result<_, _>>()?;
            let tokens = total_tokens(&remote, &found).await?;
            let rows: Vec<TaskSummary> = found
                .into_iter()
                .zip(tokens)
                .map(|(t, total_tokens)| TaskSummary {
                    id: t.id,
                    title: t.title,
                    status: t.status,
                    progress: t.progress_percentage,
                    current_phase: t.current_phase,
                    created_at: t.created_at,
                    total_tokens,
                })
                .collect();
            print_list(&rows, json);
            Ok(exit::OK)
        }
        TasksCommand::Show { id, json } => {
            let task = remote.find_task(&id).await?;
            let events = remote.events(task.id, task.status.is_terminal()).await?;
            let workspace = match events.iter().find_map(|e| match &e.kind {
                EventKind::TaskCreated { workspace, .. } => Some(workspace.clone()),
                _ => None,
            }) {
                Some(w) => w,
                // Tasks run in their project's root.
                None => {
                    let request = projects::GetProjectRequest { project_id: task.project_id.to_string() };
                    let project = remote.projects.clone().get_project(request).await;
                    project.map(|p| p.into_inner().root_path).unwrap_or_default()
                }
            };
            let (phases, calls, usage) = rows(&task, &events);
            print_show(&StoredTask { task, workspace }, &phases, &calls, &usage, json);
            Ok(exit::OK)
        }
        TasksCommand::Execute { id, json } => {
            let task = remote.find_task(&id).await?;
            let mut view = View::new(json);
            match carry_out(&remote, &mut view, task.id).await {
                Ok(ended) => Ok(view.report(&ended, true, json)),
                Err(e) => Err(view.abandon(e)),
            }
        }
    }
}

/// Prompt plus completion tokens of each task's model calls, read from their events a few
/// tasks at a time.
async fn total_tokens(remote: &Remote, found: &[DevelopmentTask]) -> Result<Vec<u64>, Exit> {
    let permits = Arc::new(tokio::sync::Semaphore::new(CONCURRENT_READS));
    let mut reads = tokio::task::JoinSet::new();
    for (i, t) in found.iter().enumerate() {
        let (remote, permits, id, ended) = (remote.clone(), permits.clone(), t.id, t.status.is_terminal());
        reads.spawn(async move {
            let _permit = permits.acquire_owned().await;
            let events = remote.events(id, ended).await?;
            let total: u64 = events
                .iter()
                .map(|e| match e.kind {
                    EventKind::ModelCall { prompt_tokens, completion_tokens, .. } => {
                        u64::from(prompt_tokens) + u64::from(completion_tokens)
                    }
                    _ => 0,
                })
                .sum();
            Ok::<_, Exit>((i, total))
        });
    }
    let mut totals = vec![0; found.len()];
    while let Some(read) = reads.join_next().await {
        let (i, total) =
            read.map_err(|e| Exit::new(exit::INTERNAL, format!("reading a task's events failed: {e}")))??;
        totals[i] = total;
    }
    Ok(totals)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_urls_must_be_http_host_and_port() {
        assert_eq!(server_url("http://127.0.0.1:50051").unwrap(), "http://127.0.0.1:50051");
        assert_eq!(server_url(" http://orchestrator:50051/ ").unwrap(), "http://orchestrator:50051");
        assert_eq!(server_url("http://[::1]:50051").unwrap(), "http://[::1]:50051");
        for (bad, says) in [
            ("127.0.0.1:50051", "has no scheme"),
            ("http://127.0.0.1", "names no port"),
            ("http://127.0.0.1:0", "port 0"),
            ("https://orchestrator:50051", "no TLS"),
            ("nats://127.0.0.1:4222", "scheme nats://"),
            ("http://orchestrator:50051/api", "path or a query"),
            ("http://me:secret@orchestrator:50051", "user info"),
            ("http://orch estrator:50051", "is not a URL"),
            ("", "URL"),
        ] {
            let e = server_url(bad).unwrap_err();
            assert_eq!(e.code, exit::USAGE, "{bad}");
            assert!(e.message.contains(says), "{bad}: {}", e.message);
            assert!(e.message.contains("http://HOST:PORT"), "says what to give: {}", e.message);
        }
    }

    #[test]
    fn statuses_map_to_exit_codes() {
        let url = "http://127.0.0.1:50051";
        let cases = [
            (Status::unavailable("this orchestrator is a standby"), exit::ORCHESTRATOR_UNAVAILABLE),
            (Status::invalid_argument("description: at least 10 characters"), exit::USAGE),
            (Status::not_found("no task 1 exists: check the id"), exit::USAGE),
            (Status::failed_precondition("task t is completed: only planned tasks can be executed"), exit::USAGE),
            (Status::already_exists("name taken"), exit::INTERNAL),
            (Status::internal("boom"), exit::INTERNAL),
            (Status::deadline_exceeded("slow"), exit::INTERNAL),
        ];
        for (status, code) in cases {
            let e = exit_for(url, &status);
            assert_eq!(e.code, code, "{status:?}");
            assert!(e.message.contains(status.message()), "{}", e.message);
        }
        // The orchestrator's own words for what the user can fix; context for the rest.
        assert_eq!(exit_for(url, &Status::not_found("no task 1 exists")).message, "no task 1 exists");
        assert!(exit_for(url, &Status::unavailable("standby")).message.contains(url));
        assert!(exit_for(url, &Status::internal("boom")).message.contains(url));
    }

    #[test]
    fn a_failure_to_connect_names_the_url_and_what_to_check() {
        let refused = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "connection refused");
        let status = Status::from_error(Box::new(refused));
        assert!(transport_failure(&status).is_some(), "{status:?}");
        let e = exit_for("http://127.0.0.1:1", &status);
        assert_eq!(e.code, exit::ORCHESTRATOR_UNAVAILABLE);
        assert!(e.message.starts_with("cannot reach the orchestrator at http://127.0.0.1:1: "), "{}", e.message);
        assert!(e.message.contains("connection refused"), "{}", e.message);
        assert!(e.message.contains("turbo-coder serve orchestrator"), "{}", e.message);
        assert!(retryable(&status));
        assert!(!retryable(&Status::not_found("gone")));
    }

    #[tokio::test]
    async fn connecting_to_nothing_is_unavailable() {
        // Port 1 on loopback: nothing listens there.
        let e = Remote::connect("http://127.0.0.1:1").await.err().expect("nothing listens on port 1");
        assert_eq!(e.code, exit::ORCHESTRATOR_UNAVAILABLE);
        assert!(e.message.contains("cannot reach the orchestrator at http://127.0.0.1:1"), "{}", e.message);
    }

    #[test]
    fn taken_names_get_a_number_within_the_length_limit() {
        assert_eq!(numbered("greeter", 1), "greeter");
        assert_eq!(numbered("greeter", 2), "greeter-2");
        let long = "x".repeat(100);
        let n = numbered(&long, 12);
        assert_eq!(n.chars().count(), 100);
        assert!(n.ends_with("-12"));
    }

    #[test]
    fn id_prefixes_are_hex_and_long_enough() {
        assert_eq!(id_prefix("1A2b").unwrap(), "1a2b");
        assert_eq!(id_prefix("1a2b3c4d-5e").unwrap(), "1a2b3c4d5e");
        assert!(id_prefix("1a2").unwrap_err().message.contains("at least 4"));
        assert!(id_prefix("zzzz").unwrap_err().message.contains("hex digits"));
    }

    fn task_in(status: TaskStatus) -> DevelopmentTask {
        let mut t = DevelopmentTask::from_request(Default::default(), "add a greet(name) function with a test");
        t.status = status;
        t
    }

    /// `task` with a plan of two phases, listed out of their execution order.
    fn with_plan(mut task: DevelopmentTask) -> DevelopmentTask {
        use turbo_core::plan::{ExecutionPhase, ExecutionPlan};
        let mut test = ExecutionPhase::new("test", "run the tests", "tester");
        test.depends_on = vec!["implement".into()];
        let phases = vec![test, ExecutionPhase::new("implement", "write it", "CoderAgent")];
        task.execution_plan = Some(ExecutionPlan {
            plan_id: Default::default(),
            task_id: task.id,
            version: 1,
            phases,
            total_estimated_duration: Duration::from_secs(600),
            confidence_score: 0.9,
            resource_requirements: Default::default(),
            risk_factors: Vec::new(),
            mitigation_strategies: Vec::new(),
            required_knowledge: Vec::new(),
            context_sources: Vec::new(),
            generated_by: "planner:test".into(),
            generated_at: chrono::Utc::now(),
            last_updated: chrono::Utc::now(),
        });
        task
    }

    #[test]
    fn exit_codes_follow_the_task_as_a_local_run() {
        let completed = task_in(TaskStatus::Completed);
        assert_eq!(code_for(&completed, failure_kind(&completed), true), exit::OK);
        let planned = task_in(TaskStatus::Planned);
        assert_eq!(code_for(&planned, None, false), exit::OK);
        assert_eq!(code_for(&planned, None, true), exit::INTERNAL, "an --apply run that never ran");
        let cancelled = task_in(TaskStatus::Cancelled);
        assert_eq!(failure_kind(&cancelled), Some(FailureKind::Cancelled));
        assert_eq!(code_for(&cancelled, failure_kind(&cancelled), true), exit::INTERRUPTED);
        // Failed in planning: no valid plan.
        let unplanned = task_in(TaskStatus::Failed);
        assert_eq!(failure_kind(&unplanned), Some(FailureKind::InvalidPlan));
        assert_eq!(code_for(&unplanned, failure_kind(&unplanned), false), exit::MODEL_OUTPUT);
        // Failed while running: tests that still fail, or a cause the task does not show.
        let mut failing = with_plan(task_in(TaskStatus::Failed));
        assert_eq!(failure_kind(&failing), None);
        assert_eq!(code_for(&failing, None, true), exit::TASK_FAILED);
        failing.test_results = Some(turbo_core::task::TestResults {
            command: "pytest -q".into(),
            success: false,
            exit_code: Some(1),
            rounds: 3,
            output_tail: "1 failed".into(),
        });
        assert_eq!(failure_kind(&failing), Some(FailureKind::TestsFailed));
        assert_eq!(code_for(&failing, failure_kind(&failing), true), exit::TASK_FAILED);
    }

    #[test]
    fn events_rebuild_the_rows_the_store_keeps() {
        let task = with_plan(task_in(TaskStatus::Completed));
        let at = chrono::Utc::now();
        let ev = |seq, kind| TaskEvent { task_id: task.id, seq, at, kind };
        let events = vec![
            ev(1, EventKind::PhaseStarted { phase: "implement".into(), role: AgentRole::Coder, attempt: 1 }),
            ev(
                2,
                EventKind::ToolCall {
                    phase: "implement".into(),
                    step: 1,
                    tool: "fs_write".into(),
                    arguments: serde_json::json!({"path": "greet.py"}),
                },
            ),
            ev(
                3,
                EventKind::ToolResult {
                    phase: "implement".into(),
                    step: 1,
                    tool: "fs_write".into(),
                    success: true,
                    output: "wrote".into(),
                    duration_ms: 3,
                },
            ),
            ev(
                4,
                EventKind::ModelCall {
                    role: AgentRole::Coder,
                    phase: Some("implement".into()),
                    model: "coder:test".into(),
                    prompt_tokens: 10,
                    completion_tokens: 5,
                    latency_ms: 1,
                    ttft_ms: None,
                    tokens_per_second: None,
                },
            ),
            ev(
                5,
                EventKind::PhaseFinished {
                    phase: "implement".into(),
                    role: AgentRole::Coder,
                    success: true,
                    summary: "done".into(),
                },
            ),
        ];
        let (phases, calls, usage) = rows(&task, &events);
        let states: Vec<(&str, PhaseStatus, u32)> =
            phases.iter().map(|p| (p.name.as_str(), p.status, p.attempt)).collect();
        assert_eq!(states, [("implement", PhaseStatus::Succeeded, 1), ("test", PhaseStatus::Pending, 0)]);
        assert_eq!(phases[1].role, Some(AgentRole::Tester), "from the plan until it starts");
        assert_eq!(calls.len(), 1);
        assert_eq!((calls[0].success, calls[0].duration_ms), (Some(true), Some(3)));
        assert_eq!(usage[&AgentRole::Coder], TokenUsage { prompt_tokens: 10, completion_tokens: 5 });
    }
}
