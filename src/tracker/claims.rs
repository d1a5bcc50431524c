//! The tracker's side of claims (`desired::collisions`): what it must remember across updates
//! for a holder to keep its VIP tuples and NodePorts against newcomers, and the counts that
//! let it skip the collision pass when no claim is contested.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kproxy_modes::model::{DesiredState, IpFamily, ServicePort, ServicePortName, SkippedObject};
use tracing::warn;

use super::Key;
use crate::desired::collisions::{self, Claim, Holders, Losers, Rank};

#[derive(Default)]
pub(super) struct ClaimBook {
    /// Ports that lost a claim, as computed.
    losers: Losers,
    /// How many candidate ports claim each VIP tuple or NodePort (health-check node ports
    /// included), and how many claims have more than one claimant: with none contested and no
    /// loser, the collision pass (a walk over every port) is skipped, which keeps a
    /// one-Service change O(that Service).
    counts: HashMap<Claim, u32>,
    contested: usize,
    /// What the ports taken out of the state in this update held, so a holder recomputed in
    /// the same update as a newcomer arrives still keeps its claims. Dropped after each update
    /// (it holds every claim after a full recompute).
    prior: Holders,
    /// NodePorts refused by the range or as kproxy's own ports, per Service.
    refused: BTreeMap<Key, Vec<SkippedObject>>,
}

impl ClaimBook {
    /// Before a full recompute: the state is rebuilt, but who held what is kept.
    pub fn restart(&mut self, old: Option<&DesiredState>) {
        let prior: Holders = (old.into_iter().flat_map(|s| &s.families))
            .flat_map(|f| f.services.values())
            .flat_map(|p| {
                collisions::claims(p)
                    .into_iter()
                    .map(|c| (c, p.name.clone()))
            })
            .collect();
        let refused = std::mem::take(&mut self.refused);
        *self = ClaimBook {
            prior,
            refused,
            ..Default::default()
        };
    }

    /// Takes the ports of these names out of the state and the losers, uncounted, and
    /// remembers what they held. Returns them as they were in the state.
    pub fn take(
        &mut self,
        state: &mut DesiredState,
        names: BTreeSet<ServicePortName>,
    ) -> BTreeMap<(IpFamily, ServicePortName), ServicePort> {
        let forgotten = self.losers.forget(&names);
        for (_, port) in &forgotten {
            self.count(port, false);
        }
        let mut old = BTreeMap::new();
        for name in names {
            for f in state.families.iter_mut() {
                let Some(p) = f.services.remove(&name) else {
                    continue;
                };
                let key = (f.family, name.clone());
                // A loser was counted as computed (above), not as it stands.
                if !forgotten.iter().any(|(k, _)| *k == key) {
                    self.count(&p, false);
                }
                for c in collisions::claims(&p) {
                    self.prior.insert(c, name.clone());
                }
                old.insert(key, p);
            }
        }
        old
    }

    /// Names of the losing ports of Service `namespace/name`.
    pub fn losers_of<'a>(
        &'a self,
        namespace: &'a str,
        name: &'a str,
    ) -> impl Iterator<Item = &'a ServicePortName> {
        self.losers.names_of(namespace, name)
    }

    /// Adds (or removes) a candidate port's claims to the counts, tracking contested claims.
    pub fn count(&mut self, port: &ServicePort, add: bool) {
        for claim in collisions::counted_claims(port) {
            let n = self.counts.entry(claim.clone()).or_default();
            let before = *n;
            *n = if add {
                before + 1
            } else {
                before.saturating_sub(1)
            };
            match (before > 1, *n > 1) {
                (false, true) => self.contested += 1,
                (true, false) => self.contested -= 1,
                _ => {}
            }
            if *n == 0 {
                self.counts.remove(&claim);
            }
        }
    }

    /// The Service's refused NodePorts, logged when they change.
    pub fn set_refused(&mut self, key: &Key, now: Vec<SkippedObject>) {
        let before = self.refused.remove(key).unwrap_or_default();
        for s in now.iter().filter(|s| !before.contains(s)) {
            warn!(service = %format!("{}/{}", key.0, key.1), reason = %s.reason, "skipping a NodePort");
        }
        if !now.is_empty() {
            self.refused.insert(key.clone(), now);
        }
    }

    /// Settles contested claims after the dirty Services were recomputed; returns the ports
    /// whose state changed.
    pub fn settle(
        &mut self,
        state: &mut DesiredState,
        dirty: &BTreeSet<Key>,
        created: &dyn Fn(&Key) -> Option<Time>,
    ) -> BTreeSet<ServicePortName> {
        let prior = std::mem::take(&mut self.prior);
        if self.contested == 0 && self.losers.is_empty() {
            // Nothing contested and no loser: drop any reasons left from earlier passes.
            self.losers.clear();
            return BTreeSet::new();
        }
        let key = |n: &ServicePortName| (n.namespace.clone(), n.name.clone());
        // The age is read from the stored Service when a collision is possible rather than
        // kept per port: that index cost ~2 MiB at 10k Services, for a rare pass.
        let rank = Rank {
            prior: &prior,
            fresh: &|n| dirty.contains(&key(n)),
            created: &|n| created(&key(n)),
        };
        collisions::resolve(state, &mut self.losers, &rank)
    }

    /// Every skip record about claims: losses to other Services and refused NodePorts.
    pub fn skipped(&self) -> impl Iterator<Item = &SkippedObject> {
        self.losers.skipped().chain(self.refused.values().flatten())
    }
}
