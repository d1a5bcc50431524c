//! Kubernetes Events, as upstream kube-proxy records them: `Starting` on the own Node at start-up,
//! `FailedToStartServiceHealthcheck` on a Service whose health-check port cannot be opened, and
//! (kproxy's own) `InvalidService` once per Service and reason when a Service is skipped as
//! malformed, and `PortClash`, `NodePortClash` or `NodePortOutOfRange` once per Service and
//! reason when one of its ports loses a VIP tuple or NodePort (`desired::collisions`).
//!
//! Everything goes through [`EventSink`], so the agent and the health-check server do not care
//! whether an API server exists: against the API the [`KubeSink`] creates events.k8s.io/v1
//! Events; with `--manifests` the [`LogSink`] only logs them.

use std::{
    collections::BTreeSet,
    sync::{Arc, Mutex},
};

use k8s_openapi::api::core::v1::ObjectReference;
use kproxy_modes::model::{DesiredState, ServicePortName};
use kube::{
    Client,
    runtime::events::{Event, EventType, Recorder, Reporter},
};
use tokio::sync::mpsc;
use tracing::{info, warn};

use crate::{desired::collisions::Loss, health::service::HealthCheckFailure};

/// Upstream's reporting controller (events.k8s.io `reportingController`).
pub const REPORTING_CONTROLLER: &str = "kube-proxy";

/// The object an event is about.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Regarding {
    Node(String),
    Service { namespace: String, name: String },
}

impl Regarding {
    /// The reference upstream builds: it has no informer UIDs at hand, so it uses the name (the
    /// Node) or `namespace/name` (a Service) as UID; kproxy does the same.
    pub fn object_reference(&self) -> ObjectReference {
        match self {
            Regarding::Node(name) => ObjectReference {
                api_version: Some("v1".into()),
                kind: Some("Node".into()),
                name: Some(name.clone()),
                uid: Some(name.clone()),
                ..Default::default()
            },
            Regarding::Service { namespace, name } => ObjectReference {
                api_version: Some("v1".into()),
                kind: Some("Service".into()),
                namespace: Some(namespace.clone()),
                name: Some(name.clone()),
                uid: Some(format!("{namespace}/{name}")),
                ..Default::default()
            },
        }
    }
}

/// One event to record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProxyEvent {
    pub regarding: Regarding,
    pub warning: bool,
    pub reason: String,
    pub action: String,
    pub note: String,
}

impl ProxyEvent {
    /// Upstream's start-up event (cmd/kube-proxy/app/server.go: Normal, "Starting", action
    /// "StartKubeProxy", on the Node).
    pub fn starting(node: &str) -> Self {
        Self {
            regarding: Regarding::Node(node.to_owned()),
            warning: false,
            reason: "Starting".into(),
            action: "StartKubeProxy".into(),
            note: "Starting kproxy.".into(),
        }
    }

    /// Upstream's health-check failure event (pkg/proxy/healthcheck: Warning, action "Listen").
    pub fn health_check_failed(node: &str, f: &HealthCheckFailure) -> Self {
        Self {
            regarding: Regarding::Service {
                namespace: f.namespace.clone(),
                name: f.name.clone(),
            },
            warning: true,
            reason: HealthCheckFailure::REASON.into(),
            action: "Listen".into(),
            note: format!(
                "node {node} failed to start healthcheck \"{}/{}\" on port {}: {}",
                f.namespace, f.name, f.port, f.error
            ),
        }
    }

    /// A Service skipped as malformed; upstream only logs these, so reason and action are
    /// kproxy's.
    pub fn invalid_service(namespace: &str, name: &str, reason: &str) -> Self {
        Self {
            regarding: Regarding::Service {
                namespace: namespace.to_owned(),
                name: name.to_owned(),
            },
            warning: true,
            // A lost claim has its own reason (PortClash, NodePortClash, NodePortOutOfRange).
            reason: Loss::of(reason)
                .map_or(INVALID_SERVICE_REASON, Loss::event_reason)
                .into(),
            action: "Sync".into(),
            note: reason.to_owned(),
        }
    }
}

pub const INVALID_SERVICE_REASON: &str = "InvalidService";

/// kproxy's reason for a Service port the kernel refused (the mode left it out).
pub const REFUSED_REASON: &str = "FailedToProgram";

impl ProxyEvent {
    /// A Service port whose rules the kernel refused: the mode left it out until it changes.
    pub fn refused(port: &ServicePortName) -> Self {
        Self {
            regarding: Regarding::Service {
                namespace: port.namespace.clone(),
                name: port.name.clone(),
            },
            warning: true,
            reason: REFUSED_REASON.into(),
            action: "Sync".into(),
            note: format!(
                "the kernel refused the rules of port {port}; left out until the Service changes"
            ),
        }
    }
}

