//! Approvals for operators over NATS, in plain JSON, so `nats req` is all they need:
//!
//! | subject | request | reply |
//! |---|---|---|
//! | `turbo.tools.approvals.list` | `{}` or `{"task_id": "<uuid>"}` | `{"v":1,"approvals":[PendingApproval...]}` |
//! | `turbo.tools.approve` | `{"approval_id": "apr_...", "decided_by": "ana", "note"?: "..."}` | `{"v":1,"approval_id":...,"applied":true}` |
//! | `turbo.tools.deny` | as approve | as approve |
//!
//! There is no queue group: every process running tools subscribes, and only the one holding
//! a call answers an approve or deny for it (the others stay silent, so the requester gets
//! the holder's answer, or a timeout when no runner holds the id). Every runner answers a
//! list; with several, `nats req --replies 0` collects them all. Failures are replies too:
//! `{"v":1,"error":{"code":"invalid_argument","message":...}}`.

use std::time::Duration;

use serde::Deserialize;
use serde_json::{Value, json};
use tokio_stream::StreamMap;
use tokio_util::sync::CancellationToken;
use turbo_bus::async_nats::{self, Message};
use turbo_bus::subjects;
use turbo_core::ids::TaskId;

use crate::SharedApprovals;
use crate::error::{Error, Result};

/// The version every reply carries as `"v"`.
pub const REPLY_VERSION: u64 = 1;
const MAX_IN_FLIGHT: usize = 16;
const DRAIN_WAIT: Duration = Duration::from_secs(5);
const DECIDE_EXAMPLE: &str = r#"{"approval_id": "apr_...", "decided_by": "ana", "note": "ok to deploy"}"#;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ListRequest {
    #[serde(default)]
    task_id: Option<TaskId>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DecideRequest {
    approval_id: String,
    decided_by: String,
    #[serde(default)]
    note: Option<String>,
}

/// Subscribes to the approval subjects and answers them from `approvals` until `shutdown`;
/// then drains. Fails when it cannot subscribe or the connection closes for good.
pub async fn serve_approvals(
    client: async_nats::Client,
    approvals: SharedApprovals,
    shutdown: CancellationToken,
) -> Result<()> {
    let serve_error = |reason: String| Error::Serve { addr: "NATS subjects turbo.tools.*".into(), reason };
    let mut requests = StreamMap::new();
    for subject in subjects::TOOLS_APPROVAL_SUBJECTS {
        let subscriber =
            client.subscribe(subject.to_string()).await.map_err(|e| serve_error(format!("cannot subscribe: {e}")))?;
        requests.insert(*subject, subscriber);
    }
    client.flush().await.map_err(|e| serve_error(format!("cannot reach the server: {e}")))?;
    tracing::info!(subjects = ?subjects::TOOLS_APPROVAL_SUBJECTS, "approval subjects serving");
    let limits = turbo_bus::RequestLimits { max_in_flight: MAX_IN_FLIGHT, drain_wait: DRAIN_WAIT };
    let served = turbo_bus::serve_requests(&mut requests, &shutdown, limits, "approvals", |message| {
        answer(client.clone(), approvals.clone(), message)
    })
    .await
    .map_err(|closed| serve_error(closed.to_string()));
    if let Err(error) = client.flush().await {
        tracing::warn!(%error, "cannot flush the last approval replies");
    }
    served
}

async fn answer(client: async_nats::Client, approvals: SharedApprovals, message: Message) {
    let Some(reply_to) = message.reply.clone() else {
        tracing::debug!(subject = %message.subject, "ignoring an approval message without a reply subject: use `nats req`");
        return;
    };
    let Some(reply) = handle(&approvals, message.subject.as_str(), &message.payload).await else { return };
    let bytes = serde_json::to_vec(&reply).unwrap_or_default();
    if let Err(error) = client.publish(reply_to, bytes.into()).await {
        tracing::warn!(subject = %message.subject, %error, "cannot send an approval reply");
    }
}

