//! The paths a Service port's traffic takes, as the compute decided them: which endpoint set
//! each kind of traffic is balanced over, what happens when that set is empty, how external
//! traffic is masqueraded, and which sources may reach load-balancer IPs. A mode renders these;
//! it never re-derives them from the traffic policies.

use std::{fmt, net::IpAddr};

use ipnet::IpNet;
use serde::Serialize;

use super::{Endpoint, ServiceEndpoints, TrafficPolicy};

/// What a path does with new connections while its endpoint set is empty.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum NoEndpointsVerdict {
    /// Refuse actively (ICMP unreachable / TCP reset): the client learns at once.
    Reject,
    /// Drop silently.
    Drop,
}

impl fmt::Display for NoEndpointsVerdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            NoEndpointsVerdict::Reject => "reject",
            NoEndpointsVerdict::Drop => "drop",
        })
    }
}

/// Why a path has no endpoint.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum NoEndpointsReason {
    /// No usable endpoint exists anywhere in the cluster.
    NoEndpoints,
    /// Usable endpoints exist, but none on this node, and the path follows a `Local` policy.
    NoLocalEndpoints,
}

impl fmt::Display for NoEndpointsReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Upstream's wording in its rule comments ("... has no endpoints").
        f.write_str(match self {
            NoEndpointsReason::NoEndpoints => "has no endpoints",
            NoEndpointsReason::NoLocalEndpoints => "has no local endpoints",
        })
    }
}

/// The verdict for a path without endpoints, and why.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
pub struct NoEndpoints {
    pub verdict: NoEndpointsVerdict,
    pub reason: NoEndpointsReason,
}

/// One kind of traffic's way to the endpoints.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
pub struct Path {
    /// The endpoint set the traffic is balanced over (named by the policy that chose it;
    /// [`ServiceEndpoints::set`] gives its endpoints).
    pub set: TrafficPolicy,
    /// `Some` exactly when that set is empty.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub when_empty: Option<NoEndpoints>,
}

impl Path {
    pub fn endpoints<'a>(&self, eps: &'a ServiceEndpoints) -> &'a [Endpoint] {
        eps.set(self.set)
    }
}

/// Which external traffic is masqueraded (SNATed to the node) on its way to an endpoint.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Masquerade {
    /// All of it: under eTP=Cluster the endpoint may be on another node, and its reply must come
    /// back through this one to be un-DNATed.
    Always,
    /// Only traffic the node itself sends (its source is a node address, which an endpoint
    /// could not answer directly); under eTP=Local the client's source is preserved.
    NodeOriginOnly,
}

/// The path of traffic to NodePorts, external IPs and load-balancer IPs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
pub struct ExternalPath {
    #[serde(flatten)]
    pub path: Path,
    /// Traffic from this node's pods and from the node itself skips `path` and goes to the
    /// Cluster set, as if it had gone out to the load balancer and come back (eTP=Local only).
    pub short_circuit_local_traffic: bool,
    pub masquerade: Masquerade,
}

/// A source allowed to reach a port's load-balancer IPs (serialized as its text: `10.0.0.0/8`
/// for a range, `1.2.3.4` for an address).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AllowedSource {
    /// A `loadBalancerSourceRanges` entry.
    Range(IpNet),
    /// A load-balancer IP itself (traffic a VIP-style load balancer loops back to the node).
    Address(IpAddr),
}

impl AllowedSource {
    pub fn contains(&self, ip: &IpAddr) -> bool {
        match self {
            AllowedSource::Range(net) => net.contains(ip),
            AllowedSource::Address(a) => a == ip,
        }
    }
}

impl Serialize for AllowedSource {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl fmt::Display for AllowedSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AllowedSource::Range(net) => net.fmt(f),
            AllowedSource::Address(ip) => ip.fmt(f),
        }
    }
}

impl ServiceEndpoints {
    /// The endpoints of the set a [`Path`] names.
    pub fn set(&self, set: TrafficPolicy) -> &[Endpoint] {
        match set {
            TrafficPolicy::Cluster => &self.cluster,
            TrafficPolicy::Local => &self.local,
        }
    }
}
