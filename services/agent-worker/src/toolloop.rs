//! The tool loop shared by agents that act: ask the model, run the calls it asks for through the
//! tool-runner, feed the results back, until it gives a final answer or runs out of steps.

use std::collections::HashMap;
use std::time::Instant;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use turbo_core::event::{EventKind, clip};
use turbo_core::ids::ProjectId;
use turbo_core::tool::{TokenUsage, ToolCall, ToolSpec};
use turbo_llm::{Message, Turn};
use turbo_tool_runner::{ApprovalUpdate, CallScope, ToolOutput};

use crate::context::{AgentDeps, Reporter, cancellable};
use crate::error::{Error, Result};

/// A model that answers in the wrong shape this many times in a row fails the phase.
const MAX_BAD_REPLIES: u32 = 3;
/// Calls repeated verbatim after failing this many times fail the phase.
const MAX_REPEATS: u32 = 2;
/// Characters of a tool result kept in the event stream.
const EVENT_OUTPUT_CHARS: usize = 2_000;

pub(crate) struct LoopOutcome {
    pub final_text: String,
    pub steps: u32,
    pub usage: TokenUsage,
    pub files_changed: Vec<String>,
}

#[allow(clippy::too_many_arguments)]
pub(crate) async fn run(
    deps: &AgentDeps,
    rep: &Reporter<'_>,
    project_id: Option<ProjectId>,
    workspace: &str,
    mut messages: Vec<Message>,
    tools: &[ToolSpec],
    max_steps: u32,
    cancel: &CancellationToken,
) -> Result<LoopOutcome> {
    let phase = rep.phase.clone().unwrap_or_default();
    let mut usage = TokenUsage::default();
    let mut files_changed: Vec<String> = Vec::new();
    // Failed calls by their exact text, with the error the model saw.
    let mut failed: HashMap<String, String> = HashMap::new();
    let mut repeats = 0;
    let mut bad_replies = 0;

    for step in 1..=max_steps {
        let turn = cancellable(cancel, async {
            Ok(turbo_llm::next_turn(deps.model.as_ref(), &messages, tools, deps.settings.stream, None).await?)
        })
        .await;
        let turn = match turn {
            Ok(t) => {
                bad_replies = 0;
                t
            }
            Err(Error::Model(e @ turbo_llm::Error::InvalidOutput { .. })) => {
                bad_replies += 1;
                if bad_replies >= MAX_BAD_REPLIES {
                    return Err(Error::Model(e));
                }
                messages.push(Message::user(format!(
                    "Your last reply could not be used: {e}. Answer again with either a tool call or your final answer, in the required format."
                )));
                continue;
            }
            Err(e) => return Err(e),
        };
        usage += turn.response.usage;
        rep.model_call(&turn.response);
        let calls = match turn.turn {
            Turn::Final(text) => {
                rep.emit(EventKind::AgentMessage { role: rep.role, text: text.clone() });
                return Ok(LoopOutcome { final_text: text, steps: step, usage, files_changed });
            }
            Turn::ToolCalls(calls) => calls,
        };
        messages.push(turn.response.message.clone());
        for call in calls {
            rep.emit(EventKind::ToolCall {
                phase: phase.clone(),
                step,
                tool: call.name.clone(),
                arguments: call.arguments.clone(),
            });
            let key = format!("{}:{}", call.name, call.arguments);
            let started = Instant::now();
            let (success, content) = if let Some(previous) = failed.get(&key) {
                repeats += 1;
                if repeats > MAX_REPEATS {
                    return Err(Error::Stuck { tool: call.name.clone(), error: clip(previous, 300) });
                }
                (
                    false,
                    format!(
                        "not run: this exact call already failed with:\n{previous}\nDo not repeat it. Change the arguments or take another approach."
                    ),
                )
            } else {
                let scope = CallScope {
                    task_id: Some(rep.task_id),
                    project_id,
                    phase: Some(phase.clone()),
                    step: Some(step),
                    ..CallScope::default()
                };
                match cancellable(cancel, async { Ok(call_reporting(deps, rep, workspace, &call, scope, step).await) })
                    .await?
                {
                    Ok(out) => {
                        for f in &out.files_changed {
                            if !files_changed.contains(f) {
                                files_changed.push(f.clone());
                            }
                        }
                        if !out.success {
                            failed.insert(key, clip(&out.content, 1_000));
                        }
                        (out.success, out.content)
                    }
                    Err(e) if e.is_model_correctable() => {
                        let text = format!("error: {e}");
                        failed.insert(key, text.clone());
                        (false, text)
                    }
                    Err(e) => return Err(Error::Tool(e)),
                }
            };
            rep.emit(EventKind::ToolResult {
                phase: phase.clone(),
                step,
                tool: call.name.clone(),
                success,
                output: clip(&content, EVENT_OUTPUT_CHARS),
                duration_ms: started.elapsed().as_millis() as u64,
            });
            messages.push(Message::tool_result(&call, content));
        }
    }
    Err(Error::StepLimit { role: rep.role.as_str(), max_steps })
}

/// Runs one call, putting in the task's events that it waits for approval and how that was
/// decided, as the runner tells. `step` is the tool-loop step (0 for a command the agent runs
/// itself, like the tester's test command).
pub(crate) async fn call_reporting(
    deps: &AgentDeps,
    rep: &Reporter<'_>,
    workspace: &str,
    call: &ToolCall,
    mut scope: CallScope,
    step: u32,
) -> turbo_tool_runner::Result<ToolOutput> {
    let (updates, mut updated) = mpsc::unbounded_channel();
    scope.updates = Some(updates);
    let phase = rep.phase.clone().unwrap_or_default();
    let report = |update: ApprovalUpdate| {
        rep.emit(match update {
            ApprovalUpdate::Requested(r) => EventKind::ApprovalRequested {
                phase: phase.clone(),
                step,
                tool: r.tool,
                approval_id: r.approval_id,
                risk: r.risk,
                reason: r.reason,
                expires_at: r.expires_at,
            },
            ApprovalUpdate::Decided(d) => EventKind::ApprovalDecided {
                phase: phase.clone(),
                step,
                tool: call.name.clone(),
                approval_id: d.approval_id,
                approved: d.approved,
                decided_by: d.decided_by,
                note: d.note,
            },
        })
    };
    let running = deps.tools.call_in(workspace, call, &scope);
    tokio::pin!(running);
    let result = loop {
        tokio::select! {
            biased;
            Some(update) = updated.recv() => report(update),
            result = &mut running => break result,
        }
    };
    while let Ok(update) = updated.try_recv() {
        report(update);
    }
    result
}
