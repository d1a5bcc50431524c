//! Validation after upstream's pkg/proxy/apis/config/validation: every problem is collected,
//! and each names the v1alpha1 field path and the offending value.

use std::net::{IpAddr, SocketAddr};

use ipnet::IpNet;

use super::{FieldError, GoDuration, KubeProxyConfiguration, LocalMode, ProxyMode};

struct Errors(Vec<FieldError>);

impl Errors {
    fn push(&mut self, field: &str, value: impl std::fmt::Display, reason: impl Into<String>) {
        self.0.push(FieldError {
            field: field.to_string(),
            value: value.to_string(),
            reason: reason.into(),
        });
    }

    fn quoted(&mut self, field: &str, value: &str, reason: impl Into<String>) {
        self.push(field, format!("{value:?}"), reason);
    }
}

const IPVS_SCHEDULERS: &[&str] = &[
    "rr", "wrr", "lc", "wlc", "lblc", "lblcr", "sh", "dh", "sed", "nq", "mh",
];

pub(super) fn validate(cfg: &KubeProxyConfiguration) -> Vec<FieldError> {
    let mut errs = Errors(Vec::new());
    let mode = match cfg.mode.as_str() {
        "" => Some(super::default_mode()),
        m => match m.parse::<ProxyMode>() {
            Ok(mode) => Some(mode),
            Err(reason) => {
                errs.quoted("mode", m, reason);
                None
            }
        },
    };

    masquerade_bit(
        &mut errs,
        "iptables.masqueradeBit",
        cfg.iptables.masquerade_bit,
    );
    if mode == Some(ProxyMode::Nftables) {
        masquerade_bit(
            &mut errs,
            "nftables.masqueradeBit",
            cfg.nftables.masquerade_bit,
        );
    }
    // Only the selected mode's periods are used, so only they are checked (as upstream does).
    let section = match mode {
        Some(ProxyMode::Ipvs) => "ipvs",
        Some(ProxyMode::Nftables) => "nftables",
        _ => "iptables",
    };
    let (sync, min_sync) = cfg.mode_sync_periods();
    if sync.is_zero() {
        errs.push(
            &format!("{section}.syncPeriod"),
            sync,
            "must be greater than 0",
        );
    }
    if min_sync > sync {
        errs.push(
            &format!("{section}.minSyncPeriod"),
            min_sync,
            format!("must not exceed {section}.syncPeriod ({sync})"),
        );
    }
    if mode == Some(ProxyMode::Ipvs) {
        let sched = &cfg.ipvs.scheduler;
        if !sched.is_empty() && !IPVS_SCHEDULERS.contains(&sched.as_str()) {
            errs.quoted(
                "ipvs.scheduler",
                sched,
                format!("must be one of {} or empty", IPVS_SCHEDULERS.join(", ")),
            );
        }
        for (i, cidr) in cfg.ipvs.exclude_cidrs.iter().enumerate() {
            if cidr.parse::<IpNet>().is_err() {
                errs.quoted(
                    &format!("ipvs.excludeCIDRs[{i}]"),
                    cidr,
                    "must be a valid CIDR",
                );
            }
        }
    }

    let ct = &cfg.conntrack;
    for (field, value) in [
        ("conntrack.maxPerCore", ct.max_per_core),
        ("conntrack.min", ct.min),
    ] {
        if let Some(v) = value.filter(|v| *v < 0) {
            errs.push(field, v, "must be greater than or equal to 0");
        }
    }

    let cc = &cfg.client_connection;
    if cc.burst < 0 {
        errs.push(
            "clientConnection.burst",
            cc.burst,
            "must be greater than or equal to 0",
        );
    }
    // Stricter than upstream, which leaves a negative qps to client-go (where it disables rate
    // limiting); a negative value in a config file is almost certainly a typo.
    if cc.qps.is_nan() || cc.qps < 0.0 {
        errs.push(
            "clientConnection.qps",
            cc.qps,
            "must be greater than or equal to 0",
        );
    }

    if let Some(adj) = cfg.oom_score_adj.filter(|a| !(-1000..=1000).contains(a)) {
        errs.push("oomScoreAdj", adj, "must be between -1000 and 1000");
    }
    if cfg.config_sync_period == GoDuration::ZERO {
        errs.push(
            "configSyncPeriod",
            cfg.config_sync_period,
            "must be greater than 0",
        );
    }
    if cfg.bind_address.parse::<IpAddr>().is_err() {
        errs.quoted("bindAddress", &cfg.bind_address, "must be an IP address");
    }
    // An empty listener address disables that server.
    for (field, addr) in [
        ("healthzBindAddress", &cfg.healthz_bind_address),
        ("metricsBindAddress", &cfg.metrics_bind_address),
    ] {
        if !addr.is_empty()
            && addr
                .parse::<SocketAddr>()
                .map(|a| a.port() == 0)
                .unwrap_or(true)
        {
            errs.quoted(
                field,
                addr,
                "must be IP:port with a port between 1 and 65535",
            );
        }
    }

    validate_local_detection(&mut errs, cfg);
    validate_node_port_addresses(&mut errs, &cfg.node_port_addresses);

    let version = &cfg.show_hidden_metrics_for_version;
    if !version.is_empty() && !is_major_minor(version) {
        errs.quoted(
            "showHiddenMetricsForVersion",
            version,
            "must be <major>.<minor>, e.g. 1.16",
        );
    }
    if !cfg.port_range.is_empty() && !is_port_range(&cfg.port_range) {
        errs.quoted(
            "portRange",
            &cfg.port_range,
            "must be a port range like 30000-32767 or 30000+2768",
        );
    }
    let format = &cfg.logging.format;
    if !format.is_empty() && format != "text" && format != "json" {
        errs.quoted("logging.format", format, "must be text or json");
    }
    errs.0
}

