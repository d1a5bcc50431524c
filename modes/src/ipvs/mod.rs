//! The ipvs mode: IPVS virtual servers over generic netlink for load balancing, every VIP on the
//! dummy link `kube-ipvs0`, and filtering and masquerading in a small nftables table of
//! kproxy's own instead of upstream's iptables rules and ipsets. See docs/modes/ipvs.md.
//!
//! A sync plans the whole table in memory (`plan.rs`, cheap), then diffs it against what the
//! kernel holds of ours (`diff.rs`): listed once at a full sync, the cache of the last sync
//! otherwise. Each operation stands alone (IPVS has no transactions): one that fails leaves the
//! other Services programmed, is logged, and makes the next sync full.

mod diff;
mod drift;
pub mod nft;
mod node;
mod own;
pub mod plan;
pub mod state;
#[cfg(test)]
mod tests;
mod view;

use std::{
    collections::{BTreeMap, BTreeSet},
    net::IpAddr,
};

use kproxy_dataplane::{
    ipvs::{Ipvs, IpvsTable, Op, ServiceKey},
    netns::Netns,
    nft::{Exec, NftClient},
    rtnl::Rtnl,
};

use self::{
    diff::{Draining, Table},
    state::Applied,
};
use crate::{
    Counter, Drift, Mode, ModeContext, ModeError, SyncError, SyncStats,
    model::{ChangeSet, DesiredState, IpFamily},
    registry::{IpvsSettings, ModeSettings},
};

pub use node::DUMMY;

const MODE: &str = "ipvs";

/// A full sync (which lists the kernel) at least this often, as the nftables mode: what the
/// cheap drift check cannot see (a real server deleted by someone else) is restored within it.
const FULL_SYNC_PERIOD: std::time::Duration = std::time::Duration::from_secs(3600);

/// The registry's constructor.
pub fn build(settings: &ModeSettings) -> Box<dyn Mode> {
    Box::new(IpvsMode::new(
        Netns::from_name(settings.netns.as_deref()),
        settings.ipvs.clone(),
    ))
}

/// The node's addresses per family.
pub(crate) type Local = BTreeMap<IpFamily, Vec<IpAddr>>;

pub struct IpvsMode {
    netns: Netns,
    settings: IpvsSettings,
    nft: Exec,
    applied: Option<Applied>,
    draining: BTreeSet<Draining>,
    failed_ops: u64,
    /// When the last full sync succeeded: one is forced every [`FULL_SYNC_PERIOD`].
    last_full: Option<tokio::time::Instant>,
}

impl IpvsMode {
    pub fn new(netns: Netns, settings: IpvsSettings) -> Self {
        Self {
            nft: Exec::new().with_netns(netns.clone()),
            netns,
            settings,
            applied: None,
            draining: BTreeSet::new(),
            failed_ops: 0,
            last_full: None,
        }
    }

    fn rtnl(&self) -> Rtnl {
        Rtnl::new().with_netns(self.netns.clone())
    }

    fn kernel(op: &'static str, e: impl std::error::Error + Send + Sync + 'static) -> ModeError {
        ModeError::kernel(MODE, op, e)
    }

    /// The node's addresses per family (not kube-ipvs0's), and kube-ipvs0's.
    fn addresses(&self) -> Result<(Local, BTreeSet<IpAddr>), ModeError> {
        let rtnl = self.rtnl();
        let dummy = match rtnl.link(DUMMY) {
            Ok(l) => Some(l.index),
            Err(e) if e.is_not_found() => None,
            Err(e) => return Err(Self::kernel("reading kube-ipvs0", e)),
        };
        let all = rtnl
            .addresses()
            .map_err(|e| Self::kernel("listing addresses", e))?;
        let (mut local, mut vips) = (BTreeMap::<IpFamily, Vec<IpAddr>>::new(), BTreeSet::new());
        for a in all {
            let link_local = matches!(a.addr, IpAddr::V6(v6) if v6.is_unicast_link_local());
            if Some(a.index) == dummy {
                vips.insert(a.addr);
            } else if !link_local {
                // (IPv6 link-local ones come and go with links and never serve NodePorts.)
                local.entry(IpFamily::of(&a.addr)).or_default().push(a.addr);
            }
        }
        local.values_mut().for_each(|v| v.sort_unstable());
        Ok((local, vips))
    }

