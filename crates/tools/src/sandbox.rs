//! The OS sandbox every process a tool starts runs in: bubblewrap (`bwrap`).
//!
//! Inside, a process sees a read-only system (`/usr`, `/etc` with its secrets masked, `/opt`,
//! and the configured `read_only_paths`, each at its own path), the workspace as the only
//! writable bind (at its real path, so paths mean the same inside and out), a private `/tmp`
//! of bounded size, a private `/proc` with `/proc/sys` read-only, no `/sys`, `/home` or
//! `/root`, and in `/run` only the file tools' program ([`TOOL_EXEC`]). It runs in new user,
//! pid, ipc, uts, cgroup and mount namespaces and, unless the policy allows the network, a
//! network namespace with only loopback; with no
//! capabilities, no new privileges (setuid binaries do not elevate), no nested user
//! namespaces, and a seccomp filter that refuses ptrace, mounts, module and kexec calls, BPF,
//! perf, keyrings, io_uring, namespace creation and other kernel attack surface.
//!
//! Resources: `prlimit` sets CPU seconds, file size, open files and no core dumps (and address
//! space and process count where cgroups cannot); a cgroup per call (v1 or v2, where this
//! process may create one) bounds memory and the number of processes of the whole tree. The
//! caller's wall-clock timeout kills the outer `bwrap`, which tears the pid namespace down
//! with everything in it; output past [`SandboxPolicy::max_output_bytes`] stops the call too.
//!
//! Network: none, or the host's for every call (`network`), or for the calls of the tools of
//! `[sandbox.proxy]` only the registries it allows, through [`crate::proxy`].
//!
//! Refusal, not fallback: when bubblewrap is missing or cannot create its namespaces (user
//! namespaces disabled, a container's seccomp profile), every process tool is refused with
//! [`Error::Sandbox`] saying why and how to fix it. Running unconfined takes an explicit
//! [`SandboxMode::Unconfined`] in the configuration.
//!
//! The command line is `sh -c WRAPPER sh FILTER CGROUP.. -- prlimit LIMITS -- bwrap ARGS --
//! sh -c LAUNCHER`: the small shell wrapper moves itself into the call's cgroups, then `exec`s
//! the rest with the seccomp program open on descriptor 3, which bwrap reads. Inside, the
//! launcher reads the call from stdin (one line of script that changes to the call's
//! directory, exports its variables and `exec`s its program, every word single-quoted) and
//! runs it; what follows that line on stdin is the program's input. No unsafe code and no
//! helper binary of our own are needed.
//!
//! Warm sandboxes: because the call comes on stdin, a sandbox can be started before its call
//! is known. Making the namespaces is most of a sandbox's cost (some 15 ms here, against 1-3
//! ms for the program itself), so after each call in a workspace the next sandbox for that
//! workspace is started ahead ([`SandboxPolicy::warm`] of them, one per workspace, each
//! stopped after [`SandboxPolicy::warm_ttl`] unused). Every call still gets a sandbox of its
//! own, used once: nothing a call leaves behind (processes, /tmp) reaches the next. A warm
//! sandbox is used only while its workspace is the same directory (device and inode) and it
//! is still alive.

use std::collections::HashMap;
use std::ffi::OsString;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tokio::io::AsyncWriteExt;
use tokio::process::Child;
use tokio::sync::OnceCell;

use crate::error::{Error, Result};
use crate::process;

/// How a tool's processes are confined.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum SandboxMode {
    /// bubblewrap; when it cannot run, process tools are refused.
    #[default]
    Bubblewrap,
    /// Only the workspace checks, the scrubbed environment, the process group and the timeout.
    /// Never chosen automatically: for hosts that cannot run bubblewrap, and trusted work.
    Unconfined,
}

/// What a sandboxed call may use.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SandboxPolicy {
    pub mode: SandboxMode,
    /// Share the host's network (package installs); otherwise only a private loopback.
    pub network: bool,
    /// Memory of the whole process tree (a cgroup; per process address space without one).
    pub memory_bytes: u64,
    /// CPU seconds per process.
    pub cpu_seconds: u64,
    /// Processes and threads of the whole tree (a cgroup; per user without one).
    pub max_processes: u64,
    /// Largest file a process may write.
    pub max_file_bytes: u64,
    /// Size of the private /tmp.
    pub tmp_bytes: u64,
    /// A call that prints more than this on one stream is stopped.
    pub max_output_bytes: u64,
    /// Host paths visible read-only at the same place, besides /usr, /etc and /opt (e.g. a
    /// toolchain under /home). Paths that do not exist are left out.
    pub read_only_paths: Vec<PathBuf>,
    /// PATH inside the sandbox; programs are looked up on it.
    pub path: String,
    /// The bubblewrap program: a name looked up on this process's PATH, or a path.
    pub bwrap: String,
    /// Sandboxes kept started ahead of their call, at most one per workspace; 0 starts each
    /// sandbox when its call comes.
    pub warm: usize,
    /// A warm sandbox unused for this long is stopped.
    pub warm_ttl: Duration,
    /// The program that runs the file tools inside the sandbox ([`TOOL_EXEC`]); None looks for
    /// it beside this process's executable (or one directory up, where test binaries live).
    pub tool_exec: Option<PathBuf>,
    /// Per cloud provider (`kubernetes`, `aws`, `gcp`, `azure`), what its CLI's calls are
    /// given and no other call is.
    pub cloud: std::collections::BTreeMap<String, CloudAccess>,
    /// The registry proxy: the tools whose calls may reach the hosts it allows.
    pub proxy: crate::proxy::ProxyPolicy,
}

