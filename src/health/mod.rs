//! Proxy health, as upstream's `/healthz` and `/livez` define it, and the per-Service health
//! check servers load balancers probe for `externalTrafficPolicy: Local` Services.
//!
//! The rule (upstream's healthTimeout): kproxy is unhealthy when a queued update has stayed
//! unapplied for longer than 2 x syncPeriod. A family that has never synced is healthy (it is
//! starting up); a family with nothing queued is healthy however long ago it synced.

pub mod clock;
pub mod http;
mod server;
pub mod service;

use std::{
    collections::BTreeMap,
    sync::{
        Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, SystemTime},
};

use k8s_openapi::api::core::v1::Node;
use kproxy_modes::model::IpFamily;
use serde::Serialize;
use tokio::time::Instant;

pub use clock::WallClock;
pub(crate) use server::serve_with_retry;
pub use server::{run_proxy_health_server, serve_proxy_health};

/// The taint the cluster autoscaler puts on a node it is about to delete; a node carrying it
/// fails `/healthz` so load balancers drain it first.
pub const TO_BE_DELETED_TAINT: &str = "ToBeDeletedByClusterAutoscaler";

/// Which probe a response answered, for the response counters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Probe {
    Healthz,
    Livez,
}

#[derive(Debug, Default)]
struct State {
    last_updated: BTreeMap<IpFamily, Instant>,
    oldest_queued: BTreeMap<IpFamily, Instant>,
    node_eligible: bool,
}

/// Health of the proxy, shared by the agent (which reports queued and applied updates) and the
/// HTTP servers (which read it).
#[derive(Debug)]
pub struct ProxyHealth {
    timeout: Duration,
    clock: WallClock,
    state: Mutex<State>,
    /// [healthz 200, healthz 503, livez 200, livez 503]
    responses: [AtomicU64; 4],
    /// The mode found drift that the next sync has not repaired yet.
    repairing: AtomicBool,
}

/// One family's entry in the `status` map.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct FamilyHealth {
    #[serde(serialize_with = "ser_time")]
    pub last_updated: Option<SystemTime>,
    pub healthy: bool,
}

/// The JSON document `/healthz` and `/livez` return; field order and names are upstream's.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct HealthReport {
    #[serde(serialize_with = "ser_time")]
    pub last_updated: Option<SystemTime>,
    #[serde(serialize_with = "ser_time")]
    pub current_time: Option<SystemTime>,
    /// Only `/healthz` reports it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node_eligible: Option<bool>,
    pub healthy: bool,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub status: BTreeMap<String, FamilyHealth>,
}

fn ser_time<S: serde::Serializer>(t: &Option<SystemTime>, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&clock::rfc3339_nano(*t))
}

impl ProxyHealth {
    /// `timeout` is upstream's healthTimeout: 2 x syncPeriod.
    pub fn new(timeout: Duration, clock: WallClock) -> Self {
        Self {
            timeout,
            clock,
            state: Mutex::new(State {
                // Eligible until the own Node says otherwise: kproxy starts serving before the
                // Node is listed, and must not fail probes for that.
                node_eligible: true,
                ..State::default()
            }),
            responses: Default::default(),
            repairing: AtomicBool::new(false),
        }
    }

    /// Drift was found (`true`) or repaired by a successful sync (`false`). While a repair is
    /// pending, the proxy is unhealthy: what it programmed is known not to hold.
    pub fn repair_pending(&self, pending: bool) {
        self.repairing.store(pending, Ordering::Relaxed);
    }

    pub fn clock(&self) -> &WallClock {
        &self.clock
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Changes arrived that the data plane has not applied yet. Only the oldest pending one
    /// counts: a steady stream of changes must not keep pushing the deadline out.
    pub fn queued_update(&self, families: &[IpFamily]) {
        let now = self.clock.now();
        let mut st = self.state();
        for f in families {
            st.oldest_queued.entry(*f).or_insert(now);
        }
    }

    /// The data plane of these families now reflects everything queued so far.
    pub fn updated(&self, families: &[IpFamily]) {
        let now = self.clock.now();
        let mut st = self.state();
        for f in families {
            st.oldest_queued.remove(f);
            st.last_updated.insert(*f, now);
        }
    }

    /// Reads eligibility from the own Node: a node being deleted (deletionTimestamp set) or
    /// marked by the cluster autoscaler is not eligible, and neither is a node that does not
    /// exist (upstream's NodeManager view).
    pub fn sync_node(&self, node: Option<&Node>) {
        self.state().node_eligible = node_eligible(node);
    }

    pub fn node_eligible(&self) -> bool {
        self.state().node_eligible
    }

    /// Proxy health ignoring the node, as Service health checks and `/livez` use it.
    pub fn is_healthy(&self) -> bool {
        self.report(None).healthy
    }

    /// The health document. With `node_eligible`, the node's eligibility is reported (the
    /// caller folds it into the status code, as `/healthz` does).
    pub fn report(&self, node_eligible: Option<bool>) -> HealthReport {
        let now = self.clock.now();
        let st = self.state();
        let mut status = BTreeMap::new();
        let mut healthy = !self.repairing.load(Ordering::Relaxed);
        for (family, updated) in &st.last_updated {
            let late = st
                .oldest_queued
                .get(family)
                .is_some_and(|q| now.duration_since(*q) >= self.timeout);
            healthy &= !late;
            status.insert(
                family.to_string(),
                FamilyHealth {
                    last_updated: Some(self.clock.wall(*updated)),
                    healthy: !late,
                },
            );
        }
        HealthReport {
            last_updated: st.last_updated.values().max().map(|t| self.clock.wall(*t)),
            current_time: Some(self.clock.wall(now)),
            node_eligible,
            healthy,
            status,
        }
    }

    /// Counts one probe response (read by the metrics server).
    pub fn count_response(&self, probe: Probe, code: u16) {
        if let Some(slot) = Self::slot(probe, code) {
            self.responses[slot].fetch_add(1, Ordering::Relaxed);
        }
    }

    /// How many responses with this code the probe returned.
    pub fn responses(&self, probe: Probe, code: u16) -> u64 {
        Self::slot(probe, code).map_or(0, |s| self.responses[s].load(Ordering::Relaxed))
    }

    fn slot(probe: Probe, code: u16) -> Option<usize> {
        let base = match probe {
            Probe::Healthz => 0,
            Probe::Livez => 2,
        };
        match code {
            200 => Some(base),
            503 => Some(base + 1),
            _ => None,
        }
    }
}

/// Upstream's eligibility rule for the own Node.
pub fn node_eligible(node: Option<&Node>) -> bool {
    let Some(node) = node else {
        return false;
    };
    if node.metadata.deletion_timestamp.is_some() {
        return false;
    }
    !node
        .spec
        .as_ref()
        .and_then(|s| s.taints.as_ref())
        .is_some_and(|t| t.iter().any(|t| t.key == TO_BE_DELETED_TAINT))
}
