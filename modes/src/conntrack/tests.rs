//! Unit tests of the stale-flow computation (no kernel).

use std::{
    collections::BTreeMap,
    net::SocketAddr,
    sync::{Arc, Mutex},
};

use kproxy_dataplane::conntrack::{
    ConntrackClient, ConntrackError, Entry, FlowFilter, FlowTuple, IPPROTO_UDP, L3,
};

use super::*;
use crate::model::*;

use crate::testing::fixtures;
pub(super) use crate::testing::fixtures::ip;

pub(super) fn sa(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

/// A UDP-style port reached at every kind of VIP: cluster IP, NodePort, an external IP and an
/// LB IP, under Cluster policies.
pub(super) fn sp(name: &str, proto: Protocol, eps: &[&str]) -> ServicePort {
    let eps = eps.iter().map(|e| fixtures::ep(e, false)).collect();
    let mut sp = fixtures::port("ns", name, "p", proto, "172.30.0.10", 53, eps);
    sp.node_port = Some(30053);
    sp.external_ips = vec![ip("198.51.100.7")];
    sp.load_balancer_ips = vec![ip("1.2.3.4")];
    fixtures::paths(&mut sp);
    sp
}

pub(super) fn state(ports: Vec<ServicePort>) -> DesiredState {
    let node = NodeSettings {
        node_ips: vec![],
        local_traffic: LocalTrafficDetector::None,
        node_port_addresses: NodePortAddresses::All,
        node_port_ips: NodePortIps::AllLocal,
        service_cidrs: vec![],
        masquerade_all: false,
        masquerade_mark: 0x4000,
    };
    DesiredState {
        node_name: "n".into(),
        zone: None,
        families: vec![FamilyState {
            family: IpFamily::V4,
            node,
            services: ports
                .into_iter()
                .map(|p| (p.name.clone(), p))
                .collect::<BTreeMap<_, _>>(),
        }],
        skipped: vec![],
    }
}

fn changed(sp: &ServicePort) -> ChangeSet {
    ChangeSet {
        full: false,
        services: [sp.name.clone()].into(),
    }
}

/// The four flows DNATed to `ep` through every VIP and the NodePort.
fn to_endpoint(ep: &str) -> Vec<FlowFilter> {
    let ep = sa(ep);
    let via = |vip: &str| FlowFilter::udp_to(ip(vip), 53).dnated_to(ep.ip(), ep.port());
    vec![
        via("172.30.0.10"),
        via("198.51.100.7"),
        via("1.2.3.4"),
        FlowFilter::udp_to_port(L3::Ipv4, 30053).dnated_to(ep.ip(), ep.port()),
    ]
}

fn to_vips() -> Vec<FlowFilter> {
    vec![
        FlowFilter::udp_to(ip("172.30.0.10"), 53),
        FlowFilter::udp_to(ip("198.51.100.7"), 53),
        FlowFilter::udp_to(ip("1.2.3.4"), 53),
        FlowFilter::udp_to_port(L3::Ipv4, 30053),
    ]
}

#[test]
fn removed_endpoint_deletes_only_its_flows_on_every_vip() {
    let old = UdpPort::of(&sp("d", Protocol::Udp, &["10.1.0.1:53", "10.1.0.2:53"]));
    let new = UdpPort::of(&sp("d", Protocol::Udp, &["10.1.0.2:53"]));
    let got = stale_flows(L3::Ipv4, old.as_ref(), new.as_ref());
    assert_eq!(got, to_endpoint("10.1.0.1:53"));
    // Unchanged endpoints: nothing.
    assert!(stale_flows(L3::Ipv4, new.as_ref(), new.as_ref()).is_empty());
}

#[test]
fn endpoint_port_change_is_a_removal() {
    let old = UdpPort::of(&sp("d", Protocol::Udp, &["10.1.0.1:53"]));
    let new = UdpPort::of(&sp("d", Protocol::Udp, &["10.1.0.1:5353"]));
    assert_eq!(
        stale_flows(L3::Ipv4, old.as_ref(), new.as_ref()),
        to_endpoint("10.1.0.1:53")
    );
}

#[test]
fn first_endpoint_deletes_flows_to_the_vips() {
    let old = UdpPort::of(&sp("d", Protocol::Udp, &[]));
    let new = UdpPort::of(&sp("d", Protocol::Udp, &["10.1.0.1:53"]));
    assert_eq!(stale_flows(L3::Ipv4, old.as_ref(), new.as_ref()), to_vips());
    // A new Service with endpoints counts as newly served too.
    assert_eq!(stale_flows(L3::Ipv4, None, new.as_ref()), to_vips());
    // The last endpoint going: its flows only, no VIP-wide delete.
    assert_eq!(
        stale_flows(L3::Ipv4, new.as_ref(), old.as_ref()),
        to_endpoint("10.1.0.1:53")
    );
}

#[test]
fn plan_first_call_only_records_then_diffs_changed_udp_ports() {
    let mut known = None;
    let v1 = state(vec![
        sp("d", Protocol::Udp, &["10.1.0.1:53", "10.1.0.2:53"]),
        sp("t", Protocol::Tcp, &["10.1.0.1:53"]),
    ]);
    // Start-up: every UDP port has endpoints, yet nothing may be deleted.
    assert!(plan(&mut known, &v1, &ChangeSet::full()).is_empty());
    assert_eq!(
        known.as_ref().unwrap().len(),
        1,
        "only the UDP port is kept"
    );

    let v2 = state(vec![
        sp("d", Protocol::Udp, &["10.1.0.2:53"]),
        sp("t", Protocol::Tcp, &[]),
    ]);
    let udp = &v2.families[0]
        .services
        .values()
        .find(|p| p.name.name == "d")
        .unwrap();
    // Not named in the change set: not compared.
    let tcp = &v2.families[0]
        .services
        .values()
        .find(|p| p.name.name == "t")
        .unwrap();
    assert!(plan(&mut known, &v2, &changed(tcp)).is_empty());
    assert_eq!(
        plan(&mut known, &v2, &changed(udp)),
        to_endpoint("10.1.0.1:53")
    );
    // Recorded: the same state again deletes nothing, even in a full comparison.
    assert!(plan(&mut known, &v2, &ChangeSet::full()).is_empty());
    // The Service deleted: its remaining endpoint's flows go.
    let v3 = state(vec![]);
    assert_eq!(
        plan(&mut known, &v3, &ChangeSet::full()),
        to_endpoint("10.1.0.2:53")
    );
    assert!(known.unwrap().is_empty());
}

/// A conntrack table in memory: lists its entries by family and deletes exact ones (`false`
/// when absent). Filtered deletes are only recorded, and those to the NodePort fail, as do
/// listings when `fail_list` is set: failures are counted, not raised.
#[derive(Clone, Default)]
struct FakeTable(Arc<Mutex<Table>>);

#[derive(Default)]
struct Table {
    entries: Vec<Entry>,
    filters: Vec<FlowFilter>,
    lists: Vec<L3>,
    fail_list: bool,
}

fn failed() -> ConntrackError {
    ConntrackError::Earlier("test".into())
}

impl ConntrackClient for FakeTable {
    fn delete(&self, filter: &FlowFilter) -> Result<u64, ConntrackError> {
        self.0.lock().unwrap().filters.push(filter.clone());
        if filter.orig_dst.is_none() {
            return Err(failed());
        }
        Ok(1)
    }

    fn list(&self, l3: L3) -> Result<Vec<Entry>, ConntrackError> {
        let mut t = self.0.lock().unwrap();
        t.lists.push(l3);
        if t.fail_list {
            return Err(failed());
        }
        let of_family = |e: &&Entry| e.orig.dst.is_some_and(|ip| L3::of(&ip) == l3);
        Ok(t.entries.iter().filter(of_family).cloned().collect())
    }

    fn delete_entries(&self, _l3: L3, entries: &[Entry]) -> Vec<Result<bool, ConntrackError>> {
        let mut t = self.0.lock().unwrap();
        let mut delete = |e: &Entry| {
            let before = t.entries.len();
            t.entries.retain(|x| x != e);
            Ok(t.entries.len() < before)
        };
        entries.iter().map(&mut delete).collect()
    }
}

/// A flow of protocol `proto` from the client 10.0.0.2:40000 to `dst`, DNATed to `target` (its
/// reply source).
pub fn flow(proto: u8, dst: &str, target: &str) -> Entry {
    let (dst, target, client) = (sa(dst), sa(target), sa("10.0.0.2:40000"));
    let tuple = |src: SocketAddr, dst: SocketAddr| FlowTuple {
        src: Some(src.ip()),
        dst: Some(dst.ip()),
        proto: Some(proto),
        src_port: Some(src.port()),
        dst_port: Some(dst.port()),
    };
    Entry {
        orig: tuple(client, dst),
        reply: tuple(target, client),
        zone: None,
        id: None,
    }
}

/// UDP 10.0.0.2:40000 -> `dst`, DNATed to `target`.
fn udp_flow(dst: &str, target: &str) -> Entry {
    flow(IPPROTO_UDP, dst, target)
}

#[test]
fn hygiene_counts_deleted_and_failed() {
    let table = FakeTable::default();
    let mut h = ConntrackHygiene::new(table.clone());
    let before = state(vec![sp("d", Protocol::Udp, &["10.1.0.1:53"])]);
    h.after_sync(&before, &ChangeSet::full());
    assert!(
        table.0.lock().unwrap().filters.is_empty(),
        "start-up diffs nothing"
    );
    let after = state(vec![sp("d", Protocol::Udp, &["10.1.0.2:53"])]);
    let changes = changed(after.families[0].services.values().next().unwrap());
    h.after_sync(&after, &changes);
    assert_eq!(table.0.lock().unwrap().filters, to_endpoint("10.1.0.1:53"));
    assert_eq!((h.deleted(), h.failures()), (3, 1));
}

/// Steps: the table holds a flow DNATed to an endpoint that went while no kproxy ran, a live
/// one and an unrelated one; the first sync dumps IPv4 once and deletes only the stale flow.
/// Then a stale-looking flow appears: the next sync of the same state neither dumps again
/// nor deletes it (later syncs diff, and nothing changed).
#[test]
fn first_sync_reconciles_the_table_and_later_syncs_only_diff() {
    let stale = udp_flow("172.30.0.10:53", "10.1.0.1:53");
    let live = udp_flow("172.30.0.10:53", "10.1.0.2:53");
    let unrelated = udp_flow("8.8.8.8:53", "8.8.8.8:53");
    let table = FakeTable::default();
    table.0.lock().unwrap().entries = vec![stale.clone(), live.clone(), unrelated.clone()];
    let desired = state(vec![sp("d", Protocol::Udp, &["10.1.0.2:53"])]);

    let mut h = ConntrackHygiene::new(table.clone());
    h.after_sync(&desired, &ChangeSet::full());
    {
        let t = table.0.lock().unwrap();
        assert_eq!(t.lists, [L3::Ipv4], "one dump, of the only family");
        assert_eq!(t.entries, [live.clone(), unrelated.clone()]);
        assert!(t.filters.is_empty());
    }
    assert_eq!((h.deleted(), h.failures()), (1, 0));

    table.0.lock().unwrap().entries.push(stale.clone());
    h.after_sync(&desired, &ChangeSet::full());
    let t = table.0.lock().unwrap();
    assert_eq!(t.lists, [L3::Ipv4], "no second dump");
    assert_eq!(t.entries, [live, unrelated, stale]);
    assert_eq!((h.deleted(), h.failures()), (1, 0));
}

#[test]
fn first_sync_skips_families_without_served_udp_ports_and_counts_a_failed_dump() {
    let table = FakeTable::default();
    let unserved = state(vec![
        sp("d", Protocol::Udp, &[]),
        sp("t", Protocol::Tcp, &["10.1.0.1:53"]),
    ]);
    let mut h = ConntrackHygiene::new(table.clone());
    h.after_sync(&unserved, &ChangeSet::full());
    assert!(
        table.0.lock().unwrap().lists.is_empty(),
        "nothing to dump for"
    );

    table.0.lock().unwrap().fail_list = true;
    let mut h = ConntrackHygiene::new(table.clone());
    h.after_sync(
        &state(vec![sp("d", Protocol::Udp, &["10.1.0.1:53"])]),
        &ChangeSet::full(),
    );
    assert_eq!(table.0.lock().unwrap().lists, [L3::Ipv4]);
    assert_eq!((h.deleted(), h.failures()), (0, 1));
}

/// A failed start-up dump is tried again at the next sync, and only until one succeeds.
#[test]
fn a_failed_first_dump_is_tried_again_until_it_succeeds() {
    let stale = udp_flow("172.30.0.10:53", "10.1.0.1:53");
    let table = FakeTable::default();
    table.0.lock().unwrap().entries = vec![stale];
    table.0.lock().unwrap().fail_list = true;
    let desired = state(vec![sp("d", Protocol::Udp, &["10.1.0.2:53"])]);
    let mut h = ConntrackHygiene::new(table.clone());
    h.after_sync(&desired, &ChangeSet::full());
    h.after_sync(&desired, &ChangeSet::default());
    assert_eq!(table.0.lock().unwrap().lists.len(), 2, "tried again");
    assert_eq!((h.deleted(), h.failures()), (0, 2));

    table.0.lock().unwrap().fail_list = false;
    h.after_sync(&desired, &ChangeSet::default());
    h.after_sync(&desired, &ChangeSet::default());
    let t = table.0.lock().unwrap();
    assert_eq!(t.lists.len(), 3, "no dump after the one that succeeded");
    assert!(t.entries.is_empty(), "the stale flow went");
    assert_eq!((h.deleted(), h.failures()), (1, 2));
}
