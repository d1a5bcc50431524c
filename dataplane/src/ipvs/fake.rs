//! [`FakeIpvs`]: an in-memory IPVS table that keeps the kernel's rules (a service exists once,
//! a real server needs its service, deleting what is not there fails), so that a mode's syncs
//! can be tested on a kernel without IPVS, and a test can play another program changing it.

use std::collections::BTreeMap;

use nix::errno::Errno;

use super::{Destination, IpvsError, IpvsTable, Op, SVC_F_HASHED, Service, ServiceKey};
use crate::netlink::NetlinkError;

#[derive(Clone, Debug, Default)]
pub struct FakeIpvs {
    pub services: BTreeMap<ServiceKey, (Service, Vec<Destination>)>,
    /// Ops applied so far, in order (what a test asserts a sync's cost with).
    pub log: Vec<Op>,
    /// Ops that fail with this errno (a test's injected fault), matched by equality.
    pub failing: Vec<(Op, i32)>,
}

fn err(op: &'static str, errno: Errno) -> IpvsError {
    IpvsError::Netlink(NetlinkError::kernel(op, errno as i32))
}

impl FakeIpvs {
    fn apply_one(&mut self, op: &Op) -> Result<(), IpvsError> {
        if let Some((_, errno)) = self.failing.iter().find(|(o, _)| o == op) {
            return Err(IpvsError::Netlink(NetlinkError::kernel("injected", *errno)));
        }
        match op {
            Op::AddService(s) => {
                if self.services.contains_key(&s.key()) {
                    return Err(err("add service", Errno::EEXIST));
                }
                let mut s = s.clone();
                s.flags |= SVC_F_HASHED;
                self.services.insert(s.key(), (s, Vec::new()));
            }
            Op::EditService(s) => {
                let entry = self.services.get_mut(&s.key());
                let (svc, _) = entry.ok_or_else(|| err("edit service", Errno::ESRCH))?;
                *svc = s.clone();
                svc.flags |= SVC_F_HASHED;
            }
            Op::DeleteService(k) => {
                self.services
                    .remove(k)
                    .ok_or_else(|| err("delete service", Errno::ESRCH))?;
            }
            Op::AddServer(k, d) => {
                let (_, dests) = self.service(k, "add server")?;
                if dests.iter().any(|x| same(x, d)) {
                    return Err(err("add server", Errno::EEXIST));
                }
                dests.push(d.clone());
            }
            Op::EditServer(k, d) => {
                let (_, dests) = self.service(k, "edit server")?;
                let x = dests.iter_mut().find(|x| same(x, d));
                let x = x.ok_or_else(|| err("edit server", Errno::ENOENT))?;
                x.weight = d.weight;
                x.upper_threshold = d.upper_threshold;
                x.lower_threshold = d.lower_threshold;
            }
            Op::DeleteServer(k, d) => {
                let (_, dests) = self.service(k, "delete server")?;
                let before = dests.len();
                dests.retain(|x| !same(x, d));
                if dests.len() == before {
                    return Err(err("delete server", Errno::ENOENT));
                }
            }
        }
        Ok(())
    }

    fn service(
        &mut self,
        k: &ServiceKey,
        op: &'static str,
    ) -> Result<&mut (Service, Vec<Destination>), IpvsError> {
        self.services
            .get_mut(k)
            .ok_or_else(|| err(op, Errno::ESRCH))
    }
}

fn same(a: &Destination, b: &Destination) -> bool {
    (a.address, a.port) == (b.address, b.port)
}

impl IpvsTable for FakeIpvs {
    fn list_services(&mut self) -> Result<Vec<Service>, IpvsError> {
        Ok(self.services.values().map(|(s, _)| s.clone()).collect())
    }

    fn list_servers(&mut self, key: &ServiceKey) -> Result<Vec<Destination>, IpvsError> {
        Ok(self.service(key, "list servers")?.1.clone())
    }

    fn apply(&mut self, ops: &[Op]) -> Vec<Result<(), IpvsError>> {
        ops.iter()
            .map(|op| {
                self.log.push(op.clone());
                self.apply_one(op)
            })
            .collect()
    }
}
