//! The task's working directory and the one place where model-supplied paths become real ones.

use std::fs;
use std::path::{Component, Path, PathBuf};

use crate::error::{Error, Result};

/// The task's working directory; every path a tool touches is resolved through it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Workspace {
    /// Canonical, so that a prefix check on canonical paths is a containment check.
    root: PathBuf,
}

impl Workspace {
    /// Opens an existing directory as a workspace.
    pub fn open(root: impl AsRef<Path>) -> Result<Self> {
        let given = root.as_ref();
        let invalid = |reason: String| Error::InvalidWorkspace { path: given.to_path_buf(), reason };
        let root = fs::canonicalize(given).map_err(|e| {
            invalid(match e.kind() {
                std::io::ErrorKind::NotFound => "it does not exist".to_owned(),
                _ => e.to_string(),
            })
        })?;
        if !root.is_dir() {
            return Err(invalid("it is not a directory".to_owned()));
        }
        Ok(Self { root })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Resolves a model-supplied path (`src/app.py`, `./a/../b`, or an absolute path inside the
    /// root) to an absolute path inside the root, following symlinks.
    ///
    /// Refuses absolute paths outside the root, `..` climbing above the root, symlinks (any
    /// component, the leaf included) that point outside the root, NUL bytes and the empty path.
    /// The leaf and its parents may not exist yet (for writes): the deepest existing ancestor is
    /// the one checked.
    pub fn resolve(&self, path: &str) -> Result<PathBuf> {
        self.resolve_inner(path, true)
    }

    /// Like [`Workspace::resolve`] but a symlink leaf is returned as the link itself rather than
    /// its target (the target is still checked), so a writer can refuse to write through it.
    pub fn resolve_no_follow(&self, path: &str) -> Result<PathBuf> {
        self.resolve_inner(path, false)
    }

    /// A path for messages and listings: relative to the root, `.` for the root itself.
    pub fn relative(&self, abs: &Path) -> String {
        match abs.strip_prefix(&self.root) {
            Ok(rel) if rel.as_os_str().is_empty() => ".".to_owned(),
            Ok(rel) => rel.to_string_lossy().into_owned(),
            Err(_) => abs.to_string_lossy().into_owned(),
        }
    }

    fn resolve_inner(&self, path: &str, follow_leaf: bool) -> Result<PathBuf> {
        let invalid = |reason: &str| Error::InvalidPath { path: path.to_owned(), reason: reason.to_owned() };
        let outside = |reason: String| Error::OutsideWorkspace { path: path.to_owned(), reason };
        if path.is_empty() {
            return Err(invalid("the path is empty: use '.' for the workspace root"));
        }
        if path.contains('\0') {
            return Err(invalid("it contains a NUL byte"));
        }

        let given = Path::new(path);
        // Walk one component at a time so that every symlink is seen where it is, instead of
        // trusting a lexical normalisation that `..` after a symlink would fool.
        let mut current = if given.is_absolute() { PathBuf::from("/") } else { self.root.clone() };
        // An absolute path may pass through symlinks outside the root (say /tmp -> /private/tmp)
        // before it reaches the root; once inside, it must stay inside.
        let mut inside = current.starts_with(&self.root);
        // While true, `current` exists and is canonical; after the first missing component the
        // rest is appended lexically.
        let mut exists = true;
        let components: Vec<Component<'_>> = given.components().collect();

        for (i, component) in components.iter().enumerate() {
            let is_leaf = i + 1 == components.len();
            match component {
                Component::Prefix(_) => return Err(invalid("it has a drive prefix")),
                Component::RootDir => current = PathBuf::from("/"),
                Component::CurDir => {}
                Component::ParentDir => {
                    if inside && current == self.root {
                        return Err(outside(
                            "'..' climbs above the workspace root: use a path relative to the workspace root"
                                .to_owned(),
                        ));
                    }
                    current.pop();
                    if !exists {
                        exists = fs::symlink_metadata(&current).is_ok();
                    }
                }
                Component::Normal(name) => {
                    let candidate = current.join(name);
                    if !exists {
                        current = candidate;
                        continue;
                    }
                    match fs::symlink_metadata(&candidate) {
                        Ok(meta) if meta.file_type().is_symlink() => {
                            let target = fs::canonicalize(&candidate).map_err(|_| {
                                invalid(&format!("it goes through the broken symlink '{}'", self.relative(&candidate)))
                            })?;
                            if inside && !target.starts_with(&self.root) {
                                return Err(outside(format!(
                                    "it goes through the symlink '{}' which points outside the workspace",
                                    self.relative(&candidate)
                                )));
                            }
                            current = if is_leaf && !follow_leaf { candidate } else { target };
                        }
                        Ok(_) => current = candidate,
                        Err(_) => {
                            exists = false;
                            current = candidate;
                        }
                    }
                }
            }
            if current.starts_with(&self.root) {
                inside = true;
            } else if inside {
                // Unreachable through the checks above; kept so a future edit cannot silently
                // let a path leave the root.
                return Err(outside("use a path relative to the workspace root".to_owned()));
            }
        }

        if !current.starts_with(&self.root) {
            return Err(outside(format!(
                "absolute paths must be inside the workspace root {}: use a path relative to the workspace root",
                self.root.display()
            )));
        }
        Ok(current)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;
    use tempfile::TempDir;

    fn workspace() -> (TempDir, Workspace) {
        let dir = TempDir::new().unwrap();
        let ws = Workspace::open(dir.path()).unwrap();
        (dir, ws)
    }

    #[test]
    fn open_refuses_a_missing_directory_and_a_file() {
        let (dir, _) = workspace();
        let missing = Workspace::open(dir.path().join("nope")).unwrap_err();
        assert!(missing.to_string().contains("does not exist"), "{missing}");
        fs::write(dir.path().join("f"), "x").unwrap();
        let file = Workspace::open(dir.path().join("f")).unwrap_err();
        assert!(file.to_string().contains("not a directory"), "{file}");
    }

    #[test]
    fn root_is_canonical() {
        let (dir, ws) = workspace();
        assert_eq!(ws.root(), fs::canonicalize(dir.path()).unwrap());
    }

    #[test]
    fn resolve_accepts_relative_paths_that_do_not_exist_yet() {
        let (_dir, ws) = workspace();
        assert_eq!(ws.resolve("src/new/app.py").unwrap(), ws.root().join("src/new/app.py"));
        assert_eq!(ws.resolve(".").unwrap(), ws.root());
        assert_eq!(ws.resolve("./a/../b").unwrap(), ws.root().join("b"));
        assert_eq!(ws.resolve("new/../b").unwrap(), ws.root().join("b"));
    }

    #[test]
    fn resolve_accepts_absolute_paths_inside_the_root() {
        let (_dir, ws) = workspace();
        let abs = ws.root().join("x.txt");
        assert_eq!(ws.resolve(abs.to_str().unwrap()).unwrap(), abs);
    }

    #[test]
    fn resolve_refuses_parent_escapes_and_absolute_paths_outside() {
        let (_dir, ws) = workspace();
        for path in ["../x", "a/../../x", "/etc/passwd", "..", "/"] {
            let err = ws.resolve(path).unwrap_err();
            assert!(matches!(err, Error::OutsideWorkspace { .. }), "{path}: {err}");
        }
        let err = ws.resolve("../etc/passwd").unwrap_err();
        assert_eq!(
            err.to_string(),
            "path '../etc/passwd' is outside the workspace: '..' climbs above the workspace root: use a path relative to the workspace root"
        );
    }

    #[test]
    fn resolve_refuses_nul_and_empty_paths() {
        let (_dir, ws) = workspace();
        assert!(matches!(ws.resolve("a\0b").unwrap_err(), Error::InvalidPath { .. }));
        assert!(matches!(ws.resolve("").unwrap_err(), Error::InvalidPath { .. }));
    }

    #[test]
    fn resolve_refuses_symlinks_pointing_outside_anywhere_in_the_path() {
        let (_dir, ws) = workspace();
        let outside = TempDir::new().unwrap();
        fs::write(outside.path().join("secret"), "s").unwrap();
        symlink(outside.path(), ws.root().join("out")).unwrap();
        symlink(outside.path().join("secret"), ws.root().join("leaf")).unwrap();
        for path in ["out/secret", "out/new.txt", "out", "leaf"] {
            for follow in [true, false] {
                let err = ws.resolve_inner(path, follow).unwrap_err();
                assert!(matches!(err, Error::OutsideWorkspace { .. }), "{path}: {err}");
            }
        }
    }

    #[test]
    fn resolve_follows_symlinks_that_stay_inside() {
        let (_dir, ws) = workspace();
        fs::create_dir_all(ws.root().join("real/deep")).unwrap();
        symlink(ws.root().join("real"), ws.root().join("alias")).unwrap();
        assert_eq!(ws.resolve("alias/deep/f").unwrap(), ws.root().join("real/deep/f"));
        // `..` after a symlink is taken from the link's target, as the kernel would.
        assert_eq!(ws.resolve("alias/deep/../g").unwrap(), ws.root().join("real/g"));
        assert_eq!(ws.resolve_no_follow("alias").unwrap(), ws.root().join("alias"));
    }

    #[test]
    fn resolve_refuses_broken_symlinks() {
        let (_dir, ws) = workspace();
        symlink(ws.root().join("gone"), ws.root().join("dangling")).unwrap();
        assert!(matches!(ws.resolve("dangling").unwrap_err(), Error::InvalidPath { .. }));
    }

    #[test]
    fn relative_names_the_root_dot() {
        let (_dir, ws) = workspace();
        assert_eq!(ws.relative(ws.root()), ".");
        assert_eq!(ws.relative(&ws.root().join("a/b")), "a/b");
    }
}
