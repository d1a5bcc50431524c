//! Property: arbitrary text in any field of a Service and an EndpointSlice (namespace, names,
//! port names, protocols, IPs, ports, CIDRs, endpoint addresses) never reaches the nftables
//! program unchecked. Beside a valid Service, the hostile pair is converted by the tracker and
//! the desired state rendered in full: the program must load (FakeNft, and `nft -c` in a scratch
//! namespace when root); if the hostile objects were left out it must equal the program without
//! them, and if (some of) they were accepted, their names are valid and the valid Service's
//! ports are unchanged.

mod support;

use k8s_openapi::api::{core::v1::Service, discovery::v1::EndpointSlice};
use kproxy::{
    desired::validate,
    source::{Event, Kind, Object},
    tracker::Tracker,
};
use kproxy_dataplane::nft::{Exec, FakeNft, NftClient};
use kproxy_modes::model::{ChangeSet, DesiredState, ServicePort};
use proptest::{prelude::*, sample::select, test_runner::TestRunner};
use serde_json::{Value, json};
use support::*;

/// Text meant to break out of an nft name, string, statement or line.
const HOSTILE: &[&str] = &[
    "evil\" } ; add table ip pwned ; #",
    "ht\ntp",
    "a\"b",
    "x } ; flush ruleset",
    "a/b",
    "A",
    "",
    "é",
    "-a",
    "a b",
    "{",
    "@set",
    "$var",
    "#",
    "a\\",
    "10.0.0.1 . tcp . 80 : goto x",
];

/// Valid values most of the time (so that accepted objects are rendered too), near-valid
/// labels, hostile text and arbitrary strings otherwise.
fn text(valid: &'static [&'static str]) -> impl Strategy<Value = String> {
    prop_oneof![
        4 => select(valid).prop_map(String::from),
        2 => "[a-z0-9.-]{0,8}",
        2 => select(HOSTILE).prop_map(String::from),
        1 => any::<String>(),
    ]
}

fn number(valid: &'static [i32]) -> impl Strategy<Value = i32> {
    prop_oneof![3 => select(valid), 1 => any::<i32>()]
}

const IPS: &[&str] = &["172.31.0.7", "fd00::7", "10.0.2.1", "10.0.2.999", "0.0.0.0"];

prop_compose! {
    fn hostile_service()(
        ns in text(&["ns1", "ns2"]), name in text(&["bad", "x"]), port_name in text(&["p80", "dns"]),
        protocol in text(&["TCP", "UDP", "SCTP"]), port in number(&[80, 53, 65535, 0]),
        node_port in number(&[30080, 70000]), cluster_ip in text(IPS), external_ip in text(IPS),
        range in text(&["10.0.0.0/8", "192.0.2.1", "fd00::/64", "10.0.0.0/33"]),
        type_ in text(&["ClusterIP", "NodePort", "LoadBalancer"]),
    ) -> Value {
        json!({
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": name, "namespace": ns},
            "spec": {"type": type_, "clusterIP": cluster_ip, "externalIPs": [external_ip],
                     "loadBalancerSourceRanges": [range],
                     "ports": [{"name": port_name, "protocol": protocol, "port": port,
                                "nodePort": node_port}]},
        })
    }
}

prop_compose! {
    fn hostile_slice()(
        ns in text(&["ns1", "ns2"]), name in text(&["bad-1", "x.y"]), service in text(&["bad", "x"]),
        family in text(&["IPv4", "IPv6", "FQDN"]), port_name in text(&["p80", "dns"]),
        protocol in text(&["TCP", "UDP", "SCTP"]), port in number(&[80, 53, 99999, 0]),
        addresses in proptest::collection::vec(text(IPS), 0..3), node in text(&["node-a", "n"]),
    ) -> Value {
        let eps: Vec<Value> = (addresses.iter())
            .map(|a| json!({"addresses": [a], "nodeName": node, "hostname": a}))
            .collect();
        json!({
            "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {"name": name, "namespace": ns,
                         "labels": {"kubernetes.io/service-name": service}},
            "addressType": family, "endpoints": eps,
            "ports": [{"name": port_name, "protocol": protocol, "port": port}],
        })
    }
}

