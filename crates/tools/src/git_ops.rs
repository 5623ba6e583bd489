//! `git_ops`: the spec's git tool. Its operations run the git CLI in the sandbox, in the
//! workspace's repository, like `git_status` and `git_diff` (which are its `status` and `diff`).
//!
//! What it will not do: force anything (no force push, no reset --hard, no history rewrite),
//! or reach a network remote unless `[sandbox] network` allows it (a remote inside the
//! workspace always works). `generate_commit_message` asks the model of the call's context
//! (the runner's coder model) to describe the staged changes.

use std::collections::BTreeMap;
use std::sync::{Arc, LazyLock};

use serde_json::{Value, json};
use turbo_core::tool::{RiskLevel, ToolCategory};

use crate::catalogue::{Catalogued, Operation, PerCall, describe, operation_tool};
use crate::error::{Error, Result};
use crate::git::{GitDiff, GitStatus, git};
use crate::process::Finished;
use crate::schema::{self, Args};
use crate::tool::{Tool, ToolContext, ToolOutput};

/// Who commits when the repository names nobody.
const FALLBACK_IDENTITY: [&str; 4] = ["-c", "user.name=turbo-coder", "-c", "user.email=turbo-coder@localhost"];

fn operations() -> Vec<Operation> {
    let op = |name: &'static str, tool: Arc<dyn Tool>| Operation { name, tool };
    vec![
        op("status", Arc::new(GitStatus)),
        op("diff", Arc::new(GitDiff)),
        op("log", Arc::new(Log)),
        op("add", Arc::new(Add)),
        op("commit", Arc::new(Commit)),
        op("create_branch", Arc::new(CreateBranch)),
        op("switch_branch", Arc::new(SwitchBranch)),
        op("merge", Arc::new(Merge)),
        op("pull", Arc::new(Pull)),
        op("push", Arc::new(Push)),
        op("resolve_conflicts", Arc::new(ResolveConflicts)),
        op("analyze_history", Arc::new(AnalyzeHistory)),
        op("generate_commit_message", Arc::new(CommitMessage)),
    ]
}

static DESCRIPTION: LazyLock<String> = LazyLock::new(|| {
    describe(
        "Git operations on the workspace's repository: look (status, diff, log, analyze_history), record (add, commit), branch (create_branch, switch_branch, merge, resolve_conflicts) and sync with a configured remote (pull, push; never forced).",
        &operations(),
    )
});

/// The `git_ops` tool.
pub fn git_ops() -> Catalogued {
    Catalogued::new("git_ops", &DESCRIPTION, ToolCategory::VersionControl, operations())
}

/// The model's view of a finished git command: its output, or, when it failed, the status and
/// both streams.
fn output(finished: Finished, ctx: &ToolContext, empty: &str) -> ToolOutput {
    if !finished.status.success() {
        return finished.into_output(ctx.output_cap);
    }
    let (mut content, truncated) = finished.stdout.render(ctx.output_cap);
    let (err, _) = finished.stderr.render(ctx.output_cap / 4);
    if content.trim().is_empty() {
        // Many git commands report on stderr (push, switch, pull).
        content = if err.trim().is_empty() { empty.to_string() } else { err };
    }
    ToolOutput {
        duration: finished.duration,
        exit_code: finished.status.code(),
        ..ToolOutput::ok(content).truncated(truncated)
    }
}

/// Workspace paths as git should get them: checked, relative to the root.
fn paths(ctx: &ToolContext, tool: &'static str, values: &[Value]) -> Result<Vec<String>> {
    if values.is_empty() {
        return Err(Error::bad_args(tool, "paths is empty: list at least one file or directory ('.' for all)"));
    }
    values
        .iter()
        .map(|v| {
            let p = v.as_str().ok_or_else(|| Error::bad_args(tool, "paths must be strings"))?;
            Ok(ctx.workspace.relative(&ctx.workspace.resolve(p)?))
        })
        .collect()
}

