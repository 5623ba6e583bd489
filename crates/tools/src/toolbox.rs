//! The set of tools an agent may call, and the one entry point that checks a call's arguments.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use serde::Serialize;
use turbo_core::tool::ToolSpec;

use crate::advanced_fs::advanced_fs;
use crate::cloud_services::CloudServices;
use crate::confined::InSandbox;
use crate::error::{Error, Result};
use crate::fs::{FsList, FsRead, FsSearch, FsWrite};
use crate::git::{GitDiff, GitStatus};
use crate::git_ops::git_ops;
use crate::package_manager::PackageManager;
use crate::python::PythonRun;
use crate::schema;
use crate::shell::ShellRun;
use crate::tool::{Tool, ToolContext, ToolOutput};

/// Tools for agents that must only look (a reviewer): they change nothing, or (git_ops) only
/// their operations that change nothing are permitted.
pub const READ_ONLY_TOOLS: &[&str] =
    &["fs_read", "fs_list", "fs_search", "git_status", "git_diff", "advanced_fs", "git_ops"];

/// A tool's record of calls, as the spec's `update_metrics` keeps it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct ToolMetrics {
    pub execution_count: u64,
    /// An exponential moving average of success (alpha 0.1), the first call's outcome at first.
    pub success_rate: f64,
    /// Of the calls that ran, the mean wall time in milliseconds.
    pub mean_ms: f64,
}

impl ToolMetrics {
    /// Weight of the newest call in the success rate.
    const ALPHA: f64 = 0.1;

    fn update(&mut self, success: bool, elapsed_ms: f64) {
        let outcome = if success { 1.0 } else { 0.0 };
        self.execution_count += 1;
        self.success_rate = if self.execution_count == 1 {
            outcome
        } else {
            Self::ALPHA * outcome + (1.0 - Self::ALPHA) * self.success_rate
        };
        self.mean_ms += (elapsed_ms - self.mean_ms) / self.execution_count as f64;
    }
}

/// Named tools in a fixed order (the order models see them in).
#[derive(Clone, Default)]
pub struct Toolbox {
    // A handful of tools: a vector keeps the order and a linear lookup costs nothing.
    tools: Vec<Arc<dyn Tool>>,
    /// Calls that would change something are refused ([`Error::NotPermitted`]).
    look_only: bool,
    /// Per tool name, shared by the clones of this toolbox.
    metrics: Arc<Mutex<HashMap<&'static str, ToolMetrics>>>,
}

impl std::fmt::Debug for Toolbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.names()).finish()
    }
}

impl Toolbox {
    /// An empty toolbox, to fill with [`Toolbox::with`].
    pub fn new() -> Self {
        Self::default()
    }

    /// The standard tools: the foundation's eight and the catalogue's `advanced_fs`,
    /// `git_ops`, `package_manager` and `cloud_services`. The file tools run inside the
    /// sandbox like the rest ([`crate::confined`]).
    pub fn standard() -> Self {
        fn confined(tool: impl Tool + 'static) -> Arc<dyn Tool> {
            Arc::new(InSandbox(Arc::new(tool)))
        }
        Self::new()
            .with(confined(FsRead))
            .with(confined(FsWrite))
            .with(confined(FsList))
            .with(confined(FsSearch))
            .with(Arc::new(ShellRun))
            .with(Arc::new(PythonRun))
            .with(Arc::new(GitStatus))
            .with(Arc::new(GitDiff))
            .with(confined(advanced_fs()))
            .with(Arc::new(git_ops()))
            .with(Arc::new(PackageManager))
            .with(Arc::new(CloudServices))
    }

    /// The file tools as code of this process: what `turbo-tool-exec` runs inside the sandbox.
    pub(crate) fn in_process_file_tools() -> Self {
        Self::new()
            .with(Arc::new(FsRead))
            .with(Arc::new(FsWrite))
            .with(Arc::new(FsList))
            .with(Arc::new(FsSearch))
            .with(Arc::new(advanced_fs()))
            .with(Arc::new(crate::maven::PomEdit))
    }

    /// The standard tools for looking only: [`READ_ONLY_TOOLS`], with every call that would
    /// change something refused.
    pub fn read_only() -> Self {
        Self { look_only: true, ..Self::standard().only(READ_ONLY_TOOLS).unwrap_or_default() }
    }

    /// How each tool's calls went so far (tools not called yet are absent).
    pub fn metrics(&self) -> HashMap<&'static str, ToolMetrics> {
        self.metrics.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Adds a tool, replacing one of the same name in place.
    pub fn with(mut self, tool: Arc<dyn Tool>) -> Self {
        match self.tools.iter_mut().find(|t| t.name() == tool.name()) {
            Some(slot) => *slot = tool,
            None => self.tools.push(tool),
        }
        self
    }

