//! Approvals: which tool calls run at once, which wait for a person, which never run.
//!
//! Every call has its tool's risk level; the [`ApprovalPolicy`] (the `[approval]` config, with
//! per-project overrides) maps the level to auto, ask or deny. An asked call is registered in
//! [`Approvals`] as a [`PendingApproval`] and waits until [`Approvals::decide`] is called (gRPC
//! Approve/Deny, the NATS subjects `turbo.tools.approve`/`.deny`, or a terminal prompt) or its
//! timeout passes, which denies it. A caller that goes away withdraws its call. Whoever made
//! the call hears of the wait and of the decision through its [`CallScope`]'s updates, so the
//! agent can put both in the task's events. Every decision, including the policy's own denials
//! and expiries, is written to the audit log when a store is attached.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio::sync::{mpsc, oneshot};
use turbo_config::{ApprovalAction, ApprovalConfig, ApprovalOverride};
use turbo_core::event::clip;
use turbo_core::ids::{ProjectId, SessionId, TaskId};
use turbo_core::tool::RiskLevel;
use turbo_store::{NewAuditEntry, Store};
use turbo_tools::ResourceEstimate;

use crate::error::{Error, Result};

/// Characters of a reviewer's note kept.
const MAX_NOTE_CHARS: usize = 1_000;
/// Characters of the decider's name kept.
const MAX_DECIDER_CHARS: usize = 200;

/// Which calls may run, per risk level, with per-project overrides.
#[derive(Clone, Debug, PartialEq)]
pub struct ApprovalPolicy {
    levels: Levels,
    projects: HashMap<ProjectId, Levels>,
    /// How long an asked call waits before it is denied.
    pub timeout: Duration,
}

/// An action per risk level, in [`RiskLevel`] order.
type Levels = [ApprovalAction; 5];

fn index(risk: RiskLevel) -> usize {
    match risk {
        RiskLevel::Safe => 0,
        RiskLevel::Low => 1,
        RiskLevel::Medium => 2,
        RiskLevel::High => 3,
        RiskLevel::Critical => 4,
    }
}

impl Default for ApprovalPolicy {
    /// The `[approval]` defaults: critical calls ask, the rest run.
    fn default() -> Self {
        Self::from_config(&ApprovalConfig::default())
    }
}

impl ApprovalPolicy {
    /// The policy of an `[approval]` section. Project keys are UUIDs (the config checks them);
    /// one that is not is skipped with a warning.
    pub fn from_config(c: &ApprovalConfig) -> Self {
        let levels = [c.safe, c.low, c.medium, c.high, c.critical];
        let projects = c
            .projects
            .iter()
            .filter_map(|(key, over)| match key.parse::<ProjectId>() {
                Ok(id) => Some((id, overridden(levels, over))),
                Err(_) => {
                    tracing::warn!(project = %key, "approval.projects keys are project ids; this one is skipped");
                    None
                }
            })
            .collect();
        Self { levels, projects, timeout: Duration::from_secs(c.timeout_s.max(1)) }
    }

    /// Every call runs at once (for tests and trusted local work).
    pub fn allow_all() -> Self {
        Self { levels: [ApprovalAction::Auto; 5], projects: HashMap::new(), timeout: Duration::from_secs(900) }
    }

    /// The same policy with `action` for calls of `risk` in every project.
    pub fn with(mut self, risk: RiskLevel, action: ApprovalAction) -> Self {
        self.levels[index(risk)] = action;
        for levels in self.projects.values_mut() {
            levels[index(risk)] = action;
        }
        self
    }

    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// What happens to a call of `risk` in `project` (the defaults when it has no overrides).
    pub fn action(&self, project: Option<ProjectId>, risk: RiskLevel) -> ApprovalAction {
        let levels = project.and_then(|p| self.projects.get(&p)).unwrap_or(&self.levels);
        levels[index(risk)]
    }
}

