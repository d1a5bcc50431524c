//! `--iptables-backend auto` on a real node: kproxy writes to the backend the node already uses
//! and keeps to it across restarts, on both backends.
//!
//! - Start: the kubelet's hint chain (`KUBE-IPTABLES-HINT` in mangle, what upstream's image
//!   looks for first) is in one backend only: kproxy's chains go there, and none to the other;
//!   a pod's connection to a cluster IP is answered through them.
//! - Restart: with the hint gone and the other backend now holding more rules (the fallback
//!   heuristic would pick it), kproxy's own canary chain keeps it on the backend it wrote.
//!
//! Needs root (network namespaces, iptables); skipped with a message otherwise.

#[path = "support/iptables_bed.rs"]
mod ipt;

use ipt::{CLIENT, EP1, IptBed, NODE, answered_by, endpoints, service, to};
use serde_json::json;

fn has_canary(b: &IptBed, backend: &str) -> bool {
    let out = b.ipt_of(backend, &["-t", "nat", "-S", "KPROXY-CANARY"]);
    out.status.success()
}

async fn assert_on(b: &IptBed, other: &str) {
    let (backend, lines) = (b.backend, b.lines());
    let said = format!("using this iptables backend backend={backend}");
    if !lines.iter().any(|l| l.contains(&said)) {
        b.fail(&format!("kproxy did not say {said:?}"));
    }
    assert!(has_canary(b, backend), "no chains of ours in {backend}");
    assert!(!has_canary(b, other), "chains of ours in {other} too");
    let seen = b.probe(CLIENT, to("10.96.0.10", 80)).await;
    if answered_by(&seen) != Some("10.244.1.10:8080") {
        b.fail(&format!("cluster IP on {backend}: {seen}"));
    }
}

async fn auto_follows_the_node(backend: &'static str, other: &'static str) {
    let Some(mut b) = IptBed::new(backend).await else {
        return;
    };
    b.backend_flag = Some("auto");
    b.write(&[
        service("web", "10.96.0.10", json!({})),
        endpoints("web", &[(EP1, NODE)]),
    ]);
    b.ipt_ok(&["-t", "mangle", "-N", "KUBE-IPTABLES-HINT"]);
    b.start().await;
    assert_on(&b, other).await;

    b.stop().await;
    b.ipt_ok(&["-t", "mangle", "-X", "KUBE-IPTABLES-HINT"]);
    // More rules in the other backend than kproxy's in this one.
    let rules: String = (1..=200)
        .map(|i| format!("-A INPUT -s 10.9.0.{i} -j ACCEPT\n"))
        .collect();
    b.restore_of(other, &format!("*filter\n{rules}COMMIT\n"), true);
    b.start().await;
    assert_on(&b, other).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_picks_and_keeps_the_nft_backend() {
    auto_follows_the_node("nft", "legacy").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_picks_and_keeps_the_legacy_backend() {
    auto_follows_the_node("legacy", "nft").await;
}
