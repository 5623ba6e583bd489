//! `turbo-bench` (run it with `make bench`): what turbo-coder itself costs, measured in one run
//! so that every figure is compared with a baseline taken on the same machine at the same time.
//!
//! 1. Framework overhead per agent step: a coder phase of many `fs_read` steps, driven by an
//!    instant in-process model through the embedded stack, against the same call made directly.
//! 2. Peak memory and wall time of the real `turbo-coder` binary on the greet scenario.
//! 3. Tokens of that run per phase, from its SQLite database.
//! 4. Cluster transport: a phase dispatched over NATS to a worker and back, beside JetStream,
//!    JetStream + Postgres commit and request-reply floors; events per second the recorder
//!    stores in Postgres.
//! 5. A cluster of processes: tasks/s and events stored/s with 2 worker replicas per role, and
//!    how long a killed worker's phase and a killed orchestrator take to be taken over.
//! 6. The tool sandbox: `shell_run true` sandboxed (started ahead, and started for the call),
//!    unconfined and as a plain fork+exec, and sandboxed jobs per second with several in flight.
//! 8. Workspace checkpoints on a 10,000-file workspace: the first, the next ones, a rewind,
//!    beside a walk that stats every file. (7 is the knowledge benchmark, its own binary.)
//! 9. The gateway: authenticated `GET /v1/tasks/{id}` under wrk beside the HTTP floor, and
//!    1,000 WebSocket sessions following a task: memory per session and event latency.
//!
//! docs/benchmarks.md says what each figure means and records the latest results.
//!
//! # Layout
//! - `double`: the instant scripted `ChatModel`.
//! - `overhead`: figure 1.
//! - `greet`: figures 2 and 3.
//! - `cluster`: figure 4.
//! - `fleet`: figure 5.
//! - `sandbox`: figure 6.
//! - `checkpoint`: figure 8.
//! - `gateway`: figure 9.
//! - `stats`: percentiles and formatting.

mod checkpoint;
mod cluster;
mod double;
mod fleet;
mod gateway;
mod greet;
mod overhead;
mod sandbox;
mod stats;

use std::process::ExitCode;
use std::time::Duration;

use stats::{fmt, fmt_diff};

const USAGE: &str = "usage: turbo-bench [--steps N] [--warmup N] [--skip-run] [--skip-cluster] [--only-fleet] [--only-sandbox] [--only-checkpoint]\n\
  --steps N       measured agent steps and baseline calls (default 2000)\n\
  --warmup N      steps and calls run first and not measured (default 200)\n\
  --skip-run      skip the turbo-coder run (peak memory, tokens)\n\
  --skip-cluster  skip the cluster figures 4 and 5 (nats-server, Postgres, service processes)\n\
  --only-fleet    measure figure 5 only\n\
  --only-sandbox  measure figure 6 only\n\
  --only-checkpoint  measure figure 8 only\n\
  --only-gateway  measure figure 9 only (needs the release turbo-gateway and turbo-orchestrator beside turbo-bench)";

/// WebSocket sessions opened in section 9.
const GATEWAY_SESSIONS: usize = 1000;

/// Files of the workspace checkpointed in section 8, and checkpoints timed after the first.
const CHECKPOINT_FILES: usize = 10_000;
const CHECKPOINT_RUNS: usize = 50;

/// Sandboxed `true` runs timed in section 6 (after a tenth as many not counted).
const SANDBOX_RUNS: usize = 500;
/// The issue's targets for a sandboxed `true`, start to exit.
const TARGET_SANDBOX_P50: Duration = Duration::from_millis(5);
const TARGET_SANDBOX_P99: Duration = Duration::from_millis(20);

/// Round trips of each kind measured in section 4, after `CLUSTER_WARMUP` not counted.
const ROUND_TRIPS: usize = 500;
const CLUSTER_WARMUP: usize = 50;
/// Events stored through the recorder in section 4, per way of sending them.
const RECORDER_EVENTS: usize = 50_000;
/// The issue's targets for the cluster: a hop within 2x of the JetStream + commit floor, and
/// at least 5,000 events/s stored.
const TARGET_HOP_RATIO: f64 = 2.0;
const TARGET_EVENTS_PER_S: f64 = 5_000.0;
/// Tasks run at once through the cluster of processes in section 5.
const FLEET_TASKS: usize = 50;

