//! Clocks, percentiles and peak memory.

use std::time::Duration;

use nix::sys::resource::{UsageWho, getrusage};

/// A monotonic stopwatch. tokio's Instant (the workspace bans std's so tests can pause time)
/// reads the system's monotonic clock when no paused runtime is around, as here.
pub struct Stopwatch(tokio::time::Instant);

impl Stopwatch {
    pub fn start() -> Self {
        Self(tokio::time::Instant::now())
    }
    pub fn elapsed(&self) -> Duration {
        self.0.elapsed()
    }
}

pub fn timed<T>(f: impl FnOnce() -> T) -> (T, Duration) {
    let sw = Stopwatch::start();
    let out = f();
    (out, sw.elapsed())
}

/// Peak resident set size in KiB of this process (`self_`) or of the largest waited-for
/// descendant (children: Linux folds each reaped child's own children into its figure, so an
/// `nft` run through `timeout` or `ip netns exec` is counted).
pub fn max_rss_kib(self_: bool) -> u64 {
    let who = if self_ {
        UsageWho::RUSAGE_SELF
    } else {
        UsageWho::RUSAGE_CHILDREN
    };
    getrusage(who)
        .map(|u| u.max_rss().max(0) as u64)
        .unwrap_or(0)
}

/// The `p`-th percentile (0..=100, nearest rank) of `v`, which it sorts.
pub fn percentile(v: &mut [Duration], p: u32) -> Duration {
    if v.is_empty() {
        return Duration::ZERO;
    }
    v.sort();
    let rank = (p as usize * v.len()).div_ceil(100).max(1);
    v[rank - 1]
}

pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

pub fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}
