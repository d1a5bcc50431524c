//! Functional checks at a moderate scale against the real kernel (root; skipped otherwise): a full
//! sync of a few hundred Services, single-Service additions that stay small partial syncs, and a
//! full re-sync over the existing table. No timings here: performance is measured, beside a
//! same-run baseline, by scripts/bench-nftables (docs/benchmarks.md).

use kproxy_modes::testing::fixtures;
use kproxy_testbed::netns;

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
    fixtures::paths(&mut sp);
    sp
}

fn desired(services: u32, endpoints: u32) -> DesiredState {
    state(vec![(
        IpFamily::V4,
        (0..services).map(|i| service(i, endpoints)).collect(),
    )])
}

#[test]
fn adding_services_to_a_loaded_table_are_small_partial_syncs() {
    let Some(ns) = Netns::scratch() else { return };
    let exec = Exec::new().in_netns(ns.name());
    let (services, endpoints) = (500, 5);
    let mut d = desired(services, endpoints);
    let r = render(&d, &ChangeSet::full(), None);
    exec.run(&r.tx).unwrap();
    // The first added Service has a NodePort (so chains of its own), the others are
    // ClusterIP-only: each sync names only the new Service's objects.
    let mut applied = r.applied.clone();
    for i in services..services + 5 {
        let sp = service(i, 10);
        let name = sp.name.clone();
        d.families[0].services.insert(name.clone(), sp);
        let changes = ChangeSet {
            full: false,
            services: [name].into(),
        };
        let p = render(&d, &changes, Some(&applied));
        assert!(
            !p.full && p.tx.len() < 16,
            "partial sync too big:\n{}",
            p.tx
        );
        exec.run(&p.tx).unwrap();
        applied = p.applied;
    }
    // A second full sync replaces the whole table in one transaction (adoption after restart).
    exec.run(&r.tx).unwrap();
}
