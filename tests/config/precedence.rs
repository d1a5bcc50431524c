//! Command-line flags and their precedence against `--config`, per upstream's
//! `Options.Complete` (cmd/kube-proxy/app/options.go).

use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use kproxy::cli::{Cli, Command, DebugCommand, OutputFormat, resolve_config, write_config_to};
use kproxy::config::{ConfigError, KubeProxyConfiguration, LocalMode, ProxyMode};

use crate::{data, flags, parse_file, resolve, resolve_err, temp_path};

#[test]
fn flags_alone_override_the_defaults() {
    let cfg = resolve(&[
        "--proxy-mode",
        "nftables",
        "--masquerade-all",
        "--iptables-sync-period=10s",
        "--cluster-cidr",
        "10.0.0.0/8,fd00::/48",
        "--hostname-override",
        " Node-A ",
        "--kube-api-qps",
        "20",
        "--conntrack-max-per-core=0",
        "--oom-score-adj",
        "-500",
    ]);
    assert_eq!(cfg.proxy_mode(), ProxyMode::Nftables);
    assert!(
        cfg.nftables.masquerade_all && !cfg.iptables.masquerade_all,
        "masqueradeAll lands in the mode's section"
    );
    assert_eq!(
        cfg.effective_sync_period(),
        Duration::from_secs(10),
        "--iptables-sync-period drives nftables too"
    );
    assert_eq!(cfg.cluster_cidrs().len(), 2);
    assert_eq!(
        cfg.hostname_override, "node-a",
        "trimmed and lowercased like upstream"
    );
    assert_eq!(cfg.client_connection.qps, 20.0);
    assert_eq!(cfg.conntrack.max_per_core, Some(0));
    assert_eq!(cfg.oom_score_adj, Some(-500));
    assert_eq!(cfg.node_port_addresses, vec!["primary"]);
}

#[test]
fn no_flags_and_no_file_give_the_defaults() {
    assert_eq!(resolve(&[]), KubeProxyConfiguration::default());
}

#[test]
fn a_file_alone_is_used_as_written() {
    let path = data("nftables.yaml");
    let cfg = resolve(&["--config", path.to_str().unwrap()]);
    assert_eq!(cfg, parse_file("nftables.yaml"));
    assert_eq!(cfg.hostname_override, "node-from-file");
}

#[test]
fn with_a_file_only_hostname_override_and_verbosity_flags_still_apply() {
    let path = data("nftables.yaml");
    let cfg = resolve(&[
        "--config",
        path.to_str().unwrap(),
        "--hostname-override",
        "Other-Node",
        "-v",
        "4",
        "--proxy-mode",
        "ipvs",
        "--masquerade-all=false",
        "--cluster-cidr",
        "192.168.0.0/16",
        "--kubeconfig",
        "/ignored",
        "--iptables-masquerade-bit",
        "3",
    ]);
    assert_eq!(cfg.hostname_override, "other-node");
    assert_eq!(cfg.logging.verbosity, 4);
    assert_eq!(
        cfg.proxy_mode(),
        ProxyMode::Nftables,
        "--proxy-mode is ignored with --config"
    );
    assert!(
        cfg.effective_masquerade_all(),
        "--masquerade-all is ignored with --config"
    );
    assert_eq!(cfg.cluster_cidr, "10.244.0.0/16");
    assert_eq!(cfg.client_connection.kubeconfig, "");
    assert_eq!(cfg.iptables.masquerade_bit, Some(9));
}

#[test]
fn ipvs_chosen_by_flag_starts_from_the_iptables_sync_defaults_like_upstream() {
    let cfg = resolve(&["--proxy-mode", "ipvs", "--iptables-sync-period", "7s"]);
    assert_eq!(
        cfg.effective_sync_period(),
        Duration::from_secs(30),
        "iptables flags do not apply to ipvs"
    );
    assert_eq!(cfg.effective_min_sync_period(), Duration::from_secs(1));
    let cfg = resolve(&[
        "--proxy-mode",
        "ipvs",
        "--ipvs-sync-period",
        "7s",
        "--ipvs-min-sync-period",
        "0s",
    ]);
    assert_eq!(
        (cfg.effective_sync_period(), cfg.effective_min_sync_period()),
        (Duration::from_secs(7), Duration::ZERO)
    );
}

#[test]
fn the_iptables_masquerade_bit_flag_does_not_change_the_nftables_bit() {
    let cfg = resolve(&["--proxy-mode", "nftables", "--iptables-masquerade-bit", "3"]);
    assert_eq!(cfg.iptables.masquerade_bit, Some(3));
    assert_eq!(cfg.effective_masquerade_bit(), 14);
    assert_eq!(
        resolve(&["--proxy-mode", "iptables", "--iptables-masquerade-bit", "3"])
            .effective_masquerade_bit(),
        3
    );
}

