//! Per-family rendering context: the family's spellings and the node-wide rule fragments every
//! Service rule reuses.

use kproxy_dataplane::nft::Family;

use crate::model::{IpFamily, LocalTrafficDetector, NodeSettings, Protocol};

use super::super::names::POD_CIDRS;

/// What a rule needs to know about the family and the node, precomputed once per sync.
pub struct FamilyCtx<'a> {
    pub family: Family,
    /// `ip` or `ip6`: the payload expression prefix and the NAT family keyword.
    pub ipx: &'static str,
    /// `ipv4_addr` or `ipv6_addr`.
    pub addr_type: &'static str,
    pub node: &'a NodeSettings,
    /// `0x00004000`-style spelling of the masquerade mark.
    pub mark: String,
    /// Match for traffic from this node's pods, `None` when the detector is `None` (then no
    /// traffic counts as pod traffic and the rules that need the distinction are left out).
    pub if_local: Option<String>,
    pub if_not_local: Option<String>,
}

impl<'a> FamilyCtx<'a> {
    pub fn new(ip_family: IpFamily, node: &'a NodeSettings) -> Self {
        let (family, ipx, addr_type) = match ip_family {
            IpFamily::V4 => (Family::Ip, "ip", "ipv4_addr"),
            IpFamily::V6 => (Family::Ip6, "ip6", "ipv6_addr"),
        };
        let (if_local, if_not_local) = match &node.local_traffic {
            LocalTrafficDetector::None => (None, None),
            // One CIDR inline (no set to bind); several through a named set, because an inline
            // `{ a, b }` in every Service rule would be one anonymous set per rule.
            LocalTrafficDetector::Cidrs(cidrs) if cidrs.len() == 1 => (
                Some(format!("{ipx} saddr {}", cidrs[0])),
                Some(format!("{ipx} saddr != {}", cidrs[0])),
            ),
            LocalTrafficDetector::Cidrs(cidrs) if cidrs.is_empty() => (None, None),
            LocalTrafficDetector::Cidrs(_) => (
                Some(format!("{ipx} saddr @{POD_CIDRS}")),
                Some(format!("{ipx} saddr != @{POD_CIDRS}")),
            ),
            LocalTrafficDetector::BridgeInterface(name) => (
                Some(format!("iifname \"{name}\"")),
                Some(format!("iifname != \"{name}\"")),
            ),
            LocalTrafficDetector::InterfaceNamePrefix(prefix) => (
                Some(format!("iifname \"{prefix}*\"")),
                Some(format!("iifname != \"{prefix}*\"")),
            ),
        };
        Self {
            family,
            ipx,
            addr_type,
            node,
            mark: format!("{:#010x}", node.masquerade_mark),
            if_local,
            if_not_local,
        }
    }

    /// `127.0.0.0/8` or `::1`: NodePorts never match loopback destinations in nftables mode.
    pub fn loopback(&self) -> &'static str {
        match self.family {
            Family::Ip6 => "::1",
            _ => "127.0.0.0/8",
        }
    }
}

/// The protocol as nft spells it (`tcp`, `udp`, `sctp`).
pub fn proto(p: Protocol) -> &'static str {
    match p {
        Protocol::Tcp => "tcp",
        Protocol::Udp => "udp",
        Protocol::Sctp => "sctp",
    }
}
