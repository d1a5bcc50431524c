//! The part of a Service the compute reads, validated once when the Service is stored. A
//! k8s-openapi `Service` is ~800 bytes before its strings; this form is ~120 with the ports
//! (at 10k Services the stored API objects were 8 MiB of kproxy's memory). Everything here
//! depends on the Service alone, so an invalid Service is known as soon as it arrives.

use std::{collections::BTreeSet, net::IpAddr};

use ipnet::IpNet;
use k8s_openapi::{api::core::v1::Service, apimachinery::pkg::apis::meta::v1::Time};
use kproxy_modes::model::{Protocol, SessionAffinity, TrafficPolicy};

use super::Outcome;
use crate::desired::validate;

/// Labels that take a Service away from kproxy (upstream's server-side label selector).
pub const SERVICE_PROXY_NAME_LABEL: &str = "service.kubernetes.io/service-proxy-name";
pub const HEADLESS_LABEL: &str = "service.kubernetes.io/headless";
/// Upstream's default session-affinity timeout (3 hours).
const DEFAULT_AFFINITY_TIMEOUT: u32 = 10800;

/// A Service as the tracker stores it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredService {
    /// `metadata.creationTimestamp`: the older Service wins a port collision.
    pub created: Option<Time>,
    /// The Service's ports to compute, or why it has none.
    pub spec: Result<ParsedService, Outcome>,
}

/// A valid, proxied Service: what every family's Service ports are computed from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParsedService {
    /// Never empty (a Service without one is headless, and ignored).
    pub cluster_ips: Box<[IpAddr]>,
    pub external_ips: Box<[IpAddr]>,
    /// Empty unless the Service is of type LoadBalancer.
    pub load_balancer_ips: Box<[IpAddr]>,
    pub source_ranges: Box<[IpNet]>,
    pub ports: Box<[ParsedPort]>,
    pub affinity: Option<SessionAffinity>,
    pub internal_policy: TrafficPolicy,
    /// Already `Cluster` for a Service not reachable from outside.
    pub external_policy: TrafficPolicy,
    pub is_load_balancer: bool,
    pub health_check_node_port: Option<u16>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParsedPort {
    pub name: Box<str>,
    pub protocol: Protocol,
    pub port: u16,
    /// Only for NodePort and LoadBalancer Services.
    pub node_port: Option<u16>,
}

impl StoredService {
    pub fn from_api(svc: &Service) -> Self {
        StoredService {
            created: svc.metadata.creation_timestamp.clone(),
            spec: parse(svc),
        }
    }
}

