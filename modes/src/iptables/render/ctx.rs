//! What every rule of one family needs: the family's spelling, the masquerade mark and the
//! pod-traffic matches, computed once per sync.

use std::net::IpAddr;

use super::Options;
use crate::model::{IpFamily, LocalTrafficDetector, NodePortIps, NodeSettings, Protocol};

/// One family's facts for rendering.
#[derive(Clone, Debug)]
pub struct FamilyCtx<'a> {
    pub family: IpFamily,
    pub node: &'a NodeSettings,
    /// `0x4000/0x4000`-style match and the bare mark.
    pub mark: String,
    /// Matches for "from this node's pods", one rule each (any of them).
    pub if_local: Vec<String>,
    /// The match for "not from this node's pods"; `None` when no detector is set.
    pub if_not_local: Option<String>,
    /// NodePorts answer on 127.0.0.1 (IPv4 with `iptables.localhostNodePorts` only).
    pub localhost_node_ports: bool,
    pub drop_invalid: bool,
    /// Upstream's large cluster mode: per-endpoint rules without comments.
    pub large_cluster: bool,
}

impl<'a> FamilyCtx<'a> {
    pub fn new(family: IpFamily, node: &'a NodeSettings, options: Options) -> Self {
        let (if_local, if_not_local) = detect_local(&node.local_traffic);
        Self {
            family,
            node,
            mark: format!("{:#x}", node.masquerade_mark),
            if_local,
            if_not_local,
            localhost_node_ports: options.localhost_node_ports && family == IpFamily::V4,
            drop_invalid: options.drop_invalid,
            large_cluster: false,
        }
    }

    pub fn large_cluster(mut self, large: bool) -> Self {
        self.large_cluster = large;
        self
    }

    /// A per-endpoint rule's comment and the space after it; nothing in large cluster mode.
    pub fn endpoint_comment(&self, text: &str) -> String {
        match self.large_cluster {
            true => String::new(),
            false => format!("{} ", comment(text)),
        }
    }

    /// Whether NodePorts are served on loopback: IPv4, the setting on, and a loopback address
    /// among the node-port IPs (every local address, or a CIDR covering 127.0.0.1), as upstream.
    pub fn loopback_node_ports(&self) -> bool {
        self.localhost_node_ports
            && match &self.node.node_port_ips {
                NodePortIps::AllLocal => true,
                NodePortIps::Only(ips) => ips.iter().any(IpAddr::is_loopback),
            }
    }

    /// The loopback network of the family, for the NodePort dispatch exclusions.
    pub fn loopback_net(&self) -> &'static str {
        match self.family {
            IpFamily::V4 => "127.0.0.0/8",
            IpFamily::V6 => "::1/128",
        }
    }
}

/// Upstream's detect-local matches. With several CIDRs (dual cluster CIDRs of one family), "is
/// local" is one rule per CIDR; "is not local" can only name the first in one rule, as
/// upstream's iptables mode (which takes one CIDR per family).
fn detect_local(d: &LocalTrafficDetector) -> (Vec<String>, Option<String>) {
    match d {
        LocalTrafficDetector::None => (Vec::new(), None),
        LocalTrafficDetector::Cidrs(cidrs) => (
            cidrs.iter().map(|c| format!("-s {c}")).collect(),
            cidrs.first().map(|c| format!("! -s {c}")),
        ),
        LocalTrafficDetector::BridgeInterface(br) => {
            (vec![format!("-i {br}")], Some(format!("! -i {br}")))
        }
        LocalTrafficDetector::InterfaceNamePrefix(p) => {
            (vec![format!("-i {p}+")], Some(format!("! -i {p}+")))
        }
    }
}

/// `-m tcp -p tcp`: the protocol and its match module, as upstream writes them.
pub fn proto(p: Protocol) -> String {
    let p = p.as_str().to_ascii_lowercase();
    format!("-m {p} -p {p}")
}

/// A `-m comment` match; the text is quoted for iptables-restore.
pub fn comment(text: &str) -> String {
    format!("-m comment --comment \"{}\"", text.replace('"', "'"))
}
