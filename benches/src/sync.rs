//! Benchmarks (a) and (b), each run in a child process of its own (so its peak RSS is its own):
//! kproxy's full sync and single-Service additions, and the upstream-shaped `nft -f` baseline.
//! Both enter a fresh network namespace first (on the main thread, so the `nft` they start runs
//! there without `ip netns exec`, as the agent's `nft` would on a node).

use std::{path::PathBuf, process::Command, time::Duration};

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
    pub nft_rss_kib: u64,
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
    pub nft_rss_kib: u64,
    pub statements: usize,
    /// `nft -f` of upstream's partial sync adding one Service, in order.
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
    let mut mode = NftablesMode::with_exec(Exec::new());

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
    let nft_rss_kib = max_rss_kib(false);

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
    let add_render_ms = if adds > 0 {
        let [svc, slice] = objects::service(services + adds, endpoints, None);
        tracker.apply(Event::Apply(svc));
        tracker.apply(Event::Apply(slice));
        let (state, changes) = tracker.update().context("tracker not ready")?;
        let applied = mode.applied().context("no applied state")?;
        let mut v: Vec<_> = (0..5)
            .map(|_| timed(|| render(state, &changes, Some(applied))).1)
            .collect();
        Some(ms(percentile(&mut v, 50)))
    } else {
        None
    };
    // Delete the table now, so the namespace's teardown does no work behind the next run's back.
    mode.cleanup()?;
    Ok(KproxyRun {
        tracker_ms: ms(tracker_time),
        total_ms: ms(total),
        self_rss_kib,
        nft_rss_kib,
        adds_ms,
        adds_tracker_ms,
        adds_partial,
        add_render_ms,
    })
}

/// Runs `nft -f file` under `timeout`; returns whether it finished (and succeeded) in time.
fn nft_file(path: &PathBuf, timeout: Duration) -> Result<(bool, Duration)> {
    let (status, took) = timed(|| {
        Command::new("timeout")
            .arg(timeout.as_secs().to_string())
            .args(["nft", "-f"])
            .arg(path)
            .status()
    });
    let status = status.context("running timeout nft -f")?;
    if status.code() == Some(124) || took > timeout {
        return Ok((false, took));
    }
    if !status.success() {
        bail!("nft -f {} failed: {status}", path.display());
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
    let nft_rss_kib = max_rss_kib(false);
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
        nft_rss_kib,
        statements,
        adds_ms,
    })
}
