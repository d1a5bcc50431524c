//! Service ports the kernel (or its tool) refused. Validation at the door should leave nothing a
//! mode's kernel can reject, but if a full sync is still refused, one bad port must not keep
//! every other Service from being programmed: the ports whose rules fail the mode's check (`nft
//! -c`, `iptables-restore --test`) are found by bisection, left out of every render (logged and
//! counted), and tried again when they next change. Any mode that applies whole syncs can keep one.

use std::collections::BTreeSet;

use crate::model::{ChangeSet, DesiredState, IpFamily, ServicePortName};

/// One Service port of one family.
pub type PortKey = (IpFamily, ServicePortName);

#[derive(Debug, Default)]
pub struct Quarantine {
    ports: BTreeSet<PortKey>,
    /// Ports ever put here, for `/metrics`.
    total: u64,
}

impl Quarantine {
    pub fn total(&self) -> u64 {
        self.total
    }

    /// The ports left out now.
    pub fn ports(&self) -> Vec<ServicePortName> {
        self.ports.iter().map(|(_, name)| name.clone()).collect()
    }

    /// Ports that changed leave quarantine: the next render tries them again.
    pub fn release_changed(&mut self, changes: &ChangeSet) {
        self.ports
            .retain(|(_, name)| !changes.services.contains(name));
    }

    /// `desired` without the quarantined ports; `None` when nothing is quarantined.
    pub fn filter(&self, desired: &DesiredState) -> Option<DesiredState> {
        (!self.ports.is_empty()).then(|| without(desired, &self.ports))
    }

    /// Finds the ports of `desired` whose rules the mode's check refuses (`accepted` says
    /// whether a full sync of a subset of `desired` would apply) and quarantines them; returns
    /// them. Empty when even no port at all is refused: then no port is to blame.
    pub fn isolate(
        &mut self,
        desired: &DesiredState,
        check: impl Fn(&DesiredState) -> bool,
    ) -> Vec<PortKey> {
        let all: Vec<PortKey> = desired
            .families
            .iter()
            .flat_map(|f| f.services.keys().map(move |n| (f.family, n.clone())))
            .collect();
        let accepted = |keep: &[PortKey]| {
            let dropped: BTreeSet<PortKey> =
                all.iter().filter(|k| !keep.contains(k)).cloned().collect();
            check(&without(desired, &dropped))
        };
        if !accepted(&[]) {
            return Vec::new();
        }
        let mut bad = Vec::new();
        bisect(&all, &accepted, &mut bad);
        for key in &bad {
            tracing::error!(family = %key.0, service = %key.1, "the kernel refused this Service port's rules: left out until it changes");
        }
        self.total += bad.len() as u64;
        self.ports.extend(bad.iter().cloned());
        bad
    }
}

/// Collects the ports of `ports` that are refused even alone (beside the fixed part).
fn bisect(ports: &[PortKey], accepted: &impl Fn(&[PortKey]) -> bool, bad: &mut Vec<PortKey>) {
    if ports.is_empty() || accepted(ports) {
        return;
    }
    if let [one] = ports {
        bad.push(one.clone());
        return;
    }
    let (left, right) = ports.split_at(ports.len() / 2);
    bisect(left, accepted, bad);
    bisect(right, accepted, bad);
}

fn without(desired: &DesiredState, ports: &BTreeSet<PortKey>) -> DesiredState {
    let mut out = desired.clone();
    for fam in &mut out.families {
        let family = fam.family;
        fam.services
            .retain(|name, _| !ports.contains(&(family, name.clone())));
    }
    out
}
