//! The workspace as it was when a task started, so the reviewer can see the task's whole diff
//! whether or not the project uses git.

use std::collections::BTreeMap;
use std::path::Path;

use similar::TextDiff;

use crate::error::{Error, Result};

/// Files larger than this are compared by size only: generated or data files, not review material.
const MAX_FILE_BYTES: u64 = 1024 * 1024;
/// Stop remembering contents past this total, so a huge workspace cannot exhaust memory.
const MAX_TOTAL_BYTES: u64 = 64 * 1024 * 1024;

#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
enum FileState {
    Text(String),
    /// Binary, too large, or past the memory budget: only its size is known.
    Opaque(u64),
}

#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct Baseline {
    files: BTreeMap<String, FileState>,
}

/// The changes of a task: a unified diff and the paths it touches.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TaskDiff {
    pub unified: String,
    pub added: Vec<String>,
    pub modified: Vec<String>,
    pub deleted: Vec<String>,
}

impl TaskDiff {
    pub fn is_empty(&self) -> bool {
        self.added.is_empty() && self.modified.is_empty() && self.deleted.is_empty()
    }

    pub fn changed_paths(&self) -> impl Iterator<Item = &String> {
        self.added.iter().chain(&self.modified)
    }
}

impl Baseline {
    /// Reads the workspace, honouring .gitignore and skipping .git.
    pub fn capture(root: &Path) -> Result<Baseline> {
        let mut files = BTreeMap::new();
        let mut budget = MAX_TOTAL_BYTES;
        let walker = ignore::WalkBuilder::new(root)
            .hidden(false)
            .require_git(false)
            .filter_entry(|e| e.file_name() != ".git")
            .build();
        for entry in walker {
            let entry =
                entry.map_err(|e| Error::Snapshot { path: root.display().to_string(), reason: e.to_string() })?;
            if !entry.file_type().is_some_and(|t| t.is_file()) {
                continue;
            }
            let rel = entry.path().strip_prefix(root).unwrap_or(entry.path()).to_string_lossy().into_owned();
            let size = entry.metadata().map(|m| m.len()).unwrap_or(0);
            let state = if size > MAX_FILE_BYTES || size > budget {
                FileState::Opaque(size)
            } else {
                match std::fs::read(entry.path()) {
                    Ok(bytes) => match String::from_utf8(bytes) {
                        Ok(text) if !text.contains('\0') => {
                            budget -= size;
                            FileState::Text(text)
                        }
                        _ => FileState::Opaque(size),
                    },
                    // Unreadable now; report it as changed if it becomes readable.
                    Err(_) => FileState::Opaque(size),
                }
            };
            files.insert(rel, state);
        }
        Ok(Baseline { files })
    }

    /// Writes the baseline to `path` atomically (a temporary file renamed over it), so a
    /// process reading it sees the whole snapshot or none.
    pub fn save(&self, path: &Path) -> Result<()> {
        let failed = |reason: String| Error::Baseline { path: path.display().to_string(), reason };
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| failed(format!("cannot create {}: {e}", dir.display())))?;
        }
        let json = serde_json::to_vec(self).map_err(|e| failed(e.to_string()))?;
        let tmp = path.with_extension(format!("tmp-{}", std::process::id()));
        std::fs::write(&tmp, json).map_err(|e| failed(e.to_string()))?;
        std::fs::rename(&tmp, path).map_err(|e| {
            let _ = std::fs::remove_file(&tmp);
            failed(e.to_string())
        })
    }

    /// Reads a baseline written by [`Baseline::save`]; None when there is none at `path`.
    pub fn load(path: &Path) -> Result<Option<Baseline>> {
        let failed = |reason: String| Error::Baseline { path: path.display().to_string(), reason };
        match std::fs::read(path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map(Some).map_err(|e| failed(e.to_string())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(failed(e.to_string())),
        }
    }

    /// What changed between this baseline and `now`.
    pub fn diff(&self, now: &Baseline) -> TaskDiff {
        let mut out = TaskDiff::default();
        for (path, after) in &now.files {
            match self.files.get(path) {
                None => {
                    out.added.push(path.clone());
                    out.unified.push_str(&unified(path, None, Some(after)));
                }
                Some(before) if before != after => {
                    out.modified.push(path.clone());
                    out.unified.push_str(&unified(path, Some(before), Some(after)));
                }
                Some(_) => {}
            }
        }
        for (path, before) in &self.files {
            if !now.files.contains_key(path) {
                out.deleted.push(path.clone());
                out.unified.push_str(&unified(path, Some(before), None));
            }
        }
        out
    }
}

