//! The contract every data plane keeps, whatever its kernel offers (atomic nftables
//! transactions, per-table iptables-restore, one netlink call per IPVS object, a user-space
//! relay):
//!
//! - **Converge.** [`Mode::sync`] makes the kernel match the desired state. It may touch only
//!   what the change set names (a partial sync), or replace everything it owns (a full sync).
//!   It says which it did, in [`SyncStats::full`] or [`SyncError::full`]: that is the one truth
//!   the metrics read. The mode owns its policy for periodic full syncs.
//! - **Distrust after failure.** After a failed or interrupted sync, nothing the mode cached
//!   about the kernel is trusted: the next sync is full. A mode that cannot apply atomically
//!   leaves each Service either as before or as desired, never half of one.
//! - **Drift is the mode's to find.** [`Mode::check_drift`] is a cheap check of the kernel
//!   against what the mode applied (never a listing of a huge table); the agent runs it every
//!   syncPeriod and whenever the mode signals [`ModeContext::drift`]. What it finds is named,
//!   logged and counted by the agent, and repaired by the next sync, which is full.
//! - **Own only its objects.** Set-up, cleanup and syncs touch the mode's own tables, chains,
//!   links and virtual servers, never anyone else's.
//!
//! Lifecycle: [`Mode::start`] (node set-up, tasks, kernel watches) once before the first sync,
//! then syncs and drift checks, then [`Mode::shutdown`]. [`Mode::cleanup`] removes everything
//! the mode owns (`--cleanup`, or another mode starting on the node). [`Mode::kernel_view`] reads
//! back what is programmed, by meaning, for `kproxy debug dump --kernel`.

use std::sync::Arc;

use crate::{
    error::ModeError,
    model::{ChangeSet, DesiredState},
    view::KernelView,
};

/// Counts a successful sync reports, for logs and metrics.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SyncStats {
    /// The mode replaced (or re-checked) everything it owns, not only the changed ports.
    pub full: bool,
    pub service_ports: usize,
    pub endpoints: usize,
}

impl SyncStats {
    /// The counts of `desired`, for a sync that was `full` or not.
    pub fn of(desired: &DesiredState, full: bool) -> Self {
        let ports = desired.families.iter().flat_map(|f| f.services.values());
        SyncStats {
            full,
            service_ports: ports.clone().count(),
            endpoints: ports
                .map(|sp| sp.endpoints.cluster.len() + sp.endpoints.local.len())
                .sum(),
        }
    }
}

/// A failed sync: the error and whether the attempt was a full one.
#[derive(Debug, thiserror::Error)]
#[error("{error}")]
pub struct SyncError {
    pub full: bool,
    #[source]
    pub error: ModeError,
}

/// Something of the mode's found changed or missing in the kernel behind its back.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Drift {
    /// The kind of object (`table`, `chain`, `rule`, `map element`, ...): a metric label.
    pub kind: &'static str,
    /// Which one, and what happened to it, for the log.
    pub what: String,
}

/// A cumulative counter a mode keeps for `/metrics` (exported as
/// `kproxy_mode_events_total{counter="<name>"}`; name it without `_total`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Counter {
    pub name: &'static str,
    pub help: &'static str,
    pub value: u64,
}

/// A gauge a mode keeps for `/metrics` under a name of upstream's (e.g. iptables mode's
/// `kubeproxy_sync_proxy_rules_iptables_total{table="nat"}`); gauges of one name form one
/// family, told apart by their label.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Gauge {
    /// The full metric name.
    pub name: &'static str,
    pub help: &'static str,
    /// One label: its name and value.
    pub label: (&'static str, String),
    pub value: i64,
}

/// What the agent hands a mode at start.
#[derive(Clone)]
pub struct ModeContext {
    /// The agent's runtime: a mode may run its own tasks on it (a relay, a kernel watch).
    pub runtime: tokio::runtime::Handle,
    /// Notified by the mode when it learns of drift between checks (e.g. from kernel
    /// notifications); the agent then calls [`Mode::check_drift`].
    pub drift: Arc<tokio::sync::Notify>,
}

/// A data plane. See the module doc for the contract.
pub trait Mode: Send {
    /// The `--proxy-mode` value.
    fn name(&self) -> &'static str;

    /// Node set-up this mode needs (sysctls, links) and its tasks, once before the first sync.
    fn start(&mut self, _ctx: &ModeContext) -> Result<(), ModeError> {
        Ok(())
    }

    /// Converges the kernel to `desired`; `changes` names what changed since the last
    /// successful sync. Blocking: the agent runs it off its async workers.
    fn sync(&mut self, desired: &DesiredState, changes: &ChangeSet)
    -> Result<SyncStats, SyncError>;

    /// A cheap comparison of the kernel with what the mode applied. Anything found makes the
    /// next sync full. Before the first sync, and after a failed one, there is nothing to check.
    fn check_drift(&mut self) -> Result<Vec<Drift>, ModeError> {
        Ok(Vec::new())
    }

    /// Stops the mode's tasks; what it programmed stays in place.
    fn shutdown(&mut self) {}

    /// Removes everything this mode owns, and nothing else; says what it removed.
    fn cleanup(&mut self) -> Result<Vec<String>, ModeError>;

    /// What the kernel holds for this mode, by meaning (destinations and where they lead). Reads
    /// the kernel, possibly slowly: never part of a sync.
    fn kernel_view(&self) -> Result<KernelView, ModeError> {
        Err(ModeError::Unsupported {
            mode: self.name(),
            what: "reading back the kernel",
        })
    }

    /// Service ports the mode left out because the kernel refused their rules (each reported
    /// once as an Event by the agent, while it stays refused).
    fn refused(&self) -> Vec<crate::model::ServicePortName> {
        Vec::new()
    }

    /// The mode's own counters for `/metrics`.
    fn counters(&self) -> Vec<Counter> {
        Vec::new()
    }

    /// The mode's own gauges for `/metrics`, as of the last sync.
    fn gauges(&self) -> Vec<Gauge> {
        Vec::new()
    }
}
