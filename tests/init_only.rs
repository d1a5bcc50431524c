//! `kproxy --init-only` applies the conntrack settings to its network namespace and exits
//! without starting the agent. Needs root and the nf_conntrack module (the per-namespace
//! sysctls exist only once it is loaded).

mod support;

use std::path::Path;

use support::netns::Netns;

const BIN: &str = env!("CARGO_BIN_EXE_kproxy");
const NF: &str = "/proc/sys/net/netfilter";

fn host(name: &str) -> i64 {
    std::fs::read_to_string(format!("{NF}/{name}"))
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

fn inside(ns: &Netns, name: &str) -> i64 {
    let out = ns.run(&["cat", &format!("{NF}/{name}")]);
    assert!(out.status.success(), "cat {name} in {}", ns.name());
    String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
}

/// Steps: note the host's (initial namespace's) conntrack values; run `kproxy --init-only`
/// in a fresh namespace with a config asking for tcpEstablishedTimeout 1234s, udpTimeout 33s
/// and a conntrack max above the current one; then the namespace has the timeouts, the host
/// kept its values, kproxy exited 0 warning that nf_conntrack_max is read-only there, and no
/// nftables table exists (the agent never ran).
#[test]
fn init_only_sets_the_namespaces_conntrack_timeouts_and_exits_without_the_agent() {
    if !Path::new(NF).join("nf_conntrack_max").exists() {
        eprintln!("SKIP: nf_conntrack is not loaded on this host ({NF} has no nf_conntrack_max)");
        return;
    }
    let before = [
        "nf_conntrack_max",
        "nf_conntrack_tcp_timeout_established",
        "nf_conntrack_udp_timeout",
    ]
    .map(host);
    // Values nobody sets by accident, so a pass cannot be a coincidence.
    assert_ne!(before[1], 1234);
    assert_ne!(before[2], 33);

    let ns = Netns::new("initonly");
    // Outside the initial namespace nf_conntrack_max shows the host's value, read-only; ask
    // for more so the read-only case is the one that has to be handled.
    let wanted_max = inside(&ns, "nf_conntrack_max") + 1;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.yaml");
    std::fs::write(
        &config,
        format!(
            "apiVersion: kubeproxy.config.k8s.io/v1alpha1\nkind: KubeProxyConfiguration\n\
             mode: nftables\nconntrack:\n  maxPerCore: 1\n  min: {wanted_max}\n  \
             tcpEstablishedTimeout: 1234s\n  udpTimeout: 33s\n"
        ),
    )
    .unwrap();

    let out = ns.run(&[BIN, "--init-only", "--config", config.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "kproxy --init-only failed: {stderr}");
    assert!(
        stderr.contains("nf_conntrack_max is read-only"),
        "the read-only max is reported: {stderr}"
    );
    assert!(!stderr.contains("starting kproxy"), "{stderr}");

    assert_eq!(inside(&ns, "nf_conntrack_tcp_timeout_established"), 1234);
    assert_eq!(inside(&ns, "nf_conntrack_udp_timeout"), 33);
    let after = [
        "nf_conntrack_max",
        "nf_conntrack_tcp_timeout_established",
        "nf_conntrack_udp_timeout",
    ]
    .map(host);
    assert_eq!(
        after, before,
        "the initial namespace's values are untouched"
    );

    let tables = ns.run(&["nft", "list", "tables"]);
    assert!(tables.status.success());
    assert_eq!(
        String::from_utf8_lossy(&tables.stdout).trim(),
        "",
        "no table: the agent did not run"
    );
}
