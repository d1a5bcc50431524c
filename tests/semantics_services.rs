//! Tests of the Service-level rules: which Services are proxied, their VIPs per family, and how
//! slices of one Service combine. Each test names the upstream rule it checks.

mod support;

use kproxy::desired;
use kproxy_modes::model::{IpFamily, Protocol, ServicePortName, TrafficPolicy};
use serde_json::json;
use support::*;

/// "Services with the label service.kubernetes.io/service-proxy-name are for another proxy" and
/// "service.kubernetes.io/headless" (upstream's server-side label selector); headless Services
/// (clusterIP None) and ExternalName Services have nothing to proxy.
#[test]
fn services_for_another_proxy_headless_and_external_name_are_ignored() {
    let mut other = simple_service("other", json!({}));
    other.metadata.labels = Some(
        [(
            "service.kubernetes.io/service-proxy-name".into(),
            "x".into(),
        )]
        .into(),
    );
    let mut labelled = simple_service("labelled", json!({}));
    labelled.metadata.labels = Some([("service.kubernetes.io/headless".into(), "".into())].into());
    let headless = simple_service(
        "headless",
        json!({"clusterIP": "None", "clusterIPs": ["None"]}),
    );
    let ext = simple_service(
        "ext",
        json!({"type": "ExternalName", "externalName": "example.com", "clusterIP": ""}),
    );
    let kept = simple_service("kept", json!({"clusterIP": "172.30.0.9"}));
    let state = compute(&[other, labelled, headless, ext, kept], &[]);
    let names: Vec<String> = state
        .family(IpFamily::V4)
        .unwrap()
        .services
        .keys()
        .map(|n| n.name.clone())
        .collect();
    assert_eq!(names, ["kept"]);
    assert!(
        state.skipped.is_empty(),
        "ignored Services are not problems: {:?}",
        state.skipped
    );
}

/// "A Service can be backed by several EndpointSlices; kube-proxy merges them and de-duplicates
/// an address listed twice" (upstream EndpointSliceCache).
#[test]
fn several_slices_merge_and_a_duplicated_address_counts_once() {
    let svc = simple_service("svc", json!({}));
    let a = simple_slice(
        "svc",
        "svc-a",
        json!([{"addresses": ["10.0.1.1"]}, {"addresses": ["10.0.1.2"]}]),
    );
    let b = simple_slice(
        "svc",
        "svc-b",
        json!([{"addresses": ["10.0.1.2"], "nodeName": NODE}, {"addresses": ["10.0.1.3"]}]),
    );
    let state = compute(&[svc], &[a, b]);
    let port = only_port(&state);
    assert_eq!(
        addrs(port.internal_endpoints()),
        ["10.0.1.1:80", "10.0.1.2:80", "10.0.1.3:80"]
    );
    let dup = port
        .endpoints
        .cluster
        .iter()
        .find(|e| e.addr.to_string() == "10.0.1.2:80")
        .unwrap();
    assert!(
        dup.is_local,
        "the local copy of a duplicated address wins, as upstream"
    );
}

/// "targetPort may name a container port; the EndpointSlice controller resolves it per slice, so
/// slices of one Service may carry different numbers for one port name".
#[test]
fn a_named_target_port_resolves_per_slice() {
    let svc = simple_service(
        "svc",
        json!({"ports": [{"name": "http", "port": 80, "targetPort": "web"}]}),
    );
    let mut a = simple_slice("svc", "svc-a", json!([{"addresses": ["10.0.1.1"]}]));
    a.ports = Some(vec![
        serde_json::from_value(json!({"name": "http", "port": 8080, "protocol": "TCP"})).unwrap(),
    ]);
    let mut b = simple_slice("svc", "svc-b", json!([{"addresses": ["10.0.1.2"]}]));
    b.ports = Some(vec![
        serde_json::from_value(json!({"name": "http", "port": 9090, "protocol": "TCP"})).unwrap(),
    ]);
    let state = compute(&[svc], &[a, b]);
    assert_eq!(
        addrs(only_port(&state).internal_endpoints()),
        ["10.0.1.1:8080", "10.0.1.2:9090"]
    );
}

