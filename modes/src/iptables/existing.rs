//! What a full sync must know of the kernel before it writes: which chains of ours each table
//! holds (those it no longer writes are stale and deleted) and the rules of the built-in chains
//! (so that each jump of ours is there exactly once). Read cheaply on both backends:
//!
//! - legacy: `iptables-legacy-save` (one copy of the table blob: fast at any size);
//! - nft: a chain-name dump over netlink (no rules) plus `iptables -S` of each built-in chain.
//!   `iptables-nft-save` of a 10k x 5 table takes 40 s here (one rule dump per chain), so a full
//!   sync that saved first would spend most of its time reading.

use std::collections::{BTreeMap, BTreeSet};

use kproxy_dataplane::{
    iptables::{Backend, Family, Iptables, SavedRule, SavedTable, Table},
    netns::Netns,
    nft::monitor::RuleCounter,
};

use super::{MODE, names::is_ours};
use crate::ModeError;

/// The tables a full sync writes.
const TABLES: [Table; 2] = [Table::Nat, Table::Filter];

/// One family's nat and filter tables as a full sync needs them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Existing {
    tables: BTreeMap<Table, TableState>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TableState {
    /// Every chain of ours the table holds.
    pub ours: BTreeSet<String>,
    /// The rules of the table's built-in chains, in order.
    pub builtin_rules: Vec<SavedRule>,
}

impl Existing {
    /// From saves (the legacy backend's read; tests).
    pub fn from_saved(saved: &[SavedTable]) -> Self {
        let mut out = Existing::default();
        for table in TABLES {
            let Some(s) = saved.iter().find(|t| t.table() == Some(table)) else {
                continue;
            };
            let builtin = table.builtin_chains();
            let state = TableState {
                ours: s
                    .chains
                    .iter()
                    .map(|c| c.name.clone())
                    .filter(|c| is_ours(c))
                    .collect(),
                builtin_rules: s
                    .rules
                    .iter()
                    .filter(|r| builtin.contains(&r.chain.as_str()))
                    .cloned()
                    .collect(),
            };
            out.tables.insert(table, state);
        }
        out
    }

    /// `table`'s state; empty when the table does not exist.
    pub fn table(&self, table: Table) -> TableState {
        self.tables.get(&table).cloned().unwrap_or_default()
    }

    /// Reads one family of `ipt`'s backend (see the module doc for how).
    pub fn read(ipt: &Iptables, netns: Option<&str>) -> Result<Self, ModeError> {
        let err = |e| ModeError::kernel(MODE, "reading our chains before a full sync", e);
        if ipt.backend() == Backend::Legacy {
            return Ok(Self::from_saved(&ipt.save_all().map_err(err)?));
        }
        let mut dump = RuleCounter::open(&Netns::from_name(netns)).map_err(|e| {
            ModeError::kernel(MODE, "opening a netlink socket to list our chains", e)
        })?;
        let family = match ipt.family() {
            Family::V4 => 2,
            Family::V6 => 10,
        };
        let mut out = Existing::default();
        for table in TABLES {
            let names = dump
                .chains(family, table.as_str())
                .map_err(|e| ModeError::kernel(MODE, "listing our chains before a full sync", e))?;
            let mut state = TableState {
                ours: names.into_iter().filter(|c| is_ours(c)).collect(),
                builtin_rules: Vec::new(),
            };
            for chain in table.builtin_chains() {
                let rules = ipt.list_chain(table, chain).map_err(err)?;
                state.builtin_rules.extend(rules.unwrap_or_default());
            }
            out.tables.insert(table, state);
        }
        Ok(out)
    }
}
