//! Walking a workspace for the files to index, with their content hashes, and comparing two
//! walks, so a re-index touches only what changed and an unchanged tree costs no chunking or
//! embedding.
//!
//! The walk sees what a developer would: `.gitignore` (and `.ignore`, `.git/info/exclude`)
//! honoured whether or not the workspace is a git repository, `.git` itself skipped, other
//! dotfiles such as `.github` kept, symbolic links not followed (they may lead out of the
//! workspace). It is blocking file I/O: run it on a blocking thread.

use std::collections::HashMap;
use std::fs::File;
use std::path::Path;

use ignore::WalkBuilder;

use crate::hash::sha256_hex_reader;
use crate::{Error, Result};

/// A file found by [`scan`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScannedFile {
    /// Relative to the workspace root, `/`-separated.
    pub path: String,
    pub bytes: u64,
    /// SHA-256 of the content, lowercase hex.
    pub hash: String,
}

/// A file or directory the walk could not read, and why; the rest of the walk goes on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Unreadable {
    /// Relative to the workspace root when known.
    pub path: Option<String>,
    pub reason: String,
}

/// The result of walking a workspace.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Scan {
    /// Sorted by path.
    pub files: Vec<ScannedFile>,
    pub unreadable: Vec<Unreadable>,
}

impl Scan {
    /// Path to content hash, what the next [`diff`] compares against.
    pub fn hashes(&self) -> HashMap<String, String> {
        self.files.iter().map(|f| (f.path.clone(), f.hash.clone())).collect()
    }
}

/// Walks the workspace at `root` and hashes every file in it. Fails only if `root` itself
/// cannot be walked; unreadable entries below it are listed in [`Scan::unreadable`] and logged.
pub fn scan(root: &Path) -> Result<Scan> {
    let workspace_error = |reason: String| Error::Workspace { root: root.display().to_string(), reason };
    let metadata = std::fs::metadata(root).map_err(|e| workspace_error(e.to_string()))?;
    if !metadata.is_dir() {
        return Err(workspace_error("it is not a directory".into()));
    }
    let real = root.canonicalize().map_err(|e| workspace_error(e.to_string()))?;
    if !turbo_core::project::fit_for_root(&real) {
        return Err(workspace_error(format!(
            "{} is /, a shared directory or a system directory, not a project's own: index the project's directory",
            real.display()
        )));
    }
    let mut scan = Scan::default();
    for entry in walker(root).build() {
        let entry = match entry {
            Ok(entry) => entry,
            Err(err) => {
                let path = error_path(&err).and_then(|p| relative(root, p));
                tracing::warn!(path = path.as_deref().unwrap_or("?"), error = %err, "skipping unreadable workspace entry");
                scan.unreadable.push(Unreadable { path, reason: err.to_string() });
                continue;
            }
        };
        if !entry.file_type().is_some_and(|t| t.is_file()) {
            continue;
        }
        let Some(path) = relative(root, entry.path()) else {
            let reason = "the path is not valid UTF-8; rename the file to index it".to_owned();
            tracing::warn!(path = %entry.path().display(), reason, "skipping workspace file");
            scan.unreadable.push(Unreadable { path: None, reason });
            continue;
        };
        match hash_file(entry.path()) {
            Ok((bytes, hash)) => scan.files.push(ScannedFile { path, bytes, hash }),
            Err(err) => {
                tracing::warn!(path, error = %err, "skipping unreadable workspace file");
                scan.unreadable.push(Unreadable { path: Some(path), reason: err.to_string() });
            }
        }
    }
    scan.files.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(scan)
}

fn walker(root: &Path) -> WalkBuilder {
    let mut builder = WalkBuilder::new(root);
    builder
        .hidden(false)
        .git_ignore(true)
        .git_exclude(true)
        // What is indexed depends on the workspace, not on whoever runs the service.
        .git_global(false)
        // Workspaces are often not (yet) git repositories; their .gitignore still says what
        // is noise.
        .require_git(false)
        .follow_links(false)
        .sort_by_file_name(|a, b| a.cmp(b))
        .filter_entry(|entry| entry.file_name() != ".git");
    builder
}

fn hash_file(path: &Path) -> std::io::Result<(u64, String)> {
    let file = File::open(path)?;
    let bytes = file.metadata()?.len();
    Ok((bytes, sha256_hex_reader(file)?))
}

/// `path` relative to `root`, `/`-separated; `None` if outside `root` or not UTF-8.
fn relative(root: &Path, path: &Path) -> Option<String> {
    let rel = path.strip_prefix(root).ok()?;
    let parts: Option<Vec<&str>> = rel.components().map(|c| c.as_os_str().to_str()).collect();
    let joined = parts?.join("/");
    (!joined.is_empty()).then_some(joined)
}

fn error_path(err: &ignore::Error) -> Option<&Path> {
    match err {
        ignore::Error::WithPath { path, .. } => Some(path),
        ignore::Error::WithDepth { err, .. } | ignore::Error::WithLineNumber { err, .. } => error_path(err),
        _ => None,
    }
}

/// How the files now differ from the files before, by path and content hash. Each list is
/// sorted.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Changes {
    /// New paths: chunk and embed.
    pub added: Vec<String>,
    /// Same path, new content: replace the file's chunks.
    pub changed: Vec<String>,
    /// Gone: delete the file's chunks.
    pub removed: Vec<String>,
    /// Nothing to do.
    pub unchanged: Vec<String>,
}

