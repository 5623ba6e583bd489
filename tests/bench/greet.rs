//! The real `turbo-coder` binary on the greet scenario (deploy/examples/greet-scenario.json,
//! served in this process by `ScriptedModelServer`): its peak memory, its wall time, and the
//! tokens it recorded per phase.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail, ensure};
use serde_json::Value;
use turbo_testkit::{Script, ScriptedModelServer};
use turbo_tests::Sandbox;

const SCENARIO: &str = include_str!("../../deploy/examples/greet-scenario.json");
const TASK: &str = "add a greet(name) function to greet.py with a unit test";
const GNU_TIME: &str = "/usr/bin/time";
/// How often the child's peak RSS is read while it runs.
const POLL: Duration = Duration::from_millis(2);

pub struct GreetRun {
    pub binary: PathBuf,
    pub args: Vec<String>,
    /// Spawn to exit.
    pub wall: Duration,
    /// `VmHWM` of the `turbo-coder` process itself, last value read before it exited.
    pub peak_rss_kib: Option<u64>,
    /// GNU time's `%M`: the largest process of the run's tree (`turbo-coder`, or a tool it ran
    /// such as `python3`); None when /usr/bin/time is not installed.
    pub tree_max_rss_kib: Option<u64>,
    /// The largest process `turbo-coder` started (tools), as seen by polling: (KiB, command).
    pub largest_tool: Option<(u64, String)>,
    pub model_calls: usize,
    pub phases: Vec<PhaseTokens>,
    /// What the run's `--json` result line reports, for a cross-check.
    pub result_tokens: u64,
}

pub struct PhaseTokens {
    /// `(planning)` for the planner's calls, which belong to no phase.
    pub phase: String,
    pub roles: Vec<String>,
    pub calls: usize,
    pub prompt: u64,
    pub completion: u64,
}

/// `TURBO_CODER_BIN`, or `turbo-coder` next to this executable (target/<profile>/).
fn binary() -> anyhow::Result<PathBuf> {
    if let Some(p) = std::env::var_os("TURBO_CODER_BIN") {
        let p = PathBuf::from(p);
        ensure!(p.is_file(), "TURBO_CODER_BIN={} is not a file", p.display());
        return Ok(p);
    }
    let exe = std::env::current_exe().context("cannot find this executable's path")?;
    let bin = exe.with_file_name("turbo-coder");
    if !bin.is_file() {
        bail!(
            "{} is missing: run `make bench`, which builds it (or `cargo build --release -p turbo-coder`), \
             or point TURBO_CODER_BIN at a turbo-coder binary",
            bin.display()
        );
    }
    Ok(bin)
}

/// `VmHWM` (peak resident set) of a live process, KiB.
fn vm_hwm_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Live descendants of `root` (children of every thread, recursively).
fn descendants(root: u32) -> Vec<u32> {
    let mut found = Vec::new();
    let mut queue = vec![root];
    while let Some(pid) = queue.pop() {
        let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else { continue };
        for task in tasks.flatten() {
            let Ok(children) = std::fs::read_to_string(task.path().join("children")) else { continue };
            for child in children.split_whitespace().filter_map(|c| c.parse::<u32>().ok()) {
                if !found.contains(&child) {
                    found.push(child);
                    queue.push(child);
                }
            }
        }
    }
    found
}

/// The first words of a process's command line.
fn command_line(pid: u32) -> Option<String> {
    let raw = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    let words: Vec<String> = raw
        .split(|b| *b == 0)
        .filter(|w| !w.is_empty())
        .take(4)
        .map(|w| String::from_utf8_lossy(w).into_owned())
        .collect();
    (!words.is_empty()).then(|| words.join(" "))
}

fn tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

