//! `TaskEvent` and every `EventKind` variant.

use turbo_core::event::{EventKind, TaskEvent, UsedChunk};

use super::{
    ProtoEnum, id_from_proto, json_value_from_proto, json_value_to_proto, req_timestamp, required, timestamp_to_proto,
};
use crate::Error;
use crate::tasks::v1 as pb;
use crate::tasks::v1::task_event::{self as te, Kind};

impl From<TaskEvent> for pb::TaskEvent {
    fn from(e: TaskEvent) -> Self {
        pb::TaskEvent {
            task_id: e.task_id.to_string(),
            seq: e.seq,
            at: Some(timestamp_to_proto(e.at)),
            kind: Some(e.kind.into()),
        }
    }
}

/// Events have no constraints beyond their structure: ids, enums, JSON and the timestamp.
impl TryFrom<pb::TaskEvent> for TaskEvent {
    type Error = Error;

    fn try_from(e: pb::TaskEvent) -> Result<Self, Error> {
        Ok(TaskEvent {
            task_id: id_from_proto("task_id", &e.task_id)?,
            seq: e.seq,
            at: req_timestamp("at", e.at)?,
            kind: required("kind", e.kind)?.try_into()?,
        })
    }
}

impl From<EventKind> for Kind {
    fn from(k: EventKind) -> Self {
        match k {
            EventKind::TaskCreated { title, workspace } => Kind::TaskCreated(te::TaskCreated { title, workspace }),
            EventKind::StatusChanged { from, to, reason } => {
                Kind::StatusChanged(te::StatusChanged { from: from.to_proto(), to: to.to_proto(), reason })
            }
            EventKind::PlanReady { plan_id, version, phases, confidence, attempts } => {
                Kind::PlanReady(te::PlanReady { plan_id: plan_id.to_string(), version, phases, confidence, attempts })
            }
            EventKind::PhaseStarted { phase, role, attempt } => {
                Kind::PhaseStarted(te::PhaseStarted { phase, role: role.to_proto(), attempt })
            }
            EventKind::PhaseFinished { phase, role, success, summary } => {
                Kind::PhaseFinished(te::PhaseFinished { phase, role: role.to_proto(), success, summary })
            }
            EventKind::ModelCall {
                role,
                phase,
                model,
                prompt_tokens,
                completion_tokens,
                latency_ms,
                ttft_ms,
                tokens_per_second,
            } => Kind::ModelCall(te::ModelCall {
                role: role.to_proto(),
                phase,
                model,
                prompt_tokens,
                completion_tokens,
                latency_ms,
                ttft_ms,
                tokens_per_second,
            }),
            EventKind::ToolCall { phase, step, tool, arguments } => {
                Kind::ToolCall(te::ToolCall { phase, step, tool, arguments_json: json_value_to_proto(&arguments) })
            }
            EventKind::ToolResult { phase, step, tool, success, output, duration_ms } => {
                Kind::ToolResult(te::ToolResult { phase, step, tool, success, output, duration_ms })
            }
            EventKind::TestRun { command, round, passed, exit_code } => {
                Kind::TestRun(te::TestRun { command, round, passed, exit_code })
            }
            EventKind::Review { verdict, findings, summary } => {
                Kind::Review(te::Review { verdict: verdict.to_proto(), findings, summary })
            }
            EventKind::Progress { percent } => Kind::Progress(te::Progress { percent }),
            EventKind::AgentMessage { role, text } => {
                Kind::AgentMessage(te::AgentMessage { role: role.to_proto(), text })
            }
            EventKind::ApprovalRequested { phase, step, tool, approval_id, risk, reason, expires_at } => {
                Kind::ApprovalRequested(te::ApprovalRequested {
                    phase,
                    step,
                    tool,
                    approval_id,
                    risk_level: risk.to_proto(),
                    reason,
                    expires_at: Some(timestamp_to_proto(expires_at)),
                })
            }
            EventKind::ApprovalDecided { phase, step, tool, approval_id, approved, decided_by, note } => {
                Kind::ApprovalDecided(te::ApprovalDecided {
                    phase,
                    step,
                    tool,
                    approval_id,
                    approved,
                    decided_by,
                    note,
                })
            }
            EventKind::ContextRetrieved { role, phase, chunks } => Kind::ContextRetrieved(te::ContextRetrieved {
                role: role.to_proto(),
                phase,
                chunks: chunks
                    .into_iter()
                    .map(|c| te::UsedChunk { id: c.id, source: c.source, excerpt: c.excerpt })
                    .collect(),
            }),
        }
    }
}

