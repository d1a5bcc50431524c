//! Pure tests of the renderer's sync decisions and partial diffs (no kernel needed).

use kproxy_modes::testing::fixtures;

use kproxy_modes::{
    model::{ChangeSet, Protocol, ServicePortName},
    nftables::render,
};

fn partial(names: &[ServicePortName]) -> ChangeSet {
    ChangeSet {
        full: false,
        services: names.iter().cloned().collect(),
    }
}

/// No changes after a full sync: the partial transaction is empty.
#[test]
fn nothing_changed_renders_nothing() {
    let d = fixtures::external_mix();
    let full = render(&d, &ChangeSet::full(), None);
    let names: Vec<_> = d.families[0].services.keys().cloned().collect();
    let p = render(&d, &partial(&names), Some(&full.applied));
    assert!(!p.full);
    assert!(p.tx.is_empty(), "{}", p.tx);
    assert_eq!(p.applied, full.applied);
}

/// Two ports share a cluster IP: removing one keeps the IP in `cluster-ips`; removing the
/// other deletes it.
#[test]
fn shared_cluster_ip_is_reference_counted() {
    let mut d = fixtures::cluster_ip_general();
    let full = render(&d, &ChangeSet::full(), None);
    let svc2: Vec<ServicePortName> = d.families[0]
        .services
        .keys()
        .filter(|n| n.name == "svc2")
        .cloned()
        .collect();
    d.families[0].services.remove(&svc2[0]);
    let p = render(&d, &partial(&svc2[..1]), Some(&full.applied));
    assert!(!p.tx.to_string().contains("cluster-ips"), "{}", p.tx);
    for n in &svc2[1..] {
        d.families[0].services.remove(n);
    }
    let p2 = render(&d, &partial(&svc2), Some(&p.applied));
    assert!(
        p2.tx
            .to_string()
            .contains("delete element ip kproxy cluster-ips { 172.30.0.42 }"),
        "{}",
        p2.tx
    );
}

/// A change of node settings or of the node's NodePort addresses turns a partial sync into a
/// full one; so does a missing applied state.
#[test]
fn node_inputs_force_a_full_sync() {
    let d = fixtures::external_mix();
    let full = render(&d, &ChangeSet::full(), None);
    let none = partial(&[]);
    assert!(render(&d, &none, None).full);
    // The node's NodePort addresses moved: 192.168.0.2 is gone.
    let mut moved = d.clone();
    moved.families[0].node.node_port_ips = kproxy_modes::model::NodePortIps::Only(vec![]);
    assert!(render(&moved, &none, Some(&full.applied)).full);
    let mut d2 = d.clone();
    d2.families[0].node.masquerade_all = true;
    assert!(render(&d2, &none, Some(&full.applied)).full);
    assert!(!render(&d, &none, Some(&full.applied)).full);
}

/// A new port reuses the id a removed port freed in the same sync, and slot ids of surviving
/// ports do not move across a full sync.
#[test]
fn slot_ids_are_stable_and_reused() {
    let mut d = fixtures::external_mix();
    let full = render(&d, &ChangeSet::full(), None);
    let fam = &full.applied.families[&d.families[0].family];
    let svc1 = d.families[0].services.keys().next().unwrap().clone();
    let id1 = fam.services[&svc1].id;
    d.families[0].services.remove(&svc1);
    let mut new = fixtures::port(
        "ns0",
        "new",
        "p",
        Protocol::Tcp,
        "172.30.0.9",
        80,
        vec![fixtures::ep("10.180.9.1:80", false)],
    );
    new.node_port = Some(3009);
    fixtures::paths(&mut new);
    let new_name = new.name.clone();
    d.families[0].services.insert(new_name.clone(), new);
    let p = render(&d, &partial(&[svc1, new_name.clone()]), Some(&full.applied));
    let fam = &p.applied.families[&d.families[0].family];
    assert_eq!(fam.services[&new_name].id, id1);
    let again = render(&d, &ChangeSet::full(), Some(&p.applied));
    let ids = |a: &kproxy_modes::nftables::Applied| -> Vec<u32> {
        a.families
            .values()
            .flat_map(|f| f.services.values().map(|s| s.id))
            .collect()
    };
    assert_eq!(ids(&again.applied), ids(&p.applied));
}

/// The applied state keeps only typed endpoints and a fingerprint of each chain's rules: a
/// changed endpoint port must still replace exactly its slot element, and a changed endpoint
/// count (the chain's `mod N`) must still rewrite the chain.
#[test]
fn compact_applied_state_still_sees_endpoint_and_rule_changes() {
    let eps = |addrs: &[&str]| addrs.iter().map(|a| fixtures::ep(a, false)).collect();
    let web = |e| {
        let mut sp = fixtures::port("ns0", "web", "p", Protocol::Tcp, "172.30.0.9", 80, e);
        sp.node_port = Some(3009);
        sp
    };
    let v4 = kproxy_modes::model::IpFamily::V4;
    let d = fixtures::state(vec![(
        v4,
        vec![web(eps(&["10.180.9.1:80", "10.180.9.2:80"]))],
    )]);
    let name = d.families[0].services.keys().next().unwrap().clone();
    let full = render(&d, &ChangeSet::full(), None);

    let d2 = fixtures::state(vec![(
        v4,
        vec![web(eps(&["10.180.9.1:80", "10.180.9.2:81"]))],
    )]);
    let p = render(
        &d2,
        &partial(std::slice::from_ref(&name)),
        Some(&full.applied),
    );
    let text = p.tx.to_string();
    assert!(
        text.contains("delete element ip kproxy endpoint-slots-tcp-0 { 1 }")
            && text.contains("add element ip kproxy endpoint-slots-tcp-0 { 1 : 10.180.9.2 . 81 }"),
        "{text}"
    );
    assert!(!text.contains("chain") && !text.contains("{ 0"), "{text}");

    let d3 = fixtures::state(vec![(v4, vec![web(eps(&["10.180.9.1:80"]))])]);
    let p = render(&d3, &partial(&[name]), Some(&p.applied));
    let text = p.tx.to_string();
    assert!(
        text.contains("flush chain") && text.contains("mod 1 offset 0"),
        "{text}"
    );
    assert!(
        text.contains("hairpin-endpoints { 10.180.9.2 . 10.180.9.2 }"),
        "{text}"
    );
}
