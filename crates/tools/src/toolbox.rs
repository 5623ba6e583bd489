//! The set of tools an agent may call, and the one entry point that checks a call's arguments.

use std::sync::Arc;
use std::time::Instant;

use turbo_core::tool::ToolSpec;

use crate::error::{Error, Result};
use crate::fs::{FsList, FsRead, FsSearch, FsWrite};
use crate::git::{GitDiff, GitStatus};
use crate::python::PythonRun;
use crate::schema;
use crate::shell::ShellRun;
use crate::tool::{Tool, ToolContext, ToolOutput};

/// Tools that change nothing, for agents that must only look (a reviewer).
pub const READ_ONLY_TOOLS: &[&str] = &["fs_read", "fs_list", "fs_search", "git_status", "git_diff"];

/// Named tools in a fixed order (the order models see them in).
#[derive(Clone, Default)]
pub struct Toolbox {
    // A handful of tools: a vector keeps the order and a linear lookup costs nothing.
    tools: Vec<Arc<dyn Tool>>,
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

    /// The eight standard tools.
    pub fn standard() -> Self {
        Self::new()
            .with(Arc::new(FsRead))
            .with(Arc::new(FsWrite))
            .with(Arc::new(FsList))
            .with(Arc::new(FsSearch))
            .with(Arc::new(ShellRun))
            .with(Arc::new(PythonRun))
            .with(Arc::new(GitStatus))
            .with(Arc::new(GitDiff))
    }

    /// The standard tools that change nothing.
    pub fn read_only() -> Self {
        Self::standard().only(READ_ONLY_TOOLS).unwrap_or_default()
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
        let mut subset = Self::new();
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

    /// The named tool, once `args` are checked against its schema: what a call would run,
    /// for deciding whether it may before it does.
    pub fn checked(&self, name: &str, args: &serde_json::Value) -> Result<Arc<dyn Tool>> {
        let tool = self.get(name).ok_or_else(|| self.unknown(name))?;
        schema::validate(name, &tool.parameters(), args)?;
        Ok(tool)
    }

    /// Calls a tool after checking the arguments against its schema, so a tool never sees a
    /// missing key, an unknown key or a wrongly typed value. `duration` is the whole call.
    pub async fn call(&self, name: &str, args: &serde_json::Value, ctx: &ToolContext) -> Result<ToolOutput> {
        let tool = self.checked(name, args)?;
        let started = Instant::now();
        let result = tool.call(args, ctx).await;
        let duration = started.elapsed();
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
    fn standard_has_the_eight_tools_in_order() {
        assert_eq!(
            Toolbox::standard().names(),
            ["fs_read", "fs_write", "fs_list", "fs_search", "shell_run", "python_run", "git_status", "git_diff"]
        );
    }

    #[test]
    fn read_only_has_no_mutating_tool() {
        let tools = Toolbox::read_only();
        assert_eq!(tools.names(), READ_ONLY_TOOLS);
        assert!(tools.tools.iter().all(|t| !t.mutating()));
    }

    #[test]
    fn only_refuses_an_unknown_name() {
        let err = Toolbox::standard().only(&["fs_read", "rm"]).unwrap_err();
        assert!(matches!(err, Error::UnknownTool { ref name, .. } if name == "rm"));
    }

    #[test]
    fn with_replaces_a_tool_of_the_same_name() {
        let tools = Toolbox::standard().with(Arc::new(FsRead));
        assert_eq!(tools.len(), 8);
        assert_eq!(tools.names()[0], "fs_read");
    }
}