/// The issue's target for the median framework overhead per step.
const TARGET_P50: Duration = Duration::from_millis(1);

struct Args {
    steps: usize,
    warmup: usize,
    skip_run: bool,
    skip_cluster: bool,
    only_fleet: bool,
    only_sandbox: bool,
    only_checkpoint: bool,
    only_gateway: bool,
}

fn parse_args() -> Result<Args, String> {
    let mut parsed = Args {
        steps: 2000,
        warmup: 200,
        skip_run: false,
        skip_cluster: false,
        only_fleet: false,
        only_sandbox: false,
        only_checkpoint: false,
        only_gateway: false,
    };
    let mut args = std::env::args().skip(1);
    let number = |flag: &str, value: Option<String>| -> Result<usize, String> {
        let value = value.unwrap_or_default();
        value.parse().map_err(|_| format!("{flag} {value:?} is not a whole number"))
    };
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--steps" => parsed.steps = number("--steps", args.next())?,
            "--warmup" => parsed.warmup = number("--warmup", args.next())?,
            "--skip-run" => parsed.skip_run = true,
            "--skip-cluster" => parsed.skip_cluster = true,
            "--only-fleet" => parsed.only_fleet = true,
            "--only-sandbox" => parsed.only_sandbox = true,
            "--only-checkpoint" => parsed.only_checkpoint = true,
            "--only-gateway" => parsed.only_gateway = true,
            "-h" | "--help" => return Err(USAGE.to_owned()),
            other => return Err(format!("unknown argument {other:?}\n{USAGE}")),
        }
    }
    if parsed.steps < 4 {
        return Err("--steps must be at least 4".to_owned());
    }
    Ok(parsed)
}

fn first_line_with(path: &str, prefix: &str) -> Option<String> {
    let text = std::fs::read_to_string(path).ok()?;
    let line = text.lines().find(|l| l.starts_with(prefix))?;
    Some(line.split_once(':').map_or(line, |(_, v)| v).trim().to_owned())
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".to_owned())
}

fn print_header() {
    let command: Vec<String> = std::env::args().collect();
    let cores = std::thread::available_parallelism().map(|n| n.get().to_string()).unwrap_or_else(|_| "?".into());
    let profile = if cfg!(debug_assertions) { "debug" } else { "release" };
    println!("turbo-bench: framework overhead, peak memory and tokens of turbo-coder");
    println!("  command : {}", command.join(" "));
    println!("  date    : {}", chrono::Utc::now().format("%Y-%m-%d %H:%M:%S UTC"));
    println!(
        "  machine : {cores} cores ({}), {} memory, load average {} at start",
        first_line_with("/proc/cpuinfo", "model name").unwrap_or_else(|| "cpu unknown".into()),
        first_line_with("/proc/meminfo", "MemTotal").unwrap_or_else(|| "?".into()),
        load_average()
    );
    println!("  build   : {profile}");
    if cfg!(debug_assertions) {
        println!("  WARNING : a debug build; figures are not representative, run `make bench` for release ones");
    }
    println!();
}

