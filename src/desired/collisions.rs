//! Claims: two Service ports wanting the same `address . protocol . port` (cluster, external or
//! load-balancer IP) or the same NodePort. The API server's allocators prevent this, but
//! manifests and buggy controllers do not; a data plane keyed by those tuples cannot hold both.
//!
//! Who keeps a contested claim, as upstream's allocators imply (the first to allocate keeps it):
//! 1. the port that held it before this update (the tracker remembers holders across updates
//!    and relists: a newcomer never takes a live Service's tuple, whatever its name);
//! 2. else the older Service by creationTimestamp (one without a timestamp is the youngest);
//! 3. else the smaller `namespace/name:port/protocol`, a stable order.
//!
//! A loser loses only what it lost: a NodePort, an external or load-balancer IP are taken off
//! its port, which keeps working otherwise. The cluster IP tuple is the port's identity in the
//! model, so a port that loses it is parked whole (left out, its other claims released); the
//! Service's other ports are untouched. A NodePort equal to a served health-check node port
//! (any Service's) is always refused. Each loss is reported (skip record, log, event, metric).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kproxy_modes::model::{
    DesiredState, IpFamily, Protocol, ServicePort, ServicePortName, SkippedObject,
};

mod plan;

pub use plan::Decision;

/// What a Service port claims exclusively.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Claim {
    Vip(IpAddr, Protocol, u16),
    NodePort(IpFamily, Protocol, u16),
}

impl std::fmt::Display for Claim {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Claim::Vip(ip, proto, port) => {
                write!(f, "{}/{proto}", std::net::SocketAddr::new(*ip, *port))
            }
            Claim::NodePort(fam, proto, port) => write!(f, "node port {port}/{proto} ({fam})"),
        }
    }
}

/// Who held each claim before the current update: a holder keeps it against newcomers.
pub type Holders = HashMap<Claim, ServicePortName>;

/// Everything the port claims as it stands (in the state, a port without what it lost).
pub fn claims(p: &ServicePort) -> BTreeSet<Claim> {
    let proto = p.name.protocol;
    let mut out: BTreeSet<Claim> = p.vips().map(|ip| Claim::Vip(ip, proto, p.port)).collect();
    if let Some(np) = p.node_port {
        out.insert(Claim::NodePort(IpFamily::of(&p.cluster_ip), proto, np));
    }
    out
}

/// The NodePorts a served health-check node port rules out: its number in every protocol,
/// so that no NodePort on it is ever DNATed.
pub fn health_check_claims(p: &ServicePort) -> impl Iterator<Item = Claim> + '_ {
    let fam = IpFamily::of(&p.cluster_ip);
    p.health_check_node_port.into_iter().flat_map(move |hc| {
        [Protocol::Tcp, Protocol::Udp, Protocol::Sctp].map(|proto| Claim::NodePort(fam, proto, hc))
    })
}

/// What the tracker counts to know whether a collision is possible at all.
pub fn counted_claims(p: &ServicePort) -> impl Iterator<Item = Claim> + '_ {
    claims(p).into_iter().chain(health_check_claims(p))
}

/// Ports that lost a claim, kept as computed (full), with the skip record of each loss. A
/// parked port is only here; a port that lost less is also in the state, without it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Losers {
    ports: BTreeMap<(IpFamily, ServicePortName), ServicePort>,
    /// Why, as of the last [`resolve`].
    reasons: Vec<SkippedObject>,
}

impl Losers {
    pub fn skipped(&self) -> impl Iterator<Item = &SkippedObject> {
        self.reasons.iter()
    }

    pub fn clear(&mut self) {
        self.ports.clear();
        self.reasons.clear();
    }

    pub fn is_empty(&self) -> bool {
        self.ports.is_empty()
    }

