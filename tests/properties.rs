//! Property tests of invariants the compute and the tracker must keep for any input.

mod support;

use k8s_openapi::api::{core::v1::Service, discovery::v1::EndpointSlice};
use kproxy::{
    desired,
    source::{Event, Kind, Object},
    tracker::Tracker,
};
use kproxy_modes::model::{DesiredState, Endpoint, IpFamily};
use proptest::prelude::*;
use serde_json::{Value, json};
use support::*;

#[derive(Clone, Debug)]
struct Ep {
    host: u8,
    node: u8, // 0: this node, 1-2: others, 3: none
    ready: bool,
    serving: bool,
    terminating: bool,
    zone_hint: Option<u8>,
}

fn ep_strategy() -> impl Strategy<Value = Ep> {
    (
        1u8..12,
        0u8..4,
        any::<bool>(),
        any::<bool>(),
        any::<bool>(),
        proptest::option::of(0u8..3),
    )
        .prop_map(|(host, node, ready, serving, terminating, zone_hint)| Ep {
            host,
            node,
            ready,
            serving,
            terminating,
            zone_hint,
        })
}

fn ep_json(e: &Ep) -> Value {
    let mut v = json!({"addresses": [format!("10.0.1.{}", e.host)],
        "conditions": {"ready": e.ready, "serving": e.serving, "terminating": e.terminating}});
    match e.node {
        0 => v["nodeName"] = json!(NODE),
        3 => {}
        n => v["nodeName"] = json!(format!("node-{n}")),
    }
    if let Some(z) = e.zone_hint {
        v["hints"] = json!({"forZones": [{"name": format!("zone-{}", (b'a' + z) as char)}]});
    }
    v
}

/// Up to 3 Services with random policies, each with up to 3 slices of random endpoints.
fn world() -> impl Strategy<Value = (Vec<Service>, Vec<EndpointSlice>)> {
    // Cluster IPs and node ports come from small pools so that collisions happen too.
    let svc = (
        1u8..4,
        0u16..3,
        any::<bool>(),
        any::<bool>(),
        any::<bool>(),
        proptest::collection::vec(proptest::collection::vec(ep_strategy(), 0..5), 0..3),
    );
    proptest::collection::vec(svc, 1..4).prop_map(|svcs| {
        let mut services = Vec::new();
        let mut slices = Vec::new();
        for (i, (ip, node_port, lb, etp_local, itp_local, svc_slices)) in
            svcs.into_iter().enumerate()
        {
            let name = format!("svc{i}");
            let mut spec = json!({"clusterIP": format!("172.30.0.{ip}")});
            if lb {
                spec["type"] = json!("LoadBalancer");
                spec["ports"] = json!([{"name": "p80", "port": 80, "nodePort": 30000 + node_port}]);
            }
            spec["externalTrafficPolicy"] = json!(if etp_local { "Local" } else { "Cluster" });
            spec["internalTrafficPolicy"] = json!(if itp_local { "Local" } else { "Cluster" });
            services.push(simple_service(&name, spec));
            for (j, eps) in svc_slices.into_iter().enumerate() {
                let eps: Vec<Value> = eps.iter().map(ep_json).collect();
                slices.push(simple_slice(&name, &format!("{name}-{j}"), json!(eps)));
            }
        }
        (services, slices)
    })
}

fn ports(state: &DesiredState) -> impl Iterator<Item = &kproxy_modes::model::ServicePort> {
    state
        .family(IpFamily::V4)
        .into_iter()
        .flat_map(|f| f.services.values())
}

