//! One Service port's chains, affinity sets and map elements, following upstream's per-packet
//! semantics (see docs/modes/nftables.md for the path of each kind of packet).

use std::{collections::BTreeSet, net::IpAddr};

use crate::model::{Endpoint, ServicePort, TrafficPolicy};

use super::{
    super::names::{
        FIREWALL_IPS, MARK_MASQ, NO_ENDPOINT_NODEPORTS, NO_ENDPOINT_SERVICES, REJECT_CHAIN,
        SERVICE_IPS, SERVICE_NODEPORTS, ServiceNames, pick_chain, slot_map, vip_slots,
    },
    ctx::{FamilyCtx, proto},
    slots,
    state::{Elem, ServiceObjects},
};

/// Renders Service port `sp` with slot id `id`.
pub fn render_service(ctx: &FamilyCtx, sp: &ServicePort, id: u32) -> ServiceObjects {
    let names = ServiceNames::new(&sp.name);
    let p = proto(sp.name.protocol);
    let ipx = ctx.ipx;
    let mut out = ServiceObjects {
        id,
        cluster_ip: sp.cluster_ip,
        ..Default::default()
    };

    if !sp.externally_accessible() && sp.session_affinity.is_none() {
        render_plain(sp, &mut out);
        return out;
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
    // The chain each kind of traffic ends in; `None` when its endpoint set is empty.
    let internal_chain = policy_chain(sp.internal_policy);
    let external_policy_chain = policy_chain(sp.external_policy);
    let external_chain = (has_any && external).then(|| names.external_chain());

    // No endpoints anywhere: REJECT. Endpoints, but none for this kind of traffic: DROP
    // (after the external chain had its chance to short-circuit pod and node traffic).
    let no_ep_verdict = if has_any {
        "drop".to_owned()
    } else {
        format!("goto {REJECT_CHAIN}")
    };
    let key = |ip: &IpAddr, port: u16| format!("{ip} . {p} . {port}");

    // Cluster IP.
    match &internal_chain {
        Some(chain) => out.elements.insert(Elem::new(
            SERVICE_IPS,
            key(&sp.cluster_ip, sp.port),
            Some(format!("goto {chain}")),
        )),
        None => out.elements.insert(Elem::new(
            NO_ENDPOINT_SERVICES,
            key(&sp.cluster_ip, sp.port),
            Some(no_ep_verdict.clone()),
        )),
    };

    // External IPs and load-balancer IPs.
    for ip in sp.external_ips.iter().chain(&sp.load_balancer_ips) {
        if let Some(chain) = &external_chain {
            out.elements.insert(Elem::new(
                SERVICE_IPS,
                key(ip, sp.port),
                Some(format!("goto {chain}")),
            ));
        }
        if external_policy_chain.is_none() {
            out.elements.insert(Elem::new(
                NO_ENDPOINT_SERVICES,
                key(ip, sp.port),
                Some(no_ep_verdict.clone()),
            ));
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
        out.chains.insert(
            chain.clone(),
            vec![format!("{ipx} saddr != {{ {} }} drop", sources.join(", "))],
        );
        for ip in &sp.load_balancer_ips {
            out.elements.insert(Elem::new(
                FIREWALL_IPS,
                key(ip, sp.port),
                Some(format!("goto {chain}")),
            ));
        }
    }

    // NodePort (not subject to loadBalancerSourceRanges, as upstream).
    if let Some(np) = sp.node_port {
        let np_key = format!("{p} . {np}");
        if let Some(chain) = &external_chain {
            out.elements.insert(Elem::new(
                SERVICE_NODEPORTS,
                np_key.clone(),
                Some(format!("goto {chain}")),
            ));
        }
        if external_policy_chain.is_none() {
            out.elements.insert(Elem::new(
                NO_ENDPOINT_NODEPORTS,
                np_key,
                Some(no_ep_verdict),
            ));
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
        out.chains.insert(chain.clone(), rules);
    }

    let affinity = sp.session_affinity.map(|a| a.timeout_seconds);
    for (chain, eps, local) in [
        (&cluster_chain, &cluster_eps, false),
        (&local_chain, &local_eps, true),
    ] {
        let Some(chain) = chain else { continue };
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
                for (i, ep) in eps.iter().enumerate() {
                    out.elements.insert(Elem::new(
                        &map,
                        (offset + i as u32).to_string(),
                        Some(format!("{} . {}", ep.ip(), ep.addr.port())),
                    ));
                }
            }
            Some(timeout) => {
                rules.extend(affinity_rules(ctx, &names, p, eps, timeout, &mut out));
            }
        }
        out.chains.insert(chain.clone(), rules);
        out.hairpin_ips.extend(eps.iter().map(Endpoint::ip));
    }
    out
}

/// A port reached only through its cluster IP, without affinity (most ports in big clusters):
/// no chain of its own. Its cluster IP dispatches to the shared `pick-N` chain for its endpoint
/// count N, which looks the endpoint up by `cluster IP . port . random index` in
/// `vip-slots-<proto>-N`. nft re-reads every chain of the family on each run, so a chain per Service
/// would make every partial sync cost O(Services).
fn render_plain(sp: &ServicePort, out: &mut ServiceObjects) {
    let p = proto(sp.name.protocol);
    let key = format!("{} . {p} . {}", sp.cluster_ip, sp.port);
    let eps = truncated(sp.internal_endpoints());
    if eps.is_empty() {
        let verdict = if sp.endpoints.has_any {
            "drop".to_owned()
        } else {
            format!("goto {REJECT_CHAIN}")
        };
        out.elements
            .insert(Elem::new(NO_ENDPOINT_SERVICES, key, Some(verdict)));
        return;
    }
    let n = eps.len() as u32;
    out.picks.insert((sp.name.protocol, n));
    out.elements.insert(Elem::new(
        SERVICE_IPS,
        key.clone(),
        Some(format!("goto {}", pick_chain(sp.name.protocol, n))),
    ));
    let map = vip_slots(sp.name.protocol, n);
    for (i, ep) in eps.iter().enumerate() {
        out.elements.insert(Elem::new(
            &map,
            format!("{} . {} . {i}", sp.cluster_ip, sp.port),
            Some(format!("{} . {}", ep.ip(), ep.addr.port())),
        ));
    }
    out.hairpin_ips.extend(eps.iter().map(Endpoint::ip));
}

/// Session affinity (rare): an endpoint chain and a timed source set per endpoint, as upstream.
/// The selection vmap is inline (an anonymous set): acceptable for the few affinity Services.
fn affinity_rules(
    ctx: &FamilyCtx,
    names: &ServiceNames,
    p: &str,
    eps: &[Endpoint],
    timeout: u32,
    out: &mut ServiceObjects,
) -> Vec<String> {
    let ipx = ctx.ipx;
    let mut rules = Vec::new();
    let mut choices = Vec::new();
    for (i, ep) in eps.iter().enumerate() {
        let chain = names.endpoint_chain(&ep.addr);
        let set = names.affinity_set(&ep.addr);
        out.sets.insert(
            set.clone(),
            format!(
                "type {}; flags dynamic,timeout; timeout {timeout}s;",
                ctx.addr_type
            ),
        );
        rules.push(format!("{ipx} saddr @{set} goto {chain}"));
        choices.push(format!("{i} : goto {chain}"));
        out.chains.insert(
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