pub async fn run() -> anyhow::Result<GreetRun> {
    let binary = binary()?;
    let scenario: Value = serde_json::from_str(SCENARIO).context("greet-scenario.json is not json")?;
    let script = Script::from_json(&scenario)?;
    let server = ScriptedModelServer::start(script).await.context("cannot start the scripted model server")?;

    let mut sb = Sandbox::new();
    sb.set("TURBO_HOST", server.url())
        .set("PLANNER_MODEL", "planner:test")
        .set("OLLAMA_LOCAL", server.url())
        .set("CODER_MODEL", "coder:test");
    let args: Vec<String> = ["--data-dir", &sb.data_dir.display().to_string(), "run", TASK, "--apply", "--json"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let stdout_path = sb.home.join("stdout.jsonl");
    let stderr_path = sb.home.join("stderr.txt");

    // Under GNU time when installed: its `%M` is the largest process of the run's tree, exactly.
    // (getrusage(RUSAGE_CHILDREN) of this process would not do: a forked child's high-water
    // mark starts as a copy of this process's own, which here is larger than turbo-coder.)
    let gnu_time = Path::new(GNU_TIME).is_file();
    let time_out = sb.home.join("max-rss-kib.txt");
    let mut cmd = if gnu_time {
        let mut cmd = tokio::process::Command::new(GNU_TIME);
        cmd.arg("-f").arg("%M").arg("-o").arg(&time_out).arg(&binary);
        cmd
    } else {
        tokio::process::Command::new(&binary)
    };
    cmd.args(&args)
        .current_dir(&sb.workdir)
        .env_clear()
        .envs(&sb.env)
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&stdout_path)?)
        .stderr(std::fs::File::create(&stderr_path)?);
    let started = Instant::now();
    let mut child = cmd.spawn().with_context(|| format!("cannot run {}", binary.display()))?;
    let spawned = child.id().ok_or_else(|| anyhow!("turbo-coder exited before it could be watched"))?;
    let binary_real = binary.canonicalize().ok();
    let mut turbo_pid = if gnu_time { None } else { Some(spawned) };
    let mut peak: Option<u64> = None;
    // The largest process turbo-coder started: (VmHWM KiB, its command line).
    let mut largest_tool: Option<(u64, String)> = None;
    let status = loop {
        if turbo_pid.is_none() {
            turbo_pid = descendants(spawned).first().copied();
        }
        if let Some(pid) = turbo_pid {
            if let Some(kib) = vm_hwm_kib(pid) {
                peak = Some(peak.map_or(kib, |p| p.max(kib)));
            }
            for tool in descendants(pid) {
                // A child forked but not yet exec'd still has a copy of turbo-coder's memory.
                let exe = std::fs::read_link(format!("/proc/{tool}/exe")).ok();
                if exe.is_none() || exe == binary_real {
                    continue;
                }
                if let (Some(kib), Some(command)) = (vm_hwm_kib(tool), command_line(tool))
                    && largest_tool.as_ref().is_none_or(|(k, _)| kib > *k)
                {
                    largest_tool = Some((kib, command));
                }
            }
        }
        tokio::select! {
            status = child.wait() => break status?,
            _ = tokio::time::sleep(POLL) => {}
        }
    };
    let wall = started.elapsed();
    // GNU time writes "Command exited with non-zero status N" first when it did.
    let tree_max_rss_kib = std::fs::read_to_string(&time_out)
        .ok()
        .and_then(|text| text.lines().filter_map(|l| l.trim().parse::<u64>().ok()).next_back());

    if !status.success() {
        bail!(
            "turbo-coder on the greet scenario exited with {status}\n--- stdout (tail)\n{}\n--- stderr (tail)\n{}",
            tail(&stdout_path, 20),
            tail(&stderr_path, 20)
        );
    }
    let stdout = std::fs::read_to_string(&stdout_path)?;
    let result: Value = stdout
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .rfind(|v| v["type"] == "result")
        .ok_or_else(|| anyhow!("turbo-coder printed no result line; stdout:\n{stdout}"))?;
    ensure!(result["status"] == "completed", "the greet task ended {}: {result}", result["status"]);
    let task_id = result["task_id"].as_str().ok_or_else(|| anyhow!("no task_id in {result}"))?;
    let result_tokens =
        result["prompt_tokens"].as_u64().unwrap_or(0) + result["completion_tokens"].as_u64().unwrap_or(0);

    let store = turbo_store::Store::open_sqlite(&sb.data_dir.join("turbo.db")).await?;
    let task = store.find_task(task_id).await?;
    let mut phases: Vec<PhaseTokens> = Vec::new();
    for row in store.token_usage(task.task.id).await? {
        let name = row.phase.clone().unwrap_or_else(|| "(planning)".to_owned());
        let i = match phases.iter().position(|p| p.phase == name) {
            Some(i) => i,
            None => {
                phases.push(PhaseTokens { phase: name, roles: Vec::new(), calls: 0, prompt: 0, completion: 0 });
                phases.len() - 1
            }
        };
        let p = &mut phases[i];
        let role = row.role.to_string();
        if !p.roles.contains(&role) {
            p.roles.push(role);
        }
        p.calls += 1;
        p.prompt += u64::from(row.usage.prompt_tokens);
        p.completion += u64::from(row.usage.completion_tokens);
    }
    let model_calls = server.requests().iter().filter(|r| r.path == "/api/chat").count();
    server.shutdown().await;
    Ok(GreetRun {
        binary,
        args,
        wall,
        peak_rss_kib: peak,
        tree_max_rss_kib,
        largest_tool,
        model_calls,
        phases,
        result_tokens,
    })
}
