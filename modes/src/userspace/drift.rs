//! The cheap drift check: the rule count of each chain of the capture table, one netlink dump
//! per chain (never a listing of the table or its sets), against what the last sync applied. A
//! deleted table, a flushed chain or a deleted rule shows as a count that differs; the next sync
//! is then full and writes the table again. Set elements are not compared: a removed element is
//! repaired by the next full sync (at the latest a drift or a restart away).

use std::collections::BTreeMap;

use kproxy_dataplane::{netns::Netns, nft::monitor::RuleCounter};

use super::{
    MODE,
    capture::{Capture, TABLE, base::Stmt},
};
use crate::{Drift, ModeError, model::IpFamily};

/// What differs between the kernel's rule counts and `applied`'s.
pub fn check(netns: &Netns, applied: &Capture) -> Result<Vec<Drift>, ModeError> {
    let mut dump = RuleCounter::open(netns)
        .map_err(|e| ModeError::kernel(MODE, "opening a netlink socket for drift checks", e))?;
    let mut found = Vec::new();
    for (family, fc) in applied {
        let mut want: BTreeMap<&str, usize> = BTreeMap::new();
        for stmt in &fc.base {
            match stmt {
                Stmt::Chain(name, _) => {
                    want.entry(name).or_default();
                }
                Stmt::Rule(chain, _) => *want.entry(chain).or_default() += 1,
                _ => {}
            }
        }
        for (chain, rules) in &fc.chains {
            want.insert(chain, rules.len());
        }
        let nf = match family {
            IpFamily::V4 => 2,
            IpFamily::V6 => 10,
        };
        for (chain, n) in want {
            let have = dump
                .count(nf, TABLE, chain)
                .map_err(|e| ModeError::kernel(MODE, "counting our rules", e))?;
            if have != n {
                found.push(Drift {
                    kind: "rule",
                    what: format!(
                        "{family} table {TABLE} chain {chain}: {have} rules, {n} applied"
                    ),
                });
            }
        }
    }
    Ok(found)
}
