//! The pure parts of the mode: the plan of a desired state, the minimal operations against
//! [`FakeIpvs`] (which keeps the kernel's rules), graceful termination, and the nftables
//! companion's partial renders. Real packets: tests/ipvs_vm.rs and the conformance cases in
//! the VM.

use std::collections::{BTreeMap, BTreeSet};

use kproxy_dataplane::ipvs::{Destination, FakeIpvs, IpvsTable, Op, Protocol, SVC_F_PERSISTENT};

use super::{diff, nft, plan};
use crate::{
    model::{ChangeSet, IpFamily},
    testing::fixtures::{self, ip},
};

fn plan_of(d: &crate::model::DesiredState) -> plan::Plan {
    plan::plan(d, "", &BTreeMap::new())
}

#[test]
fn every_vip_port_and_node_port_address_gets_a_virtual_server() {
    let d = fixtures::external_mix();
    let p = plan_of(&d);
    let key = |a: &str, port: u16, proto| {
        let svc = kproxy_dataplane::ipvs::Service::new(ip(a), proto, port, "rr");
        svc.key()
    };
    // svc1: cluster IP, LB IP, NodePort on the one node-port address; Cluster endpoints.
    for k in [
        key("172.30.0.41", 80, Protocol::Tcp),
        key("1.2.3.4", 80, Protocol::Tcp),
        key("192.168.0.2", 3001, Protocol::Tcp),
    ] {
        let (svc, dests) = &p.services[&k];
        assert_eq!(svc.scheduler, "rr");
        assert_eq!(dests.len(), 2, "{k:?}");
    }
    // svc2 (eTP=Local): the external ones get the local endpoint only.
    assert_eq!(p.services[&key("5.6.7.8", 80, Protocol::Tcp)].1.len(), 1);
    assert_eq!(
        p.services[&key("172.30.0.42", 80, Protocol::Tcp)].1.len(),
        2
    );
    // svc4 has none: a virtual server without real servers (nftables rejects first).
    assert!(
        p.services[&key("172.30.0.44", 80, Protocol::Tcp)]
            .1
            .is_empty()
    );
    // svc5: ClientIP affinity is persistence with the Service's timeout.
    let (udp, _) = &p.services[&key("172.30.0.45", 53, Protocol::Udp)];
    assert_eq!(
        (udp.flags & SVC_F_PERSISTENT, udp.timeout),
        (SVC_F_PERSISTENT, 10800)
    );
    assert!(p.vips.contains(&ip("192.168.99.11")) && p.vips.contains(&ip("9.10.11.12")));
    assert!(!p.vips.contains(&ip("192.168.0.2")));
}

#[test]
fn a_sync_against_the_table_it_made_has_nothing_to_do_and_a_change_touches_only_itself() {
    let mut d = fixtures::external_mix();
    let mut fake = FakeIpvs::default();
    let mut draining = BTreeSet::new();
    let p = plan_of(&d);
    let ops = diff::diff(&p.services, &diff::Table::new(), &mut draining);
    assert!(fake.apply(&ops).iter().all(Result::is_ok));
    let listed = |fake: &mut FakeIpvs| {
        let mut t = diff::Table::new();
        for s in fake.list_services().unwrap() {
            let dests = fake.list_servers(&s.key()).unwrap();
            t.insert(s.key(), (s, dests));
        }
        t
    };
    assert!(diff::diff(&p.services, &listed(&mut fake), &mut draining).is_empty());

    // One endpoint more for svc3 (cluster IP and, being local, NodePort): two AddServer.
    let fam = &mut d.families[0];
    let name = fam
        .services
        .keys()
        .find(|n| n.name == "svc3")
        .unwrap()
        .clone();
    let sp = fam.services.get_mut(&name).unwrap();
    sp.endpoints
        .cluster
        .push(fixtures::ep("10.180.0.33:80", true));
    sp.endpoints
        .local
        .push(fixtures::ep("10.180.0.33:80", true));
    fixtures::refresh(&mut d);
    let ops = diff::diff(&plan_of(&d).services, &listed(&mut fake), &mut draining);
    assert!(
        ops.iter()
            .all(|o| matches!(o, Op::AddServer(_, dst) if dst.address == ip("10.180.0.33"))),
        "{ops:?}"
    );
    assert_eq!(ops.len(), 2, "{ops:?}");
}

