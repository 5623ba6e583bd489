//! `fs_write`: replace a file's whole content atomically.

use std::fs::{self, Permissions};
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use async_trait::async_trait;
use serde_json::{Value, json};
use similar::{ChangeTag, TextDiff};
use turbo_core::tool::RiskLevel;

use crate::error::{Error, Result};
use crate::schema::{self, Args};
use crate::tool::{Tool, ToolContext, ToolOutput};
use crate::workspace::Workspace;

const NAME: &str = "fs_write";

/// Above this size an overwritten file is not diffed for the change summary.
const DIFF_LIMIT: u64 = 1024 * 1024;

/// Writes a file in the workspace, creating parent directories. Readers see the old content
/// or the new, never a torn mix: the bytes go to a temporary file beside the target, are
/// synced, then renamed over it.
#[derive(Clone, Copy, Debug, Default)]
pub struct FsWrite;

#[async_trait]
impl Tool for FsWrite {
    fn name(&self) -> &'static str {
        NAME
    }

    fn description(&self) -> &'static str {
        "Write a file in the workspace, replacing its whole content (give the complete file, \
         not a fragment). Parent directories are created. Reports the size and whether the \
         file was created or overwritten, with a line-change summary for overwrites."
    }

    fn parameters(&self) -> Value {
        schema::object(
            json!({
                "path": {"type": "string", "description": "file path relative to the workspace root"},
                "content": {"type": "string", "description": "the complete new content of the file"},
            }),
            &["path", "content"],
        )
    }

    fn risk(&self) -> RiskLevel {
        RiskLevel::Medium
    }

    fn mutating(&self) -> bool {
        true
    }

    async fn call(&self, args: &Value, ctx: &ToolContext) -> Result<ToolOutput> {
        let args = Args::new(NAME, args);
        let path = args.string("path")?;
        let content = args.string("content")?.to_owned();
        // The leaf is not followed so that a symlink there is seen and refused below.
        let abs = ctx.workspace.resolve_no_follow(path)?;
        let rel = ctx.workspace.relative(&abs);
        let ws = ctx.workspace.clone();
        tokio::task::spawn_blocking(move || write(&ws, &abs, &rel, content.as_bytes()))
            .await
            .map_err(|e| Error::io(path, std::io::Error::other(e)))?
    }
}

pub(crate) fn write(ws: &Workspace, abs: &Path, rel: &str, content: &[u8]) -> Result<ToolOutput> {
    let (Some(parent), Some(leaf)) = (abs.parent(), abs.file_name()) else {
        return Err(Error::bad_args(NAME, "give the path of a file"));
    };
    fs::create_dir_all(parent).map_err(|e| Error::io(rel, e))?;
    // From here on the directory is the one the kernel opened beneath the root, named through
    // its descriptor: a symlink swapped in on the way cannot move the write outside.
    let dir = ws.open_dir(parent)?;
    let abs = &Workspace::fd_path(&dir).join(leaf);
    let previous = match fs::symlink_metadata(abs) {
        Ok(meta) if meta.file_type().is_symlink() => {
            return Err(Error::bad_args(
                NAME,
                format!(
                    "'{rel}' is a symlink and fs_write does not write through symlinks: write to the path it points to"
                ),
            ));
        }
        Ok(meta) if meta.is_dir() => {
            return Err(Error::bad_args(NAME, format!("'{rel}' is a directory: give the path of a file")));
        }
        Ok(meta) => Some(meta),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(Error::io(rel, e)),
    };
    let old = previous
        .as_ref()
        .filter(|meta| meta.len() <= DIFF_LIMIT && content.len() as u64 <= DIFF_LIMIT)
        .and_then(|_| read_no_follow(abs).ok());
    // An overwrite keeps the file's mode (an executable script stays executable).
    let mode = previous.as_ref().map(|meta| meta.permissions());
    atomic_write(abs, content, mode).map_err(|e| Error::io(rel, e))?;

    let bytes = content.len();
    let message = match &previous {
        None => format!("created {rel} ({bytes} bytes)"),
        Some(meta) => {
            let summary = old
                .as_deref()
                .and_then(|old| line_changes(old, content))
                .map(|(added, removed)| format!("; +{added} -{removed} lines"))
                .unwrap_or_default();
            format!("overwrote {rel} ({bytes} bytes, was {} bytes{summary})", meta.len())
        }
    };
    Ok(ToolOutput { files_changed: vec![rel.to_owned()], ..ToolOutput::ok(message) })
}

