//! The tools through which model-driven agents act on a project, each confined to a task's
//! workspace.
//!
//! An agent holds a [`Toolbox`] (the eight standard tools, or a subset such as
//! [`Toolbox::read_only`] for a reviewer), shows the model its [`Toolbox::specs`], and passes
//! each requested call to [`Toolbox::call`] with a [`ToolContext`]: the [`Workspace`], the
//! per-call timeout and the output cap. Errors that the model caused
//! ([`Error::is_model_correctable`]) are meant to be shown to the model, whose messages they
//! are written for.
//!
//! The tools: `fs_read`, `fs_write`, `fs_list`, `fs_search`, `shell_run`, `python_run`,
//! `git_status`, `git_diff` (names kept from the original Python tool).
//!
//! Confinement: every call runs in the OS [`Sandbox`] of its [`ToolContext`] (bubblewrap: the
//! workspace the only writable place, no network, seccomp, rlimits and a cgroup), in its own
//! process group killed whole on timeout; when the sandbox cannot run, calls are refused
//! ([`Error::Sandbox`]). Process tools (shell, Python, git) run their program there; the file
//! tools run there as [`TOOL_EXEC`], the same code in a process of its own
//! ([`tool_exec_main`]). Inside, every path still goes through [`Workspace::resolve`], which
//! refuses paths and symlinks leading outside the root. The
//! shell deny-list ([`shell::deny`]) is a seatbelt against destructive commands, not a
//! security boundary.
//!
//! # Layout
//! - `error`: the crate's [`Error`], with messages written for a model to correct itself.
//! - `workspace`: [`Workspace`], the root and the resolution of model-supplied paths into it;
//!   the one place confinement is decided.
//! - `tool`: the [`Tool`] trait, [`ToolContext`] and [`ToolOutput`], what every tool shares.
//! - `toolbox`: [`Toolbox`], the named set of tools and the checked entry point.
//! - `schema`: validation of arguments against a tool's JSON schema and typed argument reading,
//!   so tools and the toolbox report bad arguments the same way.
//! - `process`: running child processes (PATH lookup, environment scrubbing, process groups,
//!   capped concurrent capture), shared by the shell, Python and git tools.
//! - `confined`: the file tools' calls sent to [`TOOL_EXEC`] in the sandbox, and that
//!   program's side.
//! - `sandbox`: [`Sandbox`], the bubblewrap command line every process goes through, its
//!   host check, and the refusal when it cannot run; `seccomp` builds its filter, `cgroup`
//!   its per-call cgroup.
//! - `fs`: the file tools `fs_read`, `fs_write` (atomic), `fs_list` and `fs_search`
//!   (gitignore-aware), one submodule each.
//! - `shell`: `shell_run` and its deny-list (`shell::deny`).
//! - `python`: `python_run`.
//! - `git`: `git_status` and `git_diff`.

mod advanced_fs;
mod catalogue;
mod cgroup;
mod cloud_services;
mod confined;
mod error;
mod fs;
mod git;
mod git_ops;
mod maven;
mod package_manager;
mod process;
mod proxy;
mod python;
pub mod sandbox;
mod schema;
mod seccomp;
pub mod shell;
mod tool;
mod toolbox;
mod workspace;

pub use advanced_fs::{BACKUP_DIR, advanced_fs};
pub use catalogue::Catalogued;
pub use cloud_services::CloudServices;
pub use confined::tool_exec_main;
pub use error::{Error, Result};
pub use fs::{FsList, FsRead, FsSearch, FsWrite};
pub use git::{GitDiff, GitStatus};
pub use git_ops::git_ops;
pub use package_manager::PackageManager;
pub use process::ENV_ALLOW_LIST;
pub use proxy::{PROXY_PORT, ProxyPolicy};
pub use python::PythonRun;
pub use sandbox::{CloudAccess, Sandbox, SandboxMode, SandboxPolicy, TOOL_EXEC};
pub use shell::ShellRun;
pub use tool::{OutputSink, OutputStream, ResourceEstimate, Tool, ToolContext, ToolOutput};
pub use toolbox::{READ_ONLY_TOOLS, ToolMetrics, Toolbox};
pub use workspace::Workspace;

/// Re-exported so users of the [`Tool`] trait need not depend on `turbo-core` for these.
pub use turbo_core::tool::{RiskLevel, ToolCategory, ToolSpec};
