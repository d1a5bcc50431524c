//! One Service port's chains, affinity sets and map elements, following upstream's per-packet
//! semantics (see docs/modes/nftables.md for the path of each kind of packet).

use std::collections::{BTreeMap, BTreeSet};

use crate::model::{Endpoint, ServicePort, TrafficPolicy};

use super::{
    super::names::{MARK_MASQ, ServiceNames, slot_map},
    ctx::{FamilyCtx, proto},
    slots,
    state::{Ep, ServiceObjects, Slots, Target, VKey, Verdict, VerdictMap, fingerprint},
};

/// Chain name to its rules, in order: what a transaction needs of a port's chains and the
/// applied state does not keep.
pub type Rules = BTreeMap<String, Vec<String>>;

/// Renders Service port `sp` with slot id `id`: its stored objects and its chains' rules.
pub fn render_service(ctx: &FamilyCtx, sp: &ServicePort, id: u32) -> (ServiceObjects, Rules) {
    let names = ServiceNames::new(&sp.name);
    let p = proto(sp.name.protocol);
    let ipx = ctx.ipx;
    let mut out = ServiceObjects {
        id,
        port: sp.port,
        cluster_ip: sp.cluster_ip,
        ..Default::default()
    };
    let mut verdicts = Vec::new();
    let mut chains = Rules::new();
    let mut sets = BTreeMap::new();

    if !sp.externally_accessible() && sp.session_affinity.is_none() {
        render_plain(sp, &mut out, &mut verdicts);
        out.verdicts = verdicts.into_boxed_slice();
        return (out, chains);
    }

    let cluster_eps = truncated(&sp.endpoints.cluster);
    let local_eps = truncated(&sp.endpoints.local);
    let has_any = sp.endpoints.has_any;
    // A set the port never uses is ignored even if non-empty (the model leaves it empty anyway).
    let external = sp.externally_accessible();
    let uses_local = sp.internal_policy == TrafficPolicy::Local
        || (external && sp.external_policy == TrafficPolicy::Local);
    // The Cluster set also serves the short-circuit of pod and node traffic under eTP=Local.
    let uses_cluster = sp.internal_policy == TrafficPolicy::Cluster || external;
    let cluster_chain = (uses_cluster && !cluster_eps.is_empty()).then(|| names.cluster_chain());
    let local_chain = (uses_local && !local_eps.is_empty()).then(|| names.local_chain());
    let policy_chain = |policy| match policy {
        TrafficPolicy::Cluster => cluster_chain.clone(),
        TrafficPolicy::Local => local_chain.clone(),
    };
    let policy_target = |policy| match policy {
        TrafficPolicy::Cluster => Target::Cluster,
        TrafficPolicy::Local => Target::Local,
    };
    // The chain each kind of traffic ends in; `None` when its endpoint set is empty.
    let internal_chain = policy_chain(sp.internal_policy);
    let external_policy_chain = policy_chain(sp.external_policy);
    let external_chain = (has_any && external).then(|| names.external_chain());

    // No endpoints anywhere: REJECT. Endpoints, but none for this kind of traffic: DROP
    // (after the external chain had its chance to short-circuit pod and node traffic).
    let no_ep_verdict = if has_any {
        Target::Drop
    } else {
        Target::Reject
    };
    let mut verdict = |map, key, target| verdicts.push(Verdict { map, key, target });

    // Cluster IP.
    let cip = VKey::Ip(sp.cluster_ip);
    match &internal_chain {
        Some(_) => verdict(
            VerdictMap::ServiceIps,
            cip,
            policy_target(sp.internal_policy),
        ),
        None => verdict(VerdictMap::NoEndpointServices, cip, no_ep_verdict),
    };

    // External IPs and load-balancer IPs.
    for ip in sp.external_ips.iter().chain(&sp.load_balancer_ips) {
        if external_chain.is_some() {
            verdict(VerdictMap::ServiceIps, VKey::Ip(*ip), Target::External);
        }
        if external_policy_chain.is_none() {
            verdict(VerdictMap::NoEndpointServices, VKey::Ip(*ip), no_ep_verdict);
        }
    }

    // loadBalancerSourceRanges: checked before DNAT for new connections to LB IPs only.
    if !sp.load_balancer_ips.is_empty() && !sp.load_balancer_source_ranges.is_empty() {
        let chain = names.firewall_chain();
        let mut sources: Vec<String> = sp
            .load_balancer_source_ranges
            .iter()
            .map(ToString::to_string)
            .collect();
        // A node whose address is allowed may reach a VIP-style LB that loops back with the
        // LB IP as source, as upstream allows.
        let node_allowed = sp
            .load_balancer_source_ranges
            .iter()
            .any(|r| ctx.node.node_ips.iter().any(|ip| r.contains(ip)));
        if node_allowed {
            sources.extend(sp.load_balancer_ips.iter().map(ToString::to_string));
        }
        chains.insert(
            chain,
            vec![format!("{ipx} saddr != {{ {} }} drop", sources.join(", "))],
        );
        for ip in &sp.load_balancer_ips {
            verdict(VerdictMap::FirewallIps, VKey::Ip(*ip), Target::Firewall);
        }
    }

    // NodePort (not subject to loadBalancerSourceRanges, as upstream).
    if let Some(np) = sp.node_port {
        if external_chain.is_some() {
            verdict(
                VerdictMap::ServiceNodeports,
                VKey::NodePort(np),
                Target::External,
            );
        }
        if external_policy_chain.is_none() {
            verdict(
                VerdictMap::NoEndpointNodeports,
                VKey::NodePort(np),
                no_ep_verdict,
            );
        }
    }

    if let Some(chain) = &external_chain {
        let mut rules = Vec::new();
        match sp.external_policy {
            // Cluster policy may forward off-node: masquerade so replies come back through us.
            TrafficPolicy::Cluster => rules.push(format!("jump {MARK_MASQ}")),
            TrafficPolicy::Local => {
                // Pod and node traffic skips the Local policy, as if it went out to the load
                // balancer and came back; the node's own traffic has a VIP-ish source address,
                // so it is masqueraded.
                if let (Some(local), Some(cluster)) = (&ctx.if_local, &cluster_chain) {
                    rules.push(format!("{local} goto {cluster}"));
                }
                rules.push(format!("fib saddr type local jump {MARK_MASQ}"));
                if let Some(cluster) = &cluster_chain {
                    rules.push(format!("fib saddr type local goto {cluster}"));
                }
            }
        }
        if let Some(target) = &external_policy_chain {
            rules.push(format!("goto {target}"));
        }
        chains.insert(chain.clone(), rules);
    }

    let affinity = sp.session_affinity.map(|a| a.timeout_seconds);
    let mut slot_eps: [Box<[Ep]>; 2] = Default::default();
    for (chain, eps, local) in [
        (&cluster_chain, &cluster_eps, false),
        (&local_chain, &local_eps, true),
    ] {
        let Some(chain) = chain else { continue };
        slot_eps[usize::from(local)] = eps.iter().map(ep).collect();
        let mut rules = Vec::new();
        match affinity {
            None => {
                let offset = slots::offset(id, local);
                let map = slot_map(sp.name.protocol, slots::shard(id));
                out.shard = Some((sp.name.protocol, slots::shard(id)));
                rules.push(format!(
                    "meta l4proto {p} dnat {ipx} to numgen random mod {} offset {offset} map @{map}",
                    eps.len()
                ));
            }
            Some(timeout) => {
                let ep_rules = affinity_rules(ctx, &names, p, eps, timeout, &mut sets, &mut chains);
                rules.extend(ep_rules);
            }
        }
        chains.insert(chain.clone(), rules);
    }
    let [cluster, local] = slot_eps;
    out.slots = Slots::Chains {
        cluster,
        local,
        affinity: affinity.is_some(),
    };
    verdicts.sort_unstable();
    verdicts.dedup();
    out.verdicts = verdicts.into_boxed_slice();
    out.chains = chains
        .iter()
        .map(|(c, rules)| (c.clone(), fingerprint(rules)))
        .collect();
    out.sets = sets.into_iter().collect();
    (out, chains)
}

