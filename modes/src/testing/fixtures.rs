//! Desired states shaped like the conformance cases, built directly in Rust.
//!
//! IP plan: node 192.168.0.2 / 2001:db8::1 (eth0), pods 10.0.0.0/8 / fd00:10::/64, services
//! 172.30.0.0/16 / fd00:172:30::/112, endpoints 10.180.x.y / fd00:10:180::x, external
//! clients 203.0.113.0/24, load balancers 1.2.3.4, 5.6.7.8.

use std::{collections::BTreeMap, net::IpAddr};

use crate::model::*;

pub fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

pub fn node(family: IpFamily) -> NodeSettings {
    match family {
        IpFamily::V4 => NodeSettings {
            node_ips: vec![ip("192.168.0.2")],
            local_traffic: LocalTrafficDetector::Cidrs(vec!["10.0.0.0/8".parse().unwrap()]),
            node_port_addresses: NodePortAddresses::Cidrs(vec!["192.168.0.2/32".parse().unwrap()]),
            // What the compute resolves from the test node's addresses (127.0.0.1, 192.168.0.2,
            // 192.168.1.2; ::1, 2001:db8::1, 2001:db8:1::2) inside the CIDR.
            node_port_ips: NodePortIps::Only(vec![ip("192.168.0.2")]),
            service_cidrs: vec!["172.30.0.0/16".parse().unwrap()],
            masquerade_all: false,
            masquerade_mark: 0x4000,
        },
        IpFamily::V6 => NodeSettings {
            node_ips: vec![ip("2001:db8::1")],
            local_traffic: LocalTrafficDetector::Cidrs(vec!["fd00:10::/64".parse().unwrap()]),
            node_port_addresses: NodePortAddresses::Cidrs(vec!["2001:db8::1/128".parse().unwrap()]),
            node_port_ips: NodePortIps::Only(vec![ip("2001:db8::1")]),
            service_cidrs: vec!["fd00:172:30::/112".parse().unwrap()],
            masquerade_all: false,
            masquerade_mark: 0x4000,
        },
    }
}

pub fn ep(addr: &str, is_local: bool) -> Endpoint {
    Endpoint {
        addr: addr.parse().unwrap(),
        is_local,
        ready: true,
        serving: true,
        terminating: false,
        node_name: None,
        zone: None,
    }
}

/// A ClusterIP port whose endpoints fill the Cluster set; [`local_policy`] fills the Local set.
pub fn port(
    ns: &str,
    name: &str,
    port_name: &str,
    proto: Protocol,
    cip: &str,
    port: u16,
    eps: Vec<Endpoint>,
) -> ServicePort {
    let mut sp = ServicePort {
        name: ServicePortName::new(ns, name, port_name, proto),
        cluster_ip: ip(cip),
        port,
        node_port: None,
        external_ips: vec![],
        load_balancer_ips: vec![],
        lb_allowed_sources: vec![],
        session_affinity: None,
        internal_policy: TrafficPolicy::Cluster,
        external_policy: TrafficPolicy::Cluster,
        health_check_node_port: None,
        endpoints: ServiceEndpoints {
            has_any: !eps.is_empty(),
            cluster: eps,
            local: vec![],
            excluded: vec![],
        },
        internal: Path {
            set: TrafficPolicy::Cluster,
            when_empty: None,
        },
        external: None,
    };
    paths(&mut sp);
    sp
}

/// Sets the port's paths from its policies, endpoint sets and VIPs as the compute decides them
/// (`src/desired/paths.rs`); fixtures call it again after changing any of those.
pub fn paths(sp: &mut ServicePort) {
    let path = |set| Path {
        set,
        when_empty: sp
            .endpoints
            .set(set)
            .is_empty()
            .then_some(if sp.endpoints.has_any {
                NoEndpoints {
                    verdict: NoEndpointsVerdict::Drop,
                    reason: NoEndpointsReason::NoLocalEndpoints,
                }
            } else {
                NoEndpoints {
                    verdict: NoEndpointsVerdict::Reject,
                    reason: NoEndpointsReason::NoEndpoints,
                }
            }),
    };
    let local = sp.external_policy == TrafficPolicy::Local;
    let internal = path(sp.internal_policy);
    let external = sp.externally_accessible().then(|| ExternalPath {
        path: path(sp.external_policy),
        short_circuit_local_traffic: local,
        masquerade: if local {
            Masquerade::NodeOriginOnly
        } else {
            Masquerade::Always
        },
    });
    (sp.internal, sp.external) = (internal, external);
}

/// [`paths`] for every port of `d`.
pub fn refresh(d: &mut DesiredState) {
    for f in &mut d.families {
        f.services.values_mut().for_each(paths);
    }
}

/// `loadBalancerSourceRanges` as the compute turns them into allowed sources, with the LB IPs
/// appended when a test node IP (192.168.0.2, 2001:db8::1) is inside a range.
pub fn lb_sources(sp: &ServicePort, ranges: &[&str]) -> Vec<AllowedSource> {
    let ranges: Vec<ipnet::IpNet> = ranges.iter().map(|r| r.parse().unwrap()).collect();
    let node_ips = [ip("192.168.0.2"), ip("2001:db8::1")];
    let node_inside = ranges
        .iter()
        .any(|r| node_ips.iter().any(|n| r.contains(n)));
    let lb = sp.load_balancer_ips.iter().filter(|_| node_inside);
    (ranges.iter().copied().map(AllowedSource::Range))
        .chain(lb.copied().map(AllowedSource::Address))
        .collect()
}

