//! The conformance runner end to end, against fake-kproxy (tests/data): a script that installs a
//! few rules by hand, so that both PASS and FAIL paths (and the SCTP skip) are exercised.

use std::path::{Path, PathBuf};
use std::process::Command;

struct Run {
    stdout: String,
    stderr: String,
    code: Option<i32>,
}

fn data() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data")
}

/// Runs the runner binary; also checks it left none of its namespaces behind (they are named after
/// its pid).
fn run(mode: &str, files: &[PathBuf], kproxy: &str) -> Run {
    let child = Command::new(env!("CARGO_BIN_EXE_kproxy-conformance"))
        .args(["--mode", mode])
        .args(files)
        .env("KPROXY_BIN", data().join(kproxy))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("starting kproxy-conformance");
    let prefix = format!("{}{}x", kproxy_testbed::netns::DEFAULT_PREFIX, child.id());
    let out = child
        .wait_with_output()
        .expect("running kproxy-conformance");
    let left: Vec<String> = std::fs::read_dir(kproxy_testbed::netns::NETNS_DIR)
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().to_string())
                .filter(|n| n.starts_with(&prefix))
                .collect()
        })
        .unwrap_or_default();
    assert!(left.is_empty(), "namespaces left behind: {left:?}");
    Run {
        stdout: String::from_utf8_lossy(&out.stdout).to_string(),
        stderr: String::from_utf8_lossy(&out.stderr).to_string(),
        code: out.status.code(),
    }
}

#[test]
fn runner_reports_pass_fail_skip_and_the_closing_line() {
    let case = data().join("fake-case.yaml");
    let out = run("nftables", std::slice::from_ref(&case), "fake-kproxy");
    let (stdout, stderr) = (&out.stdout, &out.stderr);
    let lines: Vec<&str> = stdout.lines().collect();
    let file = case.display().to_string();
    let sctp = kproxy_testbed::sctp_supported();
    // (step, flow, expected word): the flow names say what fake-kproxy makes of them.
    let expect = [
        (1, 1, "PASS"),
        (1, 2, "FAIL"),
        (1, 3, "PASS"),
        (1, 4, "PASS"),
        (1, 5, "PASS"),
        (1, 6, "PASS"),
        (1, 7, "PASS"),
        (1, 8, "PASS"),
        (1, 9, "PASS"),
        (1, 10, "FAIL"),
        // fake-kproxy has no SCTP rule: where the kernel has SCTP, this flow fails instead.
        (1, 11, if sctp { "FAIL" } else { "SKIP" }),
        (2, 1, "PASS"),
        (2, 2, "FAIL"),
    ];
    assert_eq!(
        lines.len(),
        expect.len() + 1,
        "stdout:\n{stdout}\nstderr:\n{stderr}"
    );
    for ((step, flow, word), line) in expect.iter().zip(&lines) {
        let head = format!("{word} {file} step {step} flow {flow} ");
        assert!(
            line.starts_with(&head),
            "want {head:?}, got {line:?}\nstderr:\n{stderr}"
        );
        if *word == "FAIL" {
            assert!(
                line.contains(" -- "),
                "a FAIL line says what was seen: {line}"
            );
        }
    }
    let (failed, skipped) = if sctp { (4, 0) } else { (3, 1) };
    assert_eq!(
        lines.last().copied(),
        Some(format!("conformance: 9 passed, {failed} failed, {skipped} skipped").as_str())
    );
    assert_eq!(out.code, Some(1), "exit status is 1 when a flow failed");
}

#[test]
fn runner_exits_zero_when_nothing_fails() {
    let out = run(
        "iptables",
        &[data().join("fake-case-passing.yaml")],
        "fake-kproxy",
    );
    assert_eq!(
        out.stdout.lines().last(),
        Some("conformance: 2 passed, 0 failed, 0 skipped"),
        "stdout:\n{}\nstderr:\n{}",
        out.stdout,
        out.stderr
    );
    assert_eq!(out.code, Some(0));
}

/// Two upstream scenarios against kube-proxy-like rules written by hand: everything upstream
/// expects (hairpin and NodePort masquerade, random endpoints, IPv6, REJECT, DROP, none) can pass
/// in the bed.
#[test]
fn upstream_scenarios_pass_against_kube_proxy_like_rules() {
    let files = [
        data().join("upstream/cluster-ip-general.yaml"),
        data().join("upstream/node-ports-ipv6.yaml"),
    ];
    let out = run("nftables", &files, "nft-kproxy");
    // The hand-written rules have no SCTP rule: on a kernel with SCTP that flow fails.
    let want = if kproxy_testbed::sctp_supported() {
        "conformance: 13 passed, 1 failed, 0 skipped"
    } else {
        "conformance: 13 passed, 0 failed, 1 skipped"
    };
    assert_eq!(
        out.stdout.lines().last(),
        Some(want),
        "stdout:\n{}\nstderr:\n{}",
        out.stdout,
        out.stderr
    );
}

/// NodePorts on every local address, 127.0.0.1 included, against hand-written rules: the node's own
/// sources (its IPs, localhost) are sent from the node namespace and see masquerade as upstream.
#[test]
fn upstream_localhost_nodeports_pass_against_kube_proxy_like_rules() {
    let files = [data().join("upstream/iptables-node-ports-ipv4-localhost-nodeports-enabled.yaml")];
    let out = run("iptables", &files, "nft-kproxy-nodeports");
    assert_eq!(
        out.stdout.lines().last(),
        Some("conformance: 5 passed, 0 failed, 0 skipped"),
        "stdout:\n{}\nstderr:\n{}",
        out.stdout,
        out.stderr
    );
    assert_eq!(out.code, Some(0));
}
