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

/// Hostile text, near-valid labels, or any string at all.
fn bad_text() -> impl Strategy<Value = Value> {
    prop_oneof![
        2 => select(HOSTILE).prop_map(Value::from),
        2 => "[a-z0-9.:/-]{0,8}".prop_map(Value::from),
        1 => any::<String>().prop_map(Value::from),
    ]
}

fn bad_number() -> impl Strategy<Value = Value> {
    prop_oneof![
        select(&[0, -1, 65536, 99999][..]).prop_map(Value::from),
        any::<i32>().prop_map(Value::from),
    ]
}

/// The text fields of the Service (`s`) and the slice (`e`) that get bad text, as JSON pointers.
const TEXT_FIELDS: &[(char, &str)] = &[
    ('s', "/metadata/namespace"),
    ('s', "/metadata/name"),
    ('s', "/spec/ports/0/name"),
    ('s', "/spec/ports/0/protocol"),
    ('s', "/spec/clusterIP"),
    ('s', "/spec/externalIPs/0"),
    ('s', "/spec/loadBalancerSourceRanges/0"),
    ('s', "/spec/type"),
    ('e', "/metadata/namespace"),
    ('e', "/metadata/name"),
    ('e', "/metadata/labels/kubernetes.io~1service-name"),
    ('e', "/addressType"),
    ('e', "/ports/0/name"),
    ('e', "/ports/0/protocol"),
    ('e', "/endpoints/0/addresses/0"),
    ('e', "/endpoints/1/addresses/0"),
];
const NUMBER_FIELDS: &[(char, &str)] = &[
    ('s', "/spec/ports/0/port"),
    ('s', "/spec/ports/0/nodePort"),
    ('e', "/ports/0/port"),
];

/// One bad value for one field: a text field or a number field.
fn corruption() -> impl Strategy<Value = ((char, &'static str), Value)> {
    prop_oneof![
        3 => (select(TEXT_FIELDS), bad_text()),
        1 => (select(NUMBER_FIELDS), bad_number()),
    ]
}

/// A valid Service `ns2/bad` (NodePort, with an external IP and a source range) and its slice,
/// with bad values in one to three fields: in half the cases one, so that each field is tried
/// with all the others valid (then only that field can keep the objects out).
fn hostile_pair() -> impl Strategy<Value = (Value, Value)> {
    let corruptions = proptest::collection::vec(corruption(), 1..4);
    (any::<bool>(), corruptions).prop_map(|(one, corruptions)| {
        let mut svc = json!({
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "bad", "namespace": "ns2"},
            "spec": {"type": "NodePort", "clusterIP": "172.31.0.7", "externalIPs": ["192.0.2.9"],
                     "loadBalancerSourceRanges": ["10.0.0.0/8"],
                     "ports": [{"name": "p80", "protocol": "TCP", "port": 80, "nodePort": 30080}]},
        });
        let mut slice = json!({
            "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {"name": "bad-1", "namespace": "ns2",
                         "labels": {"kubernetes.io/service-name": "bad"}},
            "addressType": "IPv4",
            "endpoints": [{"addresses": ["10.0.2.1"], "nodeName": NODE},
                          {"addresses": ["10.0.2.2"], "hostname": "web-0"}],
            "ports": [{"name": "p80", "protocol": "TCP", "port": 8080}],
        });
        let n = if one { 1 } else { corruptions.len() };
        for ((object, pointer), value) in corruptions.into_iter().take(n) {
            let target = if object == 's' { &mut svc } else { &mut slice };
            *target
                .pointer_mut(pointer)
                .expect("a field of the template") = value;
        }
        (svc, slice)
    })
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
    // Accepting the hostile objects as the valid Service's would change its rules by right.
    prop_assume!(svc["metadata"]["name"] != "good");
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
    let result = runner.run(&hostile_pair(), |(svc, slice)| {
        check(svc, slice, exec.as_ref())
    });
    if let Err(e) = result {
        panic!("{e}");
    }
}