/// "Service ports are matched to slice ports by name and protocol" (ServicePortName).
#[test]
fn ports_of_a_multi_port_service_match_slice_ports_by_name_and_protocol() {
    let svc = simple_service(
        "dns",
        json!({"ports": [{"name": "dns", "port": 53, "protocol": "UDP"}, {"name": "dns-tcp", "port": 53, "protocol": "TCP"}]}),
    );
    let mut s = simple_slice("dns", "dns-1", json!([{"addresses": ["10.0.1.1"]}]));
    s.ports = Some(vec![
        serde_json::from_value(json!({"name": "dns", "port": 5353, "protocol": "UDP"})).unwrap(),
        serde_json::from_value(json!({"name": "dns-tcp", "port": 5354, "protocol": "TCP"}))
            .unwrap(),
    ]);
    let state = compute(&[svc], &[s]);
    let fam = state.family(IpFamily::V4).unwrap();
    let udp = &fam.services[&ServicePortName::new("ns1", "dns", "dns", Protocol::Udp)];
    let tcp = &fam.services[&ServicePortName::new("ns1", "dns", "dns-tcp", Protocol::Tcp)];
    assert_eq!(addrs(udp.internal_endpoints()), ["10.0.1.1:5353"]);
    assert_eq!(addrs(tcp.internal_endpoints()), ["10.0.1.1:5354"]);
}

/// "A dual-stack Service has a cluster IP per family; each family is proxied on its own, with
/// the slices of that addressType" (and externalIPs filtered to the family).
#[test]
fn a_dual_stack_service_yields_one_port_per_family_with_that_familys_endpoints() {
    let svc = simple_service(
        "ds",
        json!({"clusterIP": "172.30.0.5", "clusterIPs": ["172.30.0.5", "fd00::5"], "ipFamilies": ["IPv4", "IPv6"],
               "externalIPs": ["192.0.2.10", "2001:db8::10"]}),
    );
    let v4 = simple_slice("ds", "ds-v4", json!([{"addresses": ["10.0.1.1"]}]));
    let mut v6 = simple_slice("ds", "ds-v6", json!([{"addresses": ["fd00:10::1"]}]));
    v6.address_type = "IPv6".into();
    let n = node(NODE, None, &["192.168.0.2", "2001:db8::2"]);
    let state = desired::compute(&opts(), &[svc], &[v4, v6], Some(&n));
    let p4 = state
        .family(IpFamily::V4)
        .unwrap()
        .services
        .values()
        .next()
        .unwrap();
    let p6 = state
        .family(IpFamily::V6)
        .unwrap()
        .services
        .values()
        .next()
        .unwrap();
    assert_eq!(
        (p4.cluster_ip.to_string(), addrs(p4.internal_endpoints())),
        ("172.30.0.5".into(), vec!["10.0.1.1:80".into()])
    );
    assert_eq!(
        (p6.cluster_ip.to_string(), addrs(p6.internal_endpoints())),
        ("fd00::5".into(), vec!["[fd00:10::1]:80".into()])
    );
    assert_eq!(
        p4.external_ips
            .iter()
            .map(|i| i.to_string())
            .collect::<Vec<_>>(),
        ["192.0.2.10"]
    );
    assert_eq!(
        p6.external_ips
            .iter()
            .map(|i| i.to_string())
            .collect::<Vec<_>>(),
        ["2001:db8::10"]
    );
}

