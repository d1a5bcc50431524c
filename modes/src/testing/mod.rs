//! What tests of modes and of what drives them share: [`fixtures`] (desired states shaped like
//! the conformance cases) and [`RecordingMode`].
//!
//! A recording [`Mode`] for tests of what drives modes (the agent loop, health, metrics): it
//! records every sync and can be told to fail or to report drift. Shipped in the crate, like
//! knftables' fake, so every test crate uses this one instead of writing its own.

pub mod fixtures;

/// Compares `text` with the golden file at `path`, or writes it there when
/// `KPROXY_UPDATE_GOLDEN` is set (every mode's golden tests use this one comparison).
pub fn assert_golden(path: &std::path::Path, text: &str) {
    if std::env::var_os("KPROXY_UPDATE_GOLDEN").is_some() {
        std::fs::create_dir_all(path.parent().expect("a file in a folder")).expect("golden dir");
        std::fs::write(path, text).expect("writing the golden file");
        return;
    }
    let want = std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("{}: {e} (set KPROXY_UPDATE_GOLDEN=1)", path.display()));
    assert!(
        want == text,
        "{} differs from the rendered text:\n{text}",
        path.display()
    );
}

use std::sync::{Arc, Mutex, MutexGuard};

use tokio::time::Instant;

use crate::{
    Drift, Mode, ModeContext, ModeError, SyncError, SyncStats,
    model::{ChangeSet, DesiredState},
};

/// One sync the mode was asked for.
#[derive(Clone, Debug)]
pub struct SyncCall {
    pub at: Instant,
    pub changes: ChangeSet,
    /// Service ports in the desired state, all families.
    pub service_ports: usize,
}

#[derive(Default)]
struct Shared {
    calls: Vec<SyncCall>,
    /// Syncs still to fail.
    fail_next: u32,
    /// Every sync fails while set.
    failing: bool,
    /// What the next drift check reports.
    drift: Vec<Drift>,
    /// A sync failed or drift was reported since the last success: the next one is full.
    distrust: bool,
    /// What `refused` reports.
    refused: Vec<crate::model::ServicePortName>,
    /// The agent's drift signal, from [`Mode::start`].
    signal: Option<Arc<tokio::sync::Notify>>,
}

/// Clones share one record, so a test keeps a handle while the agent owns the mode.
#[derive(Clone, Default)]
pub struct RecordingMode(Arc<Mutex<Shared>>);

impl RecordingMode {
    fn shared(&self) -> MutexGuard<'_, Shared> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Every sync so far.
    pub fn calls(&self) -> Vec<SyncCall> {
        self.shared().calls.clone()
    }

    /// The Service port count of each sync so far.
    pub fn port_counts(&self) -> Vec<usize> {
        self.shared()
            .calls
            .iter()
            .map(|c| c.service_ports)
            .collect()
    }

    /// The next `n` syncs fail.
    pub fn fail_next(&self, n: u32) {
        self.shared().fail_next = n;
    }

    /// Every sync fails until this is called with `false`.
    pub fn set_failing(&self, failing: bool) {
        self.shared().failing = failing;
    }

    /// The next drift check reports these.
    pub fn drift_next(&self, found: Vec<Drift>) {
        self.shared().drift = found;
    }

    /// From now on the mode reports these ports as refused by the kernel.
    pub fn set_refused(&self, ports: Vec<crate::model::ServicePortName>) {
        self.shared().refused = ports;
    }

    /// As a kernel notification would: the agent is told to check for drift now.
    pub fn signal_drift(&self, found: Vec<Drift>) {
        let signal = {
            let mut s = self.shared();
            s.drift = found;
            s.signal.clone()
        };
        if let Some(n) = signal {
            n.notify_one();
        }
    }
}

impl Mode for RecordingMode {
    fn name(&self) -> &'static str {
        "recording"
    }

    fn sync(
        &mut self,
        desired: &DesiredState,
        changes: &ChangeSet,
    ) -> Result<SyncStats, SyncError> {
        let service_ports = desired.families.iter().map(|f| f.services.len()).sum();
        let mut s = self.shared();
        s.calls.push(SyncCall {
            at: Instant::now(),
            changes: changes.clone(),
            service_ports,
        });
        let full = changes.full || s.distrust;
        if s.failing || s.fail_next > 0 {
            s.fail_next = s.fail_next.saturating_sub(1);
            s.distrust = true;
            let error = ModeError::Unavailable {
                mode: "recording",
                reason: "injected failure".into(),
            };
            return Err(SyncError { full, error });
        }
        s.distrust = false;
        Ok(SyncStats {
            full,
            service_ports,
            endpoints: 0,
        })
    }

    fn start(&mut self, ctx: &ModeContext) -> Result<(), ModeError> {
        self.shared().signal = Some(ctx.drift.clone());
        Ok(())
    }

    fn check_drift(&mut self) -> Result<Vec<Drift>, ModeError> {
        let mut s = self.shared();
        let found = std::mem::take(&mut s.drift);
        s.distrust |= !found.is_empty();
        Ok(found)
    }

    fn refused(&self) -> Vec<crate::model::ServicePortName> {
        self.shared().refused.clone()
    }

    fn cleanup(&mut self) -> Result<Vec<String>, ModeError> {
        Ok(Vec::new())
    }
}
