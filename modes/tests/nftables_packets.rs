//! Real packets through the nftables mode: a node namespace with a pod client, two endpoint
//! namespaces and an external client, joined by veth pairs, with socat servers that answer with
//! their own address and the peer address they saw (to tell masquerading apart).
//! Needs root (skipped otherwise), `ip`, `nft`, `socat` and `python3` (the UDP echo server).
//!
//! IP plan (node namespace N in the middle):
//!   pod C  10.0.0.2      <-> N 10.0.0.1
//!   ep E1  10.180.0.1    <-> N 10.180.0.254
//!   ep E2  10.180.1.1    <-> N 10.180.1.254
//!   ext X  203.0.113.2   <-> N 203.0.113.1 and 192.168.0.2 (the node IP, NodePorts)

mod nftables;
use kproxy_modes::testing::fixtures;
use kproxy_testbed::netns;
use nftables::wire;

use std::collections::BTreeSet;

use fixtures::{ep, local_policy, port, state};
use kproxy_dataplane::nft::Exec;
use kproxy_modes::{
    Mode,
    model::{ChangeSet, IpFamily, Protocol, SessionAffinity},
    nftables::NftablesMode,
};
use netns::Netns;
use wire::*;

/// Cluster IP through the chainless and the chain path (both endpoints, client address kept),
/// hairpin and node traffic (masqueraded), undefined port and no endpoints (REJECT), unallocated
/// IP (DROP), NodePort under eTP=Cluster (masqueraded) and eTP=Local (client address kept from
/// outside; pods short-circuit to all endpoints), LB source ranges (DROP), UDP, session affinity,
/// IPv6 cluster IP and NodePort, and a partial sync seen on the wire.
#[test]
fn packets_follow_the_service_rules() {
    let Some(node) = Netns::scratch() else { return };
    let (pod, e1, e2, ext) = (
        Netns::scratch().unwrap(),
        Netns::scratch().unwrap(),
        Netns::scratch().unwrap(),
        Netns::scratch().unwrap(),
    );
    link(&node, &pod, "c", "10.0.0.2/24", &["10.0.0.1/24"]);
    link(&node, &e1, "e1", "10.180.0.1/24", &["10.180.0.254/24"]);
    link(&node, &e2, "e2", "10.180.1.1/24", &["10.180.1.254/24"]);
    link(
        &node,
        &ext,
        "x",
        "203.0.113.2/24",
        &["203.0.113.1/24", "192.168.0.2/24"],
    );
    link6(&node, &pod, "c", "fd00:10::2/64", &["fd00:10::1/64"]);
    link6(
        &node,
        &e1,
        "e1",
        "fd00:10:180::1/64",
        &["fd00:10:180::fe/64"],
    );
    link6(
        &node,
        &ext,
        "x",
        "2600:5200::1/64",
        &["2600:5200::fe/64", "2001:db8::1/64"],
    );
    node.exec(&["sysctl", "-q", "-w", "net.ipv4.ip_forward=1"]);
    node.exec(&["sysctl", "-q", "-w", "net.ipv6.conf.all.forwarding=1"]);
    // Like a real node: a default route, so Service IPs are routable before our rules act.
    node.exec(&["ip", "route", "add", "default", "via", "203.0.113.2"]);
    let _servers = Servers(vec![
        serve(&e1, "10.180.0.1"),
        serve(&e2, "10.180.1.1"),
        serve(&e1, "fd00:10:180::1"),
        serve_udp(&e2, "10.180.1.1"),
    ]);
    for (ns, addr) in [
        (&e1, "10.180.0.1"),
        (&e2, "10.180.1.1"),
        (&e1, "fd00:10:180::1"),
    ] {
        // Readiness: a direct connection succeeds once socat listens (refused until then).
        assert!(
            (0..2000).any(|_| connect(ns, addr, 80).is_ok()),
            "{addr} never listened"
        );
    }

    // ClusterIP-only: the chainless pick path. `both` has a NodePort: the per-Service chain path.
    let single = port(
        "ns1",
        "single",
        "http",
        Protocol::Tcp,
        "172.30.0.41",
        80,
        vec![ep("10.180.0.1:80", true)],
    );
    let mut both = port(
        "ns2",
        "both",
        "http",
        Protocol::Tcp,
        "172.30.0.42",
        80,
        vec![ep("10.180.0.1:80", true), ep("10.180.1.1:80", false)],
    );
    both.node_port = Some(3002);
    // Source ranges that leave out the external client (but contain the node's 192.168.0.2).
    both.load_balancer_ips = vec!["1.2.3.4".parse().unwrap()];
    both.lb_allowed_sources = fixtures::lb_sources(&both, &["192.168.0.0/24"]);
    let none = port(
        "ns3",
        "none",
        "http",
        Protocol::Tcp,
        "172.30.0.43",
        80,
        vec![],
    );
    let mut local = port(
        "ns4",
        "local",
        "http",
        Protocol::Tcp,
        "172.30.0.44",
        80,
        vec![ep("10.180.0.1:80", true), ep("10.180.1.1:80", false)],
    );
    local.node_port = Some(3004);
    let local = local_policy(local, false);
    let pair = port(
        "ns5",
        "pair",
        "http",
        Protocol::Tcp,
        "172.30.0.45",
        80,
        vec![ep("10.180.0.1:80", true), ep("10.180.1.1:80", false)],
    );
    let mut sticky = port(
        "ns6",
        "sticky",
        "http",
        Protocol::Tcp,
        "172.30.0.46",
        80,
        vec![ep("10.180.0.1:80", true), ep("10.180.1.1:80", false)],
    );
    sticky.session_affinity = Some(SessionAffinity {
        timeout_seconds: 600,
    });
    let v6_plain = port(
        "ns1",
        "single",
        "http",
        Protocol::Tcp,
        "fd00:172:30::41",
        80,
        vec![ep("[fd00:10:180::1]:80", true)],
    );
    let mut v6_nodeport = port(
        "ns2",
        "both",
        "http",
        Protocol::Tcp,
        "fd00:172:30::42",
        80,
        vec![ep("[fd00:10:180::1]:80", true)],
    );
    v6_nodeport.node_port = Some(3002);
    let dns = port(
        "ns7",
        "dns",
        "dns",
        Protocol::Udp,
        "172.30.0.47",
        53,
        vec![ep("10.180.1.1:53", false)],
    );
    let mut desired = state(vec![
        (
            IpFamily::V4,
            vec![single, both, none, local, pair, sticky, dns],
        ),
        (IpFamily::V6, vec![v6_plain, v6_nodeport]),
    ]);
    // The real constructor: it reads the node namespace's addresses for nodeport-ips.
    let mut mode = NftablesMode::with_exec(Exec::new().in_netns(node.name()));
    mode.sync(&desired, &ChangeSet::full()).unwrap();
    assert!(
        mode.dump().unwrap().contains("192.168.0.2"),
        "nodeport-ips not filled from the kernel"
    );

    let peers = reach_all(&pod, "172.30.0.42", 80, &["10.180.0.1", "10.180.1.1"]);
    assert_eq!(
        peers,
        BTreeSet::from(["10.0.0.2".to_owned()]),
        "pod traffic must keep its source"
    );
    let peers = reach_all(&pod, "172.30.0.45", 80, &["10.180.0.1", "10.180.1.1"]);
    assert_eq!(peers, BTreeSet::from(["10.0.0.2".to_owned()]));
    let peers = reach_all(&e1, "172.30.0.41", 80, &["10.180.0.1"]);
    assert_eq!(
        peers,
        BTreeSet::from(["10.180.0.254".to_owned()]),
        "hairpin must be masqueraded"
    );

    for (dest, port) in [("172.30.0.43", 80), ("172.30.0.41", 443)] {
        let err = connect(&pod, dest, port).unwrap_err();
        assert!(
            err.contains("refused"),
            "{dest}:{port} should be rejected: {err}"
        );
    }
    // Without the DROP, the node would route this to X, which owns the address and would refuse.
    ext.exec(&["ip", "addr", "add", "172.30.0.50/32", "dev", "px"]);
    let err = connect(&pod, "172.30.0.50", 80).unwrap_err();
    assert!(
        err.contains("timed out"),
        "unallocated IP should be dropped: {err}"
    );

    let peers = reach_all(&ext, "192.168.0.2", 3002, &["10.180.0.1", "10.180.1.1"]);
    assert!(
        peers.iter().all(|p| p.starts_with("10.180.")),
        "eTP=Cluster NodePort must be masqueraded: {peers:?}"
    );
    let peers = reach_all(&ext, "192.168.0.2", 3004, &["10.180.0.1"]);
    assert_eq!(
        peers,
        BTreeSet::from(["203.0.113.2".to_owned()]),
        "eTP=Local keeps the client address"
    );

    // eTP=Local: pod traffic to the NodePort short-circuits to every endpoint, unmasqueraded.
    let peers = reach_all(&pod, "192.168.0.2", 3004, &["10.180.0.1", "10.180.1.1"]);
    assert_eq!(peers, BTreeSet::from(["10.0.0.2".to_owned()]));
    // The node's own traffic to a cluster IP is masqueraded (its source is not a pod address).
    let peers = reach_all(&node, "172.30.0.41", 80, &["10.180.0.1"]);
    assert_eq!(peers, BTreeSet::from(["10.180.0.254".to_owned()]));
    // loadBalancerSourceRanges: the external client is outside them, so its connection to the
    // LB IP is dropped (without the firewall check, the endpoints would answer).
    let err = connect(&ext, "1.2.3.4", 80).unwrap_err();
    assert!(
        err.contains("timed out"),
        "outside the source ranges: {err}"
    );
    // UDP through the chainless path.
    // UDP may lose a datagram (as a DNS client would, retry): three tries, then fail.
    let reply = (0..3)
        .find_map(|_| ask_udp(&pod, "172.30.0.47"))
        .expect("UDP answer");
    assert_eq!(reply, "10.180.1.1 10.0.0.2");

    // Session affinity: every connection from one client reaches the same endpoint (with two
    // endpoints chosen at random, 12 equal answers by chance has probability 1/2048).
    let answers: BTreeSet<String> = (0..12)
        .map(|_| connect(&pod, "172.30.0.46", 80).unwrap())
        .collect();
    assert_eq!(answers.len(), 1, "affinity broken: {answers:?}");

    // The IPv6 path itself works (a direct connection) before Services are tried on it.
    reach_all(&pod, "fd00:10:180::1", 80, &["fd00:10:180::1"]);
    // IPv6: the chainless path for the cluster IP, and a NodePort (masqueraded, eTP=Cluster).
    let peers = reach_all(&pod, "fd00:172:30::41", 80, &["fd00:10:180::1"]);
    assert_eq!(peers, BTreeSet::from(["fd00:10::2".to_owned()]));
    let peers = reach_all(&ext, "2001:db8::1", 3002, &["fd00:10:180::1"]);
    assert_eq!(peers, BTreeSet::from(["fd00:10:180::fe".to_owned()]));

    // A partial sync: `pair` loses its endpoint on E1; only E2 answers afterwards.
    let fam = &mut desired.families[0];
    let pair = fam
        .services
        .values_mut()
        .find(|p| p.name.name == "pair")
        .unwrap();
    pair.endpoints.cluster.remove(0);
    fixtures::paths(pair);
    let changes = ChangeSet {
        full: false,
        services: [pair.name.clone()].into(),
    };
    let stats = mode.sync(&desired, &changes).unwrap();
    assert!(!stats.full);
    let answers: BTreeSet<String> = (0..8)
        .map(|_| connect(&pod, "172.30.0.45", 80).unwrap())
        .collect();
    assert_eq!(answers, BTreeSet::from(["10.180.1.1 10.0.0.2".to_owned()]));
}
