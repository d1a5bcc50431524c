//! The bed itself, with real packets: each test builds its own namespaces (run as root).

use kproxy_testbed::{Outcome, Proto, TestBed, Where, netns, run_in};
use std::net::{IpAddr, SocketAddr};

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn sa(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

fn answered_by(o: &Outcome, by: &str, saw: &str) {
    assert_eq!(
        o,
        &Outcome::Answered {
            by: by.to_string(),
            saw_source: ip(saw)
        }
    );
}

async fn bed() -> TestBed {
    TestBed::new(&[ip("192.168.0.2"), ip("192.168.1.2"), ip("2001:db8::1")])
        .await
        .expect("test bed")
}

#[tokio::test(flavor = "multi_thread")]
async fn pod_reaches_remote_endpoint_and_external_reaches_pod() {
    let mut b = bed().await;
    b.add_pod(ip("10.0.0.2")).await.unwrap();
    b.add_pod(ip("10.180.0.1")).await.unwrap();
    b.add_remote_endpoint(ip("10.180.2.1")).await.unwrap();
    b.add_external(ip("203.0.113.2")).await.unwrap();
    b.serve(Where::Remote, Proto::Tcp, sa("10.180.2.1:80"), None)
        .await
        .unwrap();
    b.serve(
        Where::Pod(ip("10.180.0.1")),
        Proto::Tcp,
        sa("10.180.0.1:80"),
        None,
    )
    .await
    .unwrap();

    let o = b
        .probe(Proto::Tcp, ip("10.0.0.2"), sa("10.180.2.1:80"))
        .await
        .unwrap();
    answered_by(&o, "10.180.2.1:80", "10.0.0.2");
    let o = b
        .probe(Proto::Tcp, ip("203.0.113.2"), sa("10.180.0.1:80"))
        .await
        .unwrap();
    answered_by(&o, "10.180.0.1:80", "203.0.113.2");
    // The node itself reaches a pod from its own address.
    let o = b
        .probe(Proto::Tcp, ip("192.168.0.2"), sa("10.180.0.1:80"))
        .await
        .unwrap();
    answered_by(&o, "10.180.0.1:80", "192.168.0.2");
    assert!(
        b.node_addresses()
            .await
            .unwrap()
            .contains(&ip("192.168.1.2"))
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn udp_echo_and_ipv6() {
    let mut b = bed().await;
    b.add_pod(ip("10.0.0.2")).await.unwrap();
    b.add_pod(ip("fd00:10::2")).await.unwrap();
    b.add_pod(ip("fd00:10:180::1")).await.unwrap();
    b.add_remote_endpoint(ip("fd00:10:180::2:1")).await.unwrap();
    b.add_external(ip("2600:5200::1")).await.unwrap();
    b.serve(Where::Remote, Proto::Udp, sa("[fd00:10:180::2:1]:53"), None)
        .await
        .unwrap();
    b.serve(
        Where::Pod(ip("fd00:10:180::1")),
        Proto::Tcp,
        sa("[fd00:10:180::1]:80"),
        None,
    )
    .await
    .unwrap();
    b.serve(Where::Node, Proto::Udp, sa("0.0.0.0:5353"), Some("node"))
        .await
        .unwrap();

    let o = b
        .probe(Proto::Udp, ip("fd00:10::2"), sa("[fd00:10:180::2:1]:53"))
        .await
        .unwrap();
    answered_by(&o, "[fd00:10:180::2:1]:53", "fd00:10::2");
    let o = b
        .probe(Proto::Tcp, ip("2600:5200::1"), sa("[fd00:10:180::1]:80"))
        .await
        .unwrap();
    answered_by(&o, "[fd00:10:180::1]:80", "2600:5200::1");
    let o = b
        .probe(Proto::Tcp, ip("2001:db8::1"), sa("[fd00:10:180::1]:80"))
        .await
        .unwrap();
    answered_by(&o, "[fd00:10:180::1]:80", "2001:db8::1");
    // A wildcard UDP server replies from the address it was sent to (here the secondary node IP),
    // or the client's connected socket would not take the reply.
    let o = b
        .probe(Proto::Udp, ip("10.0.0.2"), sa("192.168.1.2:5353"))
        .await
        .unwrap();
    answered_by(&o, "node", "10.0.0.2");
}

#[tokio::test(flavor = "multi_thread")]
async fn refused_versus_no_answer() {
    let mut b = bed().await;
    b.add_pod(ip("10.0.0.2")).await.unwrap();
    b.add_pod(ip("10.180.0.1")).await.unwrap();
    // Nothing listens on the pod's port 81: the pod's kernel resets (TCP) or says port
    // unreachable (UDP).
    let o = b
        .probe(Proto::Tcp, ip("10.0.0.2"), sa("10.180.0.1:81"))
        .await
        .unwrap();
    assert!(matches!(o, Outcome::Refused { .. }), "{o}");
    let o = b
        .probe(Proto::Udp, ip("10.0.0.2"), sa("10.180.0.1:81"))
        .await
        .unwrap();
    assert!(matches!(o, Outcome::Refused { .. }), "{o}");

    b.serve(
        Where::Pod(ip("10.180.0.1")),
        Proto::Tcp,
        sa("10.180.0.1:80"),
        None,
    )
    .await
    .unwrap();
    b.serve(
        Where::Pod(ip("10.180.0.1")),
        Proto::Tcp,
        sa("10.180.0.1:8080"),
        None,
    )
    .await
    .unwrap();
    let nft = "table inet kpt_test { chain c { type filter hook forward priority 0; \
               tcp dport 80 reject; tcp dport 8080 drop; }; \
               chain o { type filter hook output priority 0; \
               tcp dport 80 reject; tcp dport 8080 drop; udp dport 8080 drop; }; }";
    run_in(&b.node, "nft", &[nft]).await.unwrap();
    let o = b
        .probe(Proto::Tcp, ip("10.0.0.2"), sa("10.180.0.1:80"))
        .await
        .unwrap();
    match o {
        Outcome::Refused { after, .. } => assert!(after.as_millis() < 500, "slow: {after:?}"),
        other => panic!("expected Refused, got {other}"),
    }
    let o = b
        .probe(Proto::Tcp, ip("10.0.0.2"), sa("10.180.0.1:8080"))
        .await
        .unwrap();
    assert_eq!(o, Outcome::NoAnswer);
    // The node's own packets: a reject in output is refused, a drop there (EPERM from the
    // kernel) is no answer.
    let node = ip("192.168.0.2");
    let o = b
        .probe(Proto::Tcp, node, sa("10.180.0.1:80"))
        .await
        .unwrap();
    assert!(matches!(o, Outcome::Refused { .. }), "{o}");
    let o = b
        .probe(Proto::Tcp, node, sa("10.180.0.1:8080"))
        .await
        .unwrap();
    assert_eq!(o, Outcome::NoAnswer);
    let o = b
        .probe(Proto::Udp, node, sa("10.180.0.1:8080"))
        .await
        .unwrap();
    assert_eq!(o, Outcome::NoAnswer);
    run_in(&b.node, "nft", &["delete table inet kpt_test"])
        .await
        .unwrap();
    let o = b
        .probe(Proto::Tcp, ip("10.0.0.2"), sa("10.180.0.1:8080"))
        .await
        .unwrap();
    answered_by(&o, "10.180.0.1:8080", "10.0.0.2");
}

#[tokio::test(flavor = "multi_thread")]
async fn sink_answers_for_unrouted_destinations() {
    let mut b = bed().await;
    b.add_pod(ip("10.0.0.2")).await.unwrap();
    b.add_external(ip("203.0.113.2")).await.unwrap();
    b.add_pod(ip("fd00:10::2")).await.unwrap();
    for (proto, addr) in [
        (Proto::Tcp, "0.0.0.0:80"),
        (Proto::Udp, "0.0.0.0:80"),
        (Proto::Tcp, "[::]:80"),
    ] {
        b.serve(Where::Sink, proto, sa(addr), Some("sink"))
            .await
            .unwrap();
    }
    let o = b
        .probe(Proto::Tcp, ip("10.0.0.2"), sa("172.30.0.41:80"))
        .await
        .unwrap();
    answered_by(&o, "sink", "10.0.0.2");
    let o = b
        .probe(Proto::Udp, ip("10.0.0.2"), sa("172.30.0.42:80"))
        .await
        .unwrap();
    answered_by(&o, "sink", "10.0.0.2");
    let o = b
        .probe(Proto::Tcp, ip("203.0.113.2"), sa("1.2.3.4:80"))
        .await
        .unwrap();
    answered_by(&o, "sink", "203.0.113.2");
    let o = b
        .probe(Proto::Tcp, ip("192.168.0.2"), sa("5.6.7.8:80"))
        .await
        .unwrap();
    answered_by(&o, "sink", "192.168.0.2");
    let o = b
        .probe(Proto::Tcp, ip("fd00:10::2"), sa("[fd00:172:30::41]:80"))
        .await
        .unwrap();
    answered_by(&o, "sink", "fd00:10::2");
}

/// A load balancer that SNATs to its own IP: an external client sends from its address to that same
/// address, and the packet must reach the node (here DNATed to a pod) rather than the client itself.
#[tokio::test(flavor = "multi_thread")]
async fn external_client_sends_to_its_own_address_through_the_node() {
    let mut b = bed().await;
    for (lb, pod) in [
        ("5.6.7.8", "10.180.0.1"),
        ("2600:5200::8", "fd00:10:180::1"),
    ] {
        b.add_external(ip(lb)).await.unwrap();
        b.add_pod(ip(pod)).await.unwrap();
        for proto in [Proto::Tcp, Proto::Udp] {
            b.serve(
                Where::Pod(ip(pod)),
                proto,
                SocketAddr::new(ip(pod), 80),
                None,
            )
            .await
            .unwrap();
        }
    }
    let nft = "table ip kpt_lb { chain pre { type nat hook prerouting priority -100; \
               ip daddr 5.6.7.8 meta l4proto { tcp, udp } th dport 80 dnat to 10.180.0.1:80; }; }; \
               table ip6 kpt_lb { chain pre { type nat hook prerouting priority -100; \
               ip6 daddr 2600:5200::8 tcp dport 80 dnat to [fd00:10:180::1]:80; }; }";
    run_in(&b.node, "nft", &[nft]).await.unwrap();
    for proto in [Proto::Tcp, Proto::Udp] {
        let o = b
            .probe(proto, ip("5.6.7.8"), sa("5.6.7.8:80"))
            .await
            .unwrap();
        answered_by(&o, "10.180.0.1:80", "5.6.7.8");
    }
    let o = b
        .probe(Proto::Tcp, ip("2600:5200::8"), sa("[2600:5200::8]:80"))
        .await
        .unwrap();
    answered_by(&o, "[fd00:10:180::1]:80", "2600:5200::8");
}

#[tokio::test(flavor = "multi_thread")]
async fn sctp_is_skipped_on_this_kernel() {
    if kproxy_testbed::sctp_supported() {
        eprintln!("this kernel has SCTP sockets; the skip path is not exercised");
        return;
    }
    let mut b = bed().await;
    b.add_pod(ip("10.0.0.2")).await.unwrap();
    let o = b
        .probe(Proto::Sctp, ip("10.0.0.2"), sa("10.180.0.1:53"))
        .await
        .unwrap();
    assert_eq!(o, Outcome::Skipped("kernel has no SCTP sockets".into()));
}

#[tokio::test(flavor = "multi_thread")]
async fn drop_removes_the_namespaces() {
    let mut b = bed().await;
    b.add_pod(ip("10.0.0.2")).await.unwrap();
    b.add_external(ip("203.0.113.9")).await.unwrap();
    let names = b.namespace_names();
    assert_eq!(names.len(), 6);
    assert!(names.iter().all(|n| netns::exists(n)));
    drop(b);
    let left: Vec<_> = names.iter().filter(|n| netns::exists(n)).collect();
    assert!(left.is_empty(), "left behind: {left:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn cleanup_prefix_removes_leftovers() {
    let b = bed().await;
    let names = b.namespace_names();
    // A crashed test leaves its namespaces; cleanup by the bed's tag finds them.
    std::mem::forget(b);
    let removed = netns::cleanup_prefix(&names[0][..=names[0].rfind('-').unwrap()]).unwrap();
    assert_eq!(removed.len(), names.len());
    assert!(names.iter().all(|n| !netns::exists(n)));
}
