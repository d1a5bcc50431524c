//! The real agent repairs drift of its nftables table: after `nft delete table ip kproxy` (and
//! then a single deleted map element) the table comes back by itself, and the drift is counted
//! on /metrics by kind. Needs root (network namespaces, nftables) and curl.

mod support;

use std::time::Duration;

use support::netns::{Agent, Netns, agent_config};

const BIN: &str = env!("CARGO_BIN_EXE_kproxy");
const EXAMPLES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/examples");

fn config(dir: &std::path::Path) -> String {
    agent_config(dir, "nftables:\n  syncPeriod: 2s\n  minSyncPeriod: 0s\n")
}

fn drift_count(ns: &Netns, kind: &str) -> u64 {
    let out = ns.run(&["curl", "-sf", "http://127.0.0.1:10249/metrics"]);
    let body = String::from_utf8_lossy(&out.stdout);
    let key = format!("kproxy_drift_detected_total{{kind=\"{kind}\"}} ");
    (body.lines())
        .find_map(|l| l.strip_prefix(&key))
        .map_or(0, |v| v.trim().parse().unwrap())
}

/// Polls until the drift is counted and `done` holds; the deadline is a few syncPeriods, so a
/// loaded machine does not fail it while a repair that never comes still does.
// Real time: the agent is another process, and this test has no runtime to pause.
#[allow(clippy::disallowed_types)]
fn wait_for(ns: &Netns, kind: &str, at_least: u64, done: impl Fn() -> bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(6);
    while std::time::Instant::now() < deadline {
        if drift_count(ns, kind) >= at_least && done() {
            return;
        }
    }
    panic!(
        "no repair within 6 s: drift {kind} = {}",
        drift_count(ns, kind)
    );
}

#[test]
fn the_agent_repairs_a_deleted_table_and_a_deleted_element() {
    let ns = Netns::new("nd");
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path());
    let _agent = Agent::start(
        &ns,
        &[
            BIN,
            "--config",
            &cfg,
            "--manifests",
            EXAMPLES,
            "--hostname-override",
            "node-a",
        ],
    );
    let listed = |args: &[&str]| {
        let mut all = vec!["nft", "list"];
        all.extend_from_slice(args);
        let out = ns.run(&all);
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
    };
    let elem = "10.96.0.20 . tcp . 80";
    assert!(listed(&["table", "ip", "kproxy"]).is_some_and(|t| t.contains(elem)));
    assert_eq!(drift_count(&ns, "table"), 0);

    assert!(
        ns.run(&["nft", "delete", "table", "ip", "kproxy"])
            .status
            .success()
    );
    wait_for(&ns, "table", 1, || {
        listed(&["table", "ip", "kproxy"]).is_some_and(|t| t.contains(elem))
    });

    let del = format!("{{ {elem} }}");
    let out = ns.run(&[
        "nft",
        "delete",
        "element",
        "ip",
        "kproxy",
        "service-ips",
        &del,
    ]);
    assert!(out.status.success());
    wait_for(&ns, "map element", 1, || {
        listed(&["map", "ip", "kproxy", "service-ips"]).is_some_and(|t| t.contains(elem))
    });
}
