//! Running a child process for a tool: in the [`Sandbox`] (found on its PATH, its own
//! environment), its own process group killed whole on timeout (and when the call ends, so
//! nothing outlives it), stdout and stderr drained concurrently into capped buffers, and
//! stopped when it prints without end.

use std::collections::VecDeque;
use std::ffi::{OsStr, OsString};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::sync::Notify;

use crate::error::{Error, Result};
use crate::sandbox::{Sandbox, Spec, setup_failure};
use crate::tool::{OutputSink, OutputStream, ToolContext, ToolOutput};

/// The only variables a child sees. Everything else (API keys such as OLLAMA_API_KEY, cloud
/// credentials, the agent's own configuration) stays in the agent.
pub const ENV_ALLOW_LIST: &[&str] = &["PATH", "HOME", "LANG", "LC_ALL", "TERM", "TMPDIR", "USER"];

/// Used when the agent itself has no PATH, so that `sh` and friends are still found.
const DEFAULT_PATH: &str = "/usr/local/bin:/usr/bin:/bin";

/// The signal of a CPU time limit; bubblewrap exits with 128 + the signal of its child.
const SIGXCPU: i32 = 24;

/// How long to keep reading after the group was killed: only a process that left the group
/// (setsid) can still hold the pipes open, and we will not wait for it.
const DRAIN_GRACE: Duration = Duration::from_secs(2);
/// How often a call's CPU time is read from its cgroup.
const CPU_POLL: Duration = Duration::from_millis(50);

/// The allow-listed subset of `parent`, the environment given to every child.
pub(crate) fn scrubbed_env(parent: impl IntoIterator<Item = (OsString, OsString)>) -> Vec<(OsString, OsString)> {
    let mut env: Vec<(OsString, OsString)> =
        parent.into_iter().filter(|(name, _)| ENV_ALLOW_LIST.iter().any(|allowed| name == allowed)).collect();
    if !env.iter().any(|(name, _)| name == "PATH") {
        env.push(("PATH".into(), DEFAULT_PATH.into()));
    }
    env
}

/// Finds `name` on `path_var` (or the default PATH) as an executable file.
pub(crate) fn find_program(name: &str, path_var: Option<&OsStr>) -> Option<PathBuf> {
    if name.contains('/') {
        let path = PathBuf::from(name);
        return is_executable(&path).then_some(path);
    }
    let path_var = path_var.unwrap_or(OsStr::new(DEFAULT_PATH));
    std::env::split_paths(path_var)
        .filter(|dir| !dir.as_os_str().is_empty())
        .map(|dir| dir.join(name))
        .find(|candidate| is_executable(candidate))
}