fn print_overhead(o: &overhead::Overhead) {
    println!(
        "1. Framework overhead per agent step (tool: fs_read of a 1 KiB file; instant in-process model; release figures only)"
    );
    println!("   {:<62} {:>11} {:>11} {:>11} {:>11}", "", "p50", "p99", "mean", "max");
    let row = |name: &str, s: &stats::Stats| {
        println!("   {:<62} {:>11} {:>11} {:>11} {:>11}", name, fmt(s.p50), fmt(s.p99), fmt(s.mean), fmt(s.max));
    };
    let overhead = |name: &str, s: &stats::Stats| {
        println!(
            "   {:<62} {:>11} {:>11}",
            format!("  overhead = {name} - Toolbox::call"),
            fmt_diff(s.p50, o.toolbox.p50),
            fmt_diff(s.p99, o.toolbox.p99)
        );
    };
    row(&format!("baseline: Toolbox::call in a loop ({} calls)", o.steps), &o.toolbox);
    row("baseline: ToolRunnerClient::local().call in a loop", &o.runner);
    row(&format!("agent step, one {}-step phase (after {} warm-up)", o.steps, o.warmup), &o.step);
    overhead("long phase", &o.step);
    row("  same, events discarded (NullSink: no recorder, no SQLite)", &o.step_unrecorded);
    row(
        &format!(
            "agent step, {}-step phases ({} tasks after {} warm-up)",
            overhead::SHORT_PHASE,
            o.short_tasks,
            o.short_tasks
        ),
        &o.short,
    );
    overhead("short phases", &o.short);
    let met = |s: &stats::Stats| if s.p50.saturating_sub(o.toolbox.p50) < TARGET_P50 { "met" } else { "NOT met" };
    println!(
        "   target p50 overhead < {}: {} in the {}-step phase, {} in {}-step phases (the default max_steps)",
        fmt(TARGET_P50),
        met(&o.step),
        o.steps,
        met(&o.short),
        overhead::SHORT_PHASE
    );
    println!("   the long phase by quarter (each step adds 2 messages to the history copied into the next request):");
    println!("     {:<18} {:>11} {:>11} {:>22}", "steps", "p50", "p99", "p50 events discarded");
    for q in &o.quarters {
        println!(
            "     {:<18} {:>11} {:>11} {:>22}",
            format!("{}-{}", q.first, q.last),
            fmt(q.recorded.p50),
            fmt(q.recorded.p99),
            fmt(q.unrecorded.p50)
        );
    }
    println!(
        "     copying + dropping a {}-step history once, timed on its own (next_turn copies it every turn): {}",
        overhead::COPY_STEPS,
        fmt(o.history_copy)
    );
    let per_step = o.wall / u32::try_from(o.tool_steps.max(1)).unwrap_or(u32::MAX);
    println!(
        "   whole task, submit to last event stored: {} for {} tool steps = {} per step",
        fmt(o.wall),
        o.tool_steps,
        fmt(per_step)
    );
    println!(
        "   (includes planning, the workspace snapshot and the recorder's final flush; {} events, {:.1} MiB of SQLite)",
        o.events,
        o.db_bytes as f64 / (1024.0 * 1024.0)
    );
    println!();
}

fn print_greet(g: &greet::GreetRun) {
    println!("2. Peak memory of a run: turbo-coder run on deploy/examples/greet-scenario.json, --apply");
    println!("   binary  : {}", g.binary.display());
    println!("   command : turbo-coder {}", g.args.iter().map(|a| shell_quote(a)).collect::<Vec<_>>().join(" "));
    match g.peak_rss_kib {
        Some(kib) => println!("   peak RSS of turbo-coder itself (VmHWM)       : {:.1} MiB", kib as f64 / 1024.0),
        None => println!("   peak RSS of turbo-coder itself (VmHWM)       : not read (the process ended too fast)"),
    }
    if let Some((kib, command)) = &g.largest_tool {
        println!("   peak RSS of the largest tool it ran (VmHWM)  : {:.1} MiB ({command})", *kib as f64 / 1024.0);
    }
    match g.tree_max_rss_kib {
        Some(kib) => println!("   largest process of the run (GNU time %M)     : {:.1} MiB", kib as f64 / 1024.0),
        None => {
            println!("   largest process of the run (GNU time %M)     : not measured (/usr/bin/time is not installed)")
        }
    }
    println!("   wall time                                    : {} ({} model calls)", fmt(g.wall), g.model_calls);
    println!();
    println!("3. Tokens per task by phase (same run; the scripted server estimates tokens as characters / 4)");
    println!("   {:<12} {:<10} {:>6} {:>10} {:>11} {:>8}", "phase", "role", "calls", "prompt", "completion", "total");
    let (mut prompt, mut completion, mut calls) = (0u64, 0u64, 0usize);
    for p in &g.phases {
        println!(
            "   {:<12} {:<10} {:>6} {:>10} {:>11} {:>8}",
            p.phase,
            p.roles.join(","),
            p.calls,
            p.prompt,
            p.completion,
            p.prompt + p.completion
        );
        prompt += p.prompt;
        completion += p.completion;
        calls += p.calls;
    }
    println!("   {:<12} {:<10} {:>6} {:>10} {:>11} {:>8}", "total", "", calls, prompt, completion, prompt + completion);
    if prompt + completion != g.result_tokens {
        println!("   note: the run's result line reported {} tokens", g.result_tokens);
    }
    println!();
}

