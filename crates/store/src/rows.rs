//! The plain values the store takes and returns, so callers never depend on sea-orm.

use chrono::{DateTime, Utc};
use turbo_core::agent::AgentRole;
use turbo_core::ids::{PlanId, ProjectId, TaskId};
use turbo_core::project::ProjectMetadata;
use turbo_core::task::{DevelopmentTask, TaskStatus};
use turbo_core::tool::TokenUsage;
use uuid::Uuid;

/// A task as stored, with the workspace it runs in.
#[derive(Clone, Debug, PartialEq)]
pub struct StoredTask {
    pub task: DevelopmentTask,
    /// Absolute path of the task's workspace on the tool-runner.
    pub workspace: String,
}

/// A project as stored, with when it was soft-deleted.
#[derive(Clone, Debug, PartialEq)]
pub struct StoredProject {
    pub project: ProjectMetadata,
    /// Set while the project is soft-deleted (restorable until it is purged).
    pub deleted_at: Option<DateTime<Utc>>,
}

/// Where the next page of a newest-first listing starts: just after this row. Built from the
/// row's stored `created_at` column (Postgres keeps microseconds), so it compares exactly.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cursor {
    pub created_at: DateTime<Utc>,
    pub id: Uuid,
}

impl Cursor {
    /// The cursor as an opaque page token (hex text).
    pub fn to_token(&self) -> String {
        let text = format!("{}|{}", self.created_at.to_rfc3339_opts(chrono::SecondsFormat::Nanos, true), self.id);
        text.bytes().map(|b| format!("{b:02x}")).collect()
    }

    /// A token made by [`Cursor::to_token`]; None for anything else.
    pub fn from_token(token: &str) -> Option<Cursor> {
        if !token.len().is_multiple_of(2) || !token.is_ascii() {
            return None;
        }
        let bytes = (0..token.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&token[i..i + 2], 16).ok())
            .collect::<Option<Vec<u8>>>()?;
        let text = String::from_utf8(bytes).ok()?;
        let (at, id) = text.split_once('|')?;
        let created_at = DateTime::parse_from_rfc3339(at).ok()?.with_timezone(&Utc);
        Some(Cursor { created_at, id: Uuid::parse_str(id).ok()? })
    }
}

/// One page of a listing and where the next one starts (None on the last page).
#[derive(Clone, Debug, PartialEq)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub next: Option<Cursor>,
}

/// Which projects [`crate::Store::list_projects`] returns, newest first.
#[derive(Clone, Debug, PartialEq)]
pub struct ProjectQuery {
    /// Also soft-deleted projects.
    pub include_deleted: bool,
    /// Page size, at least 1.
    pub limit: u64,
    /// Start after this row; None for the first page.
    pub after: Option<Cursor>,
}

/// Which tasks [`crate::Store::page_tasks`] returns, newest first.
#[derive(Clone, Debug, PartialEq)]
pub struct TaskQuery {
    pub project: Option<ProjectId>,
    /// Any of these statuses; empty for all.
    pub statuses: Vec<TaskStatus>,
    /// Page size, at least 1.
    pub limit: u64,
    /// Start after this row; None for the first page.
    pub after: Option<Cursor>,
}

/// Which tasks [`crate::Store::list_tasks`] returns.
#[derive(Clone, Debug, PartialEq)]
pub struct TaskFilter {
    pub status: Option<TaskStatus>,
    /// At most this many; 0 means no limit.
    pub limit: u64,
}

impl Default for TaskFilter {
    fn default() -> Self {
        Self { status: None, limit: 50 }
    }
}

/// One line of `tasks list`.
#[derive(Clone, Debug, PartialEq)]
pub struct TaskSummary {
    pub id: TaskId,
    pub title: String,
    pub status: TaskStatus,
    pub progress: f64,
    pub current_phase: Option<String>,
    pub created_at: DateTime<Utc>,
    /// Prompt plus completion tokens over all model calls of the task.
    pub total_tokens: u64,
}

/// Where a phase of a plan stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PhaseStatus {
    Pending,
    Running,
    Succeeded,
    Failed,
}

impl PhaseStatus {
    pub const ALL: &'static [PhaseStatus] =
        &[PhaseStatus::Pending, PhaseStatus::Running, PhaseStatus::Succeeded, PhaseStatus::Failed];

    pub fn as_str(self) -> &'static str {
        match self {
            PhaseStatus::Pending => "pending",
            PhaseStatus::Running => "running",
            PhaseStatus::Succeeded => "succeeded",
            PhaseStatus::Failed => "failed",
        }
    }

    pub(crate) fn parse(s: &str) -> Option<PhaseStatus> {
        PhaseStatus::ALL.iter().copied().find(|p| p.as_str() == s)
    }
}

