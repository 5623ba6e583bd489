//! The sandbox's escape suite: each test is one attempt to get out of a tool call (through the
//! shell, Python or the file tools, as a model would ask for them), which must be blocked and
//! reported clearly. They run the real bubblewrap with the real seccomp filter and cgroups.

use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use tempfile::TempDir;
use turbo_tools::{Error, Sandbox, SandboxMode, SandboxPolicy, ToolContext, ToolOutput, Toolbox, Workspace};

/// A workspace inside a directory that also holds a secret beside it, and a context whose
/// sandbox has small bounds, so the resource attacks end fast.
struct Case {
    dir: TempDir,
    ctx: ToolContext,
}

fn policy() -> SandboxPolicy {
    SandboxPolicy {
        memory_bytes: 256 << 20,
        max_processes: 64,
        max_file_bytes: 8 << 20,
        max_output_bytes: 4 << 20,
        cpu_seconds: 60,
        ..SandboxPolicy::default()
    }
}

fn case_with(policy: SandboxPolicy) -> Case {
    let dir = TempDir::new().unwrap();
    fs::create_dir(dir.path().join("ws")).unwrap();
    fs::write(dir.path().join("secret.txt"), "TOP-SECRET-VALUE\n").unwrap();
    let ctx = ToolContext::new(Workspace::open(dir.path().join("ws")).unwrap())
        .with_timeout(Duration::from_secs(30))
        .with_sandbox(Arc::new(Sandbox::new(policy)));
    Case { dir, ctx }
}

fn case() -> Case {
    case_with(policy())
}

impl Case {
    fn ws(&self) -> &Path {
        self.ctx.workspace.root()
    }

    fn secret(&self) -> PathBuf {
        self.dir.path().canonicalize().unwrap().join("secret.txt")
    }

    async fn call(&self, tool: &str, args: Value) -> turbo_tools::Result<ToolOutput> {
        Toolbox::standard().call(tool, &args, &self.ctx).await
    }

    async fn sh(&self, command: &str) -> ToolOutput {
        match self.call("shell_run", json!({"command": command})).await {
            Ok(out) => out,
            Err(e) => panic!("shell_run {command:?} failed to run: {e}"),
        }
    }

    async fn py(&self, code: &str) -> ToolOutput {
        match self.call("python_run", json!({"code": code})).await {
            Ok(out) => out,
            Err(e) => panic!("python_run failed to run: {e}\n{code}"),
        }
    }
}

/// The stdout part of a process tool's output.
fn stdout(out: &ToolOutput) -> &str {
    let rest = out.content.split_once("--- stdout ---\n").map_or("", |(_, r)| r);
    rest.split_once("\n--- stderr ---").map_or(rest, |(o, _)| o)
}

// ---- the filesystem ----

#[tokio::test]
async fn path_traversal_does_not_reach_files_beside_the_workspace() {
    let c = case();
    let secret = c.secret();
    let secret = secret.to_str().unwrap();
    for command in [
        "cat ../secret.txt".to_owned(),
        format!("cat {secret}"),
        "cat %2e%2e/secret.txt".to_owned(),
        "cat ..%2fsecret.txt".to_owned(),
        "cd .. && ls -a && cat secret.txt".to_owned(),
    ] {
        let out = c.sh(&command).await;
        assert!(!out.content.contains("TOP-SECRET"), "{command}: {}", out.content);
        assert!(!out.success, "{command}: {}", out.content);
    }
    let out = c.py("print(open('../secret.txt').read())").await;
    assert!(out.content.contains("FileNotFoundError") && !out.content.contains("TOP-SECRET"), "{}", out.content);
    // The file tools refuse before any open, saying why.
    for path in ["../secret.txt", secret] {
        let err = c.call("fs_read", json!({"path": path})).await.unwrap_err();
        assert!(matches!(err, Error::OutsideWorkspace { .. }), "{path}: {err}");
    }
    let err = c.call("fs_read", json!({"path": "%2e%2e/secret.txt"})).await.unwrap_err();
    assert!(matches!(err, Error::NotFound { .. }), "an encoded path is a plain name: {err}");
}