fn overridden(mut levels: Levels, over: &ApprovalOverride) -> Levels {
    for (risk, action) in [
        (RiskLevel::Safe, over.safe),
        (RiskLevel::Low, over.low),
        (RiskLevel::Medium, over.medium),
        (RiskLevel::High, over.high),
        (RiskLevel::Critical, over.critical),
    ] {
        if let Some(action) = action {
            levels[index(risk)] = action;
        }
    }
    levels
}

/// How the output of a call the policy, a person or the timeout refused begins: nothing ran.
pub const NOT_RUN: &str = "not run: ";

/// A call waiting for a person's decision.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PendingApproval {
    /// Pass to approve or deny: `apr_` and 32 hex digits.
    pub approval_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task_id: Option<TaskId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub project_id: Option<ProjectId>,
    pub tool: String,
    pub arguments: serde_json::Value,
    pub risk: RiskLevel,
    /// Why approval is needed.
    pub reason: String,
    pub requested_at: DateTime<Utc>,
    /// Denied automatically after this time.
    pub expires_at: DateTime<Utc>,
}

/// How a waiting call was decided.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApprovalOutcome {
    pub approval_id: String,
    pub approved: bool,
    /// Who decided: a person's name, `timeout` when nobody did in time.
    pub decided_by: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// What the caller of a waiting call hears.
#[derive(Clone, Debug, PartialEq)]
pub enum ApprovalUpdate {
    /// The call waits for a decision.
    Requested(PendingApproval),
    /// The call was decided (it runs next when approved).
    Decided(ApprovalOutcome),
}

/// Who a call is made for, and where to tell its caller that it waits for approval.
#[derive(Clone, Debug, Default)]
pub struct CallScope {
    pub task_id: Option<TaskId>,
    /// The interactive session the call comes from; its mutating calls are checkpointed under
    /// the session when no task is set.
    pub session_id: Option<SessionId>,
    /// The project whose approval policy applies (the defaults when None).
    pub project_id: Option<ProjectId>,
    /// The phase and tool-loop step the call belongs to, for checkpoint labels.
    pub phase: Option<String>,
    pub step: Option<u32>,
    /// Told when the call starts waiting and when it is decided.
    pub updates: Option<mpsc::UnboundedSender<ApprovalUpdate>>,
    /// Where the call's processes' output goes as it is printed (best effort).
    pub output: Option<turbo_tools::OutputSink>,
}

impl CallScope {
    /// Whose checkpoints a mutating call adds to: the task's, else the session's.
    pub(crate) fn checkpoint_owner(&self) -> Option<crate::checkpoint::Owner> {
        self.task_id.map(Into::into).or(self.session_id.map(Into::into))
    }

    pub(crate) fn tell(&self, update: ApprovalUpdate) {
        if let Some(updates) = &self.updates {
            // A caller that stopped listening still gets the call's result.
            let _ = updates.send(update);
        }
    }
}

/// Whether a call may run.
#[derive(Debug)]
pub(crate) enum Gate {
    Run,
    /// Not run; the text tells the model why and what to do instead.
    Refused(String),
}

struct Waiting {
    request: PendingApproval,
    decide: oneshot::Sender<ApprovalOutcome>,
}

/// The calls waiting for approval, and the policy that sends them there.
pub struct Approvals {
    policy: ApprovalPolicy,
    waiting: Mutex<HashMap<String, Waiting>>,
    /// Set once, before or after the approvals are shared (a worker opens its store after
    /// its tool-runner is made).
    audit: std::sync::OnceLock<Store>,
}

impl std::fmt::Debug for Approvals {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Approvals").field("policy", &self.policy).field("waiting", &self.len()).finish()
    }
}

impl Approvals {
    pub fn new(policy: ApprovalPolicy) -> Self {
        Self { policy, waiting: Mutex::new(HashMap::new()), audit: std::sync::OnceLock::new() }
    }

    /// Decisions are also written to `store`'s audit log.
    pub fn with_audit(self, store: Store) -> Self {
        self.audit_to(store);
        self
    }

    /// From now on, decisions are also written to `store`'s audit log; false when they already
    /// go to one (which stays).
    pub fn audit_to(&self, store: Store) -> bool {
        self.audit.set(store).is_ok()
    }

