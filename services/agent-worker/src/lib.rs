//! The agent worker: hosts the planner, coder, tester and reviewer as ractor actors under one
//! supervisor. In the embedded mode it runs inside the `turbo-coder` process; in the cluster one
//! worker service runs per role (`turbo-coder serve agent-worker --role coder`).
//!
//! The orchestrator reaches agents through [`AgentClient`], which hides whether they are actors
//! in this process or a worker across the network.
//!
//! As a service of the cluster a worker is started by [`run`] for one [`AgentRole`], from
//! `turbo-coder serve agent-worker --role R` or from its own binary `turbo-agent-worker`
//! (`src/main.rs`): with `cluster.nats_url` set it serves the role's work queue over NATS
//! JetStream, with gRPC health (NOT_SERVING while NATS is unreachable) and reflection.
//!
//! # Layout
//! - `message`: the mailbox type every agent actor accepts.
//! - `planner`, `coder`, `tester`, `reviewer`: one actor each.
//! - `toolloop`: the model/tool loop the coder drives.
//! - `context`: dependencies, event reporting and prompt helpers shared by the agents, and the
//!   context each prompt retrieves from the knowledge base ([`AgentDeps::knowledge`]) with the
//!   outcome reported back for its chunks.
//! - `supervisor`: the root actor and its restart policy.
//! - `handle`: typed handles over the actors (no `ActorRef` leaves this crate).
//! - `error`: errors, and their mapping to the wire's `AgentFailure`.
//! - `remote`: [`NatsAgents`], the [`AgentService`] of agents in other processes, over NATS.
//! - `consumer`: [`serve_role`], a worker taking its role's work from NATS onto its actors.
//! - `events`: [`NatsEventSink`], agent events from a worker to NATS.
//! - `service`: [`run`], the network entry point: a worker process of the cluster.
//! - this file: the worker (start, handles, stop), the [`AgentService`] trait and its client.
//! - `main.rs`: the `turbo-agent-worker` binary: arguments, config, telemetry, then [`run`].

mod coder;
mod consumer;
mod context;
mod error;
mod events;
mod handle;
mod message;
mod planner;
mod remote;
mod reviewer;
mod service;
mod supervisor;
mod tester;
mod toolloop;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use ractor::{Actor, ActorRef};
use tokio_util::sync::CancellationToken;
use turbo_core::agent::AgentRole;
use turbo_core::protocol::{AgentFailure, FailureKind, PhaseAssignment, PhaseOutcome, PlanOutcome, PlanRequest};

pub use consumer::{ServeOptions, serve_role, serve_role_with};
pub use context::{AgentDeps, AgentSettings};
pub use error::{Error, Result};
pub use events::NatsEventSink;
pub use handle::AgentHandle;
pub use remote::NatsAgents;
pub use service::{baseline_dir, bus_config, model_settings, run, setup_bus};
pub use tester::detect_test_command;

use supervisor::{AgentSupervisor, ChildSpec, SupervisorMsg};

/// The gRPC services an agent worker reports as serving in its health checks.
pub const GRPC_SERVICES: &[&str] = &["turbo.agents.v1.AgentService"];

/// What to start: the roles this worker hosts, each with its dependencies.
pub struct WorkerSpec {
    pub roles: Vec<(AgentRole, AgentDeps)>,
    /// Actors per role: how many phases of that role this worker runs at once.
    pub per_role: usize,
    /// Longest a single plan or phase call may take.
    pub call_timeout: Duration,
}

/// A running set of agent actors.
pub struct AgentWorker {
    supervisor: ActorRef<SupervisorMsg>,
    join: tokio::task::JoinHandle<()>,
    handles: BTreeMap<AgentRole, AgentHandle>,
}

impl AgentWorker {
    pub async fn start(spec: WorkerSpec) -> Result<AgentWorker> {
        // Registry names are process-wide; a per-worker prefix lets several workers (tests,
        // embedded + served) share one process.
        let prefix = uuid::Uuid::new_v4().simple().to_string();
        let mut children = Vec::new();
        let mut handles = BTreeMap::new();
        for (role, deps) in spec.roles {
            let names: Vec<String> = (0..spec.per_role.max(1)).map(|i| format!("turbo.{prefix}.{role}.{i}")).collect();
            for name in &names {
                children.push(ChildSpec { role, name: name.clone(), deps: deps.clone() });
            }
            handles.insert(role, AgentHandle::new(role, names, spec.call_timeout));
        }
        let (supervisor, join) = Actor::spawn(Some(format!("turbo.{prefix}.supervisor")), AgentSupervisor, children)
            .await
            .map_err(|e| Error::AgentCrashed { role: "supervisor".into(), reason: e.to_string() })?;
        Ok(AgentWorker { supervisor, join, handles })
    }

    pub fn handle(&self, role: AgentRole) -> Option<AgentHandle> {
        self.handles.get(&role).cloned()
    }

    /// A client that reaches this worker's actors in-process.
    pub fn client(&self) -> AgentClient {
        AgentClient::from_service(Arc::new(LocalAgents { handles: self.handles.clone() }))
    }

    /// Stops every actor and waits for them.
    pub async fn stop(self) {
        self.supervisor.stop(Some("worker shutdown".into()));
        let _ = self.join.await;
    }
}

/// What the orchestrator needs from agents, wherever they run.
#[async_trait]
pub trait AgentService: Send + Sync + 'static {
    async fn plan(
        &self,
        request: PlanRequest,
        cancel: CancellationToken,
    ) -> std::result::Result<PlanOutcome, AgentFailure>;
    async fn run_phase(
        &self,
        role: AgentRole,
        assignment: PhaseAssignment,
        cancel: CancellationToken,
    ) -> std::result::Result<PhaseOutcome, AgentFailure>;
}

struct LocalAgents {
    handles: BTreeMap<AgentRole, AgentHandle>,
}

impl LocalAgents {
    fn handle(&self, role: AgentRole) -> std::result::Result<&AgentHandle, AgentFailure> {
        self.handles
            .get(&role)
            .ok_or_else(|| AgentFailure::new(FailureKind::Internal, format!("no {role} agent is hosted here")))
    }
}

#[async_trait]
impl AgentService for LocalAgents {
    async fn plan(
        &self,
        request: PlanRequest,
        cancel: CancellationToken,
    ) -> std::result::Result<PlanOutcome, AgentFailure> {
        self.handle(AgentRole::Planner)?.plan(request, cancel).await
    }

    async fn run_phase(
        &self,
        role: AgentRole,
        assignment: PhaseAssignment,
        cancel: CancellationToken,
    ) -> std::result::Result<PhaseOutcome, AgentFailure> {
        self.handle(role)?.run_phase(assignment, cancel).await
    }
}

/// Cheap-to-clone access to agents: local actors, a remote worker, or a test double.
#[derive(Clone)]
pub struct AgentClient {
    inner: Arc<dyn AgentService>,
}

impl AgentClient {
    pub fn from_service(inner: Arc<dyn AgentService>) -> Self {
        Self { inner }
    }

    pub async fn plan(
        &self,
        request: PlanRequest,
        cancel: CancellationToken,
    ) -> std::result::Result<PlanOutcome, AgentFailure> {
        self.inner.plan(request, cancel).await
    }

    pub async fn run_phase(
        &self,
        role: AgentRole,
        assignment: PhaseAssignment,
        cancel: CancellationToken,
    ) -> std::result::Result<PhaseOutcome, AgentFailure> {
        self.inner.run_phase(role, assignment, cancel).await
    }
}

#[cfg(test)]
mod tests;