impl Changes {
    /// Whether the index is up to date: nothing added, changed or removed.
    pub fn is_empty(&self) -> bool {
        self.added.is_empty() && self.changed.is_empty() && self.removed.is_empty()
    }

    /// The files whose chunks must be (re)built: added, then changed.
    pub fn to_index(&self) -> impl Iterator<Item = &str> {
        self.added.iter().chain(&self.changed).map(String::as_str)
    }
}

/// Compares two path-to-hash maps (see [`Scan::hashes`]).
pub fn diff(previous: &HashMap<String, String>, now: &HashMap<String, String>) -> Changes {
    let mut changes = Changes::default();
    for (path, hash) in now {
        match previous.get(path) {
            None => changes.added.push(path.clone()),
            Some(old) if old != hash => changes.changed.push(path.clone()),
            Some(_) => changes.unchanged.push(path.clone()),
        }
    }
    changes.removed = previous.keys().filter(|p| !now.contains_key(*p)).cloned().collect();
    for list in [&mut changes.added, &mut changes.changed, &mut changes.removed, &mut changes.unchanged] {
        list.sort();
    }
    changes
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::hash::sha256_hex;

    fn write(root: &Path, path: &str, content: &str) {
        let full = root.join(path);
        std::fs::create_dir_all(full.parent().unwrap()).unwrap();
        std::fs::write(full, content).unwrap();
    }

    fn paths(scan: &Scan) -> Vec<&str> {
        scan.files.iter().map(|f| f.path.as_str()).collect()
    }

    #[test]
    fn scan_respects_gitignore_and_skips_git() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        write(root, ".gitignore", "target/\n*.log\n!keep.log\n");
        write(root, "src/lib.rs", "pub fn a() {}\n");
        write(root, "src/nested/.gitignore", "secret.txt\n");
        write(root, "src/nested/secret.txt", "ignored by a nested .gitignore\n");
        write(root, "src/nested/open.txt", "kept\n");
        write(root, "target/debug/out.rs", "build output\n");
        write(root, "run.log", "noise\n");
        write(root, "keep.log", "negated pattern\n");
        write(root, ".github/workflows/ci.yml", "on: push\n");
        write(root, ".git/HEAD", "ref: refs/heads/main\n");
        write(root, ".git/config", "[core]\n");

        let scan = scan(root).unwrap();
        assert_eq!(
            paths(&scan),
            [
                ".github/workflows/ci.yml",
                ".gitignore",
                "keep.log",
                "src/lib.rs",
                "src/nested/.gitignore",
                "src/nested/open.txt"
            ]
        );
        let lib = scan.files.iter().find(|f| f.path == "src/lib.rs").unwrap();
        assert_eq!((lib.bytes, lib.hash.as_str()), (14, sha256_hex(b"pub fn a() {}\n").as_str()));
        assert!(scan.unreadable.is_empty(), "{:?}", scan.unreadable);
    }

    #[test]
    fn rescanning_an_unchanged_tree_finds_nothing_to_do() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "a.rs", "fn a() {}\n");
        write(dir.path(), "docs/b.md", "# B\n");
        let first = scan(dir.path()).unwrap().hashes();
        let second = scan(dir.path()).unwrap().hashes();
        let changes = diff(&first, &second);
        assert!(changes.is_empty());
        assert_eq!(changes.unchanged, ["a.rs", "docs/b.md"]);
        assert_eq!(changes.to_index().count(), 0);
    }

    #[test]
    fn diff_finds_added_changed_removed_and_unchanged() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        write(root, "same.rs", "fn same() {}\n");
        write(root, "edit.rs", "fn before() {}\n");
        write(root, "gone.rs", "fn gone() {}\n");
        let before = scan(root).unwrap().hashes();

        write(root, "edit.rs", "fn after() {}\n");
        std::fs::remove_file(root.join("gone.rs")).unwrap();
        write(root, "new/file.py", "def new(): pass\n");
        let changes = diff(&before, &scan(root).unwrap().hashes());

        assert_eq!(changes.added, ["new/file.py"]);
        assert_eq!(changes.changed, ["edit.rs"]);
        assert_eq!(changes.removed, ["gone.rs"]);
        assert_eq!(changes.unchanged, ["same.rs"]);
        assert!(!changes.is_empty());
        assert_eq!(changes.to_index().collect::<Vec<_>>(), ["new/file.py", "edit.rs"]);
    }

    #[test]
    fn a_missing_root_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nope");
        let err = scan(&missing).unwrap_err().to_string();
        assert!(err.contains("nope") && err.contains("cannot index workspace"), "{err}");
        write(dir.path(), "file", "x");
        let err = scan(&dir.path().join("file")).unwrap_err().to_string();
        assert!(err.contains("not a directory"), "{err}");
        // Never the host: it would walk every file of it.
        for host in ["/", "/etc", "/usr/lib"] {
            let err = scan(Path::new(host)).unwrap_err().to_string();
            assert!(err.contains("a system directory, not a project's own"), "{host}: {err}");
        }
    }

    #[cfg(unix)]
    #[test]
    fn symlinks_are_not_followed_out_of_the_workspace() {
        let outside = tempfile::tempdir().unwrap();
        write(outside.path(), "secret.rs", "fn secret() {}\n");
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "a.rs", "fn a() {}\n");
        std::os::unix::fs::symlink(outside.path(), dir.path().join("link")).unwrap();
        std::os::unix::fs::symlink(outside.path().join("secret.rs"), dir.path().join("file_link.rs")).unwrap();
        assert_eq!(paths(&scan(dir.path()).unwrap()), ["a.rs"]);
    }
}