    /// Sends the decisions to the audit log of `config`'s store (`store.url`): for a process
    /// whose tool-runner is its own (an agent worker running tools itself). Without a store
    /// URL, or when it cannot be opened, decisions are told in the tasks' events only, and this
    /// says so in the log. True when they now go to an audit log.
    pub async fn audit_in_configured_store(&self, config: &turbo_config::Config) -> bool {
        let Some(url) = config.store.url.as_deref() else {
            tracing::warn!(
                "store.url is not set: approval decisions made in this process are in the tasks' events, not in the \
                 audit log"
            );
            return false;
        };
        match Store::open(Some(url), &config.store.data_dir()).await {
            Ok(store) => self.audit_to(store) || self.audit.get().is_some(),
            Err(error) => {
                tracing::warn!(%error, "cannot open the store: approval decisions made here are in the tasks' events only");
                false
            }
        }
    }

    pub fn policy(&self) -> &ApprovalPolicy {
        &self.policy
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Waiting>> {
        self.waiting.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Calls waiting now.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The waiting calls, of one task when given, oldest first.
    pub fn list(&self, task_id: Option<TaskId>) -> Vec<PendingApproval> {
        let mut list: Vec<PendingApproval> = self
            .lock()
            .values()
            .filter(|w| task_id.is_none() || w.request.task_id == task_id)
            .map(|w| w.request.clone())
            .collect();
        list.sort_by(|a, b| a.requested_at.cmp(&b.requested_at).then_with(|| a.approval_id.cmp(&b.approval_id)));
        list
    }

    /// Whether `approval_id` waits here.
    pub fn holds(&self, approval_id: &str) -> bool {
        self.lock().contains_key(approval_id)
    }

    /// Approves or denies a waiting call, recording the decision in the audit log first.
    /// Returns false when the call is not waiting (decided already, expired, withdrawn, or
    /// never here). `decided_by` must name someone.
    pub async fn decide(
        &self,
        approval_id: &str,
        approved: bool,
        decided_by: &str,
        note: Option<String>,
    ) -> Result<bool> {
        let decided_by = decided_by.trim();
        if decided_by.is_empty() {
            return Err(Error::Approval(
                "decided_by is empty: name who decides, for the audit log (e.g. your user name)".into(),
            ));
        }
        let Some(request) = self.lock().get(approval_id).map(|w| w.request.clone()) else { return Ok(false) };
        let outcome = ApprovalOutcome {
            approval_id: approval_id.to_string(),
            approved,
            decided_by: clip(decided_by, MAX_DECIDER_CHARS),
            note: note.map(|n| clip(n.trim(), MAX_NOTE_CHARS)).filter(|n| !n.is_empty()),
        };
        // Audited before it takes effect: a decision the log cannot hold is not applied.
        self.audit(&request, &outcome, if approved { "tool.approve" } else { "tool.deny" }).await?;
        let Some(waiting) = self.lock().remove(approval_id) else { return Ok(false) };
        // The caller went away between the lookup and here: nothing runs either way.
        Ok(waiting.decide.send(outcome).is_ok())
    }

    /// Decides whether a call of `tool` with `risk` may run, waiting for a person when the
    /// policy asks. Dropping the future withdraws a waiting call.
    pub(crate) async fn gate(
        &self,
        scope: &CallScope,
        tool: &str,
        arguments: &serde_json::Value,
        risk: RiskLevel,
        estimate: Option<ResourceEstimate>,
    ) -> Gate {
        let level = risk_name(risk);
        match self.policy.action(scope.project_id, risk) {
            // Safe calls (reads) are many and change nothing; the task's tool calls list them.
            ApprovalAction::Auto if risk == RiskLevel::Safe || self.audit.get().is_none() => Gate::Run,
            ApprovalAction::Auto => {
                self.policy_decided(scope, tool, arguments, risk, true).await;
                Gate::Run
            }
            ApprovalAction::Deny => {
                self.policy_decided(scope, tool, arguments, risk, false).await;
                Gate::Refused(format!(
                    "{NOT_RUN}the approval policy of this project denies {level}-risk calls, and {tool} is one. Do not retry it: take another approach, or finish and say what a person must do."
                ))
            }
            ApprovalAction::Ask => {
                let mut reason = format!("the approval policy asks a person before {level}-risk calls");
                if let Some(estimate) = estimate {
                    reason.push_str(&format!("; the call is expected to take {estimate}"));
                }
                let request = self.pending(scope, tool, arguments, risk, reason);
                self.wait(scope, request).await
            }
        }
    }

    /// Audits the policy's own decision on a call.
    async fn policy_decided(
        &self,
        scope: &CallScope,
        tool: &str,
        arguments: &serde_json::Value,
        risk: RiskLevel,
        approved: bool,
    ) {
        let level = risk_name(risk);
        let (reason, action) = if approved {
            (format!("{level} calls run at once"), "tool.auto_approve")
        } else {
            (format!("{level} calls are denied"), "tool.deny")
        };
        let request = self.pending(scope, tool, arguments, risk, reason);
        let outcome = ApprovalOutcome {
            approval_id: request.approval_id.clone(),
            approved,
            decided_by: "policy".into(),
            note: None,
        };
        self.audit_logged(&request, &outcome, action).await;
    }

    fn pending(
        &self,
        scope: &CallScope,
        tool: &str,
        arguments: &serde_json::Value,
        risk: RiskLevel,
        reason: String,
    ) -> PendingApproval {
        let now = Utc::now();
        let expires_at = now + chrono::Duration::from_std(self.policy.timeout).unwrap_or(chrono::Duration::MAX);
        PendingApproval {
            approval_id: format!("apr_{}", uuid::Uuid::new_v4().simple()),
            task_id: scope.task_id,
            project_id: scope.project_id,
            tool: tool.to_string(),
            arguments: arguments.clone(),
            risk,
            reason,
            requested_at: now,
            expires_at,
        }
    }

    async fn wait(&self, scope: &CallScope, request: PendingApproval) -> Gate {
        let id = request.approval_id.clone();
        let tool = request.tool.clone();
        let (decide, decided) = oneshot::channel();
        self.lock().insert(id.clone(), Waiting { request: request.clone(), decide });
        // Withdraws the call if this future is dropped while it waits.
        let _withdraw = Withdraw { approvals: self, id: &id };
        tracing::info!(approval_id = %id, %tool, task_id = ?request.task_id, "a tool call waits for approval");
        scope.tell(ApprovalUpdate::Requested(request.clone()));
        let outcome = match tokio::time::timeout(self.policy.timeout, decided).await {
            Ok(Ok(outcome)) => outcome,
            // Timed out (or, impossibly, the sender vanished without deciding): denied.
            _ => {
                self.lock().remove(&id);
                let outcome = ApprovalOutcome {
                    approval_id: id.clone(),
                    approved: false,
                    decided_by: "timeout".into(),
                    note: None,
                };
                self.audit_logged(&request, &outcome, "tool.approval_expired").await;
                outcome
            }
        };
        scope.tell(ApprovalUpdate::Decided(outcome.clone()));
        if outcome.approved {
            tracing::info!(approval_id = %id, %tool, by = %outcome.decided_by, "the tool call was approved");
            return Gate::Run;
        }
        tracing::info!(approval_id = %id, %tool, by = %outcome.decided_by, "the tool call was denied");
        let note = outcome.note.as_deref().map(|n| format!(" Their note: {n}")).unwrap_or_default();
        Gate::Refused(match outcome.decided_by.as_str() {
            "timeout" => format!(
                "{NOT_RUN}nobody approved this {tool} call within {} s, so it was denied. Do not retry it: take another approach, or finish and say what a person must approve.",
                self.policy.timeout.as_secs()
            ),
            by => format!("{NOT_RUN}{by} denied this {tool} call.{note} Do not retry it: take another approach."),
        })
    }

    async fn audit(&self, request: &PendingApproval, outcome: &ApprovalOutcome, action: &str) -> Result<()> {
        let Some(store) = self.audit.get() else { return Ok(()) };
        let entry = NewAuditEntry {
            at: Utc::now(),
            actor: outcome.decided_by.clone(),
            action: action.to_string(),
            target: outcome.approval_id.clone(),
            outcome: "ok".into(),
            // Names and ids only: the arguments may hold file contents.
            detail: Some(json!({
                "tool": request.tool,
                "risk": risk_name(request.risk),
                "task_id": request.task_id,
                "project_id": request.project_id,
                "approved": outcome.approved,
            })),
        };
        store.record_audit(entry).await.map(|_| ()).map_err(|e| Error::Audit(e.to_string()))
    }

    /// As [`Approvals::audit`], for decisions that stand whatever the log says.
    async fn audit_logged(&self, request: &PendingApproval, outcome: &ApprovalOutcome, action: &str) {
        if let Err(error) = self.audit(request, outcome, action).await {
            tracing::error!(%error, approval_id = %outcome.approval_id, "an approval decision is not in the audit log");
        }
    }
}

fn risk_name(risk: RiskLevel) -> &'static str {
    match risk {
        RiskLevel::Safe => "safe",
        RiskLevel::Low => "low",
        RiskLevel::Medium => "medium",
        RiskLevel::High => "high",
        RiskLevel::Critical => "critical",
    }
}

struct Withdraw<'a> {
    approvals: &'a Approvals,
    id: &'a str,
}

