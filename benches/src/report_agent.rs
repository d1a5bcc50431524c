//! Markdown for (d) the agent's memory and (e) network programming latency, with their targets
//! computed from these very numbers.

use std::fmt::Write;

use crate::{latency::LatencyRun, rss::RssRun};

const RSS_TARGET_MIB: f64 = 60.0;

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

/// Nearest-rank percentile of sorted milliseconds.
fn pct(sorted: &[f64], p: usize) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[(p * sorted.len()).div_ceil(100).max(1) - 1]
}

pub fn markdown(rss: &[RssRun], lat: &[LatencyRun]) -> String {
    let mut o = String::new();
    o.push_str("\n### (d) Memory of the kproxy process after its first sync\n\n");
    o.push_str("| Services x endpoints | source | manifests on disk | ready after | VmRSS (median / max of 25 samples over 5 s) | VmHWM (peak) | anonymous | VmRSS above the 0-Service process |\n");
    o.push_str("|---|---|---|---|---|---|---|---|\n");
    let base = rss.iter().find(|r| r.services == 0).map(|r| r.rss_kib);
    for r in rss {
        let above = base.map_or("n/a".into(), |b| {
            format!("{:.1} MiB", mib(r.rss_kib.saturating_sub(b)))
        });
        writeln!(
            o,
            "| {} x {} | {} | {:.1} MiB | {:.2} s | {:.1} / {:.1} MiB | {:.1} MiB | {:.1} MiB | {above} |",
            r.services,
            r.endpoints,
            r.source,
            r.manifest_bytes as f64 / 1048576.0,
            r.ready_ms / 1e3,
            mib(r.rss_kib),
            mib(r.rss_max_kib),
            mib(r.hwm_kib),
            mib(r.anon_kib),
        )
        .unwrap();
    }
    let at = |source: &str| {
        rss.iter()
            .find(|r| (r.services, r.endpoints) == (10000, 10) && r.source == source)
    };
    for r in [at("manifests"), at("api")].into_iter().flatten() {
        let steady = mib(r.rss_kib);
        let verdict = if steady <= RSS_TARGET_MIB {
            "met".to_string()
        } else {
            format!("**missed** by {:.0} MiB", steady - RSS_TARGET_MIB)
        };
        writeln!(
            o,
            "\nTarget RSS <= {RSS_TARGET_MIB:.0} MiB at 10k x 10 ({}): {verdict} ({steady:.1} MiB steady, {:.1} MiB peak).",
            r.source,
            mib(r.hwm_kib)
        )
        .unwrap();
    }

    if lat.is_empty() {
        return o;
    }
    o.push_str("\n### (e) Network programming latency (trigger time -> committed), agent loop, minSyncPeriod 1 s\n\n");
    o.push_str("| Services | updates (rate) | p50 | p90 | p99 | max | syncs (full) | partial sync p50 / max | Service ports per sync |\n");
    o.push_str("|---|---|---|---|---|---|---|---|---|\n");
    for r in lat {
        let l = &r.latency_ms;
        let p = &r.partial_sync_ms;
        writeln!(
            o,
            "| {} | {} ({}/s) | {:.0} ms | {:.0} ms | {:.0} ms | {:.0} ms | {} ({}) | {:.1} / {:.1} ms | {:.1} |",
            r.services,
            r.updates,
            r.rate,
            pct(l, 50),
            pct(l, 90),
            pct(l, 99),
            l.last().copied().unwrap_or(f64::NAN),
            r.syncs,
            r.full_syncs,
            pct(p, 50),
            p.last().copied().unwrap_or(f64::NAN),
            r.changed_per_sync,
        )
        .unwrap();
    }
    if let (Some(small), Some(big)) = (lat.first(), lat.last()) {
        writeln!(
            o,
            "\nAt {} Services / at {}: p50 {:+.0} ms, p99 {:+.0} ms.",
            big.services,
            small.services,
            pct(&big.latency_ms, 50) - pct(&small.latency_ms, 50),
            pct(&big.latency_ms, 99) - pct(&small.latency_ms, 99),
        )
        .unwrap();
    }
    o
}