/// Emits one `FailedToProgram` event per Service port the mode refused, while it stays refused.
#[derive(Default)]
pub struct RefusedPorts {
    reported: BTreeSet<ServicePortName>,
}

impl RefusedPorts {
    pub fn observe(&mut self, refused: Vec<ServicePortName>, sink: &dyn EventSink) {
        let now: BTreeSet<ServicePortName> = refused.into_iter().collect();
        for port in now.difference(&self.reported) {
            sink.publish(ProxyEvent::refused(port));
        }
        self.reported = now;
    }
}

/// Where events go. `publish` never blocks: callers are the agent loop and the health-check
/// failure hook, neither of which may wait on the API server.
pub trait EventSink: Send + Sync {
    fn publish(&self, event: ProxyEvent);
}

/// Without an API server (`--manifests`): events are only logged.
pub struct LogSink;

impl EventSink for LogSink {
    fn publish(&self, e: ProxyEvent) {
        info!(regarding = ?e.regarding, warning = e.warning, reason = %e.reason, note = %e.note, "event (not recorded: no API server)");
    }
}

/// Records events through kube-runtime's [`Recorder`] from one background task, in order;
/// a rejected event is logged and dropped, as upstream's broadcaster does after its retries.
pub struct KubeSink {
    tx: mpsc::UnboundedSender<ProxyEvent>,
}

impl KubeSink {
    /// Must be called inside a tokio runtime. Upstream's reporting instance is
    /// `kube-proxy-<hostname>`; the node name stands in for the hostname.
    pub fn spawn(client: Client, node: &str) -> Self {
        let reporter = Reporter {
            controller: REPORTING_CONTROLLER.into(),
            instance: Some(format!("{REPORTING_CONTROLLER}-{node}")),
        };
        let recorder = Recorder::new(client, reporter);
        let (tx, mut rx) = mpsc::unbounded_channel::<ProxyEvent>();
        tokio::spawn(async move {
            while let Some(e) = rx.recv().await {
                let event = Event {
                    type_: match e.warning {
                        true => EventType::Warning,
                        false => EventType::Normal,
                    },
                    reason: e.reason.clone(),
                    note: Some(e.note.clone()),
                    action: e.action.clone(),
                    secondary: None,
                };
                let reference = e.regarding.object_reference();
                if let Err(err) = recorder.publish(&event, &reference).await {
                    warn!(error = %err, reason = %e.reason, regarding = ?e.regarding, "could not record event");
                }
            }
        });
        Self { tx }
    }
}

impl EventSink for KubeSink {
    fn publish(&self, event: ProxyEvent) {
        // Fails only when the runtime is shutting down; nothing is left to record then.
        let _ = self.tx.send(event);
    }
}

/// Collects events in memory (tests, and anyone who wants to look at them).
#[derive(Default)]
pub struct MemorySink {
    pub events: Mutex<Vec<ProxyEvent>>,
}

impl EventSink for MemorySink {
    fn publish(&self, event: ProxyEvent) {
        self.events
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(event);
    }
}

/// Emits one `InvalidService` (or claim: `PortClash`, ...) event per Service and skip reason. Every sync recomputes the
/// skipped list, so without memory the same Service would be reported at every sync; a
/// (Service, reason) that stops being skipped is forgotten, so it is reported again if it
/// comes back.
#[derive(Default)]
pub struct InvalidServices {
    reported: BTreeSet<(String, String, String)>,
}

impl InvalidServices {
    pub fn observe(&mut self, state: &DesiredState, sink: &dyn EventSink) {
        let now: BTreeSet<(String, String, String)> = state
            .skipped
            .iter()
            .filter(|s| s.kind == "Service")
            .map(|s| (s.namespace.clone(), s.name.clone(), s.reason.clone()))
            .collect();
        for (ns, name, reason) in now.difference(&self.reported) {
            sink.publish(ProxyEvent::invalid_service(ns, name, reason));
        }
        self.reported = now;
    }
}

/// The hook for [`crate::health::service::ServiceHealthServer::on_failure`].
pub fn health_check_hook(
    node: &str,
    sink: Arc<dyn EventSink>,
) -> crate::health::service::FailureHook {
    let node = node.to_owned();
    Arc::new(move |f: &HealthCheckFailure| sink.publish(ProxyEvent::health_check_failed(&node, f)))
}