impl Drop for Withdraw<'_> {
    fn drop(&mut self) {
        self.approvals.lock().remove(self.id);
    }
}

/// The policy and waiting calls a runner shares with whoever decides (gRPC, NATS, a prompt).
pub type SharedApprovals = Arc<Approvals>;

#[cfg(test)]
mod tests {
    use super::*;

    fn ask_high() -> Approvals {
        Approvals::new(ApprovalPolicy::allow_all().with(RiskLevel::High, ApprovalAction::Ask))
    }

    /// A high-risk shell_run call going through the gate on its own task.
    fn spawn_gate(
        approvals: &Arc<Approvals>,
        scope: CallScope,
        args: serde_json::Value,
    ) -> tokio::task::JoinHandle<Gate> {
        let approvals = approvals.clone();
        tokio::spawn(async move { approvals.gate(&scope, "shell_run", &args, RiskLevel::High, None).await })
    }

    async fn next_request(rx: &mut mpsc::UnboundedReceiver<ApprovalUpdate>) -> PendingApproval {
        match rx.recv().await {
            Some(ApprovalUpdate::Requested(r)) => r,
            other => panic!("expected a request, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn a_process_with_its_own_runner_audits_in_the_configured_store() {
        let dir = tempfile::tempdir().unwrap();
        let mut config = turbo_config::Config::default();
        let approvals =
            Arc::new(Approvals::new(ApprovalPolicy::allow_all().with(RiskLevel::High, ApprovalAction::Ask)));
        assert!(!approvals.audit_in_configured_store(&config).await, "no store.url: nothing to audit in");
        let url = format!("sqlite://{}?mode=rwc", dir.path().join("audit.db").display());
        config.store.url = Some(url.clone());
        assert!(approvals.audit_in_configured_store(&config).await);

        let (tx, mut rx) = mpsc::unbounded_channel();
        let scope = CallScope { updates: Some(tx), ..CallScope::default() };
        let gate = spawn_gate(&approvals, scope, json!({"command": "make deploy"}));
        let request = next_request(&mut rx).await;
        approvals.decide(&request.approval_id, false, "ops", Some("not today".into())).await.unwrap();
        gate.await.unwrap();
        let stored = Store::open(Some(&url), dir.path()).await.unwrap();
        let entries = stored.list_audit(turbo_store::AuditFilter::default()).await.unwrap();
        let seen: Vec<(&str, &str, &str)> =
            entries.iter().map(|e| (e.actor.as_str(), e.action.as_str(), e.target.as_str())).collect();
        assert_eq!(seen, [("ops", "tool.deny", request.approval_id.as_str())]);
    }

    #[test]
    fn projects_override_only_the_levels_they_name() {
        let project = ProjectId::new();
        let mut config = ApprovalConfig::default();
        config.projects.insert(
            project.to_string(),
            ApprovalOverride { high: Some(ApprovalAction::Deny), ..ApprovalOverride::default() },
        );
        let policy = ApprovalPolicy::from_config(&config);
        assert_eq!(policy.action(None, RiskLevel::High), ApprovalAction::Auto);
        assert_eq!(policy.action(Some(project), RiskLevel::High), ApprovalAction::Deny);
        assert_eq!(policy.action(Some(project), RiskLevel::Critical), ApprovalAction::Ask);
        assert_eq!(policy.action(Some(ProjectId::new()), RiskLevel::High), ApprovalAction::Auto);
    }

    #[tokio::test]
    async fn an_asked_call_waits_until_approved_and_its_caller_hears_both() {
        let approvals = Arc::new(ask_high());
        let (tx, mut rx) = mpsc::unbounded_channel();
        let task = TaskId::new();
        let scope = CallScope { task_id: Some(task), updates: Some(tx), ..CallScope::default() };
        let gate = spawn_gate(&approvals, scope.clone(), json!({"command": "make"}));
        let request = next_request(&mut rx).await;
        assert_eq!((request.tool.as_str(), request.task_id, request.risk), ("shell_run", Some(task), RiskLevel::High));
        assert_eq!(approvals.list(Some(task)), std::slice::from_ref(&request));
        assert!(approvals.list(Some(TaskId::new())).is_empty());
        assert!(!gate.is_finished(), "the call must wait for a decision");

        assert!(approvals.decide(&request.approval_id, true, "ana", None).await.unwrap());
        assert!(matches!(gate.await.unwrap(), Gate::Run));
        assert_eq!(
            rx.recv().await,
            Some(ApprovalUpdate::Decided(ApprovalOutcome {
                approval_id: request.approval_id.clone(),
                approved: true,
                decided_by: "ana".into(),
                note: None
            }))
        );
        assert!(approvals.is_empty());
        // A second decision on the same call changes nothing.
        assert!(!approvals.decide(&request.approval_id, false, "bob", None).await.unwrap());
    }

    #[tokio::test]
    async fn a_denied_call_tells_the_model_who_denied_it_and_why() {
        let approvals = Arc::new(ask_high());
        let (tx, mut rx) = mpsc::unbounded_channel();
        let scope = CallScope { updates: Some(tx), ..CallScope::default() };
        let gate = spawn_gate(&approvals, scope.clone(), json!({}));
        let request = next_request(&mut rx).await;
        let err = approvals.decide(&request.approval_id, false, "  ", None).await.unwrap_err();
        assert!(err.to_string().contains("decided_by"), "{err}");
        assert!(approvals.decide(&request.approval_id, false, "ana", Some("use the Makefile".into())).await.unwrap());
        match gate.await.unwrap() {
            Gate::Refused(text) => assert!(text.contains("ana denied") && text.contains("use the Makefile"), "{text}"),
            Gate::Run => panic!("a denied call ran"),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn nobody_deciding_in_time_denies_the_call() {
        let approvals = Approvals::new(
            ApprovalPolicy::allow_all().with(RiskLevel::High, ApprovalAction::Ask).with_timeout(Duration::from_secs(5)),
        );
        let (tx, mut rx) = mpsc::unbounded_channel();
        let scope = CallScope { updates: Some(tx), ..CallScope::default() };
        match approvals.gate(&scope, "shell_run", &json!({}), RiskLevel::High, None).await {
            Gate::Refused(text) => assert!(text.contains("within 5 s"), "{text}"),
            Gate::Run => panic!("an undecided call ran"),
        }
        let request = next_request(&mut rx).await;
        assert!(
            matches!(rx.recv().await, Some(ApprovalUpdate::Decided(ApprovalOutcome { approved: false, ref decided_by, .. })) if decided_by == "timeout")
        );
        assert!(!approvals.holds(&request.approval_id));
    }

    #[tokio::test]
    async fn denied_levels_never_run_and_auto_levels_never_wait() {
        let approvals = Approvals::new(ApprovalPolicy::allow_all().with(RiskLevel::Critical, ApprovalAction::Deny));
        let scope = CallScope::default();
        assert!(matches!(approvals.gate(&scope, "fs_read", &json!({}), RiskLevel::Safe, None).await, Gate::Run));
        match approvals.gate(&scope, "deploy", &json!({}), RiskLevel::Critical, None).await {
            Gate::Refused(text) => assert!(text.contains("denies critical-risk calls"), "{text}"),
            Gate::Run => panic!("a denied level ran"),
        }
        assert!(approvals.is_empty());
    }

    #[tokio::test]
    async fn a_caller_that_goes_away_withdraws_its_call() {
        let approvals = Arc::new(ask_high());
        let (tx, mut rx) = mpsc::unbounded_channel();
        let scope = CallScope { updates: Some(tx), ..CallScope::default() };
        let gate = spawn_gate(&approvals, scope.clone(), json!({}));
        let request = next_request(&mut rx).await;
        gate.abort();
        let _ = gate.await;
        assert!(!approvals.holds(&request.approval_id));
        assert!(!approvals.decide(&request.approval_id, true, "ana", None).await.unwrap());
    }

    #[tokio::test]
    async fn decisions_are_audited_with_names_not_arguments() {
        let store = Store::connect("sqlite::memory:").await.unwrap();
        // Shared first, given its audit log after (as an agent worker does).
        let approvals = Arc::new(Approvals::new(
            ApprovalPolicy::allow_all()
                .with(RiskLevel::High, ApprovalAction::Ask)
                .with(RiskLevel::Critical, ApprovalAction::Deny),
        ));
        assert!(approvals.audit_to(store.clone()));
        assert!(!approvals.audit_to(Store::connect("sqlite::memory:").await.unwrap()), "the first log stays");
        let (tx, mut rx) = mpsc::unbounded_channel();
        let scope = CallScope { updates: Some(tx), ..CallScope::default() };
        let gate = spawn_gate(&approvals, scope.clone(), json!({"command": "echo s3cr3t"}));
        let request = next_request(&mut rx).await;
        approvals.decide(&request.approval_id, true, "ana", None).await.unwrap();
        gate.await.unwrap();
        approvals.gate(&scope, "deploy", &json!({}), RiskLevel::Critical, None).await;
        // What the policy lets run at once is audited too, but for safe calls (reads).
        assert!(matches!(approvals.gate(&scope, "fs_write", &json!({}), RiskLevel::Medium, None).await, Gate::Run));
        assert!(matches!(approvals.gate(&scope, "fs_read", &json!({}), RiskLevel::Safe, None).await, Gate::Run));

        let entries = store.list_audit(turbo_store::AuditFilter::default()).await.unwrap();
        let mut seen: Vec<(String, String)> = entries.iter().map(|e| (e.actor.clone(), e.action.clone())).collect();
        seen.sort();
        assert_eq!(
            seen,
            [
                ("ana".to_string(), "tool.approve".to_string()),
                ("policy".into(), "tool.auto_approve".into()),
                ("policy".into(), "tool.deny".into())
            ]
        );
        let auto = entries.iter().find(|e| e.action == "tool.auto_approve").unwrap();
        assert_eq!(auto.detail.as_ref().unwrap()["tool"], "fs_write");
        assert_eq!(auto.detail.as_ref().unwrap()["risk"], "medium");
        let approve = entries.iter().find(|e| e.action == "tool.approve").unwrap();
        assert_eq!(approve.target, request.approval_id);
        let detail = approve.detail.as_ref().unwrap().to_string();
        assert!(detail.contains("shell_run") && !detail.contains("s3cr3t"), "{detail}");
    }
}
