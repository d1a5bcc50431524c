//! Network programming latency: the agent loop (`agent::run`, its real minSyncPeriod) with the
//! nftables mode in a fresh network namespace, `services` Services present, fed EndpointSlice
//! updates at a steady rate; per update, the time from its
//! `endpoints.kubernetes.io/last-change-trigger-time` to the end of the first sync that committed
//! it. The mode is wrapped to see each sync's state and outcome; nothing else is changed.
//!
//! Update `k` moves endpoint 0 of its Service to 10.128.0.0 + k, so "committed" is exact: the
//! Service's endpoints in the synced state hold generation `k` or a later one (a later update of
//! the same Service supersedes it; upstream's metric also counts such a trigger at that sync).

use std::{
    collections::BTreeMap,
    net::{IpAddr, Ipv4Addr},
    sync::{Arc, Mutex},
    time::{Duration, SystemTime},
};

use anyhow::{Context, Result, bail};
use k8s_openapi::jiff::Timestamp;
use kproxy::{
    agent::{self, Periods, observe::TRIGGER_TIME_ANNOTATION},
    desired::ProxyOptions,
    source::{Event, Object},
    tracker::Tracker,
};
use kproxy_modes::{
    Mode, ModeError, SyncError, SyncStats,
    model::{ChangeSet, DesiredState, Protocol, ServicePortName},
    registry::{self, ModeSettings},
};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use crate::{
    measure::{Stopwatch, ms, percentile},
    objects, sync,
};

/// kproxy's (and upstream's) defaults.
const PERIODS: Periods = Periods {
    sync: Duration::from_secs(30),
    min_sync: Duration::from_secs(1),
};
const GENERATION_BASE: u32 = u32::from_be_bytes([10, 128, 0, 0]);
const DEADLINE: Duration = Duration::from_secs(300);

#[derive(Debug, Serialize, Deserialize)]
pub struct LatencyRun {
    pub services: u32,
    pub endpoints: u32,
    pub rate: u32,
    pub updates: u32,
    pub initial_sync_ms: f64,
    /// Trigger -> commit, per update, sorted.
    pub latency_ms: Vec<f64>,
    /// Syncs that ended after the first update was sent, full and partial, and how long the
    /// partial ones took in the mode's `sync` (sorted).
    pub syncs: u32,
    pub full_syncs: u32,
    pub partial_sync_ms: Vec<f64>,
    /// Service ports changed per sync, mean.
    pub changed_per_sync: f64,
}

struct SyncRecord {
    end: SystemTime,
    full: bool,
    took: Duration,
    changed: usize,
}

#[derive(Default)]
struct Shared {
    /// Updates sent and not yet committed: generation -> (Service, trigger time).
    outstanding: BTreeMap<u32, (u32, SystemTime)>,
    latencies: Vec<Duration>,
    syncs: Vec<SyncRecord>,
}

/// The nftables mode, reporting each successful sync and the updates it committed.
struct Recording {
    inner: Box<dyn Mode>,
    shared: Arc<Mutex<Shared>>,
}

impl Mode for Recording {
    fn name(&self) -> &'static str {
        self.inner.name()
    }

    fn sync(
        &mut self,
        desired: &DesiredState,
        changes: &ChangeSet,
    ) -> Result<SyncStats, SyncError> {
        let sw = Stopwatch::start();
        let stats = self.inner.sync(desired, changes)?;
        let (end, took) = (SystemTime::now(), sw.elapsed());
        let mut shared = self.shared.lock().expect("not poisoned");
        let services: Vec<u32> = shared.outstanding.values().map(|(i, _)| *i).collect();
        for i in services {
            let Some(newest) = generation(desired, i) else {
                continue;
            };
            let done: Vec<u32> = shared
                .outstanding
                .iter()
                .filter(|(k, (svc, _))| *svc == i && **k <= newest)
                .map(|(k, _)| *k)
                .collect();
            for k in done {
                let (_, trigger) = shared.outstanding.remove(&k).expect("listed");
                let latency = end.duration_since(trigger).unwrap_or_default();
                shared.latencies.push(latency);
            }
        }
        shared.syncs.push(SyncRecord {
            end,
            full: stats.full,
            took,
            changed: changes.services.len(),
        });
        Ok(stats)
    }

    fn cleanup(&mut self) -> Result<Vec<String>, ModeError> {
        self.inner.cleanup()
    }
}

/// The newest update generation of Service `i` in `state` (its endpoint in 10.128/9), if any.
fn generation(state: &DesiredState, i: u32) -> Option<u32> {
    let name = ServicePortName::new(&format!("ns{i}"), &format!("svc{i}"), "http", Protocol::Tcp);
    let port = state.families.iter().find_map(|f| f.services.get(&name))?;
    port.endpoints
        .cluster
        .iter()
        .filter_map(|e| match e.ip() {
            IpAddr::V4(v4) => u32::from(v4).checked_sub(GENERATION_BASE),
            IpAddr::V6(_) => None,
        })
        .filter(|g| *g < 1 << 23)
        .max()
}

