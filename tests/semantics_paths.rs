//! The per-path facts the compute decides for every mode: which endpoint set each kind of
//! traffic uses, the verdict for a path without endpoints, masquerading and the short-circuit of
//! external traffic, the sources allowed to reach LB IPs, and the NodePort addresses. Each case
//! names the upstream rule it checks (pkg/proxy/nftables/proxier.go `syncProxyRules` unless
//! said otherwise; iptables mode decides the same).

mod support;

use kproxy::{
    desired::{self, ProxyOptions},
    source::{Event, Kind, Object},
    tracker::Tracker,
};
use kproxy_modes::model::{
    ExternalPath, IpFamily, Masquerade, NoEndpoints, NoEndpointsReason as Why,
    NoEndpointsVerdict as V, NodePortIps, Path, TrafficPolicy::*,
};
use serde_json::{Value, json};
use support::*;

const REJECT: Option<NoEndpoints> = Some(NoEndpoints {
    verdict: V::Reject,
    reason: Why::NoEndpoints,
});
const DROP: Option<NoEndpoints> = Some(NoEndpoints {
    verdict: V::Drop,
    reason: Why::NoLocalEndpoints,
});

fn local(ip: &str) -> Value {
    json!({"addresses": [ip], "nodeName": NODE})
}

fn remote(ip: &str) -> Value {
    json!({"addresses": [ip], "nodeName": "other"})
}

fn gone(ip: &str) -> Value {
    json!({"addresses": [ip], "conditions": {"ready": false, "serving": false, "terminating": true}})
}

fn path(set: kproxy_modes::model::TrafficPolicy, when_empty: Option<NoEndpoints>) -> Path {
    Path { set, when_empty }
}

fn ext(p: Path, local_policy: bool) -> Option<ExternalPath> {
    Some(ExternalPath {
        path: p,
        short_circuit_local_traffic: local_policy,
        masquerade: if local_policy {
            Masquerade::NodeOriginOnly
        } else {
            Masquerade::Always
        },
    })
}

struct PathCase {
    rule: &'static str,
    spec: Value,
    endpoints: Value,
    internal: Path,
    external: Option<ExternalPath>,
}

fn node_port(etp: &str) -> Value {
    json!({"type": "NodePort", "externalTrafficPolicy": etp,
           "ports": [{"name": "p80", "port": 80, "protocol": "TCP", "nodePort": 30080}]})
}

