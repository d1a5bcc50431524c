//! Reconciling the kernel's UDP conntrack table against the desired state, as upstream
//! kube-proxy's `CleanStaleEntries` does. Used on a process's first sync, where there is no
//! previous state to diff against: the table itself says where each flow was DNATed.
//!
//! A listed UDP entry is stale when
//! - its original destination is a UDP Service port's VIP (cluster, external or LB IP) and
//!   port, the port has endpoints, and its reply source (where it was DNATed to) is none of
//!   them. A flow that was not DNATed has the VIP itself as reply source, so a flow cached while
//!   the port had no endpoints is stale as soon as it has some;
//! - otherwise, its original destination port is a UDP NodePort with endpoints (on an address
//!   NodePorts are served on, when nodePortAddresses restricts them), and its reply source is
//!   none of the endpoints.
//!
//! Ports without endpoints are left alone: their flows cannot go anywhere better. Unlike
//! upstream, which compares only the reply source address, the endpoint's port must match too
//! (a flow DNATed to a port the endpoint no longer serves on is stale), and a flow to a VIP is
//! judged by that VIP's port alone, never also as a NodePort flow of another Service that
//! happens to use the same port number.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::{IpAddr, SocketAddr},
};

use kproxy_dataplane::conntrack::{Entry, IPPROTO_UDP};

use super::UdpPort;
use crate::model::{DesiredState, IpFamily, NodePortIps};

type Endpoints = BTreeSet<SocketAddr>;

/// Where the UDP flows of one family may be DNATed to, per VIP and port and per NodePort.
#[derive(Debug)]
pub struct Targets {
    family: IpFamily,
    /// Every UDP VIP and Service port; an empty set (no endpoints) leaves its flows alone, but
    /// still keeps them from being judged as NodePort flows.
    vips: BTreeMap<(IpAddr, u16), Endpoints>,
    node_ports: BTreeMap<u16, Endpoints>,
    /// `None`: NodePorts are open on every local address; else the desired state's resolved
    /// NodePort addresses (the ones the modes and health checks use).
    node_port_ips: Option<Vec<IpAddr>>,
}

impl Targets {
    pub fn of(desired: &DesiredState, family: IpFamily) -> Self {
        let mut out = Targets {
            family,
            vips: BTreeMap::new(),
            node_ports: BTreeMap::new(),
            node_port_ips: None,
        };
        let Some(state) = desired.family(family) else {
            return out;
        };
        if let NodePortIps::Only(ips) = &state.node.node_port_ips {
            out.node_port_ips = Some(ips.clone());
        }
        for port in state.services.values().filter_map(UdpPort::of) {
            for vip in &port.vips {
                let eps = out.vips.entry((*vip, port.port)).or_default();
                eps.extend(port.endpoints.iter().copied());
            }
            if let Some(np) = port.node_port {
                let eps = out.node_ports.entry(np).or_default();
                eps.extend(port.endpoints.iter().copied());
            }
        }
        out
    }

    /// No UDP port of the family has endpoints: nothing can be stale, no table dump is needed.
    pub fn is_empty(&self) -> bool {
        let served = |eps: &Endpoints| !eps.is_empty();
        !self.vips.values().any(served) && !self.node_ports.values().any(served)
    }

    /// Whether `entry` is a UDP flow of this family to a served Service port that was not
    /// DNATed to one of its endpoints.
    pub fn is_stale(&self, entry: &Entry) -> bool {
        let (orig, reply) = (&entry.orig, &entry.reply);
        let (Some(dst), Some(dport)) = (orig.dst, orig.dst_port) else {
            return false;
        };
        if orig.proto != Some(IPPROTO_UDP) || IpFamily::of(&dst) != self.family {
            return false;
        }
        // Without a full reply source there is nothing to compare; leave the entry alone.
        let Some(target) = reply.src.zip(reply.src_port).map(SocketAddr::from) else {
            return false;
        };
        let misdirected = |eps: &Endpoints| !eps.is_empty() && !eps.contains(&target);
        if let Some(eps) = self.vips.get(&(dst, dport)) {
            return misdirected(eps);
        }
        let on_node_port_address =
            (self.node_port_ips.as_ref()).is_none_or(|ips| ips.contains(&dst));
        on_node_port_address && self.node_ports.get(&dport).is_some_and(misdirected)
    }
}

/// The entries of `entries` (a dump of `family`'s table) that are stale in `desired`. Pure.
pub fn reconcile(desired: &DesiredState, family: IpFamily, entries: &[Entry]) -> Vec<Entry> {
    let targets = Targets::of(desired, family);
    (entries.iter())
        .filter(|e| targets.is_stale(e))
        .cloned()
        .collect()
}

#[cfg(test)]
mod tests;
