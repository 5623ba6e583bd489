//! The task's working directory and the one place where model-supplied paths become real ones.
//!
//! Confinement is checked twice. [`Workspace::resolve`] walks a model's path and refuses what
//! leads outside, with a message the model can act on; then the file tools open what it
//! returned with [`Workspace::open_file`] or [`Workspace::open_dir`], where the kernel
//! resolves every component again beneath the root (`openat2` with `RESOLVE_BENEATH` and
//! `RESOLVE_NO_MAGICLINKS`). A process of the task that swaps a directory for a symlink
//! between the two (the race through which file tools usually escape a sandbox) gets the open
//! refused, not a file outside.

use std::fs;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Component, Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{OFlag, OpenHow, ResolveFlag, openat2};
use nix::sys::stat::Mode;

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

    /// Opens `abs` (a path [`Workspace::resolve`] returned) with `flags`, the kernel keeping
    /// every step of the resolution beneath the root. `O_CLOEXEC` is added. A path that
    /// leads outside now is [`Error::OutsideWorkspace`]; a missing one [`Error::NotFound`].
    pub fn open_file(&self, abs: &Path, flags: OFlag) -> Result<fs::File> {
        self.open_beneath(abs, flags).map(fs::File::from)
    }

    /// Opens the directory `abs` beneath the root (`O_PATH`), for work relative to it:
    /// [`Workspace::fd_path`] names it for path-taking APIs without resolving the path again.
    pub fn open_dir(&self, abs: &Path) -> Result<OwnedFd> {
        self.open_beneath(abs, OFlag::O_PATH | OFlag::O_DIRECTORY)
    }

    /// `/proc/self/fd/N`: the file or directory `fd` refers to, whatever happens to the path
    /// it was opened by. Joined with a name, it is that name inside the directory.
    pub fn fd_path(fd: &OwnedFd) -> PathBuf {
        PathBuf::from(format!("/proc/self/fd/{}", fd.as_raw_fd()))
    }

    fn open_beneath(&self, abs: &Path, flags: OFlag) -> Result<OwnedFd> {
        let shown = self.relative(abs);
        let rel = match abs.strip_prefix(&self.root) {
            Ok(rel) if rel.as_os_str().is_empty() => Path::new("."),
            Ok(rel) => rel,
            Err(_) => {
                return Err(Error::OutsideWorkspace {
                    path: shown,
                    reason: "use a path relative to the workspace root".into(),
                });
            }
        };
        let io = |e: Errno| Error::io(&shown, std::io::Error::from(e));
        let root = nix::fcntl::open(&self.root, OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC, Mode::empty())
            .map_err(io)?;
        let how = OpenHow::new()
            .flags(flags | OFlag::O_CLOEXEC)
            .resolve(ResolveFlag::RESOLVE_BENEATH | ResolveFlag::RESOLVE_NO_MAGICLINKS);
        match openat2(&root, rel, how) {
            Ok(fd) => Ok(fd),
            Err(Errno::EXDEV) => Err(Error::OutsideWorkspace {
                path: shown,
                reason: "it leads outside the workspace (a symlink on the way points out)".into(),
            }),
            Err(Errno::ENOENT) => Err(Error::NotFound { path: shown }),
            Err(Errno::ELOOP) => {
                Err(Error::InvalidPath { path: shown, reason: "it goes through too many symlinks".into() })
            }
            // Kernels before 5.6 lack openat2: the walk of `resolve` is then the only check.
            Err(Errno::ENOSYS) => {
                tracing::warn!("openat2 is not available (Linux < 5.6): file tools rely on the path check alone");
                nix::fcntl::open(abs, flags | OFlag::O_CLOEXEC | OFlag::O_NOFOLLOW, Mode::empty()).map_err(io)
            }
            Err(e) => Err(io(e)),
        }
    }

    /// Whether the symlink `link` in the directory `dir` names a place under the root, read as
    /// written (`..` taken lexically): for links whose target does not exist.
    fn lexically_inside(&self, dir: &Path, link: &Path) -> bool {
        let Ok(target) = fs::read_link(link) else { return false };
        let mut place = if target.is_absolute() { PathBuf::from("/") } else { dir.to_path_buf() };
        for component in target.components() {
            match component {
                Component::ParentDir => {
                    place.pop();
                }
                Component::Normal(name) => place.push(name),
                Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
            }
        }
        place.starts_with(&self.root)
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
                            let target = match fs::canonicalize(&candidate) {
                                Ok(target) => target,
                                // Broken here; outside, it may lead somewhere (the file tools run
                                // in a sandbox that sees only the workspace of the host): say
                                // where it points if that is outside.
                                Err(_) if inside && !self.lexically_inside(&current, &candidate) => {
                                    return Err(outside(format!(
                                        "it goes through the symlink '{}' which points outside the workspace",
                                        self.relative(&candidate)
                                    )));
                                }
                                Err(_) => {
                                    return Err(invalid(&format!(
                                        "it goes through the broken symlink '{}'",
                                        self.relative(&candidate)
                                    )));
                                }
                            };
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
    fn the_kernel_refuses_a_path_that_a_swapped_symlink_leads_outside() {
        let (_dir, ws) = workspace();
        let outside = TempDir::new().unwrap();
        fs::write(outside.path().join("secret"), "s").unwrap();
        fs::create_dir(ws.root().join("sub")).unwrap();
        fs::write(ws.root().join("sub/secret"), "inside").unwrap();
        // The path is checked while `sub` is a directory...
        let abs = ws.resolve("sub/secret").unwrap();
        let mut read = String::new();
        use std::io::Read;
        ws.open_file(&abs, OFlag::O_RDONLY).unwrap().read_to_string(&mut read).unwrap();
        assert_eq!(read, "inside");
        // ...then swapped for a symlink out before the open: the open is refused.
        fs::rename(ws.root().join("sub"), ws.root().join("was-sub")).unwrap();
        symlink(outside.path(), ws.root().join("sub")).unwrap();
        let err = ws.open_file(&abs, OFlag::O_RDONLY).unwrap_err();
        assert!(matches!(err, Error::OutsideWorkspace { .. }), "{err}");
        let err = ws.open_dir(&ws.root().join("sub")).unwrap_err();
        assert!(matches!(err, Error::OutsideWorkspace { .. }), "{err}");
        // Absolute symlinks inside the workspace are refused the same way, and magic links.
        symlink(ws.root().join("was-sub/secret"), ws.root().join("abs-link")).unwrap();
        assert!(ws.open_file(&ws.root().join("abs-link"), OFlag::O_RDONLY).is_err());
        assert!(matches!(ws.open_file(&ws.root().join("missing"), OFlag::O_RDONLY), Err(Error::NotFound { .. })));
        let dir = ws.open_dir(ws.root()).unwrap();
        assert!(Workspace::fd_path(&dir).join("was-sub/secret").exists());
    }

    #[test]
    fn relative_names_the_root_dot() {
        let (_dir, ws) = workspace();
        assert_eq!(ws.relative(ws.root()), ".");
        assert_eq!(ws.relative(&ws.root().join("a/b")), "a/b");
    }
}
