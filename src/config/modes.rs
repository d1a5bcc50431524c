//! The two enumerations the rest of kproxy switches on, spelled as upstream spells them.

use std::fmt;
use std::str::FromStr;

/// The proxy modes kproxy implements (`mode` / `--proxy-mode`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ProxyMode {
    Userspace,
    Iptables,
    Nftables,
    Ipvs,
}

impl ProxyMode {
    pub const NAMES: [&'static str; 4] = ["userspace", "iptables", "nftables", "ipvs"];
}

impl fmt::Display for ProxyMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ProxyMode::Userspace => "userspace",
            ProxyMode::Iptables => "iptables",
            ProxyMode::Nftables => "nftables",
            ProxyMode::Ipvs => "ipvs",
        })
    }
}

impl FromStr for ProxyMode {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "userspace" => Ok(ProxyMode::Userspace),
            "iptables" => Ok(ProxyMode::Iptables),
            "nftables" => Ok(ProxyMode::Nftables),
            "ipvs" => Ok(ProxyMode::Ipvs),
            "kernelspace" => Err("kernelspace is Windows-only".to_string()),
            _ => Err(format!(
                "must be one of {} or empty",
                ProxyMode::NAMES.join(", ")
            )),
        }
    }
}

/// How traffic from local pods is recognised (`detectLocalMode` / `--detect-local-mode`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum LocalMode {
    ClusterCidr,
    NodeCidr,
    BridgeInterface,
    InterfaceNamePrefix,
}

impl LocalMode {
    pub const NAMES: [&'static str; 4] = [
        "ClusterCIDR",
        "NodeCIDR",
        "BridgeInterface",
        "InterfaceNamePrefix",
    ];
}

impl fmt::Display for LocalMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            LocalMode::ClusterCidr => "ClusterCIDR",
            LocalMode::NodeCidr => "NodeCIDR",
            LocalMode::BridgeInterface => "BridgeInterface",
            LocalMode::InterfaceNamePrefix => "InterfaceNamePrefix",
        })
    }
}

impl FromStr for LocalMode {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "ClusterCIDR" => Ok(LocalMode::ClusterCidr),
            "NodeCIDR" => Ok(LocalMode::NodeCidr),
            "BridgeInterface" => Ok(LocalMode::BridgeInterface),
            "InterfaceNamePrefix" => Ok(LocalMode::InterfaceNamePrefix),
            _ => Err(format!(
                "must be one of {} or empty",
                LocalMode::NAMES.join(", ")
            )),
        }
    }
}