    /// Names of the losing ports of Service `namespace/name`.
    pub fn names_of<'a>(
        &'a self,
        namespace: &'a str,
        name: &'a str,
    ) -> impl Iterator<Item = &'a ServicePortName> {
        self.ports
            .keys()
            .map(|(_, n)| n)
            .filter(move |n| n.namespace == namespace && n.name == name)
    }

    /// Forgets the losing ports of these names (their Service is recomputed or deleted) and
    /// returns them, as computed. Their reasons stay until the next [`resolve`], so a loss that
    /// persists is not reported again.
    pub fn forget(
        &mut self,
        names: &BTreeSet<ServicePortName>,
    ) -> Vec<((IpFamily, ServicePortName), ServicePort)> {
        let keys: Vec<_> = self
            .ports
            .keys()
            .filter(|(_, n)| names.contains(n))
            .cloned()
            .collect();
        keys.into_iter()
            .filter_map(|k| self.ports.remove_entry(&k))
            .collect()
    }
}

/// How the claimants of a contested claim are ordered.
pub struct Rank<'a> {
    /// Holders of the ports recomputed (or dropped) in this update, before it.
    pub prior: &'a Holders,
    /// Whether a port was recomputed in this update: the claims of one that was not are held
    /// as it stands in the state.
    pub fresh: &'a dyn Fn(&ServicePortName) -> bool,
    /// Its Service's creationTimestamp.
    pub created: &'a dyn Fn(&ServicePortName) -> Option<Time>,
}

/// Settles every contested claim: takes lost claims off the ports in `state` (parking those
/// that lost their cluster IP tuple in `losers`), gives back what a collision's end frees, and
/// returns the names of every port whose state changed. New losses are logged once.
pub fn resolve(
    state: &mut DesiredState,
    losers: &mut Losers,
    rank: &Rank<'_>,
) -> BTreeSet<ServicePortName> {
    let decisions = plan::decide(state, losers, rank);
    let mut moved = BTreeSet::new();
    let mut reasons = Vec::new();
    for d in decisions {
        reasons.extend(d.reasons());
        moved.extend(d.apply(state, losers));
    }
    let before: BTreeSet<SkippedObject> = std::mem::take(&mut losers.reasons).into_iter().collect();
    for r in reasons.iter().filter(|r| !before.contains(r)) {
        tracing::warn!(service = %format!("{}/{}", r.namespace, r.name), reason = %r.reason, "Service port loses a claim to another Service");
    }
    reasons.sort();
    losers.reasons = reasons;
    moved
}

/// What kind of claim a skip record reports, read from its reason (the records are plain
/// text; this is the one place that knows their wording).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Loss {
    /// A VIP tuple held by another Service.
    Port,
    /// A NodePort held by another Service.
    NodePort,
    /// A NodePort kproxy or a health-check server listens on.
    NodePortReserved,
    /// A NodePort outside `--service-node-port-range`.
    NodePortOutOfRange,
}

impl Loss {
    pub fn of(reason: &str) -> Option<Loss> {
        if reason.contains(" is outside --service-node-port-range ") {
            Some(Loss::NodePortOutOfRange)
        } else if reason.contains(" is kproxy's ")
            || reason.contains(" is the health check node port of ")
        {
            Some(Loss::NodePortReserved)
        } else if reason.contains(" is already used by ") || reason.ends_with(" is contested") {
            Some(match reason.contains(": node port ") {
                true => Loss::NodePort,
                false => Loss::Port,
            })
        } else {
            None
        }
    }

    /// The `reason` label of `kproxy_skipped_objects`.
    pub fn class(self) -> &'static str {
        match self {
            Loss::Port => "port-collision",
            Loss::NodePort => "node-port-collision",
            Loss::NodePortReserved => "node-port-reserved",
            Loss::NodePortOutOfRange => "node-port-out-of-range",
        }
    }

    /// The reason of the Event on the losing Service.
    pub fn event_reason(self) -> &'static str {
        match self {
            Loss::Port => "PortClash",
            Loss::NodePort | Loss::NodePortReserved => "NodePortClash",
            Loss::NodePortOutOfRange => "NodePortOutOfRange",
        }
    }
}
