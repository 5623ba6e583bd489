//! Figure 8: what a workspace checkpoint costs on a 10,000-file workspace. The first
//! checkpoint of a workspace hashes every file; later ones (one before each mutating call)
//! re-hash only the files whose stat changed. Beside them, in the same run: a walk that stats
//! every file (the floor of any change detection) and the rewind of one changed file.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::ensure;
use turbo_core::ids::TaskId;
use turbo_tool_runner::Checkpoints;

use crate::stats::Stats;

pub struct CheckpointCost {
    pub files: usize,
    pub bytes: u64,
    pub runs: usize,
    pub first: Duration,
    /// Checkpoints after one file changed.
    pub next: Stats,
    /// Stat of every file (baseline).
    pub stat_walk: Stats,
    pub rewind: Stats,
}

fn stat_all(dir: &Path) -> std::io::Result<usize> {
    let mut n = 0;
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let meta = entry.metadata()?;
        if meta.is_dir() {
            n += stat_all(&entry.path())?;
        } else {
            n += 1;
        }
    }
    Ok(n)
}

pub async fn measure(files: usize, runs: usize) -> anyhow::Result<CheckpointCost> {
    let data = tempfile::tempdir()?;
    let ws = tempfile::tempdir()?;
    let mut bytes = 0u64;
    for i in 0..files {
        let dir = ws.path().join(format!("src/m{:03}", i % 100));
        std::fs::create_dir_all(&dir)?;
        let text = format!("// file {i}\n{}\n", "fn f() { let x = 1; }\n".repeat(40));
        bytes += text.len() as u64;
        std::fs::write(dir.join(format!("f{i:05}.rs")), text)?;
    }
    let checkpoints = Checkpoints::new(data.path());
    let task = TaskId::new();

    let t = Instant::now();
    checkpoints.take(ws.path(), task, "first").await?;
    let first = t.elapsed();

    let (mut next, mut walk, mut rewind) = (Vec::new(), Vec::new(), Vec::new());
    let changed = ws.path().join("src/m000/f00000.rs");
    for i in 0..runs + runs / 10 {
        std::fs::write(&changed, format!("// changed {i}\n"))?;
        let t = Instant::now();
        let seen = stat_all(ws.path())?;
        let w = t.elapsed();
        ensure!(seen == files, "the walk saw {seen} files, not {files}");
        let t = Instant::now();
        let taken = checkpoints.take(ws.path(), task, "next").await?;
        let n = t.elapsed();
        std::fs::write(&changed, "// changed again\n")?;
        let t = Instant::now();
        checkpoints.rewind(ws.path(), task, Some(taken.n)).await?;
        let r = t.elapsed();
        ensure!(std::fs::read_to_string(&changed)? == format!("// changed {i}\n"), "the rewind restored the file");
        if i >= runs / 10 {
            next.push(n);
            walk.push(w);
            rewind.push(r);
        }
    }
    Ok(CheckpointCost {
        files,
        bytes,
        runs,
        first,
        next: Stats::of(next),
        stat_walk: Stats::of(walk),
        rewind: Stats::of(rewind),
    })
}