/// A cloud CLI's credentials: variables, and files bound read-only at their own paths in the
/// sandbox of its calls only (which is then started for the call, not ahead: a sandbox made
/// ahead does not know whose call it will get).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CloudAccess {
    pub env: Vec<(String, String)>,
    pub files: Vec<PathBuf>,
}

impl Default for SandboxPolicy {
    fn default() -> Self {
        Self {
            mode: SandboxMode::Bubblewrap,
            network: false,
            memory_bytes: 2 << 30,
            cpu_seconds: 600,
            max_processes: 256,
            max_file_bytes: 1 << 30,
            tmp_bytes: 256 << 20,
            max_output_bytes: 64 << 20,
            read_only_paths: Vec::new(),
            path: "/usr/local/bin:/usr/bin:/bin".to_owned(),
            bwrap: "bwrap".to_owned(),
            warm: 4,
            warm_ttl: Duration::from_secs(60),
            tool_exec: None,
            cloud: std::collections::BTreeMap::new(),
            proxy: crate::proxy::ProxyPolicy::default(),
        }
    }
}

/// The file tools' program, run inside the sandbox like any other (see `crate::confined`).
pub const TOOL_EXEC: &str = "turbo-tool-exec";

/// Where [`TOOL_EXEC`] is inside every sandbox (bound read-only): a place of its own, so that
/// none of the host directories above the program's real path appear inside.
pub(crate) const TOOL_EXEC_INSIDE: &str = "/run/turbo-tool-exec";

/// Exit code of the wrapper when it cannot join the call's cgroup.
const WRAPPER_FAILED: i32 = 125;

/// Joins the cgroups named before `--`, then runs the rest with the seccomp program (its
/// first argument) on descriptor 3.
const WRAPPER: &str = r#"f=$1; shift
while [ "$#" -gt 0 ] && [ "$1" != -- ]; do
  echo $$ > "$1" || { echo "turbo-sandbox: cannot join the cgroup $1" >&2; exit 125; }
  shift
done
shift
exec "$@" 3<"$f""#;

/// Runs inside the sandbox: reads the call's script, one line (the shell's `read` takes no
/// byte past it, so the rest of stdin is the program's), and evaluates it. A newline inside a
/// word is written as `$nl`, outside the quotes.
const LAUNCHER: &str = "nl='\n'; IFS= read -r s || exit 125; eval \"$s\"";

/// Prefix of bubblewrap's own error messages (as opposed to the command's).
const BWRAP_ERROR: &str = "bwrap: ";

/// Files hidden behind an empty file, and directories behind an empty tmpfs, when present.
const MASKED_FILES: &[&str] = &["/etc/shadow", "/etc/gshadow", "/etc/shadow-", "/etc/gshadow-", "/etc/sudoers"];
const MASKED_DIRS: &[&str] = &["/etc/turbo-coder", "/etc/ssl/private", "/etc/sudoers.d"];
/// Top-level entries that are symlinks into /usr on merged-usr systems, directories elsewhere.
const SYSTEM_LINKS: &[&str] = &["/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32"];
const SYSTEM_DIRS: &[&str] = &["/usr", "/etc", "/opt"];

/// The sandbox of one process (a tool-runner): its policy, and what it found at first use.
pub struct Sandbox {
    policy: SandboxPolicy,
    ready: OnceCell<Arc<Prepared>>,
    warm: Arc<Mutex<HashMap<PathBuf, Waiting>>>,
    counts: Counts,
    /// The registry proxy, started at the first call that uses it.
    proxy: Mutex<Option<Arc<crate::proxy::RegistryProxy>>>,
}

/// How calls found their sandbox.
#[derive(Debug, Default)]
struct Counts {
    warm: AtomicU64,
    cold: AtomicU64,
}

/// A sandbox started for a workspace, its launcher waiting on stdin for the call.
struct Waiting {
    child: tokio::process::Child,
    job: Option<crate::cgroup::Job>,
    /// The workspace directory's device and inode when the sandbox bound it.
    identity: (u64, u64),
    born: Instant,
    /// False once the runtime that started it has shut down: its pipes and exit status are
    /// that runtime's to watch, so another runtime must not use it.
    runtime_alive: Arc<AtomicBool>,
}

/// Held by a task on the runtime that started a sandbox ahead; dropped with that runtime.
struct RuntimeAlive(Arc<AtomicBool>);

impl Drop for RuntimeAlive {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Relaxed);
    }
}

impl Waiting {
    /// Stops it: the outer bwrap's death tears the sandbox down (`--die-with-parent`).
    fn discard(mut self) {
        if let Some(pid) = self.child.id().and_then(|id| i32::try_from(id).ok()) {
            let _ = killpg(Pid::from_raw(pid), Signal::SIGKILL);
        }
        let _ = self.child.start_kill();
        if let Some(job) = self.job.take() {
            job.finish();
        }
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        let pool = std::mem::take(&mut *self.warm.lock().unwrap_or_else(PoisonError::into_inner));
        pool.into_values().for_each(Waiting::discard);
    }
}

