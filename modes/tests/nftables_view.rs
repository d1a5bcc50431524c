//! `NftablesMode::kernel_view` on tables the kernel actually holds: rendered transactions are
//! loaded into throwaway namespaces, read back with `nft -j`, and compared by meaning with
//! `view::expected`. Needs root (skipped otherwise) and `nft`, `ip`.

use kproxy_modes::testing::fixtures;
use kproxy_testbed::netns;

use std::collections::BTreeSet;

use kproxy_dataplane::nft::Exec;
use kproxy_modes::{
    Mode,
    model::{ChangeSet, DesiredState, FamilyState, IpFamily, Protocol, ServicePortName},
    nftables::NftablesMode,
    view::{self, Dest, Difference, Outcome},
};
use netns::Netns;

fn mode_in(ns: &Netns) -> NftablesMode<Exec> {
    NftablesMode::new(Exec::new().in_netns(ns.name()))
}

fn differences(mode: &NftablesMode<Exec>, desired: &DesiredState) -> Vec<Difference> {
    let kernel = mode.kernel_view().expect("kernel view");
    view::diff(&kernel, &view::expected(desired))
}

fn v4(d: &mut DesiredState) -> &mut FamilyState {
    d.families
        .iter_mut()
        .find(|f| f.family == IpFamily::V4)
        .unwrap()
}

fn partial(names: &[&ServicePortName]) -> ChangeSet {
    ChangeSet {
        full: false,
        services: names.iter().map(|n| (*n).clone()).collect(),
    }
}

fn vip(ip: &str, port: u16) -> Dest {
    Dest::Vip {
        ip: fixtures::ip(ip),
        protocol: Protocol::Tcp,
        port,
    }
}

fn endpoints(list: &[&str]) -> Outcome {
    Outcome::Endpoints(list.iter().map(|a| a.parse().unwrap()).collect())
}

/// Every fixture after a full sync: cluster IPs through pick chains, policy chains and slot
/// shards, eTP=Local (with and without local endpoints), affinity, no endpoints, IPv6.
#[test]
fn full_syncs_read_back_as_desired() {
    for desired in [
        fixtures::cluster_ip_general(),
        fixtures::external_mix(),
        fixtures::dual_stack(),
    ] {
        let Some(ns) = Netns::scratch() else { return };
        let mut mode = mode_in(&ns);
        mode.sync(&desired, &ChangeSet::full()).unwrap();
        let kernel = mode.kernel_view().unwrap();
        assert_eq!(
            kernel.dests.len(),
            view::expected(&desired).dests.len(),
            "{kernel:#?}"
        );
        assert_eq!(differences(&mode, &desired), vec![], "{kernel:#?}");
        let summary = kernel.summary.join("\n");
        assert!(summary.contains("table ip kproxy: "), "{summary}");
    }
}

/// What outside traffic meets, spelled out for the paths that need more than a lookup.
#[test]
fn external_paths_lead_where_outside_traffic_goes() {
    let Some(ns) = Netns::scratch() else { return };
    let mut mode = mode_in(&ns);
    mode.sync(&fixtures::external_mix(), &ChangeSet::full())
        .unwrap();
    let kernel = mode.kernel_view().unwrap();
    let node_port = |port| Dest::NodePort {
        family: IpFamily::V4,
        protocol: Protocol::Tcp,
        port,
    };
    // eTP=Local: the external chain's last goto is the Local chain.
    assert_eq!(
        kernel.dests[&node_port(3002)],
        endpoints(&["10.180.0.2:80"])
    );
    // eTP=Local without local endpoints: the external chain falls through, then DROP.
    assert_eq!(kernel.dests[&node_port(3006)], Outcome::Drop);
    assert_eq!(kernel.dests[&node_port(3004)], Outcome::Reject);
    let affinity = Dest::Vip {
        ip: fixtures::ip("172.30.0.45"),
        protocol: Protocol::Udp,
        port: 53,
    };
    assert_eq!(
        kernel.dests[&affinity],
        Outcome::Endpoints(BTreeSet::from([
            "10.180.0.5:53".parse().unwrap(),
            "10.180.1.5:53".parse().unwrap()
        ]))
    );
}