/// Update `k`: Service `k % services` with endpoint 0 moved to generation `k`'s address and the
/// trigger time set to now.
fn update(k: u32, services: u32, endpoints: u32) -> Result<(u32, SystemTime, Object)> {
    let i = k % services;
    let mut addrs: Vec<Ipv4Addr> = (0..endpoints)
        .map(|e| objects::endpoint_ip(i, endpoints, e))
        .collect();
    addrs[0] = Ipv4Addr::from(GENERATION_BASE + k);
    let [_, slice] = objects::service(i, endpoints, Some(&addrs));
    let Object::EndpointSlice(mut slice) = slice else {
        bail!("objects::service returns the slice second");
    };
    let now = SystemTime::now();
    let stamp = Timestamp::try_from(now)?.to_string();
    slice
        .metadata
        .annotations
        .get_or_insert_default()
        .insert(TRIGGER_TIME_ANNOTATION.into(), stamp);
    Ok((i, now, Object::EndpointSlice(slice)))
}

/// Runs in a process of its own (it enters a fresh network namespace on the calling thread,
/// before the runtime's threads exist, so they and their `nft` run there).
pub fn run(services: u32, endpoints: u32, rate: u32, seconds: u32) -> Result<LatencyRun> {
    let _ns = sync::enter_fresh_netns("l")?;
    let rt = crate::runtime()?;
    let r = rt.block_on(drive(services, endpoints, rate, seconds));
    // A fresh mode can remove the table: cleanup needs no applied state.
    registry::build("nftables", &ModeSettings::default())?.cleanup()?;
    r
}

async fn drive(services: u32, endpoints: u32, rate: u32, seconds: u32) -> Result<LatencyRun> {
    let shared = Arc::new(Mutex::new(Shared::default()));
    let mode = Recording {
        inner: registry::build("nftables", &ModeSettings::default())?,
        shared: shared.clone(),
    };
    let (tx, rx) = mpsc::channel(4096);
    let lists = objects::initial_lists(
        (0..services)
            .map(|i| objects::service(i, endpoints, None))
            .collect(),
    );
    let tracker = Tracker::new(ProxyOptions::for_node(objects::NODE));
    let agent = tokio::spawn(agent::run(
        tracker,
        rx,
        Box::new(mode),
        PERIODS,
        std::future::pending(),
    ));
    let sw = Stopwatch::start();
    for ev in lists {
        tx.send(ev).await?;
    }
    wait_until(&shared, |s| !s.syncs.is_empty()).await?;
    let initial_sync_ms = ms(sw.elapsed());
    // Start one minSyncPeriod after the initial sync, as on an agent that has been running.
    tokio::time::sleep(PERIODS.min_sync).await;

    let updates = rate * seconds;
    let started = SystemTime::now();
    let mut tick = tokio::time::interval(Duration::from_secs(1) / rate);
    for k in 0..updates {
        tick.tick().await;
        let (i, trigger, slice) = update(k, services, endpoints)?;
        shared
            .lock()
            .expect("not poisoned")
            .outstanding
            .insert(k, (i, trigger));
        tx.send(Event::Apply(slice)).await?;
    }
    wait_until(&shared, |s| s.outstanding.is_empty()).await?;
    drop(tx);
    agent.await?;

    let s = std::mem::take(&mut *shared.lock().expect("not poisoned"));
    let during: Vec<&SyncRecord> = s.syncs.iter().filter(|r| r.end >= started).collect();
    let mut partial: Vec<Duration> = during.iter().filter(|r| !r.full).map(|r| r.took).collect();
    percentile(&mut partial, 50); // sorts
    let mut lat = s.latencies;
    percentile(&mut lat, 50);
    Ok(LatencyRun {
        services,
        endpoints,
        rate,
        updates,
        initial_sync_ms,
        latency_ms: lat.into_iter().map(ms).collect(),
        syncs: during.len() as u32,
        full_syncs: during.iter().filter(|r| r.full).count() as u32,
        partial_sync_ms: partial.into_iter().map(ms).collect(),
        changed_per_sync: during.iter().map(|r| r.changed as f64).sum::<f64>()
            / during.len().max(1) as f64,
    })
}

/// Polls `cond` on the shared record until it holds, or fails after [`DEADLINE`].
async fn wait_until(shared: &Mutex<Shared>, cond: impl Fn(&Shared) -> bool) -> Result<()> {
    let sw = Stopwatch::start();
    while !cond(&shared.lock().expect("not poisoned")) {
        if sw.elapsed() > DEADLINE {
            return Err(anyhow::anyhow!("condition not met"))
                .context(format!("after {DEADLINE:?}"));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}
