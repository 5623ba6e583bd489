//! The orchestrator: owns task and plan state, runs each task's plan by dispatching phases to
//! the agents, and records every step as events.
//!
//! As a service of the cluster it is started by [`run`], from its own binary
//! `turbo-orchestrator` (`src/main.rs`), or by [`run_with`] from `turbo-coder serve
//! orchestrator`, which opens the knowledge base for the embedded agents: it opens the configured store,
//! starts its stack (embedded, [`local::Embedded`]: the agents and the tool runner in this
//! process; or, with `cluster.nats_url` set, [`cluster::Clustered`]: the agents are the
//! cluster's agent-worker services over NATS) and serves the public gRPC API,
//! `turbo.tasks.v1.TaskService`, `turbo.projects.v1.ProjectService` and
//! `turbo.sessions.v1.SessionService`, with health checking and server reflection, until its
//! shutdown token fires; then it drains.
//!
//! # Layout
//! - `orchestrator`: the root actor, tracking running tasks; [`OrchestratorHandle`] is its API.
//! - `task_run`: one actor per running task: plan, phases, test and review rounds, deadline.
//! - `leader`: the store's lease: one orchestrator runs the tasks, the others stand by.
//! - `recorder`: the single writer of task events (numbering, storage, broadcast).
//! - [`cluster`]: the stack of the cluster: agents over NATS, the workers' events into the
//!   recorder (acknowledged once stored), stored events out to `turbo.events.task.<task_id>`,
//!   interrupted tasks resumed at start.
//! - [`local`]: the embedded stack (models, agents, tool runner, recorder, orchestrator) that
//!   `turbo-coder run` and [`run`] start.
//! - `grpc`: the public API (`grpc/tasks.rs`: `TaskService`, `grpc/projects.rs`:
//!   `ProjectService`, `grpc/sessions.rs`: `SessionService`, interactive sessions whose
//!   requests run through the tool-runner and the agents) over the handle, the recorder, the
//!   tool-runner and the store.
//! - [`analysis`]: a project directory's initial analysis (languages, manifests, size).
//! - [`control`]: the operators' control plane over NATS request-reply (`turbo.ctl.*`: list,
//!   get and cancel tasks, list live workers), plain JSON for `nats req`.
//! - `error`: [`Error`] and the one mapping from its kinds to gRPC status codes.
//! - this file: the handle, the service's start and shutdown, and [`run`], the network entry
//!   point.
//! - `main.rs`: the `turbo-orchestrator` binary: arguments, config, telemetry, then [`run`].

pub mod analysis;
pub mod cluster;
pub mod control;
mod error;
mod grpc;
mod leader;
pub mod local;
mod orchestrator;
mod recorder;
mod task_run;

use std::sync::Arc;
use std::time::Duration;

use ractor::{Actor, ActorRef};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;
use turbo_core::ids::TaskId;
use turbo_core::knowledge::Knowledge;
use turbo_core::task::DevelopmentTask;

pub use error::{Error, Result};
pub use orchestrator::CancelOutcome;
pub use recorder::Recorder;
pub use task_run::{RunDeps, RunResult, RunSettings};

use orchestrator::{Orchestrator, OrchestratorMsg};

/// The gRPC services this process serves and reports as serving in its health checks.
pub const GRPC_SERVICES: &[&str] =
    &["turbo.tasks.v1.TaskService", "turbo.projects.v1.ProjectService", "turbo.sessions.v1.SessionService"];
/// The services of the one-process orchestrator: its own and the tool-runner's.
pub const EMBEDDED_GRPC_SERVICES: &[&str] = &[
    "turbo.tasks.v1.TaskService",
    "turbo.projects.v1.ProjectService",
    "turbo.sessions.v1.SessionService",
    "turbo.tools.v1.ToolService",
];

/// How long a soft-deleted project can be restored; then it is purged.
pub const RESTORE_WINDOW: chrono::TimeDelta = chrono::TimeDelta::days(30);

/// How often projects past their restore window are purged.
const PURGE_EVERY: Duration = Duration::from_secs(3600);

