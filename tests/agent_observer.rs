//! The agent feeding proxy health and metrics, on paused tokio time: queued changes, failed and
//! successful syncs, node eligibility and network programming latency.

mod support;

use std::{sync::Arc, time::Duration};

use kproxy::{
    agent::{self, Observer, Periods, observe::TRIGGER_TIME_ANNOTATION},
    config::{KubeProxyConfiguration, ProxyMode},
    events::{self, MemorySink},
    health::{ProxyHealth, WallClock, clock::rfc3339_nano, http::Request, serve_proxy_health},
    metrics::{Metrics, MetricsServer},
    source::{Event, Kind, Object},
    tracker::Tracker,
};
use kproxy_modes::{
    Drift,
    model::{Protocol, ServicePortName},
    testing::RecordingMode,
};
use serde_json::{Value, json};
use support::*;
use tokio::sync::mpsc;

async fn settle() {
    for _ in 0..20 {
        tokio::task::yield_now().await;
    }
}

fn get(path: &str) -> Request {
    Request {
        method: "GET".into(),
        path: path.into(),
        headers: vec![],
    }
}

fn healthz(h: &ProxyHealth, path: &str) -> (u16, Value) {
    let r = serve_proxy_health(h, &get(path));
    (r.status, serde_json::from_str(&r.body).unwrap())
}

fn metric(server: &MetricsServer, name: &str) -> f64 {
    let text = server.handle(&get("/metrics")).body;
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("{name} not in\n{text}"))
}

fn svc(name: &str, ip: &str) -> Object {
    Object::Service(Box::new(simple_service(name, json!({"clusterIP": ip}))))
}

/// An agent with a recording mode, reporting to proxy health and metrics (syncPeriod 30 s,
/// minSyncPeriod 1 s), and what a test needs to drive and watch it.
struct Observed {
    mode: RecordingMode,
    sync: Duration,
    clock: WallClock,
    health: Arc<ProxyHealth>,
    server: MetricsServer,
    tx: mpsc::Sender<Event>,
}

fn start_observed() -> Observed {
    let mode = RecordingMode::default();
    let sync = Duration::from_secs(30);
    let clock = WallClock::new();
    let health = Arc::new(ProxyHealth::new(2 * sync, clock));
    let metrics = Arc::new(Metrics::new(ProxyMode::Nftables, clock).with_health(health.clone()));
    let server = MetricsServer::new(&metrics, &KubeProxyConfiguration::default());
    let observer = Observer::new(Some(health.clone()), Some(metrics), None);
    let (tx, rx) = mpsc::channel(16);
    let periods = Periods {
        sync,
        min_sync: Duration::from_secs(1),
    };
    tokio::spawn(agent::run_observed(
        Tracker::new(opts()),
        rx,
        Box::new(mode.clone()),
        periods,
        std::future::pending(),
        observer,
    ));
    Observed {
        mode,
        sync,
        clock,
        health,
        server,
        tx,
    }
}

#[tokio::test(start_paused = true)]
async fn the_agent_reports_queued_changes_syncs_and_node_eligibility() {
    let Observed {
        mode,
        sync: _,
        clock,
        health,
        server,
        tx,
    } = start_observed();

    // An EndpointSlice whose change happened 1 s after kproxy started.
    let trigger = rfc3339_nano(Some(clock.wall_now() + Duration::from_secs(1)));
    let mut slice = simple_slice(
        "a",
        "a-1",
        json!([{"addresses": ["10.0.0.1"], "nodeName": NODE}]),
    );
    slice.metadata.annotations = Some([(TRIGGER_TIME_ANNOTATION.to_owned(), trigger)].into());
    tokio::time::advance(Duration::from_secs(3)).await;
    let own_node = || Object::Node(Box::new(node(NODE, None, &["192.168.0.2"])));
    for ev in [
        Event::Replace(Kind::Service, vec![svc("a", "172.30.0.1")]),
        Event::Replace(
            Kind::EndpointSlice,
            vec![Object::EndpointSlice(Box::new(slice))],
        ),
        Event::Replace(Kind::Node, vec![own_node()]),
    ] {
        tx.send(ev).await.unwrap();
    }
    settle().await;
    assert_eq!(mode.calls().len(), 1);
    let (code, body) = healthz(&health, "/healthz");
    assert_eq!(code, 200);
    assert_eq!(body["status"]["IPv4"]["healthy"], json!(true), "{body}");
    assert_eq!(
        metric(&server, "kubeproxy_sync_proxy_rules_service_changes_total"),
        1.0
    );
    assert_eq!(
        metric(
            &server,
            "kubeproxy_sync_proxy_rules_service_changes_pending"
        ),
        0.0
    );
    assert!(metric(&server, "kubeproxy_sync_proxy_rules_last_timestamp_seconds") > 0.0);
    assert_eq!(
        metric(
            &server,
            "kubeproxy_network_programming_duration_seconds_bucket{le=\"2\"}"
        ),
        1.0,
        "programmed 2 s after the trigger"
    );

    // The data plane starts failing: the queued change stays unapplied past 2 x syncPeriod.
    mode.set_failing(true);
    tx.send(Event::Apply(svc("b", "172.30.0.2"))).await.unwrap();
    settle().await;
    assert_eq!(
        metric(
            &server,
            "kubeproxy_sync_proxy_rules_service_changes_pending"
        ),
        1.0
    );
    tokio::time::advance(Duration::from_secs(59)).await;
    settle().await;
    assert_eq!(healthz(&health, "/livez").0, 200, "59 s: not late yet");
    tokio::time::advance(Duration::from_secs(2)).await;
    settle().await;
    assert!(mode.calls().len() > 2, "failed syncs were retried");
    assert_eq!(healthz(&health, "/livez").0, 503);
    assert_eq!(healthz(&health, "/healthz").0, 503);
    assert!(
        metric(
            &server,
            "kubeproxy_sync_proxy_rules_nftables_sync_failures_total"
        ) >= 1.0
    );

    // It recovers at the next retry (at most 30 s away).
    mode.set_failing(false);
    tokio::time::advance(Duration::from_secs(31)).await;
    settle().await;
    assert_eq!(healthz(&health, "/livez").0, 200);

    // The own Node is marked for deletion: /healthz fails, /livez does not.
    let mut n = node(NODE, None, &["192.168.0.2"]);
    n.metadata.deletion_timestamp =
        Some(serde_json::from_value(json!("2024-01-01T00:00:00Z")).unwrap());
    tx.send(Event::Apply(Object::Node(Box::new(n))))
        .await
        .unwrap();
    settle().await;
    let (code, body) = healthz(&health, "/healthz");
    assert_eq!((code, &body["nodeEligible"]), (503, &json!(false)));
    assert_eq!(healthz(&health, "/livez").0, 200);
}

