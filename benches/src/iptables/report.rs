//! Markdown for the iptables benchmarks, every kproxy figure beside its same-run baseline, and
//! the targets (met or missed, computed from these very numbers).

use std::fmt::Write;

use kproxy_modes::registry::Backend;

use super::{
    Plan,
    rows::{Row, Spread, ToolRss},
};
use crate::{
    connect::ConnectRow,
    report::{connect_table, med_p90, mib, secs, verdict},
    sync::UpstreamRun,
};

/// "min-max s; " of a repeated figure, or nothing.
fn spread(s: Spread) -> String {
    match s {
        Some((lo, hi)) if hi.is_finite() => format!("{:.2}-{:.2} s; ", lo / 1e3, hi / 1e3),
        Some((lo, _)) => format!("{:.2} s-timeout; ", lo / 1e3),
        None => String::new(),
    }
}

/// A baseline's load time, or "> T s (timeout)"; and kproxy's time over it ("< x" if it timed out).
fn against(kproxy_ms: f64, u: &UpstreamRun, timeout_s: u64) -> (String, String, f64) {
    match u.load_ms {
        Some(b) => (secs(b), format!("{:.3}", kproxy_ms / b), b),
        None => (
            format!("> {timeout_s} s (timeout)"),
            format!("< {:.3}", kproxy_ms / (timeout_s as f64 * 1e3)),
            timeout_s as f64 * 1e3,
        ),
    }
}

fn full_sync(o: &mut String, plan: &Plan, rows: &[Row]) {
    let t = plan.timeout.as_secs();
    o.push_str(
        "### (a) Full sync: kproxy's iptables mode vs upstream-shaped `iptables-restore`\n\n",
    );
    o.push_str("| backend | Services x endpoints | kproxy full sync (range; tracker part) | upstream-shaped restore `--noflush` (range; input lines) | kproxy / that | same input without `--noflush` (range) | kproxy / that |\n");
    o.push_str("|---|---|---|---|---|---|---|\n");
    let mut targets = Vec::new();
    for r in rows {
        let (s, e) = r.size;
        let k = r.kproxy.total_ms;
        let (base, ratio, base_ms) = against(k, &r.noflush, t);
        let (flush, fratio) = match &r.flush {
            Some(f) => {
                let (b, q, _) = against(k, f, t);
                let range = spread(r.flush_spread);
                let range = range.trim_end_matches("; ");
                match range.is_empty() {
                    true => (b, q),
                    false => (format!("{b} ({range})"), q),
                }
            }
            None => ("-".into(), "-".into()),
        };
        writeln!(
            o,
            "| {} | {s} x {e} | {} ({}tracker {}) | {base} ({}{} lines) | {ratio} | {flush} | {fratio} |",
            r.backend,
            secs(k),
            spread(r.kproxy_spread),
            secs(r.kproxy.tracker_ms),
            spread(r.noflush_spread),
            r.noflush.statements,
        )
        .unwrap();
        let speedup = base_ms / k;
        let more = if r.noflush.load_ms.is_none() {
            "> "
        } else {
            ""
        };
        targets.push(match r.backend {
            Backend::Legacy => format!(
                "- legacy, {s} x {e}: no slower than the `--noflush` baseline: {} ({} against {base})",
                verdict(k <= base_ms),
                secs(k)
            ),
            Backend::Nft => format!(
                "- nft, {s} x {e}: at least 10x faster than the `--noflush` baseline: {} ({more}{speedup:.1}x: {} against {base})",
                verdict(speedup >= 10.0),
                secs(k)
            ),
        });
    }
    writeln!(o, "\nTargets:\n\n{}", targets.join("\n")).unwrap();
}

fn additions(o: &mut String, plan: &Plan, rows: &[Row]) {
    let (s, e) = plan.adds_at;
    writeln!(
        o,
        "\n### (b) Adding one Service ({e} endpoints) with {s} present\n"
    )
    .unwrap();
    o.push_str("| backend | path | runs | median | p90 | max | tracker part (median) |\n|---|---|---|---|---|---|---|\n");
    let mut targets = Vec::new();
    for r in rows.iter().filter(|r| r.size == plan.adds_at) {
        let k = &r.kproxy;
        let base = r.flush.as_ref().unwrap_or(&r.noflush);
        let line = |o: &mut String, name: &str, v: &[f64], part: String| {
            let Some((m, p)) = med_p90(v) else {
                writeln!(o, "| {} | {name} | 0 | n/a | n/a | n/a | |", r.backend).unwrap();
                return;
            };
            let max = v.iter().cloned().fold(0.0, f64::max);
            writeln!(
                o,
                "| {} | {name} | {} | {m:.1} ms | {p:.1} ms | {max:.1} ms | {part} |",
                r.backend,
                v.len()
            )
            .unwrap();
        };
        let tracker =
            med_p90(&k.adds_tracker_ms).map_or("n/a".into(), |(m, _)| format!("{m:.1} ms"));
        line(
            o,
            "kproxy: events applied -> tracker -> partial sync committed",
            &k.adds_ms,
            tracker,
        );
        line(
            o,
            "baseline: upstream-shaped partial restore `--noflush` alone",
            &base.adds_ms,
            "-".into(),
        );
        if let (Some((km, _)), Some((bm, _))) = (med_p90(&k.adds_ms), med_p90(&base.adds_ms)) {
            targets.push(format!(
                "- {}: kproxy median <= half the baseline's: {} ({km:.1} ms against {bm:.1} ms, {:.2}); every addition a partial sync: {}",
                r.backend,
                verdict(km <= bm / 2.0),
                km / bm,
                k.adds_partial
            ));
        }
    }
    writeln!(o, "\nTargets:\n\n{}", targets.join("\n")).unwrap();
}

