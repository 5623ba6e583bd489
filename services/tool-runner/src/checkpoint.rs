//! Workspace checkpoints: before each mutating tool call of a task, the workspace as it is is
//! committed to a private git repository, so the task (or everything from one call on) can be
//! rewound: `turbo-coder rewind TASK [--step N]`. A call of an interactive session that follows
//! no task (a `code_edit` over the WebSocket) is checkpointed the same way under the session:
//! `turbo-coder rewind SESSION`.
//!
//! The repository is the runner's, not the project's: `<data_dir>/checkpoints/<key>.git`, one
//! per workspace (the key hashes its path), used with the workspace as its work tree. The
//! project's own `.git`, branches and index are never touched, and a workspace that is not a
//! git repository is checkpointed the same way. The workspace's `.gitignore` applies (build
//! outputs are not kept), and so nothing ignored is ever deleted by a rewind. Each checkpoint
//! is a commit under `refs/turbo/<task_id or session_id>/<n>`, numbered from 1 in the order taken, its
//! message the label of the call it came before. Taking one is `git add -A` (which hashes only
//! files whose stat changed since the last one), `write-tree`, `commit-tree` and `update-ref`.
//!
//! git runs here, outside the tool sandbox, as the runner's own bookkeeping: with no system or
//! global config, hooks and fsmonitor off, and a config that is the runner's (a workspace
//! cannot bring filters or hooks along).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};
use serde::Serialize;
use sha2::{Digest, Sha256};
use turbo_core::ids::{SessionId, TaskId};

use crate::error::{Error, Result};

/// Whose checkpoints: a task's, or those of a session's calls made outside any task. Both
/// are UUIDs, so they share the repository's `refs/turbo/` without colliding.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Owner {
    Task(TaskId),
    Session(SessionId),
}

impl Owner {
    fn id(self) -> uuid::Uuid {
        match self {
            Owner::Task(t) => t.0,
            Owner::Session(s) => s.0,
        }
    }
}

impl From<TaskId> for Owner {
    fn from(task: TaskId) -> Self {
        Owner::Task(task)
    }
}

impl From<SessionId> for Owner {
    fn from(session: SessionId) -> Self {
        Owner::Session(session)
    }
}

impl std::fmt::Display for Owner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Owner::Task(t) => write!(f, "task {t}"),
            Owner::Session(s) => write!(f, "session {s}"),
        }
    }
}

/// One checkpoint: the workspace before a mutating call.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Checkpoint {
    /// 1-based, in the order taken within the task.
    pub n: u32,
    /// The commit in the checkpoint repository.
    pub commit: String,
    /// What came next, e.g. `implement step 3: fs_write`.
    pub label: String,
    pub at: DateTime<Utc>,
}

/// What a rewind did.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Rewound {
    /// The checkpoint the workspace is back at.
    pub to: Checkpoint,
    /// The checkpoint of the state just before the rewind, to rewind the rewind.
    pub saved_as: Checkpoint,
}

/// The checkpoint repositories under one directory.
#[derive(Clone, Debug)]
pub struct Checkpoints {
    dir: PathBuf,
    /// One lock per workspace: git's index of a workspace is written by one call at a time.
    locks: Arc<Mutex<HashMap<PathBuf, Arc<tokio::sync::Mutex<()>>>>>,
}

