//! Task events: everything that happens to a task, in order. They are streamed to watchers and
//! stored; the stored tables of phases, steps, tool calls and token usage are projections of them.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::agent::AgentRole;
use crate::ids::{PlanId, TaskId};
use crate::protocol::ReviewVerdict;
use crate::task::TaskStatus;
use crate::tool::RiskLevel;

/// One event with its place in the task's stream.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TaskEvent {
    pub task_id: TaskId,
    /// 1-based, gapless per task, so a watcher can resume after the last one it saw.
    pub seq: u64,
    pub at: DateTime<Utc>,
    #[serde(flatten)]
    pub kind: EventKind,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum EventKind {
    TaskCreated {
        title: String,
        workspace: String,
    },
    StatusChanged {
        from: TaskStatus,
        to: TaskStatus,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
    },
    PlanReady {
        plan_id: PlanId,
        version: u32,
        phases: Vec<String>,
        confidence: f64,
        /// Model calls it took to get a valid plan.
        attempts: u32,
    },
    PhaseStarted {
        phase: String,
        role: AgentRole,
        attempt: u32,
    },
    PhaseFinished {
        phase: String,
        role: AgentRole,
        success: bool,
        summary: String,
    },
    /// One model call and what it cost.
    ModelCall {
        role: AgentRole,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        phase: Option<String>,
        model: String,
        prompt_tokens: u32,
        completion_tokens: u32,
        latency_ms: u64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        ttft_ms: Option<u64>,
        /// Completion tokens per second of generation.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        tokens_per_second: Option<f64>,
    },
    /// A step of an agent's tool loop asked for a tool.
    ToolCall {
        phase: String,
        step: u32,
        tool: String,
        arguments: serde_json::Value,
    },
    ToolResult {
        phase: String,
        step: u32,
        tool: String,
        success: bool,
        /// What the model was shown, shortened for the event stream.
        output: String,
        duration_ms: u64,
    },
    TestRun {
        command: String,
        round: u32,
        passed: bool,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        exit_code: Option<i32>,
    },
    Review {
        verdict: ReviewVerdict,
        findings: u32,
        summary: String,
    },
    Progress {
        percent: f64,
    },
    /// Free text from an agent: its final answer or an explanation.
    AgentMessage {
        role: AgentRole,
        text: String,
    },
    /// A step's tool call waits for a person to approve or deny it (the approval policy
    /// asks about calls of its risk level); the task does not go on until it is decided.
    ApprovalRequested {
        phase: String,
        step: u32,
        tool: String,
        /// Pass to `turbo-coder approvals approve` / `deny` (or gRPC Approve/Deny, NATS
        /// turbo.tools.approve/deny).
        approval_id: String,
        risk: RiskLevel,
        reason: String,
        /// Denied automatically after this time.
        expires_at: DateTime<Utc>,
    },
    /// A waiting tool call was approved (it runs) or denied (it does not; the agent is told).
    ApprovalDecided {
        phase: String,
        step: u32,
        tool: String,
        approval_id: String,
        approved: bool,
        /// Who decided; `timeout` when nobody did in time.
        decided_by: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        note: Option<String>,
    },
    /// An agent's prompt was given context retrieved from the project's code and knowledge.
    ContextRetrieved {
        role: AgentRole,
        /// None while planning.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        phase: Option<String>,
        /// The chunks packed into the prompt, best first.
        chunks: Vec<UsedChunk>,
    },
}

/// One chunk of context an agent's prompt was given.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UsedChunk {
    /// The knowledge chunk's id.
    pub id: String,
    /// `path:start-end (symbol)`, or `knowledge: title`.
    pub source: String,
    /// The start of its text.
    pub excerpt: String,
}

impl EventKind {
    /// The snake_case name used as the JSON `type` and in subjects.
    pub fn name(&self) -> &'static str {
        match self {
            EventKind::TaskCreated { .. } => "task_created",
            EventKind::StatusChanged { .. } => "status_changed",
            EventKind::PlanReady { .. } => "plan_ready",
            EventKind::PhaseStarted { .. } => "phase_started",
            EventKind::PhaseFinished { .. } => "phase_finished",
            EventKind::ModelCall { .. } => "model_call",
            EventKind::ToolCall { .. } => "tool_call",
            EventKind::ToolResult { .. } => "tool_result",
            EventKind::TestRun { .. } => "test_run",
            EventKind::Review { .. } => "review",
            EventKind::Progress { .. } => "progress",
            EventKind::AgentMessage { .. } => "agent_message",
            EventKind::ApprovalRequested { .. } => "approval_requested",
            EventKind::ApprovalDecided { .. } => "approval_decided",
            EventKind::ContextRetrieved { .. } => "context_retrieved",
        }
    }
}

/// Where events go: the store, a terminal, a NATS stream. `emit` must not block the caller.
pub trait EventSink: Send + Sync + 'static {
    fn emit(&self, task_id: TaskId, kind: EventKind);
}

/// Discards events; for callers that do not watch.
pub struct NullSink;

impl EventSink for NullSink {
    fn emit(&self, _: TaskId, _: EventKind) {}
}

/// Shortens text for an event on a char boundary, saying how much was cut.
pub fn clip(text: &str, max_chars: usize) -> String {
    let total = text.chars().count();
    if total <= max_chars {
        return text.to_string();
    }
    let kept: String = text.chars().take(max_chars).collect();
    format!("{kept}... [{} more chars]", total - max_chars)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_serialize_flat_with_a_type_tag() {
        let e = TaskEvent {
            task_id: TaskId::new(),
            seq: 3,
            at: Utc::now(),
            kind: EventKind::StatusChanged { from: TaskStatus::Planned, to: TaskStatus::InProgress, reason: None },
        };
        let v = serde_json::to_value(&e).unwrap();
        assert_eq!(v["type"], "status_changed");
        assert_eq!(v["to"], "in_progress");
        assert_eq!(v["seq"], 3);
        assert_eq!(v["type"], e.kind.name());
        let back: TaskEvent = serde_json::from_value(v).unwrap();
        assert_eq!(back, e);
    }

    #[test]
    fn clip_keeps_short_text_and_marks_cuts() {
        assert_eq!(clip("abc", 5), "abc");
        assert_eq!(clip("héllo world", 5), "héllo... [6 more chars]");
    }
}
