//! `turbo-bench` (run it with `make bench`): what turbo-coder itself costs, measured in one run
//! so that every figure is compared with a baseline taken on the same machine at the same time.
//!
//! 1. Framework overhead per agent step: a coder phase of many `fs_read` steps, driven by an
//!    instant in-process model through the embedded stack, against the same call made directly.
//! 2. Peak memory and wall time of the real `turbo-coder` binary on the greet scenario.
//! 3. Tokens of that run per phase, from its SQLite database.
//!
//! docs/benchmarks.md says what each figure means and records the latest results.
//!
//! # Layout
//! - `double`: the instant scripted `ChatModel`.
//! - `overhead`: figure 1.
//! - `greet`: figures 2 and 3.
//! - `stats`: percentiles and formatting.

mod double;
mod greet;
mod overhead;
mod stats;

use std::process::ExitCode;
use std::time::Duration;

use stats::{fmt, fmt_diff};

const USAGE: &str = "usage: turbo-bench [--steps N] [--warmup N] [--skip-run]\n\
  --steps N    measured agent steps and baseline calls (default 2000)\n\
  --warmup N   steps and calls run first and not measured (default 200)\n\
  --skip-run   skip the turbo-coder run (peak memory, tokens)";

/// The issue's target for the median framework overhead per step.
const TARGET_P50: Duration = Duration::from_millis(1);

struct Args {
    steps: usize,
    warmup: usize,
    skip_run: bool,
}

fn parse_args() -> Result<Args, String> {
    let mut parsed = Args { steps: 2000, warmup: 200, skip_run: false };
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

fn shell_quote(s: &str) -> String {
    if s.chars().all(|c| c.is_ascii_alphanumeric() || "-_./:=".contains(c)) {
        s.to_owned()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

async fn bench(args: Args) -> anyhow::Result<()> {
    print_header();
    let o = overhead::measure(args.steps, args.warmup).await?;
    print_overhead(&o);
    if args.skip_run {
        println!("2-3. skipped (--skip-run)");
    } else {
        let g = greet::run().await?;
        print_greet(&g);
    }
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