/// A branch or remote name git accepts, that cannot be read as an option.
fn ref_name<'a>(tool: &'static str, key: &str, value: &'a str) -> Result<&'a str> {
    let ok = !value.is_empty()
        && !value.starts_with('-')
        && !value.contains("..")
        && value.chars().all(|c| c.is_ascii_alphanumeric() || "/._-".contains(c));
    if ok {
        Ok(value)
    } else {
        Err(Error::bad_args(
            tool,
            format!("'{value}' is not a usable {key}: use letters, digits, '/', '.', '_' and '-'"),
        ))
    }
}

operation_tool!(
    Log,
    "git_ops.log",
    ToolCategory::VersionControl,
    RiskLevel::Safe,
    false,
    "Show recent commits, newest first: short hash, date, author and subject.",
    async
);
operation_tool!(
    Add,
    "git_ops.add",
    ToolCategory::VersionControl,
    RiskLevel::Low,
    true,
    "Stage files or directories for the next commit.",
    async
);
operation_tool!(
    Commit,
    "git_ops.commit",
    ToolCategory::VersionControl,
    RiskLevel::Low,
    true,
    "Commit what is staged (or, with all, every tracked change) with a message.",
    async
);
operation_tool!(
    CreateBranch,
    "git_ops.create_branch",
    ToolCategory::VersionControl,
    RiskLevel::Low,
    true,
    "Create a branch at HEAD or at start_point, without switching to it.",
    async
);
operation_tool!(
    SwitchBranch,
    "git_ops.switch_branch",
    ToolCategory::VersionControl,
    RiskLevel::Medium,
    true,
    "Switch the working tree to a branch (create makes it first).",
    async
);
operation_tool!(
    Merge,
    "git_ops.merge",
    ToolCategory::VersionControl,
    RiskLevel::Medium,
    true,
    "Merge a branch into the current one; conflicts are left for resolve_conflicts.",
    async
);
operation_tool!(
    Pull,
    "git_ops.pull",
    ToolCategory::VersionControl,
    RiskLevel::High,
    true,
    "Fetch and merge from a configured remote (default origin), never rebasing.",
    async
);
operation_tool!(
    Push,
    "git_ops.push",
    ToolCategory::VersionControl,
    RiskLevel::High,
    true,
    "Push a branch to a configured remote (default origin); never forced.",
    async
);
operation_tool!(
    ResolveConflicts,
    "git_ops.resolve_conflicts",
    ToolCategory::VersionControl,
    RiskLevel::Medium,
    true,
    "List the conflicted files with their conflict count, or resolve one by taking a side (ours or theirs) and staging it.",
    async
);
operation_tool!(
    AnalyzeHistory,
    "git_ops.analyze_history",
    ToolCategory::VersionControl,
    RiskLevel::Safe,
    false,
    "Summarise the history: commits, authors, the most changed files, first and last dates.",
    async
);
impl PerCall for Log {}
impl PerCall for Add {}
impl PerCall for Commit {}
impl PerCall for CreateBranch {}
impl PerCall for SwitchBranch {}
impl PerCall for Merge {}
impl PerCall for Pull {}
impl PerCall for Push {}
impl PerCall for AnalyzeHistory {}

operation_tool!(
    CommitMessage,
    "git_ops.generate_commit_message",
    ToolCategory::VersionControl,
    RiskLevel::Safe,
    false,
    "Draft a commit message for the staged changes (or, with nothing staged, all uncommitted ones) with the model: a subject line, a blank line, a short body.",
    async
);
impl PerCall for CommitMessage {}

/// Characters of diff the model reads for a commit message.
const MESSAGE_DIFF_CHARS: usize = 12_000;

impl CommitMessage {
    fn schema() -> Value {
        schema::object(json!({}), &[])
    }

