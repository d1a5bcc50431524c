//! The mode-independent desired state: what every data plane must make true on this node.
//!
//! The tracker (crate `kproxy`) computes it from Services, EndpointSlices, the Node and the
//! configuration; modes only read it. All Kubernetes semantics (traffic policies, topology,
//! terminating endpoints) are already decided here: a mode never re-derives them.

use std::{
    collections::{BTreeMap, BTreeSet},
    fmt,
    net::{IpAddr, SocketAddr},
    sync::Arc,
};

use serde::Serialize;

mod node;
mod paths;

pub use node::{LocalTrafficDetector, NodePortAddresses, NodePortIps, NodeSettings};
pub use paths::{
    AllowedSource, ExternalPath, Masquerade, NoEndpoints, NoEndpointsReason, NoEndpointsVerdict,
    Path,
};

/// An IP family; a dual-stack node has one [`FamilyState`] per family.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub enum IpFamily {
    #[serde(rename = "IPv4")]
    V4,
    #[serde(rename = "IPv6")]
    V6,
}

impl IpFamily {
    pub fn of(ip: &IpAddr) -> Self {
        match ip {
            IpAddr::V4(_) => IpFamily::V4,
            IpAddr::V6(_) => IpFamily::V6,
        }
    }
}

impl fmt::Display for IpFamily {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            IpFamily::V4 => "IPv4",
            IpFamily::V6 => "IPv6",
        })
    }
}

/// A Service port's L4 protocol, spelled as the Kubernetes API spells it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Protocol {
    Tcp,
    Udp,
    Sctp,
}

impl Protocol {
    /// Parses the API's spelling; an absent protocol is TCP (the API default).
    pub fn from_api(s: Option<&str>) -> Option<Self> {
        match s.unwrap_or("TCP") {
            "TCP" => Some(Protocol::Tcp),
            "UDP" => Some(Protocol::Udp),
            "SCTP" => Some(Protocol::Sctp),
            _ => None,
        }
    }

    pub fn as_str(&self) -> &'static str {
        match self {
            Protocol::Tcp => "TCP",
            Protocol::Udp => "UDP",
            Protocol::Sctp => "SCTP",
        }
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Identifies one port of one Service: `namespace/name:port-name` plus the protocol, as upstream's
/// `ServicePortName` does (the port name may be empty for a single-port Service).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct ServicePortName {
    pub namespace: String,
    pub name: String,
    pub port: String,
    pub protocol: Protocol,
}

impl ServicePortName {
    pub fn new(namespace: &str, name: &str, port: &str, protocol: Protocol) -> Self {
        Self {
            namespace: namespace.to_owned(),
            name: name.to_owned(),
            port: port.to_owned(),
            protocol,
        }
    }
}

impl fmt::Display for ServicePortName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)?;
        if !self.port.is_empty() {
            write!(f, ":{}", self.port)?;
        }
        write!(f, "/{}", self.protocol)
    }
}

/// `Cluster` or `Local`, for either of a Service's two traffic policies.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize)]
pub enum TrafficPolicy {
    #[default]
    Cluster,
    Local,
}

/// A node or zone name, shared by every endpoint that carries it. `Arc<String>` rather than
/// `Arc<str>`: a thin pointer, so an endpoint's two names cost 16 bytes, not 32 (at 100k
/// endpoints, stored twice over, that was 3 MiB).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct SharedName(Arc<String>);

impl SharedName {
    /// How many holders the name has (an interner drops names only it holds).
    pub fn holders(&self) -> usize {
        Arc::strong_count(&self.0)
    }
}

impl From<&str> for SharedName {
    fn from(s: &str) -> Self {
        SharedName(Arc::new(s.to_owned()))
    }
}

impl std::ops::Deref for SharedName {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl std::borrow::Borrow<str> for SharedName {
    fn borrow(&self) -> &str {
        &self.0
    }
}

/// One backend of a Service port, with the facts the tracker used to choose it.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize)]
pub struct Endpoint {
    pub addr: SocketAddr,
    /// The endpoint runs on this node (its `nodeName` is this node's name).
    pub is_local: bool,
    pub ready: bool,
    pub serving: bool,
    pub terminating: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node_name: Option<SharedName>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub zone: Option<SharedName>,
}

impl Endpoint {
    pub fn ip(&self) -> IpAddr {
        self.addr.ip()
    }
}

/// Why an endpoint is absent from one of a Service port's endpoint sets (shown by `debug dump`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ExclusionReason {
    /// Neither ready nor serving-and-terminating.
    NotServing,
    /// Serving but terminating, and ready endpoints exist, so the terminating fallback is off.
    TerminatingWithReadyPresent,
    /// Not ready (e.g. terminating, not serving) while the set uses the terminating fallback.
    NotReadyFallbackNeedsServingTerminating,
    /// Topology hints route this node's traffic to endpoints hinted for its zone; this one is not.
    OtherZone,
    /// Topology hints route this node's traffic to endpoints hinted for it; this one is not.
    OtherNode,
    /// The set follows a `Local` traffic policy and the endpoint runs on another node.
    RemoteUnderLocalPolicy,
}

impl fmt::Display for ExclusionReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ExclusionReason::NotServing => "not ready or serving",
            ExclusionReason::TerminatingWithReadyPresent => "terminating (ready endpoints exist)",
            ExclusionReason::NotReadyFallbackNeedsServingTerminating => {
                "not ready (fallback to serving terminating endpoints)"
            }
            ExclusionReason::OtherZone => "hinted for another zone",
            ExclusionReason::OtherNode => "hinted for another node",
            ExclusionReason::RemoteUnderLocalPolicy => "remote under a Local policy",
        })
    }
}

