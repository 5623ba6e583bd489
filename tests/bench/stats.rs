//! Percentiles of a set of durations, and how to print durations.

use std::time::Duration;

pub struct Stats {
    pub p50: Duration,
    pub p99: Duration,
    pub mean: Duration,
    pub max: Duration,
}

impl Stats {
    pub fn of(mut samples: Vec<Duration>) -> Self {
        samples.sort_unstable();
        let n = samples.len();
        let total: Duration = samples.iter().sum();
        Self {
            p50: percentile(&samples, 50.0),
            p99: percentile(&samples, 99.0),
            mean: if n == 0 { Duration::ZERO } else { total / n as u32 },
            max: samples.last().copied().unwrap_or_default(),
        }
    }
}

/// Nearest-rank percentile of sorted samples.
fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// Microseconds below 10 ms, milliseconds above.
pub fn fmt(d: Duration) -> String {
    let us = d.as_secs_f64() * 1e6;
    if us < 10_000.0 { format!("{us:.1} µs") } else { format!("{:.2} ms", us / 1000.0) }
}

/// `a - b`, signed.
pub fn fmt_diff(a: Duration, b: Duration) -> String {
    if a >= b { fmt(a - b) } else { format!("-{}", fmt(b - a)) }
}