    async fn run(&self, _args: &Args<'_>, ctx: &ToolContext) -> Result<ToolOutput> {
        let Some(model) = &ctx.model else {
            return Ok(ToolOutput {
                content: "no model is configured for the tool-runner: write the commit message yourself".into(),
                ..ToolOutput::default()
            });
        };
        let mut diff = git(Self::NAME, &["diff", "--staged", "--no-color", "--no-ext-diff"], ctx).await?.stdout.text();
        if diff.trim().is_empty() {
            diff = git(Self::NAME, &["diff", "HEAD", "--no-color", "--no-ext-diff"], ctx).await?.stdout.text();
        }
        if diff.trim().is_empty() {
            return Ok(ToolOutput {
                content: "no changes to describe: stage or make some first".into(),
                ..ToolOutput::default()
            });
        }
        let prompt = format!(
            "Write a git commit message for this diff: a subject line of at most 72 characters in the imperative mood, a blank line, then at most five short lines saying what changed and why. Answer with the message only.\n\n{}",
            turbo_core::event::clip(&diff, MESSAGE_DIFF_CHARS)
        );
        let request = turbo_llm::ChatRequest::new(vec![turbo_llm::Message::user(prompt)]);
        let reply = match model.chat(request, None).await {
            Ok(reply) => reply,
            Err(e) => {
                return Ok(ToolOutput {
                    content: format!("the model could not write it ({e}): write the commit message yourself"),
                    ..ToolOutput::default()
                });
            }
        };
        let message = reply.message.content.trim().trim_matches('`').trim().to_string();
        if message.is_empty() {
            return Ok(ToolOutput {
                content: "the model answered with an empty message".into(),
                ..ToolOutput::default()
            });
        }
        Ok(ToolOutput::ok(message))
    }
}

impl PerCall for ResolveConflicts {
    /// Listing changes nothing; taking a side does.
    fn call_risk(&self, args: &Value) -> Option<RiskLevel> {
        Some(if args.get("path").is_some_and(|p| !p.is_null()) { RiskLevel::Medium } else { RiskLevel::Safe })
    }
    fn call_mutates(&self, args: &Value) -> Option<bool> {
        Some(args.get("path").is_some_and(|p| !p.is_null()))
    }
}

impl Log {
    fn schema() -> Value {
        schema::object(
            json!({
                "max_count": {"type": "integer", "minimum": 1, "description": "commits to show (default 20)"},
                "path": {"type": "string", "description": "only commits touching this file or directory"},
            }),
            &[],
        )
    }

    async fn run(&self, args: &Args<'_>, ctx: &ToolContext) -> Result<ToolOutput> {
        let n = args.opt_positive("max_count")?.unwrap_or(20).to_string();
        let mut argv = vec!["log", "-n", n.as_str(), "--date=short", "--format=%h %ad %an%x09%s"];
        let path = args
            .opt_string("path")?
            .map(|p| ctx.workspace.resolve(p).map(|a| ctx.workspace.relative(&a)))
            .transpose()?;
        if let Some(path) = &path {
            argv.extend(["--", path.as_str()]);
        }
        Ok(output(git(Self::NAME, &argv, ctx).await?, ctx, "no commits yet"))
    }
}

impl Add {
    fn schema() -> Value {
        schema::object(
            json!({"paths": {"type": "array", "items": {"type": "string"}, "description": "files or directories to stage ('.' for all)"}}),
            &["paths"],
        )
    }

    async fn run(&self, args: &Args<'_>, ctx: &ToolContext) -> Result<ToolOutput> {
        let values = args.array("paths")?;
        let paths = paths(ctx, Self::NAME, values)?;
        let mut argv = vec!["add", "--"];
        argv.extend(paths.iter().map(String::as_str));
        let added = git(Self::NAME, &argv, ctx).await?;
        if !added.status.success() {
            return Ok(added.into_output(ctx.output_cap));
        }
        let status = git(Self::NAME, &["status", "--porcelain=v1", "-b"], ctx).await?;
        let mut out = output(status, ctx, "nothing staged");
        out.content = format!("staged {}\n{}", paths.join(", "), out.content);
        Ok(out)
    }
}

impl Commit {
    fn schema() -> Value {
        schema::object(
            json!({
                "message": {"type": "string", "description": "the commit message: a subject line, then a blank line and a body if needed"},
                "all": {"type": "boolean", "description": "commit every change to tracked files, staged or not (git commit -a)"},
            }),
            &["message"],
        )
    }

