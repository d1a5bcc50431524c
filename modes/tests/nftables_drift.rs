//! Drift of the nftables mode against the real kernel, in throwaway namespaces: each kind of
//! change made behind kproxy's back is named by `check_drift` with its kind, the next sync is
//! full and puts the rules back (traffic flows again); kproxy's own syncs and other programs'
//! tables are not drift. Needs root (skipped otherwise), `ip`, `nft` and `socat`.

mod nftables;
use kproxy_modes::testing::fixtures;
use kproxy_testbed::netns;
use nftables::wire;

use std::{
    sync::{Arc, mpsc},
    time::Duration,
};

use fixtures::{ep, port, state};
use kproxy_dataplane::nft::Exec;
use kproxy_modes::{
    Mode,
    model::{ChangeSet, DesiredState, IpFamily, Protocol},
    nftables::NftablesMode,
};
use netns::Netns;
use wire::{Servers, connect, link, serve};

/// The real constructor (it records its `nft` pids), watching, with a channel for findings.
fn watched(ns: &Netns) -> (NftablesMode<Exec>, mpsc::Receiver<()>) {
    let mut mode = NftablesMode::with_exec(Exec::new().in_netns(ns.name()));
    let (tx, rx) = mpsc::channel();
    mode.start_watch(Arc::new(move || {
        let _ = tx.send(());
    }))
    .unwrap();
    (mode, rx)
}

/// Waits (deadline) until the monitor reported something, then asks the mode.
fn drift_after_notice(mode: &mut NftablesMode<Exec>, rx: &mpsc::Receiver<()>) -> Vec<String> {
    rx.recv_timeout(Duration::from_secs(10))
        .expect("a change notice within 10 s");
    let found = mode.check_drift().unwrap();
    while rx.try_recv().is_ok() {}
    found.iter().map(|d| d.kind.to_owned()).collect()
}

fn nft(ns: &Netns, args: &[&str]) -> String {
    let mut all = vec!["nft"];
    all.extend_from_slice(args);
    ns.exec(&all)
}

/// The handle of the rule of `chain` that contains `text`.
fn rule_handle(ns: &Netns, chain: &str, text: &str) -> String {
    let listed = nft(ns, &["-a", "list", "chain", "ip", "kproxy", chain]);
    let line = listed.lines().find(|l| l.contains(text)).expect(text);
    line.rsplit("handle ").next().unwrap().trim().to_owned()
}

/// After drift: the mode distrusts its cache, the next sync (whatever its change set) is full
/// and restores the table, and nothing is left to report.
fn repaired(mode: &mut NftablesMode<Exec>, desired: &DesiredState, want: &str) {
    assert!(mode.needs_full_sync());
    let stats = mode.sync(desired, &ChangeSet::default()).unwrap();
    assert!(stats.full);
    assert!(mode.dump().unwrap().contains(want));
    assert_eq!(mode.check_drift().unwrap(), []);
}

#[test]
fn each_kind_of_drift_is_named_and_repaired_by_a_full_sync() {
    let Some(ns) = Netns::scratch() else { return };
    let (mut mode, rx) = watched(&ns);
    let desired = fixtures::external_mix();
    mode.sync(&desired, &ChangeSet::full()).unwrap();
    assert_eq!(mode.check_drift().unwrap(), []);
    let elem = "172.30.0.41 . tcp . 80 : goto";

    nft(&ns, &["flush", "table", "ip", "kproxy"]);
    let kinds = drift_after_notice(&mut mode, &rx);
    // The notification names the deleted rules; the rule count finds the table empty.
    assert_eq!(kinds, ["rule", "table"]);
    repaired(&mut mode, &desired, "jump services");

    nft(&ns, &["delete", "table", "ip", "kproxy"]);
    let kinds = drift_after_notice(&mut mode, &rx);
    assert_eq!(kinds, ["table", "table"]);
    repaired(&mut mode, &desired, elem);

    let del = "{ 172.30.0.41 . tcp . 80 }";
    nft(
        &ns,
        &["delete", "element", "ip", "kproxy", "service-ips", del],
    );
    assert_eq!(drift_after_notice(&mut mode, &rx), ["map element"]);
    repaired(&mut mode, &desired, elem);

    let handle = rule_handle(&ns, "nat-prerouting", "jump services");
    nft(
        &ns,
        &[
            "delete",
            "rule",
            "ip",
            "kproxy",
            "nat-prerouting",
            "handle",
            &handle,
        ],
    );
    // Seen twice: as it happened, and by the count of nat-prerouting's rules.
    assert_eq!(drift_after_notice(&mut mode, &rx), ["rule", "rule"]);
    repaired(&mut mode, &desired, "jump services");
}