impl std::fmt::Debug for Sandbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sandbox")
            .field("policy", &self.policy)
            .field("ready", &self.ready.initialized())
            .field("counts", &self.counts)
            .finish_non_exhaustive()
    }
}

/// How the sandbox looks on this host, found once.
struct Prepared {
    sh: PathBuf,
    prlimit: PathBuf,
    bwrap: PathBuf,
    /// The seccomp program bwrap reads from descriptor 3; None where none is built (neither x86_64 nor aarch64).
    seccomp: Option<tempfile::TempPath>,
    cgroups: crate::cgroup::Cgroups,
    /// bwrap's arguments up to the per-call ones.
    base: Vec<OsString>,
    root: bool,
    /// [`TOOL_EXEC`], bound read-only at [`TOOL_EXEC_INSIDE`] in every sandbox; None when not
    /// found.
    tool_exec: Option<PathBuf>,
}

/// A process to start in the sandbox: the program (a name looked up on the sandbox's PATH, or
/// an absolute path), its arguments, where it starts and its own variables.
pub(crate) struct Spec<'a> {
    pub program: &'a str,
    /// Said when the program is not installed.
    pub hint: &'a str,
    pub args: Vec<OsString>,
    pub workspace: &'a Path,
    pub cwd: &'a Path,
    pub env: Vec<(OsString, OsString)>,
    /// Host files bound read-only at their own paths in this call's sandbox alone.
    pub binds: &'a [PathBuf],
    /// The call reaches the network through the registry proxy ([`crate::proxy`]).
    pub proxy: bool,
}

/// A call's process, started: its own process group, killed when dropped; the call's cgroup
/// (removed by [`crate::cgroup::Job::finish`]); whether it is confined.
pub(crate) struct Started {
    pub child: tokio::process::Child,
    pub job: Option<crate::cgroup::Job>,
    pub confined: bool,
}

impl Sandbox {
    pub fn new(policy: SandboxPolicy) -> Self {
        Self {
            policy,
            ready: OnceCell::new(),
            warm: Arc::default(),
            counts: Counts::default(),
            proxy: Mutex::default(),
        }
    }

    /// The process-wide sandbox with the default policy, shared by contexts that are not given
    /// one, so its host checks run once.
    pub fn shared_default() -> Arc<Sandbox> {
        static DEFAULT: std::sync::OnceLock<Arc<Sandbox>> = std::sync::OnceLock::new();
        DEFAULT.get_or_init(|| Arc::new(Sandbox::new(SandboxPolicy::default()))).clone()
    }

    pub fn policy(&self) -> &SandboxPolicy {
        &self.policy
    }

    /// Checks that the sandbox can run here, once it has succeeded (a failure is checked again
    /// at the next call, so installing bubblewrap needs no restart). `Ok` describes it.
    pub async fn check(&self) -> Result<String> {
        if self.policy.mode == SandboxMode::Unconfined {
            return Ok("off (sandbox.mode = \"unconfined\"): tools run without OS confinement".to_owned());
        }
        let p = self.prepared().await?;
        let mut layers = vec!["bubblewrap namespaces".to_owned()];
        layers.push(
            if p.seccomp.is_some() {
                "seccomp filter"
            } else {
                "no seccomp filter (built for x86_64 and aarch64 only)"
            }
            .to_owned(),
        );
        layers.push(p.cgroups.describe());
        layers.push(match (self.policy.network, self.policy.proxy.allow.is_empty()) {
            (true, _) => "host network".to_owned(),
            (false, true) => "no network".to_owned(),
            (false, false) => format!(
                "no network but the registry proxy for {} (to {})",
                self.policy.proxy.tools.join(", "),
                self.policy.proxy.allow.join(", ")
            ),
        });
        layers.push(match &p.tool_exec {
            Some(program) => format!("file tools through {} (at {TOOL_EXEC_INSIDE})", program.display()),
            None => format!("file tools refused ({TOOL_EXEC} not found; set sandbox.tool_exec)"),
        });
        Ok(layers.join(", "))
    }

    async fn prepared(&self) -> Result<Arc<Prepared>> {
        self.ready.get_or_try_init(|| prepare(&self.policy)).await.cloned()
    }

    /// Checks that the file tools' program is bound in the sandboxes ([`TOOL_EXEC_INSIDE`]), or
    /// refuses saying where it was looked for.
    pub(crate) async fn tool_exec(&self) -> Result<()> {
        self.prepared().await?.tool_exec.as_ref().map(|_| ()).ok_or_else(|| Error::Sandbox {
            reason: format!(
                "the file tools run inside the sandbox through {TOOL_EXEC}, which is not installed: put it beside \
                 this program ({}) or set sandbox.tool_exec to its path",
                std::env::current_exe().map(|p| p.display().to_string()).unwrap_or_else(|e| e.to_string())
            ),
        })
    }

    /// Calls served by a sandbox started ahead, and calls that started their own.
    pub fn warm_and_cold_starts(&self) -> (u64, u64) {
        (self.counts.warm.load(Ordering::Relaxed), self.counts.cold.load(Ordering::Relaxed))
    }

