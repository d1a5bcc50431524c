//! One Service (and its EndpointSlices) to its Service ports, per family.

use std::{collections::BTreeSet, net::IpAddr};

use ipnet::IpNet;
use k8s_openapi::api::core::v1::Service;
use kproxy_modes::model::{
    IpFamily, Protocol, ServicePort, ServicePortName, SessionAffinity, TrafficPolicy,
};

use super::{
    context::NodeContext,
    endpoints::{self, Policies},
    slice::Slice,
};

/// Labels that take a Service away from kproxy (upstream's server-side label selector).
pub const SERVICE_PROXY_NAME_LABEL: &str = "service.kubernetes.io/service-proxy-name";
pub const HEADLESS_LABEL: &str = "service.kubernetes.io/headless";
/// Upstream's default session-affinity timeout (3 hours).
const DEFAULT_AFFINITY_TIMEOUT: u32 = 10800;

/// Why a Service produced no Service ports.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Not kproxy's to proxy (headless, ExternalName, another proxy's): not an error.
    Ignored(&'static str),
    /// Malformed: skipped as a whole so nothing of it is half-applied.
    Invalid(String),
}

/// Computes the Service ports of `svc` in every family the node serves.
pub fn compute(
    ctx: &NodeContext,
    svc: &Service,
    slices: &[&Slice],
) -> Result<Vec<ServicePort>, Outcome> {
    let labels = svc.metadata.labels.as_ref();
    if labels.is_some_and(|l| l.contains_key(SERVICE_PROXY_NAME_LABEL)) {
        return Err(Outcome::Ignored("labelled for another proxy"));
    }
    if labels.is_some_and(|l| l.contains_key(HEADLESS_LABEL)) {
        return Err(Outcome::Ignored("labelled headless"));
    }
    let spec = svc
        .spec
        .as_ref()
        .ok_or(Outcome::Invalid("no spec".into()))?;
    if spec.type_.as_deref() == Some("ExternalName") {
        return Err(Outcome::Ignored("ExternalName"));
    }
    let cluster_ips = cluster_ips(spec.cluster_ips.as_deref(), spec.cluster_ip.as_deref())?;
    if cluster_ips.is_empty() {
        return Err(Outcome::Ignored("headless"));
    }
    let is_lb = spec.type_.as_deref() == Some("LoadBalancer");
    let is_node_port = is_lb || spec.type_.as_deref() == Some("NodePort");
    let external_ips = parse_ips(
        "spec.externalIPs",
        spec.external_ips.as_deref().unwrap_or_default(),
    )?;
    let lb_ips = load_balancer_ips(svc)?;
    let source_ranges = source_ranges(
        spec.load_balancer_source_ranges
            .as_deref()
            .unwrap_or_default(),
    )?;
    let affinity = match spec.session_affinity.as_deref() {
        Some("ClientIP") => Some(SessionAffinity {
            timeout_seconds: spec
                .session_affinity_config
                .as_ref()
                .and_then(|c| c.client_ip.as_ref())
                .and_then(|c| c.timeout_seconds)
                .and_then(|t| u32::try_from(t).ok())
                .unwrap_or(DEFAULT_AFFINITY_TIMEOUT),
        }),
        None | Some("None") | Some("") => None,
        Some(other) => {
            return Err(Outcome::Invalid(format!(
                "unknown spec.sessionAffinity {other:?}"
            )));
        }
    };
    let policy = |field: &str, value: Option<&str>| match value {
        None | Some("") | Some("Cluster") => Ok(TrafficPolicy::Cluster),
        Some("Local") => Ok(TrafficPolicy::Local),
        Some(other) => Err(Outcome::Invalid(format!("unknown spec.{field} {other:?}"))),
    };
    let internal_policy = policy(
        "internalTrafficPolicy",
        spec.internal_traffic_policy.as_deref(),
    )?;
    // externalTrafficPolicy only means something for Services reachable from outside
    // (upstream's `ExternallyAccessible`: NodePort, LoadBalancer, or any external IP).
    let mut external_policy = policy(
        "externalTrafficPolicy",
        spec.external_traffic_policy.as_deref(),
    )?;
    if !is_node_port && external_ips.is_empty() {
        external_policy = TrafficPolicy::Cluster;
    }
    let health_check_node_port = spec
        .health_check_node_port
        .filter(|p| *p != 0)
        .map(|p| port_number("spec.healthCheckNodePort", p))
        .transpose()?;

    let ns = svc.metadata.namespace.as_deref().unwrap_or("default");
    let name = svc.metadata.name.as_deref().unwrap_or_default();
    let ports = spec.ports.as_deref().unwrap_or_default();
    let mut seen = BTreeSet::new();
    let mut out = Vec::new();
    for (i, p) in ports.iter().enumerate() {
        let protocol = Protocol::from_api(p.protocol.as_deref()).ok_or_else(|| {
            Outcome::Invalid(format!(
                "unknown protocol {:?} in spec.ports[{i}]",
                p.protocol.as_deref().unwrap_or("")
            ))
        })?;
        let port_name = p.name.clone().unwrap_or_default();
        if !seen.insert((port_name.clone(), protocol)) {
            return Err(Outcome::Invalid(format!(
                "duplicate port {port_name:?}/{protocol} in spec.ports"
            )));
        }
        let port = port_number(&format!("spec.ports[{i}].port"), p.port)?;
        let node_port = match p.node_port.filter(|_| is_node_port) {
            Some(0) | None => None,
            Some(np) => Some(port_number(&format!("spec.ports[{i}].nodePort"), np)?),
        };
        for (family, _) in &ctx.families {
            let Some(cluster_ip) = cluster_ips
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
            let external_ips: Vec<IpAddr> = in_family(&external_ips);
            let load_balancer_ips: Vec<IpAddr> = if is_lb {
                in_family(&lb_ips)
            } else {
                Vec::new()
            };
            let externally_accessible =
                node_port.is_some() || !external_ips.is_empty() || !load_balancer_ips.is_empty();
            let policies = Policies {
                internal: internal_policy,
                external: external_policy,
                externally_accessible,
            };
            let slice_eps =
                endpoints::collect(slices, &port_name, protocol, *family, &ctx.node_name);
            out.push(ServicePort {
                name: ServicePortName::new(ns, name, &port_name, protocol),
                cluster_ip,
                port,
                node_port,
                external_ips,
                load_balancer_ips,
                load_balancer_source_ranges: source_ranges
                    .iter()
                    .filter(|n| IpFamily::of(&n.addr()) == *family)
                    .copied()
                    .collect(),
                session_affinity: affinity,
                internal_policy,
                external_policy,
                // Upstream serves the health check only for eTP=Local LoadBalancer Services.
                health_check_node_port: health_check_node_port
                    .filter(|_| is_lb && external_policy == TrafficPolicy::Local),
                endpoints: endpoints::categorize(
                    &slice_eps,
                    &policies,
                    &ctx.node_name,
                    ctx.zone.as_deref(),
                ),
            });
        }
    }
    Ok(out)
}

