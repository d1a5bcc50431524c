//! The config file and command line against upstream kube-proxy's behaviour, using real files
//! in tests/data/config.

use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use kproxy::cli::{Cli, ProxyFlags, resolve_config, write_config_to};
use kproxy::config::{KubeProxyConfiguration, LocalMode, ProxyMode};

// Inline, so that the module is found under tests/config/.
mod config {
    pub mod precedence;
}

fn data(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/config")
        .join(name)
}

fn parse_file(name: &str) -> KubeProxyConfiguration {
    let text = std::fs::read_to_string(data(name)).unwrap();
    KubeProxyConfiguration::from_yaml_str(&text).unwrap_or_else(|e| panic!("{name}: {e}"))
}

fn flags(args: &[&str]) -> ProxyFlags {
    let argv = std::iter::once("kproxy").chain(args.iter().copied());
    Cli::try_parse_from(argv)
        .unwrap_or_else(|e| panic!("{e}"))
        .flags
}

fn resolve(args: &[&str]) -> KubeProxyConfiguration {
    resolve_config(&flags(args)).unwrap_or_else(|e| panic!("{e}"))
}

fn resolve_err(args: &[&str]) -> String {
    resolve_config(&flags(args))
        .expect_err("config should be rejected")
        .to_string()
}

fn temp_path(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!("kproxy-config-test-{}-{name}", std::process::id()))
}

#[test]
fn the_file_upstream_writes_with_write_config_to_parses_to_exactly_the_defaults() {
    // Upstream writes its default mode, iptables, which kproxy's default (nftables) is not; and
    // nodePortAddresses defaults to [primary] only for nftables.
    let expected = KubeProxyConfiguration {
        mode: "iptables".into(),
        node_port_addresses: vec![],
        ..KubeProxyConfiguration::default()
    };
    assert_eq!(parse_file("upstream-defaults.yaml"), expected);
}

#[test]
fn the_defaults_are_upstreams() {
    let cfg = KubeProxyConfiguration::default();
    assert_eq!(cfg.bind_address, "0.0.0.0");
    assert_eq!(cfg.healthz_bind_address, "0.0.0.0:10256");
    assert_eq!(cfg.metrics_bind_address, "127.0.0.1:10249");
    // kproxy's one difference: no mode means the first mode this build has (upstream: iptables).
    assert_eq!(cfg.proxy_mode(), ProxyMode::Nftables);
    assert_eq!(cfg.node_port_addresses, ["primary"]);
    assert_eq!(cfg.detect_local_mode(), LocalMode::ClusterCidr);
    assert_eq!(cfg.effective_masquerade_bit(), 14);
    assert!(!cfg.effective_masquerade_all());
    assert_eq!(cfg.effective_sync_period(), Duration::from_secs(30));
    assert_eq!(cfg.effective_min_sync_period(), Duration::from_secs(1));
    assert_eq!(
        (cfg.client_connection.qps, cfg.client_connection.burst),
        (5.0, 10)
    );
    assert_eq!(
        cfg.client_connection.content_type,
        "application/vnd.kubernetes.protobuf"
    );
    assert_eq!(
        (cfg.conntrack.max_per_core, cfg.conntrack.min),
        (Some(32768), Some(131072))
    );
    assert_eq!(
        cfg.conntrack.tcp_established_timeout.unwrap().0,
        Duration::from_secs(86400)
    );
    assert_eq!(
        cfg.conntrack.tcp_close_wait_timeout.unwrap().0,
        Duration::from_secs(3600)
    );
    assert_eq!(cfg.config_sync_period.0, Duration::from_secs(900));
    assert_eq!(cfg.oom_score_adj, Some(-999));
    assert_eq!(cfg.iptables.localhost_node_ports, Some(true));
    assert!(cfg.validate().is_ok());
}

#[test]
fn a_minimal_file_gets_every_default() {
    assert_eq!(
        parse_file("minimal.yaml"),
        KubeProxyConfiguration::default()
    );
}

#[test]
fn a_json_file_is_accepted_too() {
    let cfg = parse_file("minimal.json");
    assert_eq!(cfg.cluster_cidrs(), vec!["10.244.0.0/16".parse().unwrap()]);
    assert_eq!(
        KubeProxyConfiguration {
            cluster_cidr: String::new(),
            ..cfg
        },
        KubeProxyConfiguration::default()
    );
}

#[test]
fn kubeadms_zero_valued_configmap_is_defaulted_like_an_empty_file() {
    let cfg = parse_file("kubeadm-configmap.yaml");
    cfg.validate().unwrap();
    assert_eq!(cfg.cluster_cidrs().len(), 2);
    let mut expected = KubeProxyConfiguration::default();
    expected.client_connection.kubeconfig = "/var/lib/kube-proxy/kubeconfig.conf".into();
    expected.cluster_cidr = "10.244.0.0/16,fd00:10:244::/56".into();
    assert_eq!(cfg, expected);
}

