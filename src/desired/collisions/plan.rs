//! Deciding what each port involved in a collision keeps: first which ports lose their cluster
//! IP tuple (and so are parked), then, among the others, every remaining claim.

use std::collections::{BTreeSet, HashMap, HashSet};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kproxy_modes::model::{DesiredState, IpFamily, ServicePort, ServicePortName, SkippedObject};

use super::{Claim, Losers, Rank, claims, health_check_claims};
use crate::desired::{paths, service::port_label};

/// One claimant: the port as computed, and what it held before this update.
struct Cand<'a> {
    fam: IpFamily,
    full: &'a ServicePort,
    in_state: Option<&'a ServicePort>,
    is_loser: bool,
    claims: BTreeSet<Claim>,
    held: BTreeSet<Claim>,
    /// Older first; no creationTimestamp is the youngest.
    age: (bool, Option<Time>),
}

impl Cand<'_> {
    fn cluster_claim(&self) -> Claim {
        let p = self.full;
        Claim::Vip(p.cluster_ip, p.name.protocol, p.port)
    }

    /// The order among the claimants of `claim`: holder first, then age, then name.
    fn key(&self, claim: &Claim) -> (bool, &(bool, Option<Time>), &ServicePortName) {
        (!self.held.contains(claim), &self.age, &self.full.name)
    }
}

/// What one involved port keeps.
pub struct Decision {
    fam: IpFamily,
    name: ServicePortName,
    /// `(claim, why it is lost)`.
    lost: Vec<(Claim, String)>,
    parked: bool,
}

impl Decision {
    /// The skip records of its losses.
    pub fn reasons(&self) -> impl Iterator<Item = SkippedObject> + '_ {
        self.lost.iter().map(|(claim, why)| SkippedObject {
            kind: "Service".into(),
            namespace: self.name.namespace.clone(),
            name: self.name.name.clone(),
            reason: format!("port {}: {claim} {why}", port_label(&self.name.port)),
        })
    }

    /// Puts the port in the state as decided; returns its name if its state changed.
    pub(super) fn apply(
        self,
        state: &mut DesiredState,
        losers: &mut Losers,
    ) -> Option<ServicePortName> {
        let key = (self.fam, self.name);
        let was_loser = losers.ports.contains_key(&key);
        if self.lost.is_empty() && !was_loser {
            return None; // A winner that lost nothing before either: already as it should be.
        }
        let fs = state.families.iter_mut().find(|f| f.family == key.0)?;
        let old = fs.services.remove(&key.1);
        let full = match losers.ports.remove(&key) {
            Some(full) => full,
            None => old.clone()?,
        };
        // A losing port stays known as computed, so it comes back whole when the collision ends.
        let (new, keep) = if self.parked {
            (None, Some(full))
        } else if self.lost.is_empty() {
            (Some(full), None)
        } else {
            (Some(strip(full.clone(), &self.lost)), Some(full))
        };
        if let Some(full) = keep {
            losers.ports.insert(key.clone(), full);
        }
        let changed = old != new;
        if let Some(p) = new {
            fs.services.insert(key.1.clone(), p);
        }
        changed.then_some(key.1)
    }
}

/// The port without the claims it lost; its external path follows (none once nothing is left
/// that reaches it from outside).
fn strip(mut p: ServicePort, lost: &[(Claim, String)]) -> ServicePort {
    for (claim, _) in lost {
        match claim {
            Claim::Vip(ip, _, _) => {
                p.external_ips.retain(|x| x != ip);
                p.load_balancer_ips.retain(|x| x != ip);
            }
            Claim::NodePort(..) => p.node_port = None,
        }
    }
    p.external = paths::external(p.external_policy, p.externally_accessible(), &p.endpoints);
    p
}

/// Every port involved in a collision (contested, or a loser before), with what it keeps.
pub(super) fn decide(state: &DesiredState, losers: &Losers, rank: &Rank<'_>) -> Vec<Decision> {
    let mut cands = candidates(state, losers, rank);
    let mut claimants: HashMap<Claim, Vec<usize>> = HashMap::new();
    let mut hc: HashMap<Claim, Vec<usize>> = HashMap::new();
    for (i, c) in cands.iter().enumerate() {
        for claim in &c.claims {
            claimants.entry(claim.clone()).or_default().push(i);
        }
        for claim in health_check_claims(c.full) {
            hc.entry(claim).or_default().push(i);
        }
    }
    let involved: Vec<usize> = (0..cands.len())
        .filter(|&i| {
            let c = &cands[i];
            c.is_loser || (c.claims.iter()).any(|cl| claimants[cl].len() > 1 || hc.contains_key(cl))
        })
        .collect();
    for &i in &involved {
        cands[i].held = held(&cands[i], rank);
    }
    let table = Table {
        cands: &cands,
        claimants: &claimants,
    };
    let parked = table.park(&involved);
    involved
        .iter()
        .map(|&i| table.decision(i, &parked, &hc))
        .collect()
}