    /// Starts `spec` confined (or, unconfined, as itself), `stdin` written to its input and
    /// then closed (no input: an empty one).
    pub(crate) async fn start(&self, spec: Spec<'_>, stdin: Option<Vec<u8>>) -> Result<Started> {
        if self.policy.mode == SandboxMode::Unconfined {
            let mut env = process::scrubbed_env(std::env::vars_os());
            let path = env.iter().find(|(k, _)| k == "PATH").map(|(_, v)| v.clone());
            let program = process::find_program(spec.program, path.as_deref()).ok_or_else(|| {
                missing(spec.program, spec.hint, path.as_deref().map(|p| p.to_string_lossy().into_owned()))
            })?;
            env.extend(spec.env);
            let mut child = spawn(&program, &spec.args, &env, spec.cwd)?;
            feed(&mut child, stdin.unwrap_or_default());
            return Ok(Started { child, job: None, confined: false });
        }
        let prepared = self.prepared().await?;
        let proxy = if spec.proxy && !self.policy.network {
            self.tool_exec().await?;
            Some(self.registry_proxy()?)
        } else {
            None
        };
        let script = script(&self.policy, &spec, proxy.is_some())?;
        // A sandbox started ahead has neither the call's own files nor the proxy's socket.
        let own = !spec.binds.is_empty() || proxy.is_some();
        let warm = if own { None } else { self.take_warm(spec.workspace) };
        let waiting = match warm {
            Some(w) => {
                self.counts.warm.fetch_add(1, Ordering::Relaxed);
                w
            }
            None => {
                self.counts.cold.fetch_add(1, Ordering::Relaxed);
                let proxy = proxy.as_ref().map(|p| p.socket());
                waiting(&self.policy, &prepared, spec.workspace, spec.binds, proxy)?
            }
        };
        let Waiting { mut child, job, .. } = waiting;
        feed(&mut child, launcher_input(script, stdin));
        // A call with a sandbox of its own left the workspace's sandbox started ahead where it was.
        if !own {
            self.start_ahead(&prepared, spec.workspace);
        }
        Ok(Started { child, job, confined: true })
    }

    /// The registry proxy, started now if it is not running.
    fn registry_proxy(&self) -> Result<Arc<crate::proxy::RegistryProxy>> {
        let mut proxy = self.proxy.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(p) = &*proxy {
            return Ok(p.clone());
        }
        let started = Arc::new(crate::proxy::RegistryProxy::start(self.policy.proxy.clone())?);
        tracing::info!(allow = ?self.policy.proxy.allow, tools = ?self.policy.proxy.tools, "registry proxy started");
        *proxy = Some(started.clone());
        Ok(started)
    }

    /// The sandbox started ahead for `workspace`, if it is still good for it.
    fn take_warm(&self, workspace: &Path) -> Option<Waiting> {
        let mut w = self.warm.lock().unwrap_or_else(PoisonError::into_inner).remove(workspace)?;
        let fresh = w.born.elapsed() < self.policy.warm_ttl;
        let same_dir = identity(workspace).is_some_and(|id| id == w.identity);
        let alive = w.runtime_alive.load(Ordering::Relaxed) && matches!(w.child.try_wait(), Ok(None));
        if fresh && same_dir && alive {
            return Some(w);
        }
        w.discard();
        None
    }

    /// Starts the next sandbox for `workspace`, kept for its call (at most `warm` of them, the
    /// oldest stopped first), and stops it after `warm_ttl` if no call comes.
    fn start_ahead(&self, prepared: &Prepared, workspace: &Path) {
        if self.policy.warm == 0 {
            return;
        }
        let w = match waiting(&self.policy, prepared, workspace, &[], None) {
            Ok(w) => w,
            Err(e) => {
                tracing::debug!(workspace = %workspace.display(), error = %e, "no sandbox started ahead");
                return;
            }
        };
        let born = w.born;
        let runtime_alive = RuntimeAlive(w.runtime_alive.clone());
        let mut pool = self.warm.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(old) = pool.insert(workspace.to_owned(), w) {
            old.discard();
        }
        while pool.len() > self.policy.warm {
            let oldest = pool.iter().min_by_key(|(_, w)| w.born).map(|(k, _)| k.clone());
            match oldest.and_then(|k| pool.remove(&k)) {
                Some(w) => w.discard(),
                None => break,
            }
        }
        drop(pool);
        let (pool, ttl, workspace) = (Arc::downgrade(&self.warm), self.policy.warm_ttl, workspace.to_owned());
        tokio::spawn(async move {
            let _runtime_alive = runtime_alive;
            tokio::time::sleep(ttl).await;
            let Some(pool) = pool.upgrade() else { return };
            let mut pool = pool.lock().unwrap_or_else(PoisonError::into_inner);
            if pool.get(&workspace).is_some_and(|w| w.born == born)
                && let Some(w) = pool.remove(&workspace)
            {
                w.discard();
            }
        });
    }
}

