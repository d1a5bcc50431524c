//! The pure part of the mode: from the desired state (and, for a partial sync, what was applied
//! before) to the chains each table gets. Turning that into `iptables-restore` input needs the
//! kernel's current chains for a full sync (stale chains, missing jumps): see [`input`].

pub mod base;
pub mod ctx;
pub mod input;
pub mod service;

use std::collections::{BTreeMap, BTreeSet};

use self::{base::Jump, ctx::FamilyCtx, service::render_port};
use super::names::{NODEPORTS, SERVICES};
use crate::{
    SyncStats,
    model::{ChangeSet, DesiredState, IpFamily, NodeSettings, ServicePortName},
};

/// Chain name to its rules (each what follows `-A CHAIN`), in order.
pub type Chains = BTreeMap<String, Vec<String>>;

/// One Service port's rules: its own nat chains, and its rules in the shared chains.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PortRules {
    pub chains: Chains,
    /// Rules in the shared nat chains (KPROXY-SERVICES, KPROXY-NODEPORTS).
    pub nat: Vec<(&'static str, String)>,
    /// Rules in the shared filter chains (REJECT / DROP verdicts, firewall, health checks).
    pub filter: Vec<(&'static str, String)>,
}

impl PortRules {
    fn nat(&mut self, chain: &'static str, rule: String) {
        self.nat.push((chain, rule));
    }

    fn filter(&mut self, chain: &'static str, rule: String) {
        self.filter.push((chain, rule));
    }
}

/// What one sync writes to one table of one family.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TableWrite {
    /// Our chains to (re)write: declared (created, or emptied) and filled.
    pub chains: Chains,
    /// Our chains to delete (emptied first, so that they hold no references).
    pub delete: BTreeSet<String>,
}

/// What one sync writes to one family.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FamilyWrite {
    pub family: IpFamily,
    pub nat: TableWrite,
    pub filter: TableWrite,
    /// The jumps from the built-in chains a full sync ensures.
    pub jumps: Vec<Jump>,
}

/// The mode's own inputs to rendering, besides the desired state.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Options {
    /// NodePorts answer on 127.0.0.1 (IPv4 only; `iptables.localhostNodePorts`).
    pub localhost_node_ports: bool,
    /// Drop what conntrack calls INVALID in KPROXY-FORWARD, as upstream does unless the node
    /// sets `nf_conntrack_tcp_be_liberal` (such packets would otherwise reset connections:
    /// https://issue.k8s.io/74839).
    pub drop_invalid: bool,
}

/// Upstream's "large cluster mode": above this many endpoints, the per-endpoint rules carry no
/// comments (less text for iptables-restore to parse and the kernel to hold).
pub const LARGE_CLUSTER_ENDPOINTS: usize = 1000;

/// What a successful sync leaves applied: the diff base of the next partial sync.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Applied {
    pub families: BTreeMap<IpFamily, FamilyApplied>,
    pub options: Options,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FamilyApplied {
    pub node: NodeSettings,
    pub ports: BTreeMap<ServicePortName, PortRules>,
}

/// A sync's writes and the state they establish.
#[derive(Clone, Debug)]
pub struct Rendered {
    /// Every chain of ours is written (and the kernel's other chains of ours are stale).
    pub full: bool,
    pub families: Vec<FamilyWrite>,
    pub applied: Applied,
}

/// Renders a sync: partial when something was applied, the change set is not full and no
/// node-wide input changed; else full.
pub fn render(
    desired: &DesiredState,
    changes: &ChangeSet,
    applied: Option<Applied>,
    options: Options,
) -> Rendered {
    let large = SyncStats::of(desired, true).endpoints > LARGE_CLUSTER_ENDPOINTS;
    match applied {
        Some(a) if !changes.full && !node_inputs_changed(desired, &a, options) => {
            render_partial(desired, changes, a, large)
        }
        _ => render_full(desired, options, large),
    }
}