/// An endpoint left out of the `Cluster` or `Local` set, and why.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize)]
pub struct ExcludedEndpoint {
    pub addr: SocketAddr,
    pub set: TrafficPolicy,
    pub reason: ExclusionReason,
}

/// The endpoints of one Service port, split the way upstream's `CategorizeEndpoints` splits them.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct ServiceEndpoints {
    /// Usable endpoints under the `Cluster` policy (topology and terminating fallback applied).
    /// Empty when the port never uses the `Cluster` policy.
    pub cluster: Vec<Endpoint>,
    /// Usable local endpoints under the `Local` policy (terminating fallback applied).
    /// Empty when the port never uses the `Local` policy.
    pub local: Vec<Endpoint>,
    /// Some usable endpoint exists anywhere in the cluster. When false, traffic to every VIP of
    /// the port is rejected; when true but the policy's set is empty, it is dropped.
    pub has_any: bool,
    pub excluded: Vec<ExcludedEndpoint>,
}

/// Client-IP session affinity.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
pub struct SessionAffinity {
    pub timeout_seconds: u32,
}

/// One Service port in one IP family: every VIP that leads to it and where its traffic goes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ServicePort {
    pub name: ServicePortName,
    pub cluster_ip: IpAddr,
    pub port: u16,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node_port: Option<u16>,
    pub external_ips: Vec<IpAddr>,
    /// Load-balancer ingress IPs kproxy must capture (those with `ipMode: Proxy` are left out:
    /// the load balancer delivers that traffic to the node's own address).
    pub load_balancer_ips: Vec<IpAddr>,
    /// When non-empty, traffic to load-balancer IPs is accepted only from these sources: the
    /// `loadBalancerSourceRanges`, then (when a node IP is inside one) the LB IPs themselves.
    pub lb_allowed_sources: Vec<AllowedSource>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub session_affinity: Option<SessionAffinity>,
    pub internal_policy: TrafficPolicy,
    pub external_policy: TrafficPolicy,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub health_check_node_port: Option<u16>,
    pub endpoints: ServiceEndpoints,
    /// Traffic to the cluster IP.
    pub internal: Path,
    /// Traffic to NodePorts, external IPs and load-balancer IPs; `None` when the port has none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub external: Option<ExternalPath>,
}

impl ServicePort {
    /// Every address the port is reached at (with [`ServicePort::port`]): the cluster IP, the
    /// external IPs and the load-balancer IPs.
    pub fn vips(&self) -> impl Iterator<Item = IpAddr> + '_ {
        std::iter::once(self.cluster_ip)
            .chain(self.external_ips.iter().copied())
            .chain(self.load_balancer_ips.iter().copied())
    }

    /// Reached from outside the cluster: through a NodePort, an external IP or a load balancer.
    pub fn externally_accessible(&self) -> bool {
        self.node_port.is_some()
            || !self.external_ips.is_empty()
            || !self.load_balancer_ips.is_empty()
    }

    /// The endpoints for traffic to the cluster IP (its [`Path`]'s set).
    pub fn internal_endpoints(&self) -> &[Endpoint] {
        self.internal.endpoints(&self.endpoints)
    }

    /// The endpoints for traffic from outside to node ports, external IPs and load-balancer IPs
    /// (the external [`Path`]'s set; for a port not reachable from outside, the set its
    /// external policy names, which the compute leaves empty unless the cluster IP uses it).
    /// Pod and node traffic to those VIPs may short-circuit to [`ServiceEndpoints::cluster`]
    /// instead: see [`ExternalPath::short_circuit_local_traffic`].
    pub fn external_endpoints(&self) -> &[Endpoint] {
        match &self.external {
            Some(e) => e.path.endpoints(&self.endpoints),
            None => self.endpoints.set(self.external_policy),
        }
    }
}

/// Everything for one IP family.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct FamilyState {
    pub family: IpFamily,
    pub node: NodeSettings,
    /// Serialized as a list: each port carries its own name, and JSON keys must be strings.
    #[serde(serialize_with = "serialize_values")]
    pub services: BTreeMap<ServicePortName, ServicePort>,
}

fn serialize_values<S: serde::Serializer>(
    map: &BTreeMap<ServicePortName, ServicePort>,
    s: S,
) -> Result<S::Ok, S::Error> {
    s.collect_seq(map.values())
}

/// An object the tracker skipped, with the reason (logged and counted; never a sync failure).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct SkippedObject {
    pub kind: String,
    pub namespace: String,
    pub name: String,
    pub reason: String,
}

/// The desired state of the node: one entry per family this proxy serves.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct DesiredState {
    pub node_name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub zone: Option<String>,
    pub families: Vec<FamilyState>,
    pub skipped: Vec<SkippedObject>,
}

impl DesiredState {
    pub fn family(&self, family: IpFamily) -> Option<&FamilyState> {
        self.families.iter().find(|f| f.family == family)
    }
}

/// What changed since the last sync: the Service ports to re-render, or everything.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct ChangeSet {
    pub full: bool,
    pub services: BTreeSet<ServicePortName>,
}

impl ChangeSet {
    pub fn full() -> Self {
        Self {
            full: true,
            services: BTreeSet::new(),
        }
    }

    pub fn is_empty(&self) -> bool {
        !self.full && self.services.is_empty()
    }

    pub fn merge(&mut self, other: ChangeSet) {
        self.full |= other.full;
        self.services.extend(other.services);
    }
}