fn ep(e: &Endpoint) -> Ep {
    (e.ip(), e.addr.port())
}

/// A port reached only through its cluster IP, without affinity (most ports in big clusters):
/// no chain of its own. Its cluster IP dispatches to the shared `pick-N` chain for its endpoint
/// count N, which looks the endpoint up by `cluster IP . port . random index` in
/// `vip-slots-<proto>-N`. nft re-reads every chain of the family on each run, so a chain per Service
/// would make every partial sync cost O(Services).
fn render_plain(sp: &ServicePort, out: &mut ServiceObjects, verdicts: &mut Vec<Verdict>) {
    let key = VKey::Ip(sp.cluster_ip);
    let eps = truncated(sp.internal_endpoints());
    if eps.is_empty() {
        let target = if sp.endpoints.has_any {
            Target::Drop
        } else {
            Target::Reject
        };
        verdicts.push(Verdict {
            map: VerdictMap::NoEndpointServices,
            key,
            target,
        });
        return;
    }
    let n = eps.len() as u32;
    out.pick = Some((sp.name.protocol, n));
    verdicts.push(Verdict {
        map: VerdictMap::ServiceIps,
        key,
        target: Target::Pick(n),
    });
    out.slots = Slots::Vip(eps.iter().map(ep).collect());
}

/// Session affinity (rare): an endpoint chain and a timed source set per endpoint, as upstream.
/// The selection vmap is inline (an anonymous set): acceptable for the few affinity Services.
fn affinity_rules(
    ctx: &FamilyCtx,
    names: &ServiceNames,
    p: &str,
    eps: &[Endpoint],
    timeout: u32,
    sets: &mut BTreeMap<String, String>,
    chains: &mut Rules,
) -> Vec<String> {
    let ipx = ctx.ipx;
    let mut rules = Vec::new();
    let mut choices = Vec::new();
    for (i, ep) in eps.iter().enumerate() {
        let chain = names.endpoint_chain(&ep.addr);
        let set = names.affinity_set(&ep.addr);
        sets.insert(
            set.clone(),
            format!(
                "type {}; flags dynamic,timeout; timeout {timeout}s;",
                ctx.addr_type
            ),
        );
        rules.push(format!("{ipx} saddr @{set} goto {chain}"));
        choices.push(format!("{i} : goto {chain}"));
        chains.insert(
            chain,
            vec![
                format!("update @{set} {{ {ipx} saddr }}"),
                format!("meta l4proto {p} dnat {ipx} to {}", ep.addr),
            ],
        );
    }
    rules.push(format!(
        "numgen random mod {} vmap {{ {} }}",
        eps.len(),
        choices.join(", ")
    ));
    rules
}

/// At most [`slots::MAX_ENDPOINTS`] endpoints per set (the key has 15 bits for them), deduped
/// by address so one endpoint is not weighted twice.
fn truncated(eps: &[Endpoint]) -> Vec<Endpoint> {
    let mut seen = BTreeSet::new();
    let out: Vec<Endpoint> = eps
        .iter()
        .filter(|e| seen.insert(e.addr))
        .take(slots::MAX_ENDPOINTS)
        .cloned()
        .collect();
    if out.len() < eps.len() {
        tracing::warn!(
            endpoints = eps.len(),
            used = out.len(),
            "endpoint set truncated or deduplicated"
        );
    }
    out
}