fn print_cluster(c: &cluster::Cluster) {
    let l = &c.latency;
    println!(
        "4. Cluster transport (own nats-server on loopback; {} round trips of each kind after {} warm-up, interleaved)",
        l.round_trips, l.warmup
    );
    println!("   {:<62} {:>11} {:>11} {:>11} {:>11}", "", "p50", "p99", "mean", "max");
    let row = |name: &str, s: &stats::Stats| {
        println!("   {:<62} {:>11} {:>11} {:>11} {:>11}", name, fmt(s.p50), fmt(s.p99), fmt(s.mean), fmt(s.max));
    };
    row("floor: core NATS request-reply", &l.request_reply);
    row("floor: JetStream hop (work-queue publish, pull, ack, reply)", &l.jetstream);
    match (&l.jetstream_commit, &l.commit) {
        (Some(hop), Some(commit)) => {
            row("floor: JetStream hop + 1 Postgres commit (append_events)", hop);
            row("  of which the commit, timed in the worker", commit);
        }
        _ => println!("   floor: JetStream hop + 1 Postgres commit: skipped (Postgres unreachable, see below)"),
    }
    row("agent hop: NatsAgents::run_phase -> serve_role -> back", &l.agent);
    let ratio = |a: std::time::Duration, b: std::time::Duration| a.as_secs_f64() / b.as_secs_f64().max(1e-12);
    let ratios = |name: &str, floor: &stats::Stats| {
        println!(
            "     {:<60} {:>10.2}x {:>10.2}x",
            format!("agent hop / {name}"),
            ratio(l.agent.p50, floor.p50),
            ratio(l.agent.p99, floor.p99)
        );
    };
    ratios("request-reply", &l.request_reply);
    ratios("JetStream hop", &l.jetstream);
    match &l.jetstream_commit {
        Some(floor) => {
            ratios("JetStream hop + commit", floor);
            let met = |a, b| if ratio(a, b) <= TARGET_HOP_RATIO { "met" } else { "NOT met" };
            println!(
                "   target agent hop within {TARGET_HOP_RATIO}x of the JetStream + commit floor: {} at p50, {} at p99",
                met(l.agent.p50, floor.p50),
                met(l.agent.p99, floor.p99)
            );
        }
        None => println!(
            "   target agent hop within {TARGET_HOP_RATIO}x of the JetStream + commit floor: not measured (no Postgres)"
        ),
    }
    match &c.recorder {
        Ok(runs) => {
            println!(
                "   recorder into Postgres ({}; fresh database, {} emitters, a task each; model_call/tool_call/1 KiB tool_result):",
                c.postgres,
                cluster::EMITTERS
            );
            let line = |name: &str, t: &cluster::Throughput| {
                println!(
                    "     {:<60} {:>7} events in {:>9} = {:>8.0} events/s",
                    name,
                    t.events,
                    fmt(t.wall),
                    t.per_second()
                );
            };
            line("Recorder::sink().emit, until flush returns", &runs.emit);
            line(&format!("Recorder::record of {} events, awaited", cluster::RECORD_CHUNK), &runs.record);
            let met = |t: &cluster::Throughput| if t.per_second() >= TARGET_EVENTS_PER_S { "met" } else { "NOT met" };
            println!(
                "   target >= {TARGET_EVENTS_PER_S:.0} events/s: {} with emit, {} with record",
                met(&runs.emit),
                met(&runs.record)
            );
        }
        Err(reason) => println!(
            "   recorder into Postgres: SKIPPED, Postgres at {} is unreachable ({reason}); set TURBO_BENCH_POSTGRES_URL",
            c.postgres
        ),
    }
    println!();
}

