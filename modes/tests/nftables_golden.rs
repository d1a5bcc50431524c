//! Golden tests of the rendered nftables transaction text. Regenerate with
//! `KPROXY_UPDATE_GOLDEN=1 cargo test -p kproxy-modes --test nftables_golden`.

use kproxy_modes::testing::fixtures;

use std::path::PathBuf;

use kproxy_modes::{model::ChangeSet, nftables::render};

fn golden(name: &str, text: &str) {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden/nftables")
        .join(format!("{name}.nft"));
    kproxy_modes::testing::assert_golden(&path, text);
}

#[test]
fn full_sync_of_cluster_ips_matches_golden() {
    let r = render(&fixtures::cluster_ip_general(), &ChangeSet::full(), None);
    assert!(r.full);
    golden("cluster-ip-general", &r.tx.to_string());
}

#[test]
fn full_sync_of_external_policies_matches_golden() {
    let r = render(&fixtures::external_mix(), &ChangeSet::full(), None);
    golden("external-mix", &r.tx.to_string());
}

#[test]
fn full_sync_of_dual_stack_matches_golden() {
    let r = render(&fixtures::dual_stack(), &ChangeSet::full(), None);
    golden("dual-stack", &r.tx.to_string());
}
