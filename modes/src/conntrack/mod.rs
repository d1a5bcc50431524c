//! UDP conntrack hygiene, mode-independent: what upstream kube-proxy does after a sync so that
//! UDP clients do not keep talking to endpoints that are gone.
//!
//! UDP has no connection end, so a client that keeps sending from one source port keeps its
//! conntrack entry alive, and with it the DNAT to whatever endpoint the first packet chose, even
//! after the rules no longer list that endpoint. So after every successful sync but the first,
//! for each changed UDP Service port in each family:
//! - an endpoint that went away (was usable, is not any more): delete the flows to each of the
//!   port's VIPs (cluster IP, external IPs, LB IPs at the Service port, and the NodePort on any
//!   address) that were DNATed to exactly that endpoint;
//! - a port that had no usable endpoint and now has one: delete the flows to its VIPs, which
//!   were cached while there was no endpoint to DNAT to.
//!
//! That diff needs the previous state, which the first sync of a process (start-up, restart)
//! does not have, and "unknown" must not read as "no endpoints", which would delete the live
//! flows of every UDP Service on a restart. So the first sync instead reads the kernel's table
//! (one dump per family that has a UDP port with endpoints) and deletes each UDP flow to a
//! served Service port that was DNATed elsewhere than to one of its endpoints ([`reconcile()`],
//! upstream's `CleanStaleEntries`): the endpoints that went while no kproxy was running. The
//! dump costs a pass over the whole table, so later syncs keep the cheap diff.
//!
//! Nothing else is ever deleted. Deletion failures are logged and counted, never a sync
//! failure: the rules are already right, and a stale flow expires with its conntrack timeout.

mod reconcile;

use std::{
    collections::{BTreeMap, BTreeSet},
    net::{IpAddr, SocketAddr},
};

use kproxy_dataplane::conntrack::{ConntrackClient, FlowFilter, L3};
pub use reconcile::{Targets, reconcile};

use crate::model::{ChangeSet, DesiredState, IpFamily, Protocol, ServicePort, ServicePortName};

/// What cleanup needs to know of one UDP Service port in one family.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UdpPort {
    /// Cluster IP, external IPs and load-balancer IPs: every address the port is reached at.
    pub vips: Vec<IpAddr>,
    pub port: u16,
    pub node_port: Option<u16>,
    /// Every endpoint some rule may DNAT to (the Cluster and the Local set). Traffic policies
    /// only choose among these; a flow DNATed to one that is still in either set is not stale.
    pub endpoints: BTreeSet<SocketAddr>,
}

impl UdpPort {
    /// `None` for a port that is not UDP.
    pub fn of(sp: &ServicePort) -> Option<Self> {
        if sp.name.protocol != Protocol::Udp {
            return None;
        }
        let vips = sp.vips().collect();
        let endpoints = (sp.endpoints.cluster.iter())
            .chain(sp.endpoints.local.iter())
            .map(|e| e.addr)
            .collect();
        Some(Self {
            vips,
            port: sp.port,
            node_port: sp.node_port,
            endpoints,
        })
    }
}

/// The flows to delete when one UDP Service port goes from `old` to `new` (`None`: absent, or
/// not UDP). Pure.
pub fn stale_flows(l3: L3, old: Option<&UdpPort>, new: Option<&UdpPort>) -> Vec<FlowFilter> {
    let mut out = Vec::new();
    let no_endpoints = BTreeSet::new();
    let new_endpoints = new.map_or(&no_endpoints, |n| &n.endpoints);
    if let Some(old) = old {
        // Flows reached the endpoint through the old VIPs: those are the ones to look under.
        for ep in old.endpoints.difference(new_endpoints) {
            for vip in &old.vips {
                out.push(FlowFilter::udp_to(*vip, old.port).dnated_to(ep.ip(), ep.port()));
            }
            if let Some(np) = old.node_port {
                out.push(FlowFilter::udp_to_port(l3, np).dnated_to(ep.ip(), ep.port()));
            }
        }
    }
    let was_unserved = old.is_none_or(|o| o.endpoints.is_empty());
    if let Some(new) = new.filter(|n| was_unserved && !n.endpoints.is_empty()) {
        for vip in &new.vips {
            out.push(FlowFilter::udp_to(*vip, new.port));
        }
        if let Some(np) = new.node_port {
            out.push(FlowFilter::udp_to_port(l3, np));
        }
    }
    out
}

type Key = (IpFamily, ServicePortName);
/// The UDP ports of the last successfully applied state.
pub type Known = BTreeMap<Key, UdpPort>;

fn l3(family: IpFamily) -> L3 {
    match family {
        IpFamily::V4 => L3::Ipv4,
        IpFamily::V6 => L3::Ipv6,
    }
}

