//! The pure part of the mode: `render(desired, changes, applied)` gives the
//! transaction to run and the state that will be applied once it succeeds.

mod base;
pub(crate) mod ctx;
mod objects;
mod partial;
pub mod service;
pub mod slots;
pub mod state;

use std::{
    collections::{BTreeMap, BTreeSet},
    mem,
    net::IpAddr,
};

use kproxy_dataplane::nft::{Family, NftTransaction};

use crate::model::{ChangeSet, DesiredState, FamilyState, IpFamily, NodePortIps};

use self::{
    ctx::FamilyCtx,
    state::{Applied, FamilyApplied, ServiceObjects},
};
use super::names::{CLUSTER_IPS, HAIRPIN, TABLE, slot_map};

/// The transaction for this sync and the state it establishes.
#[derive(Debug)]
pub struct Rendered {
    pub tx: NftTransaction,
    pub applied: Applied,
    /// Whether this is a full sync (the tables are replaced) or a partial one.
    pub full: bool,
}

/// Renders a sync. It is full when `changes.full`, when nothing is known to be applied, or when
/// node-wide inputs changed (settings, NodePort addresses, the set of families); otherwise it
/// touches only the changed Service ports and the shared sets' deltas.
pub fn render(desired: &DesiredState, changes: &ChangeSet, applied: Option<&Applied>) -> Rendered {
    render_owned(desired, changes, applied.cloned())
}

/// [`render`], consuming the applied state: the mode's sync path uses it so that a partial sync
/// costs O(the change), not a copy of everything applied (10k Services: ~18 ms of copying).
pub fn render_owned(
    desired: &DesiredState,
    changes: &ChangeSet,
    applied: Option<Applied>,
) -> Rendered {
    let partial = applied
        .as_ref()
        .is_some_and(|a| !changes.full && !node_inputs_changed(desired, a));
    if partial && let Some(mut next) = applied {
        let mut tx = NftTransaction::new();
        for fam in &desired.families {
            let fam_applied = next
                .families
                .get_mut(&fam.family)
                .expect("families unchanged");
            partial::render_partial(fam, &changes.services, fam_applied, &mut tx);
        }
        return Rendered {
            tx,
            applied: next,
            full: false,
        };
    }
    render_full(desired, applied.as_ref())
}

/// The addresses the NodePort set holds when NodePorts are restricted (empty for `AllLocal`,
/// which the base chain matches with `fib daddr type local`). Loopback is left out: a packet to
/// 127.0.0.1 cannot be DNATed off the node without route_localnet, so nftables mode never serves
/// NodePorts there, as upstream's nftables mode ("localhost NodePorts are not supported").
fn nodeport_ips(fam: &FamilyState) -> Vec<IpAddr> {
    match &fam.node.node_port_ips {
        NodePortIps::AllLocal => Vec::new(),
        NodePortIps::Only(ips) => ips.iter().filter(|ip| !ip.is_loopback()).copied().collect(),
    }
}

fn node_inputs_changed(desired: &DesiredState, applied: &Applied) -> bool {
    let families: BTreeSet<IpFamily> = desired.families.iter().map(|f| f.family).collect();
    if families != applied.families.keys().copied().collect() {
        return true;
    }
    desired.families.iter().any(|fam| {
        let a = &applied.families[&fam.family];
        a.node != fam.node || a.nodeport_ips != nodeport_ips(fam)
    })
}

fn nft_family(f: IpFamily) -> Family {
    match f {
        IpFamily::V4 => Family::Ip,
        IpFamily::V6 => Family::Ip6,
    }
}