#[tokio::test]
async fn a_symlink_out_of_the_workspace_leads_nowhere() {
    let c = case();
    let secret = c.secret();
    let out = c.sh(&format!("ln -s {} link && cat link", secret.display())).await;
    assert!(!out.success && !out.content.contains("TOP-SECRET"), "{}", out.content);
    assert!(out.content.contains("No such file"), "{}", out.content);
    // The file tools refuse the link the process left behind.
    let err = c.call("fs_read", json!({"path": "link"})).await.unwrap_err();
    assert!(matches!(err, Error::OutsideWorkspace { .. }), "{err}");
    // Host secrets inside the visible system are masked.
    let shadow = c.sh("ln -s /etc/shadow s && cat s").await;
    assert!(stdout(&shadow).trim().is_empty() && !shadow.content.contains("root:"), "{}", shadow.content);
}

#[tokio::test]
async fn a_hardlink_out_of_the_workspace_cannot_be_made() {
    let c = case();
    let out = c.sh(&format!("ln {} hard", c.secret().display())).await;
    assert!(!out.success, "{}", out.content);
    // The system is another mount: a link across mounts fails.
    let out = c.sh("ln /etc/passwd hard").await;
    assert!(!out.success && out.content.contains("Invalid cross-device link"), "{}", out.content);
    assert!(!c.ws().join("hard").exists());
    assert_eq!(fs::read_to_string(c.secret()).unwrap(), "TOP-SECRET-VALUE\n");
}

#[tokio::test]
async fn the_system_proc_and_sys_are_read_only_or_absent() {
    let c = case();
    let before = fs::read_to_string("/proc/sys/kernel/printk_ratelimit").unwrap();
    let out = c.sh("echo 77 > /proc/sys/kernel/printk_ratelimit").await;
    assert!(!out.success && out.content.contains("Read-only file system"), "{}", out.content);
    assert_eq!(fs::read_to_string("/proc/sys/kernel/printk_ratelimit").unwrap(), before, "host setting unchanged");
    let out = c.sh("echo c > /proc/sysrq-trigger").await;
    assert!(!out.success, "{}", out.content);
    let out = c.sh("ls /sys | wc -l").await;
    assert_eq!(stdout(&out).trim(), "0", "no /sys: {}", out.content);
    let out = c.sh("touch /usr/pwned || touch /etc/pwned || touch /pwned || mkdir /new").await;
    assert!(!out.success && out.content.contains("Read-only file system"), "{}", out.content);
    assert!(!Path::new("/usr/pwned").exists() && !Path::new("/etc/pwned").exists() && !Path::new("/pwned").exists());
    // Only the workspace and a private /tmp are writable.
    let out = c.sh("echo x > /tmp/t && echo y > made && cat /tmp/t").await;
    assert!(out.success, "{}", out.content);
    assert!(c.ws().join("made").exists());
}

#[tokio::test]
async fn the_hosts_environment_and_home_are_not_visible() {
    let c = case();
    // Cargo gives this test process CARGO_* variables; nothing of them may reach a tool.
    assert!(std::env::vars().any(|(k, _)| k.starts_with("CARGO_")));
    let out = c.sh("env; cat /proc/self/environ /proc/1/environ | tr '\\0' '\\n'").await;
    assert!(out.success, "{}", out.content);
    assert!(!out.content.contains("CARGO_"), "{}", out.content);
    let home = std::env::var("HOME").unwrap_or_else(|_| "/root".into());
    let out = c.sh(&format!("ls -a {home}")).await;
    assert!(!out.success && out.content.contains("No such file"), "{}", out.content);
}

// ---- the network ----

#[tokio::test]
async fn no_network_unless_the_policy_allows_it() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let port = listener.local_addr().unwrap().port();
    let code = format!(
        "import socket\nfor host in ['127.0.0.1', '10.0.0.1', '1.1.1.1']:\n    try:\n        \
         socket.create_connection((host, {port}), timeout=2)\n        print(host, 'CONNECTED')\n    \
         except OSError as e:\n        print(host, 'refused', e.errno)\n"
    );
    let c = case();
    let out = c.py(&code).await;
    assert!(!out.content.contains("CONNECTED"), "{}", out.content);
    assert!(listener.accept().is_err(), "the host's listener got a connection");

    let open = case_with(SandboxPolicy { network: true, ..policy() });
    let out = open.py(&code).await;
    assert!(out.content.contains("127.0.0.1 CONNECTED"), "network = true shares the host's: {}", out.content);
}

