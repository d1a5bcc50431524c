//! One Service port's rules, following upstream's iptables proxier: dispatch rules in the shared
//! chains, a chain per endpoint set (KPROXY-SVC- for Cluster, KPROXY-SVL- for Local), an external
//! chain, a firewall chain, and a chain per endpoint. Every decision comes from the model.

use std::net::IpAddr;

use super::{
    super::names::*,
    PortRules,
    ctx::{FamilyCtx, comment, proto},
};
use crate::model::{Endpoint, NoEndpoints, NoEndpointsVerdict, ServicePort, TrafficPolicy};

/// Renders Service port `sp`.
pub fn render_port(ctx: &FamilyCtx, sp: &ServicePort) -> PortRules {
    let names = ServiceChains::new(&sp.name);
    let mut out = PortRules::default();
    let pname = port_text(sp);
    let m = proto(sp.name.protocol);
    let vip = |ip: &IpAddr| format!("{m} -d {ip} --dport {}", sp.port);
    let ext = sp.external.as_ref();

    // The endpoint-set chains the port's paths use (the Cluster set also serves eTP=Local's
    // short-circuit of pod and node traffic); `None` when the set is empty.
    let uses = |set: TrafficPolicy| {
        sp.internal.set == set
            || ext.is_some_and(|e| {
                e.path.set == set
                    || (e.short_circuit_local_traffic && set == TrafficPolicy::Cluster)
            })
    };
    let set_chain = |set: TrafficPolicy| {
        let eps = sp.endpoints.set(set);
        (uses(set) && !eps.is_empty()).then(|| match set {
            TrafficPolicy::Cluster => names.cluster(),
            TrafficPolicy::Local => names.local(),
        })
    };
    let (cluster, local) = (
        set_chain(TrafficPolicy::Cluster),
        set_chain(TrafficPolicy::Local),
    );
    let chain_of = |set| match set {
        TrafficPolicy::Cluster => cluster.clone(),
        TrafficPolicy::Local => local.clone(),
    };
    for (chain, set) in [
        (&cluster, TrafficPolicy::Cluster),
        (&local, TrafficPolicy::Local),
    ] {
        if let Some(chain) = chain {
            let rules = set_rules(ctx, sp, &names, sp.endpoints.set(set), &mut out);
            out.chains.insert(chain.clone(), rules);
        }
    }

    // Cluster IP: to its set's chain, masquerading off-cluster sources there; else the verdict.
    match (sp.internal.when_empty, chain_of(sp.internal.set)) {
        (None, Some(chain)) => {
            let text = comment(&format!("{pname} cluster IP"));
            let cip = vip(&sp.cluster_ip);
            out.nat(SERVICES, format!("{text} {cip} -j {chain}"));
            let masq = match (ctx.node.masquerade_all, &ctx.if_not_local) {
                (true, _) => Some(String::new()),
                (false, Some(not_local)) => Some(format!("{not_local} ")),
                (false, None) => None,
            };
            if let Some(cond) = masq {
                let rules = out.chains.get_mut(&chain).expect("the set's chain");
                rules.insert(0, format!("{text} {cip} {cond}-j {MARK_MASQ}"));
            }
        }
        (when_empty, _) => {
            let n = when_empty.unwrap_or(NO_ENDPOINTS);
            let rule = format!(
                "{} {} -j {}",
                comment(&why(&pname, n)),
                vip(&sp.cluster_ip),
                target(n)
            );
            out.filter(SERVICES, rule);
        }
    }

    let Some(e) = ext else { return out };
    // The external chain: when its path has endpoints, or pod and node traffic short-circuits.
    let short_circuit = cluster.as_ref().filter(|_| e.short_circuit_local_traffic);
    let policy_chain = chain_of(e.path.set).filter(|_| e.path.when_empty.is_none());
    let ext_chain = (policy_chain.is_some() || short_circuit.is_some()).then(|| names.external());
    if let Some(chain) = &ext_chain {
        out.chains.insert(
            chain.clone(),
            external_rules(ctx, &pname, e, short_circuit, policy_chain.as_deref()),
        );
    }
    external_dispatch(
        sp,
        &names,
        &pname,
        ext_chain.as_deref(),
        e.path.when_empty,
        &mut out,
    );
    out
}