fn path_cases() -> Vec<PathCase> {
    vec![
        PathCase {
            rule: "no usable endpoint anywhere -> REJECT, 'has no endpoints' (`if !hasEndpoints`)",
            spec: json!({}),
            endpoints: json!([]),
            internal: path(Cluster, REJECT),
            external: None,
        },
        PathCase {
            rule: "endpoints neither ready nor serving count as none -> REJECT (CategorizeEndpoints)",
            spec: json!({}),
            endpoints: json!([gone("10.0.1.1")]),
            internal: path(Cluster, REJECT),
            external: None,
        },
        PathCase {
            rule: "iTP=Local, endpoints only on other nodes -> DROP, 'has no local endpoints' (`!hasInternalEndpoints`)",
            spec: json!({"internalTrafficPolicy": "Local"}),
            endpoints: json!([remote("10.0.1.1")]),
            internal: path(Local, DROP),
            external: None,
        },
        PathCase {
            rule: "iTP=Local with a local endpoint -> the Local set (KEP-2086)",
            spec: json!({"internalTrafficPolicy": "Local"}),
            endpoints: json!([local("10.0.1.1"), remote("10.0.1.2")]),
            internal: path(Local, None),
            external: None,
        },
        PathCase {
            rule: "externalIPs make a ClusterIP Service externally reachable (`ExternallyAccessible`)",
            spec: json!({"externalIPs": ["192.168.99.11"]}),
            endpoints: json!([remote("10.0.1.1")]),
            internal: path(Cluster, None),
            external: ext(path(Cluster, None), false),
        },
        PathCase {
            rule: "eTP=Cluster: external traffic uses the Cluster set, all of it masqueraded ('masquerade traffic from outside')",
            spec: node_port("Cluster"),
            endpoints: json!([remote("10.0.1.1")]),
            internal: path(Cluster, None),
            external: ext(path(Cluster, None), false),
        },
        PathCase {
            rule: "eTP=Local, only remote endpoints -> external DROP (`!hasExternalEndpoints`); pod and node traffic short-circuits to the Cluster set, only node traffic is masqueraded",
            spec: node_port("Local"),
            endpoints: json!([remote("10.0.1.1")]),
            internal: path(Cluster, None),
            external: ext(path(Local, DROP), true),
        },
        PathCase {
            rule: "eTP=Local, no endpoint anywhere -> external REJECT as well (`if !hasEndpoints`)",
            spec: node_port("Local"),
            endpoints: json!([]),
            internal: path(Cluster, REJECT),
            external: ext(path(Local, REJECT), true),
        },
        PathCase {
            rule: "eTP=Local with a local endpoint -> the Local set, client source preserved",
            spec: node_port("Local"),
            endpoints: json!([local("10.0.1.1"), remote("10.0.1.2")]),
            internal: path(Cluster, None),
            external: ext(path(Local, None), true),
        },
        PathCase {
            rule: "serving terminating endpoints keep a path served, no REJECT (KEP-1669 terminating fallback)",
            spec: json!({}),
            endpoints: json!([{"addresses": ["10.0.1.1"], "conditions": {"ready": false, "serving": true, "terminating": true}}]),
            internal: path(Cluster, None),
            external: None,
        },
    ]
}

