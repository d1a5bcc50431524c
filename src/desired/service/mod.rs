//! One Service (and its EndpointSlices) to its Service ports, per family.

use std::net::IpAddr;

use ipnet::IpNet;
use kproxy_modes::model::{IpFamily, ServicePort, ServicePortName, SkippedObject, TrafficPolicy};

use super::{
    context::NodeContext,
    endpoints::{self, Policies},
    paths,
    slice::Slice,
};

mod parse;

pub use parse::{
    HEADLESS_LABEL, ParsedPort, ParsedService, SERVICE_PROXY_NAME_LABEL, StoredService,
};

/// Why a Service produced no Service ports.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Not kproxy's to proxy (headless, ExternalName, another proxy's): not an error.
    Ignored(&'static str),
    /// Malformed: skipped as a whole so nothing of it is half-applied.
    Invalid(String),
}

/// Computes the Service ports of the Service `namespace/name` in every family the node serves.
pub fn compute(
    ctx: &NodeContext,
    (namespace, name): (&str, &str),
    svc: &ParsedService,
    slices: &[&Slice],
) -> Vec<ServicePort> {
    let mut out = Vec::new();
    for p in svc.ports.iter() {
        // A refused NodePort costs the port only that NodePort (see `refused_node_ports`).
        let node_port = p
            .node_port
            .filter(|np| ctx.node_ports.refuse(*np).is_none());
        for (family, node) in &ctx.families {
            let Some(cluster_ip) = svc
                .cluster_ips
                .iter()
                .copied()
                .find(|ip| IpFamily::of(ip) == *family)
            else {
                continue;
            };
            let in_family = |ips: &[IpAddr]| {
                ips.iter()
                    .copied()
                    .filter(|ip| IpFamily::of(ip) == *family)
                    .collect()
            };
            let external_ips: Vec<IpAddr> = in_family(&svc.external_ips);
            let load_balancer_ips: Vec<IpAddr> = in_family(&svc.load_balancer_ips);
            let externally_accessible =
                node_port.is_some() || !external_ips.is_empty() || !load_balancer_ips.is_empty();
            let policies = Policies {
                internal: svc.internal_policy,
                external: svc.external_policy,
                externally_accessible,
            };
            let slice_eps =
                endpoints::collect(slices, &p.name, p.protocol, *family, &ctx.node_name);
            let endpoints =
                endpoints::categorize(&slice_eps, &policies, &ctx.node_name, ctx.zone.as_deref());
            let source_ranges: Vec<IpNet> = (svc.source_ranges.iter())
                .filter(|n| IpFamily::of(&n.addr()) == *family)
                .copied()
                .collect();
            out.push(ServicePort {
                name: ServicePortName::new(namespace, name, &p.name, p.protocol),
                cluster_ip,
                port: p.port,
                node_port,
                lb_allowed_sources: paths::lb_allowed_sources(
                    &source_ranges,
                    &load_balancer_ips,
                    &node.node_ips,
                ),
                external_ips,
                load_balancer_ips,
                session_affinity: svc.affinity,
                internal_policy: svc.internal_policy,
                external_policy: svc.external_policy,
                // Upstream serves the health check only for eTP=Local LoadBalancer Services.
                health_check_node_port: svc.health_check_node_port.filter(|_| {
                    svc.is_load_balancer && svc.external_policy == TrafficPolicy::Local
                }),
                internal: paths::internal(svc.internal_policy, &endpoints),
                external: paths::external(svc.external_policy, externally_accessible, &endpoints),
                endpoints,
            });
        }
    }
    out
}

/// The NodePorts of Service `namespace/name` that [`compute`] leaves out because kproxy may not
/// program them (outside the range, or a port kproxy serves), each with its skip record.
pub fn refused_node_ports(
    ctx: &NodeContext,
    (namespace, name): (&str, &str),
    svc: &ParsedService,
) -> Vec<SkippedObject> {
    svc.ports
        .iter()
        .filter_map(|p| {
            let why = ctx.node_ports.refuse(p.node_port?)?;
            Some(SkippedObject {
                kind: "Service".into(),
                namespace: namespace.to_owned(),
                name: name.to_owned(),
                reason: format!("port {}: {why}", port_label(&p.name)),
            })
        })
        .collect()
}

/// How a port is named in skip reasons: its name, or `""` for the one unnamed port.
pub fn port_label(name: &str) -> &str {
    if name.is_empty() { "\"\"" } else { name }
}