impl Checkpoints {
    /// Repositories in `dir` (created on first use): `<data_dir>/checkpoints`.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into(), locks: Arc::default() }
    }

    fn lock(&self, workspace: &Path) -> Arc<tokio::sync::Mutex<()>> {
        let mut locks = self.locks.lock().unwrap_or_else(|p| p.into_inner());
        locks.entry(workspace.to_path_buf()).or_default().clone()
    }

    /// The checkpoint repository of `workspace`.
    pub fn repo(&self, workspace: &Path) -> PathBuf {
        let digest = Sha256::digest(workspace.as_os_str().as_encoded_bytes());
        let key: String = digest.iter().take(8).map(|b| format!("{b:02x}")).collect();
        self.dir.join(format!("{key}.git"))
    }

    /// Commits the workspace as it is now as the owner's next checkpoint.
    pub async fn take(&self, workspace: &Path, owner: impl Into<Owner>, label: &str) -> Result<Checkpoint> {
        let owner = owner.into();
        let lock = self.lock(workspace);
        let _held = lock.lock().await;
        let git = Git::new(self.repo(workspace), workspace.to_path_buf());
        let label = label.to_string();
        blocking(move || git.take(owner, &label)).await
    }

    /// The owner's checkpoints, oldest first.
    pub async fn list(&self, workspace: &Path, owner: impl Into<Owner>) -> Result<Vec<Checkpoint>> {
        let owner = owner.into();
        let git = Git::new(self.repo(workspace), workspace.to_path_buf());
        if !git.repo.exists() {
            return Ok(Vec::new());
        }
        blocking(move || git.list(owner)).await
    }

    /// Puts the workspace back as it was at the owner's checkpoint `n` (1, before its first
    /// change, when None), after checkpointing the state it leaves. Files the workspace ignores
    /// are left alone.
    pub async fn rewind(&self, workspace: &Path, owner: impl Into<Owner>, n: Option<u32>) -> Result<Rewound> {
        let owner = owner.into();
        let lock = self.lock(workspace);
        let _held = lock.lock().await;
        let git = Git::new(self.repo(workspace), workspace.to_path_buf());
        if !git.repo.exists() {
            return Err(Error::Checkpoint(format!(
                "{owner} has no checkpoints of {}: it made no change there through its tools",
                workspace.display()
            )));
        }
        blocking(move || git.rewind(owner, n)).await
    }
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f).await.map_err(|e| Error::Checkpoint(format!("the checkpoint task failed: {e}")))?
}

/// git over one checkpoint repository and its work tree.
struct Git {
    repo: PathBuf,
    work_tree: PathBuf,
}

