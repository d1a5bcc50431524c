//! The rendered transactions against the real nft and kernel, in throwaway namespaces.
//! Needs root (skipped otherwise) and `nft`, `ip`.

use kproxy_modes::testing::fixtures;
use kproxy_testbed::netns;

use kproxy_dataplane::nft::{Exec, Family, NftClient};
use kproxy_modes::{
    Mode,
    model::{ChangeSet, DesiredState, IpFamily, ServicePortName},
    nftables::{NftablesMode, render},
};
use netns::Netns;

fn mode_in(ns: &Netns) -> NftablesMode<Exec> {
    NftablesMode::new(Exec::new().in_netns(ns.name()))
}

fn changed(names: &[&ServicePortName]) -> ChangeSet {
    ChangeSet {
        full: false,
        services: names.iter().map(|n| (*n).clone()).collect(),
    }
}

fn v4_port<'a>(d: &'a mut DesiredState, ns: &str) -> &'a mut kproxy_modes::model::ServicePort {
    let fam = d
        .families
        .iter_mut()
        .find(|f| f.family == IpFamily::V4)
        .unwrap();
    fam.services
        .values_mut()
        .find(|p| p.name.namespace == ns)
        .unwrap()
}

/// Every fixture: nft -c accepts the full transaction on an empty namespace, it applies, and
/// applying a second full sync over it (adoption of an existing table) works too.
#[test]
fn full_syncs_are_accepted_by_nft_and_adopt_an_existing_table() {
    for desired in [
        fixtures::cluster_ip_general(),
        fixtures::external_mix(),
        fixtures::dual_stack(),
    ] {
        let Some(ns) = Netns::scratch() else { return };
        let exec = Exec::new().in_netns(ns.name());
        let r = render(&desired, &ChangeSet::full(), None);
        exec.check(&r.tx)
            .unwrap_or_else(|e| panic!("nft -c: {e}\n{}", r.tx));
        exec.run(&r.tx).unwrap();
        let again = render(&desired, &ChangeSet::full(), Some(&r.applied));
        exec.run(&again.tx).unwrap();
        let listed = exec.list_table(Family::Ip, "kproxy").unwrap();
        assert!(listed.contains("map service-ips"), "{listed}");
    }
}

/// Full sync, then one Service's endpoints change: the partial transaction names only that
/// Service's objects and the shared sets, applies, and the kernel shows the new endpoint while
/// the other Services' elements are untouched.
#[test]
fn partial_sync_touches_only_the_changed_service() {
    let Some(ns) = Netns::scratch() else { return };
    let mut mode = mode_in(&ns);
    let mut desired = fixtures::external_mix();
    mode.sync(&desired, &ChangeSet::full()).unwrap();
    let before = mode.dump().unwrap();

    let svc1 = v4_port(&mut desired, "ns1");
    svc1.endpoints
        .cluster
        .push(fixtures::ep("10.180.7.7:80", false));
    let name = svc1.name.clone();
    let applied = mode
        .applied()
        .expect("applied after a successful sync")
        .clone();
    let r = render(&desired, &changed(&[&name]), Some(&applied));
    assert!(!r.full);
    let text = r.tx.to_string();
    for line in text.lines() {
        assert!(
            !line.contains("ns2/") && !line.contains("ns3/") && !line.contains("ns5/"),
            "touches another Service: {line}"
        );
    }
    assert!(
        text.contains("10.180.7.7 . 10.180.7.7"),
        "hairpin delta missing:\n{text}"
    );
    assert!(
        text.contains("mod 3 offset 0 map @endpoint-slots-tcp-0"),
        "{text}"
    );

    mode.sync(&desired, &changed(&[&name])).unwrap();
    let after = mode.dump().unwrap();
    assert!(after.contains("2 : 10.180.7.7 . 80"), "{after}");
    // nft lists offset 0 as no offset.
    assert!(
        after.contains("numgen random mod 3 map @endpoint-slots-tcp-0"),
        "{after}"
    );
    assert!(
        before.contains("65537 : 10.180.1.2 . 80") && after.contains("65537 : 10.180.1.2 . 80")
    );

    // Remove one Service and add another in one partial sync.
    let fam = desired
        .families
        .iter_mut()
        .find(|f| f.family == IpFamily::V4)
        .unwrap();
    let gone = fam
        .services
        .keys()
        .find(|n| n.namespace == "ns4")
        .unwrap()
        .clone();
    fam.services.remove(&gone);
    let new = fixtures::port(
        "ns9",
        "new",
        "http",
        kproxy_modes::model::Protocol::Tcp,
        "172.30.0.99",
        8080,
        vec![fixtures::ep("10.180.9.9:8080", false)],
    );
    let new_name = new.name.clone();
    fam.services.insert(new_name.clone(), new);
    mode.sync(&desired, &changed(&[&gone, &new_name])).unwrap();
    let after = mode.dump().unwrap();
    assert!(
        !after.contains("172.30.0.44"),
        "removed Service left behind:\n{after}"
    );
    assert!(
        // A ClusterIP-only port has no chain of its own: it dispatches to the shared pick-1.
        after.contains("172.30.0.99 . tcp . 8080 : goto pick-tcp-1"),
        "{after}"
    );
    assert!(
        after.contains("172.30.0.99 . 8080 . 0 : 10.180.9.9 . 8080"),
        "{after}"
    );
    assert!(!mode.needs_full_sync());
}