fn node_inputs_changed(desired: &DesiredState, a: &Applied, options: Options) -> bool {
    let families: BTreeSet<IpFamily> = desired.families.iter().map(|f| f.family).collect();
    a.options != options
        || families != a.families.keys().copied().collect()
        || desired
            .families
            .iter()
            .any(|f| a.families[&f.family].node != f.node)
}

fn render_full(desired: &DesiredState, options: Options, large: bool) -> Rendered {
    let mut applied = Applied {
        options,
        ..Applied::default()
    };
    let mut families = Vec::new();
    for fam in &desired.families {
        let ctx = FamilyCtx::new(fam.family, &fam.node, options).large_cluster(large);
        let ports: BTreeMap<_, _> = fam
            .services
            .iter()
            .map(|(name, sp)| (name.clone(), render_port(&ctx, sp)))
            .collect();
        let (mut nat, filter) = shared(&ctx, &ports);
        for p in ports.values() {
            nat.chains.extend(p.chains.clone());
        }
        families.push(FamilyWrite {
            family: fam.family,
            nat,
            filter,
            jumps: base::jumps(&ctx),
        });
        let node = fam.node.clone();
        applied
            .families
            .insert(fam.family, FamilyApplied { node, ports });
    }
    Rendered {
        full: true,
        families,
        applied,
    }
}

/// Rewrites the changed ports' chains (deleting those they no longer have) and the shared
/// chains, which list every port's dispatch rules.
fn render_partial(
    desired: &DesiredState,
    changes: &ChangeSet,
    mut applied: Applied,
    large: bool,
) -> Rendered {
    let mut families = Vec::new();
    for fam in &desired.families {
        let options = applied.options;
        let fa = applied
            .families
            .get_mut(&fam.family)
            .expect("families unchanged");
        let ctx = FamilyCtx::new(fam.family, &fam.node, options).large_cluster(large);
        let (mut own, mut delete) = (Chains::new(), BTreeSet::new());
        for name in &changes.services {
            let old = fa.ports.remove(name);
            let new = fam.services.get(name).map(|sp| render_port(&ctx, sp));
            let new_chains = new.as_ref().map(|p| &p.chains);
            for chain in old.iter().flat_map(|p| p.chains.keys()) {
                if !new_chains.is_some_and(|c| c.contains_key(chain)) {
                    delete.insert(chain.clone());
                }
            }
            if let Some(new) = new {
                own.extend(new.chains.clone());
                fa.ports.insert(name.clone(), new);
            }
        }
        if own.is_empty() && delete.is_empty() {
            continue;
        }
        let (mut nat, filter) = shared(&ctx, &fa.ports);
        nat.chains.extend(own);
        nat.delete = delete;
        families.push(FamilyWrite {
            family: fam.family,
            nat,
            filter,
            jumps: base::jumps(&ctx),
        });
    }
    Rendered {
        full: false,
        families,
        applied,
    }
}

/// The shared chains of both tables: the fixed rules plus every port's rules in them (the
/// NodePort dispatch last in KPROXY-SERVICES).
fn shared(
    ctx: &FamilyCtx,
    ports: &BTreeMap<ServicePortName, PortRules>,
) -> (TableWrite, TableWrite) {
    let collect = |fixed: Vec<(&'static str, Vec<String>)>,
                   of: fn(&PortRules) -> &[(&'static str, String)]| {
        let mut chains: Chains = fixed.into_iter().map(|(c, r)| (c.to_owned(), r)).collect();
        for (chain, rule) in ports.values().flat_map(of) {
            chains
                .get_mut(*chain)
                .expect("a fixed chain")
                .push(rule.clone());
        }
        chains
    };
    let mut nat = collect(base::nat_fixed(ctx), |p| &p.nat);
    nat.get_mut(SERVICES)
        .expect("fixed")
        .extend(base::nodeports_tail(ctx));
    debug_assert!(nat.contains_key(NODEPORTS));
    let filter = collect(base::filter_fixed(ctx), |p| &p.filter);
    let table = |chains| TableWrite {
        chains,
        delete: BTreeSet::new(),
    };
    (table(nat), table(filter))
}
