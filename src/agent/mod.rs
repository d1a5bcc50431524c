//! The agent: feeds source events to the tracker and syncs the mode, no more often than
//! minSyncPeriod, at least every syncPeriod, retrying a failed sync as a full one.
//!
//! (A bounded-frequency runner with burst, metrics and health hooks replaces this loop later;
//! its contract stays: coalesce changes, never sync before every initial list is in.)

use std::time::Duration;

use kproxy_modes::{Mode, ModeError, SyncStats, model::ChangeSet};
use tokio::{
    sync::mpsc,
    time::{Instant, sleep_until},
};
use tracing::{error, info, warn};

use crate::{source::Event, tracker::Tracker};

pub mod observe;
pub use observe::Observer;

/// Upstream's nftables proxier forces a full sync at least this often.
const FULL_SYNC_PERIOD: Duration = Duration::from_secs(3600);
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
    mode: Box<dyn Mode + Send>,
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

/// [`run`], reporting queued changes, syncs and programmed states to `observer` (health,
/// metrics, Service health checks).
pub async fn run_observed(
    mut tracker: Tracker,
    mut events: mpsc::Receiver<Event>,
    mut mode: Box<dyn Mode + Send>,
    periods: Periods,
    shutdown: impl std::future::Future<Output = ()>,
    mut observer: Observer,
) {
    tokio::pin!(shutdown);
    let mut pending = ChangeSet::default();
    let mut wanted = false; // something arrived since the last sync
    let mut not_before = Instant::now();
    let mut next_periodic = Instant::now() + periods.sync;
    let mut last_full = Instant::now();
    let mut failures: u32 = 0;
    let mut synced_once = false;
    loop {
        let due = if wanted {
            not_before
        } else {
            next_periodic.max(not_before)
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
                    wanted = true;
                }
                None => break,
            },
            _ = sleep_until(due) => {
                wanted = false;
                let Some((state, changes)) = tracker.update() else {
                    next_periodic = Instant::now() + periods.sync;
                    continue;
                };
                observer.taken(state);
                pending.merge(changes);
                if last_full.elapsed() >= FULL_SYNC_PERIOD {
                    pending.full = true;
                }
                let started = Instant::now();
                let full = pending.full;
                let result = blocking(|| mode.sync(state, &pending));
                let took = started.elapsed();
                not_before = Instant::now() + periods.min_sync;
                next_periodic = Instant::now() + periods.sync;
                match result {
                    Ok(stats) => {
                        failures = 0;
                        if full {
                            last_full = Instant::now();
                        }
                        log_sync(&stats, took, &mut synced_once);
                        pending = ChangeSet::default();
                        observer.synced(state, full, took).await;
                    }
                    Err(e) => {
                        observer.failed(full, took);
                        failures += 1;
                        let retry = retry_delay(failures, periods.min_sync);
                        error!(error = %e, retry_in = ?retry, "sync failed; the next sync is a full one");
                        pending.full = true;
                        not_before = Instant::now() + retry;
                        wanted = true;
                    }
                }
            },
            _ = &mut shutdown => {
                info!("shutting down; programmed rules stay in place");
                break;
            }
        }
    }
    observer.shutdown().await;
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

/// Removes everything the mode owns (`--cleanup`).
pub fn cleanup(mode: &mut dyn Mode) -> Result<(), ModeError> {
    mode.cleanup()?;
    warn!(mode = mode.name(), "removed everything kproxy programmed");
    Ok(())
}