#[test]
fn an_explicit_zero_in_a_pointer_field_is_kept_rather_than_defaulted() {
    let cfg = parse_file("ipvs.yaml");
    assert_eq!(cfg.conntrack.max_per_core, Some(0));
    assert_eq!(
        cfg.conntrack.tcp_established_timeout.map(|d| d.0),
        Some(Duration::ZERO)
    );
    assert_eq!(cfg.conntrack.min, Some(131072));
}

#[test]
fn an_ipv6_bind_address_moves_the_default_listeners_to_ipv6() {
    let cfg = KubeProxyConfiguration::from_yaml_str(
        "apiVersion: kubeproxy.config.k8s.io/v1alpha1\nkind: KubeProxyConfiguration\nbindAddress: fd00::1\nhealthzBindAddress: 10.1.1.1\n",
    )
    .unwrap();
    assert_eq!(cfg.metrics_bind_address, "[::1]:10249");
    assert_eq!(
        cfg.healthz_bind_address, "10.1.1.1:10256",
        "a bare IP gets the default port"
    );
}

#[test]
fn what_write_config_to_writes_parses_back_to_an_equal_config() {
    for file in [
        "upstream-defaults.yaml",
        "nftables.yaml",
        "ipvs.yaml",
        "kubeadm-configmap.yaml",
    ] {
        let cfg = parse_file(file);
        let path = temp_path(file);
        write_config_to(&cfg, &path).unwrap();
        let back = KubeProxyConfiguration::from_yaml_str(&std::fs::read_to_string(&path).unwrap())
            .unwrap();
        std::fs::remove_file(&path).unwrap();
        assert_eq!(back, cfg, "{file}");
    }
}

#[test]
fn write_config_to_writes_sorted_keys_and_go_durations_like_upstream() {
    // Upstream's defaults (mode iptables, so no [primary] nodePortAddresses).
    let text = KubeProxyConfiguration {
        mode: "iptables".into(),
        node_port_addresses: vec![],
        ..KubeProxyConfiguration::default()
    }
    .to_yaml_string();
    assert!(
        text.starts_with("apiVersion: kubeproxy.config.k8s.io/v1alpha1\n"),
        "{text}"
    );
    for line in [
        "configSyncPeriod: 15m0s",
        "  tcpEstablishedTimeout: 24h0m0s",
        "  qps: 5\n",
        "nodePortAddresses: null",
    ] {
        assert!(text.contains(line), "missing {line:?} in\n{text}");
    }
}

#[test]
fn the_file_picks_the_selected_modes_section() {
    let cfg = parse_file("nftables.yaml");
    assert_eq!(cfg.proxy_mode(), ProxyMode::Nftables);
    assert!(cfg.effective_masquerade_all());
    assert_eq!(cfg.effective_masquerade_bit(), 5);
    assert_eq!(cfg.effective_sync_period(), Duration::from_secs(60));
    assert_eq!(cfg.effective_min_sync_period(), Duration::from_secs(2));
    assert_eq!(
        cfg.node_port_addresses,
        vec!["primary"],
        "nftables defaults to the primary IPs"
    );

    let ipvs = parse_file("ipvs.yaml");
    assert_eq!(ipvs.effective_sync_period(), Duration::from_secs(45));
    assert_eq!(
        ipvs.effective_min_sync_period(),
        Duration::ZERO,
        "ipvs.minSyncPeriod defaults to 0s"
    );
    assert_eq!(
        ipvs.effective_masquerade_bit(),
        14,
        "ipvs uses the iptables bit"
    );
}

macro_rules! rejected {
    ($name:ident, $file:literal, [$($needle:literal),+]) => {
        #[test]
        fn $name() {
            let path = data(concat!("broken/", $file));
            let err = resolve_err(&["--config", path.to_str().unwrap()]);
            $(assert!(err.contains($needle), "{:?} not in error: {err}", $needle);)+
        }
    };
}

