//! `Exec` against the real nft, in check mode only (`nft -c`: nothing is committed, so it is
//! safe in the host namespace), and committing only inside a namespace the test makes.
//! Skipped when nft cannot be run (not installed, not root).

use kproxy_testbed::netns;

use kproxy_dataplane::nft::{Exec, Family, NftClient, NftErrorKind, NftTransaction};

fn nft_usable() -> bool {
    let ok = std::process::Command::new("nft")
        .args(["-c", "add", "table", "ip", "kproxy-probe"])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if !ok {
        eprintln!("skipped: nft not usable here");
    }
    ok
}

/// Deleting a table that does not exist fails as not-found, with nft's message kept.
#[test]
fn missing_table_is_classified_not_found() {
    if !nft_usable() {
        return;
    }
    let mut tx = NftTransaction::new();
    tx.delete_table(Family::Ip, "kproxy-test-absent-7f3a");
    let err = Exec::new().check(&tx).unwrap_err();
    assert_eq!(err.kind(), NftErrorKind::NotFound, "{err}");
    assert!(
        err.to_string().contains("No such file or directory"),
        "{err}"
    );
}

/// A syntax error is `Other`, and a valid transaction passes the check.
#[test]
fn syntax_errors_and_valid_text() {
    if !nft_usable() {
        return;
    }
    let mut bad = NftTransaction::new();
    bad.add_table(Family::Ip, "kproxy-test-x", None);
    bad.add_rule(Family::Ip, "kproxy-test-x", "c", "this is not a rule");
    let err = Exec::new().check(&bad).unwrap_err();
    assert_eq!(err.kind(), NftErrorKind::Other, "{err}");
    let mut good = NftTransaction::new();
    good.add_table(Family::Ip, "kproxy-test-x", Some("probe"));
    good.add_chain(Family::Ip, "kproxy-test-x", "c", None);
    good.add_rule(Family::Ip, "kproxy-test-x", "c", "ip daddr 1.2.3.4 drop");
    Exec::new().check(&good).unwrap();
}

/// Steps: commit a table through an `Exec` in a fresh namespace; read it back there; the
/// caller's namespace does not have it.
#[test]
fn a_namespaced_exec_commits_in_that_namespace_only() {
    if !nft_usable() {
        return;
    }
    let Some(ns) = netns::Netns::scratch() else {
        return;
    };
    let table = format!("kproxy-test-{}", ns.name().replace('-', "_"));
    let exec = Exec::new().in_netns(ns.name());
    let mut tx = NftTransaction::new();
    tx.add_table(Family::Ip, &table, Some("probe"));
    exec.run(&tx).unwrap();
    let listed = exec.list_table(Family::Ip, &table).unwrap();
    assert!(listed.contains(&format!("table ip {table}")), "{listed}");
    assert!(ns.exec(&["nft", "list", "tables"]).contains(&table));
    let host = Exec::new().list_table(Family::Ip, &table).unwrap_err();
    assert!(host.is_not_found(), "{host}");
}