/// The periodic count alone (no monitor: as when notifications were missed) finds a base
/// chain's missing rule and a missing table.
#[test]
fn the_rule_count_alone_finds_missing_rules_and_tables() {
    let Some(ns) = Netns::scratch() else { return };
    let mut mode = NftablesMode::with_exec(Exec::new().in_netns(ns.name()));
    let desired = fixtures::dual_stack();
    mode.sync(&desired, &ChangeSet::full()).unwrap();
    assert_eq!(mode.check_drift().unwrap(), []);
    let handle = rule_handle(&ns, "nat-output", "jump services");
    nft(
        &ns,
        &[
            "delete",
            "rule",
            "ip",
            "kproxy",
            "nat-output",
            "handle",
            &handle,
        ],
    );
    let found = mode.check_drift().unwrap();
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0].kind, "rule");
    assert!(
        found[0].what.contains("nat-output holds 0 rules"),
        "{found:?}"
    );
    repaired(&mut mode, &desired, "jump services");

    nft(&ns, &["delete", "table", "ip6", "kproxy"]);
    let found = mode.check_drift().unwrap();
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0].what, "table ip6 kproxy is gone or empty");
    repaired(&mut mode, &desired, "table ip6 kproxy");
}

/// Partial and full syncs of our own, and another program's table, are not drift. A foreign
/// change to our table made after them is the marker: once it is reported, everything before
/// it was seen too, and it must be the only finding.
#[test]
fn own_syncs_and_other_tables_are_not_drift() {
    let Some(ns) = Netns::scratch() else { return };
    let (mut mode, rx) = watched(&ns);
    let mut desired = fixtures::external_mix();
    mode.sync(&desired, &ChangeSet::full()).unwrap();
    for i in 0..4u8 {
        let fam = &mut desired.families[0];
        let sp = fam.services.values_mut().next().unwrap();
        sp.endpoints
            .cluster
            .push(ep(&format!("10.180.9.{i}:80"), false));
        let changes = ChangeSet {
            full: i == 2,
            services: [sp.name.clone()].into(),
        };
        let stats = mode.sync(&desired, &changes).unwrap();
        assert_eq!(stats.full, i == 2);
    }
    nft(&ns, &["add", "table", "ip", "other"]);
    nft(&ns, &["add", "chain", "ip", "other", "c"]);
    nft(&ns, &["add", "table", "inet", "kproxy"]);
    nft(
        &ns,
        &[
            "add",
            "element",
            "ip",
            "kproxy",
            "cluster-ips",
            "{ 10.9.9.9 }",
        ],
    );
    let found = drift_after_notice(&mut mode, &rx);
    assert_eq!(found, ["set element"]);
    assert!(rx.try_recv().is_err());
}

/// Real traffic: a Service answers, stops answering when our table is deleted, and answers
/// again after the drift check and the repairing sync.
#[test]
fn a_service_answers_again_after_the_repair() {
    let Some(node) = Netns::scratch() else { return };
    let (pod, e1) = (Netns::scratch().unwrap(), Netns::scratch().unwrap());
    link(&node, &pod, "c", "10.0.0.2/24", &["10.0.0.1/24"]);
    link(&node, &e1, "e1", "10.180.0.1/24", &["10.180.0.254/24"]);
    node.exec(&["sysctl", "-q", "-w", "net.ipv4.ip_forward=1"]);
    let _servers = Servers(vec![serve(&e1, "10.180.0.1")]);
    assert!(
        (0..2000).any(|_| connect(&e1, "10.180.0.1", 80).is_ok()),
        "the server never listened"
    );
    let single = port(
        "ns1",
        "single",
        "http",
        Protocol::Tcp,
        "172.30.0.41",
        80,
        vec![ep("10.180.0.1:80", true)],
    );
    let desired = state(vec![(IpFamily::V4, vec![single])]);
    let (mut mode, rx) = watched(&node);
    mode.sync(&desired, &ChangeSet::full()).unwrap();
    connect(&pod, "172.30.0.41", 80).expect("the Service answers");

    nft(&node, &["delete", "table", "ip", "kproxy"]);
    assert!(connect(&pod, "172.30.0.41", 80).is_err());
    assert!(drift_after_notice(&mut mode, &rx).contains(&"table".to_owned()));
    assert!(mode.sync(&desired, &ChangeSet::default()).unwrap().full);
    connect(&pod, "172.30.0.41", 80).expect("the Service answers again");
}
