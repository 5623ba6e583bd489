//! `fs_list`: the entries of a directory, optionally recursive, as a developer sees them.

use std::path::Path;

use async_trait::async_trait;
use serde_json::{Value, json};
use turbo_core::tool::RiskLevel;

use crate::error::{Error, Result};
use crate::fs::walker;
use crate::schema::{self, Args};
use crate::tool::{Tool, ToolContext, ToolOutput};
use crate::workspace::Workspace;

const NAME: &str = "fs_list";
const DEFAULT_MAX_ENTRIES: u64 = 500;

/// Lists a directory: paths relative to the workspace root, directories with a trailing `/`,
/// sorted, .gitignore'd entries and `.git` left out.
#[derive(Clone, Copy, Debug, Default)]
pub struct FsList;

#[async_trait]
impl Tool for FsList {
    fn name(&self) -> &'static str {
        NAME
    }

    fn description(&self) -> &'static str {
        "List a directory of the workspace. Entries are paths relative to the workspace root, \
         sorted, directories ending in '/'. Files ignored by .gitignore and the .git directory \
         are left out. Set recursive to list the whole tree."
    }

    fn parameters(&self) -> Value {
        schema::object(
            json!({
                "path": {"type": "string", "description": "directory relative to the workspace root (default '.')"},
                "recursive": {"type": "boolean", "description": "list subdirectories too (default false)"},
                "max_entries": {"type": "integer", "minimum": 1, "description": "stop after this many entries (default 500)"},
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

    async fn call(&self, args: &Value, ctx: &ToolContext) -> Result<ToolOutput> {
        let args = Args::new(NAME, args);
        let path = args.opt_string("path")?.unwrap_or(".");
        let recursive = args.opt_bool("recursive")?.unwrap_or(false);
        let max_entries = args.opt_positive("max_entries")?.unwrap_or(DEFAULT_MAX_ENTRIES);
        let abs = ctx.workspace.resolve(path)?;
        let workspace = ctx.workspace.clone();
        let cap = ctx.output_cap;
        tokio::task::spawn_blocking(move || list(&workspace, &abs, recursive, max_entries, cap))
            .await
            .map_err(|e| Error::io(path, std::io::Error::other(e)))?
    }
}

fn list(workspace: &Workspace, abs: &Path, recursive: bool, max_entries: u64, cap: usize) -> Result<ToolOutput> {
    let rel = workspace.relative(abs);
    let meta = std::fs::metadata(abs).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => Error::NotFound { path: rel.clone() },
        _ => Error::io(&rel, e),
    })?;
    if !meta.is_dir() {
        return Ok(ToolOutput::ok(rel));
    }

    let mut content = String::new();
    let mut shown = 0u64;
    let mut stopped = false;
    let depth = if recursive { None } else { Some(1) };
    // Unreadable entries are skipped: one bad permission should not hide the rest.
    for entry in walker(abs, depth).build().flatten() {
        if entry.depth() == 0 {
            continue;
        }
        let mut name = workspace.relative(entry.path());
        if entry.file_type().is_some_and(|t| t.is_dir()) {
            name.push('/');
        }
        // Whole lines only, so every path shown can be passed back as is.
        if shown == max_entries || content.len() + name.len() + 1 > cap {
            stopped = true;
            break;
        }
        content.push_str(&name);
        content.push('\n');
        shown += 1;
    }

    if shown == 0 && !stopped {
        return Ok(ToolOutput::ok(format!("'{rel}' is an empty directory")));
    }
    if stopped {
        content
            .push_str(&format!("[listing stopped after {shown} entries: list a subdirectory, or raise max_entries]"));
    } else {
        content.pop();
    }
    Ok(ToolOutput::ok(content).truncated(stopped))
}