    fn sync_inner(
        &mut self,
        desired: &DesiredState,
        changes: &ChangeSet,
    ) -> Result<bool, ModeError> {
        match self.applied.take() {
            Some(a) if !changes.full && a.can_partial(desired) => {
                self.sync_partial(desired, changes, a)?;
                Ok(false)
            }
            _ => self.sync_full(desired).map(|()| true),
        }
    }

    /// Re-plans only the changed ports and reads nothing back: the node's addresses and
    /// kube-ipvs0's are those of the last sync (the drift check notices a node address change;
    /// listing 10k VIPs on every sync would cost more than the change).
    fn sync_partial(
        &mut self,
        desired: &DesiredState,
        changes: &ChangeSet,
        mut a: Applied,
    ) -> Result<(), ModeError> {
        let ch = a.change(desired, changes, plan::scheduler(&self.settings.scheduler));
        let mut ipvs = Ipvs::open(&self.netns).map_err(|e| Self::kernel("opening IPVS", e))?;
        self.change_addresses(&ch.vip_add, true)?;
        let tx = nft::render_changes(&ch.elem_del, &ch.elem_add);
        if !tx.is_empty() {
            (self.nft.run(&tx)).map_err(|e| Self::kernel("applying the nftables table", e))?;
        }
        let ops = diff::diff(&ch.wanted, &a.current(&ch.touched), &mut self.draining);
        let mut failed = self.apply(&mut ipvs, &mut a.table, &ops);
        let drained = self.drain(&mut ipvs)?;
        failed = failed.or(self.apply(&mut ipvs, &mut a.table, &drained));
        self.change_addresses(&ch.vip_del, false)?;
        if let Some(e) = failed {
            return Err(e);
        }
        self.applied = Some(a);
        Ok(())
    }

    /// Plans everything, lists what the kernel holds of ours, and makes it so; the nftables
    /// tables are replaced whole.
    fn sync_full(&mut self, desired: &DesiredState) -> Result<(), ModeError> {
        let (local, have_vips) = self.addresses()?;
        let plan = plan::plan(desired, &self.settings.scheduler, &local);
        let mut ipvs = Ipvs::open(&self.netns).map_err(|e| Self::kernel("opening IPVS", e))?;
        let mut table = self.listed(&mut ipvs, &plan, &have_vips)?;
        node::ensure_dummy(&self.rtnl())?;
        let add: Vec<IpAddr> = plan.vips.difference(&have_vips).copied().collect();
        self.change_addresses(&add, true)?;
        let tx = nft::render_full(desired, &nft::elements(desired, &plan));
        (self.nft.run(&tx)).map_err(|e| Self::kernel("applying the nftables table", e))?;
        let ops = diff::diff(&plan.services, &table, &mut self.draining);
        let mut failed = self.apply(&mut ipvs, &mut table, &ops);
        let drained = self.drain(&mut ipvs)?;
        failed = failed.or(self.apply(&mut ipvs, &mut table, &drained));
        let stale: Vec<IpAddr> = have_vips.difference(&plan.vips).copied().collect();
        self.change_addresses(&stale, false)?;
        if let Some(e) = failed {
            return Err(e);
        }
        let scheduler = plan::scheduler(&self.settings.scheduler);
        let mut applied = Applied::build(desired, scheduler, &plan, table, local);
        applied.rules = drift::rule_counts(&tx);
        self.applied = Some(applied);
        Ok(())
    }

