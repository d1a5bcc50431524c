//! The nftables mode: upstream kube-proxy's nftables data plane, with endpoint selection through
//! sharded slot maps instead of per-endpoint chains and per-Service anonymous sets, so that a
//! full sync scales linearly. See docs/modes/nftables.md.

pub mod drift;
pub mod names;
pub mod render;
pub mod view;

use kproxy_dataplane::{
    conntrack::ConntrackNetlink,
    nft::{Exec, Family, NftClient, NftError, NftTransaction, SpawnLog},
};

use tokio::time::{Duration, Instant};

use crate::{
    Counter, Drift, Mode, ModeContext, ModeError, SyncError, SyncStats,
    conntrack::ConntrackHygiene,
    model::{ChangeSet, DesiredState},
    registry::ModeSettings,
};

pub use render::{Rendered, render, state::Applied};

const MODE: &str = "nftables";

/// Upstream's nftables proxier forces a full sync at least this often: whatever drift the
/// cheap checks missed is repaired within the hour.
const FULL_SYNC_PERIOD: Duration = Duration::from_secs(3600);

/// The registry's constructor: runs `nft` (in `settings.netns` when set).
pub fn build(settings: &ModeSettings) -> Box<dyn Mode> {
    let exec = match &settings.netns {
        Some(ns) => Exec::new().in_netns(ns),
        None => Exec::new(),
    };
    Box::new(NftablesMode::with_exec(exec))
}

/// The nftables [`Mode`]. Owns tables `ip kproxy` and `ip6 kproxy` and nothing else.
pub struct NftablesMode<C: NftClient = Exec> {
    client: C,
    /// What the last successful sync applied; `None` forces the next sync to be full.
    applied: Option<Applied>,
    /// Deletes stale UDP flows after each successful sync; `None` leaves conntrack alone.
    conntrack: Option<ConntrackHygiene>,
    /// When the last full sync succeeded (`None`: never).
    last_full: Option<Instant>,
    /// Watches our tables for drift (only with the real `nft`, see [`NftablesMode::with_exec`]).
    watch: Option<drift::Watch>,
    /// Service ports the kernel refused, left out until they change.
    quarantine: crate::quarantine::Quarantine,
}

impl NftablesMode<Exec> {
    /// Runs `exec`'s nft, and cleans UDP conntrack entries in the
    /// same network namespace.
    pub fn with_exec(exec: Exec) -> Self {
        let netns = exec.netns().clone();
        // Our own `nft` runs are told from other programs' by their pids.
        let ours = SpawnLog::new();
        let exec = exec.with_spawn_log(ours.clone());
        let watch = drift::Watch::new(netns.clone(), ours);
        let conntrack = ConntrackNetlink::new().with_netns(netns);
        let mut mode = Self::new(exec).with_conntrack(ConntrackHygiene::new(conntrack));
        mode.watch = Some(watch);
        mode
    }
}

impl<C: NftClient> NftablesMode<C> {
    pub fn new(client: C) -> Self {
        Self {
            client,
            applied: None,
            conntrack: None,
            last_full: None,
            watch: None,
            quarantine: Default::default(),
        }
    }

    /// Starts watching our tables for changes made by other programs; `notify` is called when
    /// one is found (then [`Mode::check_drift`] names it). [`Mode::start`] calls it.
    pub fn start_watch(&mut self, notify: drift::Notify) -> Result<(), ModeError> {
        match &mut self.watch {
            Some(w) => w
                .start(notify)
                .map_err(|e| ModeError::kernel(MODE, "watching our tables", e)),
            None => Ok(()),
        }
    }

    /// Runs the transaction; a full one with change notifications paused (see `drift`).
    fn apply(&mut self, tx: &NftTransaction, full: bool) -> Result<(), NftError> {
        let paused = full && self.watch.as_mut().is_some_and(drift::Watch::pause);
        let result = self.client.run(tx);
        if paused && let Some(w) = &mut self.watch {
            w.resume();
        }
        result
    }

    /// Cleans stale UDP conntrack entries after each successful sync (see `crate::conntrack`).
    pub fn with_conntrack(mut self, hygiene: ConntrackHygiene) -> Self {
        self.conntrack = Some(hygiene);
        self
    }

    pub fn conntrack(&self) -> Option<&ConntrackHygiene> {
        self.conntrack.as_ref()
    }

    /// True when the next sync will replace the tables whatever the change set says.
    pub fn needs_full_sync(&self) -> bool {
        self.applied.is_none()
    }

    /// What the last successful sync applied (`None` before it, or after a failure).
    pub fn applied(&self) -> Option<&Applied> {
        self.applied.as_ref()
    }

    pub fn client(&self) -> &C {
        &self.client
    }

    /// Our tables as `nft list table` prints them (both families; a missing one is left out).
    pub fn dump(&self) -> Result<String, ModeError> {
        let mut out = String::new();
        for family in [Family::Ip, Family::Ip6] {
            match self.client.list_table(family, names::TABLE) {
                Ok(text) => out.push_str(&text),
                Err(e) if e.is_not_found() => {}
                Err(e) => return Err(ModeError::kernel(MODE, "listing our tables", e)),
            }
        }
        Ok(out)
    }

