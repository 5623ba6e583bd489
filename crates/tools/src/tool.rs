//! What a tool is: the trait every tool implements, what a call gets and what it returns.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use turbo_core::tool::{RiskLevel, ToolCategory, ToolSpec};

use crate::error::Result;
use crate::sandbox::Sandbox;
use crate::workspace::Workspace;

/// Which stream a piece of live output came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OutputStream {
    Stdout,
    Stderr,
}

/// Where a process tool's output goes as it is printed, besides the call's result. Best
/// effort: a piece that finds the channel full is dropped (the result still holds the capped
/// output), so a slow reader never holds up the process nor makes the runner buffer.
pub type OutputSink = tokio::sync::mpsc::Sender<(OutputStream, Vec<u8>)>;

/// What every call gets: where it may act and how much it may take.
#[derive(Clone)]
pub struct ToolContext {
    pub workspace: Workspace,
    /// Wall-clock limit per call; a process tool's own `timeout_s` can only lower it.
    pub timeout: Duration,
    /// Bytes of output shown to the model; the rest is dropped and `truncated` is set.
    pub output_cap: usize,
    /// Where every process a tool starts runs.
    pub sandbox: Arc<Sandbox>,
    /// Live output of the call's processes, when someone watches it.
    pub output: Option<OutputSink>,
    /// The model tools that write text ask (git_ops' generate_commit_message); None: they say
    /// no model is configured.
    pub model: Option<Arc<dyn turbo_llm::ChatModel>>,
}

impl std::fmt::Debug for ToolContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ToolContext")
            .field("workspace", &self.workspace)
            .field("timeout", &self.timeout)
            .field("output_cap", &self.output_cap)
            .field("model", &self.model.as_ref().map(|m| m.settings().model.clone()))
            .finish_non_exhaustive()
    }
}

impl ToolContext {
    pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);
    pub const DEFAULT_OUTPUT_CAP: usize = 16 * 1024;

    /// A context with the default timeout (60 s), output cap (16 KiB) and sandbox policy.
    pub fn new(workspace: Workspace) -> Self {
        Self {
            workspace,
            timeout: Self::DEFAULT_TIMEOUT,
            output_cap: Self::DEFAULT_OUTPUT_CAP,
            sandbox: Sandbox::shared_default(),
            output: None,
            model: None,
        }
    }

    /// The same context with a model for the tools that write text.
    pub fn with_model(mut self, model: Arc<dyn turbo_llm::ChatModel>) -> Self {
        self.model = Some(model);
        self
    }

    /// The same context sending its processes' output to `sink` as it is printed.
    pub fn with_output(mut self, sink: OutputSink) -> Self {
        self.output = Some(sink);
        self
    }

    pub fn with_sandbox(mut self, sandbox: Arc<Sandbox>) -> Self {
        self.sandbox = sandbox;
        self
    }

    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    pub fn with_output_cap(mut self, output_cap: usize) -> Self {
        self.output_cap = output_cap;
        self
    }
}

/// The result of a call that ran. A command that ran and failed is an output with
/// `success == false`, not an error: the model needs to read why it failed.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ToolOutput {
    /// What the model reads.
    pub content: String,
    pub success: bool,
    /// For process tools: the exit code, `None` when killed by a signal.
    pub exit_code: Option<i32>,
    /// Whether `content` leaves something out because of the output cap or a result limit.
    pub truncated: bool,
    /// Workspace-relative paths the call wrote.
    pub files_changed: Vec<String>,
    /// Wall time of the call.
    pub duration: Duration,
}

impl ToolOutput {
    /// A successful output with this content.
    pub fn ok(content: impl Into<String>) -> Self {
        Self { content: content.into(), success: true, ..Self::default() }
    }

    pub(crate) fn truncated(mut self, truncated: bool) -> Self {
        self.truncated = truncated;
        self
    }
}

/// What a call is expected to take, before it runs (the spec's ResourceEstimate).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct ResourceEstimate {
    pub cpu_seconds: f64,
    pub memory_mb: u64,
    pub disk_mb: u64,
}

impl std::fmt::Display for ResourceEstimate {
    /// `about 0.5 s of CPU, 32 MB of memory, 1 MB of disk`, for the person asked to approve.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "about {} s of CPU, {} MB of memory, {} MB of disk", self.cpu_seconds, self.memory_mb, self.disk_mb)
    }
}

impl Default for ResourceEstimate {
    /// The spec's default: a second of CPU, 10 MB, no disk.
    fn default() -> Self {
        Self { cpu_seconds: 1.0, memory_mb: 10, disk_mb: 0 }
    }
}

/// A capability the model can invoke. Implementations validate nothing about argument shapes
/// that the schema already states when called through [`crate::Toolbox::call`], but must not
/// panic on any input when called directly.
#[async_trait]
pub trait Tool: Send + Sync {
    fn name(&self) -> &'static str;
    fn description(&self) -> &'static str;
    /// JSON schema of the arguments: an object with `additionalProperties: false` and the
    /// required keys listed.
    fn parameters(&self) -> serde_json::Value;
    fn risk(&self) -> RiskLevel;
    /// Whether the call can change the workspace or the world (so needs approval policies).
    fn mutating(&self) -> bool;
    async fn call(&self, args: &serde_json::Value, ctx: &ToolContext) -> Result<ToolOutput>;

    fn category(&self) -> ToolCategory {
        ToolCategory::FileSystem
    }

    /// The risk of this call: a tool of several operations answers per operation; the
    /// approval policy decides on this one.
    fn risk_of(&self, _args: &serde_json::Value) -> RiskLevel {
        self.risk()
    }

    /// Whether this call can change anything (a checkpoint is taken before it).
    fn mutating_of(&self, _args: &serde_json::Value) -> bool {
        self.mutating()
    }

    /// What this call is expected to take.
    fn estimate(&self, _args: &serde_json::Value) -> ResourceEstimate {
        ResourceEstimate::default()
    }

    /// Checks what the schema cannot state (a catalogue tool's operation and its parameters),
    /// so that a call that could never run is refused before anyone is asked to approve it.
    fn validate(&self, _args: &serde_json::Value) -> Result<()> {
        Ok(())
    }

    /// Whether this runner lets the call do what it must (the spec's check_permissions): a
    /// call that could never work here, such as a cloud call from a sandbox that reaches no
    /// network, is refused with [`crate::Error::NotPermitted`] saying what a person would
    /// configure, before anyone is asked to approve it.
    fn check_permissions(&self, _args: &serde_json::Value, _ctx: &ToolContext) -> Result<()> {
        Ok(())
    }

    /// The tool as a model sees it.
    fn spec(&self) -> ToolSpec {
        ToolSpec {
            name: self.name().to_owned(),
            description: self.description().to_owned(),
            parameters: self.parameters(),
        }
    }
}
