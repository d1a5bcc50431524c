//! Drift: what changed in our tables behind kproxy's back (see docs/modes/nftables.md, Drift).
//!
//! Two sources, both cheap whatever the table's size:
//! - the kernel's change notifications ([`Monitor`]): every batch another program commits to
//!   our tables, down to one map element, found as it happens;
//! - a count of the rules of each fixed chain ([`RuleCounter`]), every check: a backstop for
//!   notifications that were not seen (the monitor paused during our full syncs, or down).
//!   Elements are not counted: the kernel has no cheap way to say how many a set holds.

use std::{
    collections::{BTreeMap, BTreeSet},
    sync::Arc,
};

use kproxy_dataplane::{
    netns::Netns,
    nft::{
        SpawnLog,
        monitor::{Finding, ForeignBatch, Monitor, MonitorError, RuleCounter},
        wire::{Change, Object, Op},
    },
};

use super::{Applied, names};
use crate::{Drift, model::IpFamily};

/// Called when the monitor finds something between checks.
pub type Notify = Arc<dyn Fn() + Send + Sync>;

/// The mode's watch on its tables.
pub struct Watch {
    netns: Netns,
    ours: SpawnLog,
    notify: Option<Notify>,
    monitor: Option<Monitor>,
    counter: Option<RuleCounter>,
    /// Drift the watch learned of by itself (notifications it could not receive), reported at
    /// the next check.
    pending: Vec<Drift>,
}

impl Watch {
    /// Watches in network namespace `netns` (as `ip netns add` names it); `ours` holds the
    /// pids of the `nft` processes the mode ran.
    pub fn new(netns: Netns, ours: SpawnLog) -> Self {
        Self {
            netns,
            ours,
            notify: None,
            monitor: None,
            counter: None,
            pending: Vec::new(),
        }
    }

    /// Starts the change monitor; `notify` is called on each finding.
    pub fn start(&mut self, notify: Notify) -> Result<(), MonitorError> {
        self.notify = Some(notify);
        self.start_monitor()
    }

    fn start_monitor(&mut self) -> Result<(), MonitorError> {
        let Some(notify) = self.notify.clone() else {
            return Ok(());
        };
        let monitor = Monitor::start(
            &self.netns,
            names::TABLE,
            self.ours.clone(),
            Box::new(move || notify()),
        )?;
        self.monitor = Some(monitor);
        Ok(())
    }

    /// Stops the monitor (its thread ends within a second).
    pub fn stop(&mut self) {
        self.notify = None;
        self.monitor = None;
    }

    /// Stops notifications during a full sync: it replaces our tables whole (so a change made
    /// before it is gone anyway), and would otherwise make the kernel build and send a message
    /// per object. True when paused (call [`Watch::resume`] after).
    pub fn pause(&mut self) -> bool {
        let Some(m) = &self.monitor else { return false };
        match m.pause() {
            Ok(()) => true,
            Err(e) => {
                self.broken(format!("pausing the change monitor failed: {e}"));
                false
            }
        }
    }

    pub fn resume(&mut self) {
        if let Some(Err(e)) = self.monitor.as_ref().map(Monitor::resume) {
            self.broken(format!("resuming the change monitor failed: {e}"));
        }
    }

    /// The monitor cannot be trusted any more: it is restarted at the next check, and what
    /// it may have missed counts as drift.
    fn broken(&mut self, what: String) {
        self.monitor = None;
        self.pending.push(unknown(what));
    }

    /// What drifted since the last check. `applied` is what the mode last applied (`None`: the
    /// next sync is full anyway, so the chains are not counted).
    pub fn check(&mut self, applied: Option<&Applied>) -> Result<Vec<Drift>, MonitorError> {
        let mut out = std::mem::take(&mut self.pending);
        if let Some(m) = &self.monitor {
            out.extend(m.take().iter().flat_map(finding_drifts));
            if !m.is_running() {
                self.monitor = None;
            }
        }
        if self.monitor.is_none() && self.notify.is_some() {
            // Restarted here, not in the thread: a check runs every syncPeriod at most.
            if let Err(e) = self.start_monitor() {
                self.pending = out;
                return Err(e);
            }
        }
        if let Some(applied) = applied {
            match self.count_rules(applied) {
                Ok(found) => out.extend(found),
                Err(e) => {
                    self.counter = None;
                    self.pending = out;
                    return Err(e);
                }
            }
        }
        Ok(out)
    }

    /// Compares each fixed chain's rule count with what the last full sync wrote: one small
    /// dump per chain (about 40 µs each, whatever the size of the maps).
    fn count_rules(&mut self, applied: &Applied) -> Result<Vec<Drift>, MonitorError> {
        if self.counter.is_none() {
            self.counter = Some(RuleCounter::open(&self.netns)?);
        }
        let counter = self.counter.as_mut().expect("opened above");
        let mut out = Vec::new();
        for (family, fa) in &applied.families {
            let (num, name) = match family {
                IpFamily::V4 => (2, "ip"),
                IpFamily::V6 => (10, "ip6"),
            };
            let mut wrong = Vec::new();
            let mut all_empty = true;
            for &(chain, want) in &fa.fixed_rules {
                let have = counter.count(num, names::TABLE, chain)?;
                all_empty &= have == 0;
                if have != want as usize {
                    wrong.push(format!(
                        "chain {name} {} {chain} holds {have} rules, kproxy wrote {want}",
                        names::TABLE
                    ));
                }
            }
            if all_empty {
                let what = format!("table {name} {} is gone or empty", names::TABLE);
                out.push(Drift {
                    kind: "table",
                    what,
                });
            } else {
                out.extend(wrong.into_iter().map(|what| Drift { kind: "rule", what }));
            }
        }
        Ok(out)
    }
}

