//! The kernel half of the userspace mode: table `kproxy-userspace` (families `ip` and `ip6`)
//! DNATs every captured VIP and NodePort to the relay's listeners (two per family, whatever the
//! number of Services), and keeps in the kernel what a relay cannot do well: REJECT for ports
//! without endpoints, loadBalancerSourceRanges, and the drop of unallocated Service CIDR
//! addresses. The chain names, hooks and priorities are the nftables mode's (see
//! docs/modes/nftables.md); only the dispatch differs: set membership, then one DNAT.
//!
//! Rendered as sets of element texts and the per-Service firewall chains, so that a partial sync
//! is the difference of two renderings (elements added and deleted), whatever changed.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use kproxy_dataplane::nft::{Family, NftTransaction};

pub(crate) mod base;

pub use base::Stmt;

use crate::model::{
    DesiredState, FamilyState, IpFamily, NoEndpointsVerdict, Protocol, ServicePort,
};
use crate::nftables::names::{
    CLUSTER_IPS, FIREWALL_IPS, NO_ENDPOINT_NODEPORTS, NO_ENDPOINT_SERVICES, ServiceNames,
};
use crate::nftables::render::ctx::{FamilyCtx, proto};

pub const TABLE: &str = "kproxy-userspace";
/// VIP tuples relayed whatever the source.
pub const CAPTURE: &str = "capture";
/// VIP tuples relayed for this node's pods and the node only (an eTP=Local path without local
/// endpoints, short-circuited to the Cluster set); others meet the no-endpoint verdict.
pub const CAPTURE_LOCAL: &str = "capture-local";
pub const CAPTURE_NODEPORTS: &str = "capture-nodeports";
pub const CAPTURE_NODEPORTS_LOCAL: &str = "capture-nodeports-local";
const CAPTURE_CHAIN: &str = "capture";
const RELAY_CHAIN: &str = "relay";

/// Where a family's captured traffic is DNATed: the relay's listeners on a node address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Listeners {
    pub addr: IpAddr,
    pub tcp: u16,
    pub udp: u16,
}

/// One family's rendering: everything a sync needs to compare with the previous one.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FamilyCapture {
    /// The fixed part (chains, rules, empty sets): replaced only by a full sync.
    pub base: Vec<Stmt>,
    /// Elements of each set and map, as nft text (`KEY` or `KEY : VERDICT`).
    pub elements: BTreeMap<&'static str, BTreeSet<String>>,
    /// The per-Service firewall chains and their rules.
    pub chains: BTreeMap<String, Vec<String>>,
}

/// Every family's rendering.
pub type Capture = BTreeMap<IpFamily, FamilyCapture>;

pub fn nft_family(f: IpFamily) -> Family {
    match f {
        IpFamily::V4 => Family::Ip,
        IpFamily::V6 => Family::Ip6,
    }
}

/// Renders the families that have listeners; the others are not captured (logged by the mode).
pub fn render(desired: &DesiredState, listeners: &BTreeMap<IpFamily, Listeners>) -> Capture {
    let mut out = Capture::new();
    for fam in &desired.families {
        if let Some(l) = listeners.get(&fam.family) {
            out.insert(fam.family, render_family(fam, *l));
        }
    }
    out
}

fn render_family(fam: &FamilyState, l: Listeners) -> FamilyCapture {
    let ctx = FamilyCtx::new(fam.family, &fam.node);
    let mut out = FamilyCapture {
        base: base::base(&ctx, fam, l),
        ..Default::default()
    };
    for sp in fam.services.values() {
        if sp.name.protocol != Protocol::Sctp {
            render_port(&ctx, sp, &mut out);
        }
    }
    out
}

fn elem(out: &mut FamilyCapture, set: &'static str, text: String) {
    out.elements.entry(set).or_default().insert(text);
}

fn verdict(v: NoEndpointsVerdict) -> &'static str {
    match v {
        NoEndpointsVerdict::Reject => "goto reject-chain",
        NoEndpointsVerdict::Drop => "drop",
    }
}