fn unified(path: &str, before: Option<&FileState>, after: Option<&FileState>) -> String {
    fn text(s: Option<&FileState>) -> Option<&str> {
        match s {
            Some(FileState::Text(t)) => Some(t.as_str()),
            None => Some(""),
            Some(FileState::Opaque(_)) => None,
        }
    }
    match (text(before), text(after)) {
        (Some(a), Some(b)) => {
            let old = if before.is_some() { format!("a/{path}") } else { "/dev/null".to_string() };
            let new = if after.is_some() { format!("b/{path}") } else { "/dev/null".to_string() };
            TextDiff::from_lines(a, b).unified_diff().context_radius(3).header(&old, &new).to_string()
        }
        _ => format!("Binary or large file {path} changed\n"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn diff_reports_added_modified_and_deleted_files() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::write(root.join("keep.py"), "x = 1\n").unwrap();
        std::fs::write(root.join("edit.py"), "a = 1\nb = 2\n").unwrap();
        std::fs::write(root.join("gone.txt"), "bye\n").unwrap();
        std::fs::write(root.join(".gitignore"), "build/\n").unwrap();
        let before = Baseline::capture(root).unwrap();

        std::fs::write(root.join("edit.py"), "a = 1\nb = 3\n").unwrap();
        std::fs::remove_file(root.join("gone.txt")).unwrap();
        std::fs::write(root.join("new.py"), "print('hi')\n").unwrap();
        std::fs::create_dir(root.join("build")).unwrap();
        std::fs::write(root.join("build/out.txt"), "ignored\n").unwrap();
        let diff = before.diff(&Baseline::capture(root).unwrap());

        assert_eq!(diff.added, ["new.py"]);
        assert_eq!(diff.modified, ["edit.py"]);
        assert_eq!(diff.deleted, ["gone.txt"]);
        assert!(diff.unified.contains("--- a/edit.py\n+++ b/edit.py"), "{}", diff.unified);
        assert!(diff.unified.contains("-b = 2\n+b = 3"), "{}", diff.unified);
        assert!(diff.unified.contains("+++ b/new.py"));
        assert!(!diff.unified.contains("ignored"));
    }

    #[test]
    fn a_saved_baseline_loads_back_the_same() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a.py"), "x = 1\n").unwrap();
        std::fs::write(dir.path().join("b.bin"), [0u8, 1, 2]).unwrap();
        let before = Baseline::capture(dir.path()).unwrap();
        let file = dir.path().join("snapshots").join("t.json");
        assert!(Baseline::load(&file).unwrap().is_none());
        before.save(&file).unwrap();
        let loaded = Baseline::load(&file).unwrap().expect("saved");
        assert_eq!(loaded.files, before.files);
        std::fs::write(&file, "{not json").unwrap();
        assert!(Baseline::load(&file).unwrap_err().to_string().contains("t.json"));
    }

    #[test]
    fn an_unchanged_workspace_has_an_empty_diff() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a.bin"), [0u8, 1, 2]).unwrap();
        let a = Baseline::capture(dir.path()).unwrap();
        let b = Baseline::capture(dir.path()).unwrap();
        assert!(a.diff(&b).is_empty());
    }
}
