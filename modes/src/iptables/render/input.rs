//! A family's write as `iptables-restore --noflush` input. Declaring a chain (`:CHAIN - [0:0]`)
//! creates it or empties it, so only our chains are ever declared; built-in chains are touched
//! only by inserting or deleting our jump rules, by their exact text.
//!
//! The order of the lines is chosen for the nft backend's speed (why: `names::ServiceChains`):
//! the fixed chains first, then port by port in descending key order, each port's chains with
//! the fixed chains' rules that jump into them. Chains to delete go in two more inputs, applied
//! after the first has removed every reference to them: one empties them, one deletes them, each
//! in descending order. In the first input their names would sit among the live ones, and in
//! one input of their own each would be looked up twice, the second time behind all the others:
//! both quadratic again (see [`flush_then_delete`]).

use std::collections::{BTreeMap, BTreeSet};

use kproxy_dataplane::iptables::{RestoreInput, SavedRule, Table, split_words};

use super::{FamilyWrite, TableWrite, base::Jump};
use crate::iptables::{
    existing::Existing,
    names::{is_ours, port_group},
};

/// The inputs for `w`, applied in order: the rules, then (when some are due) the emptying and
/// the deletion of chains. With `existing` (a full sync), every chain of ours the kernel holds and `w` does not
/// is deleted, and the jumps are ensured: each present once, at the top of its built-in chain
/// when it was missing; stale or duplicate jumps deleted.
pub fn restore_input(w: &FamilyWrite, existing: Option<&Existing>) -> Vec<RestoreInput> {
    let mut input = RestoreInput::new();
    let (mut flushes, mut deletions) = (RestoreInput::new(), RestoreInput::new());
    for (table, tw) in [(Table::Nat, &w.nat), (Table::Filter, &w.filter)] {
        let mut delete = tw.delete.clone();
        write_table(table, tw, &mut input);
        if let Some(state) = existing.map(|e| e.table(table)) {
            let stale = state.ours.iter().filter(|c| !tw.chains.contains_key(*c));
            delete.extend(stale.cloned());
            let jumps: Vec<&Jump> = w.jumps.iter().filter(|j| j.table == table).collect();
            ensure_jumps(table, &jumps, &state.builtin_rules, &mut input);
        }
        flush_then_delete(table, &delete, &mut flushes, &mut deletions);
    }
    [input, flushes, deletions]
        .into_iter()
        .filter(|i| !i.is_empty())
        .collect()
}

/// The rules of one fixed chain, sorted by where they go in the input.
#[derive(Default)]
struct FixedRules<'a> {
    /// Before any port's: the fixed chains' own rules.
    head: Vec<(&'a str, &'a str)>,
    /// Each port group's: the dispatch rules that jump into its chains.
    by_group: BTreeMap<&'a str, Vec<(&'a str, &'a str)>>,
    /// After every port's: a fixed rule that follows port rules in its chain (the NodePort
    /// dispatch, last in KPROXY-SERVICES), kept last.
    tail: Vec<(&'a str, &'a str)>,
}

/// Declares and fills the table's chains (see the module doc for the order).
fn write_table(table: Table, tw: &TableWrite, input: &mut RestoreInput) {
    let mut fixed = FixedRules::default();
    let mut groups: BTreeMap<&str, Vec<(&str, &Vec<String>)>> = BTreeMap::new();
    for (chain, rules) in &tw.chains {
        if let Some(group) = port_group(chain) {
            groups.entry(group).or_default().push((chain, rules));
            continue;
        }
        input.declare_chain(table, chain);
        let mut after_ports = false;
        for rule in rules {
            let into = jump_target(rule).and_then(port_group);
            match into {
                Some(g) => fixed.by_group.entry(g).or_default().push((chain, rule)),
                None if after_ports => fixed.tail.push((chain, rule)),
                None => fixed.head.push((chain, rule)),
            }
            after_ports |= into.is_some();
        }
    }
    for (chain, rule) in &fixed.head {
        input.append(table, chain, rule);
    }
    let keys: BTreeSet<&str> = groups
        .keys()
        .chain(fixed.by_group.keys())
        .copied()
        .collect();
    for group in keys.into_iter().rev() {
        let own = groups.get(group).map(Vec::as_slice).unwrap_or_default();
        for (chain, _) in own {
            input.declare_chain(table, chain);
        }
        for (chain, rules) in own {
            for rule in rules.iter() {
                input.append(table, chain, rule);
            }
        }
        for (chain, rule) in fixed.by_group.get(group).into_iter().flatten() {
            input.append(table, chain, rule);
        }
    }
    for (chain, rule) in &fixed.tail {
        input.append(table, chain, rule);
    }
}

/// The chain a rule jumps to (`-j X` or `-g X`), if it is one of ours.
fn jump_target(rule: &str) -> Option<&str> {
    let mut words = rule.split_whitespace();
    while let Some(w) = words.next() {
        if w == "-j" || w == "-g" {
            return words.next().filter(|t| is_ours(t));
        }
    }
    None
}

/// Empties `chains` in `flush` and deletes them in `delete`: all emptied first, since they may
/// refer to each other. Two inputs, each naming every chain once and in descending order, so
/// that the nft backend's sorted name list finds each at its head.
pub fn flush_then_delete<'a>(
    table: Table,
    chains: impl IntoIterator<Item = &'a String, IntoIter: DoubleEndedIterator> + Clone,
    flush: &mut RestoreInput,
    delete: &mut RestoreInput,
) {
    for chain in chains.clone().into_iter().rev() {
        flush.declare_chain(table, chain);
    }
    for chain in chains.into_iter().rev() {
        delete.delete_chain(table, chain);
    }
}

/// Deletes the jumps to our chains that are not wanted (or wanted once and found twice), and
/// inserts the wanted ones that are missing; `builtin_rules` are the built-in chains' rules.
fn ensure_jumps(
    table: Table,
    jumps: &[&Jump],
    builtin_rules: &[SavedRule],
    input: &mut RestoreInput,
) {
    let mut found = vec![false; jumps.len()];
    for rule in builtin_rules {
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
