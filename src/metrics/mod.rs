//! kube-proxy's metrics (subsystem `kubeproxy`) with upstream's names, types, help text and
//! buckets, plus kproxy's own (`kproxy_*`). The agent feeds them; `server` exposes them.

pub mod configz;
mod expose;
mod server;

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, SystemTime},
};

use kproxy_modes::model::{DesiredState, TrafficPolicy};
use prometheus_client::{
    metrics::{
        counter::Counter,
        family::Family,
        gauge::Gauge,
        histogram::{Histogram, exponential_buckets, linear_buckets},
    },
    registry::Registry,
};

use crate::{
    config::ProxyMode,
    health::{ProxyHealth, WallClock, clock::unix_seconds},
};

pub use expose::to_prometheus_text;
pub use server::{MetricsServer, run_metrics_server};

type Labels = Vec<(String, String)>;
type FloatGauge = Gauge<f64, AtomicU64>;

/// Everything kproxy measures. Cheap to share (`Arc`); every method takes `&self`.
#[derive(Debug)]
pub struct Metrics {
    pub(crate) mode: ProxyMode,
    clock: WallClock,
    pub(crate) sync_duration: Histogram,
    pub(crate) sync_full_duration: Histogram,
    pub(crate) sync_partial_duration: Histogram,
    pub(crate) network_programming: Histogram,
    pub(crate) last_timestamp: FloatGauge,
    pub(crate) last_queued_timestamp: FloatGauge,
    pub(crate) endpoint_changes_pending: Gauge,
    pub(crate) endpoint_changes_total: Counter,
    pub(crate) service_changes_pending: Gauge,
    pub(crate) service_changes_total: Counter,
    pub(crate) no_local_endpoints: Family<Labels, Gauge>,
    /// Failed full syncs (iptables' restore failures, nftables' sync failures).
    pub(crate) sync_failures: Counter,
    /// Failed partial syncs (iptables' partial restore failures).
    pub(crate) partial_sync_failures: Counter,
    /// Never incremented: kproxy has no separate stale-chain cleanup step to fail; upstream's
    /// nftables mode exports it, so dashboards find it.
    pub(crate) cleanup_failures: Counter,
    pub(crate) skipped: Family<Labels, Gauge>,
    /// Drift the mode found, by kind of object.
    pub(crate) drift: Family<Labels, Counter>,
    /// The mode's own counters as of the last sync.
    pub(crate) mode_counters: std::sync::Mutex<Vec<kproxy_modes::Counter>>,
    /// The mode's own gauges as of the last sync.
    pub(crate) mode_gauges: std::sync::Mutex<Vec<kproxy_modes::Gauge>>,
    pub(crate) health: Option<Arc<ProxyHealth>>,
    pub(crate) healthcheck_failures: Option<Arc<AtomicU64>>,
    /// Manifest files that currently fail to parse (the manifest source keeps it).
    pub(crate) manifest_files_failing: Option<Arc<AtomicU64>>,
}

/// Upstream's sync latency buckets: 1 ms doubling to ~16 s.
fn sync_buckets() -> Histogram {
    Histogram::new(exponential_buckets(0.001, 2.0, 15))
}

/// Upstream's network programming buckets (including its leading 0).
fn programming_buckets() -> Histogram {
    let buckets = std::iter::once(0.0)
        .chain(linear_buckets(0.25, 0.25, 2))
        .chain(linear_buckets(1.0, 1.0, 59))
        .chain(linear_buckets(60.0, 5.0, 12))
        .chain(linear_buckets(120.0, 30.0, 7));
    Histogram::new(buckets)
}

impl Metrics {
    pub fn new(mode: ProxyMode, clock: WallClock) -> Self {
        Self {
            mode,
            clock,
            sync_duration: sync_buckets(),
            sync_full_duration: sync_buckets(),
            sync_partial_duration: sync_buckets(),
            network_programming: programming_buckets(),
            last_timestamp: Default::default(),
            last_queued_timestamp: Default::default(),
            endpoint_changes_pending: Default::default(),
            endpoint_changes_total: Default::default(),
            service_changes_pending: Default::default(),
            service_changes_total: Default::default(),
            no_local_endpoints: Default::default(),
            sync_failures: Default::default(),
            partial_sync_failures: Default::default(),
            cleanup_failures: Default::default(),
            skipped: Default::default(),
            drift: Default::default(),
            mode_counters: Default::default(),
            mode_gauges: Default::default(),
            health: None,
            healthcheck_failures: None,
            manifest_files_failing: None,
        }
    }

    /// Exposes the `/healthz` and `/livez` response counts.
    pub fn with_health(mut self, health: Arc<ProxyHealth>) -> Self {
        self.health = Some(health);
        self
    }

    /// Exposes the count of Service health-check ports that failed to open.
    pub fn with_healthcheck_failures(mut self, counter: Arc<AtomicU64>) -> Self {
        self.healthcheck_failures = Some(counter);
        self
    }

    /// Exposes the number of manifest files that fail to parse (`--manifests` only).
    pub fn with_manifest_files_failing(mut self, gauge: Arc<AtomicU64>) -> Self {
        self.manifest_files_failing = Some(gauge);
        self
    }