fn parse(svc: &Service) -> Result<ParsedService, Outcome> {
    let labels = svc.metadata.labels.as_ref();
    if labels.is_some_and(|l| l.contains_key(SERVICE_PROXY_NAME_LABEL)) {
        return Err(Outcome::Ignored("labelled for another proxy"));
    }
    if labels.is_some_and(|l| l.contains_key(HEADLESS_LABEL)) {
        return Err(Outcome::Ignored("labelled headless"));
    }
    // Names reach kernel programs (nftables chain names): checked before anything else.
    let namespace = crate::desired::namespace_of(&svc.metadata);
    let name = svc.metadata.name.as_deref().unwrap_or_default();
    validate::service_meta(&namespace, name).map_err(Outcome::Invalid)?;
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
    // Checked whatever the type, as before this form existed; kept only for load balancers.
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
                "unknown spec.sessionAffinity \"{}\"",
                validate::shown(other)
            )));
        }
    };
    let policy = |field: &str, value: Option<&str>| match value {
        None | Some("") | Some("Cluster") => Ok(TrafficPolicy::Cluster),
        Some("Local") => Ok(TrafficPolicy::Local),
        Some(other) => Err(Outcome::Invalid(format!(
            "unknown spec.{field} \"{}\"",
            validate::shown(other)
        ))),
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

    let mut seen = BTreeSet::new();
    let mut ports = Vec::new();
    for (i, p) in spec.ports.iter().flatten().enumerate() {
        let protocol = Protocol::from_api(p.protocol.as_deref()).ok_or_else(|| {
            Outcome::Invalid(format!(
                "unknown protocol \"{}\" in spec.ports[{i}]",
                validate::shown(p.protocol.as_deref().unwrap_or(""))
            ))
        })?;
        let name = p.name.as_deref().unwrap_or_default();
        validate::port_name(&format!("spec.ports[{i}].name"), name).map_err(Outcome::Invalid)?;
        if !seen.insert((name, protocol)) {
            return Err(Outcome::Invalid(format!(
                "duplicate port \"{name}\"/{protocol} in spec.ports"
            )));
        }
        let port = port_number(&format!("spec.ports[{i}].port"), p.port)?;
        let node_port = match p.node_port.filter(|_| is_node_port) {
            Some(0) | None => None,
            Some(np) => Some(port_number(&format!("spec.ports[{i}].nodePort"), np)?),
        };
        ports.push(ParsedPort {
            name: name.into(),
            protocol,
            port,
            node_port,
        });
    }
    Ok(ParsedService {
        cluster_ips: cluster_ips.into(),
        external_ips: external_ips.into(),
        load_balancer_ips: if is_lb { lb_ips.into() } else { Box::default() },
        source_ranges: source_ranges.into(),
        ports: ports.into(),
        affinity,
        internal_policy,
        external_policy,
        is_load_balancer: is_lb,
        health_check_node_port,
    })
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
            s.parse().map_err(|_| {
                Outcome::Invalid(format!("invalid IP \"{}\" in {field}", validate::shown(s)))
            })
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
                        "invalid CIDR \"{}\" in spec.loadBalancerSourceRanges",
                        validate::shown(r)
                    ))
                })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn service(annotation: &str, type_: &str, protocol: &str) -> Service {
        serde_json::from_value(serde_json::json!({
            "metadata": {
                "name": "svc", "namespace": "ns", "annotations": {"a": annotation},
                "creationTimestamp": "2026-01-02T03:04:05Z",
            },
            "spec": {
                "type": type_, "clusterIPs": ["10.96.0.10"],
                "ports": [{"name": "http", "port": 80, "nodePort": 30080, "protocol": protocol}],
            },
            "status": {"loadBalancer": {"ingress": [{"ip": "192.0.2.7"}]}},
        }))
        .unwrap()
    }

    /// The stored form keeps what the compute reads and compares equal across changes to
    /// anything else (so the tracker does not recompute the Service).
    #[test]
    fn keeps_what_the_compute_reads() {
        let lb = StoredService::from_api(&service("x", "LoadBalancer", "UDP"));
        let spec = lb.spec.as_ref().unwrap();
        assert_eq!(lb.created.as_ref().unwrap().0.as_second(), 1767323045);
        assert_eq!(
            &*spec.load_balancer_ips,
            &["192.0.2.7".parse::<IpAddr>().unwrap()]
        );
        assert_eq!(
            &*spec.ports,
            &[ParsedPort {
                name: "http".into(),
                protocol: Protocol::Udp,
                port: 80,
                node_port: Some(30080),
            }]
        );
        assert_eq!(
            lb,
            StoredService::from_api(&service("y", "LoadBalancer", "UDP"))
        );
        // Only load balancers keep ingress IPs; only NodePort-capable types keep node ports.
        let cluster_ip = StoredService::from_api(&service("x", "ClusterIP", "UDP"));
        let spec = cluster_ip.spec.as_ref().unwrap();
        assert!(spec.load_balancer_ips.is_empty());
        assert_eq!(spec.ports[0].node_port, None);
    }

    #[test]
    fn an_invalid_service_is_known_when_stored() {
        let bad = StoredService::from_api(&service("x", "ClusterIP", "ICMP"));
        assert_eq!(
            bad.spec,
            Err(Outcome::Invalid(
                "unknown protocol \"ICMP\" in spec.ports[0]".into()
            ))
        );
        assert!(bad.created.is_some());
    }
}
