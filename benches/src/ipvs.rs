//! The ipvs mode's benchmarks (scripts/bench-ipvs, run in the VM: the host kernel has no IPVS).
//! Each size runs in a child process in a fresh network namespace with a node address on a
//! dummy `eth0` (NodePorts are served there):
//! - the full sync, from the complete initial lists to the last netlink answer, against the
//!   baseline of the same virtual servers and VIPs loaded in one batch each: `ip -batch` of the
//!   `addr add`s and `ipvsadm --restore` of kproxy's own table (`ipvsadm -Sn`), in a fresh
//!   namespace of the same shape;
//! - one changed Service among them (an endpoint replaced): the slice applied to the tracker to
//!   the sync's last answer, against `ipvsadm -d` plus `ipvsadm -a` of that change;
//! - the pure part of that partial sync (plan, diff, nftables render: no kernel), which also
//!   runs on the host (`ipvs-pure`), so the VM's figures can be scaled to host-equivalent ones.

use std::{io::Write, net::Ipv4Addr, process::Command, time::Duration};

use anyhow::{Context, Result, bail};
use kproxy::{desired::ProxyOptions, source::Event, tracker::Tracker};
use kproxy_dataplane::netns::Netns;
use kproxy_modes::{Mode, ipvs::IpvsMode, registry::IpvsSettings};
use serde::{Deserialize, Serialize};

use crate::{
    measure::{Stopwatch, ms, percentile, timed},
    objects,
    sync::enter_fresh_netns,
};

#[derive(Debug, Serialize, Deserialize)]
pub struct IpvsRun {
    pub services: u32,
    pub endpoints: u32,
    pub virtual_servers: usize,
    pub vips: usize,
    /// Initial lists to the last answer of the full sync.
    pub total_ms: f64,
    pub tracker_ms: f64,
    /// `ip -batch` of the VIPs plus `ipvsadm --restore` of the same table.
    pub baseline_ms: f64,
    pub baseline_addrs_ms: f64,
    pub baseline_restore_ms: f64,
    /// One changed Service: each of 5 changes, slice applied to last answer.
    pub change_ms: Vec<f64>,
    /// `ipvsadm -d` + `ipvsadm -a` of one real server (the same change by hand), 5 times.
    pub baseline_change_ms: Vec<f64>,
}

/// The node the benchmark's namespace stands for: `eth0` with the node IP, up.
fn node_shape() -> Result<()> {
    sh("ip", &["link", "add", "eth0", "type", "dummy"])?;
    sh(
        "ip",
        &[
            "addr",
            "add",
            &format!("{}/24", objects::NODE_IP),
            "dev",
            "eth0",
        ],
    )?;
    sh("ip", &["link", "set", "eth0", "up"])
}

fn sh(cmd: &str, args: &[&str]) -> Result<()> {
    let st = Command::new(cmd)
        .args(args)
        .status()
        .with_context(|| cmd.to_owned())?;
    if !st.success() {
        bail!("{cmd} {} failed: {st}", args.join(" "));
    }
    Ok(())
}

fn output(cmd: &str, args: &[&str]) -> Result<String> {
    let out = Command::new(cmd)
        .args(args)
        .output()
        .with_context(|| cmd.to_owned())?;
    if !out.status.success() {
        bail!("{cmd} {} failed: {}", args.join(" "), out.status);
    }
    Ok(String::from_utf8(out.stdout)?)
}

/// Endpoints of Service 1 with endpoint 0 replaced by change `k`'s address.
fn changed_slice(endpoints: u32, k: u32) -> Event {
    let mut addrs: Vec<Ipv4Addr> = (0..endpoints)
        .map(|e| objects::endpoint_ip(1, endpoints, e))
        .collect();
    addrs[0] = Ipv4Addr::new(10, 250, 0, k as u8 + 1);
    let [_, slice] = objects::service(1, endpoints, Some(&addrs));
    Event::Apply(slice)
}