    /// Adds (`add`) or deletes `list` on kube-ipvs0: VIPs come before their virtual servers'
    /// traffic, and go after them. One already there (or already gone) is fine.
    fn change_addresses(&self, list: &[IpAddr], add: bool) -> Result<(), ModeError> {
        let list: Vec<(IpAddr, u8)> = (list.iter())
            .map(|ip| (*ip, if ip.is_ipv4() { 32 } else { 128 }))
            .collect();
        let rtnl = self.rtnl();
        let (results, op) = match add {
            true => (
                rtnl.add_addresses(DUMMY, &list),
                "adding VIPs to kube-ipvs0",
            ),
            false => (
                rtnl.delete_addresses(DUMMY, &list),
                "deleting VIPs from kube-ipvs0",
            ),
        };
        let results = results.map_err(|e| Self::kernel(op, e))?;
        let fine = |r: &Result<(), kproxy_dataplane::rtnl::RtnlError>| match r {
            Ok(()) => true,
            Err(e) => (add && e.is_exists()) || (!add && e.is_not_found()),
        };
        match results.into_iter().find(|r| !fine(r)) {
            Some(Err(e)) => Err(Self::kernel(op, e)),
            _ => Ok(()),
        }
    }

    /// Runs `ops`, updating `table` with those that succeeded; the first failure, if any (each
    /// is logged: the others were applied all the same).
    fn apply(&mut self, ipvs: &mut Ipvs, table: &mut Table, ops: &[Op]) -> Option<ModeError> {
        if ops.is_empty() {
            return None;
        }
        let results = ipvs.apply(ops);
        let ok: Vec<bool> = results.iter().map(Result::is_ok).collect();
        diff::apply_to(table, ops, &ok);
        let mut first = None;
        for (op, r) in ops.iter().zip(results) {
            if let Err(e) = r {
                self.failed_ops += 1;
                tracing::error!(?op, error = %e, "an IPVS operation failed; the next sync is full");
                first = first.or(Some(Self::kernel("applying IPVS changes", e)));
            }
        }
        first
    }

    /// The drained servers to delete (see `diff::drained`): one listing per service that has
    /// one draining, not one of everything.
    fn drain(&mut self, ipvs: &mut Ipvs) -> Result<Vec<Op>, ModeError> {
        if self.draining.is_empty() {
            return Ok(Vec::new());
        }
        let keys: BTreeSet<ServiceKey> = self.draining.iter().map(|d| d.0).collect();
        let mut listed = BTreeMap::new();
        for key in keys {
            match ipvs.list_servers(&key) {
                Ok(dests) => {
                    listed.insert(key, dests);
                }
                Err(e) if e.is_not_found() => {}
                Err(e) => return Err(Self::kernel("listing draining real servers", e)),
            }
        }
        Ok(diff::drained(&mut self.draining, &listed))
    }
}

impl Mode for IpvsMode {
    fn name(&self) -> &'static str {
        MODE
    }

    fn preflight(&self) -> Result<(), ModeError> {
        node::open(&self.netns).map(drop)
    }

    fn start(&mut self, _ctx: &ModeContext) -> Result<(), ModeError> {
        node::start(&self.netns, &self.settings)
    }

    fn sync(
        &mut self,
        desired: &DesiredState,
        changes: &ChangeSet,
    ) -> Result<SyncStats, SyncError> {
        if (self.last_full).is_some_and(|t| t.elapsed() >= FULL_SYNC_PERIOD) {
            self.applied = None;
        }
        let full = changes.full || !(self.applied.as_ref()).is_some_and(|a| a.can_partial(desired));
        match self.sync_inner(desired, changes) {
            Ok(full) => {
                if full {
                    self.last_full = Some(tokio::time::Instant::now());
                }
                Ok(SyncStats::of(desired, full))
            }
            Err(error) => {
                self.applied = None;
                Err(SyncError { full, error })
            }
        }
    }

    fn check_drift(&mut self) -> Result<Vec<Drift>, ModeError> {
        let Some(applied) = &self.applied else {
            return Ok(Vec::new());
        };
        let found = drift::check(self, applied)?;
        if !found.is_empty() {
            self.applied = None;
        }
        Ok(found)
    }

    fn kernel_view(&self) -> Result<crate::view::KernelView, ModeError> {
        view::read(self)
    }

    fn cleanup(&mut self) -> Result<Vec<String>, ModeError> {
        self.applied = None;
        self.draining.clear();
        own::cleanup(self)
    }

    fn counters(&self) -> Vec<Counter> {
        vec![Counter {
            name: "ipvs_failed_operations",
            help: "IPVS operations the kernel refused (each logged; the next sync is full).",
            value: self.failed_ops,
        }]
    }
}