/// Field names in errors are paths from the `TaskEvent`, e.g. `status_changed.to`.
impl TryFrom<Kind> for EventKind {
    type Error = Error;

    fn try_from(k: Kind) -> Result<Self, Error> {
        Ok(match k {
            Kind::TaskCreated(te::TaskCreated { title, workspace }) => EventKind::TaskCreated { title, workspace },
            Kind::StatusChanged(te::StatusChanged { from, to, reason }) => EventKind::StatusChanged {
                from: ProtoEnum::from_proto("status_changed.from", from)?,
                to: ProtoEnum::from_proto("status_changed.to", to)?,
                reason,
            },
            Kind::PlanReady(te::PlanReady { plan_id, version, phases, confidence, attempts }) => EventKind::PlanReady {
                plan_id: id_from_proto("plan_ready.plan_id", &plan_id)?,
                version,
                phases,
                confidence,
                attempts,
            },
            Kind::PhaseStarted(te::PhaseStarted { phase, role, attempt }) => {
                EventKind::PhaseStarted { phase, role: ProtoEnum::from_proto("phase_started.role", role)?, attempt }
            }
            Kind::PhaseFinished(te::PhaseFinished { phase, role, success, summary }) => EventKind::PhaseFinished {
                phase,
                role: ProtoEnum::from_proto("phase_finished.role", role)?,
                success,
                summary,
            },
            Kind::ModelCall(te::ModelCall {
                role,
                phase,
                model,
                prompt_tokens,
                completion_tokens,
                latency_ms,
                ttft_ms,
                tokens_per_second,
            }) => EventKind::ModelCall {
                role: ProtoEnum::from_proto("model_call.role", role)?,
                phase,
                model,
                prompt_tokens,
                completion_tokens,
                latency_ms,
                ttft_ms,
                tokens_per_second,
            },
            Kind::ToolCall(te::ToolCall { phase, step, tool, arguments_json }) => EventKind::ToolCall {
                phase,
                step,
                tool,
                arguments: json_value_from_proto("tool_call.arguments_json", &arguments_json)?,
            },
            Kind::ToolResult(te::ToolResult { phase, step, tool, success, output, duration_ms }) => {
                EventKind::ToolResult { phase, step, tool, success, output, duration_ms }
            }
            Kind::TestRun(te::TestRun { command, round, passed, exit_code }) => {
                EventKind::TestRun { command, round, passed, exit_code }
            }
            Kind::Review(te::Review { verdict, findings, summary }) => {
                EventKind::Review { verdict: ProtoEnum::from_proto("review.verdict", verdict)?, findings, summary }
            }
            Kind::Progress(te::Progress { percent }) => EventKind::Progress { percent },
            Kind::AgentMessage(te::AgentMessage { role, text }) => {
                EventKind::AgentMessage { role: ProtoEnum::from_proto("agent_message.role", role)?, text }
            }
            Kind::ApprovalRequested(te::ApprovalRequested {
                phase,
                step,
                tool,
                approval_id,
                risk_level,
                reason,
                expires_at,
            }) => EventKind::ApprovalRequested {
                phase,
                step,
                tool,
                approval_id,
                risk: ProtoEnum::from_proto("approval_requested.risk_level", risk_level)?,
                reason,
                expires_at: req_timestamp("approval_requested.expires_at", expires_at)?,
            },
            Kind::ApprovalDecided(te::ApprovalDecided {
                phase,
                step,
                tool,
                approval_id,
                approved,
                decided_by,
                note,
            }) => EventKind::ApprovalDecided { phase, step, tool, approval_id, approved, decided_by, note },
            Kind::ContextRetrieved(te::ContextRetrieved { role, phase, chunks }) => EventKind::ContextRetrieved {
                role: ProtoEnum::from_proto("context_retrieved.role", role)?,
                phase,
                chunks: chunks
                    .into_iter()
                    .map(|c| UsedChunk { id: c.id, source: c.source, excerpt: c.excerpt })
                    .collect(),
            },
        })
    }
}
