use std::{fs, os::unix::fs::PermissionsExt, path::Path};

use kproxy_dataplane::sysctl::{Change, IntFile, Sysctl};

use super::*;
use crate::config::KubeProxyConfiguration;

fn config(yaml: &str) -> ConntrackConfiguration {
    let text = format!(
        "apiVersion: kubeproxy.config.k8s.io/v1alpha1\nkind: KubeProxyConfiguration\n{yaml}"
    );
    KubeProxyConfiguration::from_yaml_str(&text)
        .unwrap()
        .conntrack
}

#[test]
fn defaults_scale_max_by_cpus_above_the_minimum_and_set_both_tcp_timeouts() {
    let ct = KubeProxyConfiguration::scheme_defaults().conntrack;
    let want = vec![(TCP_ESTABLISHED, 86400), (TCP_CLOSE_WAIT, 3600)];
    // 2 CPUs x 32768 is below conntrack.min (131072), which wins.
    assert_eq!(
        plan(&ct, 2),
        ConntrackPlan {
            max: Some(131072),
            sysctls: want.clone()
        }
    );
    // 8 x 32768 is above it.
    assert_eq!(plan(&ct, 8).max, Some(262144));
    assert_eq!(plan(&ct, 8).sysctls, want, "no be_liberal, no UDP timeouts");
}

#[test]
fn max_per_core_zero_leaves_max_alone_whatever_min_says() {
    let ct = config("conntrack:\n  maxPerCore: 0\n  min: 500000\n");
    assert_eq!(plan(&ct, 4).max, None);
}

#[test]
fn max_is_scaled_in_64_bits() {
    let ct = config("conntrack:\n  maxPerCore: 2147483647\n  min: 0\n");
    assert_eq!(plan(&ct, 4).max, Some(4 * 2147483647));
}

#[test]
fn every_set_field_becomes_its_sysctl_in_seconds_and_zero_durations_are_left_alone() {
    let ct = config(
        "conntrack:\n  tcpEstablishedTimeout: 1234s\n  tcpCloseWaitTimeout: 0s\n  tcpBeLiberal: true\n  udpTimeout: 33s\n  udpStreamTimeout: 2m0.9s\n",
    );
    assert_eq!(
        plan(&ct, 1).sysctls,
        vec![
            (TCP_ESTABLISHED, 1234),
            // An explicit 0s close-wait timeout is kept (pointer field) and means "leave it".
            (TCP_BE_LIBERAL, 1),
            (UDP_TIMEOUT, 33),
            (UDP_STREAM_TIMEOUT, 120),
        ]
    );
}

/// A kernel-like tree: nf_conntrack_max 65536 and every timeout at the kernel's default,
/// hashsize 16384.
fn kernel(dir: &Path) -> (Sysctl, IntFile) {
    let nf = dir.join("proc/net/netfilter");
    fs::create_dir_all(&nf).unwrap();
    for (file, value) in [
        ("nf_conntrack_max", "65536"),
        ("nf_conntrack_tcp_timeout_established", "432000"),
        ("nf_conntrack_tcp_timeout_close_wait", "60"),
        ("nf_conntrack_tcp_be_liberal", "0"),
        ("nf_conntrack_udp_timeout", "30"),
        ("nf_conntrack_udp_timeout_stream", "120"),
    ] {
        fs::write(nf.join(file), format!("{value}\n")).unwrap();
    }
    fs::write(dir.join("hashsize"), "16384\n").unwrap();
    (
        Sysctl::with_root(dir.join("proc")),
        IntFile::new(dir.join("hashsize")),
    )
}

#[test]
fn apply_writes_what_differs_grows_the_hash_table_and_reports_each_setting() {
    let dir = tempfile::tempdir().unwrap();
    let (sysctl, hashsize) = kernel(dir.path());
    let plan = ConntrackPlan {
        max: Some(131072),
        sysctls: vec![(TCP_ESTABLISHED, 86400), (UDP_STREAM_TIMEOUT, 120)],
    };
    let report = apply_conntrack(&plan, &sysctl, &hashsize).unwrap();
    assert_eq!(sysctl.read(CONNTRACK_MAX).unwrap(), 131072);
    assert_eq!(hashsize.read().unwrap(), 32768);
    assert_eq!(sysctl.read(TCP_ESTABLISHED).unwrap(), 86400);
    let hash_name = hashsize.path().display().to_string();
    assert_eq!(
        report.settings,
        vec![
            (
                CONNTRACK_MAX.to_string(),
                Change::Changed {
                    old: 65536,
                    new: 131072
                }
            ),
            (
                hash_name,
                Change::Changed {
                    old: 16384,
                    new: 32768
                }
            ),
            (
                TCP_ESTABLISHED.to_string(),
                Change::Changed {
                    old: 432000,
                    new: 86400
                }
            ),
            (UDP_STREAM_TIMEOUT.to_string(), Change::Unchanged(120)),
        ]
    );
    assert!(report.skipped.is_empty());
}

