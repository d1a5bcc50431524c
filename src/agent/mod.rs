//! The agent: feeds source events to the tracker and syncs the mode, no more often than
//! minSyncPeriod, at least every syncPeriod, retrying a failed sync as a full one.
//!
//! (A bounded-frequency runner with burst, metrics and health hooks replaces this loop later;
//! its contract stays: coalesce changes, never sync before every initial list is in.)

use std::{sync::Arc, time::Duration};

use kproxy_modes::{Drift, Mode, ModeContext, ModeError, SyncStats, model::ChangeSet};
use tokio::{
    sync::{Notify, mpsc},
    time::{Instant, sleep_until},
};
use tracing::{error, info, warn};

use crate::{source::Event, tracker::Tracker};

pub mod observe;
pub use observe::Observer;

const MAX_RETRY: Duration = Duration::from_secs(30);

#[derive(Clone, Copy, Debug)]
pub struct Periods {
    pub sync: Duration,
    pub min_sync: Duration,
}

/// Runs until the event channel closes or `shutdown` resolves.
pub async fn run(
    tracker: Tracker,
    events: mpsc::Receiver<Event>,
    mode: Box<dyn Mode>,
    periods: Periods,
    shutdown: impl std::future::Future<Output = ()>,
) {
    run_observed(
        tracker,
        events,
        mode,
        periods,
        shutdown,
        Observer::default(),
    )
    .await;
}

/// The sync loop's own state between iterations.
struct Schedule {
    pending: ChangeSet,
    /// Something arrived since the last sync.
    wanted: bool,
    not_before: Instant,
    next_periodic: Instant,
    failures: u32,
    synced_once: bool,
}

/// [`run`], reporting queued changes, syncs and programmed states to `observer` (health,
/// metrics, Service health checks). The mode is started first; a mode that cannot start ends
/// the loop at once (logged), since nothing could be programmed.
pub async fn run_observed(
    mut tracker: Tracker,
    mut events: mpsc::Receiver<Event>,
    mut mode: Box<dyn Mode>,
    periods: Periods,
    shutdown: impl std::future::Future<Output = ()>,
    mut observer: Observer,
) {
    tokio::pin!(shutdown);
    let drift = Arc::new(Notify::new());
    let ctx = ModeContext {
        runtime: tokio::runtime::Handle::current(),
        drift: drift.clone(),
    };
    if let Err(e) = mode.start(&ctx) {
        error!(error = %e, "the proxy mode could not start");
        return;
    }
    let mut s = Schedule {
        pending: ChangeSet::default(),
        wanted: false,
        not_before: Instant::now(),
        next_periodic: Instant::now() + periods.sync,
        failures: 0,
        synced_once: false,
    };
    loop {
        let due = if s.wanted {
            s.not_before
        } else {
            s.next_periodic.max(s.not_before)
        };
        tokio::select! {
            ev = events.recv() => match ev {
                Some(ev) => {
                    observer.event(&ev);
                    tracker.apply(ev);
                    while let Ok(more) = events.try_recv() {
                        observer.event(&more);
                        tracker.apply(more);
                    }
                    observer.queued(&tracker);
                    s.wanted = true;
                }
                None => break,
            },
            _ = drift.notified() => {
                if check_drift(mode.as_mut(), &mut observer) {
                    s.wanted = true;
                }
            },
            _ = sleep_until(due) => {
                // The periodic sync is also the periodic drift check; a drift found makes the
                // sync below a full one (the mode no longer trusts its cache).
                if !s.wanted {
                    check_drift(mode.as_mut(), &mut observer);
                }
                s.wanted = false;
                sync_once(&mut tracker, mode.as_mut(), periods, &mut s, &mut observer).await;
            },
            _ = &mut shutdown => {
                info!("shutting down; programmed rules stay in place");
                break;
            }
        }
    }
    mode.shutdown();
    observer.shutdown().await;
}

