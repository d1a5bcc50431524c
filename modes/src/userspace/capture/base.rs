//! The fixed part of a family's capture table: base chains at the nftables mode's hooks and
//! priorities, the check chains, the capture and relay chains, and the empty sets and maps.

use std::net::IpAddr;

use kproxy_dataplane::nft::BaseChain;

use super::{
    CAPTURE, CAPTURE_CHAIN, CAPTURE_LOCAL, CAPTURE_NODEPORTS, CAPTURE_NODEPORTS_LOCAL, Listeners,
    RELAY_CHAIN,
};
use crate::model::{FamilyState, NodePortIps};
use crate::nftables::names::{
    CLUSTER_IPS, CLUSTER_IPS_CHECK, FILTER_FORWARD, FILTER_INPUT, FILTER_OUTPUT,
    FILTER_OUTPUT_POST_DNAT, FILTER_PREROUTING, FIREWALL_CHECK, FIREWALL_IPS, NAT_OUTPUT,
    NAT_POSTROUTING, NAT_PREROUTING, NO_ENDPOINT_NODEPORTS, NO_ENDPOINT_SERVICES,
    NODEPORT_ENDPOINTS_CHECK, NODEPORT_IPS, POD_CIDRS, REJECT_CHAIN, SERVICE_ENDPOINTS_CHECK,
};
use crate::nftables::render::ctx::FamilyCtx;

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
pub fn base(ctx: &FamilyCtx, fam: &FamilyState, l: Listeners) -> Vec<Stmt> {
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
    // nftables mode's base chains, without its masquerading (the relay's connections are its own).
    let hooks = crate::nftables::render::base::BASE_CHAINS;
    for (name, chain_type, hook, priority) in hooks.into_iter().filter(|c| c.0 != NAT_POSTROUTING) {
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
