//! The demo end to end against demo-kproxy (tests/data): a stand-in that installs hand-written
//! nftables rules for the example cluster and follows the demo's EndpointSlice change, so the
//! bed, probe, table, dump, update and cleanup paths all run for real. As root.

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::Command;

struct Run {
    stdout: String,
    stderr: String,
    code: Option<i32>,
}

fn standin() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/demo-kproxy")
}

/// The real kproxy next to this test's target directory, when it was built (then the stand-in
/// hands `debug dump` to it).
fn real_kproxy() -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    let bin = exe.parent()?.parent()?.join("kproxy");
    bin.exists().then_some(bin)
}

/// Runs kproxy-demo; checks it left none of its namespaces (named after its pid) or files behind.
fn run(env: &[(&str, &str)]) -> Run {
    run_until(env, None)
}

/// Like [`run`], but with `interrupt_at`, sends SIGINT (a Ctrl-C) once a stdout line starts so.
fn run_until(env: &[(&str, &str)], interrupt_at: Option<&str>) -> Run {
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/examples");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_kproxy-demo"));
    cmd.arg("--examples")
        .arg(examples)
        .env("KPROXY_BIN", standin())
        .env_remove("KPROXY_REAL")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("starting kproxy-demo");
    let prefix = format!("{}{}x", kproxy_testbed::netns::DEFAULT_PREFIX, child.id());
    let mut early = String::new();
    if let Some(at) = interrupt_at {
        let mut r = BufReader::new(child.stdout.take().expect("piped"));
        // Reading blocks until the line comes (or stdout closes): no guessing of delays.
        while r.read_line(&mut early).unwrap_or(0) > 0 {
            if early.lines().last().is_some_and(|l| l.starts_with(at)) {
                let pid = Pid::from_raw(child.id() as i32);
                kill(pid, Signal::SIGINT).expect("SIGINT");
                break;
            }
        }
        r.read_to_string(&mut early).expect("reading stdout");
    }
    let out = child.wait_with_output().expect("running kproxy-demo");
    let names = |dir: &Path| -> Vec<String> {
        std::fs::read_dir(dir)
            .map(|d| {
                d.flatten()
                    .map(|e| e.file_name().to_string_lossy().to_string())
                    .filter(|n| n.starts_with(&prefix))
                    .collect()
            })
            .unwrap_or_default()
    };
    let left = names(Path::new(kproxy_testbed::netns::NETNS_DIR));
    assert!(left.is_empty(), "namespaces left behind: {left:?}");
    let files = names(&std::env::temp_dir());
    assert!(files.is_empty(), "work files left behind: {files:?}");
    Run {
        stdout: early + &String::from_utf8_lossy(&out.stdout),
        stderr: String::from_utf8_lossy(&out.stderr).to_string(),
        code: out.status.code(),
    }
}

/// The first line starting with `start`.
fn line<'a>(out: &'a str, start: &str) -> &'a str {
    out.lines()
        .find(|l| l.starts_with(start))
        .unwrap_or_else(|| panic!("no line starting {start:?} in:\n{out}"))
}

