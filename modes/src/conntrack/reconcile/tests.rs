//! Unit tests of the table reconcile (no kernel).
//!
//! IP plan (from the shared helpers): UDP Service `d` at cluster IP 172.30.0.10, external IP
//! 198.51.100.7 and LB IP 1.2.3.4, port 53, NodePort 30053; endpoints 10.1.0.x:53; the client
//! 10.0.0.2; node address 192.168.0.2.

use kproxy_dataplane::conntrack::{Entry, IPPROTO_UDP};

use super::*;
use crate::{
    conntrack::tests::{flow, ip, sa, sp, state},
    model::{IpFamily, NodePortAddresses, NodePortIps, Protocol, ServicePort},
};

const TCP: u8 = 6;

fn udp(dst: &str, target: &str) -> Entry {
    flow(IPPROTO_UDP, dst, target)
}

/// `d` after 10.1.0.1:53 went away: only 10.1.0.2:53 is left.
fn after_removal() -> DesiredState {
    state(vec![sp("d", Protocol::Udp, &["10.1.0.2:53"])])
}

fn stale(desired: &DesiredState, entries: &[Entry]) -> Vec<Entry> {
    reconcile(desired, IpFamily::V4, entries)
}

#[test]
fn flows_dnated_to_a_gone_endpoint_go_on_every_vip_and_live_ones_stay() {
    let gone = [
        udp("172.30.0.10:53", "10.1.0.1:53"),
        udp("198.51.100.7:53", "10.1.0.1:53"),
        udp("1.2.3.4:53", "10.1.0.1:53"),
    ];
    let live = [
        udp("172.30.0.10:53", "10.1.0.2:53"),
        udp("1.2.3.4:53", "10.1.0.2:53"),
    ];
    let entries: Vec<Entry> = gone.iter().chain(&live).cloned().collect();
    assert_eq!(stale(&after_removal(), &entries), gone);
}

#[test]
fn an_endpoint_address_at_another_port_is_not_the_endpoint() {
    let entries = [udp("172.30.0.10:53", "10.1.0.2:5353")];
    assert_eq!(stale(&after_removal(), &entries), entries);
}

#[test]
fn a_flow_that_was_not_dnated_goes_once_the_port_has_endpoints() {
    // Cached while the port had no endpoint: the reply comes from the VIP itself.
    let entries = [udp("172.30.0.10:53", "172.30.0.10:53")];
    assert_eq!(stale(&after_removal(), &entries), entries);
}

#[test]
fn flows_to_a_port_without_endpoints_are_left_alone() {
    let desired = state(vec![sp("d", Protocol::Udp, &[])]);
    let entries = [
        udp("172.30.0.10:53", "172.30.0.10:53"),
        udp("172.30.0.10:53", "10.1.0.1:53"),
        udp("192.168.0.2:30053", "10.1.0.1:53"),
    ];
    assert!(stale(&desired, &entries).is_empty());
    assert!(Targets::of(&desired, IpFamily::V4).is_empty(), "no dump");
    assert!(!Targets::of(&after_removal(), IpFamily::V4).is_empty());
}

#[test]
fn node_port_flows_must_reach_an_endpoint() {
    let gone = udp("192.168.0.2:30053", "10.1.0.1:53");
    let unserved = udp("192.168.0.2:30053", "192.168.0.2:30053");
    let live = udp("192.168.0.2:30053", "10.1.0.2:53");
    let entries = [gone.clone(), unserved.clone(), live];
    assert_eq!(stale(&after_removal(), &entries), [gone, unserved]);
}

#[test]
fn node_port_flows_count_only_on_node_port_addresses() {
    let mut desired = after_removal();
    let restricted = NodePortAddresses::Cidrs(vec!["192.168.0.2/32".parse().unwrap()]);
    desired.families[0].node.node_port_addresses = restricted;
    desired.families[0].node.node_port_ips = NodePortIps::Only(vec![ip("192.168.0.2")]);
    // Not an address NodePorts are opened on: some remote server's port 30053.
    let remote = udp("203.0.113.9:30053", "203.0.113.9:30053");
    let local = udp("192.168.0.2:30053", "10.1.0.1:53");
    let entries = [remote.clone(), local.clone()];
    assert_eq!(stale(&desired, &entries), std::slice::from_ref(&local));
    // With NodePorts on every address, the remote flow cannot be told apart, as upstream.
    assert_eq!(stale(&after_removal(), &entries), [remote, local]);
}

#[test]
fn a_vip_flow_is_judged_by_its_own_port_not_as_a_node_port() {
    // Another UDP Service listens on 172.30.0.20 at the number `d` uses as NodePort.
    let mut other = sp("other", Protocol::Udp, &["10.2.0.1:53"]);
    (other.cluster_ip, other.port, other.node_port) = (ip("172.30.0.20"), 30053, None);
    (other.external_ips, other.load_balancer_ips) = (vec![], vec![]);
    let desired = state(vec![sp("d", Protocol::Udp, &["10.1.0.2:53"]), other]);
    let entries = [
        udp("172.30.0.20:30053", "10.2.0.1:53"),
        udp("172.30.0.20:30053", "10.1.0.2:53"),
    ];
    assert_eq!(stale(&desired, &entries), entries[1..]);
}

#[test]
fn the_local_set_counts_as_endpoints() {
    let mut port: ServicePort = sp("d", Protocol::Udp, &["10.1.0.2:53"]);
    let mut local = port.endpoints.cluster[0].clone();
    (local.addr, local.is_local) = (sa("10.1.0.3:53"), true);
    port.endpoints.local = vec![local];
    let entries = [udp("172.30.0.10:53", "10.1.0.3:53")];
    assert!(stale(&state(vec![port]), &entries).is_empty());
}

#[test]
fn unrelated_tcp_and_other_family_flows_are_never_selected() {
    let desired = after_removal();
    let entries = [
        // UDP to an address no Service uses, and to a VIP at another port.
        udp("8.8.8.8:53", "8.8.8.8:53"),
        udp("172.30.0.10:54", "10.1.0.1:53"),
        // TCP to the VIP, DNATed to the gone endpoint.
        flow(TCP, "172.30.0.10:53", "10.1.0.1:53"),
        // IPv6, in a dump that should only hold IPv4.
        udp("[fd00::10]:53", "[fd00::1]:53"),
    ];
    assert!(stale(&desired, &entries).is_empty());
    // The IPv4 flows of a stale endpoint are none of the IPv6 family's business.
    let v4 = [udp("172.30.0.10:53", "10.1.0.1:53")];
    assert!(reconcile(&desired, IpFamily::V6, &v4).is_empty());
    assert!(Targets::of(&desired, IpFamily::V6).is_empty());
}

#[test]
fn a_flow_without_a_full_reply_source_is_left_alone() {
    let mut entry = udp("172.30.0.10:53", "10.1.0.1:53");
    entry.reply.src_port = None;
    assert!(stale(&after_removal(), &[entry]).is_empty());
}
