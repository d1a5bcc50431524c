//! userspace mode: the capture table deleted or a chain flushed behind the mode's back is found
//! by the cheap drift check (rule counts over netlink), and the next sync, full, writes it
//! again; the mode's own syncs are never drift. Needs root (skipped otherwise).

use std::{process::Command, sync::Arc};

use kproxy_modes::{
    ModeContext,
    model::ChangeSet,
    registry::{self, ModeSettings},
    testing::fixtures,
};
use kproxy_testbed::netns::Netns;

fn nft(ns: &Netns, args: &[&str]) {
    let out = Command::new("ip")
        .args(["netns", "exec", ns.name(), "nft"])
        .args(args)
        .output()
        .expect("nft runs");
    assert!(out.status.success(), "nft {args:?}: {out:?}");
}

#[test]
fn a_deleted_table_or_flushed_chain_is_drift_and_the_next_sync_repairs_it() {
    let Some(ns) = Netns::scratch() else { return };
    let rt = tokio::runtime::Runtime::new().expect("a runtime");
    let settings = ModeSettings {
        netns: Some(ns.name().to_owned()),
        ..ModeSettings::default()
    };
    let mut mode = registry::build("userspace", &settings).expect("built");
    let ctx = ModeContext {
        runtime: rt.handle().clone(),
        drift: Arc::new(tokio::sync::Notify::new()),
    };
    mode.start(&ctx).expect("start");
    let desired = fixtures::cluster_ip_general();
    mode.sync(&desired, &ChangeSet::full()).expect("sync");
    assert_eq!(mode.check_drift().unwrap(), vec![], "our own sync");

    for damage in [
        &["flush", "chain", "ip", "kproxy-userspace", "capture"][..],
        &["delete", "table", "ip", "kproxy-userspace"][..],
    ] {
        nft(&ns, damage);
        let found = mode.check_drift().unwrap();
        assert!(!found.is_empty(), "{damage:?} not found");
        assert!(found.iter().all(|d| d.kind == "rule"), "{found:?}");
        let stats = mode.sync(&desired, &ChangeSet::default()).expect("repair");
        assert!(stats.full, "{damage:?}: the repairing sync is full");
        assert_eq!(mode.check_drift().unwrap(), vec![], "{damage:?}: repaired");
    }
    mode.shutdown();
}
