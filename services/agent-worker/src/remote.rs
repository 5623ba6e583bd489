//! Agents in other processes, reached over the bus. [`NatsAgents`] implements [`AgentService`],
//! so `AgentClient::from_service(Arc::new(NatsAgents::new(client)))` gives the orchestrator
//! the same client whether the agents are local actors or workers across the network.
//!
//! A call queues a work item on `turbo.work.<role>` (stored in JetStream: it waits for a worker
//! if none is free, and survives a worker dying) and waits for the result with its request id
//! on `turbo.results.<task_id>`. It subscribes before it publishes, so a fast worker's answer
//! cannot slip by, and if the connection to NATS dropped while it waited it reads the result
//! back from the results stream.
//!
//! A result says up to which sequence of `TURBO_EVENTS_RAW` the work's events are stored; given
//! how far the caller has recorded that stream ([`NatsAgents::with_events_recorded`]), a call
//! returns once those events are recorded (or after `EVENTS_WAIT`), so the caller's own events
//! about the outcome come after the agent's.

use std::sync::atomic::Ordering;
use std::time::Duration;

use async_nats::HeaderMap;
use async_nats::jetstream::{self, Context};
use async_trait::async_trait;
use futures::StreamExt;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;
use turbo_bus::publish::{publish_core, publish_stored};
use turbo_bus::{CancelRequest, WorkItem, WorkReply, WorkRequest, WorkResult, decode, headers, subjects};
use turbo_core::agent::AgentRole;
use turbo_core::ids::TaskId;
use turbo_core::protocol::{AgentFailure, FailureKind, PhaseAssignment, PhaseOutcome, PlanOutcome, PlanRequest};
use uuid::Uuid;

use crate::AgentService;

/// How often a waiting call checks whether the connection was re-established meanwhile (a
/// result published while disconnected never reaches a core subscription).
const RECONNECT_CHECK: Duration = Duration::from_secs(2);

/// Longest a call waits for the work's events to be recorded before it returns the result.
const EVENTS_WAIT: Duration = Duration::from_secs(5);

/// The agents of the cluster, reached over NATS; cheap to clone.
#[derive(Clone)]
pub struct NatsAgents {
    client: async_nats::Client,
    js: Context,
    events_recorded: Option<watch::Receiver<u64>>,
}

impl NatsAgents {
    /// Agents reached through `client`. The streams must exist: run [`turbo_bus::setup`] first.
    pub fn new(client: async_nats::Client) -> Self {
        let js = jetstream::new(client.clone());
        Self { client, js, events_recorded: None }
    }

    /// Calls return only once `recorded` (the sequence of `TURBO_EVENTS_RAW` up to which the
    /// caller has recorded the agents' events) reaches the result's events, or after 5 s.
    pub fn with_events_recorded(mut self, recorded: watch::Receiver<u64>) -> Self {
        self.events_recorded = Some(recorded);
        self
    }

    /// Waits, within [`EVENTS_WAIT`], until the events of `result`'s work are recorded.
    async fn after_events(&self, result: &WorkResult) {
        let (Some(through), Some(recorded)) = (result.events_through, &self.events_recorded) else { return };
        let mut recorded = recorded.clone();
        let caught_up = tokio::time::timeout(EVENTS_WAIT, recorded.wait_for(|seq| *seq >= through)).await;
        if caught_up.is_err() {
            tracing::debug!(through, "the agent's events are not recorded yet; going on with its result");
        }
    }

    /// Queues `request` for `role` and waits for its answer, or for `cancel`.
    async fn call(
        &self,
        role: AgentRole,
        task_id: TaskId,
        request: WorkRequest,
        cancel: CancellationToken,
    ) -> Result<WorkReply, AgentFailure> {
        let request_id = work_id(task_id, role, &request);
        let span = tracing::info_span!("remote_agent_call", %role, %task_id, %request_id);
        self.call_inner(WorkItem { request_id, task_id, role, request }, cancel).instrument(span).await
    }

