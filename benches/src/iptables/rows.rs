//! The children of (a), (b) and (d), run and gathered: per backend and size kproxy's full sync,
//! the upstream-shaped `--noflush` restore and (nft) the same without `--noflush`, each
//! repeated [`Plan::runs`] times where that takes seconds; and kproxy's tools' own peak RSS.

use std::collections::BTreeMap;

use anyhow::Result;
use kproxy_modes::registry::Backend;

use super::{Plan, toolrss};
use crate::{
    child, child_env,
    sync::{KproxyRun, UpstreamRun},
};

/// The spread of a figure over the repetitions: (min, max) in ms; `None` for one run.
pub type Spread = Option<(f64, f64)>;

/// One size on one backend: kproxy, the upstream-shaped `--noflush` restore, and (nft only)
/// the same input without `--noflush`; each the median run (additions from the first).
pub struct Row {
    pub backend: Backend,
    pub size: (u32, u32),
    pub kproxy: KproxyRun,
    pub kproxy_spread: Spread,
    pub noflush: UpstreamRun,
    pub noflush_spread: Spread,
    pub flush: Option<UpstreamRun>,
    pub flush_spread: Spread,
}

/// The median of `runs` by `key` (`None`, a timeout, counts as slowest), with the spread.
fn median<T>(mut runs: Vec<T>, key: impl Fn(&T) -> Option<f64>) -> (T, Spread) {
    let k = |t: &T| key(t).unwrap_or(f64::INFINITY);
    runs.sort_by(|a, b| k(a).total_cmp(&k(b)));
    let spread = (runs.len() > 1).then(|| (k(&runs[0]), k(&runs[runs.len() - 1])));
    let mid = runs.len() / 2;
    (runs.swap_remove(mid), spread)
}

/// Runs `args(adds)` `n` times: the first with `adds` additions, the rest without.
fn repeat<T: std::fmt::Debug + serde::de::DeserializeOwned>(
    n: u32,
    adds: u32,
    args: impl Fn(u32) -> Vec<String>,
) -> Result<Vec<T>> {
    (0..n.max(1))
        .map(|i| {
            let r: T = child(&args(if i == 0 { adds } else { 0 }))?;
            eprintln!("    {r:?}");
            Ok(r)
        })
        .collect()
}

fn kproxy_median(mut runs: Vec<KproxyRun>) -> (KproxyRun, Spread) {
    let first = &mut runs[0];
    let adds = (
        std::mem::take(&mut first.adds_ms),
        std::mem::take(&mut first.adds_tracker_ms),
        first.adds_partial,
    );
    let (mut k, spread) = median(runs, |k| Some(k.total_ms));
    (k.adds_ms, k.adds_tracker_ms, k.adds_partial) = adds;
    (k, spread)
}

fn upstream_median(mut runs: Vec<UpstreamRun>) -> (UpstreamRun, Spread) {
    let adds = std::mem::take(&mut runs[0].adds_ms);
    let (mut u, spread) = median(runs, |u| u.load_ms);
    u.adds_ms = adds;
    (u, spread)
}

/// Writes the upstream-shaped input of one size in a child of its own (see `sync::upstream`).
fn write_input(dir: &std::path::Path, (s, e): (u32, u32)) -> Result<std::path::PathBuf> {
    let input = dir.join(format!("{s}x{e}.iptables"));
    if !input.exists() {
        let path = input.display().to_string();
        let a = ["iptables", "upstream-input"].map(String::from);
        let _: () = child(&[&a[..], &[s.to_string(), e.to_string(), path]].concat())?;
    }
    Ok(input)
}

pub fn sync_rows(plan: &Plan) -> Result<Vec<Row>> {
    let mut rows = Vec::new();
    let dir = tempfile::Builder::new().prefix("kpbench-input").tempdir()?;
    for backend in [Backend::Legacy, Backend::Nft] {
        for &(s, e) in &plan.sizes {
            let input = write_input(dir.path(), (s, e))?;
            let adds = if (s, e) == plan.adds_at { plan.adds } else { 0 };
            let args = |what: &str, adds: u32| {
                let mut v = ["iptables", what].map(String::from).to_vec();
                v.extend([s.to_string(), e.to_string(), format!("--adds={adds}")]);
                v.push(format!("--backend={backend}"));
                if what != "kproxy" {
                    v.push(format!("--timeout={}", plan.timeout.as_secs()));
                    v.push(format!("--input={}", input.display()));
                }
                v
            };
            eprintln!("(a) {backend} {s} x {e}: kproxy, {} run(s)", plan.runs);
            let (kproxy, kproxy_spread) =
                kproxy_median(repeat(plan.runs, adds, |a| args("kproxy", a))?);
            // On nft the `--noflush` restore takes minutes (run once) and may not finish in
            // time: the additions are measured after the flushing load there instead (the same
            // table results in a fresh namespace).
            let nft = backend == Backend::Nft;
            let (runs, noflush_adds) = if nft { (1, 0) } else { (plan.runs, adds) };
            eprintln!("(a) {backend} {s} x {e}: upstream-shaped restore --noflush, {runs} run(s)");
            let (noflush, noflush_spread) =
                upstream_median(repeat(runs, noflush_adds, |a| args("upstream", a))?);
            let (flush, flush_spread) = if nft {
                eprintln!("(a) {backend} {s} x {e}: the same input without --noflush");
                let flush_args = |a| [args("upstream", a), vec!["--flush".into()]].concat();
                let (f, spread) = upstream_median(repeat(plan.runs, adds, flush_args)?);
                (Some(f), spread)
            } else {
                (None, None)
            };
            rows.push(Row {
                backend,
                size: (s, e),
                kproxy,
                kproxy_spread,
                noflush,
                noflush_spread,
                flush,
                flush_spread,
            });
        }
    }
    Ok(rows)
}

/// kproxy's full sync at `size` on each backend again, with its iptables tools measured apart
/// ([`toolrss`]): the bench process's peak, and each tool's.
pub struct ToolRss {
    pub backend: Backend,
    pub kproxy: KproxyRun,
    pub tools: BTreeMap<String, u64>,
}

pub fn tool_rss(size: (u32, u32)) -> Result<Vec<ToolRss>> {
    let mut out = Vec::new();
    for backend in [Backend::Legacy, Backend::Nft] {
        let (s, e) = size;
        eprintln!("(d) {backend} {s} x {e}: kproxy, its tools' peak RSS measured apart");
        let wrappers = toolrss::Wrappers::new()?;
        let args = ["iptables", "kproxy"].map(String::from).to_vec();
        let args = [
            args,
            vec![s.to_string(), e.to_string(), format!("--backend={backend}")],
        ];
        let kproxy: KproxyRun = child_env(&args.concat(), &[("PATH", wrappers.path_env()?)])?;
        let tools = wrappers.peaks();
        eprintln!("    {tools:?}");
        out.push(ToolRss {
            backend,
            kproxy,
            tools,
        });
    }
    Ok(out)
}
