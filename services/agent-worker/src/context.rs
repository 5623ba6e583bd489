//! What every agent needs: its model, the tool-runner, the event sink, and a few helpers for
//! reporting and prompt building.

use std::future::Future;
use std::sync::Arc;

use serde_json::json;
use tokio_util::sync::CancellationToken;
use turbo_core::agent::AgentRole;
use turbo_core::event::{EventKind, EventSink};
use turbo_core::ids::TaskId;
use turbo_core::tool::ToolCall;
use turbo_llm::{ChatModel, ChatResponse};
use turbo_tool_runner::ToolRunnerClient;

use crate::error::{Error, Result};

/// Knobs of agent behaviour that come from the configuration.
#[derive(Clone, Debug)]
pub struct AgentSettings {
    /// Model calls the planner may make to get a valid plan.
    pub plan_attempts: u32,
    /// Stream model replies (measures time to first token).
    pub stream: bool,
    /// Deadline given to test and check commands, seconds.
    pub command_timeout_s: u64,
}

impl Default for AgentSettings {
    fn default() -> Self {
        Self { plan_attempts: 3, stream: true, command_timeout_s: 600 }
    }
}

/// An agent actor's dependencies; cheap to clone, so a restarted actor gets the same ones.
#[derive(Clone)]
pub struct AgentDeps {
    pub model: Arc<dyn ChatModel>,
    pub tools: ToolRunnerClient,
    pub events: Arc<dyn EventSink>,
    pub settings: AgentSettings,
}

/// Emits events for one task on behalf of one role.
pub(crate) struct Reporter<'a> {
    pub events: &'a dyn EventSink,
    pub task_id: TaskId,
    pub role: AgentRole,
    pub phase: Option<String>,
}

impl Reporter<'_> {
    pub fn emit(&self, kind: EventKind) {
        self.events.emit(self.task_id, kind);
    }

    pub fn model_call(&self, r: &ChatResponse) {
        self.emit(EventKind::ModelCall {
            role: self.role,
            phase: self.phase.clone(),
            model: r.model.clone(),
            prompt_tokens: r.usage.prompt_tokens,
            completion_tokens: r.usage.completion_tokens,
            latency_ms: r.timing.total.as_millis() as u64,
            ttft_ms: r.timing.time_to_first_token.map(|d| d.as_millis() as u64),
            tokens_per_second: r.timing.tokens_per_second.filter(|t| t.is_finite()),
        });
    }
}

/// Runs `fut` unless the task is cancelled first.
pub(crate) async fn cancellable<T>(cancel: &CancellationToken, fut: impl Future<Output = Result<T>>) -> Result<T> {
    tokio::select! {
        biased;
        _ = cancel.cancelled() => Err(Error::Cancelled),
        r = fut => r,
    }
}

/// A tool call made by the agent itself (not the model), with a generated id.
pub(crate) fn own_call(name: &str, arguments: serde_json::Value) -> ToolCall {
    ToolCall { id: format!("agent_{}", uuid::Uuid::new_v4().simple()), name: name.to_string(), arguments }
}

/// The workspace's file list, at most `max_chars` long, for prompts.
pub(crate) async fn workspace_outline(tools: &ToolRunnerClient, workspace: &str, max_chars: usize) -> String {
    let call = own_call("fs_list", json!({"path": ".", "recursive": true, "max_entries": 400}));
    match tools.call(workspace, &call).await {
        Ok(out) => clip_chars(&out.content, max_chars),
        Err(e) => format!("(cannot list the workspace: {e})"),
    }
}

/// Keeps the end of `text` when it is too long: for command output the end says what failed.
pub(crate) fn tail_chars(text: &str, max_chars: usize) -> String {
    let n = text.chars().count();
    if n <= max_chars {
        return text.to_string();
    }
    let tail: String = text.chars().skip(n - max_chars).collect();
    format!("[... {} earlier chars cut]\n{tail}", n - max_chars)
}

pub(crate) fn clip_chars(text: &str, max_chars: usize) -> String {
    turbo_core::event::clip(text, max_chars)
}

/// Rough characters-per-token ratio used to budget prompts against a context window.
pub(crate) const CHARS_PER_TOKEN: usize = 4;

/// Characters of repository text a prompt may carry: a share of the context window, leaving
/// room for instructions, history and the answer.
pub(crate) fn context_budget_chars(context_window: u32, share: f64) -> usize {
    ((context_window as f64 * share) as usize * CHARS_PER_TOKEN).max(2_000)
}

/// Wraps repository content so the model treats it as data.
pub(crate) fn untrusted(label: &str, body: &str) -> String {
    format!("<repository-content source=\"{label}\" trust=\"untrusted\">\n{body}\n</repository-content>")
}
