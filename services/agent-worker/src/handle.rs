//! Typed access to a role's actors. Handles never expose `ActorRef`: they look the actor up by
//! name on every call, so a call after a restart reaches the new actor, and a call to a role
//! that is gone returns an error instead of hanging.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use ractor::rpc::CallResult;
use ractor::{ActorRef, RpcReplyPort};
use tokio_util::sync::CancellationToken;
use turbo_core::agent::AgentRole;
use turbo_core::protocol::{AgentFailure, FailureKind, PhaseAssignment, PhaseOutcome, PlanOutcome, PlanRequest};

use crate::message::AgentMsg;

#[derive(Clone)]
pub struct AgentHandle {
    role: AgentRole,
    names: Arc<Vec<String>>,
    next: Arc<AtomicUsize>,
    timeout: Duration,
}

impl AgentHandle {
    pub(crate) fn new(role: AgentRole, names: Vec<String>, timeout: Duration) -> Self {
        Self { role, names: Arc::new(names), next: Arc::new(AtomicUsize::new(0)), timeout }
    }

    pub fn role(&self) -> AgentRole {
        self.role
    }

    /// Round-robin over the role's actors.
    fn actor(&self) -> Result<ActorRef<AgentMsg>, AgentFailure> {
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.names.len().max(1);
        let name = self.names.get(i).ok_or_else(|| self.gone())?;
        ractor::registry::where_is(name.clone()).map(ActorRef::from).ok_or_else(|| self.gone())
    }

    fn gone(&self) -> AgentFailure {
        AgentFailure::new(FailureKind::Internal, format!("the {} agent is not running", self.role))
    }

    async fn call<T: Send + 'static>(
        &self,
        build: impl FnOnce(RpcReplyPort<Result<T, AgentFailure>>) -> AgentMsg,
    ) -> Result<T, AgentFailure> {
        let actor = self.actor()?;
        match actor.call(build, Some(self.timeout)).await {
            Ok(CallResult::Success(result)) => result,
            Ok(CallResult::Timeout) => Err(AgentFailure::new(
                FailureKind::TimedOut,
                format!("the {} agent did not answer within {}s", self.role, self.timeout.as_secs()),
            )),
            Ok(CallResult::SenderError) => Err(AgentFailure::new(
                FailureKind::Internal,
                format!("the {} agent stopped while working (its supervisor restarts it); see the log", self.role),
            )),
            Err(_) => Err(self.gone()),
        }
    }

    pub async fn plan(&self, request: PlanRequest, cancel: CancellationToken) -> Result<PlanOutcome, AgentFailure> {
        self.call(|reply| AgentMsg::Plan { request: Box::new(request), cancel, reply }).await
    }

    pub async fn run_phase(
        &self,
        assignment: PhaseAssignment,
        cancel: CancellationToken,
    ) -> Result<PhaseOutcome, AgentFailure> {
        self.call(|reply| AgentMsg::RunPhase { assignment: Box::new(assignment), cancel, reply }).await
    }
}
