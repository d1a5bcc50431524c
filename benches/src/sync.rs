//! Benchmarks (a) and (b), each run in a child process of its own (so its peak RSS is its own):
//! kproxy's full sync and single-Service additions, and the upstream-shaped `nft -f` baseline.
//! Both enter a fresh network namespace first (on the main thread, so the `nft` they start runs
//! there without `ip netns exec`, as the agent's `nft` would on a node). [`run_mode`] and
//! [`timed_tool`] serve the iptables benchmarks too (`crate::iptables`).

use std::{
    path::Path,
    process::{Command, Stdio},
    time::Duration,
};

use anyhow::{Context, Result, bail};
use kproxy::{desired::ProxyOptions, source::Event, tracker::Tracker};
use kproxy_dataplane::nft::Exec;
use kproxy_modes::{
    Mode,
    nftables::{NftablesMode, render},
};
use kproxy_testbed::Netns;
use nix::sched::{CloneFlags, setns};
use serde::{Deserialize, Serialize};

use crate::{
    measure::{Stopwatch, max_rss_kib, ms, percentile, timed},
    objects, upstream,
};

#[derive(Debug, Serialize, Deserialize)]
pub struct KproxyRun {
    /// Applying the three initial lists and `Tracker::update` (objects -> desired state).
    pub tracker_ms: f64,
    /// From the complete initial lists to the committed transaction (tracker + render + nft).
    pub total_ms: f64,
    pub self_rss_kib: u64,
    /// Peak RSS of the largest data-plane tool the sync ran (`nft`, `iptables-restore`, ...).
    pub tool_rss_kib: u64,
    /// Single-Service additions (event applied -> commit), in order.
    pub adds_ms: Vec<f64>,
    /// The tracker's part of each addition (apply + update), in order.
    pub adds_tracker_ms: Vec<f64>,
    /// True if every addition was a partial sync.
    pub adds_partial: bool,
    /// The pure render of one more such partial sync (median of 5; not sent to the kernel):
    /// splits the sync part of an addition into render and `nft`.
    pub add_render_ms: Option<f64>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct UpstreamRun {
    /// `nft -f` of the full ruleset; `None`: not done within the timeout.
    pub load_ms: Option<f64>,
    /// Peak RSS of the tool that loaded it (`nft`, `iptables-restore`).
    pub tool_rss_kib: u64,
    /// Lines of its input.
    pub statements: usize,
    /// Upstream's partial sync adding one Service (`nft -f`, `iptables-restore`), in order.
    pub adds_ms: Vec<f64>,
}

/// A fresh namespace for this process, entered by the calling (main) thread.
pub(crate) fn enter_fresh_netns(role: &str) -> Result<Netns> {
    let ns = Netns::create(&format!("kpbench{}-{role}", std::process::id()))?;
    setns(ns.file()?, CloneFlags::CLONE_NEWNET).context("setns")?;
    Ok(ns)
}

pub fn kproxy(services: u32, endpoints: u32, adds: u32) -> Result<KproxyRun> {
    let _ns = enter_fresh_netns("k")?;
    let mut mode = NftablesMode::with_exec(Exec::new());
    // Splits the sync part of an addition into render and `nft`: the pure render of one more
    // such partial sync, not sent to the kernel.
    let render_probe = |tracker: &mut Tracker, mode: &NftablesMode| -> Result<Option<f64>> {
        let [svc, slice] = objects::service(services + adds, endpoints, None);
        tracker.apply(Event::Apply(svc));
        tracker.apply(Event::Apply(slice));
        let (state, changes) = tracker.update().context("tracker not ready")?;
        let applied = mode.applied().context("no applied state")?;
        let mut v: Vec<_> = (0..5)
            .map(|_| timed(|| render(state, &changes, Some(applied))).1)
            .collect();
        Ok(Some(ms(percentile(&mut v, 50))))
    };
    let run = run_mode(&mut mode, services, endpoints, adds, render_probe)?;
    // Delete the table now, so the namespace's teardown does no work behind the next run's back.
    mode.cleanup()?;
    Ok(run)
}

/// The agent's path on `mode`, in the caller's (fresh) namespace: the initial lists applied to a
/// tracker, its update and the full sync, timed; then `adds` single-Service additions, each
/// timed from its events to the mode's commit; then `probe` (if any additions), whose figure
/// becomes `add_render_ms` (`None`: not measured). The mode is left in place for the caller to clean up.
pub(crate) fn run_mode<M: Mode + ?Sized>(
    mode: &mut M,
    services: u32,
    endpoints: u32,
    adds: u32,
    probe: impl FnOnce(&mut Tracker, &M) -> Result<Option<f64>>,
) -> Result<KproxyRun> {
    // Objects are built before the clock starts: they stand for what the API server's lists
    // deliver. The tracker stores them, so their memory counts in the peak RSS as in the agent.
    let lists = objects::initial_lists(
        (0..services)
            .map(|i| objects::service(i, endpoints, None))
            .collect(),
    );
    let extra: Vec<_> = (services..services + adds)
        .map(|i| objects::service(i, endpoints, None))
        .collect();
    let mut tracker = Tracker::new(ProxyOptions::for_node(objects::NODE));

    let sw = Stopwatch::start();
    for ev in lists {
        tracker.apply(ev);
    }
    let (state, changes) = tracker.update().context("tracker not ready")?;
    let tracker_time = sw.elapsed();
    let stats = mode.sync(state, &changes)?;
    let total = sw.elapsed();
    let ports = stats.service_ports;
    if ports != services as usize {
        bail!("expected {services} Service ports in the state, got {ports}");
    }
    let self_rss_kib = max_rss_kib(true);
    let tool_rss_kib = max_rss_kib(false);

    // (b): what the agent does when a Service and its slice arrive (without its debounce).
    let mut adds_ms = Vec::new();
    let mut adds_tracker_ms = Vec::new();
    let mut adds_partial = true;
    for [svc, slice] in extra {
        let sw = Stopwatch::start();
        tracker.apply(Event::Apply(svc));
        tracker.apply(Event::Apply(slice));
        let (state, changes) = tracker.update().context("tracker not ready")?;
        adds_tracker_ms.push(ms(sw.elapsed()));
        adds_partial &= !mode.sync(state, &changes)?.full;
        adds_ms.push(ms(sw.elapsed()));
    }
    let add_render_ms = match adds {
        0 => None,
        _ => probe(&mut tracker, mode)?,
    };
    Ok(KproxyRun {
        tracker_ms: ms(tracker_time),
        total_ms: ms(total),
        self_rss_kib,
        tool_rss_kib,
        adds_ms,
        adds_tracker_ms,
        adds_partial,
        add_render_ms,
    })
}

/// Runs `nft -f file` under `timeout`; returns whether it finished (and succeeded) in time.
fn nft_file(path: &Path, timeout: Duration) -> Result<(bool, Duration)> {
    let path = path.to_string_lossy();
    timed_tool(timeout, "nft", &["-f", &path], None)
}

/// Runs `program args` (its stdin from `stdin`, if any) under `timeout`, timed; returns whether
/// it finished (and succeeded) in time. A failure is an error, with the tool's stderr shown.
pub(crate) fn timed_tool(
    timeout: Duration,
    program: &str,
    args: &[&str],
    stdin: Option<&Path>,
) -> Result<(bool, Duration)> {
    let input = match stdin {
        Some(p) => Stdio::from(std::fs::File::open(p).with_context(|| p.display().to_string())?),
        None => Stdio::null(),
    };
    let (status, took) = timed(|| {
        Command::new("timeout")
            .arg(timeout.as_secs().to_string())
            .arg(program)
            .args(args)
            .stdin(input)
            .status()
    });
    let status = status.with_context(|| format!("running timeout {program}"))?;
    if status.code() == Some(124) || took > timeout {
        return Ok((false, took));
    }
    if !status.success() {
        bail!("{program} {} failed: {status}", args.join(" "));
    }
    Ok((true, took))
}

pub fn upstream(
    services: u32,
    endpoints: u32,
    adds: u32,
    timeout: Duration,
) -> Result<UpstreamRun> {
    let _ns = enter_fresh_netns("u")?;
    let dir = std::env::temp_dir();
    let path = dir.join(format!("kpbench-{}.nft", std::process::id()));
    let text = upstream::full(services, endpoints);
    let statements = text.lines().count();
    std::fs::write(&path, text)?;
    let (done, took) = nft_file(&path, timeout)?;
    let tool_rss_kib = max_rss_kib(false);
    let mut adds_ms = Vec::new();
    if done {
        for i in services..services + adds {
            let mut one = String::new();
            upstream::service(&mut one, i, endpoints);
            std::fs::write(&path, one)?;
            let (ok, t) = nft_file(&path, timeout)?;
            if !ok {
                break;
            }
            adds_ms.push(ms(t));
        }
        // As for kproxy: tear down synchronously, not in the kernel's netns cleanup later.
        std::fs::write(&path, "delete table ip kube-proxy\n")?;
        nft_file(&path, timeout)?;
    }
    let _ = std::fs::remove_file(&path);
    Ok(UpstreamRun {
        load_ms: done.then(|| ms(took)),
        tool_rss_kib,
        statements,
        adds_ms,
    })
}