#[test]
fn a_removed_tcp_server_drains_at_weight_zero_and_a_udp_one_goes_at_once() {
    let mut d = fixtures::external_mix();
    let mut fake = FakeIpvs::default();
    let mut draining = BTreeSet::new();
    let p = plan_of(&d);
    fake.apply(&diff::diff(&p.services, &diff::Table::new(), &mut draining));
    let mut cache = p.services.clone();
    // Every endpoint of svc1 (TCP) and svc5 (UDP) goes.
    for sp in d.families[0].services.values_mut() {
        if sp.name.name == "svc1" || sp.name.name == "svc5" {
            sp.endpoints.cluster.clear();
            sp.endpoints.local.clear();
            sp.endpoints.has_any = false;
        }
    }
    fixtures::refresh(&mut d);
    let ops = diff::diff(&plan_of(&d).services, &cache, &mut draining);
    let quiesced = ops
        .iter()
        .filter(|o| matches!(o, Op::EditServer(_, x) if x.weight == 0))
        .count();
    let deleted = ops
        .iter()
        .filter(|o| matches!(o, Op::DeleteServer(k, _) if k.protocol == Protocol::Udp))
        .count();
    assert_eq!((quiesced, deleted, draining.len()), (6, 2, 6), "{ops:?}");
    let ok: Vec<bool> = fake.apply(&ops).iter().map(Result::is_ok).collect();
    assert!(ok.iter().all(|x| *x));
    diff::apply_to(&mut cache, &ops, &ok);
    // The next sync from the cache leaves them alone while draining.
    assert!(diff::diff(&plan_of(&d).services, &cache, &mut draining).is_empty());
    // One still has a connection: the others are deleted, it stays.
    let mut listed: BTreeMap<_, Vec<Destination>> = BTreeMap::new();
    for (key, _, _) in &draining {
        listed.insert(*key, fake.list_servers(key).unwrap());
    }
    let busy = listed.values_mut().next().unwrap();
    busy[0].active_conns = 1;
    let drained = diff::drained(&mut draining, &listed);
    assert_eq!((drained.len(), draining.len()), (5, 1));
    assert!(fake.apply(&drained).iter().all(Result::is_ok));
}

#[test]
fn the_nftables_companion_changes_only_the_elements_of_a_changed_service() {
    let mut d = fixtures::external_mix();
    let old = nft::elements(&d, &plan_of(&d));
    let full = nft::render_full(&d, &old).to_string();
    assert!(
        full.contains(
            "add chain ip kproxy-ipvs filter-input { type filter hook input priority -110; policy accept; }"
        ),
        "{full}"
    );
    assert!(
        full.contains("172.30.0.44 . tcp . 80 : goto reject-chain"),
        "{full}"
    );
    assert!(full.contains("tcp . 3006 : drop"), "{full}");
    assert!(
        full.contains("1.2.3.4 . tcp . 80 . 203.0.113.0/25"),
        "{full}"
    );
    let fam = &mut d.families[0];
    let name = fam
        .services
        .keys()
        .find(|n| n.name == "svc4")
        .unwrap()
        .clone();
    fam.services.get_mut(&name).unwrap().endpoints.cluster =
        vec![fixtures::ep("10.180.0.4:80", true)];
    fam.services.get_mut(&name).unwrap().endpoints.has_any = true;
    fixtures::refresh(&mut d);
    let new = nft::elements(&d, &plan_of(&d));
    let tx = nft::render_partial(&old, &new).to_string();
    let lines: Vec<&str> = tx.lines().collect();
    assert!(
        lines.iter().any(|l| l.starts_with(
            "delete element ip kproxy-ipvs no-endpoint-services { 172.30.0.44 . tcp . 80"
        )),
        "{tx}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.contains("hairpin { 10.180.0.4 . 10.180.0.4 }")),
        "{tx}"
    );
    assert!(nft::render_partial(&new, &new).is_empty());
    let _ = (ChangeSet::full(), IpFamily::V4);
}