    async fn run(&self, args: &Args<'_>, ctx: &ToolContext) -> Result<ToolOutput> {
        let message = args.string("message")?;
        if message.trim().is_empty() {
            return Err(Error::bad_args(Self::NAME, "the message is empty: say what the commit does"));
        }
        let named = git(Self::NAME, &["config", "user.email"], ctx).await?;
        let mut argv: Vec<&str> = Vec::new();
        if !named.status.success() || named.stdout.text().trim().is_empty() {
            argv.extend(FALLBACK_IDENTITY);
        }
        argv.extend(["commit", "--no-verify", "-m", message]);
        if args.opt_bool("all")?.unwrap_or(false) {
            argv.push("-a");
        }
        let finished = git(Self::NAME, &argv, ctx).await?;
        let nothing =
            finished.stdout.text().contains("nothing to commit") || finished.stdout.text().contains("no changes added");
        let mut out = output(finished, ctx, "committed");
        if nothing {
            out.content = format!(
                "nothing to commit: stage files with the add operation first (or pass all=true)\n{}",
                out.content
            );
        }
        Ok(out)
    }
}

impl CreateBranch {
    fn schema() -> Value {
        schema::object(
            json!({
                "name": {"type": "string", "description": "the new branch's name, e.g. feature/login"},
                "start_point": {"type": "string", "description": "commit or branch to start from (default HEAD)"},
            }),
            &["name"],
        )
    }

    async fn run(&self, args: &Args<'_>, ctx: &ToolContext) -> Result<ToolOutput> {
        let name = ref_name(Self::NAME, "branch name", args.string("name")?)?;
        let mut argv = vec!["branch", name];
        if let Some(start) = args.opt_string("start_point")? {
            argv.push(ref_name(Self::NAME, "start point", start)?);
        }
        Ok(output(git(Self::NAME, &argv, ctx).await?, ctx, &format!("created branch {name}")))
    }
}

impl SwitchBranch {
    fn schema() -> Value {
        schema::object(
            json!({
                "name": {"type": "string", "description": "the branch to switch to"},
                "create": {"type": "boolean", "description": "create it first (git switch -c)"},
            }),
            &["name"],
        )
    }

    async fn run(&self, args: &Args<'_>, ctx: &ToolContext) -> Result<ToolOutput> {
        let name = ref_name(Self::NAME, "branch name", args.string("name")?)?;
        let mut argv = vec!["switch"];
        if args.opt_bool("create")?.unwrap_or(false) {
            argv.push("-c");
        }
        argv.push(name);
        Ok(output(git(Self::NAME, &argv, ctx).await?, ctx, &format!("switched to {name}")))
    }
}

impl Merge {
    fn schema() -> Value {
        schema::object(
            json!({
                "branch": {"type": "string", "description": "the branch to merge into the current one"},
                "message": {"type": "string", "description": "the merge commit's message (default git's)"},
            }),
            &["branch"],
        )
    }

    async fn run(&self, args: &Args<'_>, ctx: &ToolContext) -> Result<ToolOutput> {
        let branch = ref_name(Self::NAME, "branch name", args.string("branch")?)?;
        let mut argv: Vec<&str> = FALLBACK_IDENTITY.to_vec();
        argv.extend(["merge", "--no-edit", "--no-verify"]);
        if let Some(message) = args.opt_string("message")? {
            argv.extend(["-m", message]);
        }
        argv.push(branch);
        let finished = git(Self::NAME, &argv, ctx).await?;
        let conflicted = finished.stdout.text().contains("CONFLICT");
        let mut out = output(finished, ctx, "merged");
        if conflicted {
            out.content.push_str(
                "\nthe merge stopped on conflicts: list them with resolve_conflicts, take a side per file (or edit the file and add it), then commit",
            );
        }
        Ok(out)
    }
}