/// One Service port's elements and firewall chain.
fn render_port(ctx: &FamilyCtx, sp: &ServicePort, out: &mut FamilyCapture) {
    let p = proto(sp.name.protocol);
    let key = |ip: &IpAddr| format!("{ip} . {p} . {}", sp.port);
    elem(out, CLUSTER_IPS, sp.cluster_ip.to_string());
    match sp.internal.when_empty {
        None => elem(out, CAPTURE, key(&sp.cluster_ip)),
        Some(n) => elem(
            out,
            NO_ENDPOINT_SERVICES,
            format!("{} : {}", key(&sp.cluster_ip), verdict(n.verdict)),
        ),
    }
    let Some(ext) = &sp.external else { return };
    // Pods and the node skip an empty Local path to the Cluster set: relayed for them only.
    let (vip_set, np_set) = match ext.path.when_empty {
        None => (Some(CAPTURE), Some(CAPTURE_NODEPORTS)),
        Some(_) if ext.short_circuit_local_traffic && !sp.endpoints.cluster.is_empty() => {
            (Some(CAPTURE_LOCAL), Some(CAPTURE_NODEPORTS_LOCAL))
        }
        Some(_) => (None, None),
    };
    for ip in sp.external_ips.iter().chain(&sp.load_balancer_ips) {
        if let Some(set) = vip_set {
            elem(out, set, key(ip));
        }
        if let Some(n) = ext.path.when_empty {
            let text = format!("{} : {}", key(ip), verdict(n.verdict));
            elem(out, NO_ENDPOINT_SERVICES, text);
        }
    }
    if let Some(np) = sp.node_port {
        if let Some(set) = np_set {
            elem(out, set, format!("{p} . {np}"));
        }
        if let Some(n) = ext.path.when_empty {
            let text = format!("{p} . {np} : {}", verdict(n.verdict));
            elem(out, NO_ENDPOINT_NODEPORTS, text);
        }
    }
    if !sp.load_balancer_ips.is_empty() && !sp.lb_allowed_sources.is_empty() {
        let chain = ServiceNames::new(&sp.name).firewall_chain();
        let sources: Vec<String> = sp
            .lb_allowed_sources
            .iter()
            .map(|s| s.to_string())
            .collect();
        let rule = format!("{} saddr != {{ {} }} drop", ctx.ipx, sources.join(", "));
        for ip in &sp.load_balancer_ips {
            elem(out, FIREWALL_IPS, format!("{} : goto {chain}", key(ip)));
        }
        out.chains.insert(chain, vec![rule]);
    }
}

/// Replaces the families' tables (and deletes the tables of families not rendered).
pub fn full_tx(capture: &Capture) -> NftTransaction {
    let mut tx = NftTransaction::new();
    for f in [IpFamily::V4, IpFamily::V6] {
        tx.add_table(nft_family(f), TABLE, None);
        tx.delete_table(nft_family(f), TABLE);
    }
    for (f, fc) in capture {
        let f = nft_family(*f);
        tx.add_table(
            f,
            TABLE,
            Some("kproxy userspace mode: capture to the relay"),
        );
        for stmt in &fc.base {
            match stmt {
                Stmt::Set(name, false, spec) => tx.add_set(f, TABLE, name, spec),
                Stmt::Set(name, true, spec) => tx.add_map(f, TABLE, name, spec),
                Stmt::Chain(name, base) => tx.add_chain(f, TABLE, name, *base),
                Stmt::Rule(chain, rule) => tx.add_rule(f, TABLE, chain, rule),
            }
        }
        for (chain, rules) in &fc.chains {
            tx.add_chain(f, TABLE, chain, None);
            for r in rules {
                tx.add_rule(f, TABLE, chain, r);
            }
        }
        for (set, elems) in &fc.elements {
            tx.add_elements(f, TABLE, set, &elems.iter().collect::<Vec<_>>());
        }
    }
    tx
}

/// The statements that take the kernel from `old` to `new` (same families and bases).
pub fn partial_tx(old: &Capture, new: &Capture) -> NftTransaction {
    let mut tx = NftTransaction::new();
    let empty = BTreeSet::new();
    for (fam, n) in new {
        let (f, o) = (nft_family(*fam), &old[fam]);
        for (chain, rules) in &n.chains {
            match o.chains.get(chain) {
                Some(r) if r == rules => continue,
                Some(_) => tx.flush_chain(f, TABLE, chain),
                None => tx.add_chain(f, TABLE, chain, None),
            }
            for r in rules {
                tx.add_rule(f, TABLE, chain, r);
            }
        }
        let sets: BTreeSet<&&str> = o.elements.keys().chain(n.elements.keys()).collect();
        for set in &sets {
            let (was, is) = (
                o.elements.get(**set).unwrap_or(&empty),
                n.elements.get(**set).unwrap_or(&empty),
            );
            let gone: Vec<&str> = was
                .difference(is)
                .map(|e| e.split(" : ").next().unwrap_or(e))
                .collect();
            tx.delete_elements(f, TABLE, set, &gone);
        }
        for set in &sets {
            let (was, is) = (
                o.elements.get(**set).unwrap_or(&empty),
                n.elements.get(**set).unwrap_or(&empty),
            );
            let added: Vec<&String> = is.difference(was).collect();
            tx.add_elements(f, TABLE, set, &added);
        }
        for chain in o.chains.keys().filter(|c| !n.chains.contains_key(*c)) {
            tx.delete_chain(f, TABLE, chain);
        }
    }
    tx
}

/// Whether a partial sync can go from `old` to `new`: same families, same fixed parts.
pub fn compatible(old: &Capture, new: &Capture) -> bool {
    old.len() == new.len()
        && new
            .iter()
            .all(|(f, n)| old.get(f).is_some_and(|o| o.base == n.base))
}

#[cfg(test)]
mod tests;