/// Dispatch of external IPs, load-balancer IPs (through the firewall chain when sources are
/// limited) and the NodePort, and their verdicts in the filter table when nothing DNATs them.
fn external_dispatch(
    sp: &ServicePort,
    names: &ServiceChains,
    pname: &str,
    ext_chain: Option<&str>,
    when_empty: Option<NoEndpoints>,
    out: &mut PortRules,
) {
    let m = proto(sp.name.protocol);
    let vip = |ip: &IpAddr| format!("{m} -d {ip} --dport {}", sp.port);
    let verdict = when_empty.map(|n| (comment(&why(pname, n)), target(n)));
    let firewall =
        ext_chain.filter(|_| !sp.load_balancer_ips.is_empty() && !sp.lb_allowed_sources.is_empty());
    if let Some(ext) = firewall {
        let fw = names.firewall();
        let text = comment(&format!("{pname} loadbalancer IP"));
        let rules = sp
            .lb_allowed_sources
            .iter()
            .map(|s| format!("{text} -s {s} -j {ext}"))
            .collect();
        out.chains.insert(fw.clone(), rules);
        // What the firewall chain did not DNAT still has its LB IP as destination: dropped.
        let drop = comment(&format!("{pname} traffic not accepted by {fw}"));
        for ip in &sp.load_balancer_ips {
            out.filter(FIREWALL, format!("{drop} {} -j DROP", vip(ip)));
        }
    }
    for (ips, kind) in [
        (&sp.external_ips, "external IP"),
        (&sp.load_balancer_ips, "loadbalancer IP"),
    ] {
        for ip in ips {
            if let Some(ext) = ext_chain {
                let to = match (kind, &firewall) {
                    ("loadbalancer IP", Some(_)) => names.firewall(),
                    _ => ext.to_owned(),
                };
                let text = comment(&format!("{pname} {kind}"));
                out.nat(SERVICES, format!("{text} {} -j {to}", vip(ip)));
            }
            if let Some((text, target)) = &verdict {
                out.filter(EXTERNAL_SERVICES, format!("{text} {} -j {target}", vip(ip)));
            }
        }
    }
    if let Some(hc) = sp.health_check_node_port {
        // Accepted whether or not the node has local endpoints, as upstream.
        let text = comment(&format!("{pname} health check node port"));
        out.filter(
            NODEPORTS,
            format!("{text} -m tcp -p tcp --dport {hc} -j ACCEPT"),
        );
    }
    let Some(np) = sp.node_port else { return };
    if let Some(ext) = ext_chain {
        let text = comment(pname);
        out.nat(NODEPORTS, format!("{text} {m} --dport {np} -j {ext}"));
    }
    if let Some((text, target)) = &verdict {
        let dest = "-m addrtype --dst-type LOCAL";
        out.filter(
            EXTERNAL_SERVICES,
            format!("{text} {dest} {m} --dport {np} -j {target}"),
        );
    }
}

/// The external chain, as upstream's: pod and node traffic short-circuits to the Cluster set
/// under eTP=Local; masquerading as the model says; then the external path's set.
fn external_rules(
    ctx: &FamilyCtx,
    pname: &str,
    e: &crate::model::ExternalPath,
    short_circuit: Option<&String>,
    policy_chain: Option<&str>,
) -> Vec<String> {
    let mut rules = Vec::new();
    if let Some(cluster) = short_circuit {
        let text = comment(&format!("pod traffic for {pname} external destinations"));
        for local in &ctx.if_local {
            rules.push(format!("{text} {local} -j {cluster}"));
        }
    }
    match e.masquerade {
        crate::model::Masquerade::Always => {
            let text = comment(&format!(
                "masquerade traffic for {pname} external destinations"
            ));
            rules.push(format!("{text} -j {MARK_MASQ}"));
        }
        crate::model::Masquerade::NodeOriginOnly => {
            let text = comment(&format!(
                "masquerade LOCAL traffic for {pname} external destinations"
            ));
            rules.push(format!(
                "{text} -m addrtype --src-type LOCAL -j {MARK_MASQ}"
            ));
        }
    }
    if let Some(cluster) = short_circuit {
        let text = comment(&format!(
            "route LOCAL traffic for {pname} external destinations"
        ));
        rules.push(format!("{text} -m addrtype --src-type LOCAL -j {cluster}"));
    }
    if let Some(chain) = policy_chain {
        rules.push(format!("-j {chain}"));
    }
    rules
}

