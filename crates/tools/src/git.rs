//! `git_status` and `git_diff`: read-only views of the workspace's repository.

use std::ffi::OsString;

use async_trait::async_trait;
use serde_json::{Value, json};
use turbo_core::tool::{RiskLevel, ToolCategory};

use crate::error::{Error, Result};
use crate::process::{self, Finished, Run};
use crate::schema::{self, Args};
use crate::tool::{Tool, ToolContext, ToolOutput};

/// Runs git in the workspace root, which must be in a repository (checked first: outside one,
/// `git diff` would quietly turn into `git diff --no-index` and print its usage).
pub(crate) async fn git(tool: &'static str, args: &[&str], ctx: &ToolContext) -> Result<Finished> {
    git_raw(tool, &["rev-parse", "--git-dir"], ctx).await?;
    git_raw(tool, args, ctx).await
}

/// Runs one git command. The workspace itself must be (inside) the repository: discovery stops
/// at the root's parent so that a workspace nested in some other checkout never reports on, or
/// reveals, that outer repository.
pub(crate) async fn git_raw(tool: &'static str, args: &[&str], ctx: &ToolContext) -> Result<Finished> {
    let root = ctx.workspace.root();
    let mut argv: Vec<OsString> = vec!["--no-pager".into(), "-c".into()];
    // Containers often mount the workspace with another owner; git would refuse it as dubious.
    let mut safe = OsString::from("safe.directory=");
    safe.push(root);
    argv.push(safe);
    // The repository's own configuration must not run programs (it is the model's to write):
    // no fsmonitor, no hooks, no pager, no external diff. The sandbox confines them anyway.
    for setting in ["color.ui=never", "core.quotepath=off", "core.fsmonitor=false", "core.hooksPath=/dev/null"] {
        argv.push("-c".into());
        argv.push(setting.into());
    }
    argv.extend(args.iter().map(OsString::from));
    let ceiling = root.parent().unwrap_or(root).as_os_str().to_owned();
    let finished = process::run(Run {
        extra_env: vec![
            ("GIT_CEILING_DIRECTORIES", ceiling),
            // Untranslated messages, so "not a git repository" can be recognised.
            ("LC_ALL", "C".into()),
            ("GIT_TERMINAL_PROMPT", "0".into()),
            // A status must not take the index lock a concurrent writer might need.
            ("GIT_OPTIONAL_LOCKS", "0".into()),
        ],
        ..Run::in_workspace(ctx, tool, "git", "install git, or use fs_list and fs_read to inspect the files", argv)
    })
    .await?;
    if finished.status.code() == Some(128) && finished.stderr.text().to_lowercase().contains("not a git repository") {
        return Err(Error::NotAGitRepo);
    }
    Ok(finished)
}

/// `git status --porcelain=v1 -b` of the workspace.
#[derive(Clone, Copy, Debug, Default)]
pub struct GitStatus;

#[async_trait]
impl Tool for GitStatus {
    fn name(&self) -> &'static str {
        "git_status"
    }

    fn description(&self) -> &'static str {
        "Show the branch and the changed, staged and untracked files of the workspace's git \
         repository (git status --porcelain=v1 -b: '## branch' then one 'XY path' line per file)."
    }

    fn parameters(&self) -> Value {
        schema::object(json!({}), &[])
    }

    fn risk(&self) -> RiskLevel {
        RiskLevel::Safe
    }

    fn mutating(&self) -> bool {
        false
    }

    fn category(&self) -> ToolCategory {
        ToolCategory::VersionControl
    }

    async fn call(&self, _args: &Value, ctx: &ToolContext) -> Result<ToolOutput> {
        let finished = git("git_status", &["status", "--porcelain=v1", "-b"], ctx).await?;
        if !finished.status.success() {
            return Ok(finished.into_output(ctx.output_cap));
        }
        let (mut content, truncated) = finished.stdout.render(ctx.output_cap);
        if content.lines().all(|line| line.starts_with("##")) {
            content.push_str("(working tree clean)");
        }
        Ok(ToolOutput {
            duration: finished.duration,
            exit_code: finished.status.code(),
            ..ToolOutput::ok(content).truncated(truncated)
        })
    }
}

/// `git diff` of the workspace, of one path, or of the staged changes.
#[derive(Clone, Copy, Debug, Default)]
pub struct GitDiff;

#[async_trait]
impl Tool for GitDiff {
    fn name(&self) -> &'static str {
        "git_diff"
    }

    fn description(&self) -> &'static str {
        "Show the workspace's uncommitted changes as a unified diff (git diff). Set staged to \
         see what is staged instead, and path to limit it to one file or directory. Untracked \
         files are not in the diff: see git_status."
    }

    fn parameters(&self) -> Value {
        schema::object(
            json!({
                "path": {"type": "string", "description": "file or directory to limit the diff to, relative to the workspace root"},
                "staged": {"type": "boolean", "description": "diff the staged changes (git diff --staged) instead of the unstaged ones (default false)"},
            }),
            &[],
        )
    }

    fn risk(&self) -> RiskLevel {
        RiskLevel::Safe
    }

    fn mutating(&self) -> bool {
        false
    }

    fn category(&self) -> ToolCategory {
        ToolCategory::VersionControl
    }

    async fn call(&self, args: &Value, ctx: &ToolContext) -> Result<ToolOutput> {
        let args = Args::new("git_diff", args);
        let staged = args.opt_bool("staged")?.unwrap_or(false);
        // Resolved for confinement; git gets it relative to its cwd, the workspace root.
        let path = args
            .opt_string("path")?
            .map(|p| ctx.workspace.resolve(p).map(|abs| ctx.workspace.relative(&abs)))
            .transpose()?;
        let mut argv = vec!["diff", "--no-color", "--no-ext-diff"];
        if staged {
            argv.push("--staged");
        }
        if let Some(path) = &path {
            argv.extend(["--", path.as_str()]);
        }
        let finished = git("git_diff", &argv, ctx).await?;
        if !finished.status.success() {
            return Ok(finished.into_output(ctx.output_cap));
        }
        let (mut content, truncated) = finished.stdout.render(ctx.output_cap);
        if content.is_empty() {
            content = if staged {
                "no staged changes".to_owned()
            } else {
                "no unstaged changes (new files appear only once added: see git_status; pass staged=true for staged changes)".to_owned()
            };
        }
        Ok(ToolOutput {
            duration: finished.duration,
            exit_code: finished.status.code(),
            ..ToolOutput::ok(content).truncated(truncated)
        })
    }
}