/// Spawns `program` in its own process group (killed when dropped), its stdio piped.
fn spawn(program: &Path, args: &[OsString], env: &[(OsString, OsString)], cwd: &Path) -> Result<Child> {
    tokio::process::Command::new(program)
        .args(args)
        .current_dir(cwd)
        .env_clear()
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // A group of its own so one signal reaches everything the command started (in the
        // sandbox: the outer bwrap, whose death tears down the sandbox's pid namespace).
        .process_group(0)
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| {
            let name = program.display().to_string();
            match e.kind() {
                std::io::ErrorKind::NotFound => {
                    Error::MissingProgram { program: name, hint: "it disappeared; install it again".to_owned() }
                }
                _ => Error::io(name, e),
            }
        })
}

/// Writes `input` to the child's stdin and closes it, on a task of its own so a child that
/// reads slowly (or never) cannot block the caller; a broken pipe means it stopped reading.
fn feed(child: &mut Child, input: Vec<u8>) {
    if let Some(mut stdin) = child.stdin.take() {
        tokio::spawn(async move {
            let _ = stdin.write_all(&input).await;
        });
    }
}

/// The call as the launcher's script: into its directory, its variables, its program (looked
/// up on the sandbox's PATH); every word single-quoted, so nothing in them is interpreted.
/// `proxied`: run by [`TOOL_EXEC`] forwarding the registry proxy's port to its socket, with
/// the proxy variables that package managers read.
fn script(policy: &SandboxPolicy, spec: &Spec<'_>, proxied: bool) -> Result<Vec<u8>> {
    // The file tools' program is only inside (and was checked when the sandbox was prepared).
    let program = if spec.program == TOOL_EXEC_INSIDE {
        PathBuf::from(TOOL_EXEC_INSIDE)
    } else {
        process::find_program(spec.program, Some(policy.path.as_ref()))
            .ok_or_else(|| missing(spec.program, spec.hint, Some(policy.path.clone())))?
    };
    let cwd = spec.cwd.as_os_str().as_bytes();
    let mut s = b"cd -- ".to_vec();
    quote(&mut s, cwd);
    s.extend_from_slice(b" 2>/dev/null || { echo ");
    quote(&mut s, &[b"turbo-sandbox: cannot enter the directory ", cwd].concat());
    s.extend_from_slice(format!(" >&2; exit {WRAPPER_FAILED}; }}; ").as_bytes());
    for (name, value) in &spec.env {
        let name = name.as_bytes();
        let valid = name.first().is_some_and(|c| c.is_ascii_alphabetic() || *c == b'_')
            && name.iter().all(|c| c.is_ascii_alphanumeric() || *c == b'_');
        if !valid {
            return Err(Error::Sandbox {
                reason: format!("'{}' is not a valid environment variable name", String::from_utf8_lossy(name)),
            });
        }
        s.extend_from_slice(b"export ");
        s.extend_from_slice(name);
        s.push(b'=');
        quote(&mut s, value.as_bytes());
        s.extend_from_slice(b"; ");
    }
    let mut words: Vec<OsString> = Vec::new();
    if proxied {
        let (port, url) = (crate::proxy::PROXY_PORT, format!("http://127.0.0.1:{}", crate::proxy::PROXY_PORT));
        for name in
            ["HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy", "npm_config_proxy", "npm_config_https_proxy"]
        {
            s.extend_from_slice(format!("export {name}='{url}'; ").as_bytes());
        }
        s.extend_from_slice(
            format!(
                "export MAVEN_OPTS='-Dhttp.proxyHost=127.0.0.1 -Dhttp.proxyPort={port} -Dhttps.proxyHost=127.0.0.1 \
                 -Dhttps.proxyPort={port}'; "
            )
            .as_bytes(),
        );
        words.extend([TOOL_EXEC_INSIDE, "--proxy", crate::proxy::PROXY_INSIDE, "--"].map(OsString::from));
    }
    words.push(program.into_os_string());
    words.extend(spec.args.iter().cloned());
    s.extend_from_slice(b"exec");
    for word in &words {
        s.push(b' ');
        quote(&mut s, word.as_bytes());
    }
    Ok(s)
}

/// What the launcher reads: the script's line, then the program's input.
fn launcher_input(mut script: Vec<u8>, stdin: Option<Vec<u8>>) -> Vec<u8> {
    script.push(b'\n');
    script.extend(stdin.unwrap_or_default());
    script
}

/// `word` single-quoted for sh, on one line: a `'` ends the quote, is escaped, and a new
/// quote begins; a newline is the launcher's `$nl` between quotes.
fn quote(out: &mut Vec<u8>, word: &[u8]) {
    out.push(b'\'');
    for &b in word {
        match b {
            b'\'' => out.extend_from_slice(b"'\\''"),
            b'\n' => out.extend_from_slice(b"'\"$nl\"'"),
            _ => out.push(b),
        }
    }
    out.push(b'\'');
}

/// A directory's device and inode.
fn identity(dir: &Path) -> Option<(u64, u64)> {
    std::fs::metadata(dir).ok().filter(|m| m.is_dir()).map(|m| (m.dev(), m.ino()))
}