/// A plain HTTP server on the host's loopback, as a package registry: answers every request
/// with `REGISTRY-OK` and the request's first line. Returns its port.
fn registry() -> u16 {
    use std::io::{BufRead, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            std::thread::spawn(move || {
                let mut reader = std::io::BufReader::new(stream.try_clone().unwrap());
                let mut first = String::new();
                reader.read_line(&mut first).unwrap();
                let mut line = String::new();
                while reader.read_line(&mut line).is_ok_and(|n| n > 2) {
                    line.clear();
                }
                let body = format!("REGISTRY-OK {}\n", first.trim());
                let mut stream = stream;
                let _ = write!(stream, "HTTP/1.0 200 OK\r\nContent-Length: {}\r\n\r\n{body}", body.len());
            });
        }
    });
    port
}

#[tokio::test]
async fn the_registry_proxy_lets_its_tools_reach_the_allowed_hosts_and_nothing_else() {
    let port = registry();
    let proxy = turbo_tools::ProxyPolicy { allow: vec![format!("127.0.0.1:{port}")], tools: vec!["python_run".into()] };
    let c = case_with(SandboxPolicy { proxy, ..policy() });
    assert!(c.ctx.sandbox.check().await.unwrap().contains("registry proxy for python_run"));
    let proxy_port = turbo_tools::PROXY_PORT;
    let code = format!(
        r#"
import os, socket, urllib.request, urllib.error
print("env", os.environ.get("HTTPS_PROXY"))
# Through the proxy (HTTP_PROXY), as pip and npm go: the allowed host answers.
print(urllib.request.urlopen("http://127.0.0.1:{port}/simple/", timeout=10).read().decode().strip())
# Another host, or another port of the same one: 403 naming the setting.
for url in ["http://example.invalid/", "http://127.0.0.1:1/"]:
    try:
        urllib.request.urlopen(url, timeout=10)
        print("REACHED", url)
    except urllib.error.HTTPError as e:
        print("refused", e.code, e.read().decode().strip())
# HTTPS goes as CONNECT: a tunnel to the allowed host, refused to others.
s = socket.create_connection(("127.0.0.1", {proxy_port}), timeout=10)
s.sendall(b"CONNECT 127.0.0.1:{port} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
print("connect", s.recv(1024).decode().splitlines()[0])
s.sendall(b"GET /tunnelled HTTP/1.0\r\n\r\n")
data = b""
while chunk := s.recv(1024):
    data += chunk
print(data.decode().splitlines()[-1])
s = socket.create_connection(("127.0.0.1", {proxy_port}), timeout=10)
s.sendall(b"CONNECT 1.1.1.1:443 HTTP/1.1\r\n\r\n")
print("connect", s.recv(1024).decode().splitlines()[0])
# Past the proxy, no network: the host's loopback is not the sandbox's.
try:
    socket.create_connection(("127.0.0.1", {port}), timeout=2)
    print("DIRECT CONNECTED")
except OSError as e:
    print("direct refused", e.errno)
"#
    );
    let out = c.py(&code).await;
    let text = stdout(&out);
    assert!(out.success, "{}", out.content);
    assert!(text.contains(&format!("env http://127.0.0.1:{proxy_port}")), "{text}");
    assert!(text.contains(&format!("REGISTRY-OK GET http://127.0.0.1:{port}/simple/")), "{text}");
    assert!(text.contains("refused 403 turbo-coder registry proxy: example.invalid:80 is not allowed"), "{text}");
    assert!(text.contains("refused 403 turbo-coder registry proxy: 127.0.0.1:1 is not allowed"), "{text}");
    assert!(text.contains("[sandbox.proxy] allow"), "the refusal says what to change: {text}");
    assert!(text.contains("connect HTTP/1.1 200 Connection established"), "{text}");
    assert!(text.contains("REGISTRY-OK GET /tunnelled HTTP/1.0"), "{text}");
    assert!(text.contains("connect HTTP/1.1 403 Forbidden"), "{text}");
    assert!(text.contains("direct refused") && !text.contains("CONNECTED") && !text.contains("REACHED"), "{text}");

    // A tool that is not the proxy's gets neither its socket nor its variables.
    let out = c.sh("test -e /run/turbo-proxy.sock && echo SOCKET; echo \"proxy=$HTTPS_PROXY\"").await;
    assert_eq!(stdout(&out).trim(), "proxy=", "{}", out.content);
    // The exit code of the program comes through the forwarder.
    let out = c.py("import sys; sys.exit(7)").await;
    assert!(!out.success && out.content.contains('7'), "{}", out.content);
}

// ---- resources ----

#[tokio::test]
async fn a_fork_bomb_is_stopped_at_the_process_limit() {
    let c = case();
    let out = c
        .py("import os, time\nn = 0\ntry:\n    while n < 5000:\n        if os.fork() == 0:\n            \
             time.sleep(60)\n            os._exit(0)\n        n += 1\nexcept OSError as e:\n    \
             print('fork failed after', n, e)\n")
        .await;
    let forks: usize = stdout(&out)
        .split_whitespace()
        .nth(3)
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no fork failure reported: {}", out.content));
    // The call returned (within its 30 s timeout) though the children sleep 60 s: they died with it.
    assert!(forks < 64, "{forks} forks; the limit is 64 processes: {}", out.content);
}

#[tokio::test]
async fn a_memory_bomb_is_stopped_at_the_memory_limit() {
    let c = case();
    let out = c.py("b = bytearray(2 * 1024 * 1024 * 1024)\nfor i in range(0, len(b), 4096):\n    b[i] = 1\nprint('ALLOCATED')\n").await;
    assert!(!out.success && !out.content.contains("ALLOCATED"), "{}", out.content);
    assert!(
        out.content.contains("MemoryError") || out.content.contains("memory limit of 256 MiB"),
        "the output says why: {}",
        out.content
    );
}

#[tokio::test]
async fn an_infinite_loop_is_killed_at_the_timeout_and_at_the_cpu_limit() {
    let c = case();
    let err = c.call("shell_run", json!({"command": "while :; do :; done", "timeout_s": 2})).await.unwrap_err();
    assert!(matches!(err, Error::Timeout { .. }), "{err}");
    let cpu = case_with(SandboxPolicy { cpu_seconds: 1, ..policy() });
    // The CPU limit, not the 30 s timeout (an error), ended it.
    let out = cpu.py("while True:\n    pass\n").await;
    assert!(!out.success && out.content.contains("CPU time limit of 1 s"), "{}", out.content);
}

#[tokio::test]
async fn the_cpu_limit_holds_for_all_of_a_calls_processes_together() {
    let cpu = case_with(SandboxPolicy { cpu_seconds: 1, ..policy() });
    // Eight processes of 0.4 s each, one after the other: each stays under its own rlimit,
    // together they take 3.2 s.
    let spin = "python3 -c 'import time\nwhile time.process_time() < 0.4: pass'";
    let out = cpu.sh(&format!("for i in 1 2 3 4 5 6 7 8; do {spin}; echo spun $i; done")).await;
    assert!(!out.success, "{}", out.content);
    assert!(out.content.contains("processes together used more than the CPU time limit of 1 s"), "{}", out.content);
    assert!(out.content.contains("spun 1") && !out.content.contains("spun 8"), "{}", out.content);
}

#[tokio::test]
async fn endless_output_is_stopped_without_reading_it_all() {
    let c = case();
    let out = c.sh("head -c 10G /dev/zero").await;
    assert!(!out.success, "{}", out.content);
    assert!(out.truncated);
    assert!(out.content.contains("printed more than 4194304 bytes"), "{}", &out.content[..200.min(out.content.len())]);
    assert!(out.content.len() < 20_000, "{} bytes shown", out.content.len());
}

#[tokio::test]
async fn a_file_size_bomb_stops_at_the_file_size_limit() {
    let c = case();
    let out = c.sh("head -c 100M /dev/zero > big; echo exit=$?").await;
    assert!(out.content.contains("File size limit exceeded") || !stdout(&out).contains("exit=0"), "{}", out.content);
    let size = fs::metadata(c.ws().join("big")).map(|m| m.len()).unwrap_or(0);
    assert!(size <= 8 << 20, "{size} bytes written; the limit is 8 MiB");
    let tmp = c.sh("head -c 300M /dev/zero > /tmp/fill; echo exit=$?").await;
    assert!(!stdout(&tmp).contains("exit=0"), "the private /tmp is bounded too: {}", tmp.content);
}

// ---- other processes and privileges ----

#[tokio::test]
async fn the_runner_cannot_be_killed_or_traced_from_inside() {
    let c = case();
    let me = std::process::id();
    let out = c.sh(&format!("kill -9 {me}; kill -9 $PPID; kill -9 1; kill -9 -1; echo still-here")).await;
    // Whatever the shell managed inside its own pid namespace, this process lives on.
    assert!(Path::new(&format!("/proc/{me}")).exists());
    assert!(!out.content.contains("still-here") || out.content.contains("No such process"), "{}", out.content);
    let trace = c
        .py(&format!(
            "import ctypes, os\nlibc = ctypes.CDLL(None, use_errno=True)\nfor pid in (1, {me}, os.getppid()):\n    \
             r = libc.ptrace(16, pid, 0, 0)\n    print(pid, r, ctypes.get_errno())\n"
        ))
        .await;
    for line in stdout(&trace).lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        assert_eq!(fields.get(1), Some(&"-1"), "ptrace attach refused: {}", trace.content);
    }
    assert_eq!(stdout(&trace).lines().count(), 3, "{}", trace.content);
    let ps = c.sh("ls /proc | grep -c '^[0-9]'").await;
    let visible: usize = stdout(&ps).trim().parse().unwrap_or(usize::MAX);
    assert!(visible < 10, "only the sandbox's own processes are visible: {}", ps.content);
}

