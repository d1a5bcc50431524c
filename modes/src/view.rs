//! What a packet meets, by meaning: for each destination a Service is reached at, where it goes.
//! Every mode reads its kernel state back into a [`KernelView`] and the desired state renders to
//! the same form ([`expected`]), so `kproxy debug dump --kernel` compares meanings (which
//! endpoints, which verdict), never one mode's spelling (slot numbers, chain hashes, handles).

use std::{
    collections::{BTreeMap, BTreeSet},
    fmt,
    net::{IpAddr, SocketAddr},
};

use serde::Serialize;

use crate::model::{
    DesiredState, IpFamily, NoEndpointsVerdict, Path, Protocol, ServicePort, ServicePortName,
};

/// A destination kproxy programs: a VIP tuple or a NodePort (on the family's node-port IPs).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "kebab-case", tag = "kind")]
pub enum Dest {
    Vip {
        ip: IpAddr,
        protocol: Protocol,
        port: u16,
    },
    NodePort {
        family: IpFamily,
        protocol: Protocol,
        port: u16,
    },
}

impl fmt::Display for Dest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Dest::Vip { ip, protocol, port } => {
                write!(f, "{}/{}", SocketAddr::new(*ip, *port), protocol)
            }
            Dest::NodePort {
                family,
                protocol,
                port,
            } => write!(f, "node port {port}/{protocol} ({family})"),
        }
    }
}

/// Where new connections to a destination from outside the node go.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Outcome {
    /// DNATed (or relayed) to one of these endpoints.
    Endpoints(BTreeSet<SocketAddr>),
    Reject,
    Drop,
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Outcome::Endpoints(eps) => {
                let list: Vec<String> = eps.iter().map(ToString::to_string).collect();
                write!(f, "endpoints {}", list.join(", "))
            }
            Outcome::Reject => f.write_str("reject"),
            Outcome::Drop => f.write_str("drop"),
        }
    }
}

/// The kernel's state (or the desired one) by meaning.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct KernelView {
    /// Each destination's outcome for traffic from outside the node.
    pub dests: BTreeMap<Dest, Outcome>,
    /// The mode's own summary of what it read (object counts, names), for the report.
    pub summary: Vec<String>,
}

/// One way the kernel differs from the desired state.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Difference {
    pub dest: Dest,
    /// `None`: not programmed.
    pub kernel: Option<Outcome>,
    /// `None`: programmed but not desired.
    pub desired: Option<Outcome>,
}

impl fmt::Display for Difference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let show = |o: &Option<Outcome>| o.as_ref().map_or("nothing".to_owned(), |o| o.to_string());
        write!(
            f,
            "{}: kernel has {}, desired {}",
            self.dest,
            show(&self.kernel),
            show(&self.desired)
        )
    }
}

/// The view the desired state renders to in any mode.
pub fn expected(desired: &DesiredState) -> KernelView {
    let mut view = KernelView::default();
    for fam in &desired.families {
        for sp in fam.services.values() {
            for (dest, outcome) in port_dests(fam.family, sp) {
                view.dests.insert(dest, outcome);
            }
        }
    }
    view
}

/// The destinations of one Service port and what outside traffic to each meets.
pub fn port_dests(family: IpFamily, sp: &ServicePort) -> Vec<(Dest, Outcome)> {
    let protocol = sp.name.protocol;
    let vip = |ip| Dest::Vip {
        ip,
        protocol,
        port: sp.port,
    };
    let mut out = vec![(vip(sp.cluster_ip), outcome(sp, &sp.internal))];
    let Some(ext) = &sp.external else {
        return out; // no external destination
    };
    let external = outcome(sp, &ext.path);
    for ip in sp.external_ips.iter().chain(&sp.load_balancer_ips) {
        out.push((vip(*ip), external.clone()));
    }
    if let Some(port) = sp.node_port {
        let dest = Dest::NodePort {
            family,
            protocol,
            port,
        };
        out.push((dest, external));
    }
    out
}

/// What outside traffic on `path` meets: its endpoints, or the compute's verdict without them.
fn outcome(sp: &ServicePort, path: &Path) -> Outcome {
    match path.when_empty.map(|n| n.verdict) {
        None => Outcome::Endpoints(
            path.endpoints(&sp.endpoints)
                .iter()
                .map(|e| e.addr)
                .collect(),
        ),
        Some(NoEndpointsVerdict::Drop) => Outcome::Drop,
        Some(NoEndpointsVerdict::Reject) => Outcome::Reject,
    }
}

/// Every destination whose outcome differs between the kernel and the desired state.
pub fn diff(kernel: &KernelView, desired: &KernelView) -> Vec<Difference> {
    let dests: BTreeSet<&Dest> = kernel.dests.keys().chain(desired.dests.keys()).collect();
    dests
        .into_iter()
        .filter_map(|d| {
            let (k, w) = (kernel.dests.get(d), desired.dests.get(d));
            (k != w).then(|| Difference {
                dest: d.clone(),
                kernel: k.cloned(),
                desired: w.cloned(),
            })
        })
        .collect()
}

/// The Service port each destination belongs to (for grouping a report).
pub fn owners(desired: &DesiredState) -> BTreeMap<Dest, ServicePortName> {
    let mut out = BTreeMap::new();
    for fam in &desired.families {
        for sp in fam.services.values() {
            for (dest, _) in port_dests(fam.family, sp) {
                out.insert(dest, sp.name.clone());
            }
        }
    }
    out
}
