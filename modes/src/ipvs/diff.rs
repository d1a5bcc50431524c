//! The minimal list of IPVS operations from what the kernel holds of ours to the plan, and
//! graceful termination: a real server that leaves a TCP service is first given weight 0 (no
//! new connections) and deleted once it has no connections left; UDP and SCTP ones go at once.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::IpAddr,
};

use kproxy_dataplane::ipvs::{Destination, Op, Protocol, SVC_F_HASHED, Service, ServiceKey};

/// Virtual servers with their real servers, as the kernel holds them (or the plan wants them).
pub type Table = BTreeMap<ServiceKey, (Service, Vec<Destination>)>;

/// A real server being drained: its service, address and port.
pub type Draining = (ServiceKey, IpAddr, u16);

/// The operations from `current` to `wanted`, in an order the kernel accepts (a service before
/// its servers). `draining` is updated: servers given weight 0 join it, servers wanted again
/// or gone with their service leave it.
pub fn diff(wanted: &Table, current: &Table, draining: &mut BTreeSet<Draining>) -> Vec<Op> {
    let mut ops = Vec::new();
    for (key, (svc, dests)) in wanted {
        match current.get(key) {
            None => {
                ops.push(Op::AddService(svc.clone()));
                ops.extend(dests.iter().map(|d| Op::AddServer(*key, d.clone())));
            }
            Some((have, have_dests)) => {
                if !same_settings(svc, have) {
                    ops.push(Op::EditService(svc.clone()));
                }
                diff_servers(key, dests, have_dests, draining, &mut ops);
            }
        }
    }
    for key in current.keys().filter(|k| !wanted.contains_key(k)) {
        ops.push(Op::DeleteService(*key));
        draining.retain(|(k, _, _)| k != key);
    }
    ops
}

/// Scheduler, persistence and its timeout: what `ipvsadm -E` changes.
fn same_settings(want: &Service, have: &Service) -> bool {
    let flags = |s: &Service| s.flags & !SVC_F_HASHED;
    want.scheduler == have.scheduler
        && flags(want) == flags(have)
        && want.timeout == have.timeout
        && want.netmask == have.netmask
}

fn diff_servers(
    key: &ServiceKey,
    want: &[Destination],
    have: &[Destination],
    draining: &mut BTreeSet<Draining>,
    ops: &mut Vec<Op>,
) {
    let find = |list: &[Destination], d: &Destination| {
        list.iter()
            .find(|x| (x.address, x.port) == (d.address, d.port))
            .cloned()
    };
    for d in want {
        match find(have, d) {
            None => ops.push(Op::AddServer(*key, d.clone())),
            Some(h) if h.weight != d.weight || h.forward != d.forward => {
                draining.remove(&(*key, d.address, d.port));
                ops.push(Op::EditServer(*key, d.clone()));
            }
            Some(_) => {}
        }
    }
    for h in have.iter().filter(|h| find(want, h).is_none()) {
        let id = (*key, h.address, h.port);
        if key.protocol != Protocol::Tcp {
            draining.remove(&id);
            ops.push(Op::DeleteServer(*key, h.clone()));
        } else if draining.insert(id) && h.weight != 0 {
            // Deleted by [`drained`] once the kernel lists it without connections.
            let quiesced = Destination {
                weight: 0,
                ..h.clone()
            };
            ops.push(Op::EditServer(*key, quiesced));
        }
    }
}

/// The deletions of drained servers: those of `draining` listed (in `listed`, a service's
/// servers with their connection counts) without connections, or no longer listed.
pub fn drained(
    draining: &mut BTreeSet<Draining>,
    listed: &BTreeMap<ServiceKey, Vec<Destination>>,
) -> Vec<Op> {
    let mut ops = Vec::new();
    draining.retain(|(key, addr, port)| {
        let Some(dests) = listed.get(key) else {
            return false; // the service is gone
        };
        match dests.iter().find(|d| (d.address, d.port) == (*addr, *port)) {
            None => false,
            Some(d) if d.active_conns + d.inactive_conns == 0 => {
                ops.push(Op::DeleteServer(*key, d.clone()));
                false
            }
            Some(_) => true,
        }
    });
    ops
}

/// `current` with `ops` applied where they succeeded (`ok[i]`): the cache of the next sync.
pub fn apply_to(current: &mut Table, ops: &[Op], ok: &[bool]) {
    for (op, _) in ops.iter().zip(ok).filter(|(_, ok)| **ok) {
        match op {
            Op::AddService(s) | Op::EditService(s) => {
                let entry = current
                    .entry(s.key())
                    .or_insert_with(|| (s.clone(), Vec::new()));
                entry.0 = s.clone();
            }
            Op::DeleteService(k) => {
                current.remove(k);
            }
            Op::AddServer(k, d) | Op::EditServer(k, d) => {
                if let Some((_, dests)) = current.get_mut(k) {
                    dests.retain(|x| (x.address, x.port) != (d.address, d.port));
                    dests.push(d.clone());
                    dests.sort_by_key(|x| (x.address, x.port));
                }
            }
            Op::DeleteServer(k, d) => {
                if let Some((_, dests)) = current.get_mut(k) {
                    dests.retain(|x| (x.address, x.port) != (d.address, d.port));
                }
            }
        }
    }
}
