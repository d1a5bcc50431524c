//! One Service port's chains, affinity sets and map elements, following upstream's per-packet
//! semantics (see docs/modes/nftables.md for the path of each kind of packet).

use std::collections::BTreeMap;

use crate::model::{
    Endpoint, Masquerade, NoEndpoints, NoEndpointsVerdict, ServicePort, TrafficPolicy,
};

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

    let ext = sp.external.as_ref();
    if ext.is_none() && sp.session_affinity.is_none() {
        render_plain(sp, &mut out, &mut verdicts);
        out.verdicts = verdicts.into_boxed_slice();
        return (out, chains);
    }

    let cluster_eps = capped(&sp.endpoints.cluster);
    let local_eps = capped(&sp.endpoints.local);
    // The sets the port's paths use (the model leaves the others empty anyway); the Cluster set
    // also serves the short-circuit of pod and node traffic under eTP=Local.
    let uses = |set: TrafficPolicy| {
        sp.internal.set == set
            || ext.is_some_and(|e| {
                e.path.set == set
                    || (e.short_circuit_local_traffic && set == TrafficPolicy::Cluster)
            })
    };
    let cluster_chain =
        (uses(TrafficPolicy::Cluster) && !cluster_eps.is_empty()).then(|| names.cluster_chain());
    let local_chain =
        (uses(TrafficPolicy::Local) && !local_eps.is_empty()).then(|| names.local_chain());
    let policy_chain = |policy| match policy {
        TrafficPolicy::Cluster => cluster_chain.clone(),
        TrafficPolicy::Local => local_chain.clone(),
    };
    let policy_target = |policy| match policy {
        TrafficPolicy::Cluster => Target::Cluster,
        TrafficPolicy::Local => Target::Local,
    };
    // The chain each kind of traffic ends in; `None` when its endpoint set is empty.
    let external_policy_chain = ext.and_then(|e| policy_chain(e.path.set));
    // External traffic needs its own chain when it can reach an endpoint: through its path, or
    // (pod and node traffic) through the short-circuit to the Cluster set.
    let external_chain = ext
        .filter(|e| {
            e.path.when_empty.is_none()
                || (e.short_circuit_local_traffic && cluster_chain.is_some())
        })
        .map(|_| names.external_chain());
    // A path without endpoints gets the compute's verdict in the no-endpoint maps (checked after
    // the external chain had its chance to short-circuit pod and node traffic).
    let ext_when_empty = ext.and_then(|e| e.path.when_empty);

    let mut verdict = |map, key, target| verdicts.push(Verdict { map, key, target });

    // Cluster IP.
    let cip = VKey::Ip(sp.cluster_ip);
    match sp.internal.when_empty {
        None => verdict(VerdictMap::ServiceIps, cip, policy_target(sp.internal.set)),
        Some(n) => verdict(VerdictMap::NoEndpointServices, cip, no_endpoints(n)),
    };

    // External IPs and load-balancer IPs.
    for ip in sp.external_ips.iter().chain(&sp.load_balancer_ips) {
        if external_chain.is_some() {
            verdict(VerdictMap::ServiceIps, VKey::Ip(*ip), Target::External);
        }
        if let Some(n) = ext_when_empty {
            verdict(
                VerdictMap::NoEndpointServices,
                VKey::Ip(*ip),
                no_endpoints(n),
            );
        }
    }

    // loadBalancerSourceRanges: checked before DNAT for new connections to LB IPs only.
    if !sp.load_balancer_ips.is_empty() && !sp.lb_allowed_sources.is_empty() {
        let chain = names.firewall_chain();
        let sources: Vec<String> = sp
            .lb_allowed_sources
            .iter()
            .map(ToString::to_string)
            .collect();
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
        if let Some(n) = ext_when_empty {
            verdict(
                VerdictMap::NoEndpointNodeports,
                VKey::NodePort(np),
                no_endpoints(n),
            );
        }
    }

    if let (Some(chain), Some(e)) = (&external_chain, ext) {
        let mut rules = Vec::new();
        // Pod and node traffic skips a Local policy, as if it went out to the load balancer and
        // came back; the node's own traffic has a VIP-ish source address, so it is masqueraded.
        let short_circuit = cluster_chain
            .as_ref()
            .filter(|_| e.short_circuit_local_traffic);
        if let (Some(local), Some(cluster)) = (&ctx.if_local, short_circuit) {
            rules.push(format!("{local} goto {cluster}"));
        }
        match e.masquerade {
            // Cluster policy may forward off-node: masquerade so replies come back through us.
            Masquerade::Always => rules.push(format!("jump {MARK_MASQ}")),
            Masquerade::NodeOriginOnly => {
                rules.push(format!("fib saddr type local jump {MARK_MASQ}"))
            }
        }
        if let Some(cluster) = short_circuit {
            rules.push(format!("fib saddr type local goto {cluster}"));
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
    if let Some(n) = sp.internal.when_empty {
        verdicts.push(Verdict {
            map: VerdictMap::NoEndpointServices,
            key,
            target: no_endpoints(n),
        });
        return;
    }
    let eps = capped(sp.internal_endpoints());
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

/// The no-endpoint map's target for the compute's verdict.
fn no_endpoints(n: NoEndpoints) -> Target {
    match n.verdict {
        NoEndpointsVerdict::Reject => Target::Reject,
        NoEndpointsVerdict::Drop => Target::Drop,
    }
}

/// At most [`slots::MAX_ENDPOINTS`] endpoints per set: the slot key has 15 bits for them (a
/// limit of this mode's key format). The compute already lists each endpoint once.
fn capped(eps: &[Endpoint]) -> Vec<Endpoint> {
    if eps.len() > slots::MAX_ENDPOINTS {
        tracing::warn!(
            endpoints = eps.len(),
            used = slots::MAX_ENDPOINTS,
            "endpoint set truncated"
        );
    }
    eps.iter().take(slots::MAX_ENDPOINTS).cloned().collect()
}