/// Someone deletes our table behind our back: the next partial sync fails, the mode drops its
/// cache so the one after is full, and that full sync restores everything.
#[test]
fn apply_failure_forces_a_full_sync() {
    let Some(ns) = Netns::scratch() else { return };
    let mut mode = mode_in(&ns);
    let mut desired = fixtures::external_mix();
    mode.sync(&desired, &ChangeSet::full()).unwrap();
    ns.exec(&["nft", "delete", "table", "ip", "kproxy"]);
    let svc1 = v4_port(&mut desired, "ns1");
    svc1.endpoints.cluster.pop();
    fixtures::paths(svc1);
    let name = svc1.name.clone();
    let err = mode.sync(&desired, &changed(&[&name])).unwrap_err();
    assert!(err.to_string().contains("nft failed"), "{err}");
    assert!(mode.needs_full_sync());
    let stats = mode.sync(&desired, &changed(&[&name])).unwrap();
    assert!(stats.full);
    assert!(
        mode.dump()
            .unwrap()
            .contains("172.30.0.41 . tcp . 80 : goto service-")
    );
}

/// cleanup removes our tables and only them: another table in the same family survives.
#[test]
fn cleanup_removes_only_our_tables() {
    let Some(ns) = Netns::scratch() else { return };
    ns.nft("table ip theirs {\n chain c {\n type filter hook input priority 0; policy accept;\n ip daddr 1.2.3.4 counter\n }\n}\n");
    let mut mode = mode_in(&ns);
    mode.sync(&fixtures::dual_stack(), &ChangeSet::full())
        .unwrap();
    assert!(
        ns.exec(&["nft", "list", "tables"])
            .contains("table ip6 kproxy")
    );
    mode.cleanup().unwrap();
    let tables = ns.exec(&["nft", "list", "tables"]);
    assert!(!tables.contains("kproxy"), "{tables}");
    assert!(tables.contains("table ip theirs"), "{tables}");
    // Cleanup of nothing is not an error.
    mode.cleanup().unwrap();
}

/// The table as comparable data: chain name to its rules, set or map name to its elements.
/// Empty maps and chains only they feed (`pick-N` of an empty `vip-slots-N`) are left out: a
/// partial sync keeps them until the next full sync, where they would not be recreated.
fn normalized(ns: &Netns, family: &str) -> std::collections::BTreeMap<String, Vec<String>> {
    let json: serde_json::Value =
        serde_json::from_str(&ns.exec(&["nft", "-j", "list", "table", family, "kproxy"])).unwrap();
    let mut out = std::collections::BTreeMap::new();
    let mut empty = std::collections::BTreeSet::new();
    for obj in json["nftables"].as_array().unwrap() {
        if let Some(rule) = obj.get("rule") {
            let chain = format!("chain {}", rule["chain"].as_str().unwrap());
            out.entry(chain)
                .or_insert_with(Vec::new)
                .push(rule["expr"].to_string());
        } else if let Some(chain) = obj.get("chain") {
            out.entry(format!("chain {}", chain["name"].as_str().unwrap()))
                .or_insert_with(Vec::new);
        } else if let Some(set) = obj.get("set").or_else(|| obj.get("map")) {
            let name = set["name"].as_str().unwrap().to_owned();
            let mut elems: Vec<String> = set["elem"]
                .as_array()
                .map(|a| a.iter().map(|e| e.to_string()).collect())
                .unwrap_or_default();
            elems.sort();
            if elems.is_empty() {
                empty.insert(name.clone());
            }
            out.insert(format!("set {name}"), elems);
        }
    }
    for name in empty {
        if name.starts_with("vip-slots-") || name.starts_with("endpoint-slots-") {
            out.remove(&format!("set {name}"));
            if let Some(n) = name.strip_prefix("vip-slots-") {
                out.remove(&format!("chain pick-{n}"));
            }
        }
    }
    out
}