/// Serves the orchestrator on `listener` until `shutdown` is cancelled: opens the store from
/// `config.store` (SQLite by default, Postgres in the cluster), connects the models, starts
/// the stack and serves the task and project APIs with health and reflection.
///
/// The stack is embedded (agents and tools in this process) unless `cluster.nats_url` is set;
/// then the agents are the cluster's agent-worker services over NATS ([`cluster`]), tasks an
/// earlier orchestrator left running are resumed, and the operators' control subjects
/// ([`control`]) are served.
///
/// Only one orchestrator runs a store's tasks at a time ([`leader`]): until this one holds the
/// store's lease it stands by, its services NOT_SERVING and their calls UNAVAILABLE; it takes
/// over as soon as the holder is gone. One that loses the lease to another stops at once with
/// [`Error::LeaseLost`].
///
/// On shutdown it reports not-serving, then, embedded, cancels running tasks and waits for
/// them to record their end; in the cluster it leaves them running for the next orchestrator
/// to resume. Then it ends open `WatchTask` streams, releases the lease and returns.
///
/// The embedded agents work without retrieved context here: this crate does not open the
/// knowledge dataset. [`run_with`] takes a knowledge handle for them.
pub async fn run(config: &turbo_config::Config, listener: TcpListener, shutdown: CancellationToken) -> Result<()> {
    if config.cluster.nats_url.is_none() && config.knowledge.enabled {
        tracing::info!(
            "the embedded agents run without retrieved context: this program does not open the knowledge \
             dataset; serve with `turbo-coder serve orchestrator` for retrieval"
        );
    }
    run_with(config, listener, shutdown, None).await
}

