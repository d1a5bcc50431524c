//! How the flags combine with `--config` into the effective configuration.

use std::path::Path;

use super::ProxyFlags;
use crate::config::{ConfigError, FieldError, KubeProxyConfiguration, ProxyMode};

/// Builds the effective configuration the way upstream's `Options.Complete` does
/// (cmd/kube-proxy/app/options.go):
///
/// - With `--config`, the file replaces the flag-built config wholesale; the only flags still
///   applied over it are `--hostname-override` and the logging flag `-v`. (`--master`,
///   `--manifests`, `--cleanup`, `--init-only` and `--write-config-to` are not config fields and
///   always apply.)
/// - Without `--config`, every given flag overrides upstream's defaults.
///
/// Platform defaults (mode, nftables' nodePortAddresses, detectLocalMode) come after the merge,
/// then validation.
pub fn resolve_config(flags: &ProxyFlags) -> Result<KubeProxyConfiguration, ConfigError> {
    let text = match &flags.config {
        Some(path) => Some(
            std::fs::read_to_string(path).map_err(|error| ConfigError::Read {
                path: path.clone(),
                error,
            })?,
        ),
        None => None,
    };
    resolve(flags, text.as_deref())
}

/// [`resolve_config`] with `text` standing for the `--config` file: `debug dump` with the
/// running agent's effective configuration, the flags applying over it as over `--config`.
pub fn resolve_config_text(
    flags: &ProxyFlags,
    text: &str,
) -> Result<KubeProxyConfiguration, ConfigError> {
    resolve(flags, Some(text))
}

fn resolve(
    flags: &ProxyFlags,
    config: Option<&str>,
) -> Result<KubeProxyConfiguration, ConfigError> {
    let mut cfg = match config {
        Some(text) => KubeProxyConfiguration::from_yaml_str(text)?,
        None => {
            let mut cfg = KubeProxyConfiguration::scheme_defaults();
            apply_flags(&mut cfg, flags);
            cfg.apply_platform_defaults();
            cfg
        }
    };
    if let Some(range) = flags.service_node_port_range {
        cfg.service_node_port_range = range;
    }
    if let Some(backend) = &flags.iptables_backend {
        cfg.iptables_backend = backend.clone();
    }
    if let Some(v) = flags.v {
        cfg.logging.verbosity = v;
    }
    if let Some(name) = flags.hostname_override.as_deref().filter(|n| !n.is_empty()) {
        let name = name.trim();
        if name.is_empty() {
            return Err(ConfigError::Invalid(vec![FieldError {
                field: "--hostname-override".into(),
                value: format!(
                    "{:?}",
                    flags.hostname_override.as_deref().unwrap_or_default()
                ),
                reason: "must not be blank".into(),
            }]));
        }
        cfg.hostname_override = name.to_lowercase();
    }
    cfg.validate()?;
    Ok(cfg)
}

/// Writes what `--write-config-to` writes.
pub fn write_config_to(cfg: &KubeProxyConfiguration, path: &Path) -> Result<(), ConfigError> {
    std::fs::write(path, cfg.to_yaml_string()).map_err(|error| ConfigError::Write {
        path: path.to_path_buf(),
        error,
    })
}

fn set<T: Clone>(field: &mut T, flag: &Option<T>) {
    if let Some(v) = flag {
        *field = v.clone();
    }
}

