//! Talking to the kernel: which backend, writing a family's rules, removing ours, sysctls.

use kproxy_dataplane::{
    iptables::{Backend, Family, Iptables, RestoreInput, SavedTable, Table},
    netns::Netns,
    sysctl::Sysctl,
};

use super::{
    MODE,
    render::{FamilyWrite, ctx::FamilyCtx, input::restore_input},
};
use crate::{ModeError, iptables::names::is_ours, model::DesiredState};

/// The tools of `backend` and `family`, in the named namespace if any.
pub fn tools(backend: Backend, family: Family, netns: Option<&str>) -> Iptables {
    let ipt = Iptables::new(backend, family);
    match netns {
        Some(ns) => ipt.in_netns(ns),
        None => ipt,
    }
}

/// Upstream's image (iptables-wrapper) picks the backend that already holds rules, since the
/// kubelet and the CNI plugin wrote theirs first: the one with more rule lines in both families'
/// saves. On a tie (a fresh node, a test namespace) nft, the default of current distributions.
pub fn detect(netns: Option<&str>) -> Backend {
    let lines = |backend| -> usize {
        Family::ALL
            .into_iter()
            .map(|f| tools(backend, f, netns))
            .filter(Iptables::is_installed)
            .filter_map(|ipt| ipt.save_all().ok())
            .flat_map(|tables| tables.into_iter().map(|t| t.rules.len()))
            .sum()
    };
    let nft_installed = tools(Backend::Nft, Family::V4, netns).is_installed();
    let (nft, legacy) = (lines(Backend::Nft), lines(Backend::Legacy));
    if legacy > nft || !nft_installed {
        Backend::Legacy
    } else {
        Backend::Nft
    }
}

/// Writes one family: for a full sync, after reading its tables (stale chains of ours, jumps).
pub fn write(ipt: &Iptables, w: &FamilyWrite, full: bool) -> Result<(), ModeError> {
    let saved = match full {
        true => Some(
            ipt.save_all()
                .map_err(|e| ModeError::kernel(MODE, "reading the tables before a full sync", e))?,
        ),
        false => None,
    };
    let input = restore_input(w, saved.as_deref());
    tracing::debug!(program = %ipt.program("restore"), lines = input.to_string().lines().count(), "iptables-restore --noflush");
    ipt.restore(&input).map_err(|e| {
        tracing::warn!(error = %e, "iptables-restore failed; the next sync is full");
        ModeError::kernel(MODE, "applying the rules", e)
    })
}

/// Removes every chain of ours from one backend's family, and the jumps to them; says what.
pub fn clean(ipt: &Iptables) -> Result<Vec<String>, ModeError> {
    let tables = ipt
        .save_all()
        .map_err(|e| ModeError::kernel(MODE, "reading the tables to clean them", e))?;
    let (input, removed) = cleanup_input(&tables, &ipt.program("save").replace("-save", ""));
    if !input.is_empty() {
        ipt.restore(&input)
            .map_err(|e| ModeError::kernel(MODE, "removing our chains", e))?;
    }
    Ok(removed)
}

/// Pure: the input that removes our chains from `tables` (jumps into them first), and what.
pub fn cleanup_input(tables: &[SavedTable], tool: &str) -> (RestoreInput, Vec<String>) {
    let mut input = RestoreInput::new();
    let mut removed = Vec::new();
    for table in [Table::Nat, Table::Filter] {
        let Some(saved) = tables.iter().find(|t| t.table() == Some(table)) else {
            continue;
        };
        for rule in &saved.rules {
            if !is_ours(&rule.chain) && rule.target().is_some_and(|t| is_ours(&t)) {
                input.delete(table, &rule.chain, &rule.spec);
                removed.push(format!(
                    "{tool} {table} rule -A {} {}",
                    rule.chain, rule.spec
                ));
            }
        }
        for chain in saved.chains.iter().filter(|c| is_ours(&c.name)) {
            input
                .declare_chain(table, &chain.name)
                .delete_chain(table, &chain.name);
            removed.push(format!("{tool} {table} chain {}", chain.name));
        }
    }
    (input, removed)
}

/// `route_localnet` lets packets to 127.0.0.1 be DNATed to a pod: needed (IPv4 only) when
/// NodePorts answer on loopback, as upstream sets it. A failure is logged: everything but
/// localhost NodePorts works without it.
pub fn route_localnet(desired: &DesiredState, localhost: bool, netns: Option<&str>) {
    let wanted = desired
        .families
        .iter()
        .any(|f| FamilyCtx::new(f.family, &f.node, localhost).loopback_node_ports());
    if !wanted {
        return;
    }
    let name = "net/ipv4/conf/all/route_localnet";
    type BoxError = Box<dyn std::error::Error + Send + Sync>;
    let result = Netns::from_name(netns).run(|| -> Result<(), BoxError> {
        Sysctl::new().ensure(name, 1)?;
        Ok(())
    });
    if let Err(error) = result {
        tracing::warn!(%error, "cannot set {name}: localhost NodePorts will not answer");
    }
}