fn masquerade_bit(errs: &mut Errors, field: &str, bit: Option<i32>) {
    if let Some(b) = bit.filter(|b| !(0..=31).contains(b)) {
        errs.push(field, b, "must be between 0 and 31");
    }
}

fn validate_local_detection(errs: &mut Errors, cfg: &KubeProxyConfiguration) {
    let mode = match cfg.detect_local_mode.as_str() {
        "" => Some(LocalMode::ClusterCidr),
        m => match m.parse::<LocalMode>() {
            Ok(mode) => Some(mode),
            Err(reason) => {
                errs.quoted("detectLocalMode", m, reason);
                None
            }
        },
    };
    match mode {
        Some(LocalMode::BridgeInterface) if cfg.detect_local.bridge_interface.is_empty() => {
            errs.quoted(
                "detectLocal.bridgeInterface",
                "",
                "must not be empty when detectLocalMode is BridgeInterface",
            );
        }
        Some(LocalMode::InterfaceNamePrefix)
            if cfg.detect_local.interface_name_prefix.is_empty() =>
        {
            errs.quoted(
                "detectLocal.interfaceNamePrefix",
                "",
                "must not be empty when detectLocalMode is InterfaceNamePrefix",
            );
        }
        _ => {}
    }

    // Checked whatever the mode, like upstream: one CIDR, or one per IP family.
    if cfg.cluster_cidr.is_empty() {
        return;
    }
    let parts: Vec<&str> = cfg.cluster_cidr.split(',').collect();
    let mut parsed = Vec::new();
    for part in &parts {
        match part.parse::<IpNet>() {
            Ok(net) => parsed.push(net),
            Err(_) => errs.quoted(
                "clusterCIDR",
                part,
                "must be a valid CIDR, e.g. 10.244.0.0/16 or fd00:10:244::/56",
            ),
        }
    }
    if parts.len() > 2 {
        errs.quoted(
            "clusterCIDR",
            &cfg.cluster_cidr,
            "may contain at most two CIDRs, one per IP family",
        );
    } else if let [a, b] = parsed[..]
        && matches!(a, IpNet::V4(_)) == matches!(b, IpNet::V4(_))
    {
        errs.quoted(
            "clusterCIDR",
            &cfg.cluster_cidr,
            "two CIDRs must be one IPv4 and one IPv6",
        );
    }
}

fn validate_node_port_addresses(errs: &mut Errors, addrs: &[String]) {
    for (i, addr) in addrs.iter().enumerate() {
        let field = format!("nodePortAddresses[{i}]");
        if addr == "primary" {
            if addrs.len() != 1 {
                errs.quoted(
                    &field,
                    addr,
                    "primary cannot be combined with other entries",
                );
            }
        } else if addr.parse::<IpNet>().is_err() {
            errs.quoted(
                &field,
                addr,
                "must be a valid CIDR or the single value primary",
            );
        }
    }
}

fn is_major_minor(v: &str) -> bool {
    let mut parts = v.split('.');
    let num =
        |p: Option<&str>| p.is_some_and(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()));
    num(parts.next()) && num(parts.next()) && parts.next().is_none()
}

/// "base-max" or "base+offset" (inclusive), as upstream's net.ParsePortRange reads it.
fn is_port_range(r: &str) -> bool {
    let port = |s: &str| s.parse::<u16>().ok();
    if let Some((a, b)) = r.split_once('-') {
        matches!((port(a), port(b)), (Some(a), Some(b)) if a <= b)
    } else if let Some((a, n)) = r.split_once('+') {
        matches!((port(a), port(n)), (Some(a), Some(n)) if u32::from(a) + u32::from(n) <= 65535)
    } else {
        port(r).is_some()
    }
}