fn apply_flags(cfg: &mut KubeProxyConfiguration, f: &ProxyFlags) {
    if let Some(mode) = f.proxy_mode {
        cfg.mode = mode.to_string();
    }
    let mode = cfg.proxy_mode();

    if let Some(gates) = &f.feature_gates {
        cfg.feature_gates
            .extend(gates.iter().map(|(k, v)| (k.clone(), *v)));
    }
    let cc = &mut cfg.client_connection;
    set(&mut cc.kubeconfig, &f.kubeconfig);
    set(&mut cc.content_type, &f.kube_api_content_type);
    set(&mut cc.burst, &f.kube_api_burst);
    set(&mut cc.qps, &f.kube_api_qps);

    set(&mut cfg.bind_address, &f.bind_address);
    set(&mut cfg.healthz_bind_address, &f.healthz_bind_address);
    set(&mut cfg.metrics_bind_address, &f.metrics_bind_address);
    // The deprecated port flags: 0 disables the server, otherwise the port fills in a bare IP.
    for (addr, port, default) in [
        (&mut cfg.healthz_bind_address, f.healthz_port, 10256),
        (&mut cfg.metrics_bind_address, f.metrics_port, 10249),
    ] {
        *addr = match port {
            Some(0) => String::new(),
            port => crate::config::append_port_if_needed(addr, port.unwrap_or(default)),
        };
    }
    set(&mut cfg.bind_address_hard_fail, &f.bind_address_hard_fail);
    set(&mut cfg.enable_profiling, &f.profiling);
    set(
        &mut cfg.show_hidden_metrics_for_version,
        &f.show_hidden_metrics_for_version,
    );

    // Upstream's flags feed one internal masqueradeAll and one pair of sync periods, which its
    // v1alpha1 conversion stores in the selected mode's section; the pair starts from the
    // iptables defaults (so ipvs via flags gets minSyncPeriod 1s, not the file default 0s).
    if let Some(all) = f.masquerade_all {
        match mode {
            ProxyMode::Nftables => cfg.nftables.masquerade_all = all,
            _ => cfg.iptables.masquerade_all = all,
        }
    }
    let (sync_flag, min_sync_flag) = match mode {
        ProxyMode::Ipvs => (f.ipvs_sync_period, f.ipvs_min_sync_period),
        _ => (f.iptables_sync_period, f.iptables_min_sync_period),
    };
    let (sync, min_sync) = cfg.mode_sync_periods_mut();
    *sync = sync_flag.unwrap_or(crate::config::SYNC_PERIOD);
    *min_sync = min_sync_flag.unwrap_or(crate::config::MIN_SYNC_PERIOD);
    // Only the iptables section's bit is flag-settable upstream; nftables keeps its own.
    if let Some(bit) = f.iptables_masquerade_bit {
        cfg.iptables.masquerade_bit = Some(bit);
    }
    if let Some(v) = f.iptables_localhost_nodeports {
        cfg.iptables.localhost_node_ports = Some(v);
    }

    let ipvs = &mut cfg.ipvs;
    set(&mut ipvs.scheduler, &f.ipvs_scheduler);
    set(&mut ipvs.exclude_cidrs, &f.ipvs_exclude_cidrs);
    set(&mut ipvs.strict_arp, &f.ipvs_strict_arp);
    set(&mut ipvs.tcp_timeout, &f.ipvs_tcp_timeout);
    set(&mut ipvs.tcp_fin_timeout, &f.ipvs_tcpfin_timeout);
    set(&mut ipvs.udp_timeout, &f.ipvs_udp_timeout);

    if let Some(m) = f.detect_local_mode {
        cfg.detect_local_mode = m.to_string();
    }
    set(
        &mut cfg.detect_local.bridge_interface,
        &f.pod_bridge_interface,
    );
    set(
        &mut cfg.detect_local.interface_name_prefix,
        &f.pod_interface_name_prefix,
    );
    set(&mut cfg.cluster_cidr, &f.cluster_cidr);
    set(&mut cfg.node_port_addresses, &f.nodeport_addresses);

    if let Some(adj) = f.oom_score_adj {
        cfg.oom_score_adj = Some(adj);
    }
    let ct = &mut cfg.conntrack;
    if let Some(n) = f.conntrack_max_per_core {
        ct.max_per_core = Some(n);
    }
    if let Some(n) = f.conntrack_min {
        ct.min = Some(n);
    }
    if let Some(d) = f.conntrack_tcp_timeout_established {
        ct.tcp_established_timeout = Some(d);
    }
    if let Some(d) = f.conntrack_tcp_timeout_close_wait {
        ct.tcp_close_wait_timeout = Some(d);
    }
    set(&mut ct.tcp_be_liberal, &f.conntrack_tcp_be_liberal);
    set(&mut ct.udp_timeout, &f.conntrack_udp_timeout);
    set(&mut ct.udp_stream_timeout, &f.conntrack_udp_timeout_stream);
    set(&mut cfg.config_sync_period, &f.config_sync_period);
}