/// Steps: a first sync; at the next periodic check the mode reports a deleted chain and the
/// repairing sync fails -> `/healthz` 503 and the drift counted by kind; the retry succeeds ->
/// 200 again.
#[tokio::test(start_paused = true)]
async fn drift_is_counted_by_kind_and_unhealthy_until_a_sync_repairs_it() {
    let Observed {
        mode,
        sync,
        clock: _,
        health,
        server,
        tx,
    } = start_observed();
    let own_node = Object::Node(Box::new(node(NODE, None, &["192.168.0.2"])));
    for ev in [
        Event::Replace(Kind::Service, vec![svc("a", "172.30.0.1")]),
        Event::Replace(Kind::EndpointSlice, vec![]),
        Event::Replace(Kind::Node, vec![own_node]),
    ] {
        tx.send(ev).await.unwrap();
    }
    settle().await;
    assert_eq!(healthz(&health, "/healthz").0, 200);

    mode.drift_next(vec![Drift {
        kind: "chain",
        what: "chain services deleted".into(),
    }]);
    mode.set_failing(true);
    tokio::time::advance(sync).await;
    settle().await;
    assert_eq!(
        mode.calls().len(),
        2,
        "the periodic check found drift and synced"
    );
    assert_eq!(healthz(&health, "/healthz").0, 503, "a repair is pending");
    assert_eq!(
        metric(&server, "kproxy_drift_detected_total{kind=\"chain\"}"),
        1.0
    );

    mode.set_failing(false);
    tokio::time::advance(Duration::from_secs(2)).await;
    settle().await;
    assert!(mode.calls().len() >= 3);
    assert_eq!(healthz(&health, "/healthz").0, 200, "repaired");
}

/// Steps: the mode reports a port the kernel refused -> one `FailedToProgram` Warning event on
/// its Service; later syncs while it stays refused add none.
#[tokio::test(start_paused = true)]
async fn a_port_the_kernel_refused_is_reported_once_as_an_event() {
    let mode = RecordingMode::default();
    let refused = ServicePortName::new("default", "a", "", Protocol::Tcp);
    mode.set_refused(vec![refused]);
    let sink = Arc::new(MemorySink::default());
    let observer = Observer::new(None, None, None).with_events(sink.clone());
    let (tx, rx) = mpsc::channel(16);
    let periods = Periods {
        sync: Duration::from_secs(30),
        min_sync: Duration::from_secs(1),
    };
    tokio::spawn(agent::run_observed(
        Tracker::new(opts()),
        rx,
        Box::new(mode.clone()),
        periods,
        std::future::pending(),
        observer,
    ));
    let own_node = Object::Node(Box::new(node(NODE, None, &["192.168.0.2"])));
    for ev in [
        Event::Replace(Kind::Service, vec![svc("a", "172.30.0.1")]),
        Event::Replace(Kind::EndpointSlice, vec![]),
        Event::Replace(Kind::Node, vec![own_node]),
    ] {
        tx.send(ev).await.unwrap();
    }
    settle().await;
    tokio::time::advance(Duration::from_secs(31)).await;
    settle().await;
    assert!(mode.calls().len() >= 2, "two syncs");
    let events = sink.events.lock().unwrap();
    let refused: Vec<_> = events
        .iter()
        .filter(|e| e.reason == events::REFUSED_REASON)
        .collect();
    assert_eq!(refused.len(), 1, "{events:?}");
    assert!(refused[0].warning && refused[0].note.contains("default/a"));
}
