//! The companion nftables table (`ip kproxy-ipvs`, `ip6 kproxy-ipvs`): what upstream's ipvs mode
//! does with iptables and ipsets, here with sets and verdict maps in one table of kproxy's own.
//!
//! Hooks and priorities: IPVS translates at `input` (priority 98/99) and `output` (-99), so the
//! filter chains here run at -110, before it, and see the original VIP. They drop or reject new
//! connections to paths without endpoints, enforce loadBalancerSourceRanges, reject ports of a
//! VIP that no virtual server has (upstream's KUBE-IPVS-FILTER), drop unallocated service IPs,
//! and set the masquerade mark; `nat-postrouting` masquerades marked and hairpin connections
//! (IPVS keeps conntrack entries, `net.ipv4.vs.conntrack=1`, so NAT sees its flows).
//!
//! Full syncs replace the tables; partial ones add and delete only the elements that changed.

use std::collections::{BTreeMap, BTreeSet};

use kproxy_dataplane::nft::{BaseChain, ChainType, Family, Hook, NftTransaction};

use super::plan::Plan;
use crate::{
    model::{DesiredState, IpFamily, Masquerade, NoEndpoints, NoEndpointsVerdict, ServicePort},
    nftables::render::ctx::{FamilyCtx, proto},
};

/// Our table in each family; nothing outside it is created or deleted.
pub const TABLE: &str = "kproxy-ipvs";

const VIP_ADDRS: &str = "vip-addrs";
const VIP_PORTS: &str = "vip-ports";
const CLUSTER_IPS: &str = "cluster-ips";
const NODEPORT_IPS: &str = "nodeport-ips";
const HAIRPIN: &str = "hairpin";
const FIREWALL_IPS: &str = "firewall-ips";
const FIREWALL_ALLOWED: &str = "firewall-allowed";
const NO_ENDPOINT_SERVICES: &str = "no-endpoint-services";
const NO_ENDPOINT_NODEPORTS: &str = "no-endpoint-nodeports";
const EXTERNAL_SERVICES: &str = "external-services";
const EXTERNAL_NODEPORTS: &str = "external-nodeports";
const MARK_MASQ: &str = "mark-for-masquerade";
const MASQ_NODE_ORIGIN: &str = "masquerade-node-origin";
const REJECT_CHAIN: &str = "reject-chain";

/// The fixed chains and how many rules [`render_base`] writes in each (the drift check counts
/// them): name, base chain or not.
pub const CHAINS: [&str; 12] = [
    "filter-prerouting",
    "filter-input",
    "filter-forward",
    "filter-output",
    "nat-postrouting",
    "firewall-check",
    "endpoints-check",
    "vip-filter",
    "mark-services",
    MARK_MASQ,
    MASQ_NODE_ORIGIN,
    REJECT_CHAIN,
];

