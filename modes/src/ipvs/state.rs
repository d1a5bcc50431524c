//! What the last successful sync left in the kernel, kept so that a partial sync costs O(the
//! change), not O(every Service): the kernel's table of ours, and per Service port its share of
//! the plan and of the nftables elements, with reference counts for what ports share (a cluster
//! IP of several ports, a hairpin endpoint, a VIP).

use std::{
    collections::{BTreeMap, BTreeSet},
    net::IpAddr,
};

use kproxy_dataplane::ipvs::ServiceKey;

use super::{
    Local,
    diff::Table,
    nft::{self, Elem},
    plan::{self, Plan, PortPlan},
};
use crate::model::{ChangeSet, DesiredState, IpFamily, NodeSettings, ServicePortName};

/// One Service port's share.
pub struct Port {
    plan: PortPlan,
    elements: Vec<Elem>,
}

pub struct Applied {
    /// The kernel's virtual servers of ours, with their real servers.
    pub table: Table,
    /// The node's own addresses the plan used (NodePorts on all local addresses).
    pub local: Local,
    /// Rules per fixed nftables chain, per family (the drift check counts them).
    pub rules: Vec<(IpFamily, &'static str, usize)>,
    ports: BTreeMap<(IpFamily, ServicePortName), Port>,
    elem_refs: BTreeMap<(IpFamily, Elem), u32>,
    vip_refs: BTreeMap<IpAddr, u32>,
    /// Per family: the node settings and node-port addresses of the last full sync.
    nodes: BTreeMap<IpFamily, (NodeSettings, Vec<IpAddr>)>,
}

/// What a partial sync must do.
#[derive(Default)]
pub struct Change {
    /// The changed ports' virtual servers as wanted...
    pub wanted: Table,
    /// ...and every virtual server they had or want (the diff's scope).
    pub touched: BTreeSet<ServiceKey>,
    pub vip_add: Vec<IpAddr>,
    pub vip_del: Vec<IpAddr>,
    pub elem_add: Vec<(IpFamily, Elem)>,
    pub elem_del: Vec<(IpFamily, Elem)>,
}

fn incref<K: Ord + Clone>(refs: &mut BTreeMap<K, u32>, k: &K) -> bool {
    let n = refs.entry(k.clone()).or_insert(0);
    *n += 1;
    *n == 1
}

fn decref<K: Ord>(refs: &mut BTreeMap<K, u32>, k: &K) -> bool {
    match refs.get_mut(k) {
        Some(n) if *n > 1 => {
            *n -= 1;
            false
        }
        Some(_) => {
            refs.remove(k);
            true
        }
        None => false,
    }
}

/// Drops what is both added and deleted.
fn net_out<T: Ord + Clone>(add: &mut Vec<T>, del: &mut Vec<T>) {
    let both: BTreeSet<T> = add.iter().filter(|x| del.contains(x)).cloned().collect();
    add.retain(|x| !both.contains(x));
    del.retain(|x| !both.contains(x));
}

impl Applied {
    /// After a full sync of `desired` (planned as `plan`), which left `table` in the kernel.
    pub fn build(
        desired: &DesiredState,
        scheduler: &str,
        plan: &Plan,
        table: Table,
        local: Local,
    ) -> Self {
        let mut a = Applied {
            table,
            local,
            rules: Vec::new(),
            ports: BTreeMap::new(),
            elem_refs: BTreeMap::new(),
            vip_refs: BTreeMap::new(),
            nodes: BTreeMap::new(),
        };
        for fam in &desired.families {
            let np = plan
                .nodeport_ips
                .get(&fam.family)
                .cloned()
                .unwrap_or_default();
            for (name, sp) in &fam.services {
                let port = Port {
                    plan: plan::port_plan(sp, scheduler, &np),
                    elements: nft::elements_of_port(sp),
                };
                a.count(fam.family, &port, &mut Change::default());
                a.ports.insert((fam.family, name.clone()), port);
            }
            a.nodes.insert(fam.family, (fam.node.clone(), np));
        }
        a
    }

    /// Every VIP on kube-ipvs0 kproxy wants.
    pub fn vips(&self) -> BTreeSet<IpAddr> {
        self.vip_refs.keys().copied().collect()
    }

    /// A partial sync is possible: the same families with the same node settings.
    pub fn can_partial(&self, desired: &DesiredState) -> bool {
        desired.families.len() == self.nodes.len()
            && desired
                .families
                .iter()
                .all(|f| self.nodes.get(&f.family).is_some_and(|(n, _)| *n == f.node))
    }

    fn count(&mut self, fam: IpFamily, port: &Port, ch: &mut Change) {
        for ip in &port.plan.vips {
            if incref(&mut self.vip_refs, ip) {
                ch.vip_add.push(*ip);
            }
        }
        for e in &port.elements {
            let k = (fam, e.clone());
            if incref(&mut self.elem_refs, &k) {
                ch.elem_add.push(k);
            }
        }
    }

    fn uncount(&mut self, fam: IpFamily, port: &Port, ch: &mut Change) {
        for ip in &port.plan.vips {
            if decref(&mut self.vip_refs, ip) {
                ch.vip_del.push(*ip);
            }
        }
        for e in &port.elements {
            let k = (fam, e.clone());
            if decref(&mut self.elem_refs, &k) {
                ch.elem_del.push(k);
            }
        }
    }

    /// Re-plans the ports `changes` names and says what to do; the ports' shares are updated.
    pub fn change(
        &mut self,
        desired: &DesiredState,
        changes: &ChangeSet,
        scheduler: &str,
    ) -> Change {
        let mut ch = Change::default();
        for fam in &desired.families {
            let np = self
                .nodes
                .get(&fam.family)
                .map(|n| n.1.clone())
                .unwrap_or_default();
            for name in &changes.services {
                let key = (fam.family, name.clone());
                if let Some(old) = self.ports.remove(&key) {
                    ch.touched
                        .extend(old.plan.services.iter().map(|(s, _)| s.key()));
                    self.uncount(fam.family, &old, &mut ch);
                }
                let Some(sp) = fam.services.get(name) else {
                    continue;
                };
                let port = Port {
                    plan: plan::port_plan(sp, scheduler, &np),
                    elements: nft::elements_of_port(sp),
                };
                for (svc, dests) in &port.plan.services {
                    ch.touched.insert(svc.key());
                    ch.wanted.insert(svc.key(), (svc.clone(), dests.clone()));
                }
                self.count(fam.family, &port, &mut ch);
                self.ports.insert(key, port);
            }
        }
        // Released by one port and taken by another (or the same, re-planned): no change.
        net_out(&mut ch.vip_add, &mut ch.vip_del);
        net_out(&mut ch.elem_add, &mut ch.elem_del);
        ch
    }

    /// How many IPVS operations `ch` takes against this table (benchmarks time the pure part
    /// of a partial sync with it).
    pub fn ops_for(&self, ch: &Change) -> usize {
        let mut draining = BTreeSet::new();
        super::diff::diff(&ch.wanted, &self.current(&ch.touched), &mut draining).len()
    }

    /// The current table's entries for `keys` (the diff's other side).
    pub fn current(&self, keys: &BTreeSet<ServiceKey>) -> Table {
        keys.iter()
            .filter_map(|k| self.table.get(k).map(|v| (*k, v.clone())))
            .collect()
    }
}