/// "LoadBalancer ingress with ipMode Proxy is not captured by kube-proxy" (KEP-1860), while
/// `loadBalancerSourceRanges`, the NodePort and healthCheckNodePort (eTP=Local) carry over.
#[test]
fn load_balancer_ips_honour_ip_mode_proxy_and_carry_source_ranges() {
    let mut svc = simple_service(
        "lb",
        json!({"type": "LoadBalancer", "externalTrafficPolicy": "Local", "healthCheckNodePort": 32000,
               "loadBalancerSourceRanges": ["203.0.113.0/24", " 198.51.100.7/32"],
               "ports": [{"name": "p80", "port": 80, "nodePort": 30080}]}),
    );
    svc.status = serde_json::from_value(json!({"loadBalancer": {"ingress": [
        {"ip": "1.2.3.4"}, {"ip": "1.2.3.5", "ipMode": "VIP"}, {"ip": "1.2.3.6", "ipMode": "Proxy"}, {"hostname": "lb.example"}]}}))
    .unwrap();
    let state = compute(&[svc], &[]);
    let p = only_port(&state);
    assert_eq!(
        p.load_balancer_ips
            .iter()
            .map(|i| i.to_string())
            .collect::<Vec<_>>(),
        ["1.2.3.4", "1.2.3.5"]
    );
    assert_eq!(
        p.lb_allowed_sources
            .iter()
            .map(|i| i.to_string())
            .collect::<Vec<_>>(),
        ["203.0.113.0/24", "198.51.100.7/32"]
    );
    assert_eq!(
        (p.node_port, p.health_check_node_port, p.external_policy),
        (Some(30080), Some(32000), TrafficPolicy::Local)
    );
}

/// "sessionAffinity ClientIP; timeoutSeconds defaults to 10800" (Service API).
#[test]
fn client_ip_affinity_defaults_its_timeout_to_three_hours() {
    let a = simple_service("a", json!({"sessionAffinity": "ClientIP"}));
    let b = simple_service(
        "b",
        json!({"clusterIP": "172.30.0.2", "sessionAffinity": "ClientIP", "sessionAffinityConfig": {"clientIP": {"timeoutSeconds": 60}}}),
    );
    let state = compute(&[a, b], &[]);
    let t: Vec<_> = state
        .family(IpFamily::V4)
        .unwrap()
        .services
        .values()
        .map(|p| p.session_affinity.map(|s| s.timeout_seconds))
        .collect();
    assert_eq!(t, [Some(10800), Some(60)]);
}

/// "Bad input is skipped with a reason and never breaks other Services": an unknown protocol,
/// an invalid cluster IP, an invalid source range each skip only their Service.
#[test]
fn an_invalid_service_is_skipped_with_its_reason_and_others_still_compute() {
    let bad_proto = simple_service(
        "bad-proto",
        json!({"ports": [{"name": "x", "port": 80, "protocol": "ICMP"}]}),
    );
    let bad_ip = simple_service("bad-ip", json!({"clusterIP": "300.1.1.1"}));
    let bad_range = simple_service(
        "bad-range",
        json!({"type": "LoadBalancer", "clusterIP": "172.30.0.3", "loadBalancerSourceRanges": ["nope"]}),
    );
    let good = simple_service("good", json!({"clusterIP": "172.30.0.4"}));
    let state = compute(&[bad_proto, bad_ip, bad_range, good], &[]);
    let names: Vec<_> = state
        .family(IpFamily::V4)
        .unwrap()
        .services
        .keys()
        .map(|n| n.name.clone())
        .collect();
    assert_eq!(names, ["good"]);
    let skipped: Vec<_> = state
        .skipped
        .iter()
        .map(|s| (s.name.as_str(), s.reason.as_str()))
        .collect();
    assert_eq!(
        skipped,
        [
            ("bad-ip", "invalid IP \"300.1.1.1\" in spec.clusterIPs"),
            ("bad-proto", "unknown protocol \"ICMP\" in spec.ports[0]"),
            (
                "bad-range",
                "invalid CIDR \"nope\" in spec.loadBalancerSourceRanges"
            ),
        ]
    );
}

