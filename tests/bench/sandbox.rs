//! Figure 6: what the tool sandbox costs. `shell_run` of `true` through the toolbox, sandboxed
//! (bubblewrap, seccomp, prlimit, a cgroup per call) with the workspace's next sandbox started
//! ahead (the default) and with each sandbox started when its call comes, and unconfined (the
//! same code path without the sandbox), beside a plain fork+exec of `/bin/true`, each timed
//! start to exit in the same run; `fs_read` of a small file in the sandbox (the file tools run
//! there as turbo-tool-exec) beside the same code in this process; and how many small
//! sandboxed jobs run per second when many are in flight.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, ensure};
use serde_json::json;
use turbo_tools::{Sandbox, SandboxMode, SandboxPolicy, ToolContext, Toolbox, Workspace};

use crate::stats::Stats;

pub struct SandboxCost {
    pub runs: usize,
    pub fork_exec: Stats,
    pub unconfined: Stats,
    /// The default: served by the sandbox started ahead after the previous call.
    pub sandboxed: Stats,
    /// `warm = 0`: each call starts its sandbox.
    pub cold: Stats,
    /// fs_read of a small file, the tool's code in this process (unconfined).
    pub read_here: Stats,
    /// fs_read of the same file in the sandbox started ahead (turbo-tool-exec).
    pub read_sandboxed: Stats,
    /// What the sandbox found on this host (`Sandbox::check`).
    pub layers: String,
    /// (jobs in flight, jobs, wall time)
    pub throughput: Vec<(usize, usize, Duration)>,
}

pub async fn measure(runs: usize) -> anyhow::Result<SandboxCost> {
    let dir = tempfile::tempdir()?;
    let ws = Workspace::open(dir.path())?;
    let toolbox = Toolbox::standard();
    let confined = Arc::new(Sandbox::new(SandboxPolicy::default()));
    let layers = confined.check().await.context("the sandbox cannot run on this machine")?;
    let unconfined =
        Arc::new(Sandbox::new(SandboxPolicy { mode: SandboxMode::Unconfined, ..SandboxPolicy::default() }));
    let cold = Arc::new(Sandbox::new(SandboxPolicy { warm: 0, ..SandboxPolicy::default() }));
    let ctx = |sandbox: &Arc<Sandbox>| ToolContext::new(ws.clone()).with_sandbox(sandbox.clone());
    let (confined_ctx, unconfined_ctx, cold_ctx) = (ctx(&confined), ctx(&unconfined), ctx(&cold));
    let args = json!({"command": "true"});
    std::fs::write(dir.path().join("small.txt"), "one line\n".repeat(40))?;
    let read = json!({"path": "small.txt"});

    let mut fork_exec = Vec::with_capacity(runs);
    let mut plain = Vec::with_capacity(runs);
    let mut sandboxed = Vec::with_capacity(runs);
    let mut started_cold = Vec::with_capacity(runs);
    let mut read_here = Vec::with_capacity(runs);
    let mut read_sandboxed = Vec::with_capacity(runs);
    // Interleaved, so a burst of load on the machine hits all three alike.
    for i in 0..runs + runs / 10 {
        let t = Instant::now();
        let status = tokio::process::Command::new("/bin/true").status().await?;
        let fe = t.elapsed();
        ensure!(status.success(), "/bin/true failed");
        let t = Instant::now();
        let out = toolbox.call("shell_run", &args, &unconfined_ctx).await?;
        let un = t.elapsed();
        ensure!(out.success, "unconfined true failed: {}", out.content);
        let t = Instant::now();
        let out = toolbox.call("shell_run", &args, &confined_ctx).await?;
        let sb = t.elapsed();
        ensure!(out.success, "sandboxed true failed: {}", out.content);
        // A model's turn separates two calls of a task (seconds): the next sandbox is ready.
        tokio::time::sleep(Duration::from_millis(40)).await;
        let t = Instant::now();
        let out = toolbox.call("shell_run", &args, &cold_ctx).await?;
        let co = t.elapsed();
        ensure!(out.success, "sandboxed (cold) true failed: {}", out.content);
        let t = Instant::now();
        let out = toolbox.call("fs_read", &read, &unconfined_ctx).await?;
        let rh = t.elapsed();
        ensure!(out.success, "fs_read failed: {}", out.content);
        tokio::time::sleep(Duration::from_millis(40)).await;
        let t = Instant::now();
        let out = toolbox.call("fs_read", &read, &confined_ctx).await?;
        let rs = t.elapsed();
        ensure!(out.success && out.content.contains("one line"), "sandboxed fs_read failed: {}", out.content);
        // The next iteration's shell_run is again a new turn of the model.
        tokio::time::sleep(Duration::from_millis(40)).await;
        // The first tenth warms up (page cache, the sandbox's first-use checks).
        if i >= runs / 10 {
            fork_exec.push(fe);
            plain.push(un);
            sandboxed.push(sb);
            started_cold.push(co);
            read_here.push(rh);
            read_sandboxed.push(rs);
        }
    }

    let mut throughput = Vec::new();
    for in_flight in [1usize, 2, 4, 8] {
        let jobs = 200;
        let t = Instant::now();
        let mut set = tokio::task::JoinSet::new();
        let mut started = 0;
        let mut done = 0;
        while done < jobs {
            while started < jobs && set.len() < in_flight {
                let (toolbox, ctx, args) = (toolbox.clone(), confined_ctx.clone(), args.clone());
                set.spawn(async move { toolbox.call("shell_run", &args, &ctx).await });
                started += 1;
            }
            let out = set.join_next().await.context("a job vanished")???;
            ensure!(out.success, "a concurrent job failed: {}", out.content);
            done += 1;
        }
        throughput.push((in_flight, jobs, t.elapsed()));
    }
    Ok(SandboxCost {
        runs,
        fork_exec: Stats::of(fork_exec),
        unconfined: Stats::of(plain),
        sandboxed: Stats::of(sandboxed),
        cold: Stats::of(started_cold),
        read_here: Stats::of(read_here),
        read_sandboxed: Stats::of(read_sandboxed),
        layers,
        throughput,
    })
}