/// Remote and branch of pull and push, checked.
fn remote_args<'a>(tool: &'static str, args: &Args<'a>) -> Result<(&'a str, Option<&'a str>)> {
    let remote = ref_name(tool, "remote", args.opt_string("remote")?.unwrap_or("origin"))?;
    let branch = args.opt_string("branch")?.map(|b| ref_name(tool, "branch name", b)).transpose()?;
    Ok((remote, branch))
}

/// A hint for a remote the sandbox cannot reach.
fn network_hint(mut out: ToolOutput) -> ToolOutput {
    let lower = out.content.to_lowercase();
    if !out.success && (lower.contains("could not resolve host") || lower.contains("network is unreachable")) {
        out.content.push_str("\nthe tool sandbox has no network: a person must allow it ([sandbox] network = true) or push and pull themselves");
    }
    out
}

impl Pull {
    fn schema() -> Value {
        schema::object(
            json!({
                "remote": {"type": "string", "description": "a configured remote (default origin)"},
                "branch": {"type": "string", "description": "the remote branch (default the upstream of the current one)"},
            }),
            &[],
        )
    }

    async fn run(&self, args: &Args<'_>, ctx: &ToolContext) -> Result<ToolOutput> {
        let (remote, branch) = remote_args(Self::NAME, args)?;
        let mut argv: Vec<&str> = FALLBACK_IDENTITY.to_vec();
        argv.extend(["pull", "--no-rebase", "--no-edit", remote]);
        argv.extend(branch);
        Ok(network_hint(output(git(Self::NAME, &argv, ctx).await?, ctx, "pulled")))
    }
}

impl Push {
    fn schema() -> Value {
        schema::object(
            json!({
                "remote": {"type": "string", "description": "a configured remote (default origin)"},
                "branch": {"type": "string", "description": "the branch to push (default the current one's upstream)"},
                "set_upstream": {"type": "boolean", "description": "make it the branch's upstream (git push -u)"},
            }),
            &[],
        )
    }

    async fn run(&self, args: &Args<'_>, ctx: &ToolContext) -> Result<ToolOutput> {
        let (remote, branch) = remote_args(Self::NAME, args)?;
        let mut argv = vec!["push", "--no-verify"];
        if args.opt_bool("set_upstream")?.unwrap_or(false) {
            argv.push("-u");
        }
        argv.push(remote);
        argv.extend(branch);
        Ok(network_hint(output(git(Self::NAME, &argv, ctx).await?, ctx, "pushed")))
    }
}

impl ResolveConflicts {
    fn schema() -> Value {
        schema::object(
            json!({
                "path": {"type": "string", "description": "the conflicted file to resolve (omit to list them)"},
                "side": {"type": "string", "enum": ["ours", "theirs"], "description": "ours keeps the current branch's version, theirs the merged branch's"},
            }),
            &[],
        )
    }

