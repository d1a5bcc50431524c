//! The part of an EndpointSlice the compute reads, in the form the tracker stores. A k8s-openapi
//! `Endpoint` is ~350 bytes inline before its strings; this one is 48, with node and zone names
//! shared (at 10k Services x 10 endpoints the stored slices dominated kproxy's memory).

use std::{collections::HashSet, net::IpAddr};

use k8s_openapi::api::discovery::v1::{Endpoint, EndpointPort, EndpointSlice};
use kproxy_modes::model::{IpFamily, Protocol, SharedName, SkippedObject};

use super::validate;

/// A converted EndpointSlice. Conversion keeps everything `endpoints::collect` decides on, in
/// the same order, so the compute gives the same result as on the API object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Slice {
    /// The `kubernetes.io/service-name` label, if set and not empty.
    pub service: Option<Box<str>>,
    /// `None` for FQDN (and unknown) address types, which are not proxied.
    pub family: Option<IpFamily>,
    pub ports: Box<[SlicePort]>,
    /// Only endpoints whose first address is an IP of the slice's family (upstream uses only
    /// the first); none for FQDN slices.
    pub endpoints: Box<[StoredEndpoint]>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SlicePort {
    pub name: Box<str>,
    /// `None` for a protocol kproxy does not know.
    pub protocol: Option<Protocol>,
    /// `None` when absent, 0 or out of range: the port is unusable.
    pub port: Option<u16>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredEndpoint {
    pub addr: IpAddr,
    pub ready: Option<bool>,
    pub serving: Option<bool>,
    pub terminating: Option<bool>,
    pub node_name: Option<SharedName>,
    pub zone: Option<SharedName>,
    /// Boxed: most endpoints carry no hints, and the box keeps them 8 bytes then.
    pub hints: Option<Box<Hints>>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Hints {
    pub zones: Box<[SharedName]>,
    pub nodes: Box<[SharedName]>,
}

/// Shares the node and zone names of all stored endpoints: a cluster has few of them, repeated
/// on every endpoint. Names no endpoint uses any more are dropped by [`Names::prune`].
#[derive(Debug, Default)]
pub struct Names {
    names: HashSet<SharedName>,
    /// Size after the last prune: pruning again once it has doubled keeps pruning amortised.
    pruned_at: usize,
}

impl Names {
    fn get(&mut self, s: &str) -> SharedName {
        if let Some(n) = self.names.get(s) {
            return n.clone();
        }
        let n = SharedName::from(s);
        self.names.insert(n.clone());
        n
    }

    /// Forgets names held by nothing else, once the set has doubled since the last prune.
    pub fn prune(&mut self) {
        if self.names.len() > 2 * self.pruned_at + 64 {
            self.names.retain(|n| n.holders() > 1);
            self.pruned_at = self.names.len();
        }
    }
}

/// A converted slice and what conversion left out of it, as skip records (empty for a valid
/// slice: the records live beside the slice, only for slices that have any).
#[derive(Debug)]
pub struct Converted {
    pub slice: Slice,
    pub skipped: Vec<SkippedObject>,
}

impl Slice {
    /// Converts a slice: only validated text and addresses are kept. A slice whose names are
    /// invalid, or that names no Service, is kept empty (it selects nothing); a port or
    /// endpoint that fails validation is left out; each is reported in `skipped`.
    pub fn convert(slice: &EndpointSlice, names: &mut Names) -> Converted {
        let namespace = super::namespace_of(&slice.metadata);
        let name = slice.metadata.name.as_deref().unwrap_or_default();
        let mut problems = Vec::new();
        let converted = match super::slice_service(slice) {
            None => {
                problems.push(format!("no {} label", super::SERVICE_NAME_LABEL));
                Slice::empty()
            }
            Some((_, service)) => match validate::slice_meta(&namespace, name, &service) {
                Err(reason) => {
                    problems.push(reason);
                    Slice::empty()
                }
                Ok(()) => Slice::convert_valid(slice, service, names, &mut problems),
            },
        };
        let skipped = problems
            .into_iter()
            .map(|reason| super::skip_record(kind_of(&reason), &namespace, name, reason))
            .collect();
        Converted {
            slice: converted,
            skipped,
        }
    }

    fn empty() -> Self {
        Slice {
            service: None,
            family: None,
            ports: Box::default(),
            endpoints: Box::default(),
        }
    }

    fn convert_valid(
        slice: &EndpointSlice,
        service: String,
        names: &mut Names,
        problems: &mut Vec<String>,
    ) -> Self {
        let family = match slice.address_type.as_str() {
            "IPv4" => Some(IpFamily::V4),
            "IPv6" => Some(IpFamily::V6),
            // FQDN slices are not proxied: not a problem, and nothing of them is read.
            "FQDN" => None,
            other => {
                problems.push(format!(
                    "unknown addressType \"{}\"",
                    validate::shown(other)
                ));
                None
            }
        };
        let ports = (slice.ports.iter().flatten().enumerate())
            .filter_map(|(i, p)| convert_port(i, p, problems))
            .collect();
        let endpoints = match family {
            Some(family) => (slice.endpoints.iter().enumerate())
                .filter_map(|(i, ep)| {
                    validate::endpoint_address(i, &ep.addresses, family)
                        .map_err(|reason| problems.push(reason))
                        .ok()
                        .map(|addr| convert_endpoint(addr, ep, names))
                })
                .collect(),
            None => Box::default(),
        };
        Slice {
            service: Some(service.into_boxed_str()),
            family,
            ports,
            endpoints,
        }
    }
}

/// Endpoint problems are counted as endpoints; the rest as the slice's.
fn kind_of(reason: &str) -> &'static str {
    if reason.starts_with("endpoints[") {
        "Endpoint"
    } else {
        "EndpointSlice"
    }
}

/// A port with an invalid name is left out (it could match no valid Service port). One with an
/// unknown protocol or an unusable number is kept unusable: the first port of a name decides,
/// even when unusable (see `endpoints::collect`).
fn convert_port(i: usize, p: &EndpointPort, problems: &mut Vec<String>) -> Option<SlicePort> {
    let name = p.name.as_deref().unwrap_or("");
    if let Err(reason) = validate::port_name(&format!("ports[{i}].name"), name) {
        problems.push(reason);
        return None;
    }
    let protocol = Protocol::from_api(p.protocol.as_deref());
    if protocol.is_none() {
        let shown = validate::shown(p.protocol.as_deref().unwrap_or_default());
        problems.push(format!("unknown protocol \"{shown}\" in ports[{i}]"));
    }
    let port = p
        .port
        .and_then(|n| u16::try_from(n).ok())
        .filter(|n| *n != 0);
    if port.is_none() {
        let value = p.port.map_or("(none)".to_owned(), |n| n.to_string());
        problems.push(format!("invalid ports[{i}].port {value}"));
    }
    Some(SlicePort {
        name: name.into(),
        protocol,
        port,
    })
}

fn convert_endpoint(addr: IpAddr, ep: &Endpoint, names: &mut Names) -> StoredEndpoint {
    let mut get = |s: &str| names.get(s);
    let cond = ep.conditions.as_ref();
    let hints = ep.hints.as_ref().and_then(|h| {
        let zones: Box<[SharedName]> = h.for_zones.iter().flatten().map(|z| get(&z.name)).collect();
        let nodes: Box<[SharedName]> = h.for_nodes.iter().flatten().map(|n| get(&n.name)).collect();
        (!zones.is_empty() || !nodes.is_empty()).then(|| Box::new(Hints { zones, nodes }))
    });
    StoredEndpoint {
        addr,
        ready: cond.and_then(|c| c.ready),
        serving: cond.and_then(|c| c.serving),
        terminating: cond.and_then(|c| c.terminating),
        node_name: ep.node_name.as_deref().map(&mut get),
        zone: ep.zone.as_deref().map(&mut get),
        hints,
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::discovery::v1::EndpointSlice;

    use super::*;

    fn slice(node: &str, annotation: &str) -> EndpointSlice {
        serde_json::from_value(serde_json::json!({
            "metadata": {
                "name": "s", "namespace": "ns",
                "labels": {"kubernetes.io/service-name": "svc"},
                "annotations": {"a": annotation},
            },
            "addressType": "IPv4",
            "ports": [{"name": "http", "port": 80}, {"name": "bad", "port": 0, "protocol": "ICMP"}],
            "endpoints": [
                {"addresses": ["10.0.0.1"], "nodeName": node, "zone": "z1",
                 "conditions": {"ready": false, "terminating": true},
                 "hints": {"forZones": [{"name": "z1"}]}},
                {"addresses": ["not-an-ip"]},
                {"addresses": ["10.0.0.2"], "nodeName": node},
            ],
        }))
        .unwrap()
    }

    /// Converting keeps what the compute reads, drops endpoints whose first address does not
    /// parse, and shares equal names between endpoints.
    #[test]
    fn conversion_keeps_what_the_compute_reads_and_shares_names() {
        let mut names = Names::default();
        let s = Slice::convert(&slice("node-a", "x"), &mut names).slice;
        assert_eq!(s.service.as_deref(), Some("svc"));
        assert_eq!(s.family, Some(IpFamily::V4));
        assert_eq!(s.ports[0].port, Some(80));
        assert_eq!(s.ports[0].protocol, Some(Protocol::Tcp));
        assert_eq!((s.ports[1].port, s.ports[1].protocol), (None, None));
        assert_eq!(s.endpoints.len(), 2);
        let (a, b) = (&s.endpoints[0], &s.endpoints[1]);
        assert_eq!(
            (a.ready, a.serving, a.terminating),
            (Some(false), None, Some(true))
        );
        assert_eq!(&*a.hints.as_ref().unwrap().zones[0], "z1");
        assert!(b.hints.is_none());
        let (na, nb) = (a.node_name.as_ref().unwrap(), b.node_name.as_ref().unwrap());
        // One allocation per name: the same text at the same address.
        assert!(std::ptr::eq(&**na, &**nb));
        assert!(std::ptr::eq(
            &**a.zone.as_ref().unwrap(),
            &*a.hints.as_ref().unwrap().zones[0]
        ));
    }

    /// Fields the compute does not read do not make two conversions differ (so the tracker
    /// does not recompute the Service), and names no slice holds are pruned.
    #[test]
    fn unread_fields_compare_equal_and_unused_names_are_pruned() {
        let mut names = Names::default();
        let a = Slice::convert(&slice("node-a", "x"), &mut names).slice;
        assert_eq!(a, Slice::convert(&slice("node-a", "y"), &mut names).slice);
        assert_ne!(a, Slice::convert(&slice("node-b", "x"), &mut names).slice);
        for i in 0..100 {
            Slice::convert(&slice(&format!("gone-{i}"), "x"), &mut names);
        }
        names.prune();
        assert!(names.names.iter().any(|n| &**n == "node-a"));
        assert!(!names.names.iter().any(|n| n.starts_with("gone-")));
    }
}