#[tokio::test]
async fn the_hosts_name_and_its_shared_memory_are_not_reachable() {
    let c = case();
    // A System V shared memory segment of the host (it outlives the process that makes it),
    // which a call in the host's IPC namespace could attach to and read.
    let key = 0x7452_0000 | (std::process::id() & 0xffff);
    let host_python = |code: String| {
        let out = std::process::Command::new("python3").args(["-c", &code]).output().expect("python3 on the host");
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    };
    let libc = "import ctypes; libc = ctypes.CDLL(None, use_errno=True)";
    let id: i64 = host_python(format!("{libc}; print(libc.shmget({key}, 4096, 0o1666))")).parse().unwrap();
    assert!(id >= 0, "the host makes a segment");
    let probe = c
        .py(&format!(
            "{libc}\nimport socket\n\
             print('shm', libc.shmget({key}, 0, 0), ctypes.get_errno())\n\
             print('host', socket.gethostname())\n\
             print('sethostname', libc.sethostname(b'evil', 4), ctypes.get_errno())\n"
        ))
        .await;
    // IPC_RMID is 0.
    host_python(format!("{libc}; print(libc.shmctl({id}, 0, None))"));
    let out = stdout(&probe);
    let line = |name: &str| out.lines().find(|l| l.starts_with(name)).unwrap_or_default().to_string();
    // ENOENT is 2: no segment has that key in the sandbox's own IPC namespace.
    assert_eq!(line("shm "), "shm -1 2", "the host's segment does not exist inside: {}", probe.content);
    assert_eq!(line("host "), "host turbo-sandbox", "a name of its own: {}", probe.content);
    assert!(line("sethostname ").starts_with("sethostname -1"), "and cannot change it: {}", probe.content);
    assert_ne!(host_name(), "evil", "the host's name is untouched");
}