fn connect(o: &mut String, plan: &Plan, conn: &[(Backend, Vec<ConnectRow>)]) {
    o.push_str(
        "\n### (c) First-packet TCP connect latency (client pod -> node -> endpoint pod)\n\n",
    );
    writeln!(
        o,
        "{} connections per path and size, ClusterIP and direct alternating; the direct path \
         crosses the node's nat chains too.",
        plan.connections
    )
    .unwrap();
    for (backend, rows) in conn {
        writeln!(o, "\n{backend} backend:\n").unwrap();
        connect_table(o, rows);
        let probed: Vec<String> = rows
            .iter()
            .map(|r| format!("{}: {}", r.services, r.probed.as_deref().unwrap_or("n/a")))
            .collect();
        writeln!(
            o,
            "\nThe probed Service's dispatch rule: {}.",
            probed.join("; ")
        )
        .unwrap();
        if let (Some(first), Some(last)) = (rows.first(), rows.last()) {
            writeln!(
                o,
                "At {} / at {} Services: ClusterIP p50 {:.2}, p99 {:.2}; direct p50 {:.2}, p99 {:.2}.",
                last.services,
                first.services,
                last.cluster_p50_us / first.cluster_p50_us,
                last.cluster_p99_us / first.cluster_p99_us,
                last.direct_p50_us / first.direct_p50_us,
                last.direct_p99_us / first.direct_p99_us,
            )
            .unwrap();
        }
    }
}

fn memory(o: &mut String, rows: &[Row], rss: &[ToolRss]) {
    let Some(largest) = rows.iter().map(|r| r.size).max() else {
        return;
    };
    let (s, e) = largest;
    writeln!(o, "\n### (d) Peak RSS at {s} x {e}\n").unwrap();
    o.push_str("| backend | kproxy sync process (bench child: objects, tracker, mode) | its `iptables-restore` | its `iptables-save` | upstream-shaped restore `--noflush` | without `--noflush` |\n|---|---|---|---|---|---|\n");
    for r in rows.iter().filter(|r| r.size == largest) {
        let timed_out = |u: &UpstreamRun| match u.load_ms {
            Some(_) => mib(u.tool_rss_kib),
            None => format!("{} (killed at the timeout)", mib(u.tool_rss_kib)),
        };
        let tools = rss.iter().find(|t| t.backend == r.backend);
        let tool = |kind: &str| {
            let peak = tools.and_then(|t| {
                t.tools
                    .iter()
                    .filter(|(name, _)| name.starts_with("iptables-") && name.ends_with(kind))
                    .map(|(_, kib)| *kib)
                    .max()
            });
            peak.map_or("n/a".into(), mib)
        };
        writeln!(
            o,
            "| {} | {} | {} | {} | {} | {} |",
            r.backend,
            tools.map_or("n/a".into(), |t| mib(t.kproxy.self_rss_kib)),
            tool("-restore"),
            tool("-save"),
            timed_out(&r.noflush),
            r.flush.as_ref().map_or("-".into(), timed_out),
        )
        .unwrap();
    }
    o.push_str("\nkproxy's side from a second full sync per backend whose tools ran under GNU `time` (their own peaks); the baselines' from `getrusage` of a small process that only ran the restore.\n");
}

pub fn markdown(
    plan: &Plan,
    only: &str,
    rows: &[Row],
    conn: &[(Backend, Vec<ConnectRow>)],
    rss: &[ToolRss],
) -> String {
    let mut o = String::new();
    if only.contains('a') {
        full_sync(&mut o, plan, rows);
    }
    if only.contains('b') {
        additions(&mut o, plan, rows);
    }
    if only.contains('c') {
        connect(&mut o, plan, conn);
    }
    if only.contains('d') {
        memory(&mut o, rows, rss);
    }
    o
}