fn is_executable(path: &Path) -> bool {
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// The call's timeout: the model may ask for less than the task allows, never more.
pub(crate) fn effective_timeout(requested_s: Option<u64>, limit: Duration) -> Duration {
    requested_s.map_or(limit, |s| Duration::from_secs(s).min(limit))
}

/// One process to run.
pub(crate) struct Run<'a> {
    pub tool: &'static str,
    /// Looked up on the sandbox's PATH.
    pub program: &'a str,
    /// Said when the program is not installed.
    pub hint: &'static str,
    pub args: Vec<OsString>,
    /// Written to the child's stdin, then closed; `None` gives the child a null stdin.
    pub stdin: Option<Vec<u8>>,
    /// Variables the tool itself needs, never the agent's.
    pub extra_env: Vec<(&'static str, OsString)>,
    pub cwd: &'a Path,
    /// The only place the process may write.
    pub workspace: &'a Path,
    pub sandbox: &'a Sandbox,
    pub timeout: Duration,
    /// Bytes kept for each of stdout and stderr (head and tail).
    pub cap: usize,
    /// Where the output also goes as it is printed.
    pub output: Option<OutputSink>,
    /// A cloud CLI's credentials: its variables and files, for this call alone.
    pub access: Option<&'a crate::sandbox::CloudAccess>,
}

/// A process that exited (by itself or by a signal) within its timeout.
#[derive(Debug)]
pub(crate) struct Finished {
    pub status: ExitStatus,
    pub stdout: Capture,
    pub stderr: Capture,
    pub duration: Duration,
    /// Why the sandbox stopped the process, when it did (a bound it hit).
    pub stopped: Option<String>,
}

impl Finished {
    /// The model's view: status, both streams, `success` for exit code 0.
    pub(crate) fn into_output(self, cap: usize) -> ToolOutput {
        let (content, truncated) = self.render(cap);
        ToolOutput {
            content,
            success: self.status.success() && self.stopped.is_none(),
            exit_code: self.status.code(),
            truncated,
            files_changed: Vec::new(),
            duration: self.duration,
        }
    }

    /// "exit code N\n--- stdout ---\n..\n--- stderr ---\n..", at most about `cap` bytes of
    /// output in total, and whether anything was left out.
    pub(crate) fn render(&self, cap: usize) -> (String, bool) {
        let status = match (self.status.code(), self.status.signal()) {
            (Some(code), _) => format!("exit code {code}"),
            (None, Some(signal)) => format!("killed by signal {signal}"),
            (None, None) => "exit status unknown".to_owned(),
        };
        let (streams, truncated) = render_streams(&self.stdout, &self.stderr, cap);
        match &self.stopped {
            Some(why) => (format!("{status}\nstopped by the sandbox: {why}\n{streams}"), truncated),
            None => (format!("{status}\n{streams}"), truncated),
        }
    }
}

fn render_streams(stdout: &Capture, stderr: &Capture, cap: usize) -> (String, bool) {
    let (out_budget, err_budget) = split_budget(cap, stdout.total, stderr.total);
    let (out, out_cut) = stdout.render(out_budget);
    let (err, err_cut) = stderr.render(err_budget);
    (
        format!(
            "--- stdout ---\n{}\n--- stderr ---\n{}",
            out.strip_suffix('\n').unwrap_or(&out),
            err.strip_suffix('\n').unwrap_or(&err)
        ),
        out_cut || err_cut,
    )
}

/// Shares `cap` between two streams: each gets what it needs if both fit, otherwise the
/// smaller keeps all it has (when under half) and the other takes the rest.
fn split_budget(cap: usize, a: u64, b: u64) -> (usize, usize) {
    let a = usize::try_from(a).unwrap_or(usize::MAX);
    let b = usize::try_from(b).unwrap_or(usize::MAX);
    let half = cap / 2;
    if a.saturating_add(b) <= cap {
        (a, b)
    } else if a <= half {
        (a, cap - a)
    } else if b <= half {
        (cap - b, b)
    } else {
        (half, cap - half)
    }
}

/// One output stream, capped: the first `cap` bytes and the last `cap` bytes are kept, the
/// middle is only counted. Errors at the end of a long build log are what a model needs most.
#[derive(Debug, Default)]
pub(crate) struct Capture {
    head: Vec<u8>,
    tail: VecDeque<u8>,
    total: u64,
    cap: usize,
}

impl Capture {
    fn new(cap: usize) -> Self {
        Self { cap, ..Self::default() }
    }

    fn push(&mut self, chunk: &[u8]) {
        self.total += chunk.len() as u64;
        let take = chunk.len().min(self.cap - self.head.len());
        self.head.extend_from_slice(&chunk[..take]);
        let rest = &chunk[take..];
        if rest.len() >= self.cap {
            self.tail.clear();
            self.tail.extend(&rest[rest.len() - self.cap..]);
        } else {
            self.tail.extend(rest);
            let excess = self.tail.len().saturating_sub(self.cap);
            self.tail.drain(..excess);
        }
    }

    /// The whole stream, when it fit in the cap (nothing was left out).
    pub(crate) fn whole(&self) -> Option<&[u8]> {
        (self.total == self.head.len() as u64).then_some(&self.head[..])
    }

    /// Everything kept, as text (the middle of a long stream is missing).
    pub(crate) fn text(&self) -> String {
        let mut kept = self.head.clone();
        kept.extend(self.tail.iter());
        String::from_utf8_lossy(&kept).into_owned()
    }

    /// The stream as text within `budget` bytes: head and tail around an omission marker when
    /// it does not fit.
    pub(crate) fn render(&self, budget: usize) -> (String, bool) {
        let mut kept = self.head.clone();
        kept.extend(self.tail.iter());
        if self.total <= budget as u64 && kept.len() as u64 == self.total {
            return (String::from_utf8_lossy(&kept).into_owned(), false);
        }
        let head_len = char_floor(&kept, (budget / 2).min(self.head.len()));
        let tail_len = budget - budget / 2;
        let tail_start = char_ceil(&kept, kept.len().saturating_sub(tail_len).max(head_len));
        let omitted = self.total - head_len as u64 - (kept.len() - tail_start) as u64;
        let text = format!(
            "{}\n[... {omitted} bytes omitted ...]\n{}",
            String::from_utf8_lossy(&kept[..head_len]),
            String::from_utf8_lossy(&kept[tail_start..])
        );
        (text, true)
    }
}

/// Moves a cut back off UTF-8 continuation bytes, so a character is not split.
fn char_floor(bytes: &[u8], mut at: usize) -> usize {
    while at > 0 && at < bytes.len() && is_continuation(bytes[at]) {
        at -= 1;
    }
    at
}

fn char_ceil(bytes: &[u8], mut at: usize) -> usize {
    while at < bytes.len() && is_continuation(bytes[at]) {
        at += 1;
    }
    at
}

fn is_continuation(byte: u8) -> bool {
    byte & 0b1100_0000 == 0b1000_0000
}

/// Kills the whole process group when dropped or asked to, so that background children and
/// grandchildren die with the call, including when the caller abandons the future.
struct GroupGuard(Option<Pid>);

impl GroupGuard {
    fn kill(&mut self) {
        if let Some(pgid) = self.0.take() {
            // ESRCH (the group is already gone) is the common, good case.
            let _ = killpg(pgid, Signal::SIGKILL);
        }
    }
}

impl Drop for GroupGuard {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Reads a stream into its capture until it ends, or until it passes `limit` bytes: then it
/// marks `flooded`, wakes the waiter and stops reading (the writer gets a broken pipe).
async fn drain(
    mut reader: impl AsyncRead + Unpin,
    capture: Arc<Mutex<Capture>>,
    limit: u64,
    flooded: Arc<(AtomicBool, Notify)>,
    live: Option<(OutputSink, OutputStream)>,
) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match reader.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            // Keep reading past the cap: a child blocked on a full pipe would never exit.
            Ok(n) => {
                if let Some((sink, stream)) = &live {
                    // Dropped when the watcher is behind: see `OutputSink`.
                    let _ = sink.try_send((*stream, buf[..n].to_vec()));
                }
                let mut c = capture.lock().unwrap_or_else(PoisonError::into_inner);
                c.push(&buf[..n]);
                if c.total > limit {
                    flooded.0.store(true, Ordering::SeqCst);
                    flooded.1.notify_one();
                    break;
                }
            }
        }
    }
}

