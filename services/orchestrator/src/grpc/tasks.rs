//! `turbo.tasks.v1.TaskService`: create (and plan), read, list, cancel, execute and watch tasks.

use std::pin::Pin;
use std::time::Duration;

use tokio::sync::broadcast::error::RecvError;
use tokio::sync::mpsc;
use tokio_stream::Stream;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};
use turbo_core::agent::AgentRole;
use turbo_core::event::{EventKind, TaskEvent};
use turbo_core::ids::TaskId;
use turbo_core::protocol::FailureKind;
use turbo_core::task::{DevelopmentTask, TaskStatus};
use turbo_proto::convert::{ProtoEnum, id_from_proto};
use turbo_proto::tasks::v1 as pb;
use turbo_proto::tasks::v1::task_service_server::TaskService;
use turbo_store::{StoredTask, TaskQuery};

use super::{Api, Level, Who, next_token, page_cursor, page_size};
use crate::CancelOutcome;
use crate::error::{Error, Result};

/// How long CancelTask waits for a running task to record its cancellation before answering
/// with the task as stored (agents stop at their next model or tool call).
const CANCEL_WAIT: Duration = Duration::from_secs(30);
/// Events buffered per watcher before the watcher's task waits for the client to read.
const WATCH_BUFFER: usize = 64;
/// How often a watcher also reads the store: events recorded by another process (a
/// `turbo-coder run` on the same database) never reach this process's broadcast.
const WATCH_POLL: Duration = Duration::from_secs(5);

type EventStream = Pin<Box<dyn Stream<Item = std::result::Result<pb::TaskEvent, Status>> + Send>>;

#[tonic::async_trait]
impl TaskService for Api {
    async fn create_task(
        &self,
        request: Request<pb::CreateTaskRequest>,
    ) -> std::result::Result<Response<pb::DevelopmentTask>, Status> {
        let who = Who::of(&request);
        let r = request.into_inner();
        let detail = serde_json::json!({ "project_id": r.project_id });
        let created = async {
            who.needs(Level::Write)?;
            self.visible_project(&who, id_from_proto("project_id", &r.project_id)?).await?;
            self.create(r).await
        }
        .await
        .map_err(Status::from);
        let target = created.as_ref().map(|t| t.id.clone()).unwrap_or_default();
        self.audit(who.actor(), "task.create", target, Some(detail), &created).await;
        Ok(Response::new(created?))
    }

    async fn get_task(
        &self,
        request: Request<pb::GetTaskRequest>,
    ) -> std::result::Result<Response<pb::DevelopmentTask>, Status> {
        let who = Who::of(&request);
        let id = task_id(&request.get_ref().task_id)?;
        Ok(Response::new(self.visible_task(&who, id).await?.task.into()))
    }

    async fn list_tasks(
        &self,
        request: Request<pb::ListTasksRequest>,
    ) -> std::result::Result<Response<pb::ListTasksResponse>, Status> {
        let who = Who::of(&request);
        Ok(Response::new(self.list(&who, request.into_inner()).await?))
    }

    async fn cancel_task(
        &self,
        request: Request<pb::CancelTaskRequest>,
    ) -> std::result::Result<Response<pb::DevelopmentTask>, Status> {
        let who = Who::of(&request);
        let r = request.into_inner();
        let cancelled = async {
            who.needs(Level::Write)?;
            let id = self.visible_task(&who, task_id(&r.task_id)?).await?.task.id;
            self.cancel(id, r.reason).await
        }
        .await
        .map_err(Status::from);
        self.audit(who.actor(), "task.cancel", r.task_id, None, &cancelled).await;
        Ok(Response::new(cancelled?))
    }

    async fn execute_task(
        &self,
        request: Request<pb::ExecuteTaskRequest>,
    ) -> std::result::Result<Response<pb::ExecuteTaskResponse>, Status> {
        let who = Who::of(&request);
        let target = request.into_inner().task_id;
        let executed = async {
            who.needs(Level::Write)?;
            let id = self.visible_task(&who, task_id(&target)?).await?.task.id;
            self.execute(id).await
        }
        .await
        .map_err(Status::from);
        self.audit(who.actor(), "task.execute", target, None, &executed).await;
        Ok(Response::new(executed?))
    }

    type WatchTaskStream = EventStream;

