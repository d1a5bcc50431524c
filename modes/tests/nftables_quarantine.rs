//! A Service port whose rules the kernel refuses does not keep the others from being programmed:
//! the full sync finds it by bisection with `nft -c`, leaves it out (counted), and applies the
//! rest; the port is tried again when it changes. Validation at the door keeps such names out
//! of real desired states, so the bad port is built here by hand. Needs root.

use kproxy_dataplane::nft::Exec;
use kproxy_modes::{
    Mode,
    model::{ChangeSet, IpFamily, Protocol},
    nftables::NftablesMode,
    testing::fixtures::{self, ep, port, state},
    view::{self, Dest},
};
use kproxy_testbed::netns::Netns;

/// A port with an external IP (so it has chains named after it) and a quote in its name, which
/// nft refuses in a chain name.
fn refused_port() -> kproxy_modes::model::ServicePort {
    let mut sp = port(
        "bad\"ns",
        "svc",
        "p",
        Protocol::Tcp,
        "172.30.0.9",
        80,
        vec![ep("10.180.0.9:80", false)],
    );
    sp.external_ips = vec![fixtures::ip("203.0.113.9")];
    fixtures::paths(&mut sp);
    sp
}

fn good_port(i: u8) -> kproxy_modes::model::ServicePort {
    let mut sp = port(
        "ns",
        &format!("svc{i}"),
        "p",
        Protocol::Tcp,
        &format!("172.30.0.{i}"),
        80,
        vec![ep(&format!("10.180.0.{i}:80"), false)],
    );
    sp.external_ips = vec![fixtures::ip(&format!("203.0.113.{i}"))];
    fixtures::paths(&mut sp);
    sp
}

fn counter(mode: &dyn Mode) -> u64 {
    (mode.counters().iter())
        .find(|c| c.name == "nftables_quarantined_ports")
        .map_or(0, |c| c.value)
}

#[test]
fn a_refused_port_is_left_out_and_the_rest_is_programmed() {
    let Some(ns) = Netns::scratch() else { return };
    let mut mode = NftablesMode::with_exec(Exec::new().in_netns(ns.name()));
    let ports = vec![good_port(1), refused_port(), good_port(2), good_port(3)];
    let desired = state(vec![(IpFamily::V4, ports)]);
    let stats = mode
        .sync(&desired, &ChangeSet::full())
        .expect("the rest is applied");
    assert!(stats.full);
    assert_eq!(counter(&mode), 1, "exactly the refused port is quarantined");

    let kernel = mode.kernel_view().unwrap();
    let mut without = desired.clone();
    let bad = refused_port().name;
    without.families[0].services.remove(&bad);
    let diff = view::diff(&kernel, &view::expected(&without));
    assert!(diff.is_empty(), "the good ports are programmed: {diff:#?}");
    let bad_vip = Dest::Vip {
        ip: fixtures::ip("172.30.0.9"),
        protocol: Protocol::Tcp,
        port: 80,
    };
    assert!(!kernel.dests.contains_key(&bad_vip));

    // Later syncs leave it out without asking the kernel again; when it changes it is tried
    // again (refused again here, so quarantined a second time), and the rest stays.
    let other = good_port(1).name;
    let partial = ChangeSet {
        full: false,
        services: [other].into(),
    };
    mode.sync(&desired, &partial).expect("a partial sync");
    assert_eq!(counter(&mode), 1);
    let changed = ChangeSet {
        full: false,
        services: [bad].into(),
    };
    let retried = mode.sync(&desired, &changed);
    assert!(
        retried.is_err(),
        "tried again on its change: the partial sync is refused"
    );
    // The next sync is full (the agent retries with a full change set) and isolates it again.
    mode.sync(&desired, &ChangeSet::full()).expect("full sync");
    assert_eq!(counter(&mode), 2, "refused again after its change");
    let kernel = mode.kernel_view().unwrap();
    assert!(view::diff(&kernel, &view::expected(&without)).is_empty());
}