/// [`run`], with the embedded agents retrieving context for their prompts from `knowledge`
/// (unused with `cluster.nats_url` set: the cluster's agent workers reach the knowledge
/// service themselves).
pub async fn run_with(
    config: &turbo_config::Config,
    listener: TcpListener,
    shutdown: CancellationToken,
    knowledge: Option<Arc<dyn Knowledge>>,
) -> Result<()> {
    let addr = listener.local_addr().map(|a| a.to_string()).unwrap_or_else(|_| "an unknown address".into());
    let store = local::open_store(config).await?;
    let models = local::Models::connect(config)?;
    // Ends the API's long-lived calls (watch streams) once the running tasks have drained.
    let closing = CancellationToken::new();
    let active = grpc::Active::default();
    let api = grpc::Api {
        active: active.clone(),
        store: store.clone(),
        models: models.clone(),
        workspaces: std::path::absolute(config.store.data_dir().join("workspaces"))
            .unwrap_or_else(|_| config.store.data_dir().join("workspaces")),
        closing: closing.clone(),
        sessions: grpc::Sessions::default(),
    };
    let sessions = api.sessions.clone();
    // In one process, the tools run here too, and their approvals are decided through this
    // server's ToolService.
    let tools = config.cluster.nats_url.is_none().then(|| local::tool_runner(config, &store));
    let (services, routes) = match &tools {
        Some(runner) => (
            EMBEDDED_GRPC_SERVICES,
            api.routes().add_service(turbo_tool_runner::ToolGrpc::new(runner.clone()).server()),
        ),
        None => (GRPC_SERVICES, api.routes()),
    };
    // The services report NOT_SERVING until this process holds the store's lease.
    let (ready, ready_rx) = tokio::sync::watch::channel(false);
    tracing::info!(%addr, ?services, "orchestrator listening");
    let server = turbo_proto::server::serve_while_ready(services, routes, listener, shutdown.clone(), ready_rx);
    tokio::pin!(server);
    let serve_error = |e: tonic::transport::Error| Error::Serve { addr: addr.clone(), reason: e.to_string() };

    let mut lease = tokio::select! {
        lease = leader::acquire(&store, &shutdown) => match lease {
            Some(lease) => lease,
            None => return server.await.map_err(serve_error),
        },
        served = &mut server => return served.map_err(serve_error),
    };
    let stack = match &config.cluster.nats_url {
        Some(url) => Stack::Cluster(cluster::Clustered::start(config, store.clone(), url).await?),
        None => {
            let runner = tools.clone().unwrap_or_else(|| local::tool_runner(config, &store));
            let tools = turbo_tool_runner::ToolRunnerClient::from_shared_local(runner);
            let embedded = local::Embedded::start_with_tools(config, store.clone(), &models, knowledge, tools).await?;
            // What an earlier process serving this store left running (it was killed) goes on.
            match embedded.orchestrator.resume_interrupted().await {
                Ok(resumed) if resumed.is_empty() => {}
                Ok(resumed) => tracing::info!(tasks = ?resumed, "resumed tasks an earlier orchestrator left running"),
                Err(error) => tracing::warn!(%error, "cannot resume the tasks an earlier orchestrator left running"),
            }
            Stack::Embedded(embedded)
        }
    };
    let (orchestrator, recorder, tools) = match &stack {
        Stack::Embedded(e) => (e.orchestrator.clone(), e.recorder.clone(), e.tools.clone()),
        Stack::Cluster(c) => (c.orchestrator.clone(), c.recorder.clone(), c.tools.clone()),
    };
    let control = match &stack {
        Stack::Cluster(c) => {
            let serving =
                control::serve_control(c.client.clone(), store.clone(), orchestrator.clone(), shutdown.clone());
            Some(tokio::spawn(async move {
                if let Err(error) = serving.await {
                    tracing::error!(%error, "the nats control subjects stopped");
                }
            }))
        }
        Stack::Embedded(_) => None,
    };
    active.set(grpc::Stack { orchestrator, recorder, tools });
    let _ = ready.send(true);
    let sweep = tokio::spawn(grpc::sweep_idle_sessions(store.clone(), sessions, closing.clone()));
    let purge = tokio::spawn(purge_loop(store, closing.clone()));
    tracing::info!(%addr, ?services, "orchestrator serving");
    let served = tokio::select! {
        served = &mut server => {
            // The server stopped on its own (it failed): nothing is served, so stop the rest.
            stack.shutdown().await;
            closing.cancel();
            served.map_err(serve_error)
        }
        _ = shutdown.cancelled() => {
            tracing::info!("orchestrator draining");
            stack.shutdown().await;
            closing.cancel();
            server.await.map_err(serve_error)
        }
        lost = leader::hold(&mut lease) => {
            // Another orchestrator runs the tasks now: stop at once, writing nothing more (the
            // stack is dropped, not drained; what it did not store, the new leader redoes).
            tracing::error!(error = %lost, "lost the store's lease");
            Err(lost)
        }
    };
    purge.abort();
    sweep.abort();
    if let Some(control) = control {
        control.abort();
    }
    // Held until everything above has stopped writing; a standby takes it from here.
    drop(lease);
    served
}

/// What runs the tasks: everything in this process, or the cluster over NATS.
enum Stack {
    Embedded(local::Embedded),
    Cluster(cluster::Clustered),
}

impl Stack {
    async fn shutdown(self) {
        match self {
            Stack::Embedded(e) => {
                tracing::info!("cancelling running tasks");
                e.shutdown().await;
            }
            Stack::Cluster(c) => c.shutdown().await,
        }
    }
}

/// Purges projects deleted longer than [`RESTORE_WINDOW`] ago, at start and then periodically.
async fn purge_loop(store: turbo_store::Store, closing: CancellationToken) {
    let mut every = tokio::time::interval(PURGE_EVERY);
    loop {
        tokio::select! {
            _ = every.tick() => {}
            _ = closing.cancelled() => return,
        }
        match store.purge_projects(chrono::Utc::now() - RESTORE_WINDOW).await {
            Ok(0) => {}
            Ok(n) => {
                tracing::info!(projects = n, "purged projects past their restore window");
                let entry = turbo_store::NewAuditEntry {
                    at: chrono::Utc::now(),
                    actor: "orchestrator".into(),
                    action: "project.purge".into(),
                    target: String::new(),
                    outcome: "ok".into(),
                    detail: Some(serde_json::json!({ "projects": n })),
                };
                if let Err(error) = store.record_audit(entry).await {
                    tracing::warn!(%error, "cannot record the purge in the audit log");
                }
            }
            Err(error) => tracing::warn!(%error, "cannot purge deleted projects"),
        }
    }
}

