//! `/configz`: the configuration as upstream's configz serves it.
//!
//! Upstream registers its *internal* KubeProxyConfiguration under the group name, and that type
//! has no JSON tags: the document uses Go field names (`HealthzBindAddress`), in declaration
//! order, with the internal layout (a `Linux` section holding conntrack, masqueradeAll and
//! oomScoreAdj; sync periods at the top, resolved for the selected mode). Go writes nil slices
//! and maps as `null`.

use serde::Serialize;
use serde_json::Value;

use crate::config::KubeProxyConfiguration;

/// The group configz files the configuration under.
pub const CONFIGZ_GROUP: &str = "kubeproxy.config.k8s.io";

/// JSON text of one value.
fn j<T: Serialize + ?Sized>(v: &T) -> String {
    serde_json::to_string(v).expect("config values serialize")
}

/// An object with fields in the given order (serde_json's map would sort them).
fn obj(fields: &[(&str, String)]) -> String {
    let body: Vec<String> = fields
        .iter()
        .map(|(k, v)| format!("{}:{v}", j(k)))
        .collect();
    format!("{{{}}}", body.join(","))
}

/// Go's encoding of a possibly-nil slice.
fn list(v: &[String]) -> String {
    if v.is_empty() { "null".into() } else { j(v) }
}

/// The `/configz` document.
pub fn configz(cfg: &KubeProxyConfiguration) -> String {
    let ct = &cfg.conntrack;
    let conntrack = obj(&[
        ("MaxPerCore", j(&ct.max_per_core)),
        ("Min", j(&ct.min)),
        ("TCPEstablishedTimeout", j(&ct.tcp_established_timeout)),
        ("TCPCloseWaitTimeout", j(&ct.tcp_close_wait_timeout)),
        ("TCPBeLiberal", j(&ct.tcp_be_liberal)),
        ("UDPTimeout", j(&ct.udp_timeout)),
        ("UDPStreamTimeout", j(&ct.udp_stream_timeout)),
    ]);
    let linux = obj(&[
        ("Conntrack", conntrack),
        ("MasqueradeAll", j(&cfg.effective_masquerade_all())),
        ("OOMScoreAdj", j(&cfg.oom_score_adj)),
    ]);
    let cc = &cfg.client_connection;
    let client = obj(&[
        ("Kubeconfig", j(&cc.kubeconfig)),
        ("AcceptContentTypes", j(&cc.accept_content_types)),
        ("ContentType", j(&cc.content_type)),
        ("QPS", j(&cc.qps)),
        ("Burst", j(&cc.burst)),
    ]);
    let ipvs = &cfg.ipvs;
    let wk = &cfg.winkernel;
    let cluster_cidrs: Vec<String> = cfg
        .cluster_cidr
        .split(',')
        .filter(|c| !c.is_empty())
        .map(str::to_owned)
        .collect();
    let gates = if cfg.feature_gates.is_empty() {
        "null".into()
    } else {
        j(&cfg.feature_gates)
    };
    let config = obj(&[
        ("Linux", linux),
        (
            "Windows",
            obj(&[("RunAsService", j(&cfg.windows_run_as_service))]),
        ),
        ("FeatureGates", gates),
        ("ClientConnection", client),
        // The logging section is component-base's versioned type, which has JSON tags.
        ("Logging", j(&cfg.logging)),
        ("HostnameOverride", j(&cfg.hostname_override)),
        ("BindAddress", j(&cfg.bind_address)),
        ("HealthzBindAddress", j(&cfg.healthz_bind_address)),
        ("MetricsBindAddress", j(&cfg.metrics_bind_address)),
        ("BindAddressHardFail", j(&cfg.bind_address_hard_fail)),
        ("EnableProfiling", j(&cfg.enable_profiling)),
        (
            "ShowHiddenMetricsForVersion",
            j(&cfg.show_hidden_metrics_for_version),
        ),
        ("Mode", j(&cfg.mode)),
        (
            "IPTables",
            obj(&[
                ("MasqueradeBit", j(&cfg.iptables.masquerade_bit)),
                ("LocalhostNodePorts", j(&cfg.iptables.localhost_node_ports)),
            ]),
        ),
        (
            "IPVS",
            obj(&[
                ("Scheduler", j(&ipvs.scheduler)),
                ("ExcludeCIDRs", list(&ipvs.exclude_cidrs)),
                ("StrictARP", j(&ipvs.strict_arp)),
                ("TCPTimeout", j(&ipvs.tcp_timeout)),
                ("TCPFinTimeout", j(&ipvs.tcp_fin_timeout)),
                ("UDPTimeout", j(&ipvs.udp_timeout)),
            ]),
        ),
        (
            "Winkernel",
            obj(&[
                ("NetworkName", j(&wk.network_name)),
                ("SourceVip", j(&wk.source_vip)),
                ("EnableDSR", j(&wk.enable_dsr)),
                ("RootHnsEndpointName", j(&wk.root_hns_endpoint_name)),
                ("ForwardHealthCheckVip", j(&wk.forward_health_check_vip)),
            ]),
        ),
        (
            "NFTables",
            obj(&[("MasqueradeBit", j(&cfg.nftables.masquerade_bit))]),
        ),
        ("DetectLocalMode", j(&cfg.detect_local_mode)),
        (
            "DetectLocal",
            obj(&[
                ("BridgeInterface", j(&cfg.detect_local.bridge_interface)),
                ("ClusterCIDRs", list(&cluster_cidrs)),
                (
                    "InterfaceNamePrefix",
                    j(&cfg.detect_local.interface_name_prefix),
                ),
            ]),
        ),
        ("NodePortAddresses", list(&cfg.node_port_addresses)),
        (
            "SyncPeriod",
            j(&Value::String(go_duration(cfg.effective_sync_period()))),
        ),
        (
            "MinSyncPeriod",
            j(&Value::String(go_duration(cfg.effective_min_sync_period()))),
        ),
        ("ConfigSyncPeriod", j(&cfg.config_sync_period)),
    ]);
    obj(&[(CONFIGZ_GROUP, config)])
}

fn go_duration(d: std::time::Duration) -> String {
    crate::config::GoDuration(d).to_string()
}