fn usable_fallback(set: &[Endpoint]) -> bool {
    // A non-ready endpoint may appear only through the terminating fallback: then it is serving
    // and terminating, and the set holds no ready endpoint at all.
    set.iter()
        .all(|e| e.ready || (e.serving && e.terminating && set.iter().all(|o| !o.ready)))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// A Local set never holds a remote endpoint.
    #[test]
    fn a_local_set_never_holds_a_remote_endpoint((services, slices) in world()) {
        let state = compute(&services, &slices);
        for p in ports(&state) {
            prop_assert!(p.endpoints.local.iter().all(|e| e.is_local), "{:?}", p.endpoints.local);
        }
    }

    /// Non-serving endpoints appear only through the terminating fallback.
    #[test]
    fn non_ready_endpoints_appear_only_through_the_terminating_fallback((services, slices) in world()) {
        let state = compute(&services, &slices);
        for p in ports(&state) {
            prop_assert!(usable_fallback(&p.endpoints.cluster), "cluster {:?}", p.endpoints.cluster);
            prop_assert!(usable_fallback(&p.endpoints.local), "local {:?}", p.endpoints.local);
        }
    }

    /// The output does not depend on the order objects are listed in.
    #[test]
    fn output_order_is_deterministic((services, slices) in world(), seed in any::<u64>()) {
        let a = compute(&services, &slices);
        let (mut s2, mut l2) = (services.clone(), slices.clone());
        shuffle(&mut s2, seed);
        shuffle(&mut l2, seed.rotate_left(7));
        let b = compute(&s2, &l2);
        prop_assert_eq!(serde_json::to_string(&a).unwrap(), serde_json::to_string(&b).unwrap());
    }

    /// Events applied in any order that ends in the same objects give the same desired state,
    /// equal to computing from scratch: the incremental path cannot drift. Only who keeps a
    /// contested VIP tuple or NodePort depends on the history (a holder keeps it): those
    /// Services are compared by the rule that no claim is ever programmed twice, and a fresh
    /// tracker given the final objects at once equals the compute from scratch exactly.
    #[test]
    fn any_event_order_ending_in_the_same_objects_gives_the_same_state(
        (services, slices) in world(), (extra_s, extra_l) in world(), seed in any::<u64>(), sync_every in 1usize..6,
    ) {
        let mut events: Vec<Event> = Vec::new();
        // Objects that come and go again along the way, and the final ones, in shuffled order.
        for s in &extra_s { events.push(Event::Apply(Object::Service(Box::new(s.clone())))); }
        for s in &extra_l { events.push(Event::Apply(Object::EndpointSlice(Box::new(s.clone())))); }
        for s in &services { events.push(Event::Apply(Object::Service(Box::new(s.clone())))); }
        for s in &slices { events.push(Event::Apply(Object::EndpointSlice(Box::new(s.clone())))); }
        shuffle(&mut events, seed);
        let mut t = Tracker::new(opts());
        t.apply(Event::Replace(Kind::Node, vec![Object::Node(Box::new(node(NODE, Some("zone-a"), &["192.168.0.2"])))]));
        t.apply(Event::Replace(Kind::Service, vec![]));
        t.apply(Event::Replace(Kind::EndpointSlice, vec![]));
        for (i, e) in events.into_iter().enumerate() {
            t.apply(e);
            if i % sync_every == 0 { t.update(); }
        }
        // The final relist is what a reconnecting watch would deliver.
        t.apply(Event::Replace(Kind::Service, services.iter().cloned().map(|s| Object::Service(Box::new(s))).collect()));
        t.apply(Event::Replace(Kind::EndpointSlice, slices.iter().cloned().map(|s| Object::EndpointSlice(Box::new(s))).collect()));
        let (incremental, _) = t.update().unwrap();
        let full = desired::compute(&opts(), &services, &slices, Some(&node(NODE, Some("zone-a"), &["192.168.0.2"])));
        let involved = contested_services(&services);
        prop_assert_eq!(without(incremental, &involved), without(&full, &involved));
        let mut claimed = std::collections::BTreeSet::new();
        for p in ports(incremental) {
            for c in desired::collisions::claims(p) {
                prop_assert!(claimed.insert(c.clone()), "{c} programmed twice");
            }
        }
        let mut fresh = Tracker::new(opts());
        fresh.apply(Event::Replace(Kind::Node, vec![Object::Node(Box::new(node(NODE, Some("zone-a"), &["192.168.0.2"])))]));
        fresh.apply(Event::Replace(Kind::Service, services.iter().cloned().map(|s| Object::Service(Box::new(s))).collect()));
        fresh.apply(Event::Replace(Kind::EndpointSlice, slices.iter().cloned().map(|s| Object::EndpointSlice(Box::new(s))).collect()));
        prop_assert_eq!(fresh.update().unwrap().0, &full);
    }
}

/// Services one of whose claims another Service shares (each computed alone).
fn contested_services(services: &[Service]) -> Vec<String> {
    let mut by_claim: std::collections::BTreeMap<_, Vec<String>> = Default::default();
    for s in services {
        for p in ports(&compute(std::slice::from_ref(s), &[])) {
            for c in desired::collisions::counted_claims(p) {
                by_claim.entry(c).or_default().push(p.name.name.clone());
            }
        }
    }
    let mut out: Vec<String> = by_claim
        .into_values()
        .filter(|v| v.len() > 1)
        .flatten()
        .collect();
    out.sort();
    out.dedup();
    out
}

/// The state without the ports and claim records of these Services.
fn without(state: &DesiredState, names: &[String]) -> DesiredState {
    let mut s = state.clone();
    for f in &mut s.families {
        f.services.retain(|n, _| !names.contains(&n.name));
    }
    s.skipped.retain(|k| !names.contains(&k.name));
    s
}

fn shuffle<T>(v: &mut [T], mut seed: u64) {
    for i in (1..v.len()).rev() {
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        v.swap(i, (seed >> 33) as usize % (i + 1));
    }
}
