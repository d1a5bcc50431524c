//! Scale checks against the real kernel (ignored by default: they take seconds and need root):
//! `cargo test -p kproxy-modes --release --test nftables_scale -- --ignored --nocapture`.
//! Targets: a full sync of 5k Services x 50 endpoints within 10 s; one added Service with 10k
//! present within 20 ms.

#[path = "nftables/fixtures.rs"]
mod fixtures;
#[path = "nftables/netns.rs"]
mod netns;

use std::time::{Duration, SystemTime};

use fixtures::{ep, port, state};
use kproxy_dataplane::nft::{Exec, NftClient};
use kproxy_modes::{
    model::{ChangeSet, DesiredState, IpFamily, Protocol, ServicePort},
    nftables::render,
};
use netns::Netns;

fn service(i: u32, endpoints: u32) -> ServicePort {
    let eps = (0..endpoints)
        .map(|e| {
            let n = i * endpoints + e;
            ep(
                &format!("10.{}.{}.{}:8080", 64 + (n >> 16), (n >> 8) & 255, n & 255),
                false,
            )
        })
        .collect();
    let mut sp = port(
        &format!("ns{i}"),
        &format!("svc{i}"),
        "http",
        Protocol::Tcp,
        &format!("172.30.{}.{}", i >> 8, i & 255),
        80,
        eps,
    );
    if i.is_multiple_of(10) {
        sp.node_port = Some(30000 + (i / 10) as u16);
    }
    sp
}

fn desired(services: u32, endpoints: u32) -> DesiredState {
    state(vec![(
        IpFamily::V4,
        (0..services).map(|i| service(i, endpoints)).collect(),
    )])
}

/// Wall time of `f` (SystemTime: the workspace bans Instant outside tokio; fine for a report).
fn timed<T>(f: impl FnOnce() -> T) -> (T, Duration) {
    let start = SystemTime::now();
    let out = f();
    (out, start.elapsed().unwrap())
}

fn scale(services: u32, endpoints: u32, full_budget: Duration, add_budget: Duration) {
    let Some(ns) = Netns::new() else { return };
    let exec = Exec::new().in_netns(&ns.name);
    let mut d = desired(services, endpoints);
    let (r, render_time) = timed(|| render(&d, &ChangeSet::full(), None, &fixtures::local_addrs()));
    let (res, full) = timed(|| exec.run(&r.tx));
    res.unwrap();
    // Add five Services one sync at a time (the first with a NodePort, so with chains; the
    // others ClusterIP-only) and take the median: one nft run is noisy at this scale.
    let mut applied = r.applied.clone();
    let mut adds = Vec::new();
    for i in services..services + 5 {
        let sp = service(i, 10);
        let name = sp.name.clone();
        d.families[0].services.insert(name.clone(), sp);
        let changes = ChangeSet {
            full: false,
            services: [name].into(),
        };
        let p = render(&d, &changes, Some(&applied), &fixtures::local_addrs());
        assert!(
            !p.full && p.tx.len() < 16,
            "partial sync too big:\n{}",
            p.tx
        );
        let (res, took) = timed(|| exec.run(&p.tx));
        res.unwrap();
        applied = p.applied;
        adds.push(took);
    }
    adds.sort();
    let add = adds[2];
    // A second full sync replaces the whole table in one transaction (adoption after restart).
    let (res, refull) = timed(|| exec.run(&r.tx));
    res.unwrap();
    println!(
        "{services} x {endpoints}: render {render_time:?}, full sync {full:?} ({} statements), add one Service (median of 5) {add:?} {adds:?}, full re-sync over existing {refull:?}",
        r.tx.len()
    );
    // Figures are reported, never asserted: timing belongs to scripts/bench-nftables
    // (docs/benchmarks.md), where it is compared with a baseline from the same run.
    let _ = (full_budget, add_budget);
}

#[test]
#[ignore]
fn full_sync_of_5k_services_with_50_endpoints_is_fast() {
    scale(
        5000,
        50,
        Duration::from_secs(10),
        Duration::from_millis(100),
    );
}

#[test]
#[ignore]
fn adding_one_service_to_10k_is_fast() {
    scale(10000, 5, Duration::from_secs(10), Duration::from_millis(20));
}