    async fn call_inner(&self, item: WorkItem, cancel: CancellationToken) -> Result<WorkReply, AgentFailure> {
        let (role, task_id, request_id) = (item.role, item.task_id, item.request_id);
        if cancel.is_cancelled() {
            return Err(cancelled(role));
        }
        let results_subject = subjects::results(task_id);
        let mut results = self.client.subscribe(results_subject.clone()).await.map_err(|e| {
            AgentFailure::new(FailureKind::Internal, format!("cannot subscribe to {results_subject}: {e}"))
        })?;
        let statistics = self.client.statistics();
        let mut connects = statistics.connects.load(Ordering::Relaxed);

        let mut work_headers = HeaderMap::new();
        // The same id de-duplicates a publish retried after a lost acknowledgement.
        work_headers.insert(headers::MSG_ID, request_id.to_string().as_str());
        work_headers.insert(headers::TASK_ID, task_id.to_string().as_str());
        work_headers.insert(headers::REQUEST_ID, request_id.to_string().as_str());
        let queued = publish_stored(&self.js, subjects::work(role), &item, work_headers).await.map_err(|e| {
            AgentFailure::new(FailureKind::Internal, format!("cannot queue work for the {role} agents: {e}"))
        })?;
        tracing::debug!(duplicate = queued.duplicate, "work queued");
        if queued.duplicate {
            // The same phase attempt was queued before (by an orchestrator that died after
            // queueing it): it is done once; its result may be stored already.
            match turbo_bus::find_result(&self.js, task_id, request_id).await {
                Ok(Some(result)) => {
                    self.after_events(&result).await;
                    return Ok(answered(result));
                }
                Ok(None) => {}
                Err(error) => tracing::warn!(%error, "cannot read stored results; waiting for the queued work"),
            }
        }

        let mut reconnect_check = tokio::time::interval(RECONNECT_CHECK);
        reconnect_check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                biased;
                _ = cancel.cancelled() => {
                    self.send_cancel(task_id).await;
                    return Err(cancelled(role));
                }
                message = results.next() => {
                    let Some(message) = message else {
                        return Err(AgentFailure::new(
                            FailureKind::Internal,
                            format!("the connection to nats closed while waiting for the {role} agent"),
                        ));
                    };
                    match decode::<WorkResult>(&message.payload) {
                        Ok(result) if result.request_id == request_id => {
                            self.after_events(&result).await;
                            return Ok(answered(result));
                        }
                        Ok(_) => {}
                        Err(error) => {
                            tracing::warn!(%error, subject = %message.subject, "ignoring an unreadable result");
                        }
                    }
                }
                _ = reconnect_check.tick() => {
                    let now = statistics.connects.load(Ordering::Relaxed);
                    if now != connects {
                        connects = now;
                        tracing::info!("reconnected to nats; looking for a result published meanwhile");
                        match turbo_bus::find_result(&self.js, task_id, request_id).await {
                            Ok(Some(result)) => {
                                self.after_events(&result).await;
                                return Ok(answered(result));
                            }
                            Ok(None) => {}
                            Err(error) => tracing::warn!(%error, "cannot read stored results; waiting on"),
                        }
                    }
                }
            }
        }
    }

    /// Tells every worker to stop the task's work. Best effort: a worker that misses it finishes
    /// the work, and the result is ignored.
    async fn send_cancel(&self, task_id: TaskId) {
        let message = CancelRequest { task_id, reason: "the task was cancelled".into() };
        let sent = publish_core(&self.client, subjects::cancel(task_id), &message).await;
        let flushed = match sent {
            Ok(()) => self.client.flush().await.map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        if let Err(error) = flushed {
            tracing::warn!(%error, %task_id, "cannot tell the workers to cancel");
        }
    }
}

/// The id of a work item, the key that makes queueing it idempotent: a phase attempt's is
/// derived from (task, role, phase, attempt), so queueing the same attempt again (an
/// orchestrator that died after queueing it, resuming with the attempt it recorded) is
/// de-duplicated by JetStream (`Nats-Msg-Id`, within the stream's duplicate window) and answered
/// with the stored result instead of running the phase twice. A plan is asked for once per
/// task (a task that was being planned when its orchestrator died fails), so its id is random.
fn work_id(task_id: TaskId, role: AgentRole, request: &WorkRequest) -> Uuid {
    match request {
        WorkRequest::RunPhase(a) => {
            let key = format!("{task_id}/{role}/{}/{}", a.phase.name, a.attempt);
            Uuid::new_v5(&WORK_ID_NAMESPACE, key.as_bytes())
        }
        WorkRequest::Plan(_) => Uuid::new_v4(),
    }
}

/// The namespace of [`work_id`]'s name-based UUIDs.
const WORK_ID_NAMESPACE: Uuid = Uuid::from_u128(0x5f1d_7c4e_2a8b_4d3f_9e61_0c7a_b2d4_e813);

fn answered(result: WorkResult) -> WorkReply {
    tracing::debug!(worker = %result.worker_id, "result received");
    result.reply
}

fn cancelled(role: AgentRole) -> AgentFailure {
    AgentFailure::new(FailureKind::Cancelled, format!("the {role} agent's work was cancelled"))
}

fn unexpected(role: AgentRole, asked: &str, reply: &WorkReply) -> AgentFailure {
    let got = match reply {
        WorkReply::Planned(_) => "a plan",
        WorkReply::PhaseDone(_) => "a phase outcome",
        WorkReply::Failed(_) => "a failure",
    };
    AgentFailure::new(FailureKind::Internal, format!("the {role} agent answered {asked} with {got}"))
}

#[async_trait]
impl AgentService for NatsAgents {
    async fn plan(&self, request: PlanRequest, cancel: CancellationToken) -> Result<PlanOutcome, AgentFailure> {
        let task_id = request.task.id;
        match self.call(AgentRole::Planner, task_id, WorkRequest::Plan(Box::new(request)), cancel).await? {
            WorkReply::Planned(outcome) => Ok(*outcome),
            WorkReply::Failed(failure) => Err(failure),
            other => Err(unexpected(AgentRole::Planner, "a plan request", &other)),
        }
    }

    async fn run_phase(
        &self,
        role: AgentRole,
        assignment: PhaseAssignment,
        cancel: CancellationToken,
    ) -> Result<PhaseOutcome, AgentFailure> {
        let task_id = assignment.task_id;
        match self.call(role, task_id, WorkRequest::RunPhase(Box::new(assignment)), cancel).await? {
            WorkReply::PhaseDone(outcome) => Ok(*outcome),
            WorkReply::Failed(failure) => Err(failure),
            other => Err(unexpected(role, "a phase", &other)),
        }
    }
}
