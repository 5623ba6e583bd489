//! A cgroup per sandboxed call, where this process may make one: it bounds the memory and the
//! number of processes of the whole process tree (an rlimit bounds each process only, and the
//! process count not at all for host root), tells afterwards whether a bound was hit, and
//! counts the CPU time of the whole tree, which the caller holds to the CPU limit (the kernel
//! has no such bound for a group).
//!
//! Found at start from `/proc/self/cgroup`: a controller mounted on its own (cgroup v1,
//! `/sys/fs/cgroup/<controller>/<our path>`) is preferred, else the unified hierarchy (v2)
//! when the controller can be enabled below our cgroup. Calls get
//! `<our cgroup>/turbo-sandbox/job-<pid>-<n>`; the wrapper moves the sandbox into it before
//! `exec`, and [`Job::finish`] reads the events and removes it. Without a usable controller
//! the sandbox falls back to rlimits, and says so.
//!
//! On v2 a cgroup that holds processes of its own cannot hand controllers to children (the
//! kernel answers EBUSY; only the root is exempt), which is where a service usually runs, in a
//! container or a systemd unit. Then this cgroup's processes move into a leaf,
//! `<our cgroup>/turbo-runner`, as a container's init does for nested containers, and the jobs'
//! parent sits beside it; a process started later in that leaf uses the same layout.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::error::{Error, Result};
use crate::sandbox::SandboxPolicy;

const PARENT: &str = "turbo-sandbox";
/// On v2, where this cgroup's own processes go so that it can enable controllers for jobs.
const LEAF: &str = "turbo-runner";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Controller {
    Pids,
    Memory,
    /// CPU time accounting: v1 `cpuacct`; on v2 every cgroup's `cpu.stat` has it.
    CpuAcct,
}

impl Controller {
    fn name(self) -> &'static str {
        match self {
            Controller::Pids => "pids",
            Controller::Memory => "memory",
            Controller::CpuAcct => "cpuacct",
        }
    }
}

/// Where one controller's job cgroups go.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Base {
    /// `.../turbo-sandbox`.
    dir: PathBuf,
    v2: bool,
}

/// The controllers this process can use for its sandboxes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Cgroups {
    pids: Option<Base>,
    memory: Option<Base>,
    /// A v1 `cpuacct` hierarchy; v2 jobs count CPU time in their own directory.
    cpuacct: Option<Base>,
}

impl Cgroups {
    /// Looks at this process's cgroups and prepares `turbo-sandbox` below them where it may.
    pub(crate) fn detect() -> Self {
        let Ok(membership) = std::fs::read_to_string("/proc/self/cgroup") else { return Self::default() };
        let find = |c: Controller| {
            let base = v1_base(&membership, c).or_else(|| v2_base(&membership, c))?;
            match prepare_base(&base, c) {
                Ok(()) => Some(base),
                Err(reason) => {
                    tracing::debug!(controller = c.name(), dir = %base.dir.display(), %reason, "cgroup not usable");
                    None
                }
            }
        };
        let cpuacct =
            v1_base(&membership, Controller::CpuAcct).filter(|base| match prepare_base(base, Controller::CpuAcct) {
                Ok(()) => true,
                Err(reason) => {
                    tracing::debug!(dir = %base.dir.display(), %reason, "cpuacct cgroup not usable");
                    false
                }
            });
        Self { pids: find(Controller::Pids), memory: find(Controller::Memory), cpuacct }
    }

    pub(crate) fn bounds_processes(&self) -> bool {
        self.pids.is_some()
    }

    pub(crate) fn describe(&self) -> String {
        let one = |b: &Option<Base>, c: Controller| match b {
            Some(b) => format!("{} cgroup ({})", c.name(), if b.v2 { "v2" } else { "v1" }),
            None => format!("no {} cgroup (rlimits instead)", c.name()),
        };
        let v2 = [&self.memory, &self.pids].into_iter().flatten().any(|b| b.v2);
        let cpu = if self.cpuacct.is_some() || v2 {
            "CPU time of the whole tree counted"
        } else {
            "CPU time per process only (rlimit)"
        };
        format!("{}, {}, {cpu}", one(&self.memory, Controller::Memory), one(&self.pids, Controller::Pids))
    }