/// One element: its set, key, and value for a map.
pub type Elem = (&'static str, String, Option<String>);

/// Every element of every set, per family: what a partial sync diffs.
pub type Elements = BTreeMap<IpFamily, BTreeSet<Elem>>;

pub fn nft_family(f: IpFamily) -> Family {
    match f {
        IpFamily::V4 => Family::Ip,
        IpFamily::V6 => Family::Ip6,
    }
}

/// Replaces our table of each family (both always: a family no longer served loses its
/// table) with the fixed part and every element.
pub fn render_full(desired: &DesiredState, elements: &Elements) -> NftTransaction {
    let mut tx = NftTransaction::new();
    for f in [IpFamily::V4, IpFamily::V6] {
        tx.add_table(nft_family(f), TABLE, None);
        tx.delete_table(nft_family(f), TABLE);
    }
    for fam in &desired.families {
        let ctx = FamilyCtx::new(fam.family, &fam.node);
        render_base(&ctx, &mut tx);
        let mut by_set: BTreeMap<&str, Vec<String>> = BTreeMap::new();
        for (set, key, value) in elements.get(&fam.family).into_iter().flatten() {
            by_set.entry(set).or_default().push(text(key, value));
        }
        for (set, elems) in by_set {
            tx.add_elements(ctx.family, TABLE, set, &elems);
        }
    }
    tx
}

fn text(key: &str, value: &Option<String>) -> String {
    match value {
        Some(v) => format!("{key} : {v}"),
        None => key.to_owned(),
    }
}

/// The element changes from `old` to `new`: deletions (by key) first, then additions.
pub fn render_partial(old: &Elements, new: &Elements) -> NftTransaction {
    let mut tx = NftTransaction::new();
    let empty = BTreeSet::new();
    for (fam, new_elems) in new {
        let old_elems = old.get(fam).unwrap_or(&empty);
        let family = nft_family(*fam);
        let mut gone: BTreeMap<&str, Vec<String>> = BTreeMap::new();
        for (set, key, _) in old_elems.difference(new_elems) {
            gone.entry(set).or_default().push(key.clone());
        }
        for (set, keys) in gone {
            tx.delete_elements(family, TABLE, set, &keys);
        }
        let mut added: BTreeMap<&str, Vec<String>> = BTreeMap::new();
        for (set, key, value) in new_elems.difference(old_elems) {
            added.entry(set).or_default().push(text(key, value));
        }
        for (set, elems) in added {
            tx.add_elements(family, TABLE, set, &elems);
        }
    }
    tx
}

/// The table's fixed part: chains, rules and empty sets.
fn render_base(ctx: &FamilyCtx, tx: &mut NftTransaction) {
    let (f, t, addr) = (ctx.family, TABLE, ctx.addr_type);
    tx.add_table(f, t, Some("rules for kproxy's ipvs mode"));
    let vip_key = format!("{addr} . inet_proto . inet_service");
    let sets = [
        (VIP_ADDRS, addr.to_owned(), ""),
        (VIP_PORTS, vip_key.clone(), ""),
        (CLUSTER_IPS, addr.to_owned(), ""),
        (NODEPORT_IPS, addr.to_owned(), ""),
        (HAIRPIN, format!("{addr} . {addr}"), ""),
        (FIREWALL_IPS, vip_key.clone(), ""),
        (
            FIREWALL_ALLOWED,
            format!("{vip_key} . {addr}"),
            " flags interval;",
        ),
    ];
    for (name, ty, flags) in sets {
        tx.add_set(f, t, name, &format!("type {ty};{flags}"));
    }
    let port_key = "inet_proto . inet_service";
    for (name, key) in [
        (NO_ENDPOINT_SERVICES, vip_key.as_str()),
        (NO_ENDPOINT_NODEPORTS, port_key),
        (EXTERNAL_SERVICES, vip_key.as_str()),
        (EXTERNAL_NODEPORTS, port_key),
    ] {
        tx.add_map(f, t, name, &format!("type {key} : verdict;"));
    }
    let base = |chain_type, hook, priority| {
        Some(BaseChain {
            chain_type,
            hook,
            priority,
        })
    };
    let before_ipvs = -110;
    tx.add_chain(
        f,
        t,
        "filter-prerouting",
        base(ChainType::Filter, Hook::Prerouting, before_ipvs),
    );
    tx.add_chain(
        f,
        t,
        "filter-input",
        base(ChainType::Filter, Hook::Input, before_ipvs),
    );
    tx.add_chain(
        f,
        t,
        "filter-forward",
        base(ChainType::Filter, Hook::Forward, before_ipvs),
    );
    tx.add_chain(
        f,
        t,
        "filter-output",
        base(ChainType::Filter, Hook::Output, before_ipvs),
    );
    tx.add_chain(
        f,
        t,
        "nat-postrouting",
        base(ChainType::Nat, Hook::Postrouting, 100),
    );
    for chain in &CHAINS[5..] {
        tx.add_chain(f, t, chain, None);
    }
    for (chain, rule) in rules(ctx) {
        tx.add_rule(f, t, chain, &rule);
    }
}

/// The fixed rules, `(chain, rule)` in order.
fn rules(ctx: &FamilyCtx) -> Vec<(&'static str, String)> {
    let (ipx, mark) = (ctx.ipx, &ctx.mark);
    let vip = format!("{ipx} daddr . meta l4proto . th dport");
    let nodeport = format!("{ipx} daddr @{NODEPORT_IPS} meta l4proto . th dport");
    let new = "ct state new";
    let mut out = vec![
        ("filter-prerouting", format!("{new} jump firewall-check")),
        ("filter-prerouting", format!("{new} jump mark-services")),
        ("filter-output", format!("{new} jump firewall-check")),
        ("filter-output", format!("{new} jump endpoints-check")),
        ("filter-output", format!("{new} jump vip-filter")),
        ("filter-output", format!("{new} jump mark-services")),
        ("filter-input", format!("{new} jump endpoints-check")),
        ("filter-input", format!("{new} jump vip-filter")),
        (
            "firewall-check",
            format!("{vip} @{FIREWALL_IPS} {vip} . {ipx} saddr != @{FIREWALL_ALLOWED} drop"),
        ),
        (
            "endpoints-check",
            format!("{vip} vmap @{NO_ENDPOINT_SERVICES}"),
        ),
        (
            "endpoints-check",
            format!("{nodeport} vmap @{NO_ENDPOINT_NODEPORTS}"),
        ),
        // A VIP is a local address: a port of it that no virtual server has would reach the
        // node's own sockets. Refuse it, as upstream's KUBE-IPVS-FILTER does.
        (
            "vip-filter",
            format!(
                "{ipx} daddr @{VIP_ADDRS} meta l4proto {{ tcp, udp, sctp }} {vip} != @{VIP_PORTS} reject"
            ),
        ),
        (MARK_MASQ, format!("meta mark set meta mark or {mark}")),
        (
            MASQ_NODE_ORIGIN,
            format!("fib saddr type local jump {MARK_MASQ}"),
        ),
        (REJECT_CHAIN, "reject".to_owned()),
        ("mark-services", format!("{vip} vmap @{EXTERNAL_SERVICES}")),
        (
            "mark-services",
            format!("{nodeport} vmap @{EXTERNAL_NODEPORTS}"),
        ),
        // Hairpin: an endpoint reached through a VIP from itself must see the node, not itself.
        (
            "nat-postrouting",
            format!("{ipx} saddr . {ipx} daddr @{HAIRPIN} masquerade"),
        ),
        ("nat-postrouting", format!("meta mark & {mark} == 0 return")),
        (
            "nat-postrouting",
            format!("meta mark set meta mark xor {mark}"),
        ),
        ("nat-postrouting", "masquerade fully-random".to_owned()),
    ];
    let masq_cluster = match (ctx.node.masquerade_all, &ctx.if_not_local) {
        (true, _) => Some(String::new()),
        (false, Some(not_local)) => Some(format!("{not_local} ")),
        (false, None) => None,
    };
    if let Some(cond) = masq_cluster {
        let rule = format!("{ipx} daddr @{CLUSTER_IPS} {cond}jump {MARK_MASQ}");
        out.push(("mark-services", rule));
    }
    if !ctx.node.service_cidrs.is_empty() {
        let cidrs: Vec<String> = ctx
            .node
            .service_cidrs
            .iter()
            .map(ToString::to_string)
            .collect();
        // An address of the service range that is no VIP was never allocated: drop it rather
        // than let it be routed out.
        let rule = format!(
            "{ipx} daddr != @{VIP_ADDRS} {ipx} daddr {{ {} }} drop",
            cidrs.join(", ")
        );
        out.push(("filter-forward", rule.clone()));
        out.push(("filter-output", rule));
    }
    out
}

/// Every element the desired state and the plan give, per family.
pub fn elements(desired: &DesiredState, plan: &Plan) -> Elements {
    let mut out = Elements::new();
    for fam in &desired.families {
        let set = out.entry(fam.family).or_default();
        for ip in plan.vips.iter().filter(|ip| IpFamily::of(ip) == fam.family) {
            set.insert((VIP_ADDRS, ip.to_string(), None));
        }
        for ip in plan.nodeport_ips.get(&fam.family).into_iter().flatten() {
            set.insert((NODEPORT_IPS, ip.to_string(), None));
        }
        for sp in fam.services.values() {
            port_elements(sp, set);
        }
    }
    out
}

fn no_endpoints(n: NoEndpoints) -> String {
    match n.verdict {
        NoEndpointsVerdict::Reject => format!("goto {REJECT_CHAIN}"),
        NoEndpointsVerdict::Drop => "drop".to_owned(),
    }
}

/// The elements one Service port needs (shared ones, a cluster IP of several ports, are
/// reference-counted by the caller).
pub fn elements_of_port(sp: &ServicePort) -> Vec<Elem> {
    let mut out = BTreeSet::new();
    port_elements(sp, &mut out);
    out.into_iter().collect()
}

/// The element changes `deleted` (by key) then `added`, one statement per set.
pub fn render_changes(deleted: &[(IpFamily, Elem)], added: &[(IpFamily, Elem)]) -> NftTransaction {
    let mut tx = NftTransaction::new();
    let mut gone: BTreeMap<(IpFamily, &str), Vec<String>> = BTreeMap::new();
    for (fam, (set, key, _)) in deleted {
        gone.entry((*fam, set)).or_default().push(key.clone());
    }
    for ((fam, set), keys) in gone {
        tx.delete_elements(nft_family(fam), TABLE, set, &keys);
    }
    let mut new: BTreeMap<(IpFamily, &str), Vec<String>> = BTreeMap::new();
    for (fam, (set, key, value)) in added {
        new.entry((*fam, set)).or_default().push(text(key, value));
    }
    for ((fam, set), elems) in new {
        tx.add_elements(nft_family(fam), TABLE, set, &elems);
    }
    tx
}

fn port_elements(sp: &ServicePort, out: &mut BTreeSet<Elem>) {
    let p = proto(sp.name.protocol);
    let key = |ip: &std::net::IpAddr| format!("{ip} . {p} . {}", sp.port);
    let mut add = |set, k: String, v: Option<String>| out.insert((set, k, v));
    add(CLUSTER_IPS, sp.cluster_ip.to_string(), None);
    for ip in sp.vips() {
        add(VIP_ADDRS, ip.to_string(), None);
        add(VIP_PORTS, key(&ip), None);
    }
    if let Some(n) = sp.internal.when_empty {
        add(
            NO_ENDPOINT_SERVICES,
            key(&sp.cluster_ip),
            Some(no_endpoints(n)),
        );
    }
    for ep in sp.endpoints.cluster.iter().chain(&sp.endpoints.local) {
        add(HAIRPIN, format!("{0} . {0}", ep.ip()), None);
    }
    let Some(ext) = &sp.external else { return };
    let masq = match ext.masquerade {
        Masquerade::Always => format!("jump {MARK_MASQ}"),
        Masquerade::NodeOriginOnly => format!("jump {MASQ_NODE_ORIGIN}"),
    };
    for ip in sp.external_ips.iter().chain(&sp.load_balancer_ips) {
        add(EXTERNAL_SERVICES, key(ip), Some(masq.clone()));
        if let Some(n) = ext.path.when_empty {
            add(NO_ENDPOINT_SERVICES, key(ip), Some(no_endpoints(n)));
        }
    }
    if !sp.lb_allowed_sources.is_empty() {
        for ip in &sp.load_balancer_ips {
            add(FIREWALL_IPS, key(ip), None);
            for src in &sp.lb_allowed_sources {
                add(FIREWALL_ALLOWED, format!("{} . {src}", key(ip)), None);
            }
        }
    }
    if let Some(np) = sp.node_port {
        let npkey = format!("{p} . {np}");
        add(EXTERNAL_NODEPORTS, npkey.clone(), Some(masq));
        if let Some(n) = ext.path.when_empty {
            add(NO_ENDPOINT_NODEPORTS, npkey, Some(no_endpoints(n)));
        }
    }
}
