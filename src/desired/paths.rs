//! Per Service port: the path each kind of traffic takes, what a path without endpoints does,
//! how external traffic is masqueraded, and which sources may reach load-balancer IPs. Each rule
//! is upstream's (pkg/proxy/nftables/proxier.go `syncProxyRules`; iptables mode decides the same),
//! decided here once so that no mode re-derives it.

use std::net::IpAddr;

use ipnet::IpNet;
use kproxy_modes::model::{
    AllowedSource, ExternalPath, Masquerade, NoEndpoints, NoEndpointsReason, NoEndpointsVerdict,
    Path, ServiceEndpoints, TrafficPolicy,
};

/// The path of traffic to the cluster IP: the set internalTrafficPolicy names.
pub fn internal(policy: TrafficPolicy, eps: &ServiceEndpoints) -> Path {
    path(policy, eps)
}

/// The path of traffic to NodePorts, external IPs and LB IPs, when the port has any of them.
///
/// Upstream: under eTP=Local "pod traffic for external destinations" and node-originated
/// traffic are short-circuited to the cluster chain (they would come back from the load
/// balancer anyway), and only node-originated traffic is masqueraded ("masquerade LOCAL
/// traffic"); under eTP=Cluster all external traffic is masqueraded, since it may leave the node.
pub fn external(
    policy: TrafficPolicy,
    externally_accessible: bool,
    eps: &ServiceEndpoints,
) -> Option<ExternalPath> {
    if !externally_accessible {
        return None;
    }
    let local = policy == TrafficPolicy::Local;
    Some(ExternalPath {
        path: path(policy, eps),
        short_circuit_local_traffic: local,
        masquerade: if local {
            Masquerade::NodeOriginOnly
        } else {
            Masquerade::Always
        },
    })
}

fn path(set: TrafficPolicy, eps: &ServiceEndpoints) -> Path {
    Path {
        set,
        when_empty: eps.set(set).is_empty().then(|| no_endpoints(eps.has_any)),
    }
}

/// Upstream: `if !hasEndpoints` the filter target is "reject" (comment "has no endpoints"):
/// the client learns at once that nothing serves the port. `else if !hasInternalEndpoints` /
/// `!hasExternalEndpoints` it is "drop" ("has no local endpoints"): usable endpoints exist, just
/// not for this path's Local policy, so the client may retry (or the load balancer's health
/// check moves it elsewhere). The Cluster set is empty only when nothing usable exists, so a
/// dropping path is always a Local one.
fn no_endpoints(any_usable_in_cluster: bool) -> NoEndpoints {
    if any_usable_in_cluster {
        NoEndpoints {
            verdict: NoEndpointsVerdict::Drop,
            reason: NoEndpointsReason::NoLocalEndpoints,
        }
    } else {
        NoEndpoints {
            verdict: NoEndpointsVerdict::Reject,
            reason: NoEndpointsReason::NoEndpoints,
        }
    }
}

/// The sources allowed to reach the LB IPs: empty (any) without `loadBalancerSourceRanges`.
///
/// Upstream (`allowFromNode`): when a node IP is inside a range, the LB IPs are allowed as
/// sources too, because a VIP-style load balancer that loops traffic from the node back to it
/// presents the LB IP as source.
pub fn lb_allowed_sources(
    ranges: &[IpNet],
    lb_ips: &[IpAddr],
    node_ips: &[IpAddr],
) -> Vec<AllowedSource> {
    let mut out: Vec<AllowedSource> = ranges.iter().copied().map(AllowedSource::Range).collect();
    let node_allowed = ranges
        .iter()
        .any(|r| node_ips.iter().any(|ip| r.contains(ip)));
    if node_allowed {
        out.extend(lb_ips.iter().copied().map(AllowedSource::Address));
    }
    out
}