    /// A fresh cgroup for one call, with the policy's bounds; None without controllers.
    pub(crate) fn job(&self, policy: &SandboxPolicy) -> Result<Option<Job>> {
        if self.pids.is_none() && self.memory.is_none() && self.cpuacct.is_none() {
            return Ok(None);
        }
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let name = format!("job-{}-{}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed));
        let mut job = Job { dirs: Vec::new(), memory: None, pids: None, cpu: None };
        let fail = |dir: &Path, e: std::io::Error| Error::Sandbox {
            reason: format!("cannot set up the call's cgroup {}: {e}", dir.display()),
        };
        for (base, c) in
            [(&self.memory, Controller::Memory), (&self.pids, Controller::Pids), (&self.cpuacct, Controller::CpuAcct)]
        {
            let Some(base) = base else { continue };
            let dir = base.dir.join(&name);
            // v2 has one hierarchy: both controllers share the job's directory.
            if !job.dirs.iter().any(|(d, _)| *d == dir) {
                std::fs::create_dir(&dir).map_err(|e| fail(&dir, e))?;
                job.dirs.push((dir.clone(), base.v2));
            }
            let limits: Vec<(&str, String)> = match (c, base.v2) {
                (Controller::CpuAcct, _) => vec![],
                (Controller::Pids, _) => vec![("pids.max", policy.max_processes.to_string())],
                (Controller::Memory, true) => {
                    vec![("memory.max", policy.memory_bytes.to_string()), ("memory.swap.max", "0".into())]
                }
                (Controller::Memory, false) => vec![
                    ("memory.limit_in_bytes", policy.memory_bytes.to_string()),
                    ("memory.memsw.limit_in_bytes", policy.memory_bytes.to_string()),
                ],
            };
            for (i, (file, value)) in limits.iter().enumerate() {
                let written = std::fs::write(dir.join(file), value);
                // The first is the bound; the swap one exists only with swap accounting.
                if i == 0 {
                    written.map_err(|e| fail(&dir.join(file), e))?;
                }
            }
            match c {
                Controller::Pids => job.pids = Some((dir, base.v2)),
                Controller::Memory => job.memory = Some((dir, base.v2)),
                Controller::CpuAcct => job.cpu = Some((dir, false)),
            }
        }
        if job.cpu.is_none() {
            job.cpu = job.dirs.iter().find(|(_, v2)| *v2).cloned();
        }
        Ok(Some(job))
    }
}

/// The cgroup `controller` of v1 membership lines `N:controllers:/path`, when mounted.
fn v1_base(membership: &str, controller: Controller) -> Option<Base> {
    membership.lines().find_map(|line| {
        let mut parts = line.splitn(3, ':');
        let (_, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
        if !controllers.split(',').any(|c| c == controller.name()) {
            return None;
        }
        let mount = Path::new("/sys/fs/cgroup").join(controllers);
        mount
            .join("cgroup.procs")
            .is_file()
            .then(|| Base { dir: mount.join(path.trim_start_matches('/')).join(PARENT), v2: false })
    })
}

/// The v2 cgroup of the `0::/path` line, when the unified hierarchy offers `controller`.
fn v2_base(membership: &str, controller: Controller) -> Option<Base> {
    let path = membership.lines().find_map(|l| l.strip_prefix("0::"))?;
    let mount = ["/sys/fs/cgroup", "/sys/fs/cgroup/unified"]
        .into_iter()
        .map(PathBuf::from)
        .find(|m| m.join("cgroup.controllers").is_file())?;
    let ours = mount.join(path.trim_start_matches('/'));
    // Already moved into the leaf (by this process or an earlier one): the jobs go beside it.
    let ours = match ours.file_name() {
        Some(name) if name == LEAF => ours.parent().map(Path::to_path_buf).unwrap_or(ours),
        _ => ours,
    };
    let offered = std::fs::read_to_string(ours.join("cgroup.controllers")).ok()?;
    offered.split_whitespace().any(|c| c == controller.name()).then(|| Base { dir: ours.join(PARENT), v2: true })
}

/// Creates `turbo-sandbox` (enabling the controller for it and its children on v2), removes
/// job cgroups an earlier process left, and checks a job cgroup can be made.
fn prepare_base(base: &Base, c: Controller) -> std::result::Result<(), String> {
    let enable = |dir: &Path| -> std::result::Result<(), (std::io::Error, String)> {
        let control = dir.join("cgroup.subtree_control");
        let failed = |e: std::io::Error| {
            let text = format!("{}: {e}", control.display());
            (e, text)
        };
        let enabled = std::fs::read_to_string(&control).map_err(failed)?;
        if enabled.split_whitespace().any(|x| x == c.name()) {
            return Ok(());
        }
        std::fs::write(&control, format!("+{}", c.name())).map_err(failed)
    };
    if base.v2 {
        let ours = base.dir.parent().ok_or("no parent cgroup")?;
        match enable(ours) {
            Ok(()) => {}
            // EBUSY: processes of its own. Moved into the leaf, the cgroup may enable it.
            Err((e, _)) if e.raw_os_error() == Some(16) => {
                move_processes_into_leaf(ours)?;
                enable(ours).map_err(|(_, text)| text)?;
            }
            Err((_, text)) => return Err(text),
        }
    }
    match std::fs::create_dir(&base.dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(format!("{}: {e}", base.dir.display())),
    }
    if base.v2 {
        enable(&base.dir).map_err(|(_, text)| text)?;
    }
    // Job cgroups of processes that are gone (killed before they removed them).
    if let Ok(entries) = std::fs::read_dir(&base.dir) {
        for entry in entries.flatten() {
            let owner =
                entry.file_name().to_str().and_then(|n| n.strip_prefix("job-")?.split('-').next()?.parse::<u32>().ok());
            if owner.is_some_and(|pid| !Path::new(&format!("/proc/{pid}")).exists()) {
                let _ = std::fs::remove_dir(entry.path());
            }
        }
    }
    let probe = base.dir.join(format!("probe-{}", std::process::id()));
    std::fs::create_dir(&probe).map_err(|e| format!("{}: {e}", probe.display()))?;
    let limit = match c {
        Controller::Pids => "pids.max",
        Controller::Memory if base.v2 => "memory.max",
        Controller::Memory => "memory.limit_in_bytes",
        Controller::CpuAcct => {
            let counted = probe.join("cpuacct.usage").is_file();
            let _ = std::fs::remove_dir(&probe);
            return if counted { Ok(()) } else { Err(format!("{}: no cpuacct.usage", probe.display())) };
        }
    };
    let written = std::fs::write(probe.join(limit), "max").or_else(|_| std::fs::write(probe.join(limit), "-1"));
    let _ = std::fs::remove_dir(&probe);
    written.map_err(|e| format!("{}: {e}", probe.join(limit).display()))
}

/// Moves every process of the v2 `cgroup` into its child [`LEAF`], so that the cgroup holds
/// none of its own and may enable controllers for its other children.
fn move_processes_into_leaf(cgroup: &Path) -> std::result::Result<(), String> {
    let leaf = cgroup.join(LEAF);
    match std::fs::create_dir(&leaf) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(format!("{}: {e}", leaf.display())),
    }
    let procs = cgroup.join("cgroup.procs");
    let pids = std::fs::read_to_string(&procs).map_err(|e| format!("{}: {e}", procs.display()))?;
    let target = leaf.join("cgroup.procs");
    for pid in pids.lines().map(str::trim).filter(|p| !p.is_empty()) {
        match std::fs::write(&target, pid) {
            Ok(()) => {}
            // Gone meanwhile.
            Err(e) if e.raw_os_error() == Some(3) => {}
            Err(e) => return Err(format!("cannot move process {pid} into {}: {e}", leaf.display())),
        }
    }
    tracing::info!(leaf = %leaf.display(), "moved this cgroup's processes into a leaf, so jobs can get cgroups of their own");
    Ok(())
}

/// One call's cgroup.
#[derive(Debug)]
pub(crate) struct Job {
    /// Directories to remove, with whether each is v2.
    dirs: Vec<(PathBuf, bool)>,
    memory: Option<(PathBuf, bool)>,
    pids: Option<(PathBuf, bool)>,
    /// Where the tree's CPU time is counted, with whether it is v2.
    cpu: Option<(PathBuf, bool)>,
}

/// Which bounds a call ran into.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Hit {
    pub out_of_memory: bool,
    pub process_limit: bool,
}