    /// Changes arrived: `services` Service changes and `endpoints` EndpointSlice changes, with
    /// the number of distinct Services that now have unapplied changes of each kind.
    pub fn changes_queued(
        &self,
        services: u64,
        endpoints: u64,
        services_pending: usize,
        endpoints_pending: usize,
    ) {
        self.service_changes_total.inc_by(services);
        self.endpoint_changes_total.inc_by(endpoints);
        self.service_changes_pending.set(services_pending as i64);
        self.endpoint_changes_pending.set(endpoints_pending as i64);
        self.last_queued_timestamp
            .set(unix_seconds(self.clock.wall_now()));
    }

    /// The pending changes were taken into a desired state for the data plane.
    pub fn changes_taken(&self) {
        self.service_changes_pending.set(0);
        self.endpoint_changes_pending.set(0);
    }

    /// A sync attempt finished (either way) after `took`. As upstream, the duration histograms
    /// time every attempt, failed ones included; the timestamp marks successes only.
    pub fn sync_finished(&self, full: bool, took: Duration, ok: bool) {
        let secs = took.as_secs_f64();
        self.sync_duration.observe(secs);
        if full {
            self.sync_full_duration.observe(secs);
        } else {
            self.sync_partial_duration.observe(secs);
        }
        if ok {
            self.last_timestamp.set(unix_seconds(self.clock.wall_now()));
        } else if full {
            self.sync_failures.inc();
        } else {
            self.partial_sync_failures.inc();
        }
    }

    /// One network programming latency sample: from an EndpointSlice's
    /// `endpoints.kubernetes.io/last-change-trigger-time` to now, when its change is programmed.
    pub fn observe_network_programming(&self, trigger_time: SystemTime) {
        if let Ok(latency) = self.clock.wall_now().duration_since(trigger_time) {
            self.network_programming.observe(latency.as_secs_f64());
        }
    }

    /// Gauges derived from the state just programmed: Service ports whose Local policy leaves
    /// them without endpoints, and the objects the tracker skipped.
    pub fn observe_state(&self, state: &DesiredState) {
        let (mut internal, mut external) = (0i64, 0i64);
        for port in state.families.iter().flat_map(|f| f.services.values()) {
            // With no endpoint anywhere traffic is rejected, which is not this gauge's case.
            if !port.endpoints.has_any {
                continue;
            }
            internal += i64::from(port.internal_endpoints().is_empty());
            external += i64::from(
                port.external_policy == TrafficPolicy::Local
                    && port.external_endpoints().is_empty(),
            );
        }
        let label = |v: &str| vec![("traffic_policy".to_owned(), v.to_owned())];
        self.no_local_endpoints
            .get_or_create(&label("internal"))
            .set(internal);
        self.no_local_endpoints
            .get_or_create(&label("external"))
            .set(external);

        self.skipped.clear();
        for s in &state.skipped {
            let labels = vec![
                ("kind".to_owned(), s.kind.clone()),
                ("reason".to_owned(), reason_class(&s.reason).to_owned()),
            ];
            self.skipped.get_or_create(&labels).inc();
        }
    }

    /// The mode found drift of this kind of object.
    pub fn drift_detected(&self, kind: &str) {
        let labels = vec![("kind".to_owned(), kind.to_owned())];
        self.drift.get_or_create(&labels).inc();
    }

    /// The mode's counters now (cumulative values the mode keeps).
    pub fn observe_mode_counters(&self, counters: Vec<kproxy_modes::Counter>) {
        *self.mode_counters.lock().unwrap_or_else(|e| e.into_inner()) = counters;
    }

    pub fn observe_mode_gauges(&self, gauges: Vec<kproxy_modes::Gauge>) {
        *self.mode_gauges.lock().unwrap_or_else(|e| e.into_inner()) = gauges;
    }

    /// The registry `/metrics` encodes.
    pub fn registry(self: &Arc<Self>) -> Registry {
        let mut registry = Registry::default();
        registry.register_collector(Box::new(expose::Collect(self.clone())));
        registry
    }

    pub(crate) fn health_responses(&self, probe: crate::health::Probe, code: u16) -> u64 {
        self.health.as_ref().map_or(0, |h| h.responses(probe, code))
    }

    pub(crate) fn healthcheck_failures(&self) -> Option<u64> {
        self.healthcheck_failures
            .as_ref()
            .map(|c| c.load(Ordering::Relaxed))
    }
}

/// A short, bounded label value for a skip reason (the full text is in the logs and in
/// `debug dump`): label values must not carry object names or values.
pub fn reason_class(reason: &str) -> &'static str {
    if let Some(loss) = crate::desired::collisions::Loss::of(reason) {
        return loss.class();
    }
    // (pattern, class), first match wins; the patterns are the fixed parts of the reasons
    // `desired` writes (see `desired::validate` and the Service and slice conversions).
    type Matches = fn(&str) -> bool;
    const CLASSES: [(Matches, &str); 9] = [
        (|r| r.contains("not a DNS-1123"), "invalid-name"),
        (|r| r.contains("is not an IP"), "invalid-ip"),
        (
            |r| r.contains(" slice") && r.contains(" address "),
            "wrong-family",
        ),
        (|r| r.ends_with(": no addresses"), "no-address"),
        (
            |r| r.starts_with("no ") && r.ends_with(" label"),
            "missing-label",
        ),
        (|r| r == "no spec", "no-spec"),
        (|r| r.starts_with("duplicate "), "duplicate-port"),
        (|r| r.starts_with("unknown "), "unknown-value"),
        (|r| r.starts_with("invalid "), "invalid-value"),
    ];
    CLASSES
        .iter()
        .find(|(matches, _)| matches(reason))
        .map_or("other", |(_, class)| class)
}