    /// After a successful apply only: the new rules must be in place before stale flows go, or
    /// the next packet would recreate the same flow.
    fn clean_conntrack(&mut self, desired: &DesiredState, changes: &ChangeSet, full: bool) {
        if let Some(hygiene) = &mut self.conntrack {
            hygiene.after_apply(desired, changes, full);
        }
    }
}

impl<C: NftClient + Send> Mode for NftablesMode<C> {
    fn name(&self) -> &'static str {
        MODE
    }

    /// Starts the change monitor. A monitor that cannot start is logged, not fatal: the
    /// periodic check still finds missing tables and rules, only not single elements.
    fn start(&mut self, ctx: &ModeContext) -> Result<(), ModeError> {
        let drift = ctx.drift.clone();
        if let Err(e) = self.start_watch(std::sync::Arc::new(move || drift.notify_one())) {
            tracing::warn!(error = %e, "cannot watch the nftables tables for changes; relying on the periodic check");
        }
        Ok(())
    }

    /// Drains the change monitor and counts the fixed chains' rules; anything found makes the
    /// next sync full.
    fn check_drift(&mut self) -> Result<Vec<Drift>, ModeError> {
        let Some(w) = &mut self.watch else {
            return Ok(Vec::new());
        };
        let found = w
            .check(self.applied.as_ref())
            .map_err(|e| ModeError::kernel(MODE, "checking our tables for drift", e))?;
        if !found.is_empty() {
            self.applied = None;
        }
        Ok(found)
    }

    fn shutdown(&mut self) {
        if let Some(w) = &mut self.watch {
            w.stop();
        }
    }

    fn sync(
        &mut self,
        desired: &DesiredState,
        changes: &ChangeSet,
    ) -> Result<SyncStats, SyncError> {
        if self
            .last_full
            .is_some_and(|t| t.elapsed() >= FULL_SYNC_PERIOD)
        {
            self.applied = None;
        }
        self.quarantine.release_changed(changes);
        let filtered = self.quarantine.filter(desired);
        let desired = filtered.as_ref().unwrap_or(desired);
        // Taken, not borrowed: on failure the cache is gone anyway (the next sync is full).
        let mut rendered = render::render_owned(desired, changes, self.applied.take());
        let full = rendered.full;
        if !rendered.tx.is_empty()
            && let Err(e) = self.apply(&rendered.tx, full)
        {
            // The kernel kept its previous state, which our cache may no longer describe
            // exactly (e.g. after a failed partial sync): start over with a full one. A refused
            // full sync is retried at once without the ports the kernel refuses, if any.
            let error = ModeError::kernel(MODE, "applying the transaction", e);
            let client = &self.client;
            let check = |subset: &DesiredState| {
                let tx = render::render(subset, &ChangeSet::full(), None).tx;
                client.check(&tx).is_ok()
            };
            if !full || self.quarantine.isolate(desired, check).is_empty() {
                return Err(SyncError { full, error });
            }
            let filtered = self
                .quarantine
                .filter(desired)
                .unwrap_or_else(|| desired.clone());
            rendered = render::render_owned(&filtered, &ChangeSet::full(), None);
            self.apply(&rendered.tx, true).map_err(|e| SyncError {
                full,
                error: ModeError::kernel(MODE, "applying the transaction", e),
            })?;
        }
        self.applied = Some(rendered.applied);
        if full {
            self.last_full = Some(Instant::now());
        }
        self.clean_conntrack(desired, changes, full);
        Ok(SyncStats::of(desired, full))
    }

    fn kernel_view(&self) -> Result<crate::view::KernelView, ModeError> {
        view::read(&self.client)
    }

    fn cleanup(&mut self) -> Result<Vec<String>, ModeError> {
        self.applied = None;
        let mut removed = Vec::new();
        for family in [Family::Ip, Family::Ip6] {
            match self.client.list_table(family, names::TABLE) {
                Ok(_) => removed.push(format!("nftables table {family} {}", names::TABLE)),
                Err(e) if e.is_not_found() => {}
                Err(e) => return Err(ModeError::kernel(MODE, "listing our tables", e)),
            }
        }
        let mut tx = NftTransaction::new();
        // `add` first so `delete` cannot fail on a missing table: only our tables are named.
        for family in [Family::Ip, Family::Ip6] {
            tx.add_table(family, names::TABLE, None);
            tx.delete_table(family, names::TABLE);
        }
        self.client
            .run(&tx)
            .map_err(|e| ModeError::kernel(MODE, "deleting our tables", e))?;
        Ok(removed)
    }

    fn refused(&self) -> Vec<crate::model::ServicePortName> {
        self.quarantine.ports()
    }

    fn counters(&self) -> Vec<Counter> {
        let quarantined = Counter {
            name: "nftables_quarantined_ports",
            help: "Service ports whose rules the kernel refused, left out until they changed.",
            value: self.quarantine.total(),
        };
        let Some(ct) = &self.conntrack else {
            return vec![quarantined];
        };
        vec![
            quarantined,
            Counter {
                name: "conntrack_deleted",
                help: "Stale UDP conntrack entries deleted after syncs.",
                value: ct.deleted(),
            },
            Counter {
                name: "conntrack_failures",
                help: "Conntrack reads or deletes that failed (logged; never a sync failure).",
                value: ct.failures(),
            },
        ]
    }
}