/// The host's name, as the kernel has it.
fn host_name() -> String {
    fs::read_to_string("/proc/sys/kernel/hostname").unwrap().trim().to_string()
}

#[tokio::test]
async fn setuid_binaries_and_capabilities_give_nothing() {
    let c = case();
    let out = c.sh("grep -E '^(NoNewPrivs|CapEff|CapPrm):' /proc/self/status").await;
    let status = stdout(&out);
    assert!(status.contains("NoNewPrivs:\t1"), "{status}");
    assert!(status.contains("CapEff:\t0000000000000000") && status.contains("CapPrm:\t0000000000000000"), "{status}");
    let mount = c.sh("mkdir m && mount -t tmpfs none m").await;
    assert!(!mount.success, "{}", mount.content);
    let userns = c.sh("unshare -U true || unshare -r true").await;
    assert!(!userns.success, "no nested namespaces: {}", userns.content);
    // A setuid-root program cannot raise anything: no new privileges. (Through Python, as the
    // shell's deny-list would refuse `su` before the sandbox is reached.)
    if Path::new("/usr/bin/su").exists() {
        let su = c.py("import subprocess\nr = subprocess.run(['su', 'nobody', '-s', '/bin/sh', '-c', 'id -u'], capture_output=True)\nprint('su exit', r.returncode, r.stderr)\n").await;
        assert!(stdout(&su).starts_with("su exit") && !stdout(&su).starts_with("su exit 0"), "{}", su.content);
    }
}

// ---- refusal ----

