//! The OS sandbox every process a tool starts runs in: bubblewrap (`bwrap`).
//!
//! Inside, a process sees a read-only system (`/usr`, `/etc` with its secrets masked, `/opt`,
//! and the configured `read_only_paths`, each at its own path), the workspace as the only
//! writable bind (at its real path, so paths mean the same inside and out), a private `/tmp`
//! of bounded size, a private `/proc` with `/proc/sys` read-only, and no `/sys`, `/run`,
//! `/home` or `/root`. It runs in new user, pid, ipc, uts, cgroup and mount namespaces and,
//! unless the policy allows the network, a network namespace with only loopback; with no
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
//! Refusal, not fallback: when bubblewrap is missing or cannot create its namespaces (user
//! namespaces disabled, a container's seccomp profile), every process tool is refused with
//! [`Error::Sandbox`] saying why and how to fix it. Running unconfined takes an explicit
//! [`SandboxMode::Unconfined`] in the configuration.
//!
//! The command line is `sh -c WRAPPER sh FILTER CGROUP.. -- prlimit LIMITS -- bwrap ARGS --
//! PROGRAM ARGS`: the small shell wrapper moves itself into the call's cgroups, then `exec`s
//! the rest with the seccomp program open on descriptor 3, which bwrap reads. No unsafe code
//! and no helper binary of our own are needed.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

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
        }
    }
}

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
}

impl std::fmt::Debug for Sandbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sandbox").field("policy", &self.policy).field("ready", &self.ready.initialized()).finish()
    }
}

/// How the sandbox looks on this host, found once.
struct Prepared {
    sh: PathBuf,
    prlimit: PathBuf,
    bwrap: PathBuf,
    /// The seccomp program bwrap reads from descriptor 3; None where none is built (not x86_64).
    seccomp: Option<tempfile::TempPath>,
    cgroups: crate::cgroup::Cgroups,
    /// bwrap's arguments up to the per-call ones.
    base: Vec<OsString>,
    root: bool,
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
}

/// The command line to spawn for a [`Spec`], and the call's cgroup (removed by
/// [`Job::finish`]).
pub(crate) struct Command {
    pub program: PathBuf,
    pub args: Vec<OsString>,
    /// The whole environment of the spawned process.
    pub env: Vec<(OsString, OsString)>,
    pub job: Option<crate::cgroup::Job>,
    pub confined: bool,
}

impl Sandbox {
    pub fn new(policy: SandboxPolicy) -> Self {
        Self { policy, ready: OnceCell::new() }
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
        layers.push(if p.seccomp.is_some() { "seccomp filter" } else { "no seccomp filter (not x86_64)" }.to_owned());
        layers.push(p.cgroups.describe());
        layers.push(if self.policy.network { "host network" } else { "no network" }.to_owned());
        Ok(layers.join(", "))
    }

    async fn prepared(&self) -> Result<Arc<Prepared>> {
        self.ready.get_or_try_init(|| prepare(&self.policy)).await.cloned()
    }

    /// The command line that runs `spec` confined (or, unconfined, as itself).
    pub(crate) async fn command(&self, spec: Spec<'_>) -> Result<Command> {
        if self.policy.mode == SandboxMode::Unconfined {
            let mut env = process::scrubbed_env(std::env::vars_os());
            let path = env.iter().find(|(k, _)| k == "PATH").map(|(_, v)| v.clone());
            let program = process::find_program(spec.program, path.as_deref()).ok_or_else(|| {
                missing(spec.program, spec.hint, path.as_deref().map(|p| p.to_string_lossy().into_owned()))
            })?;
            env.extend(spec.env);
            return Ok(Command { program, args: spec.args, env, job: None, confined: false });
        }
        let prepared = self.prepared().await?;
        confined(&self.policy, &prepared, spec)
    }
}

/// The sandboxed command line of `spec` on a prepared host.
fn confined(policy: &SandboxPolicy, p: &Prepared, spec: Spec<'_>) -> Result<Command> {
    let program = process::find_program(spec.program, Some(policy.path.as_ref()))
        .ok_or_else(|| missing(spec.program, spec.hint, Some(policy.path.clone())))?;
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
    args.extend(["--bind".into(), spec.workspace.as_os_str().to_owned(), spec.workspace.as_os_str().to_owned()]);
    // Everything is mounted: the root (bwrap's tmpfs) becomes read-only too.
    args.extend(["--remount-ro".into(), "/".into()]);
    args.extend(["--chdir".into(), spec.cwd.as_os_str().to_owned()]);
    if p.seccomp.is_some() {
        args.extend(["--seccomp".into(), "3".into()]);
    }
    // The sandbox's own environment: a PATH that exists inside, a HOME and TMPDIR that are
    // writable, the locale the caller chose, and the tool's own variables; nothing else.
    let mut env: Vec<(OsString, OsString)> = vec![
        ("PATH".into(), policy.path.clone().into()),
        ("HOME".into(), "/tmp".into()),
        ("TMPDIR".into(), "/tmp".into()),
    ];
    let scrubbed = process::scrubbed_env(std::env::vars_os());
    env.extend(scrubbed.into_iter().filter(|(k, _)| k == "LANG" || k == "LC_ALL" || k == "TERM"));
    env.extend(spec.env);
    for (k, v) in env {
        args.extend(["--setenv".into(), k, v]);
    }
    args.push("--".into());
    args.push(program.into_os_string());
    args.extend(spec.args);
    let outer = vec![("PATH".into(), "/usr/bin:/bin".into())];
    Ok(Command { program: p.sh.clone(), args, env: outer, job, confined: true })
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
    let prepared = Arc::new(Prepared { sh, prlimit, bwrap, seccomp, cgroups, base: base_args(policy), root });
    probe(&prepared, policy).await?;
    tracing::info!(
        bwrap = %prepared.bwrap.display(), seccomp = prepared.seccomp.is_some(), cgroups = %prepared.cgroups.describe(),
        network = policy.network, "tool sandbox ready"
    );
    Ok(prepared)
}

/// bwrap's arguments that are the same for every call.
fn base_args(policy: &SandboxPolicy) -> Vec<OsString> {
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
    };
    let cmd = confined(policy, prepared, spec)?;
    let out = tokio::time::timeout(
        Duration::from_secs(20),
        tokio::process::Command::new(&cmd.program).args(&cmd.args).env_clear().envs(cmd.env.clone()).output(),
    )
    .await;
    if let Some(job) = cmd.job {
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