    /// The named tools, in the order given; an unknown name is an error.
    pub fn only(&self, names: &[&str]) -> Result<Self> {
        let mut subset = Self { tools: Vec::new(), look_only: self.look_only, metrics: self.metrics.clone() };
        for name in names {
            let tool = self.get(name).ok_or_else(|| self.unknown(name))?;
            subset = subset.with(tool);
        }
        Ok(subset)
    }

    pub fn names(&self) -> Vec<&'static str> {
        self.tools.iter().map(|t| t.name()).collect()
    }

    pub fn specs(&self) -> Vec<ToolSpec> {
        self.tools.iter().map(|t| t.spec()).collect()
    }

    pub fn get(&self, name: &str) -> Option<Arc<dyn Tool>> {
        self.tools.iter().find(|t| t.name() == name).cloned()
    }

    pub fn len(&self) -> usize {
        self.tools.len()
    }

    pub fn is_empty(&self) -> bool {
        self.tools.is_empty()
    }

    /// The named tool, once `args` are checked against its schema and by the tool (a
    /// catalogue tool's operation and its parameters): what a call would run, for deciding
    /// whether it may before it does.
    pub fn checked(&self, name: &str, args: &serde_json::Value) -> Result<Arc<dyn Tool>> {
        let tool = self.get(name).ok_or_else(|| self.unknown(name))?;
        schema::validate(name, &tool.parameters(), args)?;
        tool.validate(args)?;
        if self.look_only && tool.mutating_of(args) {
            return Err(Error::NotPermitted {
                tool: name.to_string(),
                what: "change anything".into(),
                why: "this agent may only look; say what should change in your answer instead".into(),
            });
        }
        Ok(tool)
    }

    /// Calls a tool after checking the arguments against its schema, so a tool never sees a
    /// missing key, an unknown key or a wrongly typed value. `duration` is the whole call.
    pub async fn call(&self, name: &str, args: &serde_json::Value, ctx: &ToolContext) -> Result<ToolOutput> {
        let tool = self.checked(name, args)?;
        tool.check_permissions(args, ctx)?;
        let started = Instant::now();
        let result = tool.call(args, ctx).await;
        let duration = started.elapsed();
        let success = result.as_ref().is_ok_and(|o| o.success);
        self.metrics
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(tool.name())
            .or_default()
            .update(success, duration.as_secs_f64() * 1e3);
        match &result {
            Ok(output) => tracing::debug!(
                tool = name,
                success = output.success,
                exit_code = output.exit_code,
                truncated = output.truncated,
                ?duration,
                "tool call finished"
            ),
            Err(error) => tracing::debug!(tool = name, %error, ?duration, "tool call failed"),
        }
        result.map(|output| ToolOutput { duration, ..output })
    }

    fn unknown(&self, name: &str) -> Error {
        Error::UnknownTool { name: name.to_owned(), available: self.names().into_iter().map(str::to_owned).collect() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn standard_has_the_foundation_tools_then_the_catalogue() {
        assert_eq!(
            Toolbox::standard().names(),
            [
                "fs_read",
                "fs_write",
                "fs_list",
                "fs_search",
                "shell_run",
                "python_run",
                "git_status",
                "git_diff",
                "advanced_fs",
                "git_ops",
                "package_manager",
                "cloud_services"
            ]
        );
    }

    #[test]
    fn read_only_refuses_every_call_that_would_change_something() {
        let tools = Toolbox::read_only();
        assert_eq!(tools.names(), READ_ONLY_TOOLS);
        assert!(tools.checked("git_ops", &serde_json::json!({"operation": "log"})).is_ok());
        let err = tools
            .checked("git_ops", &serde_json::json!({"operation": "commit", "parameters": {"message": "m"}}))
            .err()
            .expect("a commit is refused");
        assert!(matches!(err, Error::NotPermitted { .. }) && err.is_model_correctable(), "{err}");
        let commit = serde_json::json!({"operation": "commit", "parameters": {"message": "m"}});
        assert!(Toolbox::standard().checked("git_ops", &commit).is_ok());
    }

    #[test]
    fn metrics_follow_the_specs_moving_average() {
        let mut m = ToolMetrics::default();
        m.update(false, 10.0);
        assert_eq!((m.execution_count, m.success_rate), (1, 0.0));
        m.update(true, 30.0);
        assert!((m.success_rate - 0.1).abs() < 1e-9 && (m.mean_ms - 20.0).abs() < 1e-9, "{m:?}");
        m.update(true, 20.0);
        assert!((m.success_rate - 0.19).abs() < 1e-9, "{m:?}");
    }

    #[test]
    fn only_refuses_an_unknown_name() {
        let err = Toolbox::standard().only(&["fs_read", "rm"]).unwrap_err();
        assert!(matches!(err, Error::UnknownTool { ref name, .. } if name == "rm"));
    }

    #[test]
    fn with_replaces_a_tool_of_the_same_name() {
        let tools = Toolbox::standard().with(Arc::new(FsRead));
        assert_eq!(tools.len(), 12);
        assert_eq!(tools.names()[0], "fs_read");
    }
}
