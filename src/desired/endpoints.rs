//! From EndpointSlices to the endpoint sets of one Service port: merging slices, then choosing
//! the Cluster and Local sets the way upstream's `CategorizeEndpoints` documents.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::SocketAddr,
};

use kproxy_modes::model::{
    Endpoint, ExcludedEndpoint, ExclusionReason, IpFamily, Protocol, ServiceEndpoints, SharedName,
    TrafficPolicy,
};

use super::slice::Slice;

/// An endpoint as a slice describes it, with its topology hints.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SliceEndpoint {
    pub endpoint: Endpoint,
    pub zone_hints: BTreeSet<String>,
    pub node_hints: BTreeSet<String>,
}

/// Collects the endpoints of the Service port named `port_name`/`protocol` from all of the
/// Service's slices of `family`. Each slice carries its own port number for the name, which is
/// how named target ports resolve per slice. An address in several slices counts once: the local
/// copy wins if they disagree (as upstream), then the most usable one, so the result does not
/// depend on the order slices arrived in.
pub fn collect(
    slices: &[&Slice],
    port_name: &str,
    protocol: Protocol,
    family: IpFamily,
    node_name: &str,
) -> Vec<SliceEndpoint> {
    let mut by_addr: BTreeMap<SocketAddr, SliceEndpoint> = BTreeMap::new();
    for slice in slices {
        if slice.family != Some(family) {
            continue; // FQDN slices are not proxied.
        }
        // The first port of the name and protocol decides, even when its number is unusable.
        let Some(port) = slice
            .ports
            .iter()
            .find(|p| &*p.name == port_name && p.protocol == Some(protocol))
        else {
            continue;
        };
        let Some(port_num) = port.port else {
            continue;
        };
        for ep in &slice.endpoints {
            let ip = ep.addr;
            if IpFamily::of(&ip) != family {
                continue;
            }
            let ready = ep.ready.unwrap_or(true);
            let candidate = SliceEndpoint {
                endpoint: Endpoint {
                    addr: SocketAddr::new(ip, port_num),
                    is_local: !node_name.is_empty() && ep.node_name.as_deref() == Some(node_name),
                    ready,
                    serving: ep.serving.unwrap_or(ready),
                    terminating: ep.terminating.unwrap_or(false),
                    node_name: ep.node_name.clone(),
                    zone: ep.zone.clone(),
                },
                zone_hints: hint_names(ep.hints.as_deref().map(|h| &*h.zones)),
                node_hints: hint_names(ep.hints.as_deref().map(|h| &*h.nodes)),
            };
            match by_addr.get(&candidate.endpoint.addr) {
                Some(existing) if rank(existing) >= rank(&candidate) => {}
                _ => {
                    by_addr.insert(candidate.endpoint.addr, candidate);
                }
            }
        }
    }
    by_addr.into_values().collect()
}

fn hint_names(hints: Option<&[SharedName]>) -> BTreeSet<String> {
    hints
        .unwrap_or_default()
        .iter()
        .map(|n| n.to_string())
        .collect()
}

/// Orders duplicate copies of one address; the greatest wins. The trailing fields only make the
/// choice total, so it never depends on arrival order.
fn rank(e: &SliceEndpoint) -> impl Ord + '_ {
    let ep = &e.endpoint;
    (
        ep.is_local,
        ep.ready,
        ep.serving,
        !ep.terminating,
        ep.node_name.clone(),
        &e.zone_hints,
        &e.node_hints,
    )
}

/// Topology the Cluster set follows, chosen from the hints (upstream's all-or-nothing rule).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Topology {
    None,
    SameNode,
    SameZone,
}

/// Hints are honoured only when every ready endpoint carries one and at least one is for this
/// node (or zone); otherwise they are ignored altogether. Node hints take precedence.
fn topology(endpoints: &[SliceEndpoint], node_name: &str, zone: Option<&str>) -> Topology {
    let ready: Vec<&SliceEndpoint> = endpoints.iter().filter(|e| e.endpoint.ready).collect();
    if ready.is_empty() {
        return Topology::None;
    }
    if ready.iter().all(|e| !e.node_hints.is_empty())
        && ready.iter().any(|e| e.node_hints.contains(node_name))
    {
        return Topology::SameNode;
    }
    if let Some(zone) = zone
        && ready.iter().all(|e| !e.zone_hints.is_empty())
        && ready.iter().any(|e| e.zone_hints.contains(zone))
    {
        return Topology::SameZone;
    }
    Topology::None
}

