//! What a [`FlowFilter`] selects, and what every client refuses before touching the kernel.

use super::*;

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// UDP 10.0.0.2:40000 -> 172.30.0.47:53, DNATed to 10.180.0.1:5353.
fn entry() -> Entry {
    let t = |src, dst, sport, dport| FlowTuple {
        src: Some(ip(src)),
        dst: Some(ip(dst)),
        proto: Some(IPPROTO_UDP),
        src_port: Some(sport),
        dst_port: Some(dport),
    };
    Entry {
        orig: t("10.0.0.2", "172.30.0.47", 40000, 53),
        reply: t("10.180.0.1", "10.0.0.2", 5353, 40000),
        zone: None,
        id: None,
    }
}

#[test]
fn filters_match_every_set_field_of_udp_entries_only() {
    let e = entry();
    let vip = FlowFilter::udp_to(ip("172.30.0.47"), 53);
    assert!(vip.matches(&e));
    assert!(vip.clone().dnated_to(ip("10.180.0.1"), 5353).matches(&e));
    assert!(!vip.clone().dnated_to(ip("10.180.0.1"), 5354).matches(&e));
    assert!(!vip.clone().dnated_to(ip("10.180.0.2"), 5353).matches(&e));
    assert!(!FlowFilter::udp_to(ip("172.30.0.48"), 53).matches(&e));
    assert!(!FlowFilter::udp_to(ip("172.30.0.47"), 54).matches(&e));
    assert!(FlowFilter::udp_to_port(L3::Ipv4, 53).matches(&e));
    assert!(
        !FlowFilter::udp_to_port(L3::Ipv6, 53).matches(&e),
        "other family"
    );
    let mut tcp = e.clone();
    tcp.orig.proto = Some(6);
    assert!(!vip.matches(&tcp), "TCP is never selected");
}

#[test]
fn netlink_client_refuses_bad_filters_before_opening_a_socket() {
    // A namespace that does not exist: reaching the kernel would fail with a Netns error.
    let client = ConntrackNetlink::new().in_netns_path("/nonexistent/netns");
    let all = FlowFilter {
        l3: L3::Ipv4,
        orig_dst: None,
        orig_dst_port: None,
        reply_src: None,
        reply_src_port: None,
    };
    let mixed = FlowFilter::udp_to(ip("10.0.0.1"), 53).dnated_to(ip("fd00::1"), 53);
    let ok = FlowFilter::udp_to(ip("10.0.0.1"), 53);
    let results = client.delete_each(&[all, mixed, ok.clone(), ok]);
    assert!(matches!(results[0], Err(ConntrackError::Unbounded(_))));
    assert!(matches!(results[1], Err(ConntrackError::MixedFamilies(_))));
    // Both bounded filters fail with the one namespace error, shared.
    for r in &results[2..] {
        assert!(
            matches!(r, Err(e @ ConntrackError::Netns { .. }) if e.errno() == Some(2)),
            "{r:?}"
        );
    }
}

#[test]
fn exact_deletes_refuse_tcp_and_other_family_entries_before_opening_a_socket() {
    let client = ConntrackNetlink::new().in_netns_path("/nonexistent/netns");
    let mut tcp = entry();
    tcp.orig.proto = Some(6);
    let udp = entry();
    // Only foreign entries: refused without reaching the (missing) namespace.
    let results = client.delete_entries(L3::Ipv4, &[tcp.clone(), udp.clone()][..1]);
    assert!(matches!(results[0], Err(ConntrackError::Foreign { .. })));
    let results = client.delete_entries(L3::Ipv6, std::slice::from_ref(&udp));
    assert!(
        matches!(results[0], Err(ConntrackError::Foreign { .. })),
        "a v4 entry named as v6"
    );
    assert!(client.delete_entries(L3::Ipv4, &[]).is_empty());
    // With a UDP entry among them the socket is needed: it fails with the namespace error,
    // while the TCP entry keeps its refusal.
    let results = client.delete_entries(L3::Ipv4, &[tcp, udp]);
    assert!(matches!(results[0], Err(ConntrackError::Foreign { .. })));
    assert!(
        matches!(&results[1], Err(e @ ConntrackError::Netns { .. }) if e.errno() == Some(2)),
        "{:?}",
        results[1]
    );
}
