//! Upstream's rule-count gauges: `kubeproxy_sync_proxy_rules_iptables_total{table}` (the rules
//! of ours in force) and `..._last{table}` (the rules the last sync wrote), both families summed.

use std::collections::BTreeMap;

use kproxy_dataplane::iptables::Table;

use super::{
    names::port_group,
    render::{Applied, FamilyWrite, Rendered},
};
use crate::{Gauge, model::IpFamily};

/// The counts, kept across syncs: a partial sync writes only some families and chains.
#[derive(Clone, Debug, Default)]
pub struct RuleCounts {
    /// Rules in force per family and table.
    total: BTreeMap<(IpFamily, Table), usize>,
    /// Rules written by the last successful sync, per table.
    last: BTreeMap<Table, usize>,
}

impl RuleCounts {
    /// Counts what `rendered` wrote, and what is in force once it applied.
    pub fn record(&mut self, rendered: &Rendered) {
        self.last.clear();
        if rendered.full {
            self.total.clear();
        }
        for w in &rendered.families {
            for (table, tw) in [(Table::Nat, &w.nat), (Table::Filter, &w.filter)] {
                let written: usize = tw.chains.values().map(Vec::len).sum();
                *self.last.entry(table).or_default() += written + jumps(w, table);
                let total = fixed_rules(w, table) + own_rules(&rendered.applied, w.family, table);
                self.total
                    .insert((w.family, table), total + jumps(w, table));
            }
        }
    }

    pub fn gauges(&self) -> Vec<Gauge> {
        let mut out = Vec::new();
        for table in [Table::Nat, Table::Filter] {
            let total = self
                .total
                .iter()
                .filter(|((_, t), _)| *t == table)
                .map(|(_, n)| *n)
                .sum::<usize>();
            out.push(gauge(TOTAL, TOTAL_HELP, table, total));
        }
        for table in [Table::Nat, Table::Filter] {
            let last = self.last.get(&table).copied().unwrap_or(0);
            out.push(gauge(LAST, LAST_HELP, table, last));
        }
        out
    }
}

const TOTAL: &str = "kubeproxy_sync_proxy_rules_iptables_total";
const TOTAL_HELP: &str = "Total number of iptables rules owned by kube-proxy";
const LAST: &str = "kubeproxy_sync_proxy_rules_iptables_last";
const LAST_HELP: &str = "Number of iptables rules written by kube-proxy in last sync";

fn gauge(name: &'static str, help: &'static str, table: Table, n: usize) -> Gauge {
    Gauge {
        name,
        help,
        label: ("table", table.as_str().to_owned()),
        value: i64::try_from(n).unwrap_or(i64::MAX),
    }
}

/// Our jumps from the built-in chains (ensured on full syncs; in force throughout).
fn jumps(w: &FamilyWrite, table: Table) -> usize {
    w.jumps.iter().filter(|j| j.table == table).count()
}

/// The rules of the fixed chains (every sync that writes a family rewrites them whole).
fn fixed_rules(w: &FamilyWrite, table: Table) -> usize {
    let tw = if table == Table::Nat {
        &w.nat
    } else {
        &w.filter
    };
    tw.chains
        .iter()
        .filter(|(c, _)| port_group(c).is_none())
        .map(|(_, r)| r.len())
        .sum()
}

/// The rules of every Service port's own chains (nat only) in force.
fn own_rules(applied: &Applied, family: IpFamily, table: Table) -> usize {
    if table != Table::Nat {
        return 0;
    }
    applied.families.get(&family).map_or(0, |fa| {
        fa.ports
            .values()
            .flat_map(|p| p.chains.values())
            .map(Vec::len)
            .sum()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        iptables::render::render,
        model::{ChangeSet, ServicePortName},
        testing::fixtures,
    };

    fn count(gauges: &[Gauge], name: &str, table: &str) -> i64 {
        let g = gauges.iter().find(|g| g.name == name && g.label.1 == table);
        g.expect("a gauge per name and table").value
    }

    /// A full sync writes everything it has in force; a partial sync of one port writes the
    /// fixed chains and that port's, and the total stays the full sync's.
    #[test]
    fn totals_survive_partial_syncs_and_last_counts_what_was_written() {
        let desired = fixtures::cluster_ip_general();
        let mut counts = RuleCounts::default();
        let full = render(&desired, &ChangeSet::full(), None, Default::default());
        counts.record(&full);
        let g = counts.gauges();
        let (total, last) = (count(&g, TOTAL, "nat"), count(&g, LAST, "nat"));
        assert!(total > 20, "{total}");
        assert_eq!(total, last);
        let name: ServicePortName = desired.families[0].services.keys().next().unwrap().clone();
        let changes = ChangeSet {
            services: [name].into(),
            ..Default::default()
        };
        let partial = render(&desired, &changes, Some(full.applied), Default::default());
        assert!(!partial.full);
        counts.record(&partial);
        let g = counts.gauges();
        assert_eq!(count(&g, TOTAL, "nat"), total);
        assert!(count(&g, LAST, "nat") < total);
    }
}
