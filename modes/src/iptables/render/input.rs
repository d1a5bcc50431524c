//! A family's write as `iptables-restore --noflush` input. Declaring a chain (`:CHAIN - [0:0]`)
//! creates it or empties it, so only our chains are ever declared; built-in chains are touched
//! only by inserting or deleting our jump rules, by their exact text.

use std::collections::BTreeSet;

use kproxy_dataplane::iptables::{RestoreInput, SavedTable, Table, split_words};

use super::{FamilyWrite, TableWrite, base::Jump};
use crate::iptables::names::is_ours;

/// The input for `w`. With `saved` (the kernel's tables, for a full sync), every chain of ours
/// the kernel holds and `w` does not is deleted, and the jumps are ensured: each present once,
/// at the top of its built-in chain when it was missing; stale or duplicate jumps deleted.
pub fn restore_input(w: &FamilyWrite, saved: Option<&[SavedTable]>) -> RestoreInput {
    let mut input = RestoreInput::new();
    for (table, tw) in [(Table::Nat, &w.nat), (Table::Filter, &w.filter)] {
        let saved = saved.map(|s| s.iter().find(|t| t.table() == Some(table)));
        let mut delete = tw.delete.clone();
        if let Some(saved) = saved.flatten() {
            stale_chains(tw, saved, &mut delete);
        }
        if let Some(saved) = saved {
            let jumps: Vec<&Jump> = w.jumps.iter().filter(|j| j.table == table).collect();
            ensure_jumps(table, &jumps, saved, &mut input);
        }
        write_table(table, tw, &delete, &mut input);
    }
    input
}

fn stale_chains(tw: &TableWrite, saved: &SavedTable, delete: &mut BTreeSet<String>) {
    let stale = saved
        .chains
        .iter()
        .map(|c| &c.name)
        .filter(|c| is_ours(c) && !tw.chains.contains_key(*c));
    delete.extend(stale.cloned());
}

/// Declares, fills, then deletes: a deleted chain is emptied by its declaration, and every
/// reference to it is gone once the chains that referred to it are refilled.
fn write_table(table: Table, tw: &TableWrite, delete: &BTreeSet<String>, input: &mut RestoreInput) {
    for chain in tw.chains.keys().chain(delete) {
        input.declare_chain(table, chain);
    }
    for (chain, rules) in &tw.chains {
        for rule in rules {
            input.append(table, chain, rule);
        }
    }
    for chain in delete {
        input.delete_chain(table, chain);
    }
}

/// Deletes the jumps to our chains that are not wanted (or wanted once and found twice), and
/// inserts the wanted ones that are missing; `saved` is `None` when the table does not exist yet.
fn ensure_jumps(
    table: Table,
    jumps: &[&Jump],
    saved: Option<&SavedTable>,
    input: &mut RestoreInput,
) {
    let mut found = vec![false; jumps.len()];
    for rule in saved.iter().flat_map(|s| &s.rules) {
        if is_ours(&rule.chain) || !rule.target().is_some_and(|t| is_ours(&t)) {
            continue;
        }
        let words = rule.words();
        let wanted = jumps
            .iter()
            .enumerate()
            .position(|(i, j)| !found[i] && j.from == rule.chain && split_words(&j.spec) == words);
        match wanted {
            Some(i) => found[i] = true,
            None => {
                input.delete(table, &rule.chain, &rule.spec);
            }
        }
    }
    // Inserted at the top in reverse, so that they end up in the listed order.
    for (j, _) in jumps.iter().zip(&found).filter(|(_, f)| !**f).rev() {
        input.insert(table, j.from, &j.spec);
    }
}

#[cfg(test)]
mod tests;