fn take(capture: &Arc<Mutex<Capture>>) -> Capture {
    std::mem::take(&mut *capture.lock().unwrap_or_else(PoisonError::into_inner))
}

impl<'a> Run<'a> {
    /// `program args` in the workspace root of `ctx`, with its sandbox, timeout and output cap,
    /// no stdin and no extra environment.
    pub(crate) fn in_workspace(
        ctx: &'a ToolContext,
        tool: &'static str,
        program: &'a str,
        hint: &'static str,
        args: Vec<OsString>,
    ) -> Self {
        let root = ctx.workspace.root();
        Run {
            tool,
            program,
            hint,
            args,
            stdin: None,
            extra_env: Vec::new(),
            cwd: root,
            workspace: root,
            sandbox: &ctx.sandbox,
            timeout: ctx.timeout,
            cap: ctx.output_cap,
            output: ctx.output.clone(),
            access: None,
        }
    }
}

/// Runs the process in the sandbox to completion, timeout or flood. A timeout is
/// [`Error::Timeout`] carrying what the process printed, a sandbox that cannot start is
/// [`Error::Sandbox`]; any other end is a [`Finished`] (with `stopped` when a bound ended it).
pub(crate) async fn run(run: Run<'_>) -> Result<Finished> {
    let spec = Spec {
        program: run.program,
        hint: run.hint,
        args: run.args,
        workspace: run.workspace,
        cwd: run.cwd,
        env: run
            .extra_env
            .iter()
            .map(|(k, v)| (OsString::from(k), v.clone()))
            .chain(run.access.iter().flat_map(|a| a.env.iter().map(|(k, v)| (k.into(), v.into()))))
            .collect(),
        binds: run.access.map_or(&[][..], |a| &a.files[..]),
        proxy: run.sandbox.policy().proxy.applies_to(run.tool),
    };
    let output_limit = run.sandbox.policy().max_output_bytes;
    let started = Instant::now();
    let sandboxed = run.sandbox.start(spec, run.stdin).await?;
    let mut child = sandboxed.child;
    let program_name = run.program.to_owned();
    let mut group = GroupGuard(child.id().and_then(|id| i32::try_from(id).ok()).map(Pid::from_raw));

    let stdout = Arc::new(Mutex::new(Capture::new(run.cap)));
    let stderr = Arc::new(Mutex::new(Capture::new(run.cap)));
    let flooded = Arc::new((AtomicBool::new(false), Notify::new()));
    let mut drains = tokio::task::JoinSet::new();
    let live = |stream| run.output.clone().map(|sink| (sink, stream));
    if let Some(out) = child.stdout.take() {
        drains.spawn(drain(out, stdout.clone(), output_limit, flooded.clone(), live(OutputStream::Stdout)));
    }
    if let Some(err) = child.stderr.take() {
        drains.spawn(drain(err, stderr.clone(), output_limit, flooded.clone(), live(OutputStream::Stderr)));
    }

    // The tree's CPU time, where its cgroup counts it: an rlimit holds each process to the
    // limit, this holds all of them together.
    let cpu_limit = Duration::from_secs(run.sandbox.policy().cpu_seconds);
    let mut over_cpu = false;
    let cpu_spent = async {
        match sandboxed.job.as_ref() {
            Some(job) if job.cpu_used().is_some() => loop {
                tokio::time::sleep(CPU_POLL).await;
                if job.cpu_used().is_some_and(|used| used > cpu_limit) {
                    break;
                }
            },
            _ => std::future::pending().await,
        }
    };
    let waited = tokio::select! {
        waited = tokio::time::timeout(run.timeout, child.wait()) => waited,
        () = flooded.1.notified() => {
            group.kill();
            Ok(child.wait().await)
        }
        () = cpu_spent => {
            over_cpu = true;
            group.kill();
            Ok(child.wait().await)
        }
    };
    // Whether the command finished or not, nothing it started may outlive the call (and a
    // background child would keep the pipes open forever).
    group.kill();
    let status = match waited {
        Ok(Ok(status)) => Some(status),
        Ok(Err(e)) => return Err(Error::io(program_name, e)),
        Err(_) => {
            // Reap the killed leader so it does not linger as a zombie.
            let _ = child.wait().await;
            None
        }
    };
    let drained = tokio::time::timeout(DRAIN_GRACE, async { while drains.join_next().await.is_some() {} }).await;
    if drained.is_err() {
        drains.abort_all();
    }
    let hit = match sandboxed.job {
        Some(job) => job.finish(),
        None => crate::cgroup::Hit::default(),
    };

    let (stdout, stderr) = (take(&stdout), take(&stderr));
    let Some(status) = status else {
        return Err(Error::Timeout {
            tool: run.tool.to_owned(),
            after: run.timeout,
            output: render_streams(&stdout, &stderr, run.cap).0,
        });
    };
    if sandboxed.confined
        && let Some(reason) = setup_failure(status.code(), &stderr.text())
    {
        return Err(Error::Sandbox { reason: format!("the sandbox did not start: {reason}") });
    }
    let policy = run.sandbox.policy();
    let stopped = if flooded.0.load(Ordering::SeqCst) {
        Some(format!(
            "it printed more than {} bytes on one stream; print less (pipe through tail, or write to a file)",
            output_limit
        ))
    } else if over_cpu {
        Some(format!(
            "its processes together used more than the CPU time limit of {} s and were killed",
            policy.cpu_seconds
        ))
    } else if hit.out_of_memory {
        Some(format!("it used more than the memory limit of {} MiB and was killed", policy.memory_bytes >> 20))
    } else if hit.process_limit {
        Some(format!("it tried to run more than {} processes at once; further forks failed", policy.max_processes))
    } else if sandboxed.confined
        && matches!(status.code(), Some(code) if code == 128 + SIGXCPU || code == 128 + 9)
        && stderr.text().is_empty()
        && started.elapsed() >= Duration::from_secs(policy.cpu_seconds)
    {
        Some(format!("it used more than the CPU time limit of {} s and was killed", policy.cpu_seconds))
    } else {
        None
    };
    Ok(Finished { status, stdout, stderr, duration: started.elapsed(), stopped })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scrubbing_keeps_only_allow_listed_variables() {
        let parent = [
            ("PATH", "/bin"),
            ("HOME", "/home/a"),
            ("OLLAMA_API_KEY", "secret"),
            ("AWS_SECRET_ACCESS_KEY", "secret"),
            ("LANG", "C.UTF-8"),
        ]
        .map(|(k, v)| (OsString::from(k), OsString::from(v)));
        let env = scrubbed_env(parent);
        let names: Vec<_> = env.iter().map(|(k, _)| k.to_str().unwrap()).collect();
        assert_eq!(names, ["PATH", "HOME", "LANG"]);
    }

    #[test]
    fn scrubbing_supplies_a_path_when_the_agent_has_none() {
        let env = scrubbed_env([(OsString::from("SECRET"), OsString::from("x"))]);
        assert_eq!(env, [(OsString::from("PATH"), OsString::from(DEFAULT_PATH))]);
    }

    #[test]
    fn find_program_misses_on_a_path_without_it() {
        let empty = tempfile::TempDir::new().unwrap();
        assert_eq!(find_program("python3", Some(empty.path().as_os_str())), None);
        assert!(find_program("sh", None).is_some());
    }

    #[test]
    fn find_program_ignores_files_that_are_not_executable() {
        let dir = tempfile::TempDir::new().unwrap();
        std::fs::write(dir.path().join("tool"), "#!/bin/sh\n").unwrap();
        assert_eq!(find_program("tool", Some(dir.path().as_os_str())), None);
        std::fs::set_permissions(dir.path().join("tool"), std::fs::Permissions::from_mode(0o755)).unwrap();
        assert_eq!(find_program("tool", Some(dir.path().as_os_str())), Some(dir.path().join("tool")));
    }

    #[test]
    fn requested_timeout_is_capped_by_the_context() {
        let limit = Duration::from_secs(60);
        assert_eq!(effective_timeout(None, limit), limit);
        assert_eq!(effective_timeout(Some(5), limit), Duration::from_secs(5));
        assert_eq!(effective_timeout(Some(600), limit), limit);
    }

    #[test]
    fn capture_keeps_everything_under_the_cap() {
        let mut c = Capture::new(10);
        c.push(b"hello");
        assert_eq!(c.render(10), ("hello".to_owned(), false));
    }

    #[test]
    fn capture_keeps_head_and_tail_and_counts_the_middle() {
        let mut c = Capture::new(8);
        for chunk in [&b"0123456789"[..], b"abcdefghij", b"KLMNOPQRST"] {
            c.push(chunk);
        }
        let (text, truncated) = c.render(8);
        assert!(truncated);
        assert_eq!(text, "0123\n[... 22 bytes omitted ...]\nQRST");
    }

    #[test]
    fn budget_gives_the_small_stream_all_it_has() {
        assert_eq!(split_budget(100, 10, 20), (10, 20));
        assert_eq!(split_budget(100, 10, 500), (10, 90));
        assert_eq!(split_budget(100, 500, 500), (50, 50));
    }

    #[test]
    fn cuts_do_not_split_characters() {
        let mut c = Capture::new(64);
        c.push("ééééééééééé".as_bytes());
        let (text, truncated) = c.render(5);
        assert!(truncated);
        assert!(!text.contains('\u{fffd}'), "{text}");
    }
}
