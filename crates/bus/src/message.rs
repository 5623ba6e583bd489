//! The messages of the bus. Their payloads are the transport-neutral `turbo_core::protocol`
//! types; what is added here is what a network needs and a mailbox does not: a request id to
//! match a result to its request, the task id that names the subjects, and who did the work.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use turbo_core::agent::AgentRole;
use turbo_core::event::{EventKind, TaskEvent};
use turbo_core::ids::TaskId;
use turbo_core::protocol::{AgentFailure, PhaseAssignment, PhaseOutcome, PlanOutcome, PlanRequest};
use uuid::Uuid;

use crate::codec::BusMessage;

/// Work for one role, queued on `turbo.work.<role>`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct WorkItem {
    /// Unique per call; the result carries it back, so a caller ignores results of other calls.
    pub request_id: Uuid,
    pub task_id: TaskId,
    pub role: AgentRole,
    pub request: WorkRequest,
}

impl BusMessage for WorkItem {
    const KIND: &'static str = "work_item";
}

/// What the agent is asked to do.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", content = "value", rename_all = "snake_case")]
pub enum WorkRequest {
    Plan(Box<PlanRequest>),
    RunPhase(Box<PhaseAssignment>),
}

/// The answer to a [`WorkItem`], stored on `turbo.results.<task_id>`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct WorkResult {
    pub request_id: Uuid,
    pub task_id: TaskId,
    pub role: AgentRole,
    /// The worker that answered, for logs and operators.
    pub worker_id: String,
    pub reply: WorkReply,
    /// The sequence in `TURBO_EVENTS_RAW` up to which the events of this work are stored (the
    /// worker stores them before the result). The orchestrator records the outcome once it has
    /// recorded those, so a phase's events come before its end. None when unknown.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub events_through: Option<u64>,
}

impl BusMessage for WorkResult {
    const KIND: &'static str = "work_result";
}

/// How the work ended. A failure is an answer too: it is stored and acknowledged like a success.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", content = "value", rename_all = "snake_case")]
pub enum WorkReply {
    Planned(Box<PlanOutcome>),
    PhaseDone(Box<PhaseOutcome>),
    Failed(AgentFailure),
}

/// Stop the work of a task, sent on `turbo.cancel.<task_id>`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CancelRequest {
    pub task_id: TaskId,
    pub reason: String,
}

impl BusMessage for CancelRequest {
    const KIND: &'static str = "cancel";
}

/// A worker's sign of life, sent on `turbo.workers.heartbeat.<role>.<worker_id>`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Heartbeat {
    pub worker_id: String,
    pub role: AgentRole,
    /// Work items being carried out now.
    pub in_flight: usize,
    /// Work items it carries out at once at most.
    pub capacity: usize,
    pub started_at: DateTime<Utc>,
    pub at: DateTime<Utc>,
}

impl BusMessage for Heartbeat {
    const KIND: &'static str = "heartbeat";
}

/// An agent event as emitted, on `turbo.events.raw.<task_id>`; the orchestrator gives it its
/// sequence number when it stores it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RawEvent {
    pub task_id: TaskId,
    pub at: DateTime<Utc>,
    #[serde(flatten)]
    pub kind: EventKind,
}

impl BusMessage for RawEvent {
    const KIND: &'static str = "task_event";
}

/// A task event as the orchestrator stored it, with its seq, on `turbo.events.task.<task_id>`.
impl BusMessage for TaskEvent {
    const KIND: &'static str = "recorded_task_event";
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::{decode, encode};
    use turbo_core::protocol::FailureKind;

    #[test]
    fn results_round_trip_through_the_envelope() {
        let result = WorkResult {
            request_id: Uuid::new_v4(),
            task_id: TaskId::new(),
            role: AgentRole::Coder,
            worker_id: "w1".into(),
            reply: WorkReply::Failed(AgentFailure::new(FailureKind::StepLimit, "out of steps")),
            events_through: Some(42),
        };
        let bytes = encode(&result).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(v["kind"], "work_result");
        assert_eq!(v["body"]["reply"]["type"], "failed");
        assert_eq!(v["body"]["reply"]["value"]["kind"], "step_limit");
        assert_eq!(decode::<WorkResult>(&bytes).unwrap(), result);
    }

    #[test]
    fn raw_events_are_flat_like_task_events() {
        let event = RawEvent {
            task_id: TaskId::new(),
            at: Utc::now(),
            kind: EventKind::AgentMessage { role: AgentRole::Coder, text: "hi".into() },
        };
        let bytes = encode(&event).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(v["body"]["type"], "agent_message");
        assert_eq!(decode::<RawEvent>(&bytes).unwrap(), event);
    }
}