/// An endpoint set's chain: affinity checks first, then one random pick per endpoint with
/// upstream's probabilities (1/n, 1/(n-1), ..., the last unconditional); and the endpoints'
/// own chains, added to `out`.
fn set_rules(
    ctx: &FamilyCtx,
    sp: &ServicePort,
    names: &ServiceChains,
    eps: &[Endpoint],
    out: &mut PortRules,
) -> Vec<String> {
    let pname = port_text(sp);
    let mut rules = Vec::new();
    let affinity = sp.session_affinity.map(|a| a.timeout_seconds);
    if let Some(secs) = affinity {
        for ep in eps {
            let sep = names.endpoint(&ep.addr);
            let text = ctx.endpoint_comment(&format!("{pname} -> {}", ep.addr));
            rules.push(format!(
                "{text}-m recent --name {sep} --rcheck --seconds {secs} --reap -j {sep}"
            ));
        }
    }
    let n = eps.len();
    for (i, ep) in eps.iter().enumerate() {
        let sep = names.endpoint(&ep.addr);
        let text = ctx.endpoint_comment(&format!("{pname} -> {}", ep.addr));
        let pick = match n - i {
            1 => String::new(),
            left => format!(
                "-m statistic --mode random --probability {} ",
                probability(left)
            ),
        };
        rules.push(format!("{text}{pick}-j {sep}"));
        out.chains.insert(
            sep.clone(),
            endpoint_rules(ctx, sp, ep, &sep, affinity.is_some()),
        );
    }
    rules
}

/// An endpoint's chain: hairpin traffic (from the endpoint itself) is masqueraded, then DNAT.
fn endpoint_rules(
    ctx: &FamilyCtx,
    sp: &ServicePort,
    ep: &Endpoint,
    sep: &str,
    affinity: bool,
) -> Vec<String> {
    let text = ctx.endpoint_comment(&port_text(sp));
    let recent = match affinity {
        true => format!("-m recent --set --name {sep} --rsource "),
        false => String::new(),
    };
    vec![
        format!("{text}-s {} -j {MARK_MASQ}", ep.ip()),
        format!(
            "{text}{recent}{} -j DNAT --to-destination {}",
            proto(sp.name.protocol),
            ep.addr
        ),
    ]
}

/// Upstream's `computeProbability`: 1/n with ten decimals.
pub fn probability(n: usize) -> String {
    format!("{:.10}", 1.0 / n as f64)
}

/// `ns/name:port` as upstream's rule comments spell a Service port.
fn port_text(sp: &ServicePort) -> String {
    let n = &sp.name;
    match n.port.is_empty() {
        true => format!("{}/{}", n.namespace, n.name),
        false => format!("{}/{}:{}", n.namespace, n.name, n.port),
    }
}

/// Only reached when the model says the set is empty (the chain is missing only then).
const NO_ENDPOINTS: NoEndpoints = NoEndpoints {
    verdict: NoEndpointsVerdict::Reject,
    reason: crate::model::NoEndpointsReason::NoEndpoints,
};

fn why(pname: &str, n: NoEndpoints) -> String {
    format!("{pname} {}", n.reason)
}

fn target(n: NoEndpoints) -> &'static str {
    match n.verdict {
        NoEndpointsVerdict::Reject => "REJECT",
        NoEndpointsVerdict::Drop => "DROP",
    }
}
