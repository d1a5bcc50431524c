//! `scripts/bench-userspace`: the userspace mode's relay against a direct connection in the same
//! run, on the test bed (client pod -> node -> server pod). The mode runs in this process on a
//! runtime of its own (as in the agent); clients and servers are blocking threads inside the pod
//! namespaces. Figures: bulk TCP throughput and CPU per GB, connect + request latency and rate,
//! UDP request/response rate, and RSS with 10,000 idle relayed connections.

mod load;

use std::{
    net::{IpAddr, SocketAddr},
    sync::Arc,
};

use anyhow::Result;
use kproxy_modes::{
    Mode, ModeContext,
    model::{ChangeSet, IpFamily, Protocol},
    registry::{self, ModeSettings},
    testing::fixtures::{ep, port, state},
};
use kproxy_testbed::TestBed;

const NODE: &str = "192.168.0.2";
const CLIENT: &str = "10.0.0.10";
const SERVER: &str = "10.180.0.1";

fn sa(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// The Services: a sink, an answerer, a holder of idle connections (TCP), and UDP echo.
fn desired() -> kproxy_modes::model::DesiredState {
    let svc = |name, cip, proto, vport, eport: u16| {
        port(
            "b",
            name,
            "p",
            proto,
            cip,
            vport,
            vec![ep(&format!("{SERVER}:{eport}"), true)],
        )
    };
    state(vec![(
        IpFamily::V4,
        vec![
            svc("sink", "172.30.0.20", Protocol::Tcp, 80, load::SINK),
            svc("answer", "172.30.0.21", Protocol::Tcp, 80, load::ANSWER),
            svc("hold", "172.30.0.22", Protocol::Tcp, 80, load::HOLD),
            svc("udp", "172.30.0.30", Protocol::Udp, 53, load::UDP),
        ],
    )])
}

fn main() -> Result<()> {
    anyhow::ensure!(
        nix::unistd::geteuid().is_root(),
        "run as root (network namespaces)"
    );
    let quick = std::env::args().any(|a| a == "--quick");
    let files = kproxy_dataplane::relay::raise_fd_limit()?;
    let bed_rt = tokio::runtime::Runtime::new()?;
    // The relay's own runtime, like the agent's: two workers on this 2-core machine.
    let bed = bed_rt.block_on(async {
        let mut bed = TestBed::new(&[ip(NODE)]).await?;
        bed.add_pod(ip(CLIENT)).await?;
        bed.add_pod(ip(SERVER)).await?;
        anyhow::Ok(bed)
    })?;
    // Its threads live in the node namespace, as the agent's do on a node: sockets are made
    // there directly (see `relay::socket_in`).
    let node_ns = bed.node.file()?;
    let relay_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .on_thread_start(move || {
            let ns = node_ns.try_clone().expect("namespace handle");
            nix::sched::setns(ns, nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
        })
        .enable_all()
        .build()?;
    let server_ns = bed.pod(ip(SERVER)).unwrap().file()?;
    let client_ns = bed.pod(ip(CLIENT)).unwrap().file()?;
    load::start_servers(&server_ns, ip(SERVER))?;
    let settings = ModeSettings {
        netns: Some(bed.node.name().to_owned()),
        ..Default::default()
    };
    let mut mode = registry::build("userspace", &settings)?;
    let ctx = ModeContext {
        runtime: relay_rt.handle().clone(),
        drift: Arc::new(tokio::sync::Notify::new()),
    };
    mode.start(&ctx)?;
    mode.sync(&desired(), &ChangeSet::full())?;
    let c = load::Client::new(client_ns);
    report(&c, mode.as_ref(), quick, files)?;
    mode.shutdown();
    Ok(())
}

fn report(c: &load::Client, mode: &dyn Mode, quick: bool, files: u64) -> Result<()> {
    let direct = |p: u16| SocketAddr::new(ip(SERVER), p);
    let (gib, runs, samples, udp_n, idle) = if quick {
        (1, 1, 500, 2000, 2000)
    } else {
        (2, 3, 3000, 20000, 10000)
    };
    // Both ends of each idle connection are in this process too: four descriptors each. Under a
    // lower hard limit (this machine's is 20,000) fewer are opened, and the report says so.
    let idle = idle.min((files as usize).saturating_sub(2000) / 5);
    println!("| figure | direct | through the relay | relay / direct |");
    println!("|---|---|---|---|");
    let (d_bulk, r_bulk) = (
        c.bulk_median(direct(load::SINK), gib, runs)?,
        c.bulk_median(sa("172.30.0.20:80"), gib, runs)?,
    );
    row(
        "bulk TCP, GB/s (median of runs)",
        d_bulk.gbps,
        r_bulk.gbps,
        true,
    );
    row(
        "CPU s/GB, whole bench process",
        d_bulk.cpu_per_gb,
        r_bulk.cpu_per_gb,
        true,
    );
    println!(
        "| CPU s/GB of the relay alone (difference) | - | {:.2} | - |",
        r_bulk.cpu_per_gb - d_bulk.cpu_per_gb
    );
    let (d_lat, r_lat) = (
        c.latency(direct(load::ANSWER), samples)?,
        c.latency(sa("172.30.0.21:80"), samples)?,
    );
    row("connect + request p50, µs", d_lat.p50, r_lat.p50, true);
    row("connect + request p99, µs", d_lat.p99, r_lat.p99, true);
    row(
        "new connections/s (sequential)",
        d_lat.rate,
        r_lat.rate,
        true,
    );
    let (d_udp, r_udp) = (
        c.udp_rate(direct(load::UDP), udp_n)?,
        c.udp_rate(sa("172.30.0.30:53"), udp_n)?,
    );
    row("UDP request/response per s", d_udp, r_udp, true);
    let (before, after, relayed) = c.idle_rss(sa("172.30.0.22:80"), idle, || {
        mode.counters()
            .iter()
            .find(|x| x.name == "userspace_active_connections")
            .map_or(0, |x| x.value)
    })?;
    let failed: Vec<String> = mode
        .counters()
        .iter()
        .filter(|x| x.value > 0 && (x.name.contains("connect_") || x.name.contains("exhausted")))
        .map(|x| format!("{} {}", x.name, x.value))
        .collect();
    let per = (after - before) * 1024.0 / relayed.max(1) as f64;
    println!(
        "| VmRSS with {relayed} of {idle} idle TCP connections relayed, MiB | {before:.1} (none) | {after:.1} | +{:.1} MiB ({per:.2} KiB each; x10,000: +{:.1} MiB) |",
        after - before,
        per * 10_000.0 / 1024.0
    );
    println!();
    println!(
        "Relay failure counters over the whole run: {}",
        failed.join(", ")
    );
    Ok(())
}

fn row(what: &str, direct: f64, relay: f64, ratio: bool) {
    let r = if ratio && direct > 0.0 {
        format!("{:.2}", relay / direct)
    } else {
        "-".into()
    };
    println!("| {what} | {direct:.2} | {relay:.2} | {r} |");
}
