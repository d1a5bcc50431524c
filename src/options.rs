//! From the resolved KubeProxyConfiguration to the options the compute reads.

use kproxy_modes::registry::{Backend, IptablesSettings, IpvsSettings, ModeSettings};

use crate::{
    config::{KubeProxyConfiguration, LocalMode},
    desired::{
        DetectLocal, ProxyOptions,
        node_ports::{NodePortRules, bind_port},
    },
};

/// This node's name: `hostnameOverride`, else the kernel's hostname, lowercased as upstream.
pub fn node_name(cfg: &KubeProxyConfiguration) -> String {
    let name = if cfg.hostname_override.trim().is_empty() {
        std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default()
    } else {
        cfg.hostname_override.clone()
    };
    name.trim().to_lowercase()
}

/// What the configured modes' constructors read: each mode's own settings.
pub fn mode_settings(cfg: &KubeProxyConfiguration) -> ModeSettings {
    let ipvs = &cfg.ipvs;
    ModeSettings {
        netns: None,
        iptables: IptablesSettings {
            localhost_node_ports: cfg.iptables.localhost_node_ports.unwrap_or(true),
            // The flag's parser admits only these names; anything else is `auto`.
            backend: match cfg.iptables_backend.as_str() {
                "nft" => Some(Backend::Nft),
                "legacy" => Some(Backend::Legacy),
                _ => None,
            },
        },
        ipvs: IpvsSettings {
            scheduler: ipvs.scheduler.clone(),
            strict_arp: ipvs.strict_arp,
            // Validated when the configuration was read: a bad CIDR never gets here.
            exclude_cidrs: ipvs
                .exclude_cidrs
                .iter()
                .filter_map(|c| c.parse().ok())
                .collect(),
            tcp_timeout: ipvs.tcp_timeout.0,
            tcp_fin_timeout: ipvs.tcp_fin_timeout.0,
            udp_timeout: ipvs.udp_timeout.0,
        },
    }
}

pub fn proxy_options(cfg: &KubeProxyConfiguration) -> ProxyOptions {
    let detect_local = match cfg.detect_local_mode() {
        LocalMode::ClusterCidr => DetectLocal::ClusterCidr(cfg.cluster_cidrs()),
        LocalMode::NodeCidr => DetectLocal::NodeCidr,
        LocalMode::BridgeInterface => {
            DetectLocal::BridgeInterface(cfg.detect_local.bridge_interface.clone())
        }
        LocalMode::InterfaceNamePrefix => {
            DetectLocal::InterfaceNamePrefix(cfg.detect_local.interface_name_prefix.clone())
        }
    };
    ProxyOptions {
        node_name: node_name(cfg),
        detect_local,
        node_port_addresses: cfg.node_port_addresses.clone(),
        masquerade_all: cfg.effective_masquerade_all(),
        masquerade_bit: cfg.effective_masquerade_bit(),
        service_cidrs: Vec::new(),
        node_ports: node_port_rules(cfg),
    }
}

/// The range, and the ports kproxy's own servers listen on: a NodePort DNAT there would hand
/// kproxy's health or metrics to a pod.
fn node_port_rules(cfg: &KubeProxyConfiguration) -> NodePortRules {
    let own = [
        (
            &cfg.healthz_bind_address,
            "kproxy's health port (healthzBindAddress)",
        ),
        (
            &cfg.metrics_bind_address,
            "kproxy's metrics port (metricsBindAddress)",
        ),
    ];
    NodePortRules {
        range: cfg.service_node_port_range,
        reserved: own
            .into_iter()
            .filter_map(|(addr, what)| Some((bind_port(addr)?, what)))
            .collect(),
    }
}
