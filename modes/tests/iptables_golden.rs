//! Golden tests of the rendered `iptables-restore --noflush` input, per fixture and family, for
//! a full sync against empty tables (so every jump is inserted). Regenerate with
//! `KPROXY_UPDATE_GOLDEN=1 cargo test -p kproxy-modes --test iptables_golden`.

use std::path::PathBuf;

use kproxy_modes::{
    iptables::{
        existing::Existing,
        render::{self, input::restore_input},
    },
    model::{ChangeSet, DesiredState},
    testing::fixtures,
};

fn golden(name: &str, text: &str) {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden/iptables")
        .join(format!("{name}.rules"));
    kproxy_modes::testing::assert_golden(&path, text);
}

/// Each family's input, headed by the tool that reads it.
fn full_sync_text(desired: &DesiredState) -> String {
    let options = render::Options {
        localhost_node_ports: true,
        drop_invalid: true,
    };
    let r = render::render(desired, &ChangeSet::full(), None, options);
    assert!(r.full);
    r.families
        .iter()
        .map(|w| {
            let inputs = restore_input(w, Some(&Existing::default()));
            let text: String = inputs.iter().map(ToString::to_string).collect();
            format!("# {:?}\n{text}", w.family)
        })
        .collect()
}

#[test]
fn full_sync_of_cluster_ips_matches_golden() {
    golden(
        "cluster-ip-general",
        &full_sync_text(&fixtures::cluster_ip_general()),
    );
}

#[test]
fn full_sync_of_external_policies_matches_golden() {
    golden("external-mix", &full_sync_text(&fixtures::external_mix()));
}

#[test]
fn full_sync_of_dual_stack_matches_golden() {
    golden("dual-stack", &full_sync_text(&fixtures::dual_stack()));
}