impl Git {
    fn new(repo: PathBuf, work_tree: PathBuf) -> Self {
        Self { repo, work_tree }
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new("git");
        cmd.arg("--git-dir")
            .arg(&self.repo)
            .arg("--work-tree")
            .arg(&self.work_tree)
            .args(["-c", "core.hooksPath=/dev/null", "-c", "core.fsmonitor=false", "-c", "core.autocrlf=false"])
            .args(["-c", "gc.auto=0", "-c", "core.quotePath=false"])
            .args(args)
            .current_dir(&self.work_tree)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_else(|| "/usr/bin:/bin".into()))
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("GIT_CONFIG_GLOBAL", "/dev/null")
            .env("GIT_AUTHOR_NAME", "turbo-coder")
            .env("GIT_AUTHOR_EMAIL", "checkpoints@turbo-coder.invalid")
            .env("GIT_COMMITTER_NAME", "turbo-coder")
            .env("GIT_COMMITTER_EMAIL", "checkpoints@turbo-coder.invalid")
            .env("LC_ALL", "C");
        cmd
    }

    /// Runs git and returns its trimmed stdout, or an error with its stderr.
    fn run(&self, args: &[&str]) -> Result<String> {
        let out = self.command(args).output().map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => {
                Error::Checkpoint("git is not installed: checkpoints need it (apt-get install git)".into())
            }
            _ => Error::Checkpoint(format!("cannot run git: {e}")),
        })?;
        if !out.status.success() {
            return Err(Error::Checkpoint(format!(
                "git {} failed: {}",
                args.first().copied().unwrap_or_default(),
                String::from_utf8_lossy(&out.stderr).trim()
            )));
        }
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    }

    fn init(&self) -> Result<()> {
        if self.repo.join("HEAD").exists() {
            return Ok(());
        }
        if let Some(parent) = self.repo.parent() {
            std::fs::create_dir_all(parent)
                .map_err(|e| Error::Checkpoint(format!("cannot create {}: {e}", parent.display())))?;
        }
        let out = Command::new("git")
            .args(["init", "-q", "--bare"])
            .arg(&self.repo)
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("GIT_CONFIG_GLOBAL", "/dev/null")
            .output()
            .map_err(|e| Error::Checkpoint(format!("cannot run git init: {e}")))?;
        if !out.status.success() {
            return Err(Error::Checkpoint(format!("git init failed: {}", String::from_utf8_lossy(&out.stderr).trim())));
        }
        // The work tree's own .git (when the project is a repository) is never added: git
        // skips any directory named .git.
        Ok(())
    }

    fn take(&self, owner: Owner, label: &str) -> Result<Checkpoint> {
        self.init()?;
        self.run(&["add", "-A", "--ignore-errors", "."])?;
        let tree = self.run(&["write-tree"])?;
        let taken = self.list(owner)?;
        let n = taken.last().map_or(1, |c| c.n + 1);
        let mut args = vec!["commit-tree", tree.as_str(), "-m", label];
        if let Some(last) = taken.last() {
            args.extend(["-p", last.commit.as_str()]);
        }
        let commit = self.run(&args)?;
        self.run(&["update-ref", &reference(owner, n), &commit])?;
        Ok(Checkpoint { n, commit, label: label.to_string(), at: Utc::now() })
    }

    fn list(&self, owner: Owner) -> Result<Vec<Checkpoint>> {
        let format = "--format=%(refname)%09%(objectname)%09%(creatordate:iso-strict)%09%(subject)";
        let out = self.run(&["for-each-ref", format, &format!("refs/turbo/{}/", owner.id())])?;
        let mut list: Vec<Checkpoint> = out
            .lines()
            .filter_map(|line| {
                let mut parts = line.splitn(4, '\t');
                let n = parts.next()?.rsplit('/').next()?.parse().ok()?;
                let commit = parts.next()?.to_string();
                let at = DateTime::parse_from_rfc3339(parts.next()?).ok()?.with_timezone(&Utc);
                let label = parts.next().unwrap_or_default().to_string();
                Some(Checkpoint { n, commit, label, at })
            })
            .collect();
        list.sort_by_key(|c| c.n);
        Ok(list)
    }

    fn rewind(&self, owner: Owner, n: Option<u32>) -> Result<Rewound> {
        let taken = self.list(owner)?;
        let want = n.unwrap_or(1);
        let Some(to) = taken.iter().find(|c| c.n == want).cloned() else {
            let have = match (taken.first(), taken.last()) {
                (Some(first), Some(last)) => format!("it has checkpoints {} to {}", first.n, last.n),
                _ => "it has none".to_string(),
            };
            return Err(Error::Checkpoint(format!(
                "{owner} has no checkpoint {want} ({have}); `turbo-coder rewind {} --list` shows them",
                owner.id()
            )));
        };
        // The index now matches the work tree, so the read-tree below removes exactly the
        // files that came after the checkpoint and rewrites the ones that changed.
        let saved_as = self.take(owner, &format!("before rewinding to checkpoint {want}"))?;
        self.run(&["read-tree", "-u", "--reset", &to.commit])?;
        Ok(Rewound { to, saved_as })
    }
}

