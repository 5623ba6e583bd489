//! What every agent needs: its model, the tool-runner, the event sink, the knowledge it
//! retrieves context from, and a few helpers for reporting and prompt building.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;

use futures::FutureExt;
use serde_json::json;
use tokio_util::sync::CancellationToken;
use turbo_core::agent::AgentRole;
use turbo_core::event::{EventKind, EventSink, UsedChunk};
use turbo_core::ids::{ProjectId, TaskId};
use turbo_core::knowledge::{ContextRequest, Knowledge, MAX_QUERY_BYTES, RetrievedContext};
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
    /// Where prompts get context retrieved from the project's code and knowledge; None turns
    /// retrieval off.
    pub knowledge: Option<Arc<dyn Knowledge>>,
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

/// Candidates one context query retrieves before de-duplication and packing.
pub(crate) const CONTEXT_LIMIT: usize = 20;

/// Heading of the prompt section that holds retrieved context.
pub(crate) const RETRIEVED_HEADING: &str = "Code and knowledge retrieved for this step:";

/// Context retrieved for one prompt: `query` over the project's chunks, the workspace
/// re-indexed first, packed into `share` of the model's context `window`.
///
/// None when retrieval is off, the assignment names no project (a message from before project
/// ids), nothing was found, or the knowledge service failed: a knowledge outage is logged and
/// the agent carries on without context, it never fails the work.
pub(crate) async fn retrieve(
    deps: &AgentDeps,
    rep: &Reporter<'_>,
    project_id: Option<ProjectId>,
    workspace: &str,
    query: &str,
    window: u32,
    share: f64,
) -> Option<RetrievedContext> {
    let knowledge = deps.knowledge.as_ref()?;
    let phase = rep.phase.as_deref().unwrap_or("(planning)");
    let Some(project_id) = project_id else {
        tracing::debug!(
            task_id = %rep.task_id, role = %rep.role, phase,
            "the assignment names no project; no retrieved context"
        );
        return None;
    };
    let query = clip_bytes(query.trim(), MAX_QUERY_BYTES);
    if query.is_empty() {
        return None;
    }
    let request = ContextRequest {
        project_id: project_id.to_string(),
        workspace: Some(workspace.to_string()),
        query: query.to_string(),
        budget_chars: context_budget_chars(window, share),
        limit: CONTEXT_LIMIT,
    };
    // The knowledge base may run in this process: a panic in it must not take the agent down.
    let built = AssertUnwindSafe(knowledge.build_context(request)).catch_unwind().await;
    match built {
        Ok(Ok(context)) if context.text.trim().is_empty() => {
            tracing::debug!(task_id = %rep.task_id, role = %rep.role, phase, "no context retrieved for this step");
            None
        }
        Ok(Ok(context)) => {
            tracing::info!(
                task_id = %rep.task_id, role = %rep.role, phase, chunks = context.chunk_ids.len(),
                chars = context.text.chars().count(), "context retrieved"
            );
            rep.emit(EventKind::ContextRetrieved {
                role: rep.role,
                phase: rep.phase.clone(),
                chunks: used_chunks(&context),
            });
            Some(context)
        }
        Ok(Err(error)) => {
            tracing::warn!(
                task_id = %rep.task_id, role = %rep.role, phase, kind = ?error.kind, %error,
                "cannot retrieve context; working without it"
            );
            None
        }
        Err(_) => {
            tracing::warn!(
                task_id = %rep.task_id, role = %rep.role, phase,
                "retrieving context panicked; working without it"
            );
            None
        }
    }
}

/// The chunks of `context`, as its event tells them (an excerpt missing from an older
/// knowledge service is empty).
fn used_chunks(context: &RetrievedContext) -> Vec<UsedChunk> {
    context
        .chunk_ids
        .iter()
        .enumerate()
        .map(|(i, id)| UsedChunk {
            id: id.clone(),
            source: context.sources.get(i).cloned().unwrap_or_default(),
            excerpt: context.excerpts.get(i).cloned().unwrap_or_default(),
        })
        .collect()
}

/// Tells the knowledge service how the work shown `context` ended, so the usage counts and
/// success rates of its chunks follow ([`turbo_core::knowledge::KnowledgeChunk::update_usage`]).
/// `success` is None for cancelled work, which says nothing about the chunks: nothing is
/// recorded. Errors are logged only.
pub(crate) async fn record_outcome(
    deps: &AgentDeps,
    rep: &Reporter<'_>,
    context: Option<&RetrievedContext>,
    success: Option<bool>,
) {
    let (Some(knowledge), Some(context), Some(success)) = (deps.knowledge.as_ref(), context, success) else {
        return;
    };
    if context.chunk_ids.is_empty() {
        return;
    }
    let recorded = AssertUnwindSafe(knowledge.record_outcome(&context.chunk_ids, success)).catch_unwind().await;
    let error = match recorded {
        Ok(Ok(())) => return,
        Ok(Err(error)) => error.to_string(),
        Err(_) => "the knowledge base panicked".to_string(),
    };
    tracing::warn!(
        task_id = %rep.task_id, role = %rep.role, phase = rep.phase.as_deref().unwrap_or("(planning)"),
        chunks = context.chunk_ids.len(), success, %error, "cannot record the outcome of the retrieved context"
    );
}

/// How `result` counts for the chunks its prompt was shown: `success` of a finished piece of
/// work, a failure for an error, None (not counted) when it was cancelled.
pub(crate) fn outcome_of<T>(result: &Result<T>, success: impl FnOnce(&T) -> bool) -> Option<bool> {
    match result {
        Ok(value) => Some(success(value)),
        Err(Error::Cancelled) => None,
        Err(_) => Some(false),
    }
}

/// The prompt section holding `context`, with its heading; empty without context.
pub(crate) fn context_section(context: Option<&RetrievedContext>) -> String {
    match context {
        Some(c) => format!("\n\n{RETRIEVED_HEADING}\n{}", c.text.trim_end()),
        None => String::new(),
    }
}

/// One line of a retrieval query per non-empty part, for the parts an agent knows.
pub(crate) fn query_lines<'a>(parts: impl IntoIterator<Item = &'a str>) -> String {
    parts.into_iter().map(str::trim).filter(|p| !p.is_empty()).collect::<Vec<_>>().join("\n")
}

/// The longest prefix of `text` of at most `max_bytes` bytes that ends on a character boundary.
fn clip_bytes(text: &str, max_bytes: usize) -> &str {
    if text.len() <= max_bytes {
        return text;
    }
    let mut end = max_bytes;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries_are_clipped_on_character_boundaries() {
        assert_eq!(clip_bytes("abc", 10), "abc");
        assert_eq!(clip_bytes("abcdef", 3), "abc");
        // "é" is two bytes: a cut inside it keeps the character out.
        assert_eq!(clip_bytes("aé", 2), "a");
        assert_eq!(query_lines(["  a ", "", " ", "b"]), "a\nb");
    }
}