/// Sets a Local policy (internal or external) and fills the Local set as the tracker would.
pub fn local_policy(mut sp: ServicePort, internal: bool) -> ServicePort {
    if internal {
        sp.internal_policy = TrafficPolicy::Local;
    } else {
        sp.external_policy = TrafficPolicy::Local;
    }
    sp.endpoints.local = sp
        .endpoints
        .cluster
        .iter()
        .filter(|e| e.is_local)
        .cloned()
        .collect();
    paths(&mut sp);
    sp
}

pub fn state(families: Vec<(IpFamily, Vec<ServicePort>)>) -> DesiredState {
    DesiredState {
        node_name: "test-node".into(),
        zone: None,
        families: families
            .into_iter()
            .map(|(family, ports)| FamilyState {
                family,
                node: node(family),
                services: ports
                    .into_iter()
                    .map(|mut p| {
                        paths(&mut p);
                        (p.name.clone(), p)
                    })
                    .collect::<BTreeMap<_, _>>(),
            })
            .collect(),
        skipped: vec![],
    }
}

/// cluster-ip-general: one single-endpoint Service, one multi-port multi-protocol Service.
pub fn cluster_ip_general() -> DesiredState {
    let two = |p: u16| {
        vec![
            ep(&format!("10.180.0.1:{p}"), true),
            ep(&format!("10.180.2.1:{p}"), false),
        ]
    };
    state(vec![(
        IpFamily::V4,
        vec![
            port(
                "ns1",
                "svc1",
                "http",
                Protocol::Tcp,
                "172.30.0.41",
                80,
                vec![ep("10.180.0.1:80", true)],
            ),
            port(
                "ns2",
                "svc2",
                "http",
                Protocol::Tcp,
                "172.30.0.42",
                80,
                two(80),
            ),
            port(
                "ns2",
                "svc2",
                "https",
                Protocol::Tcp,
                "172.30.0.42",
                443,
                two(8443),
            ),
            port(
                "ns2",
                "svc2",
                "dns-udp",
                Protocol::Udp,
                "172.30.0.42",
                53,
                two(53),
            ),
            port(
                "ns2",
                "svc2",
                "dns-tcp",
                Protocol::Tcp,
                "172.30.0.42",
                53,
                two(5353),
            ),
            port(
                "ns2",
                "svc2",
                "dns-sctp",
                Protocol::Sctp,
                "172.30.0.42",
                53,
                two(53),
            ),
        ],
    )])
}

/// internal-external-masquerade-base, plus no endpoints, affinity and source ranges.
pub fn external_mix() -> DesiredState {
    let mut svc1 = port(
        "ns1",
        "svc1",
        "p80",
        Protocol::Tcp,
        "172.30.0.41",
        80,
        vec![ep("10.180.0.1:80", true), ep("10.180.1.1:80", false)],
    );
    svc1.node_port = Some(3001);
    svc1.load_balancer_ips = vec![ip("1.2.3.4")];
    svc1.lb_allowed_sources = lb_sources(&svc1, &["203.0.113.0/25", "192.168.0.0/24"]);
    let mut svc2 = port(
        "ns2",
        "svc2",
        "p80",
        Protocol::Tcp,
        "172.30.0.42",
        80,
        vec![ep("10.180.0.2:80", true), ep("10.180.1.2:80", false)],
    );
    svc2.node_port = Some(3002);
    svc2.load_balancer_ips = vec![ip("5.6.7.8")];
    svc2.external_ips = vec![ip("192.168.99.11")];
    let svc2 = local_policy(svc2, false);
    let mut svc3 = port(
        "ns3",
        "svc3",
        "p80",
        Protocol::Tcp,
        "172.30.0.43",
        80,
        vec![ep("10.180.0.3:80", true), ep("10.180.1.3:80", false)],
    );
    svc3.node_port = Some(3003);
    let svc3 = local_policy(svc3, true);
    let mut svc4 = port(
        "ns4",
        "svc4",
        "p80",
        Protocol::Tcp,
        "172.30.0.44",
        80,
        vec![],
    );
    svc4.node_port = Some(3004);
    svc4.load_balancer_ips = vec![ip("9.10.11.12")];
    let mut svc5 = port(
        "ns5",
        "svc5",
        "",
        Protocol::Udp,
        "172.30.0.45",
        53,
        vec![ep("10.180.0.5:53", true), ep("10.180.1.5:53", false)],
    );
    svc5.session_affinity = Some(SessionAffinity {
        timeout_seconds: 10800,
    });
    // eTP=Local with endpoints elsewhere only: external traffic is dropped, pods short-circuit.
    let mut svc6 = port(
        "ns6",
        "svc6",
        "p80",
        Protocol::Tcp,
        "172.30.0.46",
        80,
        vec![ep("10.180.1.6:80", false)],
    );
    svc6.node_port = Some(3006);
    let svc6 = local_policy(svc6, false);
    state(vec![(
        IpFamily::V4,
        vec![svc1, svc2, svc3, svc4, svc5, svc6],
    )])
}

/// node-ports-ipv6 in a dual-stack state.
pub fn dual_stack() -> DesiredState {
    let mut v6 = port(
        "ns1",
        "svc1",
        "p80",
        Protocol::Tcp,
        "fd00:172:30::41",
        80,
        vec![
            ep("[fd00:10:180::1]:80", false),
            ep("[fd00:10:180::2:1]:80", true),
        ],
    );
    v6.node_port = Some(3001);
    let mut v4 = port(
        "ns1",
        "svc1",
        "p80",
        Protocol::Tcp,
        "172.30.0.41",
        80,
        vec![ep("10.180.0.1:80", true)],
    );
    v4.node_port = Some(3001);
    state(vec![(IpFamily::V4, vec![v4]), (IpFamily::V6, vec![v6])])
}