#[test]
fn a_hash_table_already_big_enough_is_not_shrunk() {
    let dir = tempfile::tempdir().unwrap();
    let (sysctl, hashsize) = kernel(dir.path());
    hashsize.write(1 << 20).unwrap();
    let plan = ConntrackPlan {
        max: Some(131072),
        sysctls: vec![],
    };
    apply_conntrack(&plan, &sysctl, &hashsize).unwrap();
    assert_eq!(hashsize.read().unwrap(), 1 << 20);
}

#[test]
fn a_read_only_conntrack_max_is_skipped_and_the_rest_still_applied() {
    let dir = tempfile::tempdir().unwrap();
    let (sysctl, hashsize) = kernel(dir.path());
    let max = sysctl.file(CONNTRACK_MAX);
    // How the kernel shows it outside the initial network namespace.
    fs::set_permissions(max.path(), fs::Permissions::from_mode(0o444)).unwrap();
    hashsize.write(1 << 20).unwrap();
    let plan = ConntrackPlan {
        max: Some(131072),
        sysctls: vec![(UDP_TIMEOUT, 33)],
    };
    let report = apply_conntrack(&plan, &sysctl, &hashsize).unwrap();
    assert_eq!(
        report.skipped,
        vec![Skipped::MaxReadOnly {
            current: 65536,
            wanted: 131072
        }]
    );
    assert_eq!(
        max.read().unwrap(),
        65536,
        "nothing written behind the mode"
    );
    assert_eq!(sysctl.read(UDP_TIMEOUT).unwrap(), 33);
}

#[test]
fn a_missing_sysctl_is_fatal_and_the_error_names_it_the_value_and_the_module() {
    let dir = tempfile::tempdir().unwrap();
    let (sysctl, hashsize) = kernel(dir.path());
    fs::remove_file(sysctl.file(UDP_TIMEOUT).path()).unwrap();
    let plan = ConntrackPlan {
        max: None,
        sysctls: vec![(UDP_TIMEOUT, 33)],
    };
    let err = apply_conntrack(&plan, &sysctl, &hashsize).unwrap_err();
    let text = err.to_string();
    assert!(
        text.starts_with("setting net.netfilter.nf_conntrack_udp_timeout to 33: "),
        "{text}"
    );
    assert!(text.contains("nf_conntrack kernel module"), "{text}");
    // As main prints it: the cause once, not repeated by the error chain.
    let chain = format!("{:#}", anyhow::Error::new(err).context("conntrack set-up"));
    assert_eq!(chain.matches("os error").count(), 1, "{chain}");
}

#[test]
fn an_unwritable_hash_table_that_is_not_a_known_case_is_fatal() {
    let dir = tempfile::tempdir().unwrap();
    let (sysctl, _) = kernel(dir.path());
    // A directory reads as an error of its own kind (EISDIR): neither read-only /sys nor
    // "not the initial namespace", so it must not be swallowed.
    let hashsize = IntFile::new(dir.path());
    let plan = ConntrackPlan {
        max: Some(131072),
        sysctls: vec![],
    };
    let err = apply_conntrack(&plan, &sysctl, &hashsize).unwrap_err();
    assert_eq!(err.value, 32768);
    assert_eq!(err.name, dir.path().display().to_string());
}

#[test]
fn oom_score_adj_is_written_once() {
    let dir = tempfile::tempdir().unwrap();
    let file = IntFile::new(dir.path().join("oom_score_adj"));
    fs::write(file.path(), "0\n").unwrap();
    assert_eq!(
        oom_score_adj(-999, &file).unwrap(),
        Change::Changed { old: 0, new: -999 }
    );
    assert_eq!(oom_score_adj(-999, &file).unwrap(), Change::Unchanged(-999));
}

#[test]
fn cpu_lists_count_ranges_and_singles() {
    assert_eq!(parse_cpu_list("0-1\n"), Some(2));
    assert_eq!(parse_cpu_list("0-3,6,8-9"), Some(7));
    assert_eq!(parse_cpu_list("0"), Some(1));
    assert_eq!(parse_cpu_list("3-1"), None);
    assert_eq!(parse_cpu_list("a-b"), None);
    assert!(node_cpus() >= 1);
}