fn print_fleet(f: &fleet::Fleet) {
    println!(
        "5. A cluster of processes (turbo-coder serve ...: tool-runner, orchestrator, 2 agent workers per role; own nats-server, fresh Postgres database, instant scripted models)"
    );
    println!(
        "   {} tasks (plan, coder phase, tester phase) at once through gRPC: {} = {:.2} tasks/s; {} events stored = {:.0} events/s",
        f.tasks,
        fmt(f.wall),
        f.tasks_per_second(),
        f.events,
        f.events_per_second()
    );
    println!(
        "   a coder worker killed mid-phase (ack_wait_s = {}): the other replica calls the model after {}, the task completes after {}",
        fleet::ACK_WAIT_S,
        fmt(f.worker_takeover),
        fmt(f.worker_takeover_done)
    );
    println!(
        "   the leading orchestrator killed: the standby serves after {} (standby polls the lease every 0.5 s, then settles 2.5 s)",
        fmt(f.orchestrator_takeover)
    );
    println!();
}

fn shell_quote(s: &str) -> String {
    if s.chars().all(|c| c.is_ascii_alphanumeric() || "-_./:=".contains(c)) {
        s.to_owned()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

fn print_sandbox(s: &sandbox::SandboxCost) {
    println!("6. Tool sandbox: shell_run `true` start to exit ({} runs each, interleaved)", s.runs);
    println!("   sandbox layers here: {}", s.layers);
    println!("   {:<62} {:>11} {:>11} {:>11} {:>11}", "", "p50", "p99", "mean", "max");
    let row = |name: &str, st: &stats::Stats| {
        println!("   {:<62} {:>11} {:>11} {:>11} {:>11}", name, fmt(st.p50), fmt(st.p99), fmt(st.mean), fmt(st.max));
    };
    row("baseline: fork+exec of /bin/true (tokio::process)", &s.fork_exec);
    row("baseline: shell_run true, unconfined (sh -c, same code path)", &s.unconfined);
    row("shell_run true in the sandbox started ahead (default)", &s.sandboxed);
    row("shell_run true in a sandbox started for the call (warm = 0)", &s.cold);
    row("baseline: fs_read of a 360-byte file, in this process", &s.read_here);
    row("fs_read of it in the sandbox started ahead (turbo-tool-exec)", &s.read_sandboxed);
    println!(
        "   {:<62} {:>11} {:>11}",
        "  sandbox cost = sandboxed - unconfined",
        fmt_diff(s.sandboxed.p50, s.unconfined.p50),
        fmt_diff(s.sandboxed.p99, s.unconfined.p99)
    );
    let met = |v: Duration, t: Duration| if v <= t { "met" } else { "NOT met" };
    println!(
        "   target sandboxed p50 <= {}: {}; p99 <= {}: {}",
        fmt(TARGET_SANDBOX_P50),
        met(s.sandboxed.p50, TARGET_SANDBOX_P50),
        fmt(TARGET_SANDBOX_P99),
        met(s.sandboxed.p99, TARGET_SANDBOX_P99)
    );
    for (in_flight, jobs, wall) in &s.throughput {
        println!(
            "   {jobs} sandboxed jobs, {in_flight} in flight: {:.2} s = {:.0} jobs/s",
            wall.as_secs_f64(),
            *jobs as f64 / wall.as_secs_f64()
        );
    }
    println!();
}

fn print_checkpoint(c: &checkpoint::CheckpointCost) {
    println!(
        "8. Workspace checkpoints: {} files ({:.1} MB), {} checkpoints after one file changed each",
        c.files,
        c.bytes as f64 / 1e6,
        c.runs
    );
    println!("   first checkpoint of the workspace (hashes every file): {}", fmt(c.first));
    println!("   {:<62} {:>11} {:>11} {:>11} {:>11}", "", "p50", "p99", "mean", "max");
    let row = |name: &str, st: &stats::Stats| {
        println!("   {:<62} {:>11} {:>11} {:>11} {:>11}", name, fmt(st.p50), fmt(st.p99), fmt(st.mean), fmt(st.max));
    };
    row("baseline: stat every file of the workspace", &c.stat_walk);
    row("checkpoint before a mutating call", &c.next);
    row("rewind of one changed file (with its own checkpoint)", &c.rewind);
    println!();
}

fn print_gateway(g: &gateway::GatewayFigures) {
    println!(
        "9. The gateway (release turbo-gateway + turbo-orchestrator processes, one SQLite store, instant scripted models; wrk -t2 -c{} -d{}s on the same 2 cores)",
        gateway::WRK_CONNECTIONS,
        gateway::WRK_SECONDS
    );
    println!("   {:<62} {:>11} {:>11} {:>11}", "", "req/s", "p50", "p99");
    let row = |name: &str, l: &gateway::Load| {
        println!("   {:<62} {:>11.0} {:>11} {:>11}", name, l.requests_per_s, fmt(l.p50), fmt(l.p99));
        if l.errors > 0 {
            println!("     ({} answers were not 2xx)", l.errors);
        }
    };
    row("baseline: GET /v1/openapi.json (no token, store or orchestrator)", &g.floor);
    row("GET /v1/tasks/{id} with a bearer token", &g.get_task);
    let mib = |kib: u64| kib as f64 / 1024.0;
    let per = |before: u64, after: u64| after.saturating_sub(before) as f64 / g.sessions as f64;
    println!(
        "   {} WebSocket sessions following one task, opened and connected in {}:",
        g.sessions,
        fmt(g.connect_wall)
    );
    println!(
        "     gateway RSS {:.1} -> {:.1} MiB = {:.1} KiB per session; orchestrator RSS {:.1} -> {:.1} MiB = {:.1} KiB per session",
        mib(g.gateway_rss_before_kib),
        mib(g.gateway_rss_after_kib),
        per(g.gateway_rss_before_kib, g.gateway_rss_after_kib),
        mib(g.orchestrator_rss_before_kib),
        mib(g.orchestrator_rss_after_kib),
        per(g.orchestrator_rss_before_kib, g.orchestrator_rss_after_kib)
    );
    let l = &g.event_latency;
    println!(
        "     task event, recorded to read by the client ({} events x {} sessions): p50 {}, p99 {}, max {}",
        g.events_per_session,
        g.sessions,
        fmt(l.p50),
        fmt(l.p99),
        fmt(l.max)
    );
    println!();
}

async fn bench(args: Args) -> anyhow::Result<()> {
    print_header();
    if args.only_gateway {
        print_gateway(&gateway::measure(GATEWAY_SESSIONS).await?);
        return Ok(());
    }
    if args.only_checkpoint {
        print_checkpoint(&checkpoint::measure(CHECKPOINT_FILES, CHECKPOINT_RUNS).await?);
        return Ok(());
    }
    if args.only_sandbox {
        print_sandbox(&sandbox::measure(SANDBOX_RUNS).await?);
        return Ok(());
    }
    if args.only_fleet {
        print_fleet(&fleet::measure(FLEET_TASKS).await?);
        return Ok(());
    }
    let o = overhead::measure(args.steps, args.warmup).await?;
    print_overhead(&o);
    if args.skip_run {
        println!("2-3. skipped (--skip-run)");
    } else {
        let g = greet::run().await?;
        print_greet(&g);
    }
    if args.skip_cluster {
        println!("4. skipped (--skip-cluster)");
    } else {
        let c = cluster::measure(ROUND_TRIPS, CLUSTER_WARMUP, RECORDER_EVENTS).await?;
        print_cluster(&c);
        let f = fleet::measure(FLEET_TASKS).await?;
        print_fleet(&f);
    }
    print_sandbox(&sandbox::measure(SANDBOX_RUNS).await?);
    print_checkpoint(&checkpoint::measure(CHECKPOINT_FILES, CHECKPOINT_RUNS).await?);
    print_gateway(&gateway::measure(GATEWAY_SESSIONS).await?);
    println!("load average at end: {}", load_average());
    Ok(())
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(args) => args,
        Err(message) => {
            eprintln!("{message}");
            return ExitCode::from(2);
        }
    };
    // The runtime `turbo-coder` itself uses: multi-threaded, one worker per core.
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("turbo-bench: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(bench(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("turbo-bench: failed: {e:#}");
            ExitCode::FAILURE
        }
    }
}