fn state_of(services: Vec<Service>, slices: Vec<EndpointSlice>) -> DesiredState {
    let mut t = Tracker::new(opts());
    let node = node(NODE, Some("zone-a"), &["192.168.0.2"]);
    t.apply(Event::Replace(
        Kind::Node,
        vec![Object::Node(Box::new(node))],
    ));
    let svcs = services.into_iter().map(|s| Object::Service(Box::new(s)));
    t.apply(Event::Replace(Kind::Service, svcs.collect()));
    let slices = slices
        .into_iter()
        .map(|s| Object::EndpointSlice(Box::new(s)));
    t.apply(Event::Replace(Kind::EndpointSlice, slices.collect()));
    t.update().expect("ready").0.clone()
}

fn valid_pair() -> (Service, EndpointSlice) {
    let svc = simple_service(
        "good",
        json!({"type": "NodePort", "clusterIP": "172.30.0.5",
               "ports": [{"name": "p80", "port": 80, "protocol": "TCP", "nodePort": 30005}]}),
    );
    let eps = json!([{"addresses": ["10.0.1.1"], "nodeName": NODE}]);
    (svc, simple_slice("good", "good-1", eps))
}

fn ports(state: &DesiredState) -> impl Iterator<Item = &ServicePort> {
    state.families.iter().flat_map(|f| f.services.values())
}

/// The full program for `state`, loaded into a fresh fake (and checked by `nft -c` in `ns`).
fn load(state: &DesiredState, ns: Option<&Exec>) -> Result<String, TestCaseError> {
    let tx = kproxy_modes::nftables::render(state, &ChangeSet::full(), None).tx;
    let fake = FakeNft::new();
    fake.run(&tx)
        .map_err(|e| TestCaseError::fail(format!("FakeNft refused: {e}\n{tx}")))?;
    if let Some(exec) = ns {
        exec.check(&tx)
            .map_err(|e| TestCaseError::fail(format!("nft -c refused: {e}\n{tx}")))?;
    }
    Ok(fake.dump())
}

fn check(svc: Value, slice: Value, nft: Option<&Exec>) -> Result<(), TestCaseError> {
    // Accepting the hostile slice into the valid Service would change its rules by right.
    prop_assume!(!(slice["metadata"]["namespace"] == "ns1" && svc["metadata"]["name"] == "good"));
    prop_assume!(slice["metadata"]["labels"]["kubernetes.io/service-name"] != "good");
    let (good, good_slice) = valid_pair();
    let baseline = state_of(vec![good.clone()], vec![good_slice.clone()]);
    let (Ok(svc), Ok(slice)) = (serde_json::from_value(svc), serde_json::from_value(slice)) else {
        return Ok(()); // not even an API object (e.g. a number out of i32): never converted
    };
    let hostile = state_of(vec![good, svc], vec![good_slice, slice]);
    let program = load(&hostile, nft)?;
    let accepted: Vec<&ServicePort> = ports(&hostile).filter(|p| p.name.name != "good").collect();
    if accepted.is_empty() && ports(&hostile).eq(ports(&baseline)) {
        prop_assert_eq!(program, load(&baseline, None)?);
        return Ok(());
    }
    for p in &accepted {
        let n = &p.name;
        prop_assert!(validate::is_dns1123_label(&n.namespace), "{n:?}");
        prop_assert!(validate::is_dns1123_label(&n.name), "{n:?}");
        prop_assert!(
            n.port.is_empty() || validate::is_dns1123_label(&n.port),
            "{n:?}"
        );
    }
    let good_ports = |s: &DesiredState| -> Vec<ServicePort> {
        ports(s)
            .filter(|p| p.name.name == "good")
            .cloned()
            .collect()
    };
    prop_assert_eq!(good_ports(&hostile), good_ports(&baseline));
    Ok(())
}

/// See the module docs. Run by hand (not `proptest!`) so that the one scratch namespace the
/// `nft -c` checks share is removed when the test ends.
#[test]
fn arbitrary_text_in_any_field_is_left_out_or_renders_a_program_that_loads() {
    let ns = kproxy_testbed::netns::Netns::scratch();
    let exec = ns.as_ref().map(|ns| Exec::new().in_netns(ns.name()));
    let cases = if exec.is_some() { 96 } else { 256 };
    let mut runner = TestRunner::new(ProptestConfig::with_cases(cases));
    let result = runner.run(&(hostile_service(), hostile_slice()), |(svc, slice)| {
        check(svc, slice, exec.as_ref())
    });
    if let Err(e) = result {
        panic!("{e}");
    }
}
