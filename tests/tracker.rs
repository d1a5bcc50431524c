//! The tracker: gating on initial lists, incremental change sets, relists as atomic swaps.

mod support;

use kproxy::{
    source::{Event, Kind, Object},
    tracker::Tracker,
};
use kproxy_modes::model::{IpFamily, Protocol, ServicePortName};
use serde_json::json;
use support::*;

fn svc_obj(name: &str, ip: &str) -> Object {
    Object::Service(Box::new(simple_service(name, json!({"clusterIP": ip}))))
}

fn slice_obj(svc: &str, name: &str, ips: &[&str]) -> Object {
    let eps: Vec<_> = ips.iter().map(|ip| json!({"addresses": [ip]})).collect();
    Object::EndpointSlice(Box::new(simple_slice(svc, name, json!(eps))))
}

fn node_obj() -> Object {
    Object::Node(Box::new(node(NODE, Some("zone-a"), &["192.168.0.2"])))
}

fn port(name: &str) -> ServicePortName {
    ServicePortName::new("ns1", name, "p80", Protocol::Tcp)
}

fn ready_tracker() -> Tracker {
    let mut t = Tracker::new(opts());
    t.apply(Event::Replace(
        Kind::Service,
        vec![svc_obj("a", "172.30.0.1"), svc_obj("b", "172.30.0.2")],
    ));
    t.apply(Event::Replace(
        Kind::EndpointSlice,
        vec![slice_obj("a", "a-1", &["10.0.1.1"])],
    ));
    t.apply(Event::Replace(Kind::Node, vec![node_obj()]));
    t
}

/// Upstream's `isInitialized`: no rules are programmed until Services, EndpointSlices and the
/// Node have each been listed, since a partial list would delete the missing Services' rules.
#[test]
fn no_desired_state_exists_until_all_three_initial_lists_are_in() {
    let mut t = Tracker::new(opts());
    t.apply(Event::Replace(
        Kind::Service,
        vec![svc_obj("a", "172.30.0.1")],
    ));
    assert!(t.update().is_none());
    t.apply(Event::Replace(Kind::EndpointSlice, vec![]));
    assert!(t.update().is_none());
    t.apply(Event::Apply(slice_obj("a", "a-1", &["10.0.1.1"])));
    assert!(
        t.update().is_none(),
        "single events do not complete a kind's initial list"
    );
    t.apply(Event::Replace(Kind::Node, vec![node_obj()]));
    let (state, changes) = t.update().expect("ready");
    assert!(changes.full, "the first state is a full sync");
    assert_eq!(state.family(IpFamily::V4).unwrap().services.len(), 1);
}

/// A partial sync re-renders only what changed: an endpoint added to one Service names only
/// that Service's port.
#[test]
fn a_slice_update_changes_only_its_services_ports() {
    let mut t = ready_tracker();
    t.update().unwrap();
    t.apply(Event::Apply(slice_obj(
        "a",
        "a-1",
        &["10.0.1.1", "10.0.1.2"],
    )));
    let (state, changes) = t.update().unwrap();
    assert!(!changes.full);
    assert_eq!(
        changes.services.into_iter().collect::<Vec<_>>(),
        [port("a")]
    );
    let a = &state.family(IpFamily::V4).unwrap().services[&port("a")];
    assert_eq!(
        addrs(a.internal_endpoints()),
        ["10.0.1.1:80", "10.0.1.2:80"]
    );
}

/// A reload that lists the same objects again changes nothing; one that leaves an object out
/// deletes it (a relist is an atomic swap).
#[test]
fn a_relist_deletes_missing_objects_and_an_identical_one_changes_nothing() {
    let mut t = ready_tracker();
    t.update().unwrap();
    t.apply(Event::Replace(
        Kind::Service,
        vec![svc_obj("a", "172.30.0.1"), svc_obj("b", "172.30.0.2")],
    ));
    assert!(t.update().unwrap().1.is_empty());
    t.apply(Event::Replace(
        Kind::Service,
        vec![svc_obj("a", "172.30.0.1")],
    ));
    t.apply(Event::Replace(Kind::EndpointSlice, vec![]));
    let (state, changes) = t.update().unwrap();
    assert_eq!(
        changes.services.into_iter().collect::<Vec<_>>(),
        [port("a"), port("b")]
    );
    let svc = &state.family(IpFamily::V4).unwrap().services;
    assert_eq!(svc.keys().cloned().collect::<Vec<_>>(), [port("a")]);
    assert!(svc[&port("a")].internal_endpoints().is_empty());
}

