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

use kproxy_dataplane::nft::{BaseChain, ChainType, Family, Hook, NftTransaction};

use crate::model::{
    DesiredState, FamilyState, IpFamily, NoEndpointsVerdict, NodePortIps, Protocol, ServicePort,
};
use crate::nftables::names::{
    CLUSTER_IPS, CLUSTER_IPS_CHECK, FILTER_FORWARD, FILTER_INPUT, FILTER_OUTPUT,
    FILTER_OUTPUT_POST_DNAT, FILTER_PREROUTING, FIREWALL_CHECK, FIREWALL_IPS, NAT_OUTPUT,
    NAT_PREROUTING, NO_ENDPOINT_NODEPORTS, NO_ENDPOINT_SERVICES, NODEPORT_ENDPOINTS_CHECK,
    NODEPORT_IPS, POD_CIDRS, REJECT_CHAIN, SERVICE_ENDPOINTS_CHECK, ServiceNames,
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

const DSTNAT: i32 = -100;

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
        base: base(&ctx, fam, l),
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

/// The addresses NodePorts are captured on: `None` for every local address; loopback is left
/// out as in nftables mode (a DNAT from 127.0.0.1 off loopback needs route_localnet).
fn nodeport_ips(fam: &FamilyState) -> Option<Vec<IpAddr>> {
    match &fam.node.node_port_ips {
        NodePortIps::AllLocal => None,
        NodePortIps::Only(ips) => Some(ips.iter().filter(|i| !i.is_loopback()).copied().collect()),
    }
}

/// One statement of a family's fixed part.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Stmt {
    /// `add set` / `add map` (true) with its spec.
    Set(&'static str, bool, String),
    Chain(&'static str, Option<BaseChain>),
    Rule(&'static str, String),
}

const BASE_CHAINS: [(&str, ChainType, Hook, i32); 7] = [
    (
        FILTER_PREROUTING,
        ChainType::Filter,
        Hook::Prerouting,
        DSTNAT - 10,
    ),
    (FILTER_INPUT, ChainType::Filter, Hook::Input, DSTNAT - 10),
    (
        FILTER_FORWARD,
        ChainType::Filter,
        Hook::Forward,
        DSTNAT - 10,
    ),
    (FILTER_OUTPUT, ChainType::Filter, Hook::Output, DSTNAT - 10),
    (
        FILTER_OUTPUT_POST_DNAT,
        ChainType::Filter,
        Hook::Output,
        DSTNAT + 10,
    ),
    (NAT_PREROUTING, ChainType::Nat, Hook::Prerouting, DSTNAT),
    (NAT_OUTPUT, ChainType::Nat, Hook::Output, DSTNAT),
];

/// `(chain, rule)` of the fixed dispatch: the nftables mode's checks (before DNAT for the
/// firewall, after it for REJECT and the Service CIDR drop), then the capture.
const JUMPS: [(&str, &str, &str); 10] = [
    (FILTER_PREROUTING, "ct state new ", FIREWALL_CHECK),
    (FILTER_OUTPUT, "ct state new ", FIREWALL_CHECK),
    (FILTER_INPUT, "ct state new ", NODEPORT_ENDPOINTS_CHECK),
    (FILTER_INPUT, "ct state new ", SERVICE_ENDPOINTS_CHECK),
    (FILTER_FORWARD, "ct state new ", SERVICE_ENDPOINTS_CHECK),
    (FILTER_OUTPUT, "ct state new ", SERVICE_ENDPOINTS_CHECK),
    (FILTER_FORWARD, "ct state new ", CLUSTER_IPS_CHECK),
    (FILTER_OUTPUT_POST_DNAT, "ct state new ", CLUSTER_IPS_CHECK),
    (NAT_PREROUTING, "", CAPTURE_CHAIN),
    (NAT_OUTPUT, "", CAPTURE_CHAIN),
];

/// The sets and maps of the fixed part (elements come from Services).
fn base_sets(ctx: &FamilyCtx, fam: &FamilyState, b: &mut Vec<Stmt>) {
    let addr = ctx.addr_type;
    let vip_key = format!("{addr} . inet_proto . inet_service");
    for set in [CAPTURE, CAPTURE_LOCAL] {
        b.push(Stmt::Set(set, false, format!("type {vip_key};")));
    }
    for set in [CAPTURE_NODEPORTS, CAPTURE_NODEPORTS_LOCAL] {
        b.push(Stmt::Set(
            set,
            false,
            "type inet_proto . inet_service;".into(),
        ));
    }
    b.push(Stmt::Set(CLUSTER_IPS, false, format!("type {addr};")));
    for map in [NO_ENDPOINT_SERVICES, FIREWALL_IPS] {
        b.push(Stmt::Set(map, true, format!("type {vip_key} : verdict;")));
    }
    let np = "type inet_proto . inet_service : verdict;".to_owned();
    b.push(Stmt::Set(NO_ENDPOINT_NODEPORTS, true, np));
    if let crate::model::LocalTrafficDetector::Cidrs(c) = &fam.node.local_traffic
        && c.len() > 1
    {
        let cidrs: Vec<String> = c.iter().map(ToString::to_string).collect();
        let spec = format!(
            "type {addr}; flags interval; elements = {{ {} }};",
            cidrs.join(", ")
        );
        b.push(Stmt::Set(POD_CIDRS, false, spec));
    }
}

/// The fixed part, applied in order by [`full_tx`].
fn base(ctx: &FamilyCtx, fam: &FamilyState, l: Listeners) -> Vec<Stmt> {
    let ipx = ctx.ipx;
    let mut b = Vec::new();
    base_sets(ctx, fam, &mut b);
    let np_dest = match nodeport_ips(fam) {
        None => Some("fib daddr type local".to_owned()),
        Some(ips) if ips.is_empty() => None,
        Some(ips) => {
            let list: Vec<String> = ips.iter().map(ToString::to_string).collect();
            let spec = format!(
                "type {}; elements = {{ {} }};",
                ctx.addr_type,
                list.join(", ")
            );
            b.push(Stmt::Set(NODEPORT_IPS, false, spec));
            Some(format!("{ipx} daddr @{NODEPORT_IPS}"))
        }
    };
    for (name, chain_type, hook, priority) in BASE_CHAINS {
        let base = BaseChain {
            chain_type,
            hook,
            priority,
        };
        b.push(Stmt::Chain(name, Some(base)));
    }
    for name in [
        CAPTURE_CHAIN,
        RELAY_CHAIN,
        FIREWALL_CHECK,
        SERVICE_ENDPOINTS_CHECK,
    ] {
        b.push(Stmt::Chain(name, None));
    }
    b.push(Stmt::Chain(NODEPORT_ENDPOINTS_CHECK, None));
    b.push(Stmt::Chain(CLUSTER_IPS_CHECK, None));
    // A verdict map cannot hold `reject`: its elements `goto` this chain.
    b.push(Stmt::Chain(REJECT_CHAIN, None));
    b.push(Stmt::Rule(REJECT_CHAIN, "reject".into()));
    let mut rule = |chain, text: String| b.push(Stmt::Rule(chain, text));
    for (from, cond, to) in JUMPS {
        rule(from, format!("{cond}jump {to}"));
    }
    let vip = format!("{ipx} daddr . meta l4proto . th dport");
    rule(FIREWALL_CHECK, format!("{vip} vmap @{FIREWALL_IPS}"));
    rule(
        SERVICE_ENDPOINTS_CHECK,
        format!("{vip} vmap @{NO_ENDPOINT_SERVICES}"),
    );
    rule(
        CLUSTER_IPS_CHECK,
        format!("{ipx} daddr @{CLUSTER_IPS} reject"),
    );
    if !fam.node.service_cidrs.is_empty() {
        let cidrs: Vec<String> = fam
            .node
            .service_cidrs
            .iter()
            .map(|c| c.to_string())
            .collect();
        rule(
            CLUSTER_IPS_CHECK,
            format!("{ipx} daddr {{ {} }} drop", cidrs.join(", ")),
        );
    }
    rule(
        CAPTURE_CHAIN,
        format!("{vip} @{CAPTURE} goto {RELAY_CHAIN}"),
    );
    // The sources of the Local-only captures: this node's pods and the node itself.
    let mut locals: Vec<String> = ctx.if_local.iter().cloned().collect();
    locals.push("fib saddr type local".to_owned());
    for local in &locals {
        rule(
            CAPTURE_CHAIN,
            format!("{local} {vip} @{CAPTURE_LOCAL} goto {RELAY_CHAIN}"),
        );
    }
    if let Some(np) = &np_dest {
        let key = "meta l4proto . th dport";
        rule(
            NODEPORT_ENDPOINTS_CHECK,
            format!("{np} {key} vmap @{NO_ENDPOINT_NODEPORTS}"),
        );
        rule(
            CAPTURE_CHAIN,
            format!("{np} {key} @{CAPTURE_NODEPORTS} goto {RELAY_CHAIN}"),
        );
        for local in &locals {
            let r = format!("{local} {np} {key} @{CAPTURE_NODEPORTS_LOCAL} goto {RELAY_CHAIN}");
            rule(CAPTURE_CHAIN, r);
        }
    }
    let to = |port| match l.addr {
        IpAddr::V4(a) => format!("{a}:{port}"),
        IpAddr::V6(a) => format!("[{a}]:{port}"),
    };
    rule(
        RELAY_CHAIN,
        format!("meta l4proto tcp dnat {ipx} to {}", to(l.tcp)),
    );
    rule(
        RELAY_CHAIN,
        format!("meta l4proto udp dnat {ipx} to {}", to(l.udp)),
    );
    b
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