/// Replaces each family's table atomically: `add table; delete table` then the whole content,
/// in the one transaction, so there is no moment without rules and any leftover (ours, from a
/// previous run or version) is gone. Tables of families no longer served are deleted.
fn render_full(desired: &DesiredState, applied: Option<&Applied>) -> Rendered {
    let mut tx = NftTransaction::new();
    let mut next = Applied::default();
    for f in [IpFamily::V4, IpFamily::V6] {
        tx.add_table(nft_family(f), TABLE, None);
        tx.delete_table(nft_family(f), TABLE);
    }
    for fam in &desired.families {
        let ctx = FamilyCtx::new(fam.family, &fam.node);
        let np_ips = nodeport_ips(fam);
        let base_from = tx.len();
        base::render_base(&ctx, &np_ips, &mut tx);
        let fixed_rules = base::fixed_rule_counts(&ctx, &tx, base_from);
        let prev = applied.and_then(|a| a.families.get(&fam.family));
        let ids = assign_ids(fam, prev);
        let mut fa = FamilyApplied {
            node: fam.node.clone(),
            nodeport_ips: np_ips,
            fixed_rules,
            services: BTreeMap::new(),
            cluster_ip_refs: BTreeMap::new(),
            hairpin_refs: BTreeMap::new(),
            shards: BTreeSet::new(),
            picks: BTreeSet::new(),
        };
        // Rules are kept only until they are written (in the ports' order).
        let (mut rules, mut ports) = (Vec::new(), Vec::new());
        for (name, sp) in &fam.services {
            let Some(&id) = ids.get(name) else { continue };
            let (objs, port_rules) = service::render_service(&ctx, sp, id);
            add_refs(&mut fa, &objs);
            fa.shards.extend(objs.shard);
            fa.picks.extend(objs.pick);
            ports.push((name.clone(), objs));
            rules.push(port_rules);
        }
        // The applied state lives until the next full sync: build its maps in bulk, which packs
        // their nodes, where inserting one by one (in order) leaves them about half empty.
        fa.services = ports.into_iter().collect();
        fa.cluster_ip_refs = mem::take(&mut fa.cluster_ip_refs).into_iter().collect();
        fa.hairpin_refs = mem::take(&mut fa.hairpin_refs).into_iter().collect();
        let (f, t) = (ctx.family, TABLE);
        for &(p, shard) in &fa.shards {
            tx.add_map(f, t, &slot_map(p, shard), &base::slot_map_spec(&ctx, p));
        }
        for pick in &fa.picks {
            base::render_pick(&ctx, *pick, &mut tx);
        }
        let all = || fa.services.values();
        for (set, spec) in all().flat_map(|s| &s.sets) {
            tx.add_set(f, t, set, spec);
        }
        for chain in rules.iter().flat_map(|r| r.keys()) {
            tx.add_chain(f, t, chain, None);
        }
        for (chain, rules) in rules.iter().flatten() {
            for rule in rules {
                tx.add_rule(f, t, chain, rule);
            }
        }
        let mut by_set: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for (name, objs) in &fa.services {
            for e in objs.elements(name) {
                let text = e.text();
                by_set.entry(e.set).or_default().push(text);
            }
        }
        for (set, elems) in by_set {
            tx.add_elements(f, t, &set, &elems);
        }
        let cips: Vec<String> = fa.cluster_ip_refs.keys().map(ToString::to_string).collect();
        tx.add_elements(f, t, CLUSTER_IPS, &cips);
        let pairs: Vec<String> = fa
            .hairpin_refs
            .keys()
            .map(|ip| format!("{ip} . {ip}"))
            .collect();
        tx.add_elements(f, t, HAIRPIN, &pairs);
        next.families.insert(fam.family, fa);
    }
    Rendered {
        tx,
        applied: next,
        full: true,
    }
}

/// Keeps each surviving port's id (stable slot keys) and gives new ports the smallest free id.
fn assign_ids(
    fam: &FamilyState,
    prev: Option<&FamilyApplied>,
) -> BTreeMap<crate::model::ServicePortName, u32> {
    let mut ids = BTreeMap::new();
    let mut used = BTreeSet::new();
    if let Some(prev) = prev {
        for name in fam.services.keys() {
            if let Some(objs) = prev.services.get(name) {
                ids.insert(name.clone(), objs.id);
                used.insert(objs.id);
            }
        }
    }
    for name in fam.services.keys() {
        if ids.contains_key(name) {
            continue;
        }
        match slots::allocate(&mut used) {
            Some(id) => {
                ids.insert(name.clone(), id);
            }
            None => {
                tracing::error!(service = %name, "more than 65536 Service ports in one family; port skipped")
            }
        }
    }
    ids
}

fn add_refs(fa: &mut FamilyApplied, objs: &ServiceObjects) {
    state::refcount(&mut fa.cluster_ip_refs, objs.cluster_ip, true);
    for ip in objs.hairpin_ips() {
        state::refcount(&mut fa.hairpin_refs, ip, true);
    }
}
