//! What the agent reports as it runs: queued changes, sync outcomes and the state it programmed,
//! to proxy health, metrics and the Service health-check servers. Every part is optional, so the
//! loop reads the same with or without them.

use std::{
    collections::BTreeSet,
    sync::Arc,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use k8s_openapi::{api::discovery::v1::EndpointSlice, jiff};
use kproxy_modes::model::{DesiredState, IpFamily};

use crate::{
    desired,
    events::{EventSink, InvalidServices, RefusedPorts},
    health::{ProxyHealth, service::ServiceHealthServer},
    metrics::Metrics,
    source::{Event, Object},
    tracker::Tracker,
};

/// The EndpointSlice controller's record of when the change behind a slice happened.
pub const TRIGGER_TIME_ANNOTATION: &str = "endpoints.kubernetes.io/last-change-trigger-time";

type Key = (String, String);

/// Changes seen since the last time the tracker's state was taken for a sync.
#[derive(Default)]
struct Pending {
    services: BTreeSet<Key>,
    endpoints: BTreeSet<Key>,
    service_events: u64,
    endpoint_events: u64,
    /// Trigger times of the EndpointSlice changes in the next sync.
    triggers: Vec<SystemTime>,
}

#[derive(Default)]
pub struct Observer {
    pub health: Option<Arc<ProxyHealth>>,
    pub metrics: Option<Arc<Metrics>>,
    pub services: Option<ServiceHealthServer>,
    /// Families of the last desired state: the ones a queued change will have to update.
    families: Vec<IpFamily>,
    pending: Pending,
    /// Trigger times taken into the sync in progress; observed once it succeeds.
    in_flight: Vec<SystemTime>,
    /// Changes older than kproxy are not its programming latency (upstream ignores them too).
    started: Option<SystemTime>,
    /// Where `InvalidService` events go; none: not reported.
    events: Option<Arc<dyn EventSink>>,
    invalid: InvalidServices,
    refused: RefusedPorts,
}

impl Observer {
    pub fn new(
        health: Option<Arc<ProxyHealth>>,
        metrics: Option<Arc<Metrics>>,
        services: Option<ServiceHealthServer>,
    ) -> Self {
        let started = health.as_ref().map(|h| h.clock().wall_now());
        Self {
            health,
            metrics,
            services,
            started: started.or_else(|| Some(SystemTime::now())),
            ..Self::default()
        }
    }

    /// Reports Services skipped as invalid to `sink`, once per Service and reason.
    pub fn with_events(mut self, sink: Arc<dyn EventSink>) -> Self {
        self.events = Some(sink);
        self
    }

    /// Notes one source event before the tracker applies it.
    pub fn event(&mut self, ev: &Event) {
        let objects: Vec<&Object> = match ev {
            Event::Apply(o) | Event::Delete(o) | Event::Listed(o) => vec![o],
            Event::Replace(_, list) => list.iter().collect(),
            Event::ListBegin(_) | Event::ListEnd(_) => vec![],
        };
        for obj in objects {
            match obj {
                Object::Service(svc) => {
                    self.pending.service_events += 1;
                    self.pending.services.insert(key(&svc.metadata));
                }
                Object::EndpointSlice(slice) => {
                    self.pending.endpoint_events += 1;
                    let svc = desired::slice_service(slice).unwrap_or_else(|| key(&slice.metadata));
                    self.pending.endpoints.insert(svc);
                    if matches!(ev, Event::Delete(_)) {
                        continue;
                    }
                    if let Some(t) = trigger_time(slice).filter(|t| Some(*t) >= self.started) {
                        self.pending.triggers.push(t);
                    }
                }
                Object::Node(_) | Object::ServiceCidr(_) => {}
            }
        }
    }

    /// A batch of events was applied: the data plane now has an update queued.
    pub fn queued(&mut self, tracker: &Tracker) {
        if let Some(h) = &self.health {
            h.queued_update(&self.families);
            // Before every list is in, the Node may simply not be known yet.
            if tracker.is_ready() {
                h.sync_node(tracker.node());
            }
        }
        if let Some(m) = &self.metrics {
            m.changes_queued(
                std::mem::take(&mut self.pending.service_events),
                std::mem::take(&mut self.pending.endpoint_events),
                self.pending.services.len(),
                self.pending.endpoints.len(),
            );
        }
    }

    /// The tracker's state was taken for a sync: pending changes are no longer pending.
    pub fn taken(&mut self, state: &DesiredState) {
        self.families = state.families.iter().map(|f| f.family).collect();
        // Skips depend on the objects only, not on the sync's outcome: report them here.
        if let Some(sink) = &self.events {
            self.invalid.observe(state, sink.as_ref());
        }
        self.pending.services.clear();
        self.pending.endpoints.clear();
        self.in_flight.append(&mut self.pending.triggers);
        if let Some(m) = &self.metrics {
            m.changes_taken();
        }
    }

    /// The sync failed; its changes stay queued (they are retried as a full sync).
    pub fn failed(&mut self, full: bool, took: Duration) {
        if let Some(m) = &self.metrics {
            m.sync_finished(full, took, false);
        }
    }

    /// The sync succeeded: `state` is what the data plane now holds.
    pub async fn synced(&mut self, state: &DesiredState, full: bool, took: Duration) {
        if let Some(h) = &self.health {
            h.updated(&self.families);
            h.repair_pending(false);
        }
        if let Some(m) = &self.metrics {
            m.sync_finished(full, took, true);
            for t in self.in_flight.drain(..) {
                m.observe_network_programming(t);
            }
            m.observe_state(state);
        }
        self.in_flight.clear();
        if let Some(s) = &mut self.services {
            s.reconcile(state).await;
        }
    }

    /// The mode found its kernel state changed behind its back: counted by kind, and the proxy
    /// is unhealthy until the repairing sync succeeds.
    pub fn drifted(&mut self, found: &[kproxy_modes::Drift]) {
        if found.is_empty() {
            return;
        }
        if let Some(h) = &self.health {
            h.repair_pending(true);
        }
        if let Some(m) = &self.metrics {
            for d in found {
                m.drift_detected(d.kind);
            }
        }
    }

    /// Service ports the mode left out because the kernel refused them: an Event each, once.
    pub fn refused(&mut self, ports: Vec<kproxy_modes::model::ServicePortName>) {
        if let Some(sink) = &self.events {
            self.refused.observe(ports, sink.as_ref());
        }
    }

    /// The mode's own counters, as of the last sync.
    pub fn mode_counters(&mut self, counters: Vec<kproxy_modes::Counter>) {
        if let Some(m) = &self.metrics {
            m.observe_mode_counters(counters);
        }
    }

    pub fn mode_gauges(&mut self, gauges: Vec<kproxy_modes::Gauge>) {
        if let Some(m) = &self.metrics {
            m.observe_mode_gauges(gauges);
        }
    }

    /// Closes the Service health-check ports (agent shutdown).
    pub async fn shutdown(&mut self) {
        if let Some(s) = &mut self.services {
            s.shutdown().await;
        }
    }
}

fn key(meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> Key {
    (
        desired::namespace_of(meta),
        meta.name.clone().unwrap_or_default(),
    )
}

/// The slice's trigger time annotation, when present and valid RFC 3339.
pub fn trigger_time(slice: &EndpointSlice) -> Option<SystemTime> {
    let value = slice
        .metadata
        .annotations
        .as_ref()?
        .get(TRIGGER_TIME_ANNOTATION)?;
    let ts: jiff::Timestamp = value.parse().ok()?;
    let secs = u64::try_from(ts.as_second()).ok()?;
    let nanos = u32::try_from(ts.subsec_nanosecond()).ok()?;
    Some(UNIX_EPOCH + Duration::new(secs, nanos))
}
