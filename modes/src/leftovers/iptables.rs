//! Upstream's iptables chains, as its iptables and IPVS modes' `CleanupLeftovers` name them,
//! in both backends (nft, legacy) and both families: each chain is emptied and deleted, and the
//! rules of other chains that jump to it (the jumps from PREROUTING, OUTPUT, INPUT, ...) are
//! deleted first, since a referenced chain cannot be deleted. One save per backend and family;
//! one `iptables-restore --noflush` per table that holds leftovers (its own commit).

use std::collections::BTreeSet;

use kproxy_dataplane::iptables::{Backend, Family, Iptables, RestoreInput, SavedTable, Table};

use super::{LeftoverError, Leftovers, Removed};

/// Upstream's fixed chain names per table: the iptables mode's (`kubeServicesChain`,
/// `kubeNodePortsChain`, `kubePostroutingChain`, `kubeMarkMasqChain`, `kubeExternalServicesChain`,
/// `kubeForwardChain`, `kubeProxyFirewallChain`, `kubeProxyCanaryChain`) and the IPVS mode's
/// (`iptablesCleanupChains`: `KUBE-NODE-PORT`, `KUBE-LOAD-BALANCER`,
/// `KUBE-SOURCE-RANGES-FIREWALL`, `KUBE-IPVS-FILTER`, `KUBE-IPVS-OUT-FILTER`). Not here, because
/// they are the kubelet's and upstream leaves them: `KUBE-FIREWALL`, `KUBE-MARK-DROP`,
/// `KUBE-KUBELET-CANARY`, `KUBE-IPTABLES-HINT`.
fn fixed_chains(table: Table) -> &'static [&'static str] {
    match table {
        Table::Nat => &[
            "KUBE-SERVICES",
            "KUBE-NODEPORTS",
            "KUBE-POSTROUTING",
            "KUBE-MARK-MASQ",
            "KUBE-PROXY-CANARY",
            "KUBE-NODE-PORT",
            "KUBE-LOAD-BALANCER",
        ],
        Table::Filter => &[
            "KUBE-SERVICES",
            "KUBE-EXTERNAL-SERVICES",
            "KUBE-FORWARD",
            "KUBE-NODEPORTS",
            "KUBE-PROXY-FIREWALL",
            "KUBE-PROXY-CANARY",
            "KUBE-NODE-PORT",
            "KUBE-SOURCE-RANGES-FIREWALL",
            "KUBE-IPVS-FILTER",
            "KUBE-IPVS-OUT-FILTER",
        ],
        Table::Mangle => &["KUBE-PROXY-CANARY"],
    }
}

/// Prefixes of upstream's per-Service and per-endpoint nat chains (`isServiceChainName`:
/// cluster and local policy, endpoint, firewall, external; `KUBE-XLB-` from older releases).
const SERVICE_CHAIN_PREFIXES: [&str; 6] = [
    "KUBE-SVC-",
    "KUBE-SVL-",
    "KUBE-SEP-",
    "KUBE-FW-",
    "KUBE-EXT-",
    "KUBE-XLB-",
];

fn is_upstream_chain(table: Table, chain: &str) -> bool {
    fixed_chains(table).contains(&chain)
        || (table == Table::Nat && SERVICE_CHAIN_PREFIXES.iter().any(|p| chain.starts_with(p)))
}

/// The restore inputs that remove one table's leftovers, and what they remove: `input` deletes
/// the jumps into them and empties them, `delete` deletes them. Two inputs, each naming a chain
/// once, in descending order: iptables-nft-restore keeps the names an input references in a
/// sorted list that it walks from the smallest, and a second lookup of every name in one input
/// would make removing a big upstream ruleset quadratic (see the iptables mode's `names.rs`).
#[derive(Debug, Default)]
pub(super) struct Plan {
    pub input: RestoreInput,
    pub delete: RestoreInput,
    pub removed: Vec<Removed>,
}

/// Pure: what to remove from `saved` (a table of `backend`'s `family`).
pub(super) fn plan(backend: Backend, family: Family, saved: &SavedTable) -> Plan {
    let mut plan = Plan::default();
    let Some(table) = saved.table() else {
        return plan;
    };
    let doomed: BTreeSet<&str> = saved
        .chains
        .iter()
        .map(|c| c.name.as_str())
        .filter(|c| is_upstream_chain(table, c))
        .collect();
    if doomed.is_empty() {
        return plan;
    }
    // Jumps into a doomed chain from a chain that stays: deleted by their exact text.
    for rule in &saved.rules {
        let target = rule.target();
        if doomed.contains(rule.chain.as_str()) || !target.is_some_and(|t| doomed.contains(&*t)) {
            continue;
        }
        plan.input.delete(table, &rule.chain, &rule.spec);
        plan.removed.push(Removed::IptablesRule {
            backend,
            family,
            table,
            chain: rule.chain.clone(),
            spec: rule.spec.clone(),
        });
    }
    // Declaring a chain empties it: every doomed chain is emptied before any is deleted, since
    // they jump to each other.
    for chain in doomed.iter().rev() {
        plan.input.declare_chain(table, chain);
    }
    for chain in doomed.iter().rev() {
        plan.delete.delete_chain(table, chain);
    }
    // Reported in name order.
    for chain in &doomed {
        plan.removed.push(Removed::IptablesChain {
            backend,
            family,
            table,
            chain: (*chain).to_owned(),
            rules: saved.rules_of(chain).count(),
        });
    }
    plan
}

pub(super) fn remove(netns: Option<&str>, out: &mut Leftovers) {
    for backend in Backend::ALL {
        for family in Family::ALL {
            let mut ipt = Iptables::new(backend, family);
            if let Some(ns) = netns {
                ipt = ipt.in_netns(ns);
            }
            if ipt.is_installed() {
                remove_from(&ipt, out);
            }
        }
    }
}

fn remove_from(ipt: &Iptables, out: &mut Leftovers) {
    let failed = |source| LeftoverError::Iptables {
        tool: super::tool(ipt.backend(), ipt.family()),
        source,
    };
    let tables = match ipt.save_all() {
        Ok(tables) => tables,
        Err(e) => return out.failed.push(failed(e)),
    };
    // nat first, then filter, then mangle, whatever order the tool prints them in: the
    // removals are reported in a stable order.
    for table in Table::ALL {
        let Some(saved) = tables.iter().find(|t| t.table() == Some(table)) else {
            continue;
        };
        let plan = plan(ipt.backend(), ipt.family(), saved);
        if plan.removed.is_empty() {
            continue;
        }
        tracing::debug!(input = %plan.input, delete = %plan.delete, "iptables-restore --noflush");
        match ipt
            .restore(&plan.input)
            .and_then(|()| ipt.restore(&plan.delete))
        {
            Ok(()) => out.removed.extend(plan.removed),
            Err(e) => out.failed.push(failed(e)),
        }
    }
}

#[cfg(test)]
mod tests;