fn reference(owner: Owner, n: u32) -> String {
    format!("refs/turbo/{}/{n:06}", owner.id())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, path: &str, text: &str) {
        let file = dir.join(path);
        std::fs::create_dir_all(file.parent().unwrap()).unwrap();
        std::fs::write(file, text).unwrap();
    }

    fn read(dir: &Path, path: &str) -> Option<String> {
        std::fs::read_to_string(dir.join(path)).ok()
    }

    #[tokio::test]
    async fn a_task_rewinds_to_before_any_step_and_the_rewind_itself_can_be_undone() {
        let data = tempfile::tempdir().unwrap();
        let ws = tempfile::tempdir().unwrap();
        let ws = ws.path();
        write(ws, "app.py", "v0\n");
        write(ws, ".gitignore", "build/\n");
        write(ws, "build/out.bin", "artifact");
        let checkpoints = Checkpoints::new(data.path().join("checkpoints"));
        let task = TaskId::new();

        let first = checkpoints.take(ws, task, "implement step 1: fs_write").await.unwrap();
        write(ws, "app.py", "v1\n");
        write(ws, "src/new.py", "new\n");
        let second = checkpoints.take(ws, task, "implement step 2: shell_run").await.unwrap();
        std::fs::remove_file(ws.join("app.py")).unwrap();
        write(ws, "build/out.bin", "rebuilt");
        assert_eq!((first.n, second.n), (1, 2));
        let listed = checkpoints.list(ws, task).await.unwrap();
        assert_eq!(
            listed.iter().map(|c| c.label.as_str()).collect::<Vec<_>>(),
            ["implement step 1: fs_write", "implement step 2: shell_run"]
        );
        assert!(checkpoints.list(ws, TaskId::new()).await.unwrap().is_empty());

        // Step 2 undone: app.py is back at v1, the new file stays.
        let back = checkpoints.rewind(ws, task, Some(2)).await.unwrap();
        assert_eq!(back.to.n, 2);
        assert_eq!(read(ws, "app.py").as_deref(), Some("v1\n"));
        assert_eq!(read(ws, "src/new.py").as_deref(), Some("new\n"));
        // The whole task undone: v0, the new file gone, the ignored build output untouched.
        checkpoints.rewind(ws, task, None).await.unwrap();
        assert_eq!(read(ws, "app.py").as_deref(), Some("v0\n"));
        assert_eq!(read(ws, "src/new.py"), None);
        assert_eq!(read(ws, "build/out.bin").as_deref(), Some("rebuilt"));
        // And the rewind undone, from the checkpoint it took.
        checkpoints.rewind(ws, task, Some(back.saved_as.n)).await.unwrap();
        assert_eq!(read(ws, "app.py"), None, "as it was before the first rewind");
        assert_eq!(read(ws, "src/new.py").as_deref(), Some("new\n"));

        let err = checkpoints.rewind(ws, task, Some(99)).await.unwrap_err().to_string();
        assert!(err.contains("no checkpoint 99") && err.contains("--list"), "{err}");
        let err = checkpoints.rewind(ws, TaskId::new(), None).await.unwrap_err().to_string();
        assert!(err.contains("it has none"), "{err}");
    }

    #[tokio::test]
    async fn the_projects_own_repository_is_left_alone() {
        let data = tempfile::tempdir().unwrap();
        let ws = tempfile::tempdir().unwrap();
        let ws = ws.path();
        let git = |args: &[&str]| {
            let out = Command::new("git").args(args).current_dir(ws).output().unwrap();
            assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
            String::from_utf8_lossy(&out.stdout).to_string()
        };
        git(&["init", "-q"]);
        write(ws, "a.txt", "a\n");
        git(&["add", "a.txt"]);
        git(&["-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "one"]);
        let checkpoints = Checkpoints::new(data.path());
        let task = TaskId::new();
        checkpoints.take(ws, task, "step 1").await.unwrap();
        write(ws, "a.txt", "changed\n");
        checkpoints.rewind(ws, task, None).await.unwrap();
        assert_eq!(read(ws, "a.txt").as_deref(), Some("a\n"));
        assert_eq!(git(&["status", "--porcelain"]), "", "the project's index and history are as they were");
        assert_eq!(git(&["log", "--format=%s"]).trim(), "one");
    }

    #[tokio::test]
    async fn a_sessions_checkpoints_are_its_own_beside_a_tasks_in_the_same_workspace() {
        let data = tempfile::tempdir().unwrap();
        let ws = tempfile::tempdir().unwrap();
        let ws = ws.path();
        let checkpoints = Checkpoints::new(data.path());
        let (task, session) = (TaskId::new(), SessionId::new());
        write(ws, "a.txt", "task\n");
        checkpoints.take(ws, task, "implement step 1: fs_write").await.unwrap();
        write(ws, "a.txt", "session\n");
        let first = checkpoints.take(ws, session, "session: fs_write").await.unwrap();
        assert_eq!(first.n, 1, "numbered per owner");
        write(ws, "a.txt", "edited\n");
        assert_eq!(checkpoints.list(ws, task).await.unwrap().len(), 1);
        assert_eq!(checkpoints.list(ws, session).await.unwrap().len(), 1);

        checkpoints.rewind(ws, session, None).await.unwrap();
        assert_eq!(read(ws, "a.txt").as_deref(), Some("session\n"), "back before the session's edit only");
        assert_eq!(checkpoints.list(ws, task).await.unwrap().len(), 1, "the task's list is untouched");
        let err = checkpoints.rewind(ws, SessionId::new(), Some(3)).await.unwrap_err().to_string();
        assert!(err.starts_with("session ") && err.contains("no checkpoint 3"), "{err}");
    }
}
