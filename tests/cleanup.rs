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
