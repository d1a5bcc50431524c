//! The tracker: applies source events to its object stores and keeps the desired state up to
//! date, recomputing only the Services whose objects changed.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::core::v1::Node;
use kproxy_modes::model::{ChangeSet, DesiredState, IpFamily, Protocol, ServicePortName};

use crate::{
    desired::{
        self, NodeContext, NodeFacts, ProxyOptions,
        service::{self, StoredService},
        slice::{Names, Slice},
    },
    source::{Event, Kind, Object},
};

mod claims;
mod skips;
mod stored;

use skips::Skips;
use stored::{Stored, key_of};

/// `(namespace, name)` of a namespaced object.
type Key = (String, String);

pub struct Tracker {
    opts: ProxyOptions,
    /// Stored in kproxy's compact form, boxed: BTreeMap nodes hold 11 values inline, often a
    /// third empty.
    services: BTreeMap<Key, Box<StoredService>>,
    /// Stored in kproxy's compact form: the API objects were most of kproxy's memory.
    slices: BTreeMap<Key, Box<Slice>>,
    /// The node and zone names the stored slices share.
    names: Names,
    /// `(namespace, Service name, slice name)` of every labelled slice: a Service's slices are a
    /// range. Flat rather than a set per Service, which cost ~300 bytes a Service.
    slices_of: BTreeSet<(String, String, String)>,
    node: Option<Node>,
    /// The node's local addresses, set by the agent (see [`Tracker::set_local_addresses`]).
    local_addresses: Vec<std::net::IpAddr>,
    /// ServiceCIDR objects by name: their CIDRs join the configured service CIDRs.
    service_cidrs: BTreeMap<String, Vec<ipnet::IpNet>>,
    synced: BTreeSet<Kind>,
    /// Lists in progress, by kind: their objects so far, converted.
    listing: BTreeMap<Kind, Vec<Stored>>,
    /// Services whose ports must be recomputed.
    dirty: BTreeSet<Key>,
    ctx: Option<NodeContext>,
    state: Option<DesiredState>,
    /// What was skipped, and why.
    skips: Skips,
    /// Who holds which VIP tuple and NodePort, and what lost them.
    claims: claims::ClaimBook,
}

impl Tracker {
    pub fn new(opts: ProxyOptions) -> Self {
        Self {
            opts,
            services: BTreeMap::new(),
            slices: BTreeMap::new(),
            names: Names::default(),
            slices_of: BTreeSet::new(),
            node: None,
            local_addresses: Vec::new(),
            service_cidrs: BTreeMap::new(),
            synced: BTreeSet::new(),
            listing: BTreeMap::new(),
            dirty: BTreeSet::new(),
            ctx: None,
            state: None,
            skips: Skips::default(),
            claims: Default::default(),
        }
    }

    /// True once the initial lists of Services, EndpointSlices and Nodes are all in: before
    /// that, no desired state exists (programming from a partial list would drop Services).
    pub fn is_ready(&self) -> bool {
        [Kind::Service, Kind::EndpointSlice, Kind::Node]
            .iter()
            .all(|k| self.synced.contains(k))
    }

    /// This node's Node object, if listed (read by proxy health for node eligibility).
    pub fn node(&self) -> Option<&Node> {
        self.node.as_ref()
    }

    /// Whether the compute needs the node's local addresses ([`Tracker::set_local_addresses`]).
    pub fn needs_local_addresses(&self) -> bool {
        self.opts.needs_local_addresses()
    }

    /// The node's local addresses, read by the agent before each [`Tracker::update`]. They
    /// resolve nodePortAddresses, a node-wide input: a change makes the next change set full.
    pub fn set_local_addresses(&mut self, mut addrs: Vec<std::net::IpAddr>) {
        addrs.sort();
        addrs.dedup();
        self.local_addresses = addrs;
    }