/// The reply to one request, or None when another runner holds the call it decides.
async fn handle(approvals: &SharedApprovals, subject: &str, payload: &[u8]) -> Option<Value> {
    let payload = if payload.iter().all(u8::is_ascii_whitespace) { &b"{}"[..] } else { payload };
    match subject {
        subjects::TOOLS_APPROVALS_LIST => Some(match serde_json::from_slice::<ListRequest>(payload) {
            Ok(req) => json!({"v": REPLY_VERSION, "approvals": approvals.list(req.task_id)}),
            Err(e) => invalid(format!("{e}; send {{}} or {{\"task_id\": \"<uuid>\"}}")),
        }),
        subjects::TOOLS_APPROVE | subjects::TOOLS_DENY => {
            let req = match serde_json::from_slice::<DecideRequest>(payload) {
                Ok(req) => req,
                // Every runner sees it: one answer says what is wrong, whoever sends it first.
                Err(e) => return Some(invalid(format!("{e}; send e.g. {DECIDE_EXAMPLE}"))),
            };
            if !approvals.holds(&req.approval_id) {
                return None;
            }
            let approve = subject == subjects::TOOLS_APPROVE;
            Some(match approvals.decide(&req.approval_id, approve, &req.decided_by, req.note).await {
                Ok(applied) => json!({"v": REPLY_VERSION, "approval_id": req.approval_id, "applied": applied}),
                Err(e @ Error::Approval(_)) => invalid(e.to_string()),
                Err(e) => json!({"v": REPLY_VERSION, "error": {"code": "internal", "message": e.to_string()}}),
            })
        }
        _ => None,
    }
}

fn invalid(message: String) -> Value {
    json!({"v": REPLY_VERSION, "error": {"code": "invalid_argument", "message": message}})
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use tokio::sync::mpsc;
    use turbo_config::ApprovalAction;
    use turbo_core::tool::RiskLevel;

    use super::*;
    use crate::{ApprovalPolicy, ApprovalUpdate, Approvals, CallScope};

    #[tokio::test]
    async fn requests_decide_only_calls_held_here_and_bad_ones_say_what_to_send() {
        let approvals: SharedApprovals =
            Arc::new(Approvals::new(ApprovalPolicy::allow_all().with(RiskLevel::High, ApprovalAction::Ask)));
        let (tx, mut rx) = mpsc::unbounded_channel();
        let scope = CallScope { updates: Some(tx), ..CallScope::default() };
        let gate = {
            let approvals = approvals.clone();
            tokio::spawn(async move { approvals.gate(&scope, "shell_run", &json!({}), RiskLevel::High, None).await })
        };
        let Some(ApprovalUpdate::Requested(request)) = rx.recv().await else { panic!("no request") };

        let list = handle(&approvals, subjects::TOOLS_APPROVALS_LIST, b"").await.unwrap();
        assert_eq!(list["approvals"][0]["approval_id"], request.approval_id.as_str());
        let bad = handle(&approvals, subjects::TOOLS_APPROVALS_LIST, br#"{"task": 1}"#).await.unwrap();
        assert_eq!(bad["error"]["code"], "invalid_argument");
        let bad = handle(&approvals, subjects::TOOLS_APPROVE, br#"{"approval_id": "x"}"#).await.unwrap();
        assert!(bad["error"]["message"].as_str().unwrap().contains("decided_by"), "{bad}");
        let elsewhere = br#"{"approval_id": "apr_elsewhere", "decided_by": "ana"}"#;
        assert_eq!(handle(&approvals, subjects::TOOLS_APPROVE, elsewhere).await, None);

        let deny = json!({"approval_id": request.approval_id, "decided_by": "ana", "note": "no"}).to_string();
        let reply = handle(&approvals, subjects::TOOLS_DENY, deny.as_bytes()).await.unwrap();
        assert_eq!(reply["applied"], true, "{reply}");
        assert!(matches!(gate.await.unwrap(), crate::approval::Gate::Refused(_)));
    }
}
