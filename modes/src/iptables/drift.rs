//! The cheap drift check: our canary chain in each table (gone when someone flushed or deleted
//! our chains: a firewalld reload, `iptables -F`/`-X`) and our jumps in the built-in chains
//! (gone when a built-in chain was flushed). One `iptables -S CHAIN` per chain looked at, never
//! a save of a big table.

use std::collections::BTreeSet;

use kproxy_dataplane::iptables::{Iptables, Table, split_words};

use super::{
    MODE,
    names::CANARY,
    render::{FamilyApplied, Options, base, ctx::FamilyCtx},
};
use crate::{Drift, ModeError, model::IpFamily};

/// What is missing of one family's fixed objects.
pub fn check(
    ipt: &Iptables,
    family: IpFamily,
    fa: &FamilyApplied,
    options: Options,
) -> Result<Vec<Drift>, ModeError> {
    let tool = ipt.program("save").replace("-save", "");
    let list = |table, chain: &str| {
        ipt.list_chain(table, chain)
            .map_err(|e| ModeError::kernel(MODE, "checking our chains for drift", e))
    };
    let mut found = Vec::new();
    for table in [Table::Nat, Table::Filter] {
        if list(table, CANARY)?.is_none() {
            found.push(Drift {
                kind: "chain",
                what: format!("{tool} {table} chain {CANARY} is gone (were our chains flushed?)"),
            });
        }
    }
    let ctx = FamilyCtx::new(family, &fa.node, options);
    let jumps = base::jumps(&ctx);
    let builtins: BTreeSet<(Table, &str)> = jumps.iter().map(|j| (j.table, j.from)).collect();
    for (table, from) in builtins {
        let rules = list(table, from)?.unwrap_or_default();
        let present: Vec<Vec<String>> = rules.iter().map(|r| r.words()).collect();
        for j in jumps.iter().filter(|j| j.table == table && j.from == from) {
            if !present.contains(&split_words(&j.spec)) {
                found.push(Drift {
                    kind: "rule",
                    what: format!("{tool} {table} {from}: jump missing: {}", j.spec),
                });
            }
        }
    }
    Ok(found)
}
