//! The orchestrator: owns task and plan state, runs each task's plan by dispatching phases to
//! the agents, and records every step as events.
//!
//! As a service of the cluster it is started by [`run`], from `turbo-coder serve orchestrator`
//! or from its own binary `turbo-orchestrator` (`src/main.rs`). At this stage [`run`] serves
//! gRPC health checking, reporting [`GRPC_SERVICES`] as serving, and server reflection; the
//! task and project APIs come later, behind the same entry point.
//!
//! # Layout
//! - `orchestrator`: the root actor, tracking running tasks; [`OrchestratorHandle`] is its API.
//! - `task_run`: one actor per running task: plan, phases, test and review rounds, deadline.
//! - `recorder`: the single writer of task events (numbering, storage, broadcast).
//! - `error`: errors.
//! - this file: the handle, the service's start and shutdown, and [`run`], the network entry
//!   point.
//! - `main.rs`: the `turbo-orchestrator` binary: arguments, config, telemetry, then [`run`].

mod error;
mod orchestrator;
mod recorder;
mod task_run;

use ractor::{Actor, ActorRef};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;
use turbo_core::ids::TaskId;
use turbo_core::task::DevelopmentTask;

pub use error::{Error, Result};
pub use recorder::Recorder;
pub use task_run::{RunDeps, RunResult, RunSettings};

use orchestrator::{Orchestrator, OrchestratorMsg};

/// The gRPC services this process reports as serving in its health checks.
pub const GRPC_SERVICES: &[&str] = &["turbo.tasks.v1.TaskService", "turbo.projects.v1.ProjectService"];

/// Serves the orchestrator on `listener` until `shutdown` is cancelled, then reports
/// not-serving and drains. For now: gRPC health ([`GRPC_SERVICES`]) and reflection; `_config`
/// is not read yet.
pub async fn run(_config: &turbo_config::Config, listener: TcpListener, shutdown: CancellationToken) -> Result<()> {
    let addr = listener.local_addr().map(|a| a.to_string()).unwrap_or_else(|_| "an unknown address".into());
    tracing::info!(%addr, services = ?GRPC_SERVICES, "orchestrator serving health and reflection");
    turbo_proto::server::serve_health(GRPC_SERVICES, listener, shutdown)
        .await
        .map_err(|e| Error::Serve { addr, reason: e.to_string() })
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

    pub async fn running(&self) -> Result<Vec<TaskId>> {
        self.ask(|reply| OrchestratorMsg::Running { reply }).await
    }
}

#[cfg(test)]
mod tests;
