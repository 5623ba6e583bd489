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
//! | `turbo.events.raw.<task_id>` | JetStream [`EVENTS_RAW_STREAM`] (limits, max age) | workers | the orchestrator's recorder, through the durable [`RECORDER_CONSUMER`] |
//! | `turbo.events.task.<task_id>` | JetStream [`EVENTS_STREAM`] (limits, max age) | the orchestrator's recorder, once an event is stored and numbered | watchers, operators (`nats sub 'turbo.events.task.>'`) |
//! | `turbo.ctl.tasks.list`, `.get`, `.cancel`, `turbo.ctl.workers.list` | core NATS request-reply, plain JSON (no envelope), queue group [`CTL_QUEUE_GROUP`] | operators (`nats req`) | the orchestrators (`turbo_orchestrator::control`) |
//! | `turbo.knowledge.search`, `.index`, `.add`, `.delete`, `.stats`, `.context` | core NATS request-reply, plain JSON (no envelope), queue group [`KNOWLEDGE_QUEUE_GROUP`] | operators (`nats req`) | the knowledge services (`turbo_knowledge::nats`) |
//! | `turbo.tools.approvals.list`, `turbo.tools.approve`, `turbo.tools.deny` | core NATS request-reply, plain JSON (no envelope), no queue group: only the runner holding a call answers for it | operators (`nats req`) | every process running tools (`turbo_tool_runner::nats`) |
//! | `turbo.tools.jobs.runner.<runner_id>` | JetStream [`TOOL_JOBS_STREAM`] (work queue), `turbo.tools.v1` protobuf requests | clients of the queue, to the runner holding the job's workspace | that runner, through its durable [`tool_runner_consumer`] |
//! | `turbo.tools.jobs.any` | JetStream [`TOOL_JOBS_STREAM`] (work queue) | clients, for a workspace no live runner holds, or no workspace | every runner, through the shared durable [`TOOL_JOBS_ANY_CONSUMER`]; the taker claims the workspace or forwards the job to its holder |
//! | `turbo.tools.cancel.<job_id>` | core NATS | a client that stopped waiting | every runner (the one running the job stops it) |
//! | `turbo.tools.tasks.end` | core NATS, a protobuf `EndTaskRequest` | clients of the queue | every runner (the holder of the task's baseline drops it) |
//! | KV [`TOOL_WORKSPACES_BUCKET`], [`TOOL_RUNNERS_BUCKET`] | JetStream key-value | runners: workspace claims; liveness, refreshed every few seconds | clients and runners, to route jobs |

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

/// Control plane: lists tasks, newest first (core NATS request-reply). Request
/// `{"status": "...", "limit": N}`, both optional. The control subjects carry plain JSON, not
/// the envelope, so operators can use `nats req`; replies carry `"v": 1`.
pub const CTL_TASKS_LIST: &str = "turbo.ctl.tasks.list";
/// Control plane: one task with its plan, phases and token usage by role. Request
/// `{"id": "<uuid or unique prefix>"}`.
pub const CTL_TASKS_GET: &str = "turbo.ctl.tasks.get";
/// Control plane: cancels a task that has not finished. Request `{"id": ..., "reason": ...}`.
pub const CTL_TASKS_CANCEL: &str = "turbo.ctl.tasks.cancel";
/// Control plane: the live workers of each role, with their load, from their heartbeats.
/// Request `{}` or `{"role": "coder"}`.
pub const CTL_WORKERS_LIST: &str = "turbo.ctl.workers.list";
/// Every control subject the orchestrator serves.
pub const CTL_SUBJECTS: &[&str] = &[CTL_TASKS_LIST, CTL_TASKS_GET, CTL_TASKS_CANCEL, CTL_WORKERS_LIST];
/// Queue group of the control subjects: orchestrator replicas share the requests, so each
/// request is answered once.
pub const CTL_QUEUE_GROUP: &str = "turbo-orchestrators";

/// Knowledge: a search, best hits first (core NATS request-reply). Request: a
/// `turbo_core::knowledge::SearchRequest`, `{"query": "...", "limit": 5}` plus optional
/// `"filter"` and `"mode"`. Like the control subjects, the knowledge subjects carry plain JSON,
/// not the envelope, so operators can use `nats req`; replies carry `"v": 1`.
pub const KNOWLEDGE_SEARCH: &str = "turbo.knowledge.search";
/// Knowledge: (re-)indexes a workspace the service can read, incrementally. Request
/// `{"project_id": ..., "workspace": "/abs/path"}`.
pub const KNOWLEDGE_INDEX: &str = "turbo.knowledge.index";
/// Knowledge: stores a knowledge chunk (a `turbo_core::knowledge::KnowledgeChunk`).
pub const KNOWLEDGE_ADD: &str = "turbo.knowledge.add";
/// Knowledge: removes a chunk. Request `{"id": ...}`.
pub const KNOWLEDGE_DELETE: &str = "turbo.knowledge.delete";
/// Knowledge: what the dataset holds. Request `{}` or `{"project_id": ...}`.
pub const KNOWLEDGE_STATS: &str = "turbo.knowledge.stats";
/// Knowledge: retrieved context packed for a prompt. Request a
/// `turbo_core::knowledge::ContextRequest`.
pub const KNOWLEDGE_CONTEXT: &str = "turbo.knowledge.context";
/// Every subject the knowledge service answers.
pub const KNOWLEDGE_SUBJECTS: &[&str] =
    &[KNOWLEDGE_SEARCH, KNOWLEDGE_INDEX, KNOWLEDGE_ADD, KNOWLEDGE_DELETE, KNOWLEDGE_STATS, KNOWLEDGE_CONTEXT];
/// Queue group of the knowledge subjects: replicas of the knowledge service share the
/// requests, so each request is answered once.
pub const KNOWLEDGE_QUEUE_GROUP: &str = "turbo-knowledge";

