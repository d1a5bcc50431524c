//! Events: what kproxy records through the API (events.k8s.io/v1), with which reason, type and
//! regarding object, and that an invalid Service is reported once, not at every sync.

use kproxy_test_apiserver as apiserver;
mod support;

use std::{sync::Arc, time::Duration};

use apiserver::{ApiServer, RecordedEvent};
use kproxy::{
    agent::Observer,
    desired::{self, ProxyOptions},
    events::{self, EventSink, KubeSink, MemorySink, ProxyEvent},
    health::{ProxyHealth, WallClock, service::ServiceHealthServer},
    source::api::client::{ClientSettings, build_client},
};
use kproxy_modes::model::DesiredState;
use serde_json::json;
use support::*;

async fn sink_for(server: &ApiServer) -> Arc<dyn EventSink> {
    let settings = ClientSettings {
        kubeconfig: Some(server.kubeconfig()),
        qps: 100.0,
        burst: 100,
        content_type: "application/json".into(),
        ..ClientSettings::default()
    };
    let client = build_client(&settings).await.unwrap();
    Arc::new(KubeSink::spawn(client, NODE))
}

/// Waits until the server has `n` events; the sink sends them in order, so a marker published
/// last proves every earlier one was processed.
async fn wait_events(server: &ApiServer, n: usize) -> Vec<RecordedEvent> {
    server
        .wait_for(&format!("{n} events"), |s| s.events().len() >= n)
        .await;
    server.events()
}

fn field<'a>(e: &'a RecordedEvent, path: &[&str]) -> &'a str {
    let mut v = &e.event;
    for p in path {
        v = &v[p];
    }
    v.as_str()
        .unwrap_or_else(|| panic!("{path:?} missing in {}", e.event))
}

#[tokio::test]
async fn the_starting_event_is_a_normal_event_on_the_own_node_from_kube_proxy() {
    let server = ApiServer::start().await;
    let sink = sink_for(&server).await;
    sink.publish(ProxyEvent::starting(NODE));

    let got = wait_events(&server, 1).await;
    let e = &got[0];
    assert_eq!(e.method, "POST");
    // A Node is cluster-scoped: its events live in "default", as upstream's do.
    assert_eq!(e.namespace, "default");
    assert_eq!(field(e, &["reason"]), "Starting");
    assert_eq!(field(e, &["type"]), "Normal");
    assert_eq!(field(e, &["action"]), "StartKubeProxy");
    assert_eq!(field(e, &["note"]), "Starting kproxy.");
    assert_eq!(field(e, &["reportingController"]), "kube-proxy");
    assert_eq!(field(e, &["reportingInstance"]), "kube-proxy-node-a");
    assert_eq!(field(e, &["regarding", "kind"]), "Node");
    assert_eq!(field(e, &["regarding", "name"]), NODE);
}

/// A Service `ns1/name` whose sessionAffinity is unknown: skipped with that reason.
fn invalid_state(name: &str, affinity: &str) -> DesiredState {
    let svc = simple_service(name, json!({"sessionAffinity": affinity}));
    let s = compute(&[svc], &[]);
    assert_eq!(
        s.skipped.len(),
        1,
        "the Service is skipped: {:?}",
        s.skipped
    );
    s
}

#[tokio::test]
async fn an_invalid_service_is_reported_once_however_often_it_is_synced() {
    let server = ApiServer::start().await;
    let sink = sink_for(&server).await;
    let mut observer = Observer::default().with_events(sink.clone());
    let bad = invalid_state("bad", "Sticky");
    for _ in 0..3 {
        observer.taken(&bad);
    }
    sink.publish(ProxyEvent::starting(NODE)); // the marker

    let got = wait_events(&server, 2).await;
    assert_eq!(got.len(), 2, "one InvalidService event, then the marker");
    let e = &got[0];
    assert_eq!(e.namespace, "ns1");
    assert_eq!(field(e, &["reason"]), "InvalidService");
    assert_eq!(field(e, &["type"]), "Warning");
    assert_eq!(field(e, &["regarding", "kind"]), "Service");
    assert_eq!(field(e, &["regarding", "namespace"]), "ns1");
    assert_eq!(field(e, &["regarding", "name"]), "bad");
    assert_eq!(field(e, &["note"]), bad.skipped[0].reason);
    assert_eq!(field(&got[1], &["reason"]), "Starting");
}

#[test]
fn a_new_reason_or_a_service_that_turns_invalid_again_is_reported_again() {
    let sink = Arc::new(MemorySink::default());
    let mut observer = Observer::default().with_events(sink.clone());
    let reasons = || -> Vec<String> {
        let events = sink.events.lock().unwrap();
        events.iter().map(|e| e.note.clone()).collect()
    };
    observer.taken(&invalid_state("bad", "Sticky"));
    observer.taken(&invalid_state("bad", "Sticky"));
    assert_eq!(reasons().len(), 1);
    observer.taken(&invalid_state("bad", "Glue"));
    assert_eq!(reasons().len(), 2, "another reason: {:?}", reasons());
    assert!(reasons()[1].contains("Glue"));
    // Fixed, then broken the same way again.
    observer.taken(&compute(&[simple_service("bad", json!({}))], &[]));
    assert_eq!(reasons().len(), 2, "a valid Service reports nothing");
    observer.taken(&invalid_state("bad", "Glue"));
    assert_eq!(reasons().len(), 3);
}

#[tokio::test]
async fn a_health_check_port_that_cannot_be_opened_records_a_warning_on_its_service() {
    let server = ApiServer::start().await;
    let sink = sink_for(&server).await;
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = busy.local_addr().unwrap().port();
    let svc = simple_service(
        "lb",
        json!({
            "type": "LoadBalancer", "externalTrafficPolicy": "Local",
            "healthCheckNodePort": port,
            "ports": [{"name": "p80", "port": 80, "protocol": "TCP", "nodePort": 30080}]
        }),
    );
    let opts = ProxyOptions {
        node_port_addresses: vec!["127.0.0.0/8".into()],
        ..ProxyOptions::for_node(NODE)
    };
    let n = node(NODE, None, &["127.0.0.1"]);
    let local = ["127.0.0.1".parse().unwrap()];
    let state = desired::compute_with_local_addresses(&opts, &[svc], &[], Some(&n), &local);
    let health = Arc::new(ProxyHealth::new(Duration::from_secs(60), WallClock::new()));
    let mut hcs = ServiceHealthServer::new(NODE, health)
        .on_failure(events::health_check_hook(NODE, sink.clone()));

    hcs.reconcile(&state).await;

    let got = wait_events(&server, 1).await;
    let e = &got[0];
    assert_eq!(field(e, &["reason"]), "FailedToStartServiceHealthcheck");
    assert_eq!(field(e, &["type"]), "Warning");
    assert_eq!(field(e, &["action"]), "Listen");
    assert_eq!(field(e, &["regarding", "kind"]), "Service");
    assert_eq!(field(e, &["regarding", "name"]), "lb");
    assert_eq!(e.namespace, "ns1");
    let note = field(e, &["note"]);
    assert!(
        note.starts_with(&format!(
            "node {NODE} failed to start healthcheck \"ns1/lb\" on port {port}"
        )),
        "{note}"
    );
    // The port really was busy: nothing of ours answers on it.
    assert!(hcs.open_ports().is_empty());
    drop(busy);
}