/// nodePortAddresses CIDRs resolve against the node's addresses, read before each update (a
/// change is a node-wide change). On failure the last addresses read stay in use.
fn refresh_local_addresses(tracker: &mut Tracker) {
    if tracker.needs_local_addresses() {
        match kproxy_dataplane::addrs::local_addresses(None) {
            Ok(addrs) => tracker.set_local_addresses(addrs),
            Err(e) => {
                warn!(error = %e, "cannot read local addresses; NodePorts keep the last known")
            }
        }
    }
}

/// One sync: takes the tracker's state and hands it to the mode.
async fn sync_once(
    tracker: &mut Tracker,
    mode: &mut dyn Mode,
    periods: Periods,
    s: &mut Schedule,
    observer: &mut Observer,
) {
    refresh_local_addresses(tracker);
    let Some((state, changes)) = tracker.update() else {
        s.next_periodic = Instant::now() + periods.sync;
        return;
    };
    observer.taken(state);
    s.pending.merge(changes);
    let started = Instant::now();
    let result = blocking(|| mode.sync(state, &s.pending));
    let took = started.elapsed();
    s.not_before = Instant::now() + periods.min_sync;
    s.next_periodic = Instant::now() + periods.sync;
    observer.mode_counters(mode.counters());
    observer.mode_gauges(mode.gauges());
    observer.refused(mode.refused());
    match result {
        Ok(stats) => {
            s.failures = 0;
            log_sync(&stats, took, &mut s.synced_once);
            s.pending = ChangeSet::default();
            observer.synced(state, stats.full, took).await;
        }
        Err(e) => {
            observer.failed(e.full, took);
            s.failures += 1;
            let retry = retry_delay(s.failures, periods.min_sync);
            error!(error = %e.error, full = e.full, retry_in = ?retry, "sync failed; the next sync is a full one");
            // The mode no longer trusts its cache, and the retry asks for everything too; the
            // changes stay queued for it.
            s.pending.full = true;
            s.not_before = Instant::now() + retry;
            s.wanted = true;
        }
    }
}

/// Asks the mode what drifted; logs and counts each finding. True when something did.
fn check_drift(mode: &mut dyn Mode, observer: &mut Observer) -> bool {
    let found: Vec<Drift> = match blocking(|| mode.check_drift()) {
        Ok(found) => found,
        Err(e) => {
            warn!(error = %e, "checking the kernel for drift failed");
            return false;
        }
    };
    for d in &found {
        warn!(kind = d.kind, what = %d.what, "kernel state drifted from what kproxy programmed; repairing with a full sync");
    }
    observer.drifted(&found);
    !found.is_empty()
}

/// Mode syncs block (they run `nft` and the like); on a multi-threaded runtime, let other tasks
/// (health, metrics) move to another worker meanwhile. Tests run on a paused current-thread
/// runtime, where the call simply runs inline.
fn blocking<T>(f: impl FnOnce() -> T) -> T {
    use tokio::runtime::{Handle, RuntimeFlavor};
    match Handle::current().runtime_flavor() {
        RuntimeFlavor::MultiThread => tokio::task::block_in_place(f),
        _ => f(),
    }
}

fn log_sync(stats: &SyncStats, took: Duration, synced_once: &mut bool) {
    if !*synced_once {
        *synced_once = true;
        info!(full = stats.full, service_ports = stats.service_ports, endpoints = stats.endpoints, took = ?took, "initial sync complete");
    } else {
        info!(full = stats.full, service_ports = stats.service_ports, took = ?took, "synced");
    }
}

/// Exponential backoff from minSyncPeriod (at least 1 s) up to 30 s.
fn retry_delay(failures: u32, min_sync: Duration) -> Duration {
    let base = min_sync.max(Duration::from_secs(1));
    base.saturating_mul(1 << failures.min(5).saturating_sub(1))
        .min(MAX_RETRY)
}

/// Removes everything the mode owns (`--cleanup`), logging each removal.
pub fn cleanup(mode: &mut dyn Mode) -> Result<(), ModeError> {
    let removed = mode.cleanup()?;
    for what in &removed {
        warn!(mode = mode.name(), removed = %what, "removed");
    }
    warn!(
        mode = mode.name(),
        count = removed.len(),
        "removed everything this mode programmed"
    );
    Ok(())
}
