//! The pure part of a sync: what the IPVS table and `kube-ipvs0` must hold for a desired state.
//! One virtual server per VIP (cluster IP, external IP, load-balancer IP), port and protocol,
//! and one per node-port address for a NodePort; masqueraded (NAT) real servers of weight 1.
//! A path without endpoints gets a virtual server without real servers: the companion
//! nftables table (`nft.rs`) drops or rejects its new connections before IPVS sees them.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::IpAddr,
};

use kproxy_dataplane::ipvs::{Destination, Protocol, Service, ServiceKey};

use crate::model::{self, DesiredState, Endpoint, IpFamily, NodePortIps, ServicePort};

/// The scheduler when none is configured (upstream's default).
pub const DEFAULT_SCHEDULER: &str = "rr";

/// Every virtual server and VIP kproxy wants, both families.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Plan {
    /// Virtual servers with their real servers (sorted by address and port).
    pub services: BTreeMap<ServiceKey, (Service, Vec<Destination>)>,
    /// The Service port each virtual server is for (logs, kernel view).
    pub owners: BTreeMap<ServiceKey, model::ServicePortName>,
    /// Addresses for `kube-ipvs0`.
    pub vips: BTreeSet<IpAddr>,
    /// The node-port addresses per family NodePort virtual servers were made on.
    pub nodeport_ips: BTreeMap<IpFamily, Vec<IpAddr>>,
}

/// `local` lists the node's local addresses per family, for [`NodePortIps::AllLocal`].
pub fn plan(
    desired: &DesiredState,
    scheduler: &str,
    local: &BTreeMap<IpFamily, Vec<IpAddr>>,
) -> Plan {
    let mut out = Plan::default();
    let scheduler = self::scheduler(scheduler);
    for fam in &desired.families {
        for sp in fam.services.values() {
            out.vips.extend(sp.vips());
        }
    }
    for fam in &desired.families {
        let np_ips = nodeport_ips(&fam.node.node_port_ips, local.get(&fam.family), &out.vips);
        for sp in fam.services.values() {
            plan_port(&mut out, sp, scheduler, &np_ips);
        }
        out.nodeport_ips.insert(fam.family, np_ips);
    }
    out
}

/// The addresses NodePort virtual servers are made on: loopback left out (IPVS cannot DNAT a
/// packet to 127.0.0.1 off the node), and kube-ipvs0's own VIPs and IPv6 link-local ones too.
pub fn nodeport_ips(
    ips: &NodePortIps,
    local: Option<&Vec<IpAddr>>,
    vips: &BTreeSet<IpAddr>,
) -> Vec<IpAddr> {
    let all = match ips {
        NodePortIps::AllLocal => local.cloned().unwrap_or_default(),
        NodePortIps::Only(ips) => ips.clone(),
    };
    let usable = |ip: &IpAddr| match ip {
        IpAddr::V4(a) => !a.is_loopback(),
        IpAddr::V6(a) => !a.is_loopback() && !a.is_unicast_link_local(),
    };
    let mut out: Vec<IpAddr> = all
        .into_iter()
        .filter(|ip| usable(ip) && !vips.contains(ip))
        .collect();
    out.sort();
    out.dedup();
    out
}

pub fn protocol(p: model::Protocol) -> Protocol {
    match p {
        model::Protocol::Tcp => Protocol::Tcp,
        model::Protocol::Udp => Protocol::Udp,
        model::Protocol::Sctp => Protocol::Sctp,
    }
}

/// One Service port's share of the plan: its virtual servers (with real servers) and VIPs.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PortPlan {
    pub services: Vec<(Service, Vec<Destination>)>,
    pub vips: Vec<IpAddr>,
}

/// The virtual servers of Service port `sp`; NodePorts on `np_ips`.
pub fn port_plan(sp: &ServicePort, scheduler: &str, np_ips: &[IpAddr]) -> PortPlan {
    let proto = protocol(sp.name.protocol);
    let mut out = PortPlan {
        services: Vec::new(),
        vips: sp.vips().collect(),
    };
    let mut add = |addr: IpAddr, port: u16, eps: &[Endpoint]| {
        let mut svc = Service::new(addr, proto, port, scheduler);
        if let Some(a) = sp.session_affinity {
            svc = svc.persistent(a.timeout_seconds);
        }
        let mut dests: Vec<Destination> = eps
            .iter()
            .map(|e| Destination::masquerade(e.ip(), e.addr.port(), 1))
            .collect();
        dests.sort_by_key(|d| (d.address, d.port));
        dests.dedup_by_key(|d| (d.address, d.port));
        out.services.push((svc, dests));
    };
    add(sp.cluster_ip, sp.port, sp.internal_endpoints());
    if sp.external.is_some() {
        let ext = sp.external_endpoints();
        for ip in sp.external_ips.iter().chain(&sp.load_balancer_ips) {
            add(*ip, sp.port, ext);
        }
        if let Some(np) = sp.node_port {
            let family = IpFamily::of(&sp.cluster_ip);
            for ip in np_ips.iter().filter(|ip| IpFamily::of(ip) == family) {
                add(*ip, np, ext);
            }
        }
    }
    out
}

fn plan_port(out: &mut Plan, sp: &ServicePort, scheduler: &str, np_ips: &[IpAddr]) {
    for (svc, dests) in port_plan(sp, scheduler, np_ips).services {
        let key = svc.key();
        if let Some(other) = out.owners.get(&key) {
            tracing::warn!(service = %sp.name, other = %other, vip = %key.address, port = key.port, "two Service ports claim one virtual server; the first keeps it");
            continue;
        }
        out.services.insert(key, (svc, dests));
        out.owners.insert(key, sp.name.clone());
    }
}

/// The scheduler to use: `configured`, or upstream's default when empty.
pub fn scheduler(configured: &str) -> &str {
    if configured.is_empty() {
        DEFAULT_SCHEDULER
    } else {
        configured
    }
}