pub fn run(services: u32, endpoints: u32) -> Result<IpvsRun> {
    let ns = enter_fresh_netns("ipvs")?;
    node_shape()?;
    let lists = objects::initial_lists(
        (0..services)
            .map(|i| objects::service(i, endpoints, None))
            .collect(),
    );
    let mut tracker = Tracker::new(ProxyOptions::for_node(objects::NODE));
    let mut mode = IpvsMode::new(Netns::current(), IpvsSettings::default());
    let ctx = kproxy_modes::ModeContext {
        runtime: tokio::runtime::Runtime::new()?.handle().clone(),
        drift: Default::default(),
    };
    mode.start(&ctx)?;
    let sw = Stopwatch::start();
    for ev in lists {
        tracker.apply(ev);
    }
    let (state, changes) = tracker.update().context("tracker not ready")?;
    let tracker_ms = ms(sw.elapsed());
    mode.sync(state, &changes)?;
    let total_ms = ms(sw.elapsed());

    let mut change_ms = Vec::new();
    for k in 0..5 {
        let sw = Stopwatch::start();
        tracker.apply(changed_slice(endpoints, k));
        let (state, changes) = tracker.update().context("tracker not ready")?;
        if mode.sync(state, &changes)?.full {
            bail!("a changed Service made a full sync");
        }
        change_ms.push(ms(sw.elapsed()));
    }
    let save = output("ipvsadm", &["-Sn"])?;
    let addrs = output("ip", &["-o", "addr", "show", "dev", "kube-ipvs0"])?;
    let vips: Vec<String> = addrs
        .lines()
        .filter_map(|l| l.split_whitespace().nth(3).map(str::to_owned))
        .collect();
    mode.cleanup()?;
    drop(ns);
    let baseline = baseline(&save, &vips)?;
    Ok(IpvsRun {
        services,
        endpoints,
        virtual_servers: save.lines().filter(|l| l.starts_with("-A")).count(),
        vips: vips.len(),
        total_ms,
        tracker_ms,
        baseline_ms: baseline.0 + baseline.1,
        baseline_addrs_ms: baseline.0,
        baseline_restore_ms: baseline.1,
        change_ms,
        baseline_change_ms: baseline.2,
    })
}

/// In a fresh namespace of the same shape: (addresses, restore, one change x5) in ms.
fn baseline(save: &str, vips: &[String]) -> Result<(f64, f64, Vec<f64>)> {
    let _ns = enter_fresh_netns("ipvsadm")?;
    node_shape()?;
    let dir = std::env::temp_dir();
    let batch = dir.join(format!("kpbench-{}.ip", std::process::id()));
    let mut text = String::new();
    for v in vips {
        text.push_str(&format!("addr add {v} dev kube-ipvs0\n"));
    }
    std::fs::write(&batch, text)?;
    let (addrs, t_addrs) = timed(|| {
        sh("ip", &["link", "add", "kube-ipvs0", "type", "dummy"])?;
        sh("ip", &["-batch", batch.to_str().unwrap_or_default()])
    });
    addrs?;
    let (restored, t_restore) = timed(|| -> Result<()> {
        let mut child = Command::new("ipvsadm")
            .arg("-R")
            .stdin(std::process::Stdio::piped())
            .spawn()?;
        child
            .stdin
            .take()
            .context("stdin")?
            .write_all(save.as_bytes())?;
        if !child.wait()?.success() {
            bail!("ipvsadm -R failed");
        }
        Ok(())
    });
    restored?;
    let _ = std::fs::remove_file(&batch);
    let mut change = Vec::new();
    let svc = format!("{}:80", objects::cluster_ip(1));
    for k in 0..5u8 {
        let (old, new) = (
            format!("10.250.1.{k}:8080"),
            format!("10.250.1.{}:8080", k + 1),
        );
        if k == 0 {
            sh("ipvsadm", &["-a", "-t", &svc, "-r", &old, "-m"])?;
        }
        let (r, t) = timed(|| -> Result<()> {
            sh("ipvsadm", &["-d", "-t", &svc, "-r", &old])?;
            sh("ipvsadm", &["-a", "-t", &svc, "-r", &new, "-m"])
        });
        r?;
        change.push(ms(t));
    }
    sh("ipvsadm", &["-C"])?;
    Ok((ms(t_addrs), ms(t_restore), change))
}

#[derive(Debug, Serialize, Deserialize)]
pub struct PureRun {
    pub services: u32,
    /// The pure part of one changed Service's sync (tracker update, plan, diff against the
    /// table it made, nftables render), median of 5.
    pub change_pure_ms: f64,
}

