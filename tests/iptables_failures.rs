//! A failed iptables-restore, with real packets, leaves the previous rules in force; the
//! failure is logged with the tool's message and the failing input line, counted on /metrics,
//! and the next sync is a full one that succeeds once the cause is gone.
//!
//! - The xtables lock held by another writer beyond kproxy's bounded wait (legacy backend: the
//!   nft backend takes no lock). kproxy's tools get a lock file of this test's own
//!   (`XTABLES_LOCKFILE`, which iptables honours), so no other iptables user on the machine
//!   waits for it.
//! - A chain kproxy must delete (its Service was deleted) that someone else's rule jumps to:
//!   the kernel refuses the deletion (both backends).
//!
//! Needs root (network namespaces, iptables); skipped with a message otherwise.

#[path = "support/iptables_bed.rs"]
mod ipt;

use std::time::Duration;

use ipt::{CLIENT, EP1, EP2, IptBed, NODE, answered_by, endpoints, service, to};
use serde_json::{Value, json};

const WEB: &str = "10.96.0.10";
const OLD: &str = "10.96.0.11";
const NEW: &str = "10.96.0.12";
const WITHIN: Duration = Duration::from_secs(20);

fn objects(names: &[(&str, &str, &str)]) -> Vec<Value> {
    let mut v = Vec::new();
    for (name, vip, ep) in names {
        v.push(service(name, vip, json!({})));
        v.push(endpoints(name, &[(ep, NODE)]));
    }
    v
}

/// Who answers `vip`:80 for the client pod (`None`: no endpoint of ours did).
async fn who(b: &IptBed, vip: &str) -> Option<String> {
    answered_by(&b.probe(CLIENT, to(vip, 80)).await)
        .filter(|by| by.ends_with(":8080"))
        .map(str::to_owned)
}

async fn assert_answers(b: &IptBed, expected: &[(&str, Option<&str>)]) {
    for (vip, ep) in expected {
        let got = who(b, vip).await;
        if got.as_deref() != ep.map(|e| format!("{e}:8080")).as_deref() {
            b.fail(&format!("{vip}: answered by {got:?}, expected {ep:?}"));
        }
    }
}

fn failures(b: &IptBed) -> (f64, f64) {
    (
        b.metric("kubeproxy_sync_proxy_rules_iptables_partial_restore_failures_total"),
        b.metric("kproxy_mode_events_total{counter=\"iptables_restore_failures\"}"),
    )
}

/// The port group (`KPROXY-SP<key>`) of the Service whose cluster IP is `vip`.
fn group_of(b: &IptBed, vip: &str) -> String {
    let rules = b.ipt_ok(&["-t", "nat", "-S", "KPROXY-SERVICES"]);
    (rules.lines())
        .find(|l| l.contains(&format!("-d {vip}/32")))
        .and_then(|l| l.split("-j KPROXY-SP").nth(1))
        .map(|c| format!("KPROXY-SP{}", &c[..10]))
        .unwrap_or_else(|| b.fail(&format!("no dispatch rule for {vip}")))
}

fn has_group(b: &IptBed, group: &str) -> bool {
    b.chains("nat").iter().any(|c| c.starts_with(group))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_held_xtables_lock_leaves_the_previous_rules_in_force() {
    let Some(mut b) = IptBed::new("legacy").await else {
        return;
    };
    let lock_file = b.path("xtables.lock");
    let lock = std::fs::File::create(&lock_file).unwrap();
    b.env.push((
        "XTABLES_LOCKFILE".into(),
        lock_file.to_string_lossy().into(),
    ));
    // No periodic drift check (which would wait for the lock too) during the test.
    b.sync_period = Duration::from_secs(60);
    b.write(&objects(&[("web", WEB, EP1), ("old", OLD, EP2)]));
    b.start().await;
    assert_answers(&b, &[(WEB, Some(EP1)), (OLD, Some(EP2)), (NEW, None)]).await;

    lock.lock().unwrap();
    let from = b.lines().len();
    b.write(&objects(&[("web", WEB, EP1), ("new", NEW, EP2)]));
    b.wait_for_line(
        from,
        &["sync failed", "holding the xtables lock", "full=false"],
        WITHIN,
    )
    .await;
    // Nothing of the change was applied: the deleted Service still answers, the new one not.
    assert_answers(&b, &[(WEB, Some(EP1)), (OLD, Some(EP2)), (NEW, None)]).await;
    let (partial, all) = failures(&b);
    assert!(
        partial >= 1.0 && all >= 1.0,
        "failures counted: {partial} {all}"
    );

    let from = b.lines().len();
    lock.unlock().unwrap();
    b.wait_for_line(from, &["synced", "full=true"], WITHIN)
        .await;
    assert_answers(&b, &[(WEB, Some(EP1)), (OLD, None), (NEW, Some(EP2))]).await;
    assert_no_quarantine(&b);
}

/// A held lock or a foreign reference is no Service's fault: none may be left out for it.
fn assert_no_quarantine(b: &IptBed) {
    if b.output().contains("left out until it changes") {
        b.fail("a Service was quarantined for a failure not its own");
    }
    let n = b.metric("kproxy_mode_events_total{counter=\"iptables_quarantined_ports\"}");
    assert_eq!(n, 0.0, "quarantined ports");
}

async fn a_foreign_reference_blocks_a_deletion(backend: &'static str) {
    let Some(mut b) = IptBed::new(backend).await else {
        return;
    };
    b.write(&objects(&[("web", WEB, EP1), ("old", OLD, EP2)]));
    b.start().await;
    let old = group_of(&b, OLD);
    let target = format!("{old}SVC");
    b.ipt_ok(&["-t", "nat", "-N", "FOREIGN-REF"]);
    b.ipt_ok(&["-t", "nat", "-A", "FOREIGN-REF", "-j", &target]);

    let from = b.lines().len();
    b.write(&objects(&[("web", WEB, EP1)]));
    // The tool's message, and the input line it refused.
    let line = b
        .wait_for_line(from, &["sync failed", "failed"], WITHIN)
        .await;
    if !line.contains(&format!("refused input line: -X {target}")) {
        b.fail(&format!(
            "the failure does not name the refused line: {line}"
        ));
    }
    let (partial, all) = failures(&b);
    assert!(
        partial >= 1.0 && all >= 1.0,
        "failures counted: {partial} {all}"
    );
    // The refused deletion left the chain; the other Service is untouched.
    assert!(has_group(&b, &old), "{old} chains gone despite the failure");
    assert_answers(&b, &[(WEB, Some(EP1)), (OLD, None)]).await;

    let from = b.lines().len();
    b.ipt_ok(&["-t", "nat", "-F", "FOREIGN-REF"]);
    b.ipt_ok(&["-t", "nat", "-X", "FOREIGN-REF"]);
    b.wait_for_line(from, &["synced", "full=true"], WITHIN)
        .await;
    assert!(
        !has_group(&b, &old),
        "{old} chains left after the full sync"
    );
    assert_answers(&b, &[(WEB, Some(EP1)), (OLD, None)]).await;
    assert_no_quarantine(&b);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_foreign_reference_blocks_a_deletion_nft_backend() {
    a_foreign_reference_blocks_a_deletion("nft").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_foreign_reference_blocks_a_deletion_legacy_backend() {
    a_foreign_reference_blocks_a_deletion("legacy").await;
}