/// "nodePortAddresses: empty means all addresses; `primary` the node's primary IP per family;
/// otherwise the CIDRs of the family" (KubeProxyConfiguration).
#[test]
fn node_port_addresses_resolve_per_family() {
    use kproxy_modes::model::NodePortAddresses;
    let n = node(NODE, None, &["192.168.0.2", "192.168.1.2", "2001:db8::2"]);
    let mut o = opts();
    o.node_port_addresses = vec!["primary".into()];
    let s = desired::compute(&o, &[], &[], Some(&n));
    assert_eq!(
        s.family(IpFamily::V4).unwrap().node.node_port_addresses,
        NodePortAddresses::Cidrs(vec!["192.168.0.2/32".parse().unwrap()])
    );
    assert_eq!(
        s.family(IpFamily::V6).unwrap().node.node_port_addresses,
        NodePortAddresses::Cidrs(vec!["2001:db8::2/128".parse().unwrap()])
    );
    o.node_port_addresses = vec!["192.168.0.0/16".into()];
    let s = desired::compute(&o, &[], &[], Some(&n));
    assert_eq!(
        s.family(IpFamily::V4).unwrap().node.node_port_addresses,
        NodePortAddresses::Cidrs(vec!["192.168.0.0/16".parse().unwrap()])
    );
    assert_eq!(
        s.family(IpFamily::V6).unwrap().node.node_port_addresses,
        NodePortAddresses::All
    );
}

/// "Bad input such as a port collision is skipped with a reason and never breaks the others":
/// two Services claiming one cluster IP:port or one NodePort; the older one keeps it, the other
/// loses only that (its cluster IP tuple parks its port; a NodePort is taken off it) and comes
/// back once the collision ends. More in tests/claims.rs.
#[test]
fn colliding_service_ports_keep_the_older_service_and_the_other_loses_only_the_tuple() {
    let mut old = simple_service(
        "old",
        json!({"clusterIP": "172.30.0.7", "type": "NodePort", "ports": [{"name": "p80", "port": 80, "nodePort": 30007}]}),
    );
    old.metadata.creation_timestamp =
        serde_json::from_value(json!("2024-01-01T00:00:00Z")).unwrap();
    let mut young = simple_service("a-young", json!({"clusterIP": "172.30.0.7"}));
    young.metadata.creation_timestamp =
        serde_json::from_value(json!("2025-01-01T00:00:00Z")).unwrap();
    let mut np = simple_service(
        "b-np",
        json!({"clusterIP": "172.30.0.8", "type": "NodePort", "ports": [{"name": "p80", "port": 80, "nodePort": 30007}]}),
    );
    np.metadata.creation_timestamp = serde_json::from_value(json!("2025-06-01T00:00:00Z")).unwrap();
    let state = compute(&[old.clone(), young.clone(), np], &[]);
    let names: Vec<_> = state
        .family(IpFamily::V4)
        .unwrap()
        .services
        .keys()
        .map(|n| n.name.clone())
        .collect();
    assert_eq!(names, ["b-np", "old"]);
    let b_np = &state.family(IpFamily::V4).unwrap().services
        [&ServicePortName::new("ns1", "b-np", "p80", Protocol::Tcp)];
    assert_eq!((b_np.node_port, b_np.external.is_none()), (None, true));
    let reasons: Vec<_> = state
        .skipped
        .iter()
        .map(|s| format!("{}: {}", s.name, s.reason))
        .collect();
    assert_eq!(
        reasons,
        [
            "a-young: port p80: 172.30.0.7:80/TCP is already used by ns1/old:p80/TCP",
            "b-np: port p80: node port 30007/TCP (IPv4) is already used by ns1/old:p80/TCP",
        ]
    );
    let state = compute(&[young], &[]);
    assert_eq!(
        state.family(IpFamily::V4).unwrap().services.len(),
        1,
        "alone, it is proxied"
    );
}