fn unknown(what: String) -> Drift {
    Drift {
        kind: "unknown",
        what,
    }
}

fn finding_drifts(f: &Finding) -> Vec<Drift> {
    match f {
        Finding::Foreign(b) => batch_drifts(b),
        Finding::Lost(why) => vec![unknown(format!("{why}: our tables may have changed"))],
        Finding::Summarized(n) => vec![unknown(format!("{n} more foreign changes not kept"))],
    }
}

/// One drift per kind of object a foreign batch changed; a deleted table says it all.
pub fn batch_drifts(b: &ForeignBatch) -> Vec<Drift> {
    let by = format!("by {} (pid {})", b.process, b.pid);
    let tables: Vec<&Change> = (b.changes.iter())
        .filter(|c| (c.object, c.op) == (Object::Table, Op::Delete))
        .collect();
    if !tables.is_empty() {
        let what = tables.iter().map(|c| table_name(c)).collect::<Vec<_>>();
        return vec![Drift {
            kind: "table",
            what: format!("table {} deleted {by}", what.join(", ")),
        }];
    }
    let mut groups: BTreeMap<(&'static str, &'static str), (usize, BTreeSet<String>)> =
        BTreeMap::new();
    for c in b.changes.iter().filter(|c| !anonymous(c)) {
        let op = match c.op {
            Op::New => "added",
            Op::Delete => "deleted",
        };
        let g = groups.entry((kind(c), op)).or_default();
        g.0 += 1;
        g.1.insert(format!(
            "{} {}",
            table_name(c),
            c.name.as_deref().unwrap_or("")
        ));
    }
    let more = match b.more {
        0 => String::new(),
        n => format!(" (and {n} more changes)"),
    };
    (groups.into_iter())
        .map(|((kind, op), (n, places))| {
            let places = places.into_iter().collect::<Vec<_>>().join(", ");
            let what = format!("{n} {kind} {op} in {places} {by}{more}");
            Drift { kind, what }
        })
        .collect()
}

/// An anonymous set (`__set0`, a rule's inline `{ ... }`) lives and dies with its rule: its
/// changes are the rule's, already counted.
fn anonymous(c: &Change) -> bool {
    matches!(c.object, Object::Set | Object::Map | Object::Element)
        && c.name.as_deref().is_some_and(|n| n.starts_with("__"))
}

fn table_name(c: &Change) -> String {
    let family = match c.family {
        2 => "ip",
        10 => "ip6",
        _ => "?",
    };
    format!("{family} {}", c.table)
}

/// The metric label of a changed object.
fn kind(c: &Change) -> &'static str {
    match c.object {
        Object::Table => "table",
        Object::Chain => "chain",
        Object::Rule => "rule",
        Object::Set => "set",
        Object::Map => "map",
        Object::Element if c.name.as_deref().is_some_and(names::is_map) => "map element",
        Object::Element => "set element",
        Object::Other => "object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn change(object: Object, op: Op, name: &str) -> Change {
        Change {
            family: 2,
            op,
            object,
            table: "kproxy".into(),
            name: Some(name.into()),
        }
    }

    fn batch(changes: Vec<Change>) -> ForeignBatch {
        ForeignBatch {
            pid: 42,
            process: "nft".into(),
            changes,
            more: 0,
        }
    }

    #[test]
    fn a_deleted_table_is_one_table_drift() {
        let mut b = batch(vec![
            change(Object::Rule, Op::Delete, "services"),
            change(Object::Chain, Op::Delete, "services"),
        ]);
        b.changes.push(Change {
            name: None,
            ..change(Object::Table, Op::Delete, "")
        });
        let d = batch_drifts(&b);
        assert_eq!(d.len(), 1);
        assert_eq!(d[0].kind, "table");
        assert_eq!(d[0].what, "table ip kproxy deleted by nft (pid 42)");
    }

    #[test]
    fn changes_are_grouped_by_kind_and_elements_named_by_their_set() {
        let mut b = batch(vec![
            change(Object::Rule, Op::Delete, "nat-output"),
            change(Object::Rule, Op::Delete, "services"),
            change(Object::Element, Op::Delete, "service-ips"),
            change(Object::Element, Op::New, "cluster-ips"),
            change(Object::Set, Op::Delete, "__set0"),
        ]);
        b.more = 3;
        let d = batch_drifts(&b);
        let kinds: Vec<&str> = d.iter().map(|d| d.kind).collect();
        assert_eq!(kinds, ["map element", "rule", "set element"]);
        assert_eq!(
            d[1].what,
            "2 rule deleted in ip kproxy nat-output, ip kproxy services by nft (pid 42) \
             (and 3 more changes)"
        );
    }

    #[test]
    fn lost_notifications_are_unknown_drift() {
        let d = finding_drifts(&Finding::Lost("overrun".into()));
        assert_eq!(d[0].kind, "unknown");
        assert_eq!(finding_drifts(&Finding::Summarized(5))[0].kind, "unknown");
    }
}
