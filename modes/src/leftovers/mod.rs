//! Removal of what upstream kube-proxy leaves on a node it ran on, so a node migrated to kproxy
//! does not keep kube-proxy's stale DNAT rules in front of kproxy's until someone runs
//! `kube-proxy --cleanup`. Run once at start, whatever the mode.
//!
//! kube-proxy's objects are identified as its own `CleanupLeftovers` identifies them (every
//! mode's: `pkg/proxy/{iptables,ipvs,nftables}`): the nftables tables `ip kube-proxy` and
//! `ip6 kube-proxy`; its `KUBE-*` iptables chains by name or service-chain prefix, in both
//! backends and families ([`iptables`]); the dummy link `kube-ipvs0` and the IPVS services on its
//! addresses ([`ipvs`]). The kubelet's `KUBE-*` chains (`KUBE-FIREWALL`, `KUBE-MARK-DROP`,
//! `KUBE-KUBELET-CANARY`, `KUBE-IPTABLES-HINT`), kproxy's own objects and anyone else's are
//! never touched, and no built-in chain or table is flushed.
//!
//! Best effort, as upstream's: one part failing does not stop the others; each removal and
//! each failure is logged and returned.

mod iptables;
mod ipvs;
mod nftables;

use std::fmt;

use kproxy_dataplane::{
    iptables::{Backend, Family as IptFamily, IptablesError, Table},
    nft::{Family as NftFamily, NftError},
};

/// One object of upstream kube-proxy's that was removed. `Display` names it for the log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Removed {
    /// `nftables table ip kube-proxy`
    NftTable { family: NftFamily },
    /// `iptables-nft nat chain KUBE-SVC-X (2 rules)`; the chain was emptied, then deleted.
    IptablesChain {
        backend: Backend,
        family: IptFamily,
        table: Table,
        chain: String,
        rules: usize,
    },
    /// `iptables-legacy nat rule -A PREROUTING ... -j KUBE-SERVICES`: a jump into a removed chain
    /// from a chain that stays.
    IptablesRule {
        backend: Backend,
        family: IptFamily,
        table: Table,
        chain: String,
        spec: String,
    },
    /// `link kube-ipvs0`
    Link { name: String },
    /// `IPVS service TCP 10.96.0.1:443`
    IpvsService { protocol: String, address: String },
}

#[derive(Debug, thiserror::Error)]
pub enum LeftoverError {
    #[error("nftables table {family} kube-proxy: {source}")]
    Nft { family: NftFamily, source: NftError },
    #[error("{tool}: {source}")]
    Iptables { tool: String, source: IptablesError },
    #[error("link {link}: {source}")]
    Link {
        link: &'static str,
        source: kproxy_dataplane::rtnl::RtnlError,
    },
    #[error("{program} failed: {stderr}")]
    Command { program: String, stderr: String },
    #[error("running {program}: {source}")]
    Spawn {
        program: String,
        source: std::io::Error,
    },
}

/// What a removal pass did.
#[derive(Debug, Default)]
pub struct Leftovers {
    pub removed: Vec<Removed>,
    pub failed: Vec<LeftoverError>,
}

/// Removes upstream kube-proxy's leftovers from the host (`netns` `None`) or from a named
/// network namespace, logging each removal (info) and each failure (warn).
pub fn remove_upstream_leftovers(netns: Option<&str>) -> Leftovers {
    remove_upstream_leftovers_but(netns, false)
}

/// [`remove_upstream_leftovers`], leaving `kube-ipvs0` and its virtual servers when
/// `keep_ipvs`: kproxy's ipvs mode takes them over (its first sync keeps what it wants, so
/// connections survive a migration from upstream's ipvs mode, and a restart).
pub fn remove_upstream_leftovers_but(netns: Option<&str>, keep_ipvs: bool) -> Leftovers {
    let mut out = Leftovers::default();
    nftables::remove(netns, &mut out);
    iptables::remove(netns, &mut out);
    if !keep_ipvs {
        ipvs::remove(netns, &mut out);
    }
    for removed in &out.removed {
        tracing::info!(%removed, "removed upstream kube-proxy leftover");
    }
    for error in &out.failed {
        tracing::warn!(%error, "could not remove upstream kube-proxy leftovers");
    }
    out
}

impl fmt::Display for Removed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Removed::NftTable { family } => write!(f, "nftables table {family} kube-proxy"),
            Removed::IptablesChain {
                backend,
                family,
                table,
                chain,
                rules,
            } => {
                let tool = tool(*backend, *family);
                write!(f, "{tool} {table} chain {chain} ({rules} rules)")
            }
            Removed::IptablesRule {
                backend,
                family,
                table,
                chain,
                spec,
            } => {
                let tool = tool(*backend, *family);
                write!(f, "{tool} {table} rule -A {chain} {spec}")
            }
            Removed::Link { name } => write!(f, "link {name}"),
            Removed::IpvsService { protocol, address } => {
                write!(f, "IPVS service {protocol} {address}")
            }
        }
    }
}

/// `iptables-nft`, `ip6tables-legacy`: how the objects' tool names them.
fn tool(backend: Backend, family: IptFamily) -> String {
    format!("{}-{backend}", family.command())
}
