//! Errors of the tools. Every message is written for a model to read: it says what went wrong
//! and what to do instead, because the agent shows correctable errors to the model verbatim.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Serializable so that a call run in the sandbox by `turbo-tool-exec` comes back as the same
/// error, variant and message, as had it run here.
#[derive(Debug, thiserror::Error, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Error {
    #[error("unknown tool '{name}': the available tools are {}", available.join(", "))]
    UnknownTool { name: String, available: Vec<String> },

    #[error("bad arguments for {tool}: {reason}")]
    BadArguments { tool: String, reason: String },

    #[error("unknown operation '{operation}' of {tool}: the operations are {}", available.join(", "))]
    UnknownOperation { tool: String, operation: String, available: Vec<String> },

    #[error("{tool} may not {what} here: {why}")]
    NotPermitted { tool: String, what: String, why: String },

    #[error("path '{path}' is outside the workspace: {reason}")]
    OutsideWorkspace { path: String, reason: String },

    #[error("path '{path}' is not valid: {reason}")]
    InvalidPath { path: String, reason: String },

    #[error("path '{path}' does not exist: use fs_list to see what is there")]
    NotFound { path: String },

    #[error(
        "command refused by the deny-list rule '{rule}': {command}\nthis command will not be run; reach the goal another way"
    )]
    Denied { command: String, rule: String },

    #[error("{tool} timed out after {}s and its processes were killed: {}", after.as_secs_f64(), timeout_advice(output))]
    Timeout {
        tool: String,
        after: Duration,
        /// Whatever the process printed before it was killed (capped), so the model can see where it hung.
        output: String,
    },

    #[error("i/o error on '{path}': {source}")]
    Io {
        path: String,
        #[source]
        #[serde(with = "io_message")]
        source: std::io::Error,
    },

    #[error("the workspace is not a git repository: run git init or use fs_list")]
    NotAGitRepo,

    #[error("program '{program}' is not installed: {hint}")]
    MissingProgram { program: String, hint: String },

    #[error("cannot open workspace '{}': {reason}", path.display())]
    InvalidWorkspace { path: PathBuf, reason: String },

    /// The OS sandbox cannot run here: the call is refused rather than run unconfined.
    #[error("refused: {reason}")]
    Sandbox { reason: String },
}

fn timeout_advice(output: &str) -> String {
    let advice = "make the command finish sooner (smaller input, no interactive prompts, no servers left in the foreground) or pass a larger timeout_s";
    if output.is_empty() {
        format!("{advice}; it printed nothing")
    } else {
        format!("{advice}; output before the kill:\n{output}")
    }
}

impl Error {
    /// Whether the model caused this error and can fix it by calling again differently. The agent
    /// shows these to the model as the tool's result instead of failing the task.
    pub fn is_model_correctable(&self) -> bool {
        match self {
            Error::UnknownTool { .. }
            | Error::UnknownOperation { .. }
            | Error::NotPermitted { .. }
            | Error::BadArguments { .. }
            | Error::OutsideWorkspace { .. }
            | Error::InvalidPath { .. }
            | Error::NotFound { .. }
            | Error::Denied { .. }
            | Error::Timeout { .. }
            // The hint (git init, or fs_list instead) is addressed to the model.
            | Error::NotAGitRepo => true,
            Error::Io { .. } | Error::MissingProgram { .. }
            | Error::InvalidWorkspace { .. } | Error::Sandbox { .. } => false,
        }
    }

    pub(crate) fn bad_args(tool: &str, reason: impl Into<String>) -> Self {
        Error::BadArguments { tool: tool.to_owned(), reason: reason.into() }
    }

    pub(crate) fn io(path: impl Into<String>, source: std::io::Error) -> Self {
        Error::Io { path: path.into(), source }
    }
}

/// An i/o error crosses the sandbox as its message and kind.
mod io_message {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    #[derive(Serialize, Deserialize)]
    struct Wire {
        kind: String,
        message: String,
    }

    pub fn serialize<S: Serializer>(e: &std::io::Error, s: S) -> Result<S::Ok, S::Error> {
        let kind = match e.kind() {
            std::io::ErrorKind::NotFound => "not_found",
            std::io::ErrorKind::PermissionDenied => "permission_denied",
            std::io::ErrorKind::AlreadyExists => "already_exists",
            _ => "other",
        };
        Wire { kind: kind.to_owned(), message: e.to_string() }.serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<std::io::Error, D::Error> {
        let w = Wire::deserialize(d)?;
        let kind = match w.kind.as_str() {
            "not_found" => std::io::ErrorKind::NotFound,
            "permission_denied" => std::io::ErrorKind::PermissionDenied,
            "already_exists" => std::io::ErrorKind::AlreadyExists,
            _ => std::io::ErrorKind::Other,
        };
        Ok(std::io::Error::new(kind, w.message))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn model_mistakes_are_correctable_and_environment_failures_are_not() {
        let correctable = [
            Error::bad_args("fs_read", "missing required argument 'path'"),
            Error::NotFound { path: "a".into() },
            Error::Denied { command: "sudo ls".into(), rule: "sudo".into() },
            Error::Timeout { tool: "shell_run".into(), after: Duration::from_secs(1), output: String::new() },
            Error::NotAGitRepo,
        ];
        assert!(correctable.iter().all(Error::is_model_correctable));
        let not = [
            Error::io("a", std::io::Error::other("disk on fire")),
            Error::MissingProgram { program: "git".into(), hint: "install git".into() },
        ];
        assert!(!not.iter().any(Error::is_model_correctable));
    }

    #[test]
    fn outside_workspace_message_tells_the_model_what_to_do() {
        let e = Error::OutsideWorkspace {
            path: "../etc/passwd".into(),
            reason: "use a path relative to the workspace root".into(),
        };
        assert_eq!(
            e.to_string(),
            "path '../etc/passwd' is outside the workspace: use a path relative to the workspace root"
        );
    }

    #[test]
    fn unknown_tool_message_lists_the_available_tools() {
        let e = Error::UnknownTool { name: "fs_delete".into(), available: vec!["fs_read".into(), "fs_write".into()] };
        assert_eq!(e.to_string(), "unknown tool 'fs_delete': the available tools are fs_read, fs_write");
    }
}
