//! What the compute needs to know about this node and the proxy's settings, resolved from the
//! configuration and the Node object.

use std::net::IpAddr;

use super::node_ports::NodePortRules;
use ipnet::IpNet;
use k8s_openapi::api::core::v1::Node;
use kproxy_modes::model::{
    IpFamily, LocalTrafficDetector, NodePortAddresses, NodePortIps, NodeSettings,
};

/// The label upstream reads for the node's zone (topology hints).
pub const ZONE_LABEL: &str = "topology.kubernetes.io/zone";

/// `detectLocalMode`, with what each mode needs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DetectLocal {
    /// `ClusterCIDR` with these CIDRs (none configured: no source counts as pod traffic).
    ClusterCidr(Vec<IpNet>),
    /// `NodeCIDR`: the Node's `spec.podCIDRs`.
    NodeCidr,
    BridgeInterface(String),
    InterfaceNamePrefix(String),
}

/// The proxy settings the compute uses, taken from KubeProxyConfiguration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProxyOptions {
    /// This node's name (`hostnameOverride`, else the hostname): endpoints with this
    /// `nodeName` are local.
    pub node_name: String,
    pub detect_local: DetectLocal,
    /// `nodePortAddresses`: CIDRs, or the special value `primary`; empty means every address.
    pub node_port_addresses: Vec<String>,
    pub masquerade_all: bool,
    pub masquerade_bit: u32,
    /// Service CIDRs (from ServiceCIDR objects or configuration).
    pub service_cidrs: Vec<IpNet>,
    /// kproxy's `--service-node-port-range` and the ports kproxy serves itself.
    pub node_ports: NodePortRules,
}

impl ProxyOptions {
    /// Defaults for tests and the manifest demo: ClusterCIDR detection with no CIDR, NodePorts on
    /// every address, mark bit 14, as upstream's defaults.
    pub fn for_node(node_name: &str) -> Self {
        Self {
            node_name: node_name.to_owned(),
            detect_local: DetectLocal::ClusterCidr(Vec::new()),
            node_port_addresses: Vec::new(),
            masquerade_all: false,
            masquerade_bit: 14,
            service_cidrs: Vec::new(),
            node_ports: NodePortRules::default(),
        }
    }
}

/// Node facts the compute reads from the Node object.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NodeFacts {
    pub zone: Option<String>,
    /// InternalIPs first, then ExternalIPs, as upstream orders node IPs.
    pub ips: Vec<IpAddr>,
    pub pod_cidrs: Vec<IpNet>,
    /// The node's local addresses (all families), read from the kernel by the agent; needed
    /// only to resolve nodePortAddresses CIDRs to the addresses NodePorts are served on.
    pub local_addresses: Vec<IpAddr>,
}

impl NodeFacts {
    pub fn from_node(node: &Node) -> Self {
        let zone = node
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(ZONE_LABEL))
            .filter(|z| !z.is_empty())
            .cloned();
        let addresses = node
            .status
            .as_ref()
            .and_then(|s| s.addresses.as_deref())
            .unwrap_or_default();
        let mut ips = Vec::new();
        for wanted in ["InternalIP", "ExternalIP"] {
            for a in addresses.iter().filter(|a| a.type_ == wanted) {
                if let Ok(ip) = a.address.parse::<IpAddr>()
                    && !ips.contains(&ip)
                {
                    ips.push(ip);
                }
            }
        }
        let spec = node.spec.as_ref();
        let mut pod_cidrs: Vec<IpNet> = spec
            .and_then(|s| s.pod_cidrs.as_deref())
            .unwrap_or_default()
            .iter()
            .filter_map(|c| c.parse().ok())
            .collect();
        if pod_cidrs.is_empty()
            && let Some(c) = spec
                .and_then(|s| s.pod_cidr.as_deref())
                .and_then(|c| c.parse().ok())
        {
            pod_cidrs.push(c);
        }
        Self {
            zone,
            ips,
            pod_cidrs,
            local_addresses: Vec::new(),
        }
    }
}

/// Everything about the node the per-Service compute needs, for every family.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeContext {
    pub node_name: String,
    pub zone: Option<String>,
    pub families: Vec<(IpFamily, NodeSettings)>,
    pub node_ports: NodePortRules,
}

