//! iptables mode: a Service port whose rules iptables-restore refuses does not keep the others
//! from being programmed, on either backend: the full sync finds it by bisection with
//! `iptables-restore --test`, leaves it out (counted, reported as refused) and applies the rest.
//! The compute never puts an endpoint of the other family in a port (iptables cannot parse
//! `-s fd00::9` in an IPv4 table), so the bad port is built here by hand. Needs root.

use kproxy_modes::{
    Mode,
    iptables::IptablesMode,
    model::{ChangeSet, IpFamily, Protocol, ServicePort},
    registry::{Backend, IptablesSettings},
    testing::fixtures::{self, ep, port, state},
    view,
};
use kproxy_testbed::netns::Netns;

fn with_endpoint(i: u8, endpoint: &str) -> ServicePort {
    let mut sp = port(
        "ns",
        &format!("svc{i}"),
        "p",
        Protocol::Tcp,
        &format!("172.30.0.{i}"),
        80,
        vec![ep(endpoint, false)],
    );
    sp.external_ips = vec![fixtures::ip(&format!("203.0.113.{i}"))];
    fixtures::paths(&mut sp);
    sp
}

fn quarantined(mode: &dyn Mode) -> u64 {
    (mode.counters().iter())
        .find(|c| c.name == "iptables_quarantined_ports")
        .map_or(0, |c| c.value)
}

#[test]
fn a_refused_port_is_left_out_and_the_rest_is_programmed() {
    for backend in [Backend::Nft, Backend::Legacy] {
        let Some(ns) = Netns::scratch() else { return };
        let settings = IptablesSettings {
            localhost_node_ports: false,
            backend: Some(backend),
        };
        let mut mode = IptablesMode::new(Some(ns.name().to_owned()), settings);
        let good = |i| with_endpoint(i, &format!("10.180.0.{i}:80"));
        let bad = with_endpoint(9, "[fd00::9]:80");
        let ports = vec![good(1), bad.clone(), good(2)];
        let desired = state(vec![(IpFamily::V4, ports)]);
        let stats = mode
            .sync(&desired, &ChangeSet::full())
            .unwrap_or_else(|e| panic!("{backend}: the rest is applied: {e}"));
        assert!(stats.full);
        assert_eq!(quarantined(&mode), 1, "{backend}: exactly the refused port");
        assert_eq!(mode.refused(), vec![bad.name.clone()]);

        let mut without = desired.clone();
        without.families[0].services.remove(&bad.name);
        let kernel = mode.kernel_view().unwrap();
        let diff = view::diff(&kernel, &view::expected(&without));
        assert!(diff.is_empty(), "{backend}: the good ports: {diff:#?}");

        // Later partial syncs leave it out without asking again.
        let other = ChangeSet {
            full: false,
            services: [good(1).name].into(),
        };
        mode.sync(&desired, &other).expect("a partial sync");
        assert_eq!(quarantined(&mode), 1);
    }
}
