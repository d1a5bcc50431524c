//! Which IPVS virtual servers are kproxy's: those on kube-ipvs0's addresses, and the NodePort
//! ones its nftables table records, outside excludeCIDRs; and their removal (`--cleanup`).

use std::{collections::BTreeSet, net::IpAddr};

use kproxy_dataplane::ipvs::{Ipvs, IpvsError, IpvsTable, Op, Service, ServiceKey};

use super::{DUMMY, IpvsMode, diff::Table, drift, plan, plan::Plan, view};
use crate::ModeError;

impl IpvsMode {
    /// The NodePort virtual servers our nftables tables say kproxy made (node-port addresses x
    /// NodePorts): ours after a restart, when nothing is cached.
    pub(super) fn own_node_ports(&self) -> Result<BTreeSet<ServiceKey>, ModeError> {
        let tables = view::read_tables(self)?;
        let servers = tables
            .iter()
            .flat_map(|t| t.nodeport_servers().collect::<Vec<_>>());
        Ok(servers
            .map(|(ip, p, port)| {
                let svc = Service::new(ip, plan::protocol(p), port, "");
                svc.key()
            })
            .collect())
    }

    /// Ours among the kernel's virtual servers: on a VIP or node-port address kproxy uses or
    /// kube-ipvs0 holds, and outside excludeCIDRs (those are someone else's, never touched).
    pub(super) fn listed(
        &self,
        ipvs: &mut Ipvs,
        plan: &Plan,
        vips: &BTreeSet<IpAddr>,
    ) -> Result<Table, ModeError> {
        let np: BTreeSet<&IpAddr> = plan.nodeport_ips.values().flatten().collect();
        let made = self.own_node_ports()?;
        // A node address's virtual servers are ours when our table says we made them, or the
        // plan wants them (never another NodePort-looking one of someone else's).
        let ours = |k: &ServiceKey| {
            k.fwmark == 0
                && (vips.contains(&k.address)
                    || plan.vips.contains(&k.address)
                    || made.contains(k)
                    || (np.contains(&k.address) && plan.services.contains_key(k)))
                && !self
                    .settings
                    .exclude_cidrs
                    .iter()
                    .any(|c| c.contains(&k.address))
        };
        let listed = ipvs
            .list_services()
            .map_err(|e| Self::kernel("listing virtual servers", e))?;
        let mut table = Table::new();
        for svc in listed.into_iter().filter(|s| ours(&s.key())) {
            let key = svc.key();
            // Servers matter only where the service stays; others are deleted whole.
            let dests = match plan.services.contains_key(&key) {
                true => ipvs
                    .list_servers(&key)
                    .map_err(|e| Self::kernel("listing real servers", e))?,
                false => Vec::new(),
            };
            table.insert(key, (svc, dests));
        }
        Ok(table)
    }
}

/// Deletes our virtual servers (those on kube-ipvs0's addresses, outside excludeCIDRs),
/// kube-ipvs0 and our nftables tables. Nothing when the kernel has no IPVS.
pub(super) fn cleanup(mode: &IpvsMode) -> Result<Vec<String>, ModeError> {
    let mut removed = Vec::new();
    let (_, vips) = mode.addresses()?;
    let node_ports = mode.own_node_ports()?;
    match Ipvs::open(&mode.netns) {
        Ok(mut ipvs) => {
            let listed = ipvs
                .list_services()
                .map_err(|e| IpvsMode::kernel("listing virtual servers", e))?;
            let ours: Vec<Op> = listed
                .iter()
                .map(|s| s.key())
                .filter(|k| k.fwmark == 0 && (vips.contains(&k.address) || node_ports.contains(k)))
                .filter(|k| {
                    !mode
                        .settings
                        .exclude_cidrs
                        .iter()
                        .any(|c| c.contains(&k.address))
                })
                .map(Op::DeleteService)
                .collect();
            if let Some(Err(e)) = ipvs.apply(&ours).into_iter().find(Result::is_err) {
                return Err(IpvsMode::kernel("deleting virtual servers", e));
            }
            if !ours.is_empty() {
                removed.push(format!("{} IPVS virtual servers", ours.len()));
            }
        }
        Err(IpvsError::Unavailable) => {}
        Err(e) => return Err(IpvsMode::kernel("opening IPVS", e)),
    }
    match mode.rtnl().delete_link(DUMMY) {
        Ok(()) => removed.push(format!("link {DUMMY}")),
        Err(e) if e.is_not_found() => {}
        Err(e) => return Err(IpvsMode::kernel("deleting kube-ipvs0", e)),
    }
    removed.extend(drift::delete_tables(&mode.nft)?);
    Ok(removed)
}