/// Node facts (zone, IPs) feed every Service: a change to the Node is a full sync.
#[test]
fn a_node_change_makes_a_full_sync() {
    let mut t = ready_tracker();
    t.update().unwrap();
    t.apply(Event::Apply(Object::Node(Box::new(node(
        NODE,
        Some("zone-b"),
        &["192.168.0.2"],
    )))));
    let (state, changes) = t.update().unwrap();
    assert!(changes.full);
    assert_eq!(state.zone.as_deref(), Some("zone-b"));
    t.apply(Event::Apply(Object::Node(Box::new(node(
        "someone-else",
        Some("zone-c"),
        &["192.168.0.9"],
    )))));
    assert!(
        t.update().unwrap().1.is_empty(),
        "other nodes are not this node"
    );
}

/// A slice relabelled to another Service moves its endpoints, and deleting a Service removes
/// its ports.
#[test]
fn a_relabelled_slice_moves_and_a_deleted_service_goes() {
    let mut t = ready_tracker();
    t.update().unwrap();
    t.apply(Event::Apply(slice_obj("b", "a-1", &["10.0.1.1"])));
    let (state, changes) = t.update().unwrap();
    assert_eq!(
        changes.services.into_iter().collect::<Vec<_>>(),
        [port("a"), port("b")]
    );
    let s = &state.family(IpFamily::V4).unwrap().services;
    assert!(s[&port("a")].internal_endpoints().is_empty());
    assert_eq!(addrs(s[&port("b")].internal_endpoints()), ["10.0.1.1:80"]);
    t.apply(Event::Delete(svc_obj("b", "172.30.0.2")));
    let (state, _) = t.update().unwrap();
    assert!(
        !state
            .family(IpFamily::V4)
            .unwrap()
            .services
            .contains_key(&port("b"))
    );
}

/// ServiceCIDR objects (networking.k8s.io/v1) supply the service CIDRs per family; a change to
/// them changes every Service's context, so it is a full sync.
#[test]
fn service_cidr_objects_feed_the_service_cidrs_of_their_family() {
    let mut t = ready_tracker();
    t.update().unwrap();
    let cidr: k8s_openapi::api::networking::v1::ServiceCIDR = serde_json::from_value(json!({
        "apiVersion": "networking.k8s.io/v1", "kind": "ServiceCIDR",
        "metadata": {"name": "kubernetes"}, "spec": {"cidrs": ["172.30.0.0/16", "fd00:96::/112"]}
    }))
    .unwrap();
    t.apply(Event::Replace(
        Kind::ServiceCidr,
        vec![Object::ServiceCidr(Box::new(cidr))],
    ));
    let (state, changes) = t.update().unwrap();
    assert!(changes.full);
    let v4 = &state.family(IpFamily::V4).unwrap().node.service_cidrs;
    assert_eq!(v4, &vec!["172.30.0.0/16".parse::<ipnet::IpNet>().unwrap()]);
    t.apply(Event::Replace(Kind::ServiceCidr, vec![]));
    assert!(
        t.update()
            .unwrap()
            .0
            .family(IpFamily::V4)
            .unwrap()
            .node
            .service_cidrs
            .is_empty()
    );
}

/// A streamed relist (the API source's form) acts only at its end, and as a whole: until then
/// the state keeps the old objects, changed or not listed; an abandoned list counts for nothing.
#[test]
fn a_streamed_relist_takes_effect_only_when_it_ends() {
    let mut t = ready_tracker();
    t.update().unwrap();
    t.apply(Event::ListBegin(Kind::Service));
    t.apply(Event::Listed(svc_obj("c", "172.30.0.3")));
    // The watch broke mid-list; the retry lists again from the start.
    t.apply(Event::ListBegin(Kind::Service));
    t.apply(Event::Listed(svc_obj("a", "172.30.0.11")));
    let (state, changes) = t.update().unwrap();
    assert!(changes.is_empty(), "half a list changes nothing");
    let svc = &state.family(IpFamily::V4).unwrap().services;
    assert_eq!(
        svc.keys().cloned().collect::<Vec<_>>(),
        [port("a"), port("b")]
    );
    // A change outside the list still applies meanwhile.
    t.apply(Event::Apply(slice_obj("a", "a-1", &["10.0.1.2"])));
    assert_eq!(t.update().unwrap().1.services.len(), 1);
    t.apply(Event::ListEnd(Kind::Service));
    let (state, changes) = t.update().unwrap();
    assert_eq!(
        changes.services.into_iter().collect::<Vec<_>>(),
        [port("a"), port("b")]
    );
    let svc = &state.family(IpFamily::V4).unwrap().services;
    assert_eq!(svc.keys().cloned().collect::<Vec<_>>(), [port("a")]);
    assert_eq!(svc[&port("a")].cluster_ip.to_string(), "172.30.0.11");
    assert_eq!(svc[&port("a")].internal_endpoints().len(), 1);
}
