//! Partial syncs under load: endpoints are added and removed while a client keeps opening
//! connections to the cluster IP, and not one connection to a ready endpoint fails. Every
//! endpoint keeps serving throughout, so any failure is a gap in the rule transition.
//! Needs root (skipped otherwise), `ip`, `nft` and `socat`.
//!
//! IP plan: pod C 10.0.0.2 <-> node 10.0.0.1; endpoints E1..E3 10.180.{0,1,2}.1 <-> node .254.

mod nftables;
use kproxy_modes::testing::fixtures;
use kproxy_testbed::netns;
use nftables::wire;

use std::{
    collections::BTreeSet,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
};

use fixtures::{ep, port, state};
use kproxy_dataplane::nft::Exec;
use kproxy_modes::{
    Mode,
    model::{ChangeSet, IpFamily, Protocol},
    nftables::NftablesMode,
};
use netns::Netns;
use wire::*;

const VIP: &str = "172.30.0.60";

#[test]
fn connections_never_fail_while_endpoints_are_added_and_removed() {
    let Some(node) = Netns::scratch() else { return };
    let pod = Arc::new(Netns::scratch().unwrap());
    link(&node, &pod, "c", "10.0.0.2/24", &["10.0.0.1/24"]);
    let eps: Vec<(Netns, String)> = (0..3)
        .map(|i| {
            let ns = Netns::scratch().unwrap();
            link(
                &node,
                &ns,
                &format!("e{i}"),
                &format!("10.180.{i}.1/24"),
                &[&format!("10.180.{i}.254/24")],
            );
            (ns, format!("10.180.{i}.1"))
        })
        .collect();
    node.exec(&["sysctl", "-q", "-w", "net.ipv4.ip_forward=1"]);
    let _servers = Servers(eps.iter().map(|(ns, a)| serve(ns, a)).collect());
    for (ns, a) in &eps {
        assert!(
            (0..2000).any(|_| connect(ns, a, 80).is_ok()),
            "{a} never listened"
        );
    }

    let mut mode = NftablesMode::with_exec(Exec::new().in_netns(node.name()));
    let with = |ips: &[usize]| {
        let list = ips
            .iter()
            .map(|i| ep(&format!("10.180.{i}.1:80"), false))
            .collect();
        state(vec![(
            IpFamily::V4,
            vec![port("ns1", "churn", "http", Protocol::Tcp, VIP, 80, list)],
        )])
    };
    let mut desired = with(&[0]);
    mode.sync(&desired, &ChangeSet::full()).unwrap();
    let name = desired.families[0].services.keys().next().unwrap().clone();

    // The client: sequential new connections until told to stop; every outcome is recorded.
    let stop = Arc::new(AtomicBool::new(false));
    let client = {
        let (stop, pod) = (stop.clone(), pod.clone());
        std::thread::spawn(move || {
            let mut outcomes = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                outcomes.push(connect(&pod, VIP, 80));
            }
            outcomes
        })
    };
    // Each step is a partial sync; the client keeps connecting across it. Between steps, wait
    // until the new set is what answers (bounded), so every transition happens under traffic.
    let steps: [&[usize]; 5] = [&[0, 1], &[0, 1, 2], &[1, 2], &[2], &[0, 2]];
    for ips in steps {
        desired = with(ips);
        let changes = ChangeSet {
            full: false,
            services: [name.clone()].into(),
        };
        let stats = mode.sync(&desired, &changes).unwrap();
        assert!(!stats.full, "a partial sync");
        let want: BTreeSet<String> = ips.iter().map(|i| format!("10.180.{i}.1")).collect();
        let seen = reach_all(
            &pod,
            VIP,
            80,
            &want.iter().map(String::as_str).collect::<Vec<_>>(),
        );
        assert_eq!(
            seen,
            BTreeSet::from(["10.0.0.2".to_owned()]),
            "the client address is kept"
        );
    }
    stop.store(true, Ordering::Relaxed);
    let outcomes = client.join().unwrap();
    let failures: Vec<&String> = outcomes.iter().filter_map(|o| o.as_ref().err()).collect();
    assert!(
        outcomes.len() >= 5,
        "the client kept connecting ({} connections)",
        outcomes.len()
    );
    assert!(
        failures.is_empty(),
        "{} of {} connections failed: {failures:?}",
        failures.len(),
        outcomes.len()
    );
    let answered: BTreeSet<&str> = outcomes
        .iter()
        .filter_map(|o| o.as_ref().ok())
        .filter_map(|s| s.split(' ').next())
        .collect();
    assert_eq!(
        answered.len(),
        3,
        "every endpoint answered at some point: {answered:?}"
    );
}
