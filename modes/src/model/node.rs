//! What the desired state knows about the node, per family: node IPs, pod-traffic detection,
//! where NodePorts are opened, Service CIDRs and masquerading.

use std::net::IpAddr;

use ipnet::IpNet;
use serde::Serialize;

/// How kproxy tells traffic from this node's pods apart from other traffic (`detectLocalMode`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case", tag = "mode", content = "value")]
pub enum LocalTrafficDetector {
    /// No source counts as pod traffic.
    None,
    /// Sources inside these CIDRs (`ClusterCIDR`, or the node's `podCIDRs` for `NodeCIDR`).
    Cidrs(Vec<IpNet>),
    /// Packets entering through this bridge interface (`BridgeInterface`).
    BridgeInterface(String),
    /// Packets entering through interfaces with this name prefix (`InterfaceNamePrefix`).
    InterfaceNamePrefix(String),
}

/// Where NodePorts are opened.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case", tag = "mode", content = "cidrs")]
pub enum NodePortAddresses {
    /// Every local address of this family.
    All,
    /// These CIDRs (`primary` already resolved to the node's IPs); the addresses inside them
    /// are in [`NodeSettings::node_port_ips`].
    Cidrs(Vec<IpNet>),
}

/// The node's addresses NodePorts are served on, resolved once by the compute from
/// [`NodePortAddresses`] and the node's local addresses, so that every mode, the health check
/// servers and conntrack reconciliation agree on them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case", tag = "mode", content = "ips")]
pub enum NodePortIps {
    /// Every local address of the family, whatever it is at packet time (nodePortAddresses
    /// names no CIDR of this family). A mode that can match "any local address" in the kernel
    /// (nftables: `fib daddr type local`) needs no list.
    AllLocal,
    /// Exactly these local addresses (those inside nodePortAddresses), sorted. Loopback
    /// addresses are included when a CIDR covers them, as upstream's `GetNodeIPs` returns them:
    /// the health check servers listen there; whether a data plane can serve NodePorts on
    /// loopback is the mode's own limit (nftables cannot, iptables only with localhostNodePorts).
    Only(Vec<IpAddr>),
}

/// Node facts and proxy settings for one IP family.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct NodeSettings {
    pub node_ips: Vec<IpAddr>,
    pub local_traffic: LocalTrafficDetector,
    /// nodePortAddresses as configured for this family (`primary` resolved to the node IP).
    pub node_port_addresses: NodePortAddresses,
    /// The addresses NodePorts are served on: what modes, health checks and conntrack use.
    pub node_port_ips: NodePortIps,
    /// Service CIDRs: an unallocated IP inside them is dropped rather than routed.
    pub service_cidrs: Vec<IpNet>,
    pub masquerade_all: bool,
    /// The fwmark bit that marks a packet for masquerading (`1 << masqueradeBit`).
    pub masquerade_mark: u32,
}