    async fn run(&self, args: &Args<'_>, ctx: &ToolContext) -> Result<ToolOutput> {
        let Some(path) = args.opt_string("path")? else {
            let listed = git(Self::NAME, &["diff", "--name-only", "--diff-filter=U"], ctx).await?;
            if !listed.status.success() {
                return Ok(listed.into_output(ctx.output_cap));
            }
            let files: Vec<String> =
                listed.stdout.text().lines().map(str::to_string).filter(|l| !l.is_empty()).collect();
            if files.is_empty() {
                return Ok(ToolOutput::ok("no conflicted files"));
            }
            // Counted by git in the sandbox, as every read of the workspace is.
            let mut argv = vec!["grep", "--no-index", "-c", "-e", "^<<<<<<<", "--"];
            argv.extend(files.iter().map(String::as_str));
            let counted = git(Self::NAME, &argv, ctx).await?.stdout.text();
            let count = |file: &str| {
                counted
                    .lines()
                    .filter_map(|l| l.rsplit_once(':'))
                    .find(|(path, _)| *path == file)
                    .and_then(|(_, n)| n.parse::<usize>().ok())
                    .unwrap_or(0)
            };
            let mut text = format!("{} conflicted file(s):\n", files.len());
            for file in &files {
                text.push_str(&format!("{file}: {} conflict(s)\n", count(file)));
            }
            text.push_str("resolve each with path and side (ours or theirs), or edit the file and add it; then commit");
            return Ok(ToolOutput::ok(text));
        };
        let side = match args.opt_string("side")? {
            Some(side @ ("ours" | "theirs")) => side,
            Some(other) => {
                return Err(Error::bad_args(Self::NAME, format!("side must be ours or theirs, got '{other}'")));
            }
            None => return Err(Error::bad_args(Self::NAME, "give side (ours or theirs) with path")),
        };
        let rel = ctx.workspace.relative(&ctx.workspace.resolve(path)?);
        let flag = format!("--{side}");
        let taken = git(Self::NAME, &["checkout", flag.as_str(), "--", rel.as_str()], ctx).await?;
        if !taken.status.success() {
            return Ok(taken.into_output(ctx.output_cap));
        }
        let added = git(Self::NAME, &["add", "--", rel.as_str()], ctx).await?;
        let mut out = output(added, ctx, "");
        if out.success {
            out.content = format!("resolved {rel} with {side}'s version and staged it");
            out.files_changed = vec![rel];
        }
        Ok(out)
    }
}

impl AnalyzeHistory {
    fn schema() -> Value {
        schema::object(
            json!({"max_count": {"type": "integer", "minimum": 1, "description": "commits to look at, newest first (default 500)"}}),
            &[],
        )
    }

    async fn run(&self, args: &Args<'_>, ctx: &ToolContext) -> Result<ToolOutput> {
        let n = args.opt_positive("max_count")?.unwrap_or(500).to_string();
        let finished =
            git(Self::NAME, &["log", "-n", n.as_str(), "--date=short", "--format=@%h%x09%an%x09%ad", "--numstat"], ctx)
                .await?;
        if !finished.status.success() {
            let mut out = finished.into_output(ctx.output_cap);
            if out.content.contains("does not have any commits") {
                out = ToolOutput::ok("no commits yet");
            }
            return Ok(out);
        }
        let text = finished.stdout.text();
        let mut commits = 0usize;
        let mut authors: BTreeMap<String, usize> = BTreeMap::new();
        let mut files: BTreeMap<String, (usize, u64)> = BTreeMap::new();
        let (mut first, mut last) = (String::new(), String::new());
        for line in text.lines() {
            if let Some(header) = line.strip_prefix('@') {
                let mut parts = header.split('\t');
                let (_, author, date) =
                    (parts.next(), parts.next().unwrap_or_default(), parts.next().unwrap_or_default());
                commits += 1;
                *authors.entry(author.to_string()).or_default() += 1;
                if last.is_empty() {
                    last = date.to_string();
                }
                first = date.to_string();
            } else if let [added, removed, path] = line.split('\t').collect::<Vec<_>>()[..] {
                let lines = added.parse::<u64>().unwrap_or(0) + removed.parse::<u64>().unwrap_or(0);
                let entry = files.entry(path.to_string()).or_default();
                entry.0 += 1;
                entry.1 += lines;
            }
        }
        let mut authors: Vec<(String, usize)> = authors.into_iter().collect();
        authors.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        let mut hot: Vec<(String, (usize, u64))> = files.into_iter().collect();
        hot.sort_by(|a, b| b.1.0.cmp(&a.1.0).then_with(|| b.1.1.cmp(&a.1.1)).then_with(|| a.0.cmp(&b.0)));
        let mut out = format!("{commits} commit(s) from {first} to {last}\nauthors:\n");
        for (author, n) in authors.iter().take(10) {
            out.push_str(&format!("  {author}: {n}\n"));
        }
        out.push_str("most changed files (commits, lines changed):\n");
        for (path, (n, lines)) in hot.iter().take(10) {
            out.push_str(&format!("  {path}: {n}, {lines}\n"));
        }
        Ok(ToolOutput { duration: finished.duration, ..ToolOutput::ok(out) })
    }
}
