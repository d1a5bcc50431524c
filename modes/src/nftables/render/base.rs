//! The fixed part of a family's table: base chains at upstream's hooks and priorities, the
//! dispatch and check chains, and the shared maps and sets (empty; elements come from Services).

use std::net::IpAddr;

use kproxy_dataplane::nft::{BaseChain, ChainType, Hook, NftTransaction};

use crate::model::{NodePortAddresses, Protocol};

use super::{
    super::names::*,
    ctx::{FamilyCtx, proto},
    state::MapId,
};

/// Upstream's priorities: filter before DNAT (it must see the original destination), a filter
/// after DNAT on output (for the cluster-IP checks), DNAT at dstnat (-100), SNAT at srcnat (100).
const DSTNAT: i32 = -100;
const SRCNAT: i32 = 100;

/// Shared with the userspace mode's capture table (same hooks and priorities).
pub(crate) const BASE_CHAINS: [(&str, ChainType, Hook, i32); 8] = [
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
    (NAT_POSTROUTING, ChainType::Nat, Hook::Postrouting, SRCNAT),
];

/// `(from base chain, condition, to chain)`, in rule order.
const JUMPS: [(&str, &str, &str); 11] = [
    // REJECT works in input/forward/output; those hooks come after prerouting's DNAT, so a
    // Service with endpoints no longer matches its VIP there.
    (FILTER_INPUT, "ct state new ", NODEPORT_ENDPOINTS_CHECK),
    (FILTER_INPUT, "ct state new ", SERVICE_ENDPOINTS_CHECK),
    (FILTER_FORWARD, "ct state new ", SERVICE_ENDPOINTS_CHECK),
    (FILTER_OUTPUT, "ct state new ", SERVICE_ENDPOINTS_CHECK),
    (FILTER_PREROUTING, "ct state new ", FIREWALL_CHECK),
    (FILTER_OUTPUT, "ct state new ", FIREWALL_CHECK),
    (NAT_OUTPUT, "", SERVICES),
    (NAT_PREROUTING, "", SERVICES),
    (NAT_POSTROUTING, "", MASQUERADING),
    (FILTER_FORWARD, "ct state new ", CLUSTER_IPS_CHECK),
    (FILTER_OUTPUT_POST_DNAT, "ct state new ", CLUSTER_IPS_CHECK),
];

const REGULAR_CHAINS: [&str; 8] = [
    SERVICES,
    MASQUERADING,
    MARK_MASQ,
    SERVICE_ENDPOINTS_CHECK,
    NODEPORT_ENDPOINTS_CHECK,
    FIREWALL_CHECK,
    CLUSTER_IPS_CHECK,
    REJECT_CHAIN,
];