/// Starts a sandbox binding `workspace` (and `binds`, read-only, and the registry proxy's
/// socket at [`crate::proxy::PROXY_INSIDE`]), its launcher waiting on stdin for the call.
fn waiting(
    policy: &SandboxPolicy,
    p: &Prepared,
    workspace: &Path,
    binds: &[PathBuf],
    proxy: Option<&Path>,
) -> Result<Waiting> {
    let identity = identity(workspace).ok_or_else(|| Error::Sandbox {
        reason: format!("the workspace {} is not a directory this process can see", workspace.display()),
    })?;
    if let Some(missing) = binds.iter().find(|b| !b.is_absolute() || !b.exists()) {
        return Err(Error::Sandbox {
            reason: format!(
                "the credential file {} of [sandbox.cloud] does not exist here (or is not an absolute path)",
                missing.display()
            ),
        });
    }
    let job = p.cgroups.job(policy)?;
    let mut args: Vec<OsString> = vec!["-c".into(), WRAPPER.into(), "sh".into()];
    args.push(p.seccomp.as_ref().map_or_else(|| OsString::from("/dev/null"), |f| f.as_os_str().to_owned()));
    if let Some(job) = &job {
        args.extend(job.procs_files().map(PathBuf::into_os_string));
    }
    args.push("--".into());
    args.push(p.prlimit.as_os_str().to_owned());
    args.extend(rlimits(policy, job.as_ref(), p.root));
    args.push("--".into());
    args.push(p.bwrap.as_os_str().to_owned());
    args.extend(p.base.iter().cloned());
    args.extend(["--bind".into(), workspace.as_os_str().to_owned(), workspace.as_os_str().to_owned()]);
    for file in binds {
        args.extend(["--ro-bind".into(), file.as_os_str().to_owned(), file.as_os_str().to_owned()]);
    }
    if let Some(socket) = proxy {
        args.extend(["--ro-bind".into(), socket.as_os_str().to_owned(), crate::proxy::PROXY_INSIDE.into()]);
    }
    // Everything is mounted: the root (bwrap's tmpfs) becomes read-only too.
    args.extend(["--remount-ro".into(), "/".into()]);
    args.extend(["--chdir".into(), workspace.as_os_str().to_owned()]);
    if p.seccomp.is_some() {
        args.extend(["--seccomp".into(), "3".into()]);
    }
    // The sandbox's own environment: a PATH that exists inside, a HOME and TMPDIR that are
    // writable, the locale the caller chose; the call adds its tool's variables, nothing else.
    let mut env: Vec<(OsString, OsString)> = vec![
        ("PATH".into(), policy.path.clone().into()),
        ("HOME".into(), "/tmp".into()),
        ("TMPDIR".into(), "/tmp".into()),
    ];
    let scrubbed = process::scrubbed_env(std::env::vars_os());
    env.extend(scrubbed.into_iter().filter(|(k, _)| k == "LANG" || k == "LC_ALL" || k == "TERM"));
    for (k, v) in env {
        args.extend(["--setenv".into(), k, v]);
    }
    args.extend(["--".into(), p.sh.as_os_str().to_owned(), "-c".into(), LAUNCHER.into()]);
    let outer = [("PATH".into(), "/usr/bin:/bin".into())];
    let child = spawn(&p.sh, &args, &outer, workspace)?;
    Ok(Waiting { child, job, identity, born: Instant::now(), runtime_alive: Arc::new(AtomicBool::new(true)) })
}

fn missing(program: &str, hint: &str, path: Option<String>) -> Error {
    let where_ = path.map(|p| format!(" (looked on PATH {p})")).unwrap_or_default();
    Error::MissingProgram { program: program.to_owned(), hint: format!("{hint}{where_}") }
}

/// The `prlimit` options: always CPU time, file size, open files and core dumps; address
/// space where no memory cgroup bounds the tree; process count where no pids cgroup does and
/// the sandbox is not host root (the kernel exempts root from that limit).
fn rlimits(policy: &SandboxPolicy, job: Option<&crate::cgroup::Job>, root: bool) -> Vec<OsString> {
    let mut out = vec![
        // SIGXCPU at the soft limit (it ends the process unless handled), SIGKILL a second later.
        format!("--cpu={}:{}", policy.cpu_seconds, policy.cpu_seconds + 1),
        format!("--fsize={}", policy.max_file_bytes),
        "--nofile=4096".to_owned(),
        "--core=0".to_owned(),
    ];
    if !job.is_some_and(crate::cgroup::Job::bounds_memory) {
        out.push(format!("--as={}", policy.memory_bytes));
    }
    if !job.is_some_and(crate::cgroup::Job::bounds_processes) && !root {
        out.push(format!("--nproc={}", policy.max_processes));
    }
    out.into_iter().map(OsString::from).collect()
}