/// The file's bytes, refusing a symlink at the leaf (one swapped in since it was checked).
fn read_no_follow(path: &Path) -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = fs::OpenOptions::new().read(true).custom_flags(libc_o_nofollow()).open(path)?;
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes)?;
    Ok(bytes)
}

fn libc_o_nofollow() -> i32 {
    nix::fcntl::OFlag::O_NOFOLLOW.bits()
}

/// Lines added and removed, when both versions are text.
fn line_changes(old: &[u8], new: &[u8]) -> Option<(usize, usize)> {
    let (old, new) = (std::str::from_utf8(old).ok()?, std::str::from_utf8(new).ok()?);
    let diff = TextDiff::from_lines(old, new);
    let mut counts = (0, 0);
    for change in diff.iter_all_changes() {
        match change.tag() {
            ChangeTag::Insert => counts.0 += 1,
            ChangeTag::Delete => counts.1 += 1,
            ChangeTag::Equal => {}
        }
    }
    Some(counts)
}

/// Writes through a synced temporary file in the target's directory renamed over the target,
/// so a crash or a failed write leaves the old file (or no file) and no partial one. On
/// failure the temporary file is removed.
pub(crate) fn atomic_write(target: &Path, content: &[u8], mode: Option<Permissions>) -> std::io::Result<()> {
    let dir = target.parent().ok_or_else(|| std::io::Error::other("the target has no parent directory"))?;
    let mut tmp = tempfile::Builder::new()
        .prefix(".turbo-write-")
        .suffix(".tmp")
        // What a plain create would get after the umask; tempfile's default 0600 would
        // surprise every other reader of the file.
        .permissions(Permissions::from_mode(0o666))
        .tempfile_in(dir)?;
    tmp.write_all(content)?;
    if let Some(mode) = mode {
        tmp.as_file().set_permissions(mode)?;
    }
    tmp.as_file().sync_all()?;
    tmp.persist(target).map_err(|e| e.error)?;
    // The rename is durable only once the directory is synced; some filesystems cannot sync
    // a directory, and the data itself is already safe, so that failure is not reported.
    if let Ok(dir) = fs::File::open(dir) {
        let _ = dir.sync_all();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use tempfile::TempDir;

    fn leftovers(dir: &Path) -> Vec<String> {
        fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|name| name.starts_with(".turbo-write-"))
            .collect()
    }

    #[test]
    fn failed_rename_leaves_the_target_intact_and_no_temporary_file() {
        let dir = TempDir::new().unwrap();
        let target = dir.path().join("d");
        fs::create_dir(&target).unwrap();
        fs::write(target.join("old.txt"), "old").unwrap();
        assert!(atomic_write(&target, b"new", None).is_err());
        assert_eq!(fs::read_to_string(target.join("old.txt")).unwrap(), "old");
        assert!(leftovers(dir.path()).is_empty());
    }

    #[test]
    fn overwrite_replaces_content_and_keeps_the_mode() {
        let dir = TempDir::new().unwrap();
        let target = dir.path().join("run.sh");
        fs::write(&target, "old content that is longer").unwrap();
        fs::set_permissions(&target, Permissions::from_mode(0o755)).unwrap();
        let mode = fs::metadata(&target).unwrap().permissions();
        atomic_write(&target, b"new", Some(mode)).unwrap();
        assert_eq!(fs::read_to_string(&target).unwrap(), "new");
        assert_eq!(fs::metadata(&target).unwrap().permissions().mode() & 0o777, 0o755);
        assert!(leftovers(dir.path()).is_empty());
    }

    #[test]
    fn new_files_get_the_mode_of_a_plain_create() {
        let dir = TempDir::new().unwrap();
        let target = dir.path().join("new.txt");
        atomic_write(&target, b"x", None).unwrap();
        // Compared with a plain create so the test holds under any umask; tempfile's own
        // default (0600) would differ under the usual ones.
        fs::File::create(dir.path().join("plain.txt")).unwrap();
        let mode = |name: &str| fs::metadata(dir.path().join(name)).unwrap().permissions().mode();
        assert_eq!(mode("new.txt"), mode("plain.txt"));
    }

    #[test]
    fn line_changes_counts_added_and_removed_lines() {
        assert_eq!(line_changes(b"a\nb\nc\n", b"a\nB\nc\nd\n"), Some((2, 1)));
        assert_eq!(line_changes(b"\xff", b"x"), None);
    }
}
