//! Tool outputs and task diffs as `turbo.tools.v1` messages, for the server (`grpc`) and the
//! client (`remote`). [`ToolOutput`] is `turbo-tools`' and [`TaskDiff`] this crate's, not
//! `turbo-core` types, so these conversions live beside them rather than in `turbo-proto`
//! (which depends on `turbo-core` only); [`ToolOutput`] conversions are functions because
//! neither type is this crate's.

use std::time::Duration;

use turbo_proto::tools::v1 as pb;
use turbo_tools::ToolOutput;

use turbo_proto::convert::{
    ProtoEnum, json_value_from_proto, json_value_to_proto, opt_id_from_proto, required, timestamp_from_proto,
    timestamp_to_proto,
};

use crate::approval::{ApprovalOutcome, PendingApproval};
use crate::baseline::TaskDiff;
use crate::error::{Error, Result};

/// A waiting call as the API shows it.
pub(crate) fn pending_to_proto(p: &PendingApproval) -> pb::ApprovalRequest {
    pb::ApprovalRequest {
        approval_id: p.approval_id.clone(),
        task_id: p.task_id.map(|t| t.to_string()).unwrap_or_default(),
        tool: p.tool.clone(),
        arguments_json: json_value_to_proto(&p.arguments),
        risk_level: p.risk.to_proto(),
        reason: p.reason.clone(),
        requested_at: Some(timestamp_to_proto(p.requested_at)),
        expires_at: Some(timestamp_to_proto(p.expires_at)),
        project_id: p.project_id.map(|t| t.to_string()).unwrap_or_default(),
    }
}

/// A waiting call as a client reads it; fields are checked as any request's.
pub(crate) fn pending_from_proto(p: pb::ApprovalRequest) -> Result<PendingApproval> {
    Ok(PendingApproval {
        task_id: opt_id_from_proto("task_id", &p.task_id)?,
        project_id: opt_id_from_proto("project_id", &p.project_id)?,
        arguments: json_value_from_proto("arguments_json", &p.arguments_json)?,
        risk: turbo_core::tool::RiskLevel::from_proto("risk_level", p.risk_level)?,
        requested_at: timestamp_from_proto("requested_at", required("requested_at", p.requested_at)?)?,
        expires_at: timestamp_from_proto("expires_at", required("expires_at", p.expires_at)?)?,
        approval_id: p.approval_id,
        tool: p.tool,
        reason: p.reason,
    })
}

pub(crate) fn outcome_to_proto(o: ApprovalOutcome) -> pb::ApprovalOutcome {
    pb::ApprovalOutcome { approval_id: o.approval_id, approved: o.approved, decided_by: o.decided_by, note: o.note }
}

pub(crate) fn outcome_from_proto(o: pb::ApprovalOutcome) -> ApprovalOutcome {
    ApprovalOutcome { approval_id: o.approval_id, approved: o.approved, decided_by: o.decided_by, note: o.note }
}

/// A call's output as its result chunk. The duration is sent to the millisecond.
pub(crate) fn output_to_proto(out: ToolOutput) -> pb::ToolResult {
    pb::ToolResult {
        success: out.success,
        content: out.content,
        exit_code: out.exit_code,
        truncated: out.truncated,
        files_changed: out.files_changed,
        duration_ms: millis(out.duration),
        model_correctable: false,
    }
}

/// The result of a call the model made wrongly: the error's message is what the model reads.
pub(crate) fn correctable_to_proto(error: &Error, took: Duration) -> pb::ToolResult {
    pb::ToolResult {
        success: false,
        content: error.to_string(),
        duration_ms: millis(took),
        model_correctable: true,
        ..pb::ToolResult::default()
    }
}

/// A result chunk as the local runner returns it: the output, or [`Error::Correctable`] with
/// the same message when the model made the call wrongly.
pub(crate) fn output_from_proto(result: pb::ToolResult) -> Result<ToolOutput> {
    if result.model_correctable {
        return Err(Error::Correctable(result.content));
    }
    Ok(ToolOutput {
        content: result.content,
        success: result.success,
        exit_code: result.exit_code,
        truncated: result.truncated,
        files_changed: result.files_changed,
        duration: Duration::from_millis(result.duration_ms),
    })
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

impl From<TaskDiff> for pb::TaskDiffResponse {
    fn from(d: TaskDiff) -> Self {
        pb::TaskDiffResponse { unified: d.unified, added: d.added, modified: d.modified, deleted: d.deleted }
    }
}

impl From<pb::TaskDiffResponse> for TaskDiff {
    fn from(d: pb::TaskDiffResponse) -> Self {
        TaskDiff { unified: d.unified, added: d.added, modified: d.modified, deleted: d.deleted }
    }
}

#[cfg(test)]
mod tests {
    use proptest::collection::vec;
    use proptest::option;
    use proptest::prelude::*;
    use prost::Message;

    use super::*;

    fn output() -> impl Strategy<Value = ToolOutput> {
        (
            any::<String>(),
            any::<bool>(),
            option::of(any::<i32>()),
            any::<bool>(),
            vec(any::<String>(), 0..4),
            any::<u64>(),
        )
            .prop_map(|(content, success, exit_code, truncated, files_changed, ms)| ToolOutput {
                content,
                success,
                exit_code,
                truncated,
                files_changed,
                duration: Duration::from_millis(ms),
            })
    }

    fn diff() -> impl Strategy<Value = TaskDiff> {
        (any::<String>(), vec(any::<String>(), 0..4), vec(any::<String>(), 0..4), vec(any::<String>(), 0..4))
            .prop_map(|(unified, added, modified, deleted)| TaskDiff { unified, added, modified, deleted })
    }

    proptest! {
        #[test]
        fn outputs_survive_the_wire(out in output()) {
            let bytes = output_to_proto(out.clone()).encode_to_vec();
            let back = output_from_proto(pb::ToolResult::decode(bytes.as_slice()).unwrap()).unwrap();
            prop_assert_eq!(back, out);
        }

        #[test]
        fn diffs_survive_the_wire(d in diff()) {
            let bytes = pb::TaskDiffResponse::from(d.clone()).encode_to_vec();
            prop_assert_eq!(TaskDiff::from(pb::TaskDiffResponse::decode(bytes.as_slice()).unwrap()), d);
        }
    }

    #[test]
    fn a_correctable_error_comes_back_with_its_message() {
        let err = Error::Tool(turbo_tools::Error::NotFound { path: "a.py".into() });
        let result = correctable_to_proto(&err, Duration::from_millis(3));
        assert!(!result.success);
        let back = output_from_proto(result).unwrap_err();
        assert!(back.is_model_correctable());
        assert_eq!(back.to_string(), err.to_string());
    }
}