/// Services added and removed by partial syncs take slot ids and slots in another order than a
/// fresh full sync would; the view compares meanings, so nothing differs after any step.
#[test]
fn adds_and_removes_by_partial_syncs_show_no_difference() {
    let Some(ns) = Netns::scratch() else { return };
    let mut mode = mode_in(&ns);
    let mut desired = fixtures::external_mix();
    mode.sync(&desired, &ChangeSet::full()).unwrap();
    assert_eq!(differences(&mode, &desired), vec![]);

    // Remove the first port (slot id 0) and add a NodePort Service, which reuses id 0.
    let fam = v4(&mut desired);
    let gone = fam.services.keys().next().unwrap().clone();
    fam.services.remove(&gone);
    let mut added = fixtures::port(
        "ns8",
        "np",
        "http",
        Protocol::Tcp,
        "172.30.0.88",
        8080,
        vec![
            fixtures::ep("10.180.8.1:8080", true),
            fixtures::ep("10.180.8.2:8080", false),
        ],
    );
    added.node_port = Some(3088);
    fixtures::paths(&mut added);
    let added_name = added.name.clone();
    fam.services.insert(added_name.clone(), added);
    mode.sync(&desired, &partial(&[&gone, &added_name]))
        .unwrap();
    assert_eq!(differences(&mode, &desired), vec![]);

    // A chainless ClusterIP port with 2 endpoints, then one of another one's endpoints goes.
    let plain = fixtures::port(
        "ns9",
        "plain",
        "http",
        Protocol::Tcp,
        "172.30.0.99",
        80,
        vec![
            fixtures::ep("10.180.9.1:80", false),
            fixtures::ep("10.180.9.2:80", false),
        ],
    );
    let plain_name = plain.name.clone();
    let fam = v4(&mut desired);
    fam.services.insert(plain_name.clone(), plain);
    mode.sync(&desired, &partial(&[&plain_name])).unwrap();
    assert_eq!(differences(&mode, &desired), vec![]);
    let fam = v4(&mut desired);
    fam.services
        .get_mut(&added_name)
        .unwrap()
        .endpoints
        .cluster
        .pop();
    fam.services.remove(&plain_name);
    mode.sync(&desired, &partial(&[&added_name, &plain_name]))
        .unwrap();
    let kernel = mode.kernel_view().unwrap();
    assert_eq!(differences(&mode, &desired), vec![], "{kernel:#?}");
    assert!(!kernel.dests.contains_key(&vip("172.30.0.41", 80)));
    assert!(!kernel.dests.contains_key(&vip("172.30.0.99", 80)));
    assert_eq!(
        kernel.dests[&vip("172.30.0.88", 8080)],
        endpoints(&["10.180.8.1:8080"])
    );
}

/// One element deleted behind kproxy's back is named as exactly the destination it served.
#[test]
fn a_deleted_element_is_exactly_one_difference() {
    let Some(ns) = Netns::scratch() else { return };
    let mut mode = mode_in(&ns);
    let desired = fixtures::cluster_ip_general();
    mode.sync(&desired, &ChangeSet::full()).unwrap();

    let slot = "{ 172.30.0.42 . 80 . 1 }";
    ns.exec(&[
        "nft",
        "delete",
        "element",
        "ip",
        "kproxy",
        "vip-slots-tcp-2",
        slot,
    ]);
    let want = vec![Difference {
        dest: vip("172.30.0.42", 80),
        kernel: Some(endpoints(&["10.180.0.1:80"])),
        desired: Some(endpoints(&["10.180.0.1:80", "10.180.2.1:80"])),
    }];
    assert_eq!(differences(&mode, &desired), want);

    let key = "{ 172.30.0.41 . tcp . 80 }";
    ns.exec(&[
        "nft",
        "delete",
        "element",
        "ip",
        "kproxy",
        "service-ips",
        key,
    ]);
    let d = differences(&mode, &desired);
    assert_eq!(d.len(), 2, "the slot and now the dispatch element: {d:#?}");
    assert_eq!(d[0].dest, vip("172.30.0.41", 80));
    assert_eq!((d[0].kernel.as_ref(), d[0].desired.is_some()), (None, true));
    assert_eq!(d[1..], want);
}