/// The pure part of a partial sync, without a kernel (runs on the host too): what
/// `IpvsMode::sync` does for a changed Service before its netlink and nft calls.
pub fn pure(services: u32, endpoints: u32) -> Result<PureRun> {
    use kproxy_modes::ipvs::{nft, plan, state::Applied};
    let lists = objects::initial_lists(
        (0..services)
            .map(|i| objects::service(i, endpoints, None))
            .collect(),
    );
    let mut tracker = Tracker::new(ProxyOptions::for_node(objects::NODE));
    for ev in lists {
        tracker.apply(ev);
    }
    let local = [(
        kproxy_modes::model::IpFamily::V4,
        vec![objects::NODE_IP.parse()?],
    )]
    .into();
    let (state, _) = tracker.update().context("tracker not ready")?;
    let full = plan::plan(state, "", &local);
    let table = full.services.clone();
    let mut applied = Applied::build(state, "rr", &full, table, local);
    let mut times: Vec<Duration> = Vec::new();
    for k in 0..5 {
        let sw = Stopwatch::start();
        tracker.apply(changed_slice(endpoints, k));
        let (state, changes) = tracker.update().context("tracker not ready")?;
        let ch = applied.change(state, &changes, "rr");
        let ops = applied.ops_for(&ch);
        let tx = nft::render_changes(&ch.elem_del, &ch.elem_add);
        times.push(sw.elapsed());
        if ops == 0 || tx.is_empty() {
            bail!("the change changed nothing");
        }
    }
    Ok(PureRun {
        services,
        change_pure_ms: ms(percentile(&mut times, 50)),
    })
}

/// Every ipvs benchmark: each size in a child process; Markdown on stdout.
pub fn all(sizes: &[u32], connect_sizes: &[u32], connections: u32) -> Result<()> {
    let mut runs: Vec<IpvsRun> = Vec::new();
    for &n in sizes {
        eprintln!("ipvs: full sync of {n} x 5");
        runs.push(crate::child(&["ipvs".into(), n.to_string(), "5".into()])?);
    }
    let pure: PureRun = crate::child(&["ipvs-pure".into(), "10000".into(), "5".into()])?;
    println!(
        "| Services x endpoints | virtual servers | VIPs | kproxy full sync (ms) | baseline: ip -batch + ipvsadm -R (ms) | of which ip / ipvsadm | one changed Service, median of 5 (ms) | baseline change: ipvsadm -d + -a (ms) |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    for r in &runs {
        let mut c: Vec<Duration> = r
            .change_ms
            .iter()
            .map(|m| Duration::from_secs_f64(m / 1e3))
            .collect();
        let mut b: Vec<Duration> = r
            .baseline_change_ms
            .iter()
            .map(|m| Duration::from_secs_f64(m / 1e3))
            .collect();
        println!(
            "| {} x {} | {} | {} | {:.0} | {:.0} | {:.0} / {:.0} | {:.1} | {:.1} |",
            r.services,
            r.endpoints,
            r.virtual_servers,
            r.vips,
            r.total_ms,
            r.baseline_ms,
            r.baseline_addrs_ms,
            r.baseline_restore_ms,
            ms(percentile(&mut c, 50)),
            ms(percentile(&mut b, 50)),
        );
    }
    println!();
    println!(
        "Pure part of one changed Service's sync at 10k x 5 (tracker update, plan, diff, nftables render; no kernel), median of 5: {:.1} ms on this machine (run `kproxy-bench ipvs-pure 10000 5` on the host for the VM/host factor).",
        pure.change_pure_ms
    );
    println!();
    let sizes: Vec<String> = connect_sizes.iter().map(ToString::to_string).collect();
    let rows: Vec<crate::connect::ConnectRow> = crate::child(&[
        "connect".into(),
        "--mode".into(),
        "ipvs".into(),
        "--connections".into(),
        connections.to_string(),
        "--sizes".into(),
        sizes.join(","),
    ])?;
    println!("| Services | sync (ms) | VIP connect p50 / p99 (µs) | direct p50 / p99 (µs) |");
    println!("|---|---|---|---|");
    for r in rows {
        println!(
            "| {} | {:.0} | {:.0} / {:.0} | {:.0} / {:.0} |",
            r.services,
            r.sync_ms,
            r.cluster_p50_us,
            r.cluster_p99_us,
            r.direct_p50_us,
            r.direct_p99_us
        );
    }
    Ok(())
}