    pub fn apply(&mut self, event: Event) {
        match event {
            Event::Apply(obj) => {
                let stored = self.convert(obj);
                self.store(stored);
            }
            Event::Delete(obj) => self.remove(&obj),
            Event::Replace(kind, objects) => {
                let list = objects
                    .into_iter()
                    .filter(|o| o.kind() == kind)
                    .map(|o| self.convert(o))
                    .collect();
                self.replace(kind, list);
            }
            // A (re)list arrives object by object: each is converted now and held apart until
            // the list ends, so the swap stays atomic and no API object is held meanwhile.
            Event::ListBegin(kind) => {
                self.listing.insert(kind, Vec::new());
            }
            Event::Listed(obj) => {
                let kind = obj.kind();
                let stored = self.convert(obj);
                self.listing.entry(kind).or_default().push(stored);
            }
            Event::ListEnd(kind) => {
                let list = self.listing.remove(&kind).unwrap_or_default();
                self.replace(kind, list);
            }
        }
    }

    fn convert(&mut self, obj: Object) -> Stored {
        Stored::convert(obj, &mut self.names, &self.opts.node_name)
    }

    fn store(&mut self, stored: Stored) {
        match stored {
            Stored::Service(key, svc) => {
                // As for slices: a change only in fields the compute does not read changes nothing.
                if self.services.get(&key) != Some(&svc) {
                    // Logged here, where the Service changed, so a skip is logged once per change.
                    if let Err(outcome) = &svc.spec {
                        desired::skipped_service(&key.0, &key.1, outcome)
                            .inspect(desired::log_skipped);
                    }
                    self.services.insert(key.clone(), svc);
                    self.dirty.insert(key);
                }
            }
            Stored::Slice(key, slice, skipped) => {
                self.skips.note_slice(&key, skipped);
                // A change only in fields the compute does not read changes nothing.
                if self.slices.get(&key) == Some(&slice) {
                    return;
                }
                self.remove_slice(&key);
                if let Some(name) = &slice.service {
                    let (ns, svc) = (key.0.clone(), name.to_string());
                    self.slices_of
                        .insert((ns.clone(), svc.clone(), key.1.clone()));
                    self.dirty.insert((ns, svc));
                }
                self.slices.insert(key, slice);
            }
            Stored::Node(_, Some(node)) => self.node = Some(*node),
            Stored::Node(_, None) => {}
            Stored::ServiceCidr((_, name), cidrs) => {
                self.service_cidrs.insert(name, cidrs);
            }
        }
    }

    fn remove(&mut self, obj: &Object) {
        match obj {
            Object::Service(svc) => {
                let key = key_of(&svc.metadata);
                if self.services.remove(&key).is_some() {
                    self.dirty.insert(key);
                }
            }
            Object::EndpointSlice(slice) => {
                let key = key_of(&slice.metadata);
                self.skips.forget_slice(&key);
                self.remove_slice(&key);
            }
            Object::Node(node) => {
                if node.metadata.name.as_deref() == Some(self.opts.node_name.as_str()) {
                    self.node = None;
                }
            }
            Object::ServiceCidr(c) => {
                self.service_cidrs
                    .remove(c.metadata.name.as_deref().unwrap_or_default());
            }
        }
    }

    fn remove_slice(&mut self, key: &Key) {
        let Some(old) = self.slices.remove(key) else {
            return;
        };
        if let Some(name) = &old.service {
            let (ns, svc) = (key.0.clone(), name.to_string());
            self.slices_of
                .remove(&(ns.clone(), svc.clone(), key.1.clone()));
            self.dirty.insert((ns, svc));
        }
    }

    /// A complete list of one kind: objects missing from it are deletions, and only objects that
    /// differ from what is stored mark their Service dirty.
    fn replace(&mut self, kind: Kind, list: Vec<Stored>) {
        let incoming: BTreeSet<&Key> = list.iter().map(Stored::key).collect();
        match kind {
            Kind::Service => {
                let gone: Vec<Key> = self
                    .services
                    .keys()
                    .filter(|k| !incoming.contains(k))
                    .cloned()
                    .collect();
                for key in gone {
                    self.services.remove(&key);
                    self.dirty.insert(key);
                }
            }
            Kind::EndpointSlice => {
                let gone: Vec<Key> = self
                    .slices
                    .keys()
                    .filter(|k| !incoming.contains(k))
                    .cloned()
                    .collect();
                for key in gone {
                    self.skips.forget_slice(&key);
                    self.remove_slice(&key);
                }
            }
            Kind::ServiceCidr => self.service_cidrs.clear(),
            Kind::Node => {
                if !list.iter().any(|s| matches!(s, Stored::Node(_, Some(_)))) {
                    self.node = None;
                }
            }
        }
        for stored in list {
            self.store(stored);
        }
        self.synced.insert(kind);
    }

