//! The iptables mode repairs flushed tables, with real packets, on both iptables backends: with
//! a pod's connections to a cluster IP answering, someone runs `iptables -t nat -F`, then `-F`
//! and `-X`, then replaces the whole nat table as a firewall reload does, then flushes and
//! deletes the filter table's chains. Each time the connections stop reaching the endpoint, or
//! a Service without endpoints stops rejecting them (they go to the bed's sink), kproxy finds the drift
//! at its next periodic check (logged with what is gone, counted as
//! `kproxy_drift_detected_total{kind}`) and a full sync brings the Service back within about
//! one syncPeriod.
//!
//! kproxy is paused (SIGSTOP) while the table is flushed and the breakage is observed, so that
//! no periodic check can repair it in between; it goes on (SIGCONT) before the wait.
//!
//! Needs root (network namespaces, iptables); skipped with a message otherwise.

#[path = "support/iptables_bed.rs"]
mod ipt;

use std::time::Duration;

use ipt::{CLIENT, EP1, IptBed, NODE, answered_by, endpoints, service, to};
use kproxy_testbed::{Outcome, Where, server::Proto};
use serde_json::json;
use tokio::time::Instant;

/// How someone else flushes our rules, the drift kind kproxy must report for it, and the
/// Service whose traffic shows it.
struct Flush {
    what: &'static str,
    kind: &'static str,
    /// What kproxy's log line says is gone.
    says: &'static str,
    run: fn(&IptBed),
    vip: &'static str,
    /// What the Service's connections see while our rules are there.
    intact: fn(&Outcome) -> bool,
}

/// The Service with an endpoint: connections reach it (only through our nat rules).
const WEB: &str = "10.96.0.10";
/// The Service without endpoints: connections are rejected (only by our filter rules).
const EMPTY: &str = "10.96.0.30";

fn reaches_ep1(o: &Outcome) -> bool {
    answered_by(o) == Some("10.244.1.10:8080")
}

fn rejected(o: &Outcome) -> bool {
    matches!(o, Outcome::Refused { .. })
}

const FLUSHES: [Flush; 5] = [
    Flush {
        what: "iptables -t nat -F",
        kind: "rule",
        says: "jump missing",
        run: |b| drop(b.ipt_ok(&["-t", "nat", "-F"])),
        vip: WEB,
        intact: reaches_ep1,
    },
    Flush {
        what: "iptables -t nat -F; iptables -t nat -X",
        kind: "chain",
        says: "nat chain KPROXY-CANARY is gone",
        run: |b| {
            b.ipt_ok(&["-t", "nat", "-F"]);
            b.ipt_ok(&["-t", "nat", "-X"]);
        },
        vip: WEB,
        intact: reaches_ep1,
    },
    Flush {
        // What a firewall's reload through iptables-restore (without --noflush) does.
        what: "the whole nat table replaced",
        kind: "chain",
        says: "nat chain KPROXY-CANARY is gone",
        run: |b| b.restore("*nat\n:PREROUTING ACCEPT [0:0]\nCOMMIT\n", false),
        vip: WEB,
        intact: reaches_ep1,
    },
    Flush {
        what: "iptables -F; iptables -X (the filter table)",
        kind: "chain",
        says: "filter chain KPROXY-CANARY is gone",
        run: |b| {
            b.ipt_ok(&["-F"]);
            b.ipt_ok(&["-X"]);
        },
        vip: EMPTY,
        intact: rejected,
    },
    Flush {
        // A firewall that clears everything: `nft flush ruleset` deletes the nft backend's
        // tables themselves; the legacy backend's equivalent is a restore of empty tables.
        what: "every table cleared (nft: nft flush ruleset)",
        kind: "chain",
        says: "KPROXY-CANARY is gone",
        run: |b| match b.backend {
            "nft" => drop(b.bed.node.exec(&["nft", "flush", "ruleset"])),
            _ => b.restore("*nat\nCOMMIT\n*filter\nCOMMIT\n", false),
        },
        vip: WEB,
        intact: reaches_ep1,
    },
];

fn signal(b: &IptBed, sig: &str) {
    let pid = b.pid().to_string();
    let out = std::process::Command::new("kill")
        .args([sig, &pid])
        .output()
        .unwrap();
    assert!(out.status.success(), "kill {sig} {pid}");
}

fn drifts(b: &IptBed, kind: &str) -> f64 {
    b.metric(&format!("kproxy_drift_detected_total{{kind=\"{kind}\"}}"))
}

async fn repaired_after(b: &IptBed, f: &Flush) {
    let vip = to(f.vip, 80);
    let before = drifts(b, f.kind);
    let from = b.lines().len();
    signal(b, "-STOP");
    (f.run)(b);
    let seen = b.probe(CLIENT, vip).await;
    if answered_by(&seen) != Some("sink") {
        b.fail(&format!("after {}: still {seen}", f.what));
    }
    signal(b, "-CONT");
    let started = Instant::now();
    // One syncPeriod to the next check, plus room for a loaded machine.
    let within = b.sync_period + Duration::from_secs(3);
    let what = format!("{} repaired and counted as {}", f.what, f.kind);
    b.wait_for(&what, within, async || {
        drifts(b, f.kind) > before && (f.intact)(&b.probe(CLIENT, vip).await)
    })
    .await;
    eprintln!(
        "[{} backend] {}: repaired within {:?}",
        b.backend,
        f.what,
        started.elapsed()
    );
    b.wait_for_line(from, &["drifted", f.says], Duration::from_secs(1))
        .await;
}

async fn drift_is_repaired(backend: &'static str) {
    let Some(mut b) = IptBed::new(backend).await else {
        return;
    };
    b.bed
        .serve(Where::Sink, Proto::Tcp, to("0.0.0.0", 80), Some("sink"))
        .await
        .unwrap();
    b.write(&[
        service("web", WEB, json!({})),
        endpoints("web", &[(EP1, NODE)]),
        service("empty", EMPTY, json!({})),
    ]);
    b.start().await;
    for (vip, intact) in [
        (WEB, reaches_ep1 as fn(&Outcome) -> bool),
        (EMPTY, rejected),
    ] {
        let seen = b.probe(CLIENT, to(vip, 80)).await;
        assert!(intact(&seen), "{vip}: {seen}");
    }
    for f in &FLUSHES {
        repaired_after(&b, f).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flushed_tables_are_repaired_nft_backend() {
    drift_is_repaired("nft").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flushed_tables_are_repaired_legacy_backend() {
    drift_is_repaired("legacy").await;
}
