//! Partial sync: only the changed Service ports' chains, sets and elements, plus the deltas of
//! the shared reference-counted sets. Statements are ordered so every reference is valid at
//! each step: drop references (elements, rules) before their targets, create targets first.

use std::collections::{BTreeMap, BTreeSet};

use kproxy_dataplane::nft::NftTransaction;

use crate::model::{FamilyState, ServicePortName};

use super::{
    super::names::{CLUSTER_IPS, HAIRPIN, TABLE, slot_map},
    base,
    ctx::FamilyCtx,
    service::{self, Rules},
    slots,
    state::{self, FamilyApplied, MapId, ServiceObjects},
};

#[derive(Default)]
struct Phases {
    delete_elems: BTreeMap<String, Vec<String>>,
    flush_chains: BTreeSet<String>,
    delete_chains: BTreeSet<String>,
    delete_sets: BTreeSet<String>,
    add_sets: BTreeMap<String, String>,
    add_maps: BTreeSet<MapId>,
    add_picks: BTreeSet<MapId>,
    add_chains: BTreeMap<String, Vec<String>>,
    add_elems: BTreeMap<String, Vec<String>>,
}

/// Appends the changes of `changed` Service ports in `fam` to `tx` and updates `applied`.
pub fn render_partial(
    fam: &FamilyState,
    changed: &BTreeSet<ServicePortName>,
    applied: &mut FamilyApplied,
    tx: &mut NftTransaction,
) {
    let ctx = FamilyCtx::new(fam.family, &fam.node);
    let mut ph = Phases::default();
    let mut used = applied.used_ids();
    // Free the ids of removed ports first so a port added in the same sync may reuse them.
    for name in changed {
        if let (false, Some(old)) = (fam.services.contains_key(name), applied.services.get(name)) {
            used.remove(&old.id);
        }
    }
    for name in changed {
        let old = applied.services.remove(name);
        let id = match (&old, fam.services.contains_key(name)) {
            (Some(o), true) => Some(o.id),
            (None, true) => slots::allocate(&mut used),
            (_, false) => None,
        };
        let new = id
            .and_then(|id| fam.services.get(name).map(|sp| (id, sp)))
            .map(|(id, sp)| service::render_service(&ctx, sp, id));
        if new.is_none() && fam.services.contains_key(name) {
            tracing::error!(service = %name, "no free Service port id; port skipped");
        }
        diff_service(name, old.as_ref(), new.as_ref(), applied, &mut ph);
        if let Some((new, _)) = new {
            if let Some(shard) = new.shard
                && applied.shards.insert(shard)
            {
                ph.add_maps.insert(shard);
            }
            if let Some(n) = new.pick
                && applied.picks.insert(n)
            {
                ph.add_picks.insert(n);
            }
            applied.services.insert(name.clone(), new);
        }
    }
    emit(&ctx, ph, tx);
}

fn diff_service(
    name: &ServicePortName,
    old: Option<&ServiceObjects>,
    new: Option<&(ServiceObjects, Rules)>,
    applied: &mut FamilyApplied,
    ph: &mut Phases,
) {
    let (empty, no_rules) = (ServiceObjects::default(), Rules::new());
    let (o, (n, n_rules)) = (
        old.unwrap_or(&empty),
        new.map_or((&empty, &no_rules), |(n, r)| (n, r)),
    );
    // Only the changed ports' elements are spelled out, old and new, to diff them.
    let (o_elems, n_elems) = (o.elements(name), n.elements(name));
    for e in o_elems.difference(&n_elems) {
        ph.delete_elems
            .entry(e.set.clone())
            .or_default()
            .push(e.key.clone());
    }
    for e in n_elems.difference(&o_elems) {
        ph.add_elems
            .entry(e.set.clone())
            .or_default()
            .push(e.text());
    }
    // A set can only be deleted once no rule references it: when affinity sets change,
    // rewrite all of the port's chains.
    let sets_changed = o.sets != n.sets;
    for (chain, rules) in &o.chains {
        match n.chain(chain) {
            Some(new_rules) if new_rules == *rules && !sets_changed => {}
            Some(_) => {
                ph.flush_chains.insert(chain.clone());
            }
            None => {
                ph.flush_chains.insert(chain.clone());
                ph.delete_chains.insert(chain.clone());
            }
        }
    }
    for (chain, rules) in n_rules {
        if sets_changed || o.chain(chain) != n.chain(chain) {
            ph.add_chains.insert(chain.clone(), rules.clone());
        }
    }
    for pair in &o.sets {
        if !n.sets.contains(pair) {
            ph.delete_sets.insert(pair.0.clone());
        }
    }
    for pair in &n.sets {
        if !o.sets.contains(pair) {
            ph.add_sets.insert(pair.0.clone(), pair.1.clone());
        }
    }
    // Shared sets: only crossings of zero reach the kernel.
    let mut shared = |set: &str, ip, add| {
        let refs = if set == CLUSTER_IPS {
            &mut applied.cluster_ip_refs
        } else {
            &mut applied.hairpin_refs
        };
        let key = if set == CLUSTER_IPS {
            format!("{ip}")
        } else {
            format!("{ip} . {ip}")
        };
        match state::refcount(refs, ip, add) {
            Some(true) => remove_or_push(&mut ph.delete_elems, &mut ph.add_elems, set, key),
            Some(false) => remove_or_push(&mut ph.add_elems, &mut ph.delete_elems, set, key),
            None => {}
        }
    };
    if old.is_some() {
        shared(CLUSTER_IPS, o.cluster_ip, false);
        o.hairpin_ips()
            .into_iter()
            .for_each(|ip| shared(HAIRPIN, ip, false));
    }
    if new.is_some() {
        shared(CLUSTER_IPS, n.cluster_ip, true);
        n.hairpin_ips()
            .into_iter()
            .for_each(|ip| shared(HAIRPIN, ip, true));
    }
}

/// A shared element that went away and came back in one sync cancels out instead of being
/// deleted and re-added (keys of shared sets carry no value, so text and key are the same).
fn remove_or_push(
    cancel: &mut BTreeMap<String, Vec<String>>,
    push: &mut BTreeMap<String, Vec<String>>,
    set: &str,
    key: String,
) {
    if let Some(list) = cancel.get_mut(set)
        && let Some(pos) = list.iter().position(|k| *k == key)
    {
        list.remove(pos);
        return;
    }
    push.entry(set.to_owned()).or_default().push(key);
}

fn emit(ctx: &FamilyCtx, ph: Phases, tx: &mut NftTransaction) {
    let (f, t) = (ctx.family, TABLE);
    for (set, keys) in &ph.delete_elems {
        tx.delete_elements(f, t, set, keys);
    }
    for chain in &ph.flush_chains {
        tx.flush_chain(f, t, chain);
    }
    for chain in &ph.delete_chains {
        tx.delete_chain(f, t, chain);
    }
    for set in &ph.delete_sets {
        tx.delete_set(f, t, set);
    }
    for &(p, shard) in &ph.add_maps {
        tx.add_map(f, t, &slot_map(p, shard), &base::slot_map_spec(ctx, p));
    }
    for pick in &ph.add_picks {
        base::render_pick(ctx, *pick, tx);
    }
    for (set, spec) in &ph.add_sets {
        tx.add_set(f, t, set, spec);
    }
    for chain in ph.add_chains.keys() {
        tx.add_chain(f, t, chain, None);
    }
    for (chain, rules) in &ph.add_chains {
        for rule in rules {
            tx.add_rule(f, t, chain, rule);
        }
    }
    for (set, elems) in &ph.add_elems {
        tx.add_elements(f, t, set, elems);
    }
}
