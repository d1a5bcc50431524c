//! Markdown tables of one run, every kproxy figure beside its same-run baseline, and the targets
//! (met or missed, computed from these very numbers).

use std::{fmt::Write, time::Duration};

use crate::{
    Plan,
    connect::ConnectRow,
    measure::percentile,
    sync::{KproxyRun, UpstreamRun},
};

type Row = ((u32, u32), KproxyRun, UpstreamRun);

pub(crate) fn mib(kib: u64) -> String {
    format!("{:.0} MiB", kib as f64 / 1024.0)
}

pub(crate) fn secs(ms: f64) -> String {
    format!("{:.2} s", ms / 1e3)
}

pub(crate) fn verdict(ok: bool) -> &'static str {
    if ok { "met" } else { "**missed**" }
}

/// (median, p90) of millisecond figures.
pub(crate) fn med_p90(v: &[f64]) -> Option<(f64, f64)> {
    if v.is_empty() {
        return None;
    }
    let mut d: Vec<Duration> = v.iter().map(|m| Duration::from_secs_f64(m / 1e3)).collect();
    let f = |d: Duration| d.as_secs_f64() * 1e3;
    Some((f(percentile(&mut d, 50)), f(percentile(&mut d, 90))))
}

pub fn markdown(plan: &Plan, rows: &[Row], conn: &[ConnectRow]) -> String {
    let t = plan.timeout.as_secs();
    let mut o = String::new();
    o.push_str("### (a) Full sync: kproxy vs upstream-shaped `nft -f`\n\n");
    o.push_str("| Services x endpoints | kproxy full sync (tracker part) | kproxy peak RSS | its `nft` peak RSS | upstream-shaped `nft -f` | that `nft`'s peak RSS | kproxy / upstream |\n");
    o.push_str("|---|---|---|---|---|---|---|\n");
    for ((s, e), k, u) in rows {
        let (base, ratio) = match u.load_ms {
            Some(b) => (secs(b), format!("{:.3}", k.total_ms / b)),
            None => (
                format!("> {t} s (timeout)"),
                format!("< {:.3}", k.total_ms / (t as f64 * 1e3)),
            ),
        };
        writeln!(
            o,
            "| {s} x {e} | {} ({}) | {} | {} | {base} ({} statements) | {} | {ratio} |",
            secs(k.total_ms),
            secs(k.tracker_ms),
            mib(k.self_rss_kib),
            mib(k.tool_rss_kib),
            u.statements,
            mib(u.tool_rss_kib),
        )
        .unwrap();
    }
    if let Some((_, k, u)) = rows.iter().find(|(size, ..)| *size == (5000, 50)) {
        let fast = k.total_ms <= 10_000.0;
        let half = match u.load_ms {
            Some(b) => k.total_ms < b / 2.0,
            None => k.total_ms < t as f64 * 1e3 / 2.0,
        };
        writeln!(
            o,
            "\nTargets at 5k x 50: full sync <= 10 s: {} ({}); less than half the upstream-shaped `nft -f` time: {}.",
            verdict(fast),
            secs(k.total_ms),
            verdict(half)
        )
        .unwrap();
    }

    let (s, e) = plan.adds_at;
    writeln!(
        o,
        "\n### (b) Adding one Service ({e} endpoints) with {s} present\n"
    )
    .unwrap();
    o.push_str(
        "| path | runs | median | p90 | max | tracker part (median) |\n|---|---|---|---|---|---|\n",
    );
    if let Some((_, k, u)) = rows.iter().find(|(size, ..)| *size == plan.adds_at) {
        let line = |o: &mut String, name: &str, v: &[f64], part: String| match med_p90(v) {
            Some((m, p)) => {
                let max = v.iter().cloned().fold(0.0, f64::max);
                writeln!(
                    o,
                    "| {name} | {} | {m:.1} ms | {p:.1} ms | {max:.1} ms | {part} |",
                    v.len()
                )
                .unwrap();
            }
            None => writeln!(o, "| {name} | 0 | n/a | n/a | n/a | |").unwrap(),
        };
        let tracker =
            med_p90(&k.adds_tracker_ms).map_or("n/a".into(), |(m, _)| format!("{m:.1} ms"));
        line(
            &mut o,
            "kproxy: events applied -> tracker -> partial sync committed",
            &k.adds_ms,
            tracker,
        );
        line(
            &mut o,
            "baseline: upstream-shaped partial transaction, `nft -f` alone",
            &u.adds_ms,
            "-".into(),
        );
        if let Some(r) = k.add_render_ms {
            writeln!(
                o,
                "\nOf kproxy's time, the pure render of such a partial sync takes {r:.1} ms (median of 5); \
                 the rest of the sync part is running `nft`."
            )
            .unwrap();
        }
        if let Some((m, p)) = med_p90(&k.adds_ms) {
            writeln!(
                o,
                "\nTarget <= 20 ms: median {}, p90 {}. Every addition a partial sync: {}.",
                verdict(m <= 20.0),
                verdict(p <= 20.0),
                k.adds_partial
            )
            .unwrap();
        }
    }

    o.push_str(
        "\n### (c) First-packet TCP connect latency (client pod -> node -> endpoint pod)\n\n",
    );
    writeln!(
        o,
        "{} connections per path and size, ClusterIP and direct alternating.\n",
        plan.connections
    )
    .unwrap();
    connect_table(&mut o, conn);
    if let (Some(first), Some(last)) = (conn.first(), conn.last()) {
        let r50 = last.cluster_p50_us / first.cluster_p50_us;
        let r99 = last.cluster_p99_us / first.cluster_p99_us;
        let worst = |f: fn(&ConnectRow) -> f64| conn.iter().map(f).fold(0.0, f64::max);
        let w50 = worst(|r| r.cluster_p50_us / r.direct_p50_us);
        let w99 = worst(|r| r.cluster_p99_us / r.direct_p99_us);
        writeln!(
            o,
            "\nClusterIP at {} / at {} Services: p50 {r50:.2}, p99 {r99:.2} (target <= 1.1: p50 {}, p99 {}).\n\
             ClusterIP / direct, worst size: p50 {w50:.2}, p99 {w99:.2} (target <= 1.3: p50 {}, p99 {}).",
            last.services,
            first.services,
            verdict(r50 <= 1.1),
            verdict(r99 <= 1.1),
            verdict(w50 <= 1.3),
            verdict(w99 <= 1.3),
        )
        .unwrap();
    }
    o
}

/// The rows of (c), one per size: kproxy's sync, ClusterIP and direct percentiles, their ratios.
pub(crate) fn connect_table(o: &mut String, conn: &[ConnectRow]) {
    o.push_str("| Services | kproxy sync | ClusterIP p50 | ClusterIP p99 | direct p50 | direct p99 | ClusterIP/direct p50 | p99 |\n");
    o.push_str("|---|---|---|---|---|---|---|---|\n");
    for r in conn {
        writeln!(
            o,
            "| {} | {} | {:.0} µs | {:.0} µs | {:.0} µs | {:.0} µs | {:.2} | {:.2} |",
            r.services,
            secs(r.sync_ms),
            r.cluster_p50_us,
            r.cluster_p99_us,
            r.direct_p50_us,
            r.direct_p99_us,
            r.cluster_p50_us / r.direct_p50_us,
            r.cluster_p99_us / r.direct_p99_us,
        )
        .unwrap();
    }
}
