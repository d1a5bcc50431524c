//! Issue 10, item 8: what kproxy says when a flag or file is wrong, as the real binary says it
//! (no root needed).

use std::process::{Command, Output};

use clap::Parser;
use kproxy::cli::Cli;

fn kproxy(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_kproxy"))
        .args(args)
        .env("RUST_LOG", "info")
        .output()
        .expect("run kproxy")
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// A negative duration reaches the duration parser, which names the problem (363a40b: clap's
/// "unexpected argument '-5'").
#[test]
fn a_negative_duration_flag_is_named_as_negative() {
    for flag in ["--iptables-sync-period", "--conntrack-udp-timeout"] {
        let err = Cli::try_parse_from(["kproxy", flag, "-5s"]).unwrap_err();
        let text = err.to_string();
        assert!(text.contains("must not be negative"), "{flag}: {text}");
        assert!(!text.contains("unexpected argument"), "{flag}: {text}");
    }
}

/// The OS error of a missing config file is printed once (363a40b: twice, through the error
/// chain).
#[test]
fn a_missing_config_file_names_its_os_error_once() {
    let out = kproxy(&["--config", "/nonexistent/kproxy.yaml"]);
    let text = stderr(&out);
    assert!(!out.status.success());
    assert!(text.contains("/nonexistent/kproxy.yaml"), "{text}");
    assert_eq!(
        text.matches("No such file or directory").count(),
        1,
        "{text}"
    );
}

/// `debug dump` refuses the agent's flags instead of ignoring them.
#[test]
fn debug_dump_refuses_agent_only_flags() {
    let examples = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/examples");
    for flag in ["--cleanup", "--init-only"] {
        let out = kproxy(&["debug", "dump", "--manifests", examples, flag]);
        let text = stderr(&out);
        assert!(!out.status.success(), "{flag}: {text}");
        assert!(text.contains(&format!("does not take {flag}")), "{text}");
        assert!(out.stdout.is_empty(), "{flag}: nothing dumped");
    }
}

/// Logs to a pipe (a journal, a file) carry no colour codes; nor does the no-mode notice,
/// which names the mode used instead.
#[test]
fn logs_off_a_terminal_have_no_colour_codes() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.yaml");
    let out = kproxy(&["--write-config-to", path.to_str().unwrap()]);
    let text = stderr(&out);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("no proxy mode given"), "{text}");
    assert!(!text.contains('\u{1b}'), "{text:?}");
    let written = std::fs::read_to_string(&path).unwrap();
    assert!(written.contains("mode: nftables"), "{written}");
}

/// `--help` says which mode runs when none is given.
#[test]
fn help_names_the_default_mode() {
    let out = kproxy(&["--help"]);
    let help = String::from_utf8_lossy(&out.stdout);
    let default = kproxy::config::default_mode().to_string();
    assert!(
        help.contains(&format!(
            "Default: the first mode this build has, {default}"
        )),
        "{help}"
    );
}