/// Each row: one Service `ns1/svc` with one slice; check both paths.
#[test]
fn each_path_follows_the_upstream_rule() {
    let mut failures = Vec::new();
    for case in path_cases() {
        let state = compute(
            &[simple_service("svc", case.spec.clone())],
            &[simple_slice("svc", "svc-1", case.endpoints.clone())],
        );
        let port = only_port(&state);
        let got = (port.internal, port.external);
        let want = (case.internal, case.external);
        if got != want {
            failures.push(format!("{}\n   got  {got:?}\n   want {want:?}", case.rule));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// loadBalancerSourceRanges become the allowed sources; upstream's `allowFromNode`: when a node
/// IP (192.168.0.2) is inside a range, the LB IPs are allowed too (a VIP-style load balancer
/// loops the node's own traffic back with the LB IP as source).
#[test]
fn allowed_lb_sources_follow_the_ranges_and_allow_from_node() {
    let cases: [(&str, Value, &[&str]); 4] = [
        ("no ranges: any source", json!([]), &[]),
        (
            "ranges without the node IP: the ranges only",
            json!(["203.0.113.0/24"]),
            &["203.0.113.0/24"],
        ),
        (
            "a range with the node IP: the ranges, then the LB IPs (`allowFromNode`)",
            json!(["203.0.113.0/24", "192.168.0.0/24"]),
            &["203.0.113.0/24", "192.168.0.0/24", "1.2.3.4"],
        ),
        (
            "ranges of the other family do not apply to this family's port",
            json!(["2001:db8::/64"]),
            &[],
        ),
    ];
    for (rule, ranges, want) in cases {
        let mut svc = simple_service(
            "lb",
            json!({"type": "LoadBalancer", "loadBalancerSourceRanges": ranges,
                   "ports": [{"name": "p80", "port": 80, "protocol": "TCP", "nodePort": 30080}]}),
        );
        svc.status =
            serde_json::from_value(json!({"loadBalancer": {"ingress": [{"ip": "1.2.3.4"}]}}))
                .unwrap();
        let state = compute(&[svc], &[]);
        let got: Vec<String> = (only_port(&state).lb_allowed_sources.iter())
            .map(ToString::to_string)
            .collect();
        assert_eq!(got, want, "{rule}");
    }
}

const LOCAL_ADDRS: [&str; 5] = ["127.0.0.1", "192.168.0.2", "10.1.1.1", "::1", "2001:db8::2"];

fn node_port_ips(configured: &[&str]) -> (NodePortIps, NodePortIps) {
    let opts = ProxyOptions {
        node_port_addresses: configured.iter().map(|s| s.to_string()).collect(),
        ..opts()
    };
    let n = node(NODE, None, &["192.168.0.2", "2001:db8::2"]);
    let local: Vec<_> = LOCAL_ADDRS.iter().map(|a| a.parse().unwrap()).collect();
    let s = desired::compute_with_local_addresses(&opts, &[], &[], Some(&n), &local);
    let of = |f| s.family(f).unwrap().node.node_port_ips.clone();
    (of(IpFamily::V4), of(IpFamily::V6))
}

fn only(ips: &[&str]) -> NodePortIps {
    NodePortIps::Only(ips.iter().map(|a| a.parse().unwrap()).collect())
}

/// nodePortAddresses resolved once to the node's addresses (upstream `NodePortAddresses` and
/// `GetNodeIPs`), shared by the modes, the health check servers and conntrack.
#[test]
fn node_port_addresses_resolve_to_the_local_addresses_inside_them() {
    use NodePortIps::AllLocal;
    let cases: [(&str, &[&str], (NodePortIps, NodePortIps)); 5] = [
        ("empty: every local address", &[], (AllLocal, AllLocal)),
        (
            "`primary`: the node's primary IP of each family",
            &["primary"],
            (only(&["192.168.0.2"]), only(&["2001:db8::2"])),
        ),
        (
            "a CIDR of one family: its local addresses; the other family matches all (`MatchAll`)",
            &["192.168.0.0/16"],
            (only(&["192.168.0.2"]), AllLocal),
        ),
        (
            "loopback stays when a CIDR covers it (GetNodeIPs returns it; a mode may not serve it)",
            &["127.0.0.0/8", "10.0.0.0/8"],
            (only(&["10.1.1.1", "127.0.0.1"]), AllLocal),
        ),
        (
            "a CIDR with no local address: NodePorts on no address",
            &["172.16.0.0/12"],
            (only(&[]), AllLocal),
        ),
    ];
    for (rule, configured, want) in cases {
        assert_eq!(node_port_ips(configured), want, "{rule}");
    }
}

/// A change of the node's addresses is a node-wide change: the next change set is full, and
/// the tracker's state equals the from-scratch compute with the new addresses.
#[test]
fn a_change_of_local_addresses_makes_the_next_change_set_full() {
    let opts = ProxyOptions {
        node_port_addresses: vec!["192.168.0.0/16".into()],
        ..opts()
    };
    let n = node(NODE, None, &["192.168.0.2"]);
    let svc = simple_service("a", node_port("Cluster"));
    let mut t = Tracker::new(opts.clone());
    assert!(t.needs_local_addresses());
    t.apply(Event::Replace(
        Kind::Service,
        vec![Object::Service(Box::new(svc.clone()))],
    ));
    t.apply(Event::Replace(Kind::EndpointSlice, vec![]));
    t.apply(Event::Replace(
        Kind::Node,
        vec![Object::Node(Box::new(n.clone()))],
    ));
    t.set_local_addresses(vec!["192.168.0.2".parse().unwrap()]);
    t.update().unwrap();
    let (_, changes) = t.update().unwrap();
    assert!(changes.is_empty());
    let moved = vec!["192.168.0.3".parse().unwrap()];
    t.set_local_addresses(moved.clone());
    let (state, changes) = t.update().unwrap();
    assert!(changes.full);
    let want = desired::compute_with_local_addresses(&opts, &[svc], &[], Some(&n), &moved);
    assert_eq!(state, &want);
    assert_eq!(
        state.family(IpFamily::V4).unwrap().node.node_port_ips,
        only(&["192.168.0.3"])
    );
}
