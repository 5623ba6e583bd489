//! The worker's root supervisor: starts each role's actors linked to it and restarts one that
//! fails, within a restart budget, so a panic in one task's work does not take the role down.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use ractor::{Actor, ActorCell, ActorProcessingErr, ActorRef, SupervisionEvent};
use turbo_core::agent::AgentRole;

use crate::coder::Coder;
use crate::context::AgentDeps;
use crate::message::AgentMsg;
use crate::planner::Planner;
use crate::reviewer::Reviewer;
use crate::tester::Tester;

/// Restarts allowed per child within [`RESTART_WINDOW`] before the supervisor gives up on it.
const MAX_RESTARTS: u32 = 5;
const RESTART_WINDOW: Duration = Duration::from_secs(60);

#[derive(Clone)]
pub(crate) struct ChildSpec {
    pub role: AgentRole,
    /// Registry name; handles look the actor up by it, so a restarted actor is found again.
    pub name: String,
    pub deps: AgentDeps,
}

pub(crate) struct AgentSupervisor;

pub(crate) enum SupervisorMsg {}

pub(crate) struct AgentSupervisorState {
    children: HashMap<ractor::ActorId, ChildSpec>,
    restarts: HashMap<String, (u32, Instant)>,
}

async fn spawn_child(spec: &ChildSpec, supervisor: ActorCell) -> Result<ActorRef<AgentMsg>, ActorProcessingErr> {
    let name = Some(spec.name.clone());
    let deps = spec.deps.clone();
    let (actor, _) = match spec.role {
        AgentRole::Planner => Actor::spawn_linked(name, Planner, deps, supervisor).await?,
        AgentRole::Coder => Actor::spawn_linked(name, Coder, deps, supervisor).await?,
        AgentRole::Tester => Actor::spawn_linked(name, Tester, deps, supervisor).await?,
        AgentRole::Reviewer => Actor::spawn_linked(name, Reviewer, deps, supervisor).await?,
    };
    Ok(actor)
}

impl Actor for AgentSupervisor {
    type Msg = SupervisorMsg;
    type State = AgentSupervisorState;
    type Arguments = Vec<ChildSpec>;

    async fn pre_start(
        &self,
        myself: ActorRef<SupervisorMsg>,
        specs: Vec<ChildSpec>,
    ) -> Result<AgentSupervisorState, ActorProcessingErr> {
        let mut children = HashMap::new();
        for spec in specs {
            let actor = spawn_child(&spec, myself.get_cell()).await?;
            children.insert(actor.get_id(), spec);
        }
        Ok(AgentSupervisorState { children, restarts: HashMap::new() })
    }

    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<SupervisorMsg>,
        event: SupervisionEvent,
        state: &mut AgentSupervisorState,
    ) -> Result<(), ActorProcessingErr> {
        let (cell, reason) = match event {
            SupervisionEvent::ActorFailed(cell, err) => (cell, err.to_string()),
            SupervisionEvent::ActorTerminated(cell, _, reason) => (cell, reason.unwrap_or_else(|| "stopped".into())),
            _ => return Ok(()),
        };
        let Some(spec) = state.children.remove(&cell.get_id()) else { return Ok(()) };
        let now = Instant::now();
        let entry = state.restarts.entry(spec.name.clone()).or_insert((0, now));
        if now.duration_since(entry.1) > RESTART_WINDOW {
            *entry = (0, now);
        }
        entry.0 += 1;
        if entry.0 > MAX_RESTARTS {
            tracing::error!(role = %spec.role, actor = %spec.name, %reason, "agent keeps failing; not restarting it");
            return Ok(());
        }
        tracing::warn!(role = %spec.role, actor = %spec.name, %reason, restart = entry.0, "agent stopped; restarting it");
        let actor = spawn_child(&spec, myself.get_cell()).await?;
        state.children.insert(actor.get_id(), spec);
        Ok(())
    }
}