/// Tools: the tool calls waiting for approval on a runner, oldest first. Request `{}` or
/// `{"task_id": ...}`. Every runner answers, so with several use `nats req --replies 0`.
pub const TOOLS_APPROVALS_LIST: &str = "turbo.tools.approvals.list";
/// Tools: lets a waiting call run. Request `{"approval_id": ..., "decided_by": ..., "note"?: ...}`;
/// only the runner holding the call answers.
pub const TOOLS_APPROVE: &str = "turbo.tools.approve";
/// Tools: refuses a waiting call; the request as for [`TOOLS_APPROVE`].
pub const TOOLS_DENY: &str = "turbo.tools.deny";
/// Every approval subject a process running tools answers.
pub const TOOLS_APPROVAL_SUBJECTS: &[&str] = &[TOOLS_APPROVALS_LIST, TOOLS_APPROVE, TOOLS_DENY];

/// Stream holding queued tool-runner jobs. Work-queue retention: a job is gone once a runner
/// takes it (runners acknowledge on receipt, so a job runs at most once).
pub const TOOL_JOBS_STREAM: &str = "TURBO_TOOL_JOBS";
/// Subjects captured by [`TOOL_JOBS_STREAM`].
pub const TOOL_JOBS_SUBJECTS: &str = "turbo.tools.jobs.>";
/// Jobs any runner may take: no workspace, or one no live runner holds.
pub const TOOL_JOBS_ANY: &str = "turbo.tools.jobs.any";
/// The shared consumer of [`TOOL_JOBS_ANY`]: each job goes to one runner.
pub const TOOL_JOBS_ANY_CONSUMER: &str = "tool-runners";

/// The jobs of one runner: `turbo.tools.jobs.runner.<runner_id>`.
pub fn tool_jobs(runner_id: &str) -> String {
    format!("turbo.tools.jobs.runner.{}", token(runner_id))
}

/// The durable consumer of one runner's jobs: `tool-runner-<runner_id>`.
pub fn tool_runner_consumer(runner_id: &str) -> String {
    format!("tool-runner-{}", token(runner_id))
}

/// Every job's cancellation (core NATS); runners subscribe to this one wildcard.
pub const TOOL_CANCEL_ALL: &str = "turbo.tools.cancel.*";

/// Stops one job, if it still runs (core NATS): `turbo.tools.cancel.<job_id>`.
pub fn tool_cancel(job_id: &str) -> String {
    format!("turbo.tools.cancel.{}", token(job_id))
}

/// Ends a task on every runner (core NATS): the one holding its baseline drops it.
pub const TOOL_TASKS_END: &str = "turbo.tools.tasks.end";

/// Key-value bucket of workspace claims: key = the workspace's routing key, value = the
/// holding runner's id.
pub const TOOL_WORKSPACES_BUCKET: &str = "turbo_tool_workspaces";
/// Key-value bucket of live runners: key = runner id, refreshed while the runner lives and
/// expiring soon after it stops.
pub const TOOL_RUNNERS_BUCKET: &str = "turbo_tool_runners";

/// The durable consumer through which the orchestrator's recorder reads [`EVENTS_RAW_STREAM`]:
/// an event is acknowledged only once it is stored, so one the orchestrator did not store
/// before it died is read again by the next one.
pub const RECORDER_CONSUMER: &str = "orchestrator-recorder";

/// Stream holding every task's events as the orchestrator stored and numbered them, so a
/// watcher can follow a task live and resume from a stream sequence.
pub const EVENTS_STREAM: &str = "TURBO_EVENTS";
/// Subjects captured by [`EVENTS_STREAM`].
pub const EVENTS_SUBJECTS: &str = "turbo.events.task.*";
/// Every task's numbered events, for a subscription: `turbo.events.task.>`.
pub const EVENTS_ALL: &str = "turbo.events.task.>";

/// The numbered events of one task: `turbo.events.task.<task_id>`.
pub fn events_task(task_id: TaskId) -> String {
    format!("turbo.events.task.{task_id}")
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
        assert_eq!(events_task(task), format!("turbo.events.task.{task}"));
        assert_eq!(heartbeat(AgentRole::Planner, "host-1"), "turbo.workers.heartbeat.planner.host-1");
        assert_eq!(heartbeats(AgentRole::Planner), "turbo.workers.heartbeat.planner.*");
        assert_eq!(
            CTL_SUBJECTS,
            ["turbo.ctl.tasks.list", "turbo.ctl.tasks.get", "turbo.ctl.tasks.cancel", "turbo.ctl.workers.list"]
        );
        assert_eq!(
            KNOWLEDGE_SUBJECTS,
            [
                "turbo.knowledge.search",
                "turbo.knowledge.index",
                "turbo.knowledge.add",
                "turbo.knowledge.delete",
                "turbo.knowledge.stats",
                "turbo.knowledge.context"
            ]
        );
    }

    #[test]
    fn tool_job_subjects_do_not_overlap() {
        assert_eq!(tool_jobs("tool-runner-0"), "turbo.tools.jobs.runner.tool-runner-0");
        assert_eq!(tool_runner_consumer("a.b"), "tool-runner-a_b");
        assert_eq!(tool_cancel("j.1"), "turbo.tools.cancel.j_1");
        // A runner named "any" still has its own subject, apart from the shared one.
        assert_ne!(tool_jobs("any"), TOOL_JOBS_ANY);
    }

    #[test]
    fn a_worker_id_cannot_widen_or_split_a_subject() {
        assert_eq!(heartbeat(AgentRole::Coder, "a.b *>c"), "turbo.workers.heartbeat.coder.a_b___c");
        assert_eq!(token(""), "_");
    }
}
