//! `kproxy --cleanup` removes everything kproxy programmed and nothing else: a table of someone
//! else's in the same namespace survives with its rules. Needs root.

mod support;

use support::netns::{Agent, Netns};

const BIN: &str = env!("CARGO_BIN_EXE_kproxy");
const EXAMPLES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/examples");

#[test]
fn cleanup_removes_kproxys_tables_and_leaves_someone_elses() {
    let ns = Netns::new("cleanup");
    let theirs = ns.run(&["nft", "add table ip theirs; add chain ip theirs c { type filter hook input priority 0; }; add rule ip theirs c counter accept"]);
    assert!(
        theirs.status.success(),
        "{}",
        String::from_utf8_lossy(&theirs.stderr)
    );
    {
        let _agent = Agent::start(
            &ns,
            &[
                BIN,
                "--proxy-mode",
                "nftables",
                "--manifests",
                EXAMPLES,
                "--hostname-override",
                "node-a",
                "--healthz-bind-address",
                "127.0.0.1:10256",
                "--metrics-bind-address",
                "127.0.0.1:10249",
            ],
        );
    }
    let tables = String::from_utf8_lossy(&ns.run(&["nft", "list", "tables"]).stdout).into_owned();
    assert!(
        tables.contains("table ip kproxy") && tables.contains("table ip6 kproxy"),
        "{tables}"
    );

    // Another mode configured: upstream's --cleanup removes every mode's leftovers regardless,
    // so the nftables tables must go all the same.
    let out = ns.run(&[BIN, "--cleanup", "--proxy-mode", "iptables"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let tables = String::from_utf8_lossy(&ns.run(&["nft", "list", "tables"]).stdout).into_owned();
    assert_eq!(
        tables.trim(),
        "table ip theirs",
        "only someone else's table is left"
    );
    let rules = String::from_utf8_lossy(&ns.run(&["nft", "list", "table", "ip", "theirs"]).stdout)
        .into_owned();
    assert!(
        rules.contains("counter") && rules.contains("accept"),
        "{rules}"
    );
    let again = ns.run(&[BIN, "--cleanup", "--proxy-mode", "nftables"]);
    assert!(
        again.status.success(),
        "cleanup with nothing to remove succeeds"
    );
}

/// A node migrated from kube-proxy: its nftables table and its iptables-mode chains (with the
/// jumps to them) are still there beside someone else's table and the kubelet's chain. Starting
/// kproxy removes kube-proxy's, logs each removal, and leaves the others' as they were.
#[test]
fn starting_removes_upstream_kube_proxys_leftovers_and_nothing_else() {
    let ns = Netns::new("leftovers");
    let nft = ns.run(&["nft", "add table ip kube-proxy; add chain ip kube-proxy services; add table ip theirs; add chain ip theirs c"]);
    assert!(
        nft.status.success(),
        "{}",
        String::from_utf8_lossy(&nft.stderr)
    );
    for args in [
        &["iptables-nft", "-t", "nat", "-N", "KUBE-SERVICES"][..],
        &[
            "iptables-nft",
            "-t",
            "nat",
            "-A",
            "PREROUTING",
            "-j",
            "KUBE-SERVICES",
        ],
        &["iptables-nft", "-t", "filter", "-N", "KUBE-FIREWALL"],
        &[
            "iptables-nft",
            "-t",
            "filter",
            "-A",
            "INPUT",
            "-j",
            "KUBE-FIREWALL",
        ],
    ] {
        let out = ns.run(args);
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let agent = Agent::start(
        &ns,
        &[
            BIN,
            "--proxy-mode",
            "nftables",
            "--manifests",
            EXAMPLES,
            "--hostname-override",
            "node-a",
            "--healthz-bind-address",
            "127.0.0.1:10256",
            "--metrics-bind-address",
            "127.0.0.1:10249",
        ],
    );
    let log = agent.log();
    drop(agent);
    let tables = String::from_utf8_lossy(&ns.run(&["nft", "list", "tables"]).stdout).into_owned();
    assert!(!tables.contains("kube-proxy"), "{tables}");
    assert!(tables.contains("table ip theirs"), "{tables}");
    let nat =
        String::from_utf8_lossy(&ns.run(&["iptables-nft-save", "-t", "nat"]).stdout).into_owned();
    assert!(!nat.contains("KUBE-SERVICES"), "{nat}");
    let filter = String::from_utf8_lossy(&ns.run(&["iptables-nft-save", "-t", "filter"]).stdout)
        .into_owned();
    assert!(
        filter.contains("-A INPUT -j KUBE-FIREWALL"),
        "the kubelet's chain stays: {filter}"
    );
    assert!(
        log.contains("removed a leftover of an earlier proxy") && log.contains("kube-proxy"),
        "{log}"
    );
}