rejected!(
    a_file_that_is_not_yaml_is_rejected,
    "bad-yaml.yaml",
    ["not valid yaml", "line 5"]
);
rejected!(
    a_wrong_api_version_is_rejected,
    "wrong-api-version.yaml",
    ["apiVersion", "v1beta1"]
);
rejected!(
    a_wrong_kind_is_rejected,
    "wrong-kind.yaml",
    ["kind", "KubeletConfiguration"]
);
rejected!(
    a_missing_api_version_is_rejected,
    "missing-api-version.yaml",
    ["unsupported apiVersion \"\""]
);
/// Upstream falls back to lenient decoding (with a warning) when a file names fields it does
/// not know, e.g. ones a later release removed: the rest of the file still applies.
#[test]
fn an_unknown_field_is_ignored_and_the_rest_of_the_file_applies() {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/data/config/broken/unknown-field.yaml"
    ))
    .unwrap();
    let cfg = KubeProxyConfiguration::from_yaml_str(&text).expect("lenient decoding");
    let with_extra = text.replace("maxPerCpu", "udpIdleTimeoutRemoved");
    assert_eq!(
        KubeProxyConfiguration::from_yaml_str(&with_extra).unwrap(),
        cfg
    );
    assert_eq!(
        cfg.conntrack.min,
        Some(4242),
        "the known field beside it applies"
    );
    assert!(cfg.validate().is_ok());
}
rejected!(
    a_malformed_duration_is_rejected,
    "bad-duration.yaml",
    ["nftables.syncPeriod", "\"30 seconds\""]
);
rejected!(
    a_negative_duration_is_rejected,
    "negative-duration.yaml",
    ["conntrack.udpTimeout", "\"-5s\"", "negative"]
);
rejected!(
    a_masquerade_bit_of_40_is_rejected,
    "masquerade-bit-40.yaml",
    ["invalid value for iptables.masqueradeBit: 40 (must be between 0 and 31)"]
);
rejected!(
    a_quoted_number_is_a_type_error,
    "masquerade-bit-as-string.yaml",
    ["iptables.masqueradeBit", "\"14\""]
);
rejected!(
    a_bad_bind_address_is_rejected,
    "bad-bind-address.yaml",
    ["bindAddress", "10.0.0.300"]
);
rejected!(
    a_healthz_port_out_of_range_is_rejected,
    "bad-healthz-bind-address.yaml",
    ["healthzBindAddress", "0.0.0.0:99999"]
);
rejected!(
    a_bad_cidr_in_cluster_cidr_is_rejected,
    "bad-cluster-cidr.yaml",
    ["clusterCIDR", "10.300.0.0/16"]
);
rejected!(
    two_cluster_cidrs_of_one_family_are_rejected,
    "two-ipv4-cluster-cidrs.yaml",
    ["clusterCIDR", "one IPv4 and one IPv6"]
);
rejected!(
    an_unknown_mode_is_rejected,
    "unknown-mode.yaml",
    ["invalid value for mode: \"ebpf\""]
);
rejected!(
    the_windows_kernelspace_mode_is_rejected,
    "kernelspace-mode.yaml",
    ["mode", "kernelspace", "Windows"]
);
rejected!(
    a_negative_qps_is_rejected,
    "negative-qps.yaml",
    ["clientConnection.qps: -1"]
);
rejected!(
    a_negative_burst_is_rejected,
    "negative-burst.yaml",
    ["clientConnection.burst: -3"]
);
rejected!(
    an_oom_score_adj_outside_the_kernel_range_is_rejected,
    "oom-score-adj-out-of-range.yaml",
    ["oomScoreAdj: 2000"]
);
rejected!(
    primary_mixed_with_cidrs_is_rejected,
    "primary-mixed-with-cidrs.yaml",
    ["nodePortAddresses[0]", "primary"]
);
rejected!(
    a_node_port_address_that_is_not_a_cidr_is_rejected,
    "bad-nodeport-address.yaml",
    ["nodePortAddresses[1]: \"eth0\""]
);
rejected!(
    an_unknown_detect_local_mode_is_rejected,
    "unknown-detect-local-mode.yaml",
    ["detectLocalMode: \"PodCIDR\""]
);
rejected!(
    bridge_interface_mode_without_a_bridge_is_rejected,
    "bridge-interface-missing.yaml",
    ["detectLocal.bridgeInterface"]
);
rejected!(
    a_min_sync_period_above_the_sync_period_is_rejected,
    "min-sync-above-sync.yaml",
    ["ipvs.minSyncPeriod: 10s"]
);
rejected!(
    an_unknown_ipvs_scheduler_is_rejected,
    "unknown-ipvs-scheduler.yaml",
    ["ipvs.scheduler: \"fastest\""]
);
rejected!(
    every_validation_error_is_reported_at_once,
    "several-errors.yaml",
    [
        "mode: \"ebpf\"",
        "iptables.masqueradeBit: -1",
        "bindAddress: \"nowhere\""
    ]
);

#[test]
fn a_yaml_flow_mapping_is_not_mistaken_for_json() {
    let cfg = KubeProxyConfiguration::from_yaml_str(
        "{apiVersion: kubeproxy.config.k8s.io/v1alpha1, kind: KubeProxyConfiguration, mode: ipvs}",
    )
    .unwrap();
    assert_eq!(cfg.proxy_mode(), ProxyMode::Ipvs);
}
