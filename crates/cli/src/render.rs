//! How a run looks: on a terminal, readable lines plus a live status line (phase, step, last
//! tool, tokens, elapsed); with `--json`, one JSON event per line on stdout.

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};
use turbo_core::event::{EventKind, TaskEvent};
use turbo_core::plan::ExecutionPlan;

pub struct Renderer {
    json: bool,
    bar: Option<ProgressBar>,
    started: Instant,
    phase: String,
    step: u32,
    tool: String,
    tokens: u64,
    pub last_seq: u64,
}

fn first_line(text: &str, max: usize) -> String {
    let line = text.lines().find(|l| !l.trim().is_empty()).unwrap_or("").trim();
    turbo_core::event::clip(line, max)
}

/// The argument a person wants to see for a tool call: its path or command.
fn brief_args(args: &serde_json::Value) -> String {
    for key in ["path", "command", "pattern"] {
        if let Some(v) = args.get(key).and_then(|v| v.as_str()) {
            return turbo_core::event::clip(v, 80);
        }
    }
    if args.get("code").is_some() {
        return "<python code>".into();
    }
    String::new()
}

impl Renderer {
    pub fn new(json: bool) -> Self {
        let bar = (!json && std::io::stderr().is_terminal()).then(|| {
            let bar = ProgressBar::new_spinner();
            bar.set_style(
                ProgressStyle::with_template("{spinner} {msg}").unwrap_or_else(|_| ProgressStyle::default_spinner()),
            );
            bar.enable_steady_tick(Duration::from_millis(120));
            bar
        });
        Self {
            json,
            bar,
            started: Instant::now(),
            phase: "planning".into(),
            step: 0,
            tool: String::new(),
            tokens: 0,
            last_seq: 0,
        }
    }

    fn line(&self, text: String) {
        match &self.bar {
            Some(bar) => bar.suspend(|| println!("{text}")),
            None => println!("{text}"),
        }
    }

    fn status(&self) {
        if let Some(bar) = &self.bar {
            bar.set_message(format!(
                "{} · step {} {}· {} tokens · {}s",
                self.phase,
                self.step,
                if self.tool.is_empty() { String::new() } else { format!("· {} ", self.tool) },
                self.tokens,
                self.started.elapsed().as_secs()
            ));
        }
    }

    pub fn event(&mut self, e: &TaskEvent) {
        if e.seq <= self.last_seq {
            return;
        }
        self.last_seq = e.seq;
        if self.json {
            println!("{}", serde_json::to_string(e).unwrap_or_default());
            return;
        }
        match &e.kind {
            EventKind::TaskCreated { title, workspace } => {
                self.line(format!("task {} · {title}\n  workspace {workspace}", e.task_id))
            }
            EventKind::StatusChanged { to, reason, .. } => match reason {
                Some(r) => self.line(format!("status: {to} ({})", first_line(r, 300))),
                None => self.line(format!("status: {to}")),
            },
            EventKind::PlanReady { phases, confidence, attempts, .. } => self.line(format!(
                "plan: {} phase(s), confidence {:.2}{}",
                phases.len(),
                confidence,
                if *attempts > 1 { format!(", after {attempts} attempts") } else { String::new() }
            )),
            EventKind::PhaseStarted { phase, role, attempt } => {
                self.phase = format!("{phase} ({role})");
                self.step = 0;
                self.tool.clear();
                self.line(format!(
                    "▶ {phase} · {role}{}",
                    if *attempt > 1 { format!(" · attempt {attempt}") } else { String::new() }
                ));
            }
            EventKind::PhaseFinished { phase, success, summary, .. } => {
                self.line(format!("{} {phase}: {}", if *success { "✔" } else { "✘" }, first_line(summary, 160)))
            }
            EventKind::ModelCall { prompt_tokens, completion_tokens, .. } => {
                self.tokens += u64::from(*prompt_tokens) + u64::from(*completion_tokens);
            }
            EventKind::ToolCall { step, tool, arguments, .. } => {
                self.step = *step;
                self.tool = tool.clone();
                self.line(format!("  · {tool} {}", brief_args(arguments)));
            }
            EventKind::ToolResult { success, output, tool, .. } => {
                if !success {
                    self.line(format!("    ✗ {tool}: {}", first_line(output, 160)));
                }
            }
            EventKind::TestRun { command, round, passed, .. } => {
                self.line(format!("  tests (round {round}): `{command}` {}", if *passed { "passed" } else { "FAILED" }))
            }
            EventKind::Review { verdict, findings, summary } => {
                self.line(format!("  review: {verdict} · {findings} finding(s) · {}", first_line(summary, 160)))
            }
            EventKind::Progress { percent } => {
                self.phase = format!("{} {:.0}%", self.phase.split(" · ").next().unwrap_or(""), percent)
            }
            EventKind::AgentMessage { .. } => {}
            EventKind::ApprovalRequested { tool, approval_id, risk, expires_at, .. } => self.line(format!(
                "  ⏸ {tool} ({risk:?} risk) waits for approval {approval_id} until {}: `turbo-coder --server URL approvals approve {approval_id}` (or deny)",
                expires_at.format("%H:%M:%S UTC")
            )),
            EventKind::ApprovalDecided { tool, approved, decided_by, note, .. } => self.line(format!(
                "  {} {tool} {} by {decided_by}{}",
                if *approved { "▶" } else { "✗" },
                if *approved { "approved" } else { "denied" },
                note.as_deref().map(|n| format!(": {}", first_line(n, 160))).unwrap_or_default()
            )),
            EventKind::ContextRetrieved { role, chunks, .. } => {
                let sources: Vec<&str> = chunks.iter().take(3).map(|c| c.source.as_str()).collect();
                let more = chunks.len().saturating_sub(sources.len());
                self.line(format!(
                    "  {role} context: {}{}",
                    sources.join(", "),
                    if more > 0 { format!(" and {more} more") } else { String::new() }
                ))
            }
        }
        self.status();
    }

    /// Shows what the run waits for until its first event arrives (on a terminal only).
    pub fn waiting(&self, what: &str) {
        if let Some(bar) = &self.bar {
            bar.set_message(what.to_string());
        }
    }

    pub fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }

    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }
}

/// The plan as a person reads it.
pub fn plan_text(plan: &ExecutionPlan) -> String {
    let mut s = format!(
        "Execution plan (confidence {:.2}, about {} min):\n",
        plan.confidence_score,
        plan.total_estimated_duration.as_secs().div_ceil(60)
    );
    let order = plan.execution_order().unwrap_or_else(|| plan.phases.iter().collect());
    for (i, p) in order.iter().enumerate() {
        s.push_str(&format!("  {}. {} [{}] {}\n", i + 1, p.name, p.agent_type, p.description));
        if !p.depends_on.is_empty() {
            s.push_str(&format!("     after: {}\n", p.depends_on.join(", ")));
        }
        let files: Vec<&String> = p.files_to_create.iter().chain(&p.files_to_modify).collect();
        if !files.is_empty() {
            s.push_str(&format!("     files: {}\n", files.iter().map(|f| f.as_str()).collect::<Vec<_>>().join(", ")));
        }
    }
    if !plan.risk_factors.is_empty() {
        s.push_str(&format!("  risks: {}\n", plan.risk_factors.join("; ")));
    }
    s
}
