//! Port collisions: two Service ports claiming the same `address . protocol . port` (cluster,
//! external or load-balancer IP) or the same NodePort. The API server's allocators prevent this,
//! but manifests and buggy controllers do not; a data plane keyed by those tuples cannot hold
//! both. The older Service keeps the tuple (creationTimestamp, then name, decides); the other
//! Service port is parked: left out of the desired state and reported, until the collision ends.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    net::IpAddr,
};

use kproxy_modes::model::{
    DesiredState, IpFamily, Protocol, ServicePort, ServicePortName, SkippedObject,
};

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

pub fn claims(p: &ServicePort) -> BTreeSet<Claim> {
    let proto = p.name.protocol;
    let mut out: BTreeSet<Claim> = p.vips().map(|ip| Claim::Vip(ip, proto, p.port)).collect();
    if let Some(np) = p.node_port {
        out.insert(Claim::NodePort(IpFamily::of(&p.cluster_ip), proto, np));
    }
    out
}

/// Ports left out because of a collision, with the skip record explaining each.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Parked {
    ports: BTreeMap<(IpFamily, ServicePortName), ServicePort>,
    /// Why each parked port is parked, as of the last [`resolve`].
    reasons: Vec<SkippedObject>,
}

impl Parked {
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

    /// Names of the parked ports of Service `namespace/name`.
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

    /// Forgets parked ports of these names (their Service was recomputed or deleted) and
    /// returns them.
    pub fn forget(&mut self, names: &BTreeSet<ServicePortName>) -> Vec<ServicePort> {
        let keys: Vec<_> = self
            .ports
            .keys()
            .filter(|(_, n)| names.contains(n))
            .cloned()
            .collect();
        keys.into_iter()
            .filter_map(|k| self.ports.remove(&k))
            .collect()
    }
}

/// Moves colliding ports from `state` into `parked` and ports whose collision ended back, and
/// returns the names of every port that moved. `rank` orders claimants: the smallest wins.
pub fn resolve<R: Ord>(
    state: &mut DesiredState,
    parked: &mut Parked,
    rank: impl Fn(&ServicePortName) -> R,
) -> BTreeSet<ServicePortName> {
    // Every claimant, active or parked, competes afresh: a port parked behind one that has since
    // gone must come back.
    let mut owner: HashMap<Claim, (R, ServicePortName)> = HashMap::new();
    let all = state
        .families
        .iter()
        .flat_map(|f| f.services.values())
        .chain(parked.ports.values());
    for p in all {
        for c in claims(p) {
            let r = rank(&p.name);
            match owner.get(&c) {
                Some((best, name)) if (best, name) <= (&r, &p.name) => {}
                _ => {
                    owner.insert(c, (r, p.name.clone()));
                }
            }
        }
    }
    let loses = |p: &ServicePort| {
        claims(p).into_iter().find_map(|c| {
            let (_, winner) = &owner[&c];
            (winner != &p.name).then(|| (c, winner.clone()))
        })
    };
    let mut moved = BTreeSet::new();
    for fam in &mut state.families {
        let losers: Vec<ServicePortName> = fam
            .services
            .values()
            .filter(|p| loses(p).is_some())
            .map(|p| p.name.clone())
            .collect();
        for name in losers {
            let port = fam.services.remove(&name).expect("listed above");
            if let Some((claim, winner)) = loses(&port) {
                tracing::warn!(service_port = %name, %claim, winner = %winner, "skipping Service port: it collides with another");
            }
            moved.insert(name.clone());
            parked.ports.insert((fam.family, name), port);
        }
    }
    let freed: Vec<(IpFamily, ServicePortName)> = parked
        .ports
        .iter()
        .filter(|(_, p)| loses(p).is_none())
        .map(|(k, _)| k.clone())
        .collect();
    for key in freed {
        let port = parked.ports.remove(&key).expect("listed above");
        if let Some(fam) = state.families.iter_mut().find(|f| f.family == key.0) {
            moved.insert(key.1.clone());
            fam.services.insert(key.1, port);
        }
    }
    parked.reasons = parked
        .ports
        .values()
        .filter_map(|p| {
            let (claim, winner) = loses(p)?;
            Some(SkippedObject {
                kind: "Service".into(),
                namespace: p.name.namespace.clone(),
                name: p.name.name.clone(),
                reason: format!("port {}: {claim} is already used by {winner}", p.name.port),
            })
        })
        .collect();
    moved
}