impl std::fmt::Display for PhaseStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One phase of a task's latest plan.
#[derive(Clone, Debug, PartialEq)]
pub struct PhaseRow {
    pub task_id: TaskId,
    pub plan_id: PlanId,
    pub name: String,
    /// Index in the plan's execution order, from 0.
    pub position: u32,
    /// None when the phase's agent_type names no role and it has not started.
    pub role: Option<AgentRole>,
    pub status: PhaseStatus,
    /// 0 until the phase first starts.
    pub attempt: u32,
    pub summary: Option<String>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
}

/// One iteration of an agent's tool loop.
#[derive(Clone, Debug, PartialEq)]
pub struct StepRow {
    pub task_id: TaskId,
    pub phase: String,
    /// The attempt of the phase it ran in (1 when the phase has no `PhaseStarted`).
    pub attempt: u32,
    pub step: u32,
    /// The role of the phase, when the plan names it.
    pub role: Option<AgentRole>,
    pub created_at: DateTime<Utc>,
}

/// One tool call and, once its result arrived, how it went.
#[derive(Clone, Debug, PartialEq)]
pub struct ToolCallRow {
    pub task_id: TaskId,
    pub phase: String,
    /// The attempt of the phase it was made in (1 when the phase has no `PhaseStarted`).
    pub attempt: u32,
    pub step: u32,
    pub tool: String,
    /// Seq of the `ToolCall` event.
    pub call_seq: u64,
    pub arguments: serde_json::Value,
    /// None while no result has arrived.
    pub success: Option<bool>,
    /// What the model was shown, shortened.
    pub output: Option<String>,
    pub duration_ms: Option<u64>,
    pub created_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
}

/// One model call and what it cost.
#[derive(Clone, Debug, PartialEq)]
pub struct UsageRow {
    pub task_id: TaskId,
    /// Seq of the `ModelCall` event.
    pub event_seq: u64,
    pub role: AgentRole,
    pub phase: Option<String>,
    pub model: String,
    pub usage: TokenUsage,
    pub latency_ms: u64,
    pub ttft_ms: Option<u64>,
    pub at: DateTime<Utc>,
}

/// An audit entry to record: who did what to which task or project, and how it went. It must
/// carry no secrets (see [`crate::Store::record_audit`]).
#[derive(Clone, Debug, PartialEq)]
pub struct NewAuditEntry {
    pub at: DateTime<Utc>,
    /// Who: `grpc:<peer>`, `nats-cli`, a user id.
    pub actor: String,
    /// What, as `<noun>.<verb>`: `task.create`, `task.cancel`, `task.execute`, `project.create`,
    /// `project.update`, `project.delete`, `project.restore`, `project.purge`, `tool.approve`.
    pub action: String,
    /// The id of what was acted on; empty when the action has no single target.
    pub target: String,
    /// `ok`, or `error: <what went wrong>`.
    pub outcome: String,
    /// Ids, names and counts that say more; never request bodies, file contents or secrets.
    pub detail: Option<serde_json::Value>,
}

impl NewAuditEntry {
    /// `action` by `actor` on `target`, now, with outcome `ok` and no detail.
    pub fn new(actor: impl Into<String>, action: impl Into<String>, target: impl Into<String>) -> Self {
        Self {
            at: Utc::now(),
            actor: actor.into(),
            action: action.into(),
            target: target.into(),
            outcome: "ok".to_string(),
            detail: None,
        }
    }

    /// The action failed: outcome `error: <error>`.
    pub fn failed(mut self, error: impl std::fmt::Display) -> Self {
        self.outcome = format!("error: {error}");
        self
    }

    pub fn with_detail(mut self, detail: serde_json::Value) -> Self {
        self.detail = Some(detail);
        self
    }
}

/// An audit entry as stored.
#[derive(Clone, Debug, PartialEq)]
pub struct AuditEntry {
    /// Grows with each entry.
    pub id: i64,
    pub at: DateTime<Utc>,
    pub actor: String,
    pub action: String,
    pub target: String,
    pub outcome: String,
    pub detail: Option<serde_json::Value>,
}

/// Which audit entries [`crate::Store::list_audit`] returns, newest first: those matching every
/// field that is set.
#[derive(Clone, Debug, PartialEq)]
pub struct AuditFilter {
    pub actor: Option<String>,
    pub action: Option<String>,
    pub target: Option<String>,
    /// Entries at or after this instant.
    pub since: Option<DateTime<Utc>>,
    /// At most this many; clamped to 1..=[`crate::MAX_AUDIT_LIMIT`].
    pub limit: u64,
}

impl Default for AuditFilter {
    fn default() -> Self {
        Self { actor: None, action: None, target: None, since: None, limit: 100 }
    }
}
