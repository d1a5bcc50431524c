//! The conformance runner end to end, against fake-kproxy (tests/data): a script that installs a
//! few rules by hand, so that both PASS and FAIL paths (and the SCTP skip) are exercised.

use std::path::Path;
use std::process::Command;

#[test]
fn runner_reports_pass_fail_skip_and_the_closing_line() {
    let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data");
    let case = data.join("fake-case.yaml");
    let out = Command::new(env!("CARGO_BIN_EXE_kproxy-conformance"))
        .args(["--mode", "nftables"])
        .arg(&case)
        .env("KPROXY_BIN", data.join("fake-kproxy"))
        .output()
        .expect("running kproxy-conformance");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
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
    assert_eq!(
        out.status.code(),
        Some(1),
        "exit status is 1 when a flow failed"
    );
}

#[test]
fn runner_exits_zero_when_nothing_fails() {
    let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data");
    let out = Command::new(env!("CARGO_BIN_EXE_kproxy-conformance"))
        .args(["--mode", "iptables"])
        .arg(data.join("fake-case-passing.yaml"))
        .env("KPROXY_BIN", data.join("fake-kproxy"))
        .output()
        .expect("running kproxy-conformance");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        stdout.lines().last(),
        Some("conformance: 2 passed, 0 failed, 0 skipped"),
        "stdout:\n{stdout}\nstderr:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.status.code(), Some(0));
}