/// Counts, for each fixed chain, the rules `tx` adds to it from statement `from` on (the
/// statements [`render_base`] appended).
pub fn fixed_rule_counts(
    ctx: &FamilyCtx,
    tx: &NftTransaction,
    from: usize,
) -> Vec<(&'static str, u32)> {
    let fixed = BASE_CHAINS.iter().map(|c| c.0).chain(REGULAR_CHAINS);
    let mut counts: Vec<(&'static str, u32)> = fixed.map(|c| (c, 0)).collect();
    let prefix = format!("add rule {} {TABLE} ", ctx.family);
    for line in tx.lines().skip(from) {
        let Some(rest) = line.strip_prefix(&prefix) else {
            continue;
        };
        let chain = rest.split(' ').next().unwrap_or_default();
        if let Some(c) = counts.iter_mut().find(|(name, _)| *name == chain) {
            c.1 += 1;
        }
    }
    counts
}

/// Appends the table's fixed part (table, chains, rules, empty maps and sets) to `tx`.
/// `nodeport_ips` are the local addresses NodePorts accept when not `All`.
pub fn render_base(ctx: &FamilyCtx, nodeport_ips: &[IpAddr], tx: &mut NftTransaction) {
    let (f, t, ipx, addr) = (ctx.family, TABLE, ctx.ipx, ctx.addr_type);
    tx.add_table(f, t, Some("rules for kproxy"));
    for (name, chain_type, hook, priority) in BASE_CHAINS {
        let base = BaseChain {
            chain_type,
            hook,
            priority,
        };
        tx.add_chain(f, t, name, Some(base));
    }
    for name in REGULAR_CHAINS {
        tx.add_chain(f, t, name, None);
    }

    let vip_key = format!("{addr} . inet_proto . inet_service");
    tx.add_set(
        f,
        t,
        CLUSTER_IPS,
        &format!("type {addr}; comment \"active cluster IPs\";"),
    );
    tx.add_set(
        f,
        t,
        HAIRPIN,
        &format!("type {addr} . {addr}; comment \"endpoint IP . itself: hairpin connections\";"),
    );
    for (map, key, comment) in [
        (
            SERVICE_IPS,
            &vip_key,
            "cluster, external and load-balancer IPs",
        ),
        (
            SERVICE_NODEPORTS,
            &"inet_proto . inet_service".to_owned(),
            "NodePorts",
        ),
        (
            NO_ENDPOINT_SERVICES,
            &vip_key,
            "VIPs with no usable endpoints: drop or reject",
        ),
        (
            NO_ENDPOINT_NODEPORTS,
            &"inet_proto . inet_service".to_owned(),
            "NodePorts with no usable endpoints",
        ),
        (
            FIREWALL_IPS,
            &vip_key,
            "load-balancer IPs with source ranges",
        ),
    ] {
        tx.add_map(
            f,
            t,
            map,
            &format!("type {key} : verdict; comment \"{comment}\";"),
        );
    }
    let local_cidrs = match &ctx.node.local_traffic {
        crate::model::LocalTrafficDetector::Cidrs(c) if c.len() > 1 => Some(c),
        _ => None,
    };
    if let Some(cidrs) = local_cidrs {
        tx.add_set(
            f,
            t,
            POD_CIDRS,
            &format!("type {addr}; flags interval; comment \"local pod CIDRs\";"),
        );
        let elems: Vec<String> = cidrs.iter().map(ToString::to_string).collect();
        tx.add_elements(f, t, POD_CIDRS, &elems);
    }

    for (from, cond, to) in JUMPS {
        tx.add_rule(f, t, from, &format!("{cond}jump {to}"));
    }
    tx.add_rule(
        f,
        t,
        MARK_MASQ,
        &format!("meta mark set meta mark or {}", ctx.mark),
    );
    // Hairpin: a DNATed connection whose source is its own endpoint must be masqueraded, or
    // the endpoint would answer itself directly. One set for all Services replaces upstream's
    // per-endpoint `ip saddr <ep> jump mark-for-masquerade` rules.
    tx.add_rule(
        f,
        t,
        MASQUERADING,
        &format!("ct status dnat {ipx} saddr . {ipx} daddr @{HAIRPIN} jump {MARK_MASQ}"),
    );
    tx.add_rule(
        f,
        t,
        MASQUERADING,
        &format!("meta mark & {} == 0 return", ctx.mark),
    );
    // Clear the bit so a packet that is re-routed through us is not masqueraded twice.
    tx.add_rule(
        f,
        t,
        MASQUERADING,
        &format!("meta mark set meta mark xor {}", ctx.mark),
    );
    tx.add_rule(f, t, MASQUERADING, "masquerade fully-random");
    tx.add_rule(f, t, REJECT_CHAIN, "reject");

    let vip_match = format!("{ipx} daddr . meta l4proto . th dport");
    let nodeport_dest = match ctx.node.node_port_addresses {
        NodePortAddresses::All => format!("fib daddr type local {ipx} daddr != {}", ctx.loopback()),
        NodePortAddresses::Cidrs(_) => {
            tx.add_set(
                f,
                t,
                NODEPORT_IPS,
                &format!("type {addr}; comment \"addresses that accept NodePorts\";"),
            );
            let elems: Vec<String> = nodeport_ips.iter().map(ToString::to_string).collect();
            tx.add_elements(f, t, NODEPORT_IPS, &elems);
            format!("{ipx} daddr @{NODEPORT_IPS}")
        }
    };
    tx.add_rule(
        f,
        t,
        SERVICE_ENDPOINTS_CHECK,
        &format!("{vip_match} vmap @{NO_ENDPOINT_SERVICES}"),
    );
    tx.add_rule(
        f,
        t,
        NODEPORT_ENDPOINTS_CHECK,
        &format!("{nodeport_dest} meta l4proto . th dport vmap @{NO_ENDPOINT_NODEPORTS}"),
    );
    tx.add_rule(
        f,
        t,
        FIREWALL_CHECK,
        &format!("{vip_match} vmap @{FIREWALL_IPS}"),
    );
    // After DNAT, a destination still in cluster-ips is a port no Service defines: REJECT;
    // one elsewhere in the service CIDRs is an unallocated IP: DROP.
    tx.add_rule(
        f,
        t,
        CLUSTER_IPS_CHECK,
        &format!("{ipx} daddr @{CLUSTER_IPS} reject"),
    );
    if !ctx.node.service_cidrs.is_empty() {
        let cidrs: Vec<String> = ctx
            .node
            .service_cidrs
            .iter()
            .map(ToString::to_string)
            .collect();
        tx.add_rule(
            f,
            t,
            CLUSTER_IPS_CHECK,
            &format!("{ipx} daddr {{ {} }} drop", cidrs.join(", ")),
        );
    }
    // Masquerade for cluster-IP traffic: everything under masqueradeAll, else what does not
    // come from a local pod (off-node clients routed to the service range may bounce off-node).
    // Upstream writes this rule per Service chain; one rule here has the same effect, since a
    // packet that is not DNATed to an endpoint is rejected or dropped before the mark matters.
    let masq_cond = match (ctx.node.masquerade_all, &ctx.if_not_local) {
        (true, _) => Some(String::new()),
        (false, Some(not_local)) => Some(format!("{not_local} ")),
        (false, None) => None,
    };
    if let Some(cond) = masq_cond {
        tx.add_rule(
            f,
            t,
            SERVICES,
            &format!("{ipx} daddr @{CLUSTER_IPS} {cond}jump {MARK_MASQ}"),
        );
    }
    tx.add_rule(f, t, SERVICES, &format!("{vip_match} vmap @{SERVICE_IPS}"));
    tx.add_rule(
        f,
        t,
        SERVICES,
        &format!("{nodeport_dest} meta l4proto . th dport vmap @{SERVICE_NODEPORTS}"),
    );
}

/// The slot map of one (protocol, shard) (see `slots`): key is a 32-bit slot number, data the
/// endpoint. The data is typed with the map's own protocol (`tcp dport`): nft 1.0.6 refuses
/// `meta l4proto P dnat ... map @m` against an existing map typed with any other protocol, or
/// with `th dport` ("conflicting protocols").
pub fn slot_map_spec(ctx: &FamilyCtx, p: Protocol) -> String {
    format!(
        "typeof numgen random mod 1 : {} daddr . {} dport;",
        ctx.ipx,
        proto(p)
    )
}

/// The shared chain `pick-<proto>-N` and its map `vip-slots-<proto>-N` (see
/// `service::render_plain`).
pub fn render_pick(ctx: &FamilyCtx, (p, n): MapId, tx: &mut NftTransaction) {
    let (f, t, ipx) = (ctx.family, TABLE, ctx.ipx);
    let (chain, map) = (pick_chain(p, n), vip_slots(p, n));
    let l4 = proto(p);
    let spec = format!(
        "typeof {ipx} daddr . {l4} dport . numgen random mod 1 : {ipx} daddr . {l4} dport;"
    );
    tx.add_map(f, t, &map, &spec);
    tx.add_chain(f, t, &chain, None);
    tx.add_rule(
        f,
        t,
        &chain,
        &format!(
            "meta l4proto {l4} dnat {ipx} to {ipx} daddr . {l4} dport . numgen random mod {n} map @{map}"
        ),
    );
}