/// What the policies of a Service port need computed.
pub struct Policies {
    pub internal: TrafficPolicy,
    pub external: TrafficPolicy,
    pub externally_accessible: bool,
}

impl Policies {
    /// The Cluster set is needed for iTP=Cluster, and for any externally reachable port: even
    /// under eTP=Local, pod and node traffic to its external VIPs short-circuits to it.
    fn uses_cluster(&self) -> bool {
        self.internal == TrafficPolicy::Cluster || self.externally_accessible
    }

    fn uses_local(&self) -> bool {
        self.internal == TrafficPolicy::Local
            || (self.externally_accessible && self.external == TrafficPolicy::Local)
    }
}

/// Splits a port's endpoints into the Cluster and Local sets, recording why each left-out
/// endpoint was left out of each set the port uses.
pub fn categorize(
    endpoints: &[SliceEndpoint],
    policies: &Policies,
    node_name: &str,
    zone: Option<&str>,
) -> ServiceEndpoints {
    let mut out = ServiceEndpoints::default();
    if policies.uses_cluster() {
        let topo = topology(endpoints, node_name, zone);
        let in_topology = |e: &SliceEndpoint| match topo {
            Topology::None => None,
            Topology::SameNode => {
                (!e.node_hints.contains(node_name)).then_some(ExclusionReason::OtherNode)
            }
            Topology::SameZone => (!zone.is_some_and(|z| e.zone_hints.contains(z)))
                .then_some(ExclusionReason::OtherZone),
        };
        // Hints only exist when ready endpoints exist, so a topology that selects nothing
        // cannot happen: the terminating fallback below applies only when nothing is ready.
        let any_ready = endpoints.iter().any(|e| e.endpoint.ready);
        let verdicts = endpoints.iter().map(|e| {
            let reason = usability(&e.endpoint, any_ready).or_else(|| in_topology(e));
            (e, reason)
        });
        fill(&mut out, TrafficPolicy::Cluster, verdicts);
        out.has_any = !out.cluster.is_empty();
    }
    if policies.uses_local() {
        let usable =
            |e: &SliceEndpoint| e.endpoint.ready || (e.endpoint.serving && e.endpoint.terminating);
        out.has_any |= endpoints.iter().any(usable);
        let any_local_ready = endpoints
            .iter()
            .any(|e| e.endpoint.is_local && e.endpoint.ready);
        let verdicts = endpoints.iter().map(|e| {
            let reason = if e.endpoint.is_local {
                usability(&e.endpoint, any_local_ready)
            } else {
                Some(ExclusionReason::RemoteUnderLocalPolicy)
            };
            (e, reason)
        });
        fill(&mut out, TrafficPolicy::Local, verdicts);
    }
    // The sets live in the desired state until the Service changes: without this, pushing 10
    // endpoints leaves room for 16 (at 10k Services, ~4 MiB of spare capacity).
    out.cluster.shrink_to_fit();
    out.local.shrink_to_fit();
    out.excluded.shrink_to_fit();
    out
}

/// Ready endpoints are used; when none is ready (`ready_exist` false), serving terminating ones
/// are used instead.
fn usability(ep: &Endpoint, ready_exist: bool) -> Option<ExclusionReason> {
    match (ep.ready, ep.serving && ep.terminating, ready_exist) {
        (true, _, _) => None,
        (false, true, true) => Some(ExclusionReason::TerminatingWithReadyPresent),
        (false, true, false) => None,
        (false, false, true) => Some(ExclusionReason::NotServing),
        (false, false, false) => Some(ExclusionReason::NotReadyFallbackNeedsServingTerminating),
    }
}

fn fill<'a>(
    out: &mut ServiceEndpoints,
    set: TrafficPolicy,
    verdicts: impl Iterator<Item = (&'a SliceEndpoint, Option<ExclusionReason>)>,
) {
    for (e, reason) in verdicts {
        match reason {
            None => match set {
                TrafficPolicy::Cluster => out.cluster.push(e.endpoint.clone()),
                TrafficPolicy::Local => out.local.push(e.endpoint.clone()),
            },
            Some(reason) => out.excluded.push(ExcludedEndpoint {
                addr: e.endpoint.addr,
                set,
                reason,
            }),
        }
    }
}