/// Compares `known` (the last applied state's UDP ports; `None` before the first sync) with
/// `desired` for the ports `changes` names (all when full), returns the flows to delete and
/// updates `known` to `desired`. The first call only records. Pure (no I/O).
pub fn plan(
    known: &mut Option<Known>,
    desired: &DesiredState,
    changes: &ChangeSet,
) -> Vec<FlowFilter> {
    let current = |family: IpFamily, name: &ServicePortName| {
        desired
            .family(family)
            .and_then(|f| f.services.get(name))
            .and_then(UdpPort::of)
    };
    let Some(known) = known else {
        let all = desired.families.iter().flat_map(|f| {
            (f.services.values())
                .filter_map(move |sp| Some(((f.family, sp.name.clone()), UdpPort::of(sp)?)))
        });
        *known = Some(all.collect());
        return Vec::new();
    };
    let keys: BTreeSet<Key> = if changes.full {
        let desired_keys = desired
            .families
            .iter()
            .flat_map(|f| f.services.keys().map(move |n| (f.family, n.clone())));
        known.keys().cloned().chain(desired_keys).collect()
    } else {
        (changes.services.iter())
            .filter(|n| n.protocol == Protocol::Udp)
            .flat_map(|n| [(IpFamily::V4, n.clone()), (IpFamily::V6, n.clone())])
            .collect()
    };
    let mut out = Vec::new();
    for key in keys {
        let new = current(key.0, &key.1);
        let old = known.get(&key);
        out.extend(stale_flows(l3(key.0), old, new.as_ref()));
        match new {
            Some(n) => known.insert(key, n),
            None => known.remove(&key),
        };
    }
    out
}

/// Runs [`plan`] after each successful sync and deletes the flows it names.
pub struct ConntrackHygiene {
    client: Box<dyn ConntrackClient + Send>,
    known: Option<Known>,
    /// The start-up reconcile of the kernel's table is still to do: until a sync's dumps all
    /// succeed (a failed one is tried again at the next sync, not given up).
    reconcile_pending: bool,
    failures: u64,
    deleted: u64,
}

impl ConntrackHygiene {
    pub fn new(client: impl ConntrackClient + Send + 'static) -> Self {
        Self {
            client: Box::new(client),
            known: None,
            reconcile_pending: true,
            failures: 0,
            deleted: 0,
        }
    }

    /// What every mode calls after a successful apply: `full` says the mode replaced everything,
    /// which may cover changes the caller's change set no longer names (the first sync, or the
    /// one after a failure), so every port is compared then.
    pub fn after_apply(&mut self, desired: &DesiredState, changes: &ChangeSet, full: bool) {
        if full && !changes.full {
            self.after_sync(desired, &ChangeSet::full());
        } else {
            self.after_sync(desired, changes);
        }
    }

    /// Call once the kernel holds `desired` (never after a failed apply: the flows would be
    /// deleted while the old rules could still recreate them, and `known` would be wrong).
    pub fn after_sync(&mut self, desired: &DesiredState, changes: &ChangeSet) {
        if self.reconcile_pending {
            self.reconcile_pending = !self.reconcile_table(desired);
        }
        let filters = plan(&mut self.known, desired, changes);
        if filters.is_empty() {
            return;
        }
        // All at once: the netlink client reads the conntrack table once per call, not per filter.
        let results = self.client.delete_each(&filters);
        for (filter, result) in filters.iter().zip(results) {
            match result {
                Ok(n) => {
                    self.deleted += n;
                    if n > 0 {
                        tracing::debug!(?filter, deleted = n, "deleted stale UDP conntrack flows");
                    }
                }
                Err(e) => {
                    self.failures += 1;
                    tracing::warn!(error = %e, ?filter, "deleting stale UDP conntrack flows failed");
                }
            }
        }
    }

    /// Deletes the stale UDP entries the kernel's table holds (see [`reconcile()`]), per family.
    /// False when a family's dump failed.
    fn reconcile_table(&mut self, desired: &DesiredState) -> bool {
        let mut complete = true;
        for state in &desired.families {
            let targets = Targets::of(desired, state.family);
            if targets.is_empty() {
                continue;
            }
            let l3 = l3(state.family);
            let entries = match self.client.list(l3) {
                Ok(entries) => entries,
                Err(e) => {
                    self.failures += 1;
                    tracing::warn!(error = %e, ?l3, "listing UDP conntrack flows failed; trying again at the next sync");
                    complete = false;
                    continue;
                }
            };
            let stale: Vec<_> = entries
                .into_iter()
                .filter(|e| targets.is_stale(e))
                .collect();
            let results = self.client.delete_entries(l3, &stale);
            for (entry, result) in stale.iter().zip(results) {
                match result {
                    Ok(true) => {
                        self.deleted += 1;
                        tracing::debug!(?entry, "deleted a stale UDP conntrack flow");
                    }
                    // Gone since the dump (expired, or recreated through the current rules).
                    Ok(false) => {}
                    Err(e) => {
                        self.failures += 1;
                        tracing::warn!(error = %e, ?entry, "deleting a stale UDP conntrack flow failed");
                    }
                }
            }
        }
        complete
    }

    /// Deletions that failed since start (each logged).
    pub fn failures(&self) -> u64 {
        self.failures
    }

    /// Flows deleted since start.
    pub fn deleted(&self) -> u64 {
        self.deleted
    }
}

#[cfg(test)]
mod tests;