/// Finds the programs, writes the seccomp program, sets up the cgroups, and runs `true` in
/// the sandbox once: what fails here would fail every call.
async fn prepare(policy: &SandboxPolicy) -> Result<Arc<Prepared>> {
    let host_path = std::env::var_os("PATH");
    let find = |name: &str, package: &str| {
        process::find_program(name, host_path.as_deref()).ok_or_else(|| Error::Sandbox {
            reason: format!(
                "{name} is not installed (Debian: apt-get install {package}); tools that run processes are refused \
                 until it is"
            ),
        })
    };
    let bwrap = find(&policy.bwrap, "bubblewrap")?;
    let prlimit = find("prlimit", "util-linux")?;
    let sh = find("sh", "dash")?;
    let seccomp = crate::seccomp::program()
        .map(|bytes| {
            let mut file =
                tempfile::Builder::new().prefix("turbo-seccomp-").suffix(".bpf").tempfile().map_err(|e| {
                    Error::Sandbox { reason: format!("cannot write the seccomp program to the temp directory: {e}") }
                })?;
            std::io::Write::write_all(&mut file, &bytes)
                .map_err(|e| Error::Sandbox { reason: format!("cannot write the seccomp program: {e}") })?;
            Ok::<_, Error>(file.into_temp_path())
        })
        .transpose()?;
    let root = nix::unistd::geteuid().is_root();
    let cgroups = crate::cgroup::Cgroups::detect();
    if root && !cgroups.bounds_processes() {
        tracing::warn!(
            "the sandbox runs as host root without a pids cgroup: a fork bomb is bounded only by the call's timeout; \
             run the tool-runner as another user, or give it a cgroup it may write"
        );
    }
    let tool_exec = find_tool_exec(policy);
    if tool_exec.is_none() {
        tracing::warn!("{TOOL_EXEC} not found: file tool calls are refused (set sandbox.tool_exec)");
    }
    let base = base_args(policy, tool_exec.as_deref());
    let prepared = Arc::new(Prepared { sh, prlimit, bwrap, seccomp, cgroups, base, root, tool_exec });
    probe(&prepared, policy).await?;
    tracing::info!(
        bwrap = %prepared.bwrap.display(), seccomp = prepared.seccomp.is_some(), cgroups = %prepared.cgroups.describe(),
        network = policy.network, "tool sandbox ready"
    );
    Ok(prepared)
}

/// [`TOOL_EXEC`]: the configured path, else beside this executable, else one directory up
/// (a test binary in `target/debug/deps` finds the one in `target/debug`); canonical, so
/// bwrap binds the file itself.
fn find_tool_exec(policy: &SandboxPolicy) -> Option<PathBuf> {
    let executable = |p: &Path| process::find_program(&p.to_string_lossy(), None);
    if let Some(configured) = &policy.tool_exec {
        return executable(configured).and_then(|p| std::fs::canonicalize(p).ok());
    }
    let exe = std::env::current_exe().ok()?;
    exe.ancestors()
        .skip(1)
        .take(2)
        .find_map(|dir| executable(&dir.join(TOOL_EXEC)))
        .and_then(|p| std::fs::canonicalize(p).ok())
}

/// bwrap's arguments that are the same for every call.
fn base_args(policy: &SandboxPolicy, tool_exec: Option<&Path>) -> Vec<OsString> {
    let mut a: Vec<OsString> = Vec::new();
    let mut push = |items: &[&str]| a.extend(items.iter().map(OsString::from));
    push(&["--unshare-all", "--unshare-user", "--disable-userns"]);
    if policy.network {
        push(&["--share-net"]);
    }
    push(&["--die-with-parent", "--new-session", "--cap-drop", "ALL", "--clearenv", "--hostname", "turbo-sandbox"]);
    for dir in SYSTEM_DIRS {
        if Path::new(dir).is_dir() {
            push(&["--ro-bind", dir, dir]);
        }
    }
    for link in SYSTEM_LINKS {
        let path = Path::new(link);
        match std::fs::read_link(path) {
            Ok(target) => {
                a.extend(["--symlink".into(), target.into_os_string(), (*link).into()]);
            }
            Err(_) if path.is_dir() => a.extend(["--ro-bind".into(), (*link).into(), (*link).into()]),
            Err(_) => {}
        }
    }
    for extra in &policy.read_only_paths {
        if extra.exists() {
            a.extend(["--ro-bind".into(), extra.as_os_str().to_owned(), extra.as_os_str().to_owned()]);
        }
    }
    for file in MASKED_FILES {
        if Path::new(file).is_file() {
            a.extend(["--ro-bind".into(), "/dev/null".into(), (*file).into()]);
        }
    }
    for dir in MASKED_DIRS {
        if Path::new(dir).is_dir() {
            a.extend(["--tmpfs".into(), (*dir).into()]);
        }
    }
    a.extend(["--dev".into(), "/dev".into(), "--proc".into(), "/proc".into()]);
    // bwrap protects only parts of /proc; the kernel settings must not be writable.
    a.extend(["--ro-bind".into(), "/proc/sys".into(), "/proc/sys".into()]);
    a.extend(["--size".into(), policy.tmp_bytes.to_string().into(), "--tmpfs".into(), "/tmp".into()]);
    if let Some(program) = tool_exec {
        a.extend(["--ro-bind".into(), program.as_os_str().to_owned(), TOOL_EXEC_INSIDE.into()]);
    }
    a
}

