//! Every NATS subject, stream and consumer name of the cluster, in one place. Services build
//! subjects only through these constants and functions, never from string literals, so a rename
//! happens here once and docs/ARCHITECTURE.md can list them from this file.
//!
//! | subject | transport | publisher | consumer |
//! |---|---|---|---|
//! | `turbo.work.<role>` | JetStream [`WORK_STREAM`] (work queue) | orchestrator | the role's workers, through the durable [`work_consumer`] |
//! | `turbo.results.<task_id>` | JetStream [`RESULTS_STREAM`] (limits, max age) | workers | the orchestrator that asked |
//! | `turbo.dlq.<role>` | JetStream [`DLQ_STREAM`] (limits, max age) | workers | operators |
//! | `turbo.cancel.<task_id>` | core NATS | orchestrator | every worker |
//! | `turbo.workers.heartbeat.<role>.<worker_id>` | core NATS | workers | orchestrator, operators |
//! | `turbo.events.raw.<task_id>` | JetStream [`EVENTS_RAW_STREAM`] (limits, max age) | workers | the orchestrator's recorder |

use turbo_core::agent::AgentRole;
use turbo_core::ids::TaskId;

/// Stream holding queued agent work. Work-queue retention: a message is gone once a worker
/// acknowledges (or terminates) it, so each item is done once.
pub const WORK_STREAM: &str = "TURBO_WORK";
/// Subjects captured by [`WORK_STREAM`]: one per role.
pub const WORK_SUBJECTS: &str = "turbo.work.*";

/// The work queue of one role: `turbo.work.<role>`.
pub fn work(role: AgentRole) -> String {
    format!("turbo.work.{role}")
}

/// The durable pull consumer shared by every replica of a role: `workers-<role>`. Sharing it is
/// what makes the replicas split the role's queue instead of each seeing every item.
pub fn work_consumer(role: AgentRole) -> String {
    format!("workers-{role}")
}

/// Stream holding agent results, kept for [`crate::BusConfig::results_max_age`] so an
/// orchestrator that restarts can still read the outcome of work it queued.
pub const RESULTS_STREAM: &str = "TURBO_RESULTS";
/// Subjects captured by [`RESULTS_STREAM`].
pub const RESULTS_SUBJECTS: &str = "turbo.results.*";

/// Where the results of one task's work go: `turbo.results.<task_id>`.
pub fn results(task_id: TaskId) -> String {
    format!("turbo.results.{task_id}")
}

/// Stream holding work that could not be done (undecodable, or redelivered too often), with the
/// reason in the [`crate::headers::DLQ_REASON`] header.
pub const DLQ_STREAM: &str = "TURBO_DLQ";
/// Subjects captured by [`DLQ_STREAM`].
pub const DLQ_SUBJECTS: &str = "turbo.dlq.*";

/// The dead letters of one role's queue: `turbo.dlq.<role>`.
pub fn dlq(role: AgentRole) -> String {
    format!("turbo.dlq.{role}")
}

/// Every task's cancellation (core NATS); workers subscribe to this one wildcard.
pub const CANCEL_ALL: &str = "turbo.cancel.*";

/// Cancels the work of one task (core NATS): `turbo.cancel.<task_id>`.
pub fn cancel(task_id: TaskId) -> String {
    format!("turbo.cancel.{task_id}")
}

/// Every worker heartbeat of every role (core NATS).
pub const HEARTBEAT_ALL: &str = "turbo.workers.heartbeat.>";

/// The heartbeats of one role's workers (core NATS): `turbo.workers.heartbeat.<role>.*`.
pub fn heartbeats(role: AgentRole) -> String {
    format!("turbo.workers.heartbeat.{role}.*")
}

/// One worker's heartbeat (core NATS): `turbo.workers.heartbeat.<role>.<worker_id>`.
/// `worker_id` is passed through [`token`], so any id makes a valid subject.
pub fn heartbeat(role: AgentRole, worker_id: &str) -> String {
    format!("turbo.workers.heartbeat.{role}.{}", token(worker_id))
}

/// Stream holding agent events as workers emit them, before the orchestrator numbers and stores
/// them.
pub const EVENTS_RAW_STREAM: &str = "TURBO_EVENTS_RAW";
/// Subjects captured by [`EVENTS_RAW_STREAM`].
pub const EVENTS_RAW_SUBJECTS: &str = "turbo.events.raw.*";

/// The raw events of one task: `turbo.events.raw.<task_id>`.
pub fn events_raw(task_id: TaskId) -> String {
    format!("turbo.events.raw.{task_id}")
}

/// Makes `text` a single subject token: `.`, `*`, `>` and whitespace would split or widen a
/// subject, so they become `_`; an empty text becomes `_`.
pub fn token(text: &str) -> String {
    if text.is_empty() {
        return "_".into();
    }
    text.chars().map(|c| if c == '.' || c == '*' || c == '>' || c.is_whitespace() { '_' } else { c }).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subjects_have_the_documented_shape() {
        let task = TaskId::new();
        assert_eq!(work(AgentRole::Coder), "turbo.work.coder");
        assert_eq!(work_consumer(AgentRole::Reviewer), "workers-reviewer");
        assert_eq!(results(task), format!("turbo.results.{task}"));
        assert_eq!(dlq(AgentRole::Tester), "turbo.dlq.tester");
        assert_eq!(cancel(task), format!("turbo.cancel.{task}"));
        assert_eq!(events_raw(task), format!("turbo.events.raw.{task}"));
        assert_eq!(heartbeat(AgentRole::Planner, "host-1"), "turbo.workers.heartbeat.planner.host-1");
        assert_eq!(heartbeats(AgentRole::Planner), "turbo.workers.heartbeat.planner.*");
    }

    #[test]
    fn a_worker_id_cannot_widen_or_split_a_subject() {
        assert_eq!(heartbeat(AgentRole::Coder, "a.b *>c"), "turbo.workers.heartbeat.coder.a_b___c");
        assert_eq!(token(""), "_");
    }
}
