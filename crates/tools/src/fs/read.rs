//! `fs_read`: a text file, whole or a line range.

use std::io::{BufRead, BufReader};
use std::path::Path;

use async_trait::async_trait;
use serde_json::{Value, json};
use turbo_core::tool::RiskLevel;

use crate::error::{Error, Result};
use crate::fs::{cap_text, looks_binary};
use crate::schema::{self, Args};
use crate::tool::{Tool, ToolContext, ToolOutput};
use crate::workspace::Workspace;
use nix::fcntl::OFlag;

const NAME: &str = "fs_read";

/// Reads a text file in the workspace, optionally a 1-based inclusive line range.
#[derive(Clone, Copy, Debug, Default)]
pub struct FsRead;

#[async_trait]
impl Tool for FsRead {
    fn name(&self) -> &'static str {
        NAME
    }

    fn description(&self) -> &'static str {
        "Read a text file in the workspace. Without a range it returns the file's text exactly; \
         with start_line/end_line (1-based, inclusive) it returns those lines under a header \
         giving the range and the file's line count. Long output is cut at the output cap and \
         says which start_line to continue from."
    }

    fn parameters(&self) -> Value {
        schema::object(
            json!({
                "path": {"type": "string", "description": "file path relative to the workspace root"},
                "start_line": {"type": "integer", "minimum": 1, "description": "first line to return (1-based)"},
                "end_line": {"type": "integer", "minimum": 1, "description": "last line to return (inclusive)"},
            }),
            &["path"],
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
        let path = args.string("path")?;
        let start = args.opt_positive("start_line")?;
        let end = args.opt_positive("end_line")?;
        if let (Some(start), Some(end)) = (start, end)
            && end < start
        {
            return Err(Error::bad_args(NAME, format!("end_line ({end}) is before start_line ({start})")));
        }
        let abs = ctx.workspace.resolve(path)?;
        let rel = ctx.workspace.relative(&abs);
        let cap = ctx.output_cap;
        let range = Range { start, end };
        let ws = ctx.workspace.clone();
        tokio::task::spawn_blocking(move || read(&ws, &abs, &rel, range, cap))
            .await
            .map_err(|e| Error::io(path, std::io::Error::other(e)))?
    }
}

#[derive(Clone, Copy)]
struct Range {
    start: Option<u64>,
    end: Option<u64>,
}

fn read(ws: &Workspace, abs: &Path, rel: &str, range: Range, cap: usize) -> Result<ToolOutput> {
    // Opened beneath the root by the kernel, then examined through the descriptor: what is
    // read is what was checked. Non-blocking, so a FIFO does not hang the open.
    let file = ws.open_file(abs, OFlag::O_RDONLY | OFlag::O_NONBLOCK)?;
    let meta = file.metadata().map_err(|e| Error::io(rel, e))?;
    if meta.is_dir() {
        return Err(Error::bad_args(NAME, format!("'{rel}' is a directory: use fs_list to see its entries")));
    }
    if !meta.is_file() {
        // A FIFO or device would block the read or never end.
        return Err(Error::bad_args(NAME, format!("'{rel}' is not a regular file")));
    }
    let mut reader = BufReader::with_capacity(64 * 1024, file);
    if looks_binary(reader.fill_buf().map_err(|e| Error::io(rel, e))?) {
        return Ok(ToolOutput {
            content: format!("'{rel}' is a binary file ({} bytes); fs_read shows text files only", meta.len()),
            success: false,
            ..ToolOutput::default()
        });
    }

    let first = range.start.unwrap_or(1);
    let mut text = String::new();
    let mut total = 0u64;
    let mut last_shown = 0u64;
    let mut line_cut = false;
    let mut truncated = false;
    let mut buf = Vec::new();
    loop {
        buf.clear();
        if reader.read_until(b'\n', &mut buf).map_err(|e| Error::io(rel, e))? == 0 {
            break;
        }
        // Every line is counted, shown or not, so the model learns the file's length.
        total += 1;
        if total < first || range.end.is_some_and(|end| total > end) || truncated {
            continue;
        }
        let line = String::from_utf8_lossy(&buf);
        if text.len() + line.len() > cap {
            truncated = true;
            if last_shown == 0 {
                // One line longer than the cap: its start is better than nothing.
                text.push_str(&line);
                line_cut = cap_text(&mut text, cap);
                last_shown = total;
            }
            continue;
        }
        text.push_str(&line);
        last_shown = total;
    }

    if total == 0 {
        return Ok(ToolOutput::ok(format!("'{rel}' is empty")));
    }
    if first > total {
        return Err(Error::bad_args(
            NAME,
            format!("start_line {first} is past the end of '{rel}', which has {total} lines"),
        ));
    }
    let ranged = range.start.is_some() || range.end.is_some();
    let mut content = if ranged { format!("[{rel}: lines {first}-{last_shown} of {total}]\n{text}") } else { text };
    if truncated {
        if !content.ends_with('\n') {
            content.push('\n');
        }
        if line_cut {
            content.push_str(&format!(
                "[truncated: line {last_shown} alone is longer than the output cap of {cap} bytes]"
            ));
        } else {
            content.push_str(&format!(
                "[truncated at the output cap: showed lines {first}-{last_shown} of {total}; continue with start_line={}]",
                last_shown + 1
            ));
        }
    }
    Ok(ToolOutput::ok(content).truncated(truncated))
}