fn port_number(field: &str, value: i32) -> Result<u16, Outcome> {
    u16::try_from(value)
        .ok()
        .filter(|p| *p != 0)
        .ok_or_else(|| Outcome::Invalid(format!("invalid {field} {value}")))
}

/// `clusterIPs` (or the older single `clusterIP`); "None" or empty means headless.
fn cluster_ips(ips: Option<&[String]>, ip: Option<&str>) -> Result<Vec<IpAddr>, Outcome> {
    let listed: Vec<String> = match ips {
        Some(list) if !list.is_empty() => list.to_vec(),
        _ => ip.into_iter().map(str::to_owned).collect(),
    };
    if listed.iter().any(|s| s == "None" || s.is_empty()) {
        return Ok(Vec::new());
    }
    parse_ips("spec.clusterIPs", &listed)
}

fn parse_ips(field: &str, ips: &[String]) -> Result<Vec<IpAddr>, Outcome> {
    ips.iter()
        .map(|s| {
            s.parse()
                .map_err(|_| Outcome::Invalid(format!("invalid IP {s:?} in {field}")))
        })
        .collect()
}

/// Ingress IPs of the load balancer, except those with `ipMode: Proxy`: that load balancer
/// delivers traffic to the node's own address, so capturing its IP would bypass it.
fn load_balancer_ips(svc: &Service) -> Result<Vec<IpAddr>, Outcome> {
    let ingress = svc
        .status
        .as_ref()
        .and_then(|s| s.load_balancer.as_ref())
        .and_then(|lb| lb.ingress.as_deref())
        .unwrap_or_default();
    let ips: Vec<String> = ingress
        .iter()
        .filter(|i| i.ip_mode.as_deref() != Some("Proxy"))
        .filter_map(|i| i.ip.clone().filter(|ip| !ip.is_empty()))
        .collect();
    parse_ips("status.loadBalancer.ingress", &ips)
}

/// An invalid range skips the Service: dropping it would widen who may connect.
fn source_ranges(ranges: &[String]) -> Result<Vec<IpNet>, Outcome> {
    ranges
        .iter()
        .map(|r| {
            let r = r.trim();
            r.parse::<IpNet>()
                .map(|n| n.trunc())
                .or_else(|_| r.parse::<IpAddr>().map(IpNet::from))
                .map_err(|_| {
                    Outcome::Invalid(format!(
                        "invalid CIDR {r:?} in spec.loadBalancerSourceRanges"
                    ))
                })
        })
        .collect()
}