impl NodeContext {
    /// Serves the families the node has IPs in (dual-stack when it has both, as upstream
    /// detects); a node with no known IPs is served as IPv4, upstream's default family.
    pub fn new(opts: &ProxyOptions, facts: &NodeFacts) -> Self {
        let mut families: Vec<IpFamily> = Vec::new();
        for ip in &facts.ips {
            let f = IpFamily::of(ip);
            if !families.contains(&f) {
                families.push(f);
            }
        }
        if families.is_empty() {
            families.push(IpFamily::V4);
        }
        families.sort();
        let families = families
            .into_iter()
            .map(|f| (f, settings_for(f, opts, facts)))
            .collect();
        Self {
            node_name: opts.node_name.clone(),
            zone: facts.zone.clone(),
            families,
            node_ports: opts.node_ports.clone(),
        }
    }

    pub fn settings(&self, family: IpFamily) -> Option<&NodeSettings> {
        self.families
            .iter()
            .find(|(f, _)| *f == family)
            .map(|(_, s)| s)
    }
}

fn net_family(net: &IpNet) -> IpFamily {
    IpFamily::of(&net.addr())
}

fn settings_for(family: IpFamily, opts: &ProxyOptions, facts: &NodeFacts) -> NodeSettings {
    let in_family = |nets: &[IpNet]| -> Vec<IpNet> {
        nets.iter()
            .filter(|n| net_family(n) == family)
            .copied()
            .collect()
    };
    let node_ips: Vec<IpAddr> = facts
        .ips
        .iter()
        .filter(|ip| IpFamily::of(ip) == family)
        .copied()
        .collect();
    let local_traffic = match &opts.detect_local {
        DetectLocal::ClusterCidr(cidrs) => cidrs_or_none(in_family(cidrs)),
        DetectLocal::NodeCidr => cidrs_or_none(in_family(&facts.pod_cidrs)),
        DetectLocal::BridgeInterface(name) => LocalTrafficDetector::BridgeInterface(name.clone()),
        DetectLocal::InterfaceNamePrefix(p) => LocalTrafficDetector::InterfaceNamePrefix(p.clone()),
    };
    let node_port_addresses = node_port_addresses(family, &opts.node_port_addresses, &node_ips);
    NodeSettings {
        local_traffic,
        node_port_ips: node_port_ips(family, &node_port_addresses, &facts.local_addresses),
        node_port_addresses,
        node_ips,
        service_cidrs: in_family(&opts.service_cidrs),
        masquerade_all: opts.masquerade_all,
        masquerade_mark: 1u32 << opts.masquerade_bit.min(31),
    }
}

fn cidrs_or_none(cidrs: Vec<IpNet>) -> LocalTrafficDetector {
    if cidrs.is_empty() {
        LocalTrafficDetector::None
    } else {
        LocalTrafficDetector::Cidrs(cidrs)
    }
}

/// Upstream: an empty list means every local address; `primary` means the node's IPs; otherwise
/// the CIDRs of this family. A list whose CIDRs are all of the other family means "all" for this
/// family, as upstream's `NodePortAddresses` does (it matches all when it has no CIDR of the family).
fn node_port_addresses(
    family: IpFamily,
    configured: &[String],
    node_ips: &[IpAddr],
) -> NodePortAddresses {
    let mut cidrs = Vec::new();
    for entry in configured {
        if entry == "primary" {
            cidrs.extend(node_ips.iter().take(1).map(|ip| IpNet::from(*ip)));
        } else if let Ok(net) = entry.parse::<IpNet>()
            && net_family(&net) == family
        {
            cidrs.push(net.trunc());
        }
    }
    if cidrs.is_empty() {
        NodePortAddresses::All
    } else {
        NodePortAddresses::Cidrs(cidrs)
    }
}

/// The local addresses of `family` inside nodePortAddresses, sorted, as upstream's
/// `NodePortAddresses.GetNodeIPs` resolves them. Loopback addresses stay in when a CIDR covers
/// them (upstream's health check servers listen there); a mode that cannot serve NodePorts on
/// loopback leaves them out itself (see [`NodePortIps::Only`]).
fn node_port_ips(family: IpFamily, addresses: &NodePortAddresses, local: &[IpAddr]) -> NodePortIps {
    let NodePortAddresses::Cidrs(cidrs) = addresses else {
        return NodePortIps::AllLocal;
    };
    let mut ips: Vec<IpAddr> = (local.iter())
        .filter(|ip| IpFamily::of(ip) == family && cidrs.iter().any(|c| c.contains(*ip)))
        .copied()
        .collect();
    ips.sort();
    ips.dedup();
    NodePortIps::Only(ips)
}

impl ProxyOptions {
    /// Whether NodePorts depend on the node's local addresses (some nodePortAddresses entry,
    /// `primary` included, restricts them): only then need they be read from the kernel.
    pub fn needs_local_addresses(&self) -> bool {
        !self.node_port_addresses.is_empty()
    }
}
