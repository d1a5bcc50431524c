//! The fixed part of each table: our chains jumped to from the built-in ones, the jumps, and
//! the rules of those chains that no Service owns (masquerading, forwarding, NodePort dispatch).

use kproxy_dataplane::iptables::Table;

use super::{
    super::names::*,
    ctx::{FamilyCtx, comment},
};
use crate::model::{IpFamily, NodePortIps};

/// A jump from a built-in chain to one of ours, ensured at each full sync and checked for drift.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Jump {
    pub table: Table,
    /// The built-in chain.
    pub from: &'static str,
    /// The rule, as iptables-save prints it back (so that it can be compared as text).
    pub spec: String,
}

/// Anti-martian chain for localhost NodePorts (upstream writes this rule into the kubelet's
/// KUBE-FIREWALL; ours is in a chain of our own).
pub const LOCALNET: &str = "KPROXY-LOCALNET";

/// Upstream's `iptablesJumpChains`, in the order they end up in each built-in chain.
pub fn jumps(ctx: &FamilyCtx) -> Vec<Jump> {
    let new = "-m conntrack --ctstate NEW ";
    let mut out = Vec::new();
    let mut jump = |table, from, cond: &str, text: &str, to: &str| {
        out.push(Jump {
            table,
            from,
            spec: format!("{cond}{} -j {to}", comment(text)),
        })
    };
    let (nat, filter) = (Table::Nat, Table::Filter);
    jump(nat, "PREROUTING", "", "kproxy service portals", SERVICES);
    jump(nat, "OUTPUT", "", "kproxy service portals", SERVICES);
    jump(
        nat,
        "POSTROUTING",
        "",
        "kproxy postrouting rules",
        POSTROUTING,
    );
    let lb = "kproxy load balancer firewall";
    jump(filter, "INPUT", new, lb, FIREWALL);
    jump(filter, "FORWARD", new, lb, FIREWALL);
    jump(filter, "OUTPUT", new, lb, FIREWALL);
    let ext = "kproxy externally-visible service portals";
    jump(filter, "INPUT", new, ext, EXTERNAL_SERVICES);
    jump(filter, "FORWARD", new, ext, EXTERNAL_SERVICES);
    jump(
        filter,
        "INPUT",
        "",
        "kproxy health check service ports",
        NODEPORTS,
    );
    jump(filter, "FORWARD", new, "kproxy service portals", SERVICES);
    jump(filter, "OUTPUT", new, "kproxy service portals", SERVICES);
    jump(filter, "FORWARD", "", "kproxy forwarding rules", FORWARD);
    if ctx.loopback_node_ports() {
        jump(filter, "INPUT", "", "kproxy localhost nodeports", LOCALNET);
    }
    out
}

/// The fixed nat chains and their rules (KPROXY-SERVICES gets the Services' rules first and
/// [`nodeports_tail`] last).
pub fn nat_fixed(ctx: &FamilyCtx) -> Vec<(&'static str, Vec<String>)> {
    let mark = &ctx.mark;
    vec![
        (SERVICES, Vec::new()),
        (NODEPORTS, Vec::new()),
        (MARK_MASQ, vec![format!("-j MARK --or-mark {mark}")]),
        (
            POSTROUTING,
            vec![
                format!("-m mark ! --mark {mark}/{mark} -j RETURN"),
                // Clear the bit so a packet re-routed through us is not masqueraded twice.
                format!("-j MARK --xor-mark {mark}"),
                format!(
                    "{} -j MASQUERADE --random-fully",
                    comment("kproxy service traffic requiring SNAT")
                ),
            ],
        ),
        (CANARY, Vec::new()),
    ]
}

/// The fixed filter chains and their rules (the Services' rules are appended to them).
pub fn filter_fixed(ctx: &FamilyCtx) -> Vec<(&'static str, Vec<String>)> {
    let mark = &ctx.mark;
    let invalid = ctx
        .drop_invalid
        .then(|| "-m conntrack --ctstate INVALID -j DROP".to_owned());
    let mut out = vec![
        (SERVICES, Vec::new()),
        (EXTERNAL_SERVICES, Vec::new()),
        (NODEPORTS, Vec::new()),
        (FIREWALL, Vec::new()),
        (
            FORWARD,
            invalid
                .into_iter()
                .chain([
                    format!(
                        "{} -m mark --mark {mark}/{mark} -j ACCEPT",
                        comment("kproxy forwarding rules")
                    ),
                    format!(
                        "{} -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT",
                        comment("kproxy forwarding conntrack rule")
                    ),
                ])
                .collect(),
        ),
        (CANARY, Vec::new()),
    ];
    if ctx.loopback_node_ports() {
        // route_localnet lets 127.0.0.1 be DNATed off the node; this keeps other hosts from
        // reaching the node's loopback services through it (https://issue.k8s.io/90259).
        out.push((
            LOCALNET,
            vec![format!(
                "-d 127.0.0.0/8 ! -s 127.0.0.0/8 {} -m conntrack ! --ctstate RELATED,ESTABLISHED,DNAT -j DROP",
                comment("block incoming localnet connections")
            )],
        ));
    }
    out
}

/// The last rules of KPROXY-SERVICES: NodePorts, on every local address or on the node-port
/// IPs (loopback only with localhost NodePorts, never for IPv6), as upstream.
pub fn nodeports_tail(ctx: &FamilyCtx) -> Vec<String> {
    let text = comment("kproxy service nodeports; NOTE: this must be the last rule in this chain");
    match &ctx.node.node_port_ips {
        NodePortIps::AllLocal => {
            let not_loopback = match (ctx.family, ctx.loopback_node_ports()) {
                (IpFamily::V4, true) => String::new(),
                _ => format!("! -d {} ", ctx.loopback_net()),
            };
            vec![format!(
                "{text} -m addrtype --dst-type LOCAL {not_loopback}-j {NODEPORTS}"
            )]
        }
        NodePortIps::Only(ips) => ips
            .iter()
            .filter(|ip| !ip.is_loopback() || ctx.loopback_node_ports())
            .map(|ip| format!("{text} -d {ip} -j {NODEPORTS}"))
            .collect(),
    }
}