impl Job {
    /// The `cgroup.procs` files the wrapper writes its pid to.
    pub(crate) fn procs_files(&self) -> impl Iterator<Item = PathBuf> + '_ {
        self.dirs.iter().map(|(d, _)| d.join("cgroup.procs"))
    }

    pub(crate) fn bounds_memory(&self) -> bool {
        self.memory.is_some()
    }

    pub(crate) fn bounds_processes(&self) -> bool {
        self.pids.is_some()
    }

    /// The CPU time the call's processes have used so far, all of them together; None when
    /// this cgroup does not count it.
    pub(crate) fn cpu_used(&self) -> Option<Duration> {
        let (dir, v2) = self.cpu.as_ref()?;
        if *v2 {
            let stat = std::fs::read_to_string(dir.join("cpu.stat")).ok()?;
            let usec = stat.lines().find_map(|l| l.strip_prefix("usage_usec ")?.trim().parse::<u64>().ok())?;
            Some(Duration::from_micros(usec))
        } else {
            let nanos = std::fs::read_to_string(dir.join("cpuacct.usage")).ok()?.trim().parse::<u64>().ok()?;
            Some(Duration::from_nanos(nanos))
        }
    }

    /// Reads which bounds were hit, then removes the cgroup once its processes are gone, off
    /// the call's path: the sandbox's pid namespace is torn down when its first process dies,
    /// and the kernel may take a moment to empty the cgroup.
    pub(crate) fn finish(self) -> Hit {
        let count = |file: PathBuf, key: &str| -> u64 {
            std::fs::read_to_string(file)
                .ok()
                .and_then(|t| t.lines().find_map(|l| l.strip_prefix(key).and_then(|v| v.trim().parse::<u64>().ok())))
                .unwrap_or(0)
        };
        let hit = Hit {
            out_of_memory: self.memory.as_ref().is_some_and(|(d, v2)| {
                let file = if *v2 { "memory.events" } else { "memory.oom_control" };
                count(d.join(file), "oom_kill ") > 0
            }),
            process_limit: self.pids.as_ref().is_some_and(|(d, _)| count(d.join("pids.events"), "max ") > 0),
        };
        let dirs = self.dirs;
        let remove = async move {
            for (dir, _) in &dirs {
                for attempt in 0..40 {
                    match std::fs::remove_dir(dir) {
                        Ok(()) => break,
                        Err(e) if e.kind() == std::io::ErrorKind::NotFound => break,
                        Err(e) if attempt == 39 => tracing::warn!(
                            dir = %dir.display(), error = %e,
                            "cannot remove a sandbox cgroup; it is removed at the next start"
                        ),
                        Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
                    }
                }
            }
        };
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => drop(runtime.spawn(remove)),
            Err(_) => tracing::debug!("no runtime to remove a sandbox cgroup; it is removed at the next start"),
        }
        hit
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v1_controllers_are_found_in_their_own_hierarchy() {
        let membership = "9:name=systemd:/\n8:pids:/\n4:memory:/svc/abc\n2:cpu,cpuacct:/\n0::/\n";
        if Path::new("/sys/fs/cgroup/pids/cgroup.procs").is_file() {
            let pids = v1_base(membership, Controller::Pids).expect("pids is mounted here");
            assert_eq!(pids, Base { dir: "/sys/fs/cgroup/pids/turbo-sandbox".into(), v2: false });
        }
        if Path::new("/sys/fs/cgroup/memory/cgroup.procs").is_file() {
            let memory = v1_base(membership, Controller::Memory).expect("memory is mounted here");
            assert_eq!(memory.dir, PathBuf::from("/sys/fs/cgroup/memory/svc/abc/turbo-sandbox"));
        }
        assert_eq!(v1_base("0::/\n", Controller::Pids), None, "a pure v2 line is no v1 controller");
    }
}