/// Runs `true` in the sandbox as a call would.
async fn probe(prepared: &Prepared, policy: &SandboxPolicy) -> Result<()> {
    let tmp =
        tempfile::tempdir().map_err(|e| Error::Sandbox { reason: format!("cannot create a probe directory: {e}") })?;
    let spec = Spec {
        program: "true",
        hint: "install coreutils",
        args: Vec::new(),
        workspace: tmp.path(),
        cwd: tmp.path(),
        env: Vec::new(),
        binds: &[],
        proxy: false,
    };
    let script = script(policy, &spec, false)?;
    let Waiting { mut child, job, .. } = waiting(policy, prepared, tmp.path(), &[], None)?;
    feed(&mut child, launcher_input(script, None));
    let out = tokio::time::timeout(Duration::from_secs(20), child.wait_with_output()).await;
    if let Some(job) = job {
        job.finish();
    }
    let reason = match out {
        Ok(Ok(o)) if o.status.success() => return Ok(()),
        Ok(Ok(o)) => String::from_utf8_lossy(&o.stderr).trim().to_owned(),
        Ok(Err(e)) => e.to_string(),
        Err(_) => "it did not start within 20 s".to_owned(),
    };
    Err(Error::Sandbox {
        reason: format!(
            "bubblewrap cannot start a sandbox here ({reason}). It needs unprivileged user namespaces \
             (sysctl kernel.unprivileged_userns_clone=1 / user.max_user_namespaces > 0; in a container, a seccomp \
             profile that allows them and an unmasked /proc). Tools that run processes are refused until it works; \
             sandbox.mode = \"unconfined\" runs them without OS confinement, for trusted work only"
        ),
    })
}

/// Whether a failed exit is bubblewrap's (or the wrapper's) own failure rather than the
/// command's, and its message.
pub(crate) fn setup_failure(code: Option<i32>, stderr: &str) -> Option<String> {
    let first = stderr.lines().next().unwrap_or_default();
    match code {
        Some(1) if first.starts_with(BWRAP_ERROR) => Some(first.to_owned()),
        Some(WRAPPER_FAILED) if first.starts_with("turbo-sandbox: ") => Some(first.to_owned()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::ffi::OsStringExt;

    use super::*;

    /// Runs the launcher in a plain `sh` (the part of a call that happens inside the sandbox).
    fn launch(spec: &Spec<'_>, stdin: Option<Vec<u8>>) -> std::process::Output {
        let script = script(&SandboxPolicy::default(), spec, false).unwrap();
        let mut child = std::process::Command::new("sh")
            .args(["-c", LAUNCHER])
            .current_dir(spec.workspace)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let input = launcher_input(script, stdin);
        let mut w = child.stdin.take().unwrap();
        // Written while the output is read: a large input would fill both pipes otherwise.
        let writer = std::thread::spawn(move || std::io::Write::write_all(&mut w, &input));
        let out = child.wait_with_output().unwrap();
        writer.join().unwrap().unwrap();
        out
    }

    fn spec<'a>(
        program: &'a str,
        dir: &'a Path,
        cwd: &'a Path,
        args: Vec<OsString>,
        env: Vec<(OsString, OsString)>,
    ) -> Spec<'a> {
        Spec { program, hint: "", args, workspace: dir, cwd, env, binds: &[], proxy: false }
    }

    #[test]
    fn the_launcher_passes_every_word_and_the_input_exactly() {
        let dir = tempfile::tempdir().unwrap();
        let words: Vec<OsString> = vec![
            "%s|".into(),
            "it's".into(),
            "$(touch pwned)".into(),
            "`touch pwned`".into(),
            "a\nb\n".into(),
            "back\\slash".into(),
            "".into(),
            "  spaced  ".into(),
            "-n".into(),
            "'".into(),
            "\"$HOME\"".into(),
            OsString::from_vec(vec![0xff, b'x', 0xfe]),
        ];
        let out = launch(&spec("printf", dir.path(), dir.path(), words.clone(), vec![]), None);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let mut expected = Vec::new();
        for w in &words[1..] {
            expected.extend_from_slice(w.as_bytes());
            expected.push(b'|');
        }
        assert_eq!(out.stdout, expected);
        assert!(!dir.path().join("pwned").exists(), "nothing in a word was run");

        // What follows the script is the program's input, to the byte.
        let input: Vec<u8> = (0..=255u8).cycle().take(200_000).collect();
        let out = launch(&spec("cat", dir.path(), dir.path(), vec![], vec![]), Some(input.clone()));
        assert!(out.stdout == input, "cat read {} bytes of {}", out.stdout.len(), input.len());
    }

    #[test]
    fn the_launcher_enters_the_directory_and_exports_the_variables() {
        let dir = tempfile::tempdir().unwrap();
        let sub = dir.path().join("it's a dir");
        std::fs::create_dir(&sub).unwrap();
        let env = vec![("GREETING".into(), "x'y\nz $HOME".into())];
        let args = vec!["-c".into(), "pwd; printf %s \"$GREETING\"".into()];
        let out = launch(&spec("sh", dir.path(), &sub, args.clone(), env), None);
        let text = String::from_utf8_lossy(&out.stdout);
        assert_eq!(text, format!("{}\nx'y\nz $HOME", sub.display()));

        let gone = dir.path().join("gone");
        let out = launch(&spec("sh", dir.path(), &gone, args.clone(), vec![]), None);
        assert_eq!(out.status.code(), Some(WRAPPER_FAILED));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(setup_failure(out.status.code(), &err).is_some_and(|m| m.contains("gone")), "{err}");

        let bad = vec![("A=B".into(), "x".into())];
        let err = script(&SandboxPolicy::default(), &spec("sh", dir.path(), dir.path(), args, bad), false).unwrap_err();
        assert!(err.to_string().contains("'A=B' is not a valid environment variable name"), "{err}");
    }
}
