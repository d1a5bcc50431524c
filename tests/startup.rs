//! Issue 10, probes 6 and 7, as the real binary in network namespaces (needs root, nft and the
//! nf_conntrack module):
//! - nothing on the node changes before the configuration and the mode are accepted: an
//!   unavailable mode leaves the conntrack sysctls as they were;
//! - no mode given runs kproxy's default mode (nftables), saying so;
//! - one agent per network namespace: a second agent, and a `--cleanup`, are refused with the
//!   first's pid while it runs, and the lock dies with the agent (SIGKILL included).

mod support;

use std::path::Path;

use support::netns::{Agent, Netns};

const BIN: &str = env!("CARGO_BIN_EXE_kproxy");
const EXAMPLES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/examples");
const NF: &str = "/proc/sys/net/netfilter";

fn conntrack_loaded() -> bool {
    let loaded = Path::new(NF).join("nf_conntrack_max").exists();
    if !loaded {
        eprintln!("SKIP: nf_conntrack is not loaded on this host ({NF} has no nf_conntrack_max)");
    }
    loaded
}

fn sysctl(ns: &Netns, name: &str) -> i64 {
    let out = ns.run(&["cat", &format!("{NF}/{name}")]);
    assert!(out.status.success(), "cat {name} in {}", ns.name());
    String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
}

/// `env KPROXY_RUNTIME_DIR=DIR kproxy ARGS...`: the agent's record and lock in a test's own
/// directory.
fn kproxy<'a>(runtime: &'a str, args: &[&'a str]) -> Vec<&'a str> {
    let mut argv = vec!["env", runtime, BIN];
    argv.extend_from_slice(args);
    argv
}

/// The flags of an agent on the example manifests, listening on loopback only.
const AGENT: &[&str] = &[
    "--manifests",
    EXAMPLES,
    "--hostname-override",
    "node-a",
    "--healthz-bind-address",
    "127.0.0.1:10256",
    "--metrics-bind-address",
    "127.0.0.1:10249",
];

/// Steps: in a fresh namespace, run kproxy with `--proxy-mode ipvs` where the kernel has no IPVS
/// (this test skips itself where it has) and
/// flags asking for a tcpEstablishedTimeout of 1234s; it exits 1 naming the mode, and the
/// namespace's timeout is unchanged (363a40b set the sysctls first, then refused).
#[test]
fn an_unavailable_mode_is_refused_before_any_sysctl_changes() {
    if !conntrack_loaded() {
        return;
    }
    if std::path::Path::new("/proc/net/ip_vs").exists() {
        eprintln!("skipped: this kernel has IPVS, so ipvs mode is available");
        return;
    }
    let ns = Netns::new("badmode");
    let before = sysctl(&ns, "nf_conntrack_tcp_timeout_established");
    assert_ne!(before, 1234);
    let args = [
        BIN,
        "--proxy-mode",
        "ipvs",
        "--conntrack-tcp-timeout-established",
        "1234s",
        "--conntrack-max-per-core",
        "0",
    ];
    let out = ns.run(&args);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains("the kernel has no IPVS"), "{stderr}");
    assert_eq!(
        sysctl(&ns, "nf_conntrack_tcp_timeout_established"),
        before,
        "{stderr}"
    );
}

/// Steps: start kproxy without --proxy-mode; it logs that it uses nftables, its default, and
/// syncs (363a40b: iptables, then a refusal); the nftables tables exist.
#[test]
fn no_mode_given_runs_the_default_mode_and_says_so() {
    if !conntrack_loaded() {
        return;
    }
    let ns = Netns::new("nomode");
    let runtime = tempfile::tempdir().unwrap();
    let env = format!("KPROXY_RUNTIME_DIR={}", runtime.path().display());
    let agent = Agent::start(&ns, &kproxy(&env, AGENT));
    let log = agent.log();
    assert!(
        log.contains("no proxy mode given") && log.contains("mode=nftables"),
        "{log}"
    );
    let tables = String::from_utf8_lossy(&ns.run(&["nft", "list", "tables"]).stdout).into_owned();
    assert!(tables.contains("table ip kproxy"), "{tables}");
}

/// Steps: start an agent; a second agent in the same namespace exits 1 naming the first's pid,
/// so does `--cleanup` (the first's table is still there); kill the first (SIGKILL): a new
/// agent starts.
#[test]
fn a_second_agent_or_a_cleanup_beside_a_running_agent_is_refused_naming_it() {
    if !conntrack_loaded() {
        return;
    }
    let ns = Netns::new("twoagents");
    let runtime = tempfile::tempdir().unwrap();
    let env = format!("KPROXY_RUNTIME_DIR={}", runtime.path().display());
    let first = Agent::start(&ns, &kproxy(&env, AGENT));
    let pid = format!("pid {}", first.pid());
    for args in [AGENT, &["--cleanup"][..]] {
        // Bounded: without the lock (363a40b) the second agent would run on.
        let mut argv = vec!["timeout", "20"];
        argv.extend(kproxy(&env, args));
        let out = ns.run(&argv);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?}: {stderr}");
        assert!(
            stderr.contains("another kproxy") && stderr.contains(&pid),
            "{args:?}: {stderr}"
        );
    }
    let tables = String::from_utf8_lossy(&ns.run(&["nft", "list", "tables"]).stdout).into_owned();
    assert!(tables.contains("table ip kproxy"), "{tables}");

    drop(first); // SIGKILL: no clean shutdown releases anything but the kernel
    let again = Agent::start(&ns, &kproxy(&env, AGENT));
    assert!(!again.log().contains("another kproxy"), "{}", again.log());
}