    /// Brings the desired state up to date and says what changed since the previous call.
    /// `None` until [`Tracker::is_ready`].
    pub fn update(&mut self) -> Option<(&DesiredState, ChangeSet)> {
        if !self.is_ready() {
            return None;
        }
        self.skips
            .check_node(&self.opts.node_name, self.node.is_some());
        let mut facts = self
            .node
            .as_ref()
            .map(NodeFacts::from_node)
            .unwrap_or_default();
        facts.local_addresses.clone_from(&self.local_addresses);
        let mut opts = self.opts.clone();
        opts.service_cidrs
            .extend(self.service_cidrs.values().flatten().copied());
        opts.service_cidrs.sort();
        opts.service_cidrs.dedup();
        let ctx = NodeContext::new(&opts, &facts);
        let mut changes = ChangeSet::default();
        if self.state.is_none() || self.ctx.as_ref() != Some(&ctx) {
            // Node facts feed every Service's result: recompute all of them.
            self.claims.restart(self.state.as_ref());
            self.state = Some(desired::empty_state(&ctx));
            self.skips.services.clear();
            self.dirty = self.services.keys().cloned().collect();
            self.ctx = Some(ctx);
            changes = ChangeSet::full();
        }
        self.names.prune();
        let dirty = std::mem::take(&mut self.dirty);
        for key in &dirty {
            self.recompute(key, &mut changes);
        }
        let state = self.state.as_mut()?;
        let services = &self.services;
        let created = |k: &Key| services.get(k).and_then(|s| s.created.clone());
        let moved = self.claims.settle(state, &dirty, &created);
        changes.services.extend(moved);
        state.skipped = (self.skips.all())
            .chain(self.claims.skipped())
            .cloned()
            .collect();
        state.skipped.sort();
        Some((self.state.as_ref()?, changes))
    }

    fn recompute(&mut self, key: &Key, changes: &mut ChangeSet) {
        let (Some(ctx), Some(state)) = (self.ctx.as_ref(), self.state.as_mut()) else {
            return;
        };
        // The Service's ports are looked up where they are (the desired state, or among the
        // losers of a collision) instead of in a per-Service index of names: at 10k Services that index
        // was ~3 MiB of copies of keys the state already holds. ("", TCP) sorts first, so the
        // range starts at the Service's first port.
        let first = ServicePortName::new(&key.0, &key.1, "", Protocol::Tcp);
        let names: BTreeSet<ServicePortName> = state
            .families
            .iter()
            .flat_map(|f| {
                f.services
                    .range(&first..)
                    .map(|(n, _)| n)
                    .take_while(|n| n.namespace == key.0 && n.name == key.1)
            })
            .chain(self.claims.losers_of(&key.0, &key.1))
            .cloned()
            .collect();
        let mut old = self.claims.take(state, names);
        self.skips.services.remove(key);
        let (mut new_ports, mut refused) = (Vec::new(), Vec::new());
        match self.services.get(key).map(|svc| &svc.spec) {
            Some(Ok(spec)) => {
                let first = (key.0.clone(), key.1.clone(), String::new());
                let slices: Vec<&Slice> = self
                    .slices_of
                    .range(first..)
                    .take_while(|(ns, svc, _)| *ns == key.0 && *svc == key.1)
                    .filter_map(|(ns, _, name)| self.slices.get(&(ns.clone(), name.clone())))
                    .map(|slice| &**slice)
                    .collect();
                new_ports = service::compute(ctx, (&key.0, &key.1), spec, &slices);
                refused = service::refused_node_ports(ctx, (&key.0, &key.1), spec);
            }
            Some(Err(outcome)) => {
                if let Some(s) = desired::skipped_service(&key.0, &key.1, outcome) {
                    self.skips.services.insert(key.clone(), s);
                }
            }
            None => {}
        }
        self.claims.set_refused(key, refused);
        for port in &new_ports {
            self.claims.count(port, true);
            let id = (IpFamily::of(&port.cluster_ip), port.name.clone());
            if old.remove(&id).as_ref() != Some(port) {
                changes.services.insert(port.name.clone());
            }
        }
        changes
            .services
            .extend(old.into_keys().map(|(_, name)| name));
        desired::insert_ports(state, new_ports);
    }
}