/// A sequence of partial syncs (endpoint count changes, ClusterIP-only <-> NodePort, affinity
/// on and off, all endpoints gone, a port removed while another keeps its cluster IP, a new
/// port) leaves exactly the table a full sync of the final state builds.
#[test]
fn partial_syncs_converge_to_the_full_sync_table() {
    let Some(ns) = Netns::scratch() else { return };
    let mut mode = mode_in(&ns);
    let mut desired = fixtures::cluster_ip_general();
    mode.sync(&desired, &ChangeSet::full()).unwrap();
    let names: Vec<ServicePortName> = desired.families[0].services.keys().cloned().collect();
    type Step = Box<dyn Fn(&mut kproxy_modes::model::FamilyState)>;
    let steps: Vec<Step> = vec![
        Box::new(|f| {
            let p = f.services.values_mut().next().unwrap();
            p.endpoints
                .cluster
                .push(fixtures::ep("10.180.5.5:80", false));
        }),
        Box::new(|f| {
            let p = f.services.values_mut().nth(1).unwrap();
            p.node_port = Some(30080);
        }),
        Box::new(|f| {
            let p = f.services.values_mut().nth(1).unwrap();
            p.node_port = None;
            p.session_affinity = Some(kproxy_modes::model::SessionAffinity {
                timeout_seconds: 60,
            });
        }),
        Box::new(|f| {
            let p = f.services.values_mut().nth(1).unwrap();
            p.session_affinity = Some(kproxy_modes::model::SessionAffinity {
                timeout_seconds: 90,
            });
        }),
        Box::new(|f| {
            let p = f.services.values_mut().nth(2).unwrap();
            p.endpoints.cluster.clear();
            p.endpoints.has_any = false;
        }),
        Box::new(|f| {
            let k = f.services.keys().nth(3).unwrap().clone();
            f.services.remove(&k);
        }),
        Box::new(|f| {
            let p = fixtures::port(
                "ns7",
                "late",
                "",
                kproxy_modes::model::Protocol::Udp,
                "172.30.0.42",
                99,
                vec![fixtures::ep("10.180.0.1:99", true)],
            );
            f.services.insert(p.name.clone(), p);
        }),
    ];
    for step in steps {
        step(&mut desired.families[0]);
        fixtures::refresh(&mut desired);
        let mut all: std::collections::BTreeSet<ServicePortName> = names.iter().cloned().collect();
        all.extend(desired.families[0].services.keys().cloned());
        let stats = mode
            .sync(
                &desired,
                &ChangeSet {
                    full: false,
                    services: all,
                },
            )
            .unwrap();
        assert!(!stats.full);
    }
    let after_partials = normalized(&ns, "ip");
    let Some(fresh) = Netns::scratch() else {
        return;
    };
    let exec = Exec::new().in_netns(fresh.name());
    // Same slot ids as the mode's (they are kept across a full sync), so keys compare equal.
    let full = render(&desired, &ChangeSet::full(), mode.applied());
    exec.run(&full.tx).unwrap();
    let from_full = normalized(&fresh, "ip");
    for (k, v) in &from_full {
        assert_eq!(after_partials.get(k), Some(v), "{k} differs");
    }
    assert_eq!(
        after_partials.len(),
        from_full.len(),
        "extra objects after partial syncs: {:?}",
        after_partials
            .keys()
            .filter(|k| !from_full.contains_key(*k))
            .collect::<Vec<_>>()
    );
}