#[test]
fn flag_values_are_validated_after_the_merge() {
    let err = resolve_err(&["--iptables-masquerade-bit", "40", "--kube-api-burst", "-1"]);
    assert!(
        err.contains("iptables.masqueradeBit: 40") && err.contains("clientConnection.burst: -1"),
        "{err}"
    );
    assert!(resolve_err(&["--hostname-override", "   "]).contains("--hostname-override"));
}

#[test]
fn list_and_bool_flags_accept_upstreams_spellings() {
    let cfg = resolve(&[
        "--nodeport-addresses",
        "10.0.0.0/8,192.168.0.0/16",
        "--feature-gates",
        "A=true,B=false",
        "--iptables-localhost-nodeports=false",
        "--bind-address-hard-fail",
        "--detect-local-mode",
        "InterfaceNamePrefix",
        "--pod-interface-name-prefix",
        "veth",
    ]);
    assert_eq!(
        cfg.node_port_addresses,
        vec!["10.0.0.0/8", "192.168.0.0/16"]
    );
    assert_eq!(cfg.feature_gates.get("B"), Some(&false));
    assert_eq!(cfg.iptables.localhost_node_ports, Some(false));
    assert!(cfg.bind_address_hard_fail);
    assert_eq!(cfg.detect_local_mode(), LocalMode::InterfaceNamePrefix);
    assert_eq!(
        resolve(&["--nodeport-addresses", "primary"]).node_port_addresses,
        vec!["primary"]
    );
}

#[test]
fn listener_flags_take_a_bare_ip_and_the_deprecated_port_flag_can_disable_them() {
    let cfg = resolve(&["--healthz-bind-address", "127.0.0.1", "--metrics-port", "0"]);
    assert_eq!(cfg.healthz_bind_address, "127.0.0.1:10256");
    assert_eq!(cfg.metrics_bind_address, "");
}

#[test]
fn unknown_modes_are_refused_by_the_command_line_parser() {
    for mode in ["kernelspace", "ebpf"] {
        assert!(
            Cli::try_parse_from(["kproxy", "--proxy-mode", mode]).is_err(),
            "{mode}"
        );
    }
    assert!(Cli::try_parse_from(["kproxy", "--detect-local-mode", "PodCIDR"]).is_err());
    assert!(Cli::try_parse_from(["kproxy", "--iptables-sync-period", "30"]).is_err());
}

#[test]
fn debug_dump_takes_the_same_proxy_flags_and_an_output_format() {
    let cli = Cli::try_parse_from([
        "kproxy",
        "debug",
        "dump",
        "--config",
        "f.yaml",
        "--hostname-override",
        "n1",
        "--manifests",
        "dir",
        "-o",
        "json",
    ])
    .unwrap();
    let Some(Command::Debug(DebugCommand::Dump(dump))) = cli.command else {
        panic!("not debug dump")
    };
    assert_eq!(dump.output, OutputFormat::Json);
    assert_eq!(dump.flags.hostname_override.as_deref(), Some("n1"));
    assert_eq!(dump.flags.manifests, Some(PathBuf::from("dir")));
    let Some(Command::Debug(DebugCommand::Dump(dump))) =
        Cli::try_parse_from(["kproxy", "debug", "dump"])
            .unwrap()
            .command
    else {
        panic!("not debug dump")
    };
    assert_eq!(dump.output, OutputFormat::Table);
}

#[test]
fn flags_written_with_write_config_to_load_back_as_the_same_config() {
    let path = temp_path("from-flags.yaml");
    let cfg = resolve(&[
        "--proxy-mode",
        "ipvs",
        "--ipvs-scheduler",
        "wrr",
        "--cluster-cidr",
        "10.0.0.0/8",
    ]);
    write_config_to(&cfg, &path).unwrap();
    let back = resolve(&["--config", path.to_str().unwrap()]);
    std::fs::remove_file(&path).unwrap();
    assert_eq!(back, cfg);
}

#[test]
fn a_missing_config_file_is_reported_with_its_path() {
    let err = resolve_config(&flags(&["--config", "/nonexistent/kproxy.yaml"])).unwrap_err();
    assert!(matches!(err, ConfigError::Read { .. }));
    assert!(
        err.to_string().contains("/nonexistent/kproxy.yaml"),
        "{err}"
    );
}