fn candidates<'a>(state: &'a DesiredState, losers: &'a Losers, rank: &Rank<'_>) -> Vec<Cand<'a>> {
    let mut out = Vec::new();
    let mut push = |fam, full: &'a ServicePort, in_state| {
        let created = (rank.created)(&full.name);
        out.push(Cand {
            fam,
            full,
            in_state,
            is_loser: losers.ports.contains_key(&(fam, full.name.clone())),
            claims: claims(full),
            held: BTreeSet::new(),
            age: (created.is_none(), created),
        });
    };
    for f in &state.families {
        for (name, p) in &f.services {
            let full = losers.ports.get(&(f.family, name.clone())).unwrap_or(p);
            push(f.family, full, Some(p));
        }
    }
    for ((fam, name), full) in &losers.ports {
        let in_state = state
            .family(*fam)
            .is_some_and(|f| f.services.contains_key(name));
        if !in_state {
            push(*fam, full, None);
        }
    }
    out
}

/// What a claimant held before this update: as it stands in the state if it was not
/// recomputed, else what the tracker remembered of its previous version.
fn held(c: &Cand<'_>, rank: &Rank<'_>) -> BTreeSet<Claim> {
    let name = &c.full.name;
    let mut held: BTreeSet<Claim> = match c.in_state {
        Some(p) if !(rank.fresh)(name) => claims(p),
        _ => BTreeSet::new(),
    };
    held.extend(
        (c.claims.iter())
            .filter(|cl| rank.prior.get(*cl) == Some(name))
            .cloned(),
    );
    held
}

struct Table<'a, 'b> {
    cands: &'b [Cand<'a>],
    claimants: &'b HashMap<Claim, Vec<usize>>,
}

impl Table<'_, '_> {
    /// The claimant that keeps `claim` among those not parked.
    fn winner(&self, claim: &Claim, parked: &[bool]) -> Option<usize> {
        (self.claimants.get(claim)?.iter().copied())
            .filter(|&i| !parked[i])
            .min_by(|&a, &b| self.cands[a].key(claim).cmp(&self.cands[b].key(claim)))
    }

    /// Which involved ports lose their cluster IP tuple. A port parked releases its other
    /// claims, so this repeats until nothing changes; a port losing to one that is itself
    /// being parked waits a round (it may win once that one is gone).
    fn park(&self, involved: &[usize]) -> Vec<bool> {
        let mut parked = vec![false; self.cands.len()];
        loop {
            let losing: Vec<(usize, usize)> = (involved.iter().copied())
                .filter(|&i| !parked[i])
                .filter_map(|i| {
                    let w = self.winner(&self.cands[i].cluster_claim(), &parked)?;
                    (w != i).then_some((i, w))
                })
                .collect();
            if losing.is_empty() {
                return parked;
            }
            let losers: HashSet<usize> = losing.iter().map(|(i, _)| *i).collect();
            let sure: Vec<usize> = (losing.iter())
                .filter(|(_, w)| !losers.contains(w))
                .map(|(i, _)| *i)
                .collect();
            // Nobody sure only in a cycle of ports taking each other's tuple: park them all.
            let now = if sure.is_empty() {
                losers.into_iter().collect()
            } else {
                sure
            };
            for i in now {
                parked[i] = true;
            }
        }
    }

    fn decision(&self, i: usize, parked: &[bool], hc: &HashMap<Claim, Vec<usize>>) -> Decision {
        let c = &self.cands[i];
        let by = |j: Option<usize>| match j {
            Some(j) => format!("is already used by {}", self.cands[j].full.name),
            None => "is contested".to_owned(),
        };
        let mut lost = Vec::new();
        if parked[i] {
            let claim = c.cluster_claim();
            let w = self
                .winner(&claim, parked)
                .or_else(|| (self.claimants[&claim].iter().copied()).find(|&j| j != i));
            lost.push((claim, by(w)));
        } else {
            for claim in &c.claims {
                let served_hc = (hc.get(claim).into_iter().flatten()).find(|&&j| !parked[j]);
                if let (Some(&j), Claim::NodePort(..)) = (served_hc, claim) {
                    let n = &self.cands[j].full.name;
                    let why = format!(
                        "is the health check node port of {}/{}",
                        n.namespace, n.name
                    );
                    lost.push((claim.clone(), why));
                } else if let Some(w) = self.winner(claim, parked).filter(|&w| w != i) {
                    lost.push((claim.clone(), by(Some(w))));
                }
            }
        }
        Decision {
            fam: c.fam,
            name: c.full.name.clone(),
            lost,
            parked: parked[i],
        }
    }
}