/// Typed access to the orchestrator actor; cheap to clone.
#[derive(Clone)]
pub struct OrchestratorHandle {
    actor: ActorRef<OrchestratorMsg>,
}

/// A running orchestrator and what stops it.
pub struct OrchestratorService {
    pub handle: OrchestratorHandle,
    join: tokio::task::JoinHandle<()>,
}

impl OrchestratorService {
    pub async fn start(deps: RunDeps) -> Result<Self> {
        let (actor, join) = Actor::spawn(None, Orchestrator, deps).await.map_err(|e| Error::Spawn(e.to_string()))?;
        Ok(Self { handle: OrchestratorHandle { actor }, join })
    }

    /// Stops every run where it is without recording an end, then stops: the tasks stay
    /// `in_progress` for the next orchestrator to resume (the cluster's shutdown). Returns them.
    pub async fn detach(self) -> Vec<TaskId> {
        let detached = self.handle.ask(|reply| OrchestratorMsg::Detach { reply }).await.unwrap_or_default();
        self.handle.actor.stop(Some("shutdown".into()));
        let _ = self.join.await;
        detached
    }

    /// Cancels every running task, waits for the runs to record their end, then stops.
    pub async fn shutdown(self) {
        if let Ok(running) = self.handle.running().await {
            for id in &running {
                let _ = self.handle.cancel(*id).await;
            }
            for id in running {
                let _ = self.handle.wait(id).await;
            }
        }
        self.handle.actor.stop(Some("shutdown".into()));
        let _ = self.join.await;
    }
}

impl OrchestratorHandle {
    async fn ask<T>(&self, build: impl FnOnce(oneshot::Sender<T>) -> OrchestratorMsg) -> Result<T> {
        let (tx, rx) = oneshot::channel();
        self.actor.send_message(build(tx)).map_err(|_| Error::Stopped)?;
        rx.await.map_err(|_| Error::Stopped)
    }

    /// Validates and stores the task, then plans it and, when `execute`, carries it out.
    pub async fn submit(&self, task: DevelopmentTask, workspace: String, execute: bool) -> Result<TaskId> {
        self.ask(|reply| OrchestratorMsg::Submit { task: Box::new(task), workspace, execute, reply }).await?
    }

    /// Carries out a task planned earlier (by a dry run) with its stored plan.
    pub async fn execute(&self, task_id: TaskId) -> Result<TaskId> {
        self.ask(|reply| OrchestratorMsg::Execute { task_id, reply }).await?
    }

    /// Resolves when the task's run ends (at once for a task that is not running).
    pub async fn wait(&self, task_id: TaskId) -> Result<RunResult> {
        self.ask(|reply| OrchestratorMsg::Wait { task_id, reply }).await?
    }

    /// Asks a running task to stop; false when it is not running here.
    pub async fn cancel(&self, task_id: TaskId) -> Result<bool> {
        self.ask(|reply| OrchestratorMsg::Cancel { task_id, reply }).await
    }

    /// Cancels a task that has not finished: a running one through its run (which records the
    /// end), a stored one (planned, or never run) at once. [`Error::NotCancellable`] when it
    /// has already finished, [`Error::UnknownTask`] when it is not stored.
    pub async fn cancel_task(&self, task_id: TaskId, reason: Option<String>) -> Result<CancelOutcome> {
        self.ask(|reply| OrchestratorMsg::CancelTask { task_id, reason, reply }).await?
    }

    pub async fn running(&self) -> Result<Vec<TaskId>> {
        self.ask(|reply| OrchestratorMsg::Running { reply }).await
    }

    /// Resumes the tasks an earlier orchestrator left `in_progress` (it died while running
    /// them) from their first unfinished phase, and fails the ones it left `created` (it died
    /// planning them). Returns the resumed tasks. Only one orchestrator may use a store at a
    /// time: this takes over every interrupted task.
    pub async fn resume_interrupted(&self) -> Result<Vec<TaskId>> {
        self.ask(|reply| OrchestratorMsg::ResumeInterrupted { reply }).await?
    }
}

#[cfg(test)]
mod tests;