#[test]
fn demo_runs_every_step_against_the_standin() {
    let real = real_kproxy();
    let real_s = real.as_ref().map(|p| p.to_string_lossy().to_string());
    let env: Vec<(&str, &str)> = real_s.iter().map(|r| ("KPROXY_REAL", r.as_str())).collect();
    let r = run(&env);
    let out = &r.stdout;
    let ctx = format!("stdout:\n{out}\nstderr:\n{}", r.stderr);
    assert_eq!(r.code, Some(0), "{ctx}");
    for s in 1..=4 {
        assert!(
            out.contains(&format!("\nstep {s}: ok\n")),
            "step {s}: {ctx}"
        );
    }
    assert_eq!(out.lines().last(), Some("demo: all steps passed"), "{ctx}");
    assert!(out.contains("16 of 16 targets as expected"), "{ctx}");

    // The table's columns line up: each row's cells start where the header's do.
    // Columns count characters ("×" is two bytes).
    let at = |l: &str, s: &str| l.find(s).map(|b| l[..b].chars().count());
    let header = line(out, "SERVICE ");
    let web = line(out, "shop/web:http ");
    assert_eq!(at(web, "10.244.1.200"), at(header, "FROM"), "{ctx}");
    assert_eq!(at(web, "10.96.0.20:80"), at(header, "TO"), "{ctx}");
    assert_eq!(at(web, "client IP kept"), at(header, "NOTE"), "{ctx}");

    // What the rows show: masquerade, eTP=Local, affinity, only the ready endpoint, IPv6.
    let np = line(out, "default/echo:tcp (NodePort) ");
    assert!(
        np.contains("192.168.50.2:30070") && np.contains("masqueraded"),
        "{np}"
    );
    let local = line(out, "ingress/ingress:https (LB) ");
    assert!(local.contains("10.244.1.50:8443 ×4"), "{local}");
    assert!(local.contains("client IP kept (eTP=Local)"), "{local}");
    let sticky = line(out, "shop/session:http ");
    assert!(
        sticky.contains(" ×6 ") && sticky.contains("sticky"),
        "{sticky}"
    );
    assert!(
        line(out, "shop/orders:http ").contains("10.244.1.90:8080 ×4"),
        "{ctx}"
    );
    assert!(out.contains("[fd00:96::70]:80"), "{ctx}");
    assert!(line(out, "kube-system/kube-dns:dns ").contains("10.96.0.10:53/udp"));

    // The dump: the real one when kproxy was built, else the stand-in's placeholder.
    if real.is_some() {
        let dump = &out[out.find("== 3.").unwrap()..out.find("== 4.").unwrap()];
        assert!(dump.contains("10.96.0.20"), "{ctx}");
    } else {
        assert!(out.contains("demo-kproxy: no desired-state dump"), "{ctx}");
    }

    // The update: before and after, the removed endpoint gone.
    assert!(out.contains("removed endpoint(s) 10.244.2.10 from the EndpointSlice file"));
    let after = line(out, "after (");
    assert!(after.contains("10.244.1.10:8080 ×12"), "{after}");
    assert!(!after.contains("10.244.2.10"), "{after}");
    assert!(line(out, "before ").contains("10.96.0.20:80"), "{ctx}");
}

#[test]
fn demo_fails_clearly_when_kproxy_does_not_start() {
    let r = run(&[("DEMO_STANDIN_FAIL", "1")]);
    let out = &r.stdout;
    let ctx = format!("stdout:\n{out}\nstderr:\n{}", r.stderr);
    assert_eq!(r.code, Some(1), "{ctx}");
    let failed = line(out, "step 1: FAILED: kproxy did not become ready");
    assert!(
        failed.contains("before printing \"initial sync complete\""),
        "{ctx}"
    );
    // kproxy's own output is shown, then the dump still runs; traffic and update are skipped.
    assert!(out.contains("demo-kproxy: failing on purpose"), "{ctx}");
    assert!(out.contains("\nstep 3: ok\n") && !out.contains("== 2.") && !out.contains("== 4."));
    assert_eq!(out.lines().last(), Some("demo: FAILED (steps 1)"), "{ctx}");
}

#[test]
fn demo_cleans_up_on_ctrl_c() {
    // The stand-in ignores the change, so the demo is still waiting in step 4 when interrupted.
    let r = run_until(&[("DEMO_STANDIN_STATIC", "1")], Some("removed endpoint(s)"));
    let ctx = format!("stdout:\n{}\nstderr:\n{}", r.stdout, r.stderr);
    assert_eq!(r.code, Some(130), "{ctx}");
    assert!(
        r.stderr.contains("kproxy-demo: interrupted; cleaned up"),
        "{ctx}"
    );
    assert!(!r.stdout.contains("step 4:"), "{ctx}");
}
