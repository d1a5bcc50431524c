//! A thin typed client for iptables through its save/restore tools: `iptables-save` output read
//! into tables, chains and rules ([`SavedTable`]), `iptables-restore --noflush` input built from
//! the same nouns ([`RestoreInput`]), and [`Iptables`], which runs the tools of one backend (nft
//! or legacy) and family, optionally inside a named network namespace.
//!
//! It knows nothing of Kubernetes: which chains are whose is the caller's business.

mod exec;
mod restore;
mod save;

pub use exec::{Iptables, IptablesError};
pub use restore::RestoreInput;
pub use save::{ParseError, SavedChain, SavedRule, SavedTable, parse_save, split_words};

use std::fmt;

/// Which kernel interface the iptables tools program: both ship with Debian's `iptables`
/// package, as `iptables-nft-*` and `iptables-legacy-*`, and a node may hold rules in either.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Backend {
    Nft,
    Legacy,
}

impl Backend {
    pub const ALL: [Backend; 2] = [Backend::Nft, Backend::Legacy];

    pub fn as_str(self) -> &'static str {
        match self {
            Backend::Nft => "nft",
            Backend::Legacy => "legacy",
        }
    }
}

/// `iptables` (IPv4) or `ip6tables` (IPv6).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Family {
    V4,
    V6,
}

impl Family {
    pub const ALL: [Family; 2] = [Family::V4, Family::V6];

    /// The tools' name stem: `iptables` or `ip6tables`.
    pub fn command(self) -> &'static str {
        match self {
            Family::V4 => "iptables",
            Family::V6 => "ip6tables",
        }
    }
}

/// The tables kproxy reads or writes (`raw` and `security` exist too; nothing here needs them).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Table {
    Nat,
    Filter,
    Mangle,
}

impl Table {
    pub const ALL: [Table; 3] = [Table::Nat, Table::Filter, Table::Mangle];

    pub fn as_str(self) -> &'static str {
        match self {
            Table::Nat => "nat",
            Table::Filter => "filter",
            Table::Mangle => "mangle",
        }
    }

    pub fn from_name(name: &str) -> Option<Table> {
        Table::ALL.into_iter().find(|t| t.as_str() == name)
    }

    /// The kernel's built-in chains of this table, which can be neither created nor deleted.
    pub fn builtin_chains(self) -> &'static [&'static str] {
        match self {
            Table::Nat => &["PREROUTING", "INPUT", "OUTPUT", "POSTROUTING"],
            Table::Filter => &["INPUT", "FORWARD", "OUTPUT"],
            Table::Mangle => &["PREROUTING", "INPUT", "FORWARD", "OUTPUT", "POSTROUTING"],
        }
    }
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Display for Table {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