    async fn watch_task(
        &self,
        request: Request<pb::WatchTaskRequest>,
    ) -> std::result::Result<Response<EventStream>, Status> {
        let who = Who::of(&request);
        let r = request.into_inner();
        let id = task_id(&r.task_id)?;
        // Subscribed before anything is read from the store, so no event falls in between.
        let live = self.recorder()?.subscribe();
        self.visible_task(&who, id).await?;
        let (tx, rx) = mpsc::channel(WATCH_BUFFER);
        let api = self.clone();
        tokio::spawn(async move {
            let mut watch = Watch { api, task_id: id, last: r.after_seq, tx };
            if let Err(status) = watch.run(live).await {
                let _ = watch.tx.send(Err(status)).await;
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}

fn task_id(text: &str) -> Result<TaskId> {
    Ok(id_from_proto("task_id", text)?)
}

impl Api {
    pub(super) async fn task(&self, id: TaskId) -> Result<StoredTask> {
        self.store.get_task(id).await?.ok_or(Error::UnknownTask(id))
    }

    /// [`Api::task`], if `who` may see its project ([`Error::UnknownTask`] otherwise).
    async fn visible_task(&self, who: &Who, id: TaskId) -> Result<StoredTask> {
        let task = self.task(id).await?;
        if self.sees_project(who, task.task.project_id).await? { Ok(task) } else { Err(Error::UnknownTask(id)) }
    }

    /// The task's workspace must be a directory before anything runs in it.
    pub(super) fn check_workspace(path: &str) -> Result<()> {
        if std::path::Path::new(path).is_dir() {
            Ok(())
        } else {
            Err(Error::Workspace {
                path: path.to_string(),
                reason: "is not a directory on the orchestrator's host: create it, or point the project's root_path at one with UpdateProject".to_string(),
            })
        }
    }

    /// Validates the request into a task of a live project, plans it in the project's root and
    /// returns it with its plan (status PLANNED, or FAILED when no valid plan was made).
    pub(super) async fn create(&self, request: pb::CreateTaskRequest) -> Result<pb::DevelopmentTask> {
        let task = DevelopmentTask::try_from(request)?;
        let project = self.live_project(task.project_id).await?;
        Self::check_workspace(&project.root_path)?;
        self.models.check(&[AgentRole::Planner]).await?;
        let id = self.orchestrator()?.submit(task, project.root_path, false).await?;
        let result = self.orchestrator()?.wait(id).await?;
        match result.failure {
            // The task is stored as failed, but the cause is the model server: say so, so the
            // caller retries later rather than reading a failed task.
            Some(f) if f.kind == FailureKind::ModelUnavailable => Err(Error::Agent(f)),
            _ => Ok(result.task.into()),
        }
    }

    async fn list(&self, who: &Who, r: pb::ListTasksRequest) -> Result<pb::ListTasksResponse> {
        let project = match r.project_id.as_deref() {
            Some(text) => {
                let id = id_from_proto("project_id", text)?;
                self.visible_project(who, id).await?;
                Some(id)
            }
            None => None,
        };
        let statuses = r
            .status
            .iter()
            .enumerate()
            .map(|(i, s)| TaskStatus::from_proto(&format!("status[{i}]"), *s))
            .collect::<std::result::Result<Vec<_>, _>>()?;
        let query = TaskQuery { project, statuses, limit: page_size(r.page_size), after: page_cursor(&r.page_token)? };
        let page = self.store.page_tasks(query).await?;
        // Without a project filter, the tasks of projects the caller cannot see are left out
        // (a page may then hold fewer than asked; the token still leads on).
        let mut seen = std::collections::HashMap::new();
        let mut tasks = Vec::with_capacity(page.items.len());
        for t in page.items {
            let project = t.task.project_id;
            let visible = match seen.get(&project) {
                Some(v) => *v,
                None => *seen.entry(project).or_insert(self.sees_project(who, project).await?),
            };
            if visible {
                tasks.push(t.task.into());
            }
        }
        Ok(pb::ListTasksResponse { tasks, next_page_token: next_token(page.next) })
    }

    async fn cancel(&self, id: TaskId, reason: Option<String>) -> Result<pb::DevelopmentTask> {
        match self.orchestrator()?.cancel_task(id, reason).await? {
            CancelOutcome::Cancelled(task) => Ok((*task).into()),
            CancelOutcome::Stopping => match tokio::time::timeout(CANCEL_WAIT, self.orchestrator()?.wait(id)).await {
                Ok(result) => Ok(result?.task.into()),
                // Still stopping: answer with what is stored; WatchTask shows the end.
                Err(_) => Ok(self.task(id).await?.task.into()),
            },
        }
    }

    /// Starts a planned task of a live project and answers at once with the seq to watch from.
    pub(super) async fn execute(&self, id: TaskId) -> Result<pb::ExecuteTaskResponse> {
        let stored = self.task(id).await?;
        let task = &stored.task;
        if task.status != TaskStatus::Planned || task.execution_plan.is_none() {
            return Err(Error::NotExecutable {
                task_id: id,
                status: task.status,
                hint: "only planned tasks can be executed; create a new task to plan it again",
            });
        }
        if self.live_project(task.project_id).await.is_err() {
            return Err(Error::ProjectDeleted(task.project_id));
        }
        Self::check_workspace(&stored.workspace)?;
        self.models.check(&[AgentRole::Coder, AgentRole::Tester, AgentRole::Reviewer]).await?;
        // Everything recorded so far (the planning run) is stored, so the last seq is exact.
        self.recorder()?.flush().await;
        let last_seq = self.store.next_seq(id).await?.saturating_sub(1);
        self.orchestrator()?.execute(id).await?;
        // The move to in_progress is stored before the answer: an orchestrator that dies from
        // here on leaves its event as well as the task's status for the next one.
        self.recorder()?.flush().await;
        let task = self.task(id).await?.task;
        Ok(pb::ExecuteTaskResponse { task: Some(task.into()), last_seq })
    }
}

/// One watcher: sends the task's events after `last` in order, each once, then ends after the
/// event that moves the task to a terminal status.
struct Watch {
    api: Api,
    task_id: TaskId,
    /// The seq of the last event sent (or the request's `after_seq`).
    last: u64,
    tx: mpsc::Sender<std::result::Result<pb::TaskEvent, Status>>,
}

/// Whether the watch goes on after an event.
enum Flow {
    More,
    Done,
}

impl Watch {
    async fn run(&mut self, mut live: tokio::sync::broadcast::Receiver<TaskEvent>) -> std::result::Result<(), Status> {
        if let Flow::Done = self.catch_up(u64::MAX).await? {
            return Ok(());
        }
        // Everything stored has been sent. A task that already ended has its terminal event
        // stored once the recorder has caught up; this watcher resumed past it.
        if self.api.task(self.task_id).await?.task.status.is_terminal() {
            self.api.recorder()?.flush().await;
            self.catch_up(u64::MAX).await?;
            return Ok(());
        }
        let mut poll = tokio::time::interval(WATCH_POLL);
        poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        poll.tick().await;
        loop {
            tokio::select! {
                // Events first: at shutdown the drained runs' last events are already out
                // when the closing token fires, and they must reach the watcher.
                biased;
                _ = poll.tick() => {
                    if let Flow::Done = self.catch_up(u64::MAX).await? {
                        return Ok(());
                    }
                }
                event = live.recv() => match event {
                    Ok(e) if e.task_id == self.task_id => {
                        if e.seq <= self.last {
                            continue; // already sent from the store
                        }
                        // A gap: events between were stored before this watcher subscribed
                        // or were missed; the store has them.
                        if e.seq > self.last + 1 && let Flow::Done = self.catch_up(e.seq).await? {
                            return Ok(());
                        }
                        if e.seq > self.last && let Flow::Done = self.send(e).await? {
                            return Ok(());
                        }
                    }
                    Ok(_) => {}
                    // Fell behind the broadcast: the store has every event it dropped.
                    Err(RecvError::Lagged(_)) => {
                        if let Flow::Done = self.catch_up(u64::MAX).await? {
                            return Ok(());
                        }
                    }
                    Err(RecvError::Closed) => return Err(self.closing()),
                },
                _ = self.tx.closed() => return Ok(()),
                _ = self.api.closing.cancelled() => {
                    // Whatever was recorded before the end is sent; a task that did not end
                    // leaves the watcher a seq to resume from.
                    return match self.catch_up(u64::MAX).await? {
                        Flow::Done => Ok(()),
                        Flow::More => Err(self.closing()),
                    };
                }
            }
        }
    }

    /// Sends the stored events after `last` and before `before`.
    async fn catch_up(&mut self, before: u64) -> std::result::Result<Flow, Status> {
        let events = self.api.store.events(self.task_id, self.last).await.map_err(Error::from)?;
        for e in events.into_iter().take_while(|e| e.seq < before) {
            if let Flow::Done = self.send(e).await? {
                return Ok(Flow::Done);
            }
        }
        Ok(Flow::More)
    }

    async fn send(&mut self, e: TaskEvent) -> std::result::Result<Flow, Status> {
        self.last = e.seq;
        let terminal = matches!(e.kind, EventKind::StatusChanged { to, .. } if to.is_terminal());
        if self.tx.send(Ok(e.into())).await.is_err() {
            return Ok(Flow::Done); // the client went away
        }
        Ok(if terminal { Flow::Done } else { Flow::More })
    }

    fn closing(&self) -> Status {
        Status::unavailable(format!(
            "the orchestrator is shutting down; watch again with after_seq={} once it is back",
            self.last
        ))
    }
}