#[tokio::test]
async fn without_bubblewrap_process_tools_are_refused_not_run_unconfined() {
    let c = case_with(SandboxPolicy { bwrap: "/nonexistent/bwrap".into(), ..policy() });
    let err = c.call("shell_run", json!({"command": "echo ran > ran.txt"})).await.unwrap_err();
    assert!(matches!(err, Error::Sandbox { .. }) && !err.is_model_correctable(), "{err}");
    assert!(err.to_string().contains("bubblewrap"), "{err}");
    assert!(!c.ws().join("ran.txt").exists());

    // A bubblewrap that cannot create namespaces (as in a locked-down container).
    let fake = c.dir.path().join("fake-bwrap");
    fs::write(&fake, "#!/bin/sh\necho 'bwrap: No permissions to create new namespace' >&2\nexit 1\n").unwrap();
    fs::set_permissions(&fake, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let locked = case_with(SandboxPolicy { bwrap: fake.display().to_string(), ..policy() });
    let err = locked.call("python_run", json!({"code": "open('ran.txt', 'w')"})).await.unwrap_err();
    let message = err.to_string();
    assert!(message.contains("No permissions") && message.contains("user namespaces"), "{message}");
    assert!(!locked.ws().join("ran.txt").exists());
}

#[tokio::test]
async fn file_tools_run_in_the_sandbox_and_are_refused_without_it() {
    // Through the sandbox: each call is served by a sandbox of its own, and answers as in
    // process (output, files changed, the same errors).
    let c = case();
    let out = c.call("fs_write", json!({"path": "a/b.txt", "content": "hello\n"})).await.unwrap();
    assert_eq!(out.files_changed, ["a/b.txt"]);
    assert_eq!(fs::read_to_string(c.ws().join("a/b.txt")).unwrap(), "hello\n");
    let read = c.call("fs_read", json!({"path": "a/b.txt"})).await.unwrap();
    assert!(read.success && read.content.contains("hello"), "{}", read.content);
    let op = json!({"operation": "analyze_file", "parameters": {"path": "a/b.txt"}});
    assert!(c.call("advanced_fs", op).await.unwrap().success);
    let (warm, cold) = c.ctx.sandbox.warm_and_cold_starts();
    assert_eq!(warm + cold, 3, "one sandbox per file tool call");
    let err = c.call("fs_read", json!({"path": "../secret.txt"})).await.unwrap_err();
    assert!(matches!(err, Error::OutsideWorkspace { .. }) && err.is_model_correctable(), "{err}");
    let err = c.call("fs_read", json!({"path": "missing.txt"})).await.unwrap_err();
    assert!(matches!(err, Error::NotFound { ref path } if path == "missing.txt"), "{err}");

    // Without bubblewrap, the file tools are refused like the rest: they no longer run in the
    // runner's own process.
    let none = case_with(SandboxPolicy { bwrap: "/nonexistent/bwrap".into(), ..policy() });
    fs::write(none.ws().join("here.txt"), "x").unwrap();
    for (tool, args) in [
        ("fs_read", json!({"path": "here.txt"})),
        ("fs_list", json!({"path": "."})),
        ("fs_write", json!({"path": "new.txt", "content": "x"})),
        ("advanced_fs", json!({"operation": "backup_files", "parameters": {"paths": ["here.txt"]}})),
    ] {
        let err = none.call(tool, args).await.unwrap_err();
        assert!(matches!(err, Error::Sandbox { .. }) && err.to_string().contains("bubblewrap"), "{tool}: {err}");
    }
    assert!(!none.ws().join("new.txt").exists());

    // Without its program, the file tools are refused with where to put it; the rest run.
    let lost = case_with(SandboxPolicy { tool_exec: Some("/nonexistent/turbo-tool-exec".into()), ..policy() });
    let err = lost.call("fs_list", json!({"path": "."})).await.unwrap_err();
    assert!(err.to_string().contains("turbo-tool-exec") && err.to_string().contains("sandbox.tool_exec"), "{err}");
    assert!(lost.sh("true").await.success);
    assert!(lost.ctx.sandbox.check().await.unwrap().contains("file tools refused"));

    // Unconfined (by configuration only), they run in this process.
    let open = case_with(SandboxPolicy { mode: SandboxMode::Unconfined, ..policy() });
    open.call("fs_write", json!({"path": "n.txt", "content": "x"})).await.unwrap();
    assert_eq!(open.ctx.sandbox.warm_and_cold_starts(), (0, 0));
}

#[tokio::test]
async fn a_cloud_clis_credentials_reach_its_calls_and_no_other() {
    // A stand-in kubectl in the workspace (the host has none) that shows what it was given.
    let dir = TempDir::new().unwrap();
    let ws = dir.path().canonicalize().unwrap().join("ws");
    fs::create_dir_all(ws.join("bin")).unwrap();
    let kubectl = ws.join("bin/kubectl");
    fs::write(&kubectl, "#!/bin/sh\necho \"kubeconfig=$KUBECONFIG\"\ncat \"$KUBECONFIG\"\n").unwrap();
    fs::set_permissions(&kubectl, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let secrets = TempDir::new().unwrap();
    let config = secrets.path().canonicalize().unwrap().join("kubeconfig");
    fs::write(&config, "token: KUBE-SECRET-TOKEN\n").unwrap();
    let access = turbo_tools::CloudAccess {
        env: vec![("KUBECONFIG".into(), config.display().to_string())],
        files: vec![config.clone()],
    };
    let sandbox = SandboxPolicy {
        path: format!("{}:/usr/bin:/bin", ws.join("bin").display()),
        cloud: [("kubernetes".to_string(), access)].into(),
        // A cloud call is permitted only with a network to reach the provider.
        network: true,
        ..policy()
    };
    let c = Case {
        ctx: ToolContext::new(Workspace::open(&ws).unwrap())
            .with_timeout(Duration::from_secs(30))
            .with_sandbox(Arc::new(Sandbox::new(sandbox))),
        dir,
    };
    let monitor = json!({"provider": "kubernetes", "service": "deployments", "operation": "monitor"});
    let out = c.call("cloud_services", monitor.clone()).await.unwrap();
    assert!(out.success && out.content.contains("KUBE-SECRET-TOKEN"), "{}", out.content);
    assert!(out.content.contains(&format!("kubeconfig={}", config.display())), "{}", out.content);

    // No other call sees the file or the variable, whatever it asks for.
    let sh = c.sh(&format!("echo \"kc=$KUBECONFIG\"; cat {}", config.display())).await;
    assert!(!sh.content.contains("KUBE-SECRET") && stdout(&sh).trim() == "kc=", "{}", sh.content);
    let py = c.py(&format!("print(open('{}').read())", config.display())).await;
    assert!(!py.success && !py.content.contains("KUBE-SECRET"), "{}", py.content);
    let err = c.call("fs_read", json!({"path": config.display().to_string()})).await.unwrap_err();
    assert!(matches!(err, Error::OutsideWorkspace { .. }), "{err}");
    // Another provider's call is not given them either.
    fs::copy(&kubectl, ws.join("bin/aws")).unwrap();
    let aws =
        json!({"provider": "aws", "service": "lambda", "operation": "monitor", "parameters": {"function": "web"}});
    let other = c.call("cloud_services", aws).await.unwrap();
    assert!(!other.content.contains("KUBE-SECRET"), "{}", other.content);

    // A credential file that is gone is refused, saying which.
    fs::remove_file(&config).unwrap();
    let err = c.call("cloud_services", monitor).await.unwrap_err();
    assert!(matches!(err, Error::Sandbox { .. }) && err.to_string().contains("kubeconfig"), "{err}");
}

#[tokio::test]
async fn unconfined_is_only_what_the_configuration_asks_for() {
    let c = case_with(SandboxPolicy { mode: SandboxMode::Unconfined, ..policy() });
    let out = c.sh("cat ../secret.txt").await;
    assert!(out.content.contains("TOP-SECRET"), "unconfined sees the host: {}", out.content);
    let mut text = String::new();
    fs::File::open(c.secret()).unwrap().read_to_string(&mut text).unwrap();
    assert_eq!(text, "TOP-SECRET-VALUE\n");
    assert!(c.ctx.sandbox.check().await.unwrap().contains("unconfined"));
    let confined = case();
    let described = confined.ctx.sandbox.check().await.unwrap();
    assert!(described.contains("bubblewrap") && described.contains("no network"), "{described}");
}

// ---- sandboxes started ahead ----

/// The sandboxes this test process started that bind `ws`: their outer bwrap processes (the
/// children of this process; each forks the sandbox's first process, which keeps its command
/// line).
fn sandboxes_binding(ws: &Path) -> Vec<String> {
    let ws = ws.to_str().unwrap();
    let me = std::process::id().to_string();
    fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter(|e| {
            let stat = fs::read_to_string(e.path().join("stat")).unwrap_or_default();
            // pid (comm) state ppid ...
            stat.rsplit_once(") ").and_then(|(_, rest)| rest.split(' ').nth(1)) == Some(me.as_str())
        })
        .filter_map(|e| fs::read(e.path().join("cmdline")).ok())
        .map(|c| String::from_utf8_lossy(&c).replace('\0', " "))
        .filter(|c| c.contains("bwrap") && c.contains(&format!("--bind {ws} {ws}")))
        .collect()
}

#[tokio::test]
async fn a_call_served_by_a_sandbox_started_ahead_still_gets_a_fresh_one() {
    let c = case();
    let first = c.sh("echo left-behind > /tmp/mark; sleep 300 & echo started").await;
    assert!(first.success, "{}", first.content);
    // The first call started its own sandbox, and the next one for this workspace.
    assert_eq!(c.ctx.sandbox.warm_and_cold_starts(), (0, 1));
    assert_eq!(sandboxes_binding(c.ws()).len(), 1, "one sandbox waits for the next call");
    let second =
        c.sh("cat /tmp/mark 2>/dev/null || echo no-mark; for p in /proc/[0-9]*; do cat $p/comm; done; pwd").await;
    assert!(second.success, "{}", second.content);
    assert_eq!(c.ctx.sandbox.warm_and_cold_starts(), (1, 1));
    let seen = stdout(&second);
    assert!(seen.contains("no-mark"), "the previous call's /tmp is gone: {seen}");
    assert!(!seen.contains("sleep"), "the previous call's processes are gone: {seen}");
    assert!(seen.trim_end().ends_with(c.ws().to_str().unwrap()), "it starts in the workspace: {seen}");
    // A call with input: python_run sends its code on stdin, after the launcher's script.
    let py = c.py("import os\nprint(os.getcwd())\nprint('it''s', \"$(x)\")").await;
    assert!(py.success, "{}", py.content);
    assert_eq!(stdout(&py).trim_end(), format!("{}\nits $(x)", c.ws().display()), "{}", py.content);
    assert_eq!(c.ctx.sandbox.warm_and_cold_starts(), (2, 1));
}

#[tokio::test]
async fn a_workspace_replaced_at_the_same_path_is_not_served_by_the_old_sandbox() {
    let c = case();
    assert!(c.sh("echo one > f").await.success);
    fs::rename(c.ws(), c.dir.path().join("old")).unwrap();
    fs::create_dir(c.ws()).unwrap();
    fs::write(c.ws().join("f"), "two\n").unwrap();
    let out = c.sh("cat f").await;
    assert_eq!(stdout(&out).trim(), "two", "{}", out.content);
    assert_eq!(c.ctx.sandbox.warm_and_cold_starts(), (0, 2), "the old directory's sandbox was dropped");
}

#[tokio::test]
async fn sandboxes_started_ahead_expire_and_die_with_their_runner() {
    let c = case_with(SandboxPolicy { warm_ttl: Duration::from_millis(300), ..policy() });
    assert!(c.sh("true").await.success);
    assert_eq!(sandboxes_binding(c.ws()).len(), 1);
    eventually(|| sandboxes_binding(c.ws()).is_empty(), "the unused sandbox is stopped after its ttl").await;
    assert!(c.sh("true").await.success);
    assert_eq!(c.ctx.sandbox.warm_and_cold_starts(), (0, 2));

    // Dropping the sandbox stops what it started ahead.
    assert_eq!(sandboxes_binding(c.ws()).len(), 1);
    let ws = c.ws().to_owned();
    drop(c.ctx);
    eventually(|| sandboxes_binding(&ws).is_empty(), "a dropped runner leaves no sandbox behind").await;

    // warm = 0: every call starts its own, none waits.
    let off = case_with(SandboxPolicy { warm: 0, ..policy() });
    assert!(off.sh("true").await.success && off.sh("true").await.success);
    assert_eq!(off.ctx.sandbox.warm_and_cold_starts(), (0, 2));
    assert!(sandboxes_binding(off.ws()).is_empty());
}

#[test]
fn a_sandbox_started_ahead_on_a_runtime_that_ended_is_not_used_by_another() {
    let c = case();
    let runtime = || tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let first = runtime().block_on(c.sh("echo one"));
    assert!(first.success, "{}", first.content);
    // The first runtime is gone, and with it what watched the sandbox it started ahead.
    let second = runtime().block_on(c.sh("echo two"));
    assert_eq!(stdout(&second).trim(), "two", "{}", second.content);
    assert_eq!(c.ctx.sandbox.warm_and_cold_starts(), (0, 2));
    // On one runtime the next call is served ahead.
    let rt = runtime();
    assert!(rt.block_on(c.sh("true")).success && rt.block_on(c.sh("true")).success);
    assert_eq!(c.ctx.sandbox.warm_and_cold_starts(), (1, 3));
}

/// Polls `done` for up to 10 s.
async fn eventually(done: impl Fn() -> bool, what: &str) {
    for _ in 0..200 {
        if done() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{what}: still not true after 10 s");
}
