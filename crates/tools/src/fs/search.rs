//! `fs_search`: a regex over the workspace's text files, grep style.

use std::path::Path;

use async_trait::async_trait;
use ignore::overrides::{Override, OverrideBuilder};
use regex::Regex;
use serde_json::{Value, json};
use turbo_core::tool::RiskLevel;

use crate::error::{Error, Result};
use crate::fs::{looks_binary, walker};
use crate::schema::{self, Args};
use crate::tool::{Tool, ToolContext, ToolOutput};
use crate::workspace::Workspace;

const NAME: &str = "fs_search";
const DEFAULT_MAX_RESULTS: u64 = 100;
/// Larger files are skipped: they are data or generated, and reading them would stall the call.
const MAX_FILE_BYTES: u64 = 8 * 1024 * 1024;
/// A matched line is shown up to this many bytes (minified files have enormous lines).
const MAX_LINE_BYTES: usize = 300;

/// Searches text files for a regex; results are `path:line: text`, gitignore-aware, binary
/// files skipped.
#[derive(Clone, Copy, Debug, Default)]
pub struct FsSearch;

#[async_trait]
impl Tool for FsSearch {
    fn name(&self) -> &'static str {
        NAME
    }

    fn description(&self) -> &'static str {
        "Search the workspace's text files for a regular expression (Rust regex syntax, \
         matched per line). Returns one 'path:line: text' line per match. Files ignored by \
         .gitignore, binary files and .git are skipped. Narrow with path (a directory or file) \
         and glob (e.g. '*.py')."
    }

    fn parameters(&self) -> Value {
        schema::object(
            json!({
                "pattern": {"type": "string", "description": "regular expression to find, e.g. 'def \\w+_test'"},
                "path": {"type": "string", "description": "directory or file to search, relative to the workspace root (default '.')"},
                "glob": {"type": "string", "description": "only search files matching this glob, e.g. '*.rs' or 'src/**/*.py'"},
                "max_results": {"type": "integer", "minimum": 1, "description": "stop after this many matches (default 100)"},
            }),
            &["pattern"],
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
        let pattern = args.string("pattern")?;
        let path = args.opt_string("path")?.unwrap_or(".");
        let glob = args.opt_string("glob")?;
        let max_results = args.opt_positive("max_results")?.unwrap_or(DEFAULT_MAX_RESULTS);
        let regex =
            Regex::new(pattern).map_err(|e| Error::bad_args(NAME, format!("'pattern' is not a valid regex: {e}")))?;
        let abs = ctx.workspace.resolve(path)?;
        if !abs.exists() {
            return Err(Error::NotFound { path: ctx.workspace.relative(&abs) });
        }
        let overrides = glob.map(|glob| only_matching(&abs, glob)).transpose()?;
        let search = Search { workspace: ctx.workspace.clone(), regex, overrides, max_results, cap: ctx.output_cap };
        tokio::task::spawn_blocking(move || search.run(&abs))
            .await
            .map_err(|e| Error::io(path, std::io::Error::other(e)))
    }
}

fn only_matching(root: &Path, glob: &str) -> Result<Override> {
    let mut builder = OverrideBuilder::new(root);
    builder
        .add(glob)
        .and_then(|b| b.build())
        .map_err(|e| Error::bad_args(NAME, format!("'glob' is not a valid glob: {e}")))
}

struct Search {
    workspace: Workspace,
    regex: Regex,
    overrides: Option<Override>,
    max_results: u64,
    cap: usize,
}

fn read_beneath(ws: &crate::workspace::Workspace, path: &Path) -> crate::error::Result<Vec<u8>> {
    use std::io::Read;
    let mut file = ws.open_file(path, nix::fcntl::OFlag::O_RDONLY | nix::fcntl::OFlag::O_NONBLOCK)?;
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes).map_err(|e| crate::error::Error::io(ws.relative(path), e))?;
    Ok(bytes)
}

impl Search {
    fn run(&self, start: &Path) -> ToolOutput {
        let mut walk = walker(start, None);
        if let Some(overrides) = &self.overrides {
            walk.overrides(overrides.clone());
        }
        let mut content = String::new();
        let mut hits = 0u64;
        let mut stopped = false;
        // Unreadable files are skipped like binary ones: the search is best effort by nature.
        'files: for entry in walk.build().flatten() {
            if !entry.file_type().is_some_and(|t| t.is_file())
                || entry.metadata().is_ok_and(|m| m.len() > MAX_FILE_BYTES)
            {
                continue;
            }
            // Opened beneath the root by the kernel: a directory swapped for a symlink while
            // the walk runs cannot lead the search outside.
            let Ok(bytes) = read_beneath(&self.workspace, entry.path()) else {
                continue;
            };
            if looks_binary(&bytes) {
                continue;
            }
            let rel = self.workspace.relative(entry.path());
            let body = bytes.strip_suffix(b"\n").unwrap_or(&bytes);
            for (index, line) in body.split(|b| *b == b'\n').enumerate() {
                let line = String::from_utf8_lossy(line);
                let line = line.strip_suffix('\r').unwrap_or(&line);
                if !self.regex.is_match(line) {
                    continue;
                }
                let hit = format!("{rel}:{}: {}\n", index + 1, shorten(line));
                if hits == self.max_results || content.len() + hit.len() > self.cap {
                    stopped = true;
                    break 'files;
                }
                content.push_str(&hit);
                hits += 1;
            }
        }

        if hits == 0 && !stopped {
            return ToolOutput::ok(format!(
                "no matches for /{}/ in '{}'",
                self.regex.as_str(),
                self.workspace.relative(start)
            ));
        }
        if stopped {
            content.push_str(&format!(
                "[stopped after {hits} matches: narrow the pattern, path or glob, or raise max_results]"
            ));
        } else {
            content.pop();
        }
        ToolOutput::ok(content).truncated(stopped)
    }
}

fn shorten(line: &str) -> String {
    if line.len() <= MAX_LINE_BYTES {
        return line.to_owned();
    }
    let mut at = MAX_LINE_BYTES;
    while !line.is_char_boundary(at) {
        at -= 1;
    }
    format!("{}...", &line[..at])
}
