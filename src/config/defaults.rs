//! Upstream's defaulting, in its two stages:
//! - scheme defaults (pkg/proxy/apis/config/v1alpha1/defaults.go), applied to every decoded
//!   file and to the flag-built config;
//! - platform defaults (cmd/kube-proxy/app/server_linux.go, `platformApplyDefaults`), applied
//!   after flags are merged, because they depend on the final mode.

use std::collections::BTreeMap;
use std::net::IpAddr;

use super::{GoDuration, KubeProxyConfiguration, ProxyMode};

pub const MASQUERADE_BIT: u32 = 14;
pub const HEALTHZ_PORT: u16 = 10256;
pub const METRICS_PORT: u16 = 10249;
/// Upstream's qos.KubeProxyOOMScoreAdj.
pub const OOM_SCORE_ADJ: i32 = -999;
pub const CONTENT_TYPE: &str = "application/vnd.kubernetes.protobuf";
/// Upstream's value for iptables and nftables; ipvs only gets it through the flag path
/// (see `cli::resolve_config`).
pub const SYNC_PERIOD: GoDuration = GoDuration::from_secs(30);
pub const MIN_SYNC_PERIOD: GoDuration = GoDuration::from_secs(1);

impl KubeProxyConfiguration {
    /// Every field at its Go zero value: what an empty file decodes to before defaulting.
    pub(crate) fn zero() -> Self {
        KubeProxyConfiguration {
            feature_gates: BTreeMap::new(),
            client_connection: Default::default(),
            logging: Default::default(),
            hostname_override: String::new(),
            bind_address: String::new(),
            healthz_bind_address: String::new(),
            metrics_bind_address: String::new(),
            bind_address_hard_fail: false,
            enable_profiling: false,
            show_hidden_metrics_for_version: String::new(),
            mode: String::new(),
            iptables: Default::default(),
            ipvs: Default::default(),
            nftables: Default::default(),
            winkernel: Default::default(),
            detect_local_mode: String::new(),
            detect_local: Default::default(),
            cluster_cidr: String::new(),
            node_port_addresses: Vec::new(),
            oom_score_adj: None,
            conntrack: Default::default(),
            config_sync_period: GoDuration::ZERO,
            port_range: String::new(),
            windows_run_as_service: false,
            service_node_port_range: Default::default(),
            iptables_backend: String::new(),
        }
    }

    /// Scheme defaults: zero-valued plain fields and absent pointer fields get upstream's values;
    /// an explicit `0` in a pointer field (e.g. `conntrack.maxPerCore: 0`) is kept.
    pub(crate) fn apply_scheme_defaults(&mut self) {
        if self.bind_address.is_empty() {
            self.bind_address = "0.0.0.0".to_string();
        }
        // An IPv6 bindAddress moves the default listeners to IPv6 too.
        let v4 = !matches!(self.bind_address.parse::<IpAddr>(), Ok(IpAddr::V6(_)));
        let (healthz_host, metrics_host) = if v4 {
            ("0.0.0.0", "127.0.0.1")
        } else {
            ("[::]", "[::1]")
        };
        self.healthz_bind_address = if self.healthz_bind_address.is_empty() {
            format!("{healthz_host}:{HEALTHZ_PORT}")
        } else {
            append_port_if_needed(&self.healthz_bind_address, HEALTHZ_PORT)
        };
        self.metrics_bind_address = if self.metrics_bind_address.is_empty() {
            format!("{metrics_host}:{METRICS_PORT}")
        } else {
            append_port_if_needed(&self.metrics_bind_address, METRICS_PORT)
        };
        self.oom_score_adj.get_or_insert(OOM_SCORE_ADJ);

        let ipt = &mut self.iptables;
        default_zero(&mut ipt.sync_period, SYNC_PERIOD);
        default_zero(&mut ipt.min_sync_period, MIN_SYNC_PERIOD);
        ipt.localhost_node_ports.get_or_insert(true);
        ipt.masquerade_bit.get_or_insert(MASQUERADE_BIT as i32);
        // ipvs.minSyncPeriod deliberately stays 0s: upstream only defaults ipvs.syncPeriod.
        default_zero(&mut self.ipvs.sync_period, SYNC_PERIOD);
        let nft = &mut self.nftables;
        default_zero(&mut nft.sync_period, SYNC_PERIOD);
        default_zero(&mut nft.min_sync_period, MIN_SYNC_PERIOD);
        nft.masquerade_bit.get_or_insert(MASQUERADE_BIT as i32);

        let ct = &mut self.conntrack;
        ct.max_per_core.get_or_insert(32 * 1024);
        ct.min.get_or_insert(128 * 1024);
        ct.tcp_established_timeout
            .get_or_insert(GoDuration::from_secs(24 * 3600));
        // One hour keeps CLOSE_WAIT entries around as long as typical server-side timeouts.
        ct.tcp_close_wait_timeout
            .get_or_insert(GoDuration::from_secs(3600));
        default_zero(&mut self.config_sync_period, GoDuration::from_secs(15 * 60));

        let cc = &mut self.client_connection;
        if cc.content_type.is_empty() {
            cc.content_type = CONTENT_TYPE.to_string();
        }
        if cc.qps == 0.0 {
            cc.qps = 5.0;
        }
        if cc.burst == 0 {
            cc.burst = 10;
        }

        // component-base's SetRecommendedLoggingConfiguration.
        let log = &mut self.logging;
        if log.format.is_empty() {
            log.format = "text".to_string();
        }
        default_zero(&mut log.flush_frequency, GoDuration::from_secs(5));
    }

    /// Platform defaults: an empty mode becomes kproxy's default mode ([`default_mode`]; upstream's
    /// is iptables, which kproxy does not have yet), nftables serves NodePorts only on the node's
    /// primary IPs unless told otherwise, and local traffic is detected by cluster CIDR.
    pub fn apply_platform_defaults(&mut self) {
        if self.mode.is_empty() {
            let mode = default_mode();
            // Said aloud: an operator coming from kube-proxy expects iptables here.
            tracing::info!(mode = %mode, "no proxy mode given: using kproxy's default, the first mode this build has (upstream's default, iptables, is not in it)");
            self.mode = mode.to_string();
        }
        if self.mode == "nftables" && self.node_port_addresses.is_empty() {
            self.node_port_addresses = vec!["primary".to_string()];
        }
        if self.detect_local_mode.is_empty() {
            self.detect_local_mode = "ClusterCIDR".to_string();
        }
    }

    /// Scheme defaults only: the starting point the command-line flags are applied to.
    pub fn scheme_defaults() -> Self {
        let mut cfg = Self::zero();
        cfg.apply_scheme_defaults();
        cfg
    }
}

/// The mode used when none is given: the first of kproxy's registry, which lists its modes in
/// upstream's order of preference (iptables first, once kproxy has it). Today: nftables.
pub fn default_mode() -> ProxyMode {
    kproxy_modes::registry::MODES
        .first()
        .and_then(|m| m.name.parse().ok())
        .unwrap_or(ProxyMode::Nftables)
}

fn default_zero(d: &mut GoDuration, value: GoDuration) {
    if d.is_zero() {
        *d = value;
    }
}

/// A bare IP gets the port appended; anything else (already host:port, or not an IP, which
/// validation reports) is left alone.
pub fn append_port_if_needed(addr: &str, port: u16) -> String {
    match addr.parse::<IpAddr>() {
        Ok(ip) => std::net::SocketAddr::new(ip, port).to_string(),
        Err(_) => addr.to_string(),
    }
}
