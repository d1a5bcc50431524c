//! Service health checks: servers on healthCheckNodePorts follow the desired state, answer
//! upstream's JSON and headers, free their port when the Service goes, and report ports that
//! cannot be opened without blocking the others.

mod support;

use std::{
    net::{Ipv4Addr, SocketAddr},
    sync::{Arc, Mutex},
    time::Duration,
};

use kproxy::{
    desired::{self, ProxyOptions},
    health::{
        ProxyHealth, WallClock,
        service::{HealthCheckFailure, ServiceHealthServer},
    },
};
use kproxy_modes::model::{DesiredState, IpFamily};
use serde_json::{Value, json};
use support::{http_client::get, *};

/// A port nobody listens on right now.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn local(port: u16) -> SocketAddr {
    SocketAddr::from((Ipv4Addr::LOCALHOST, port))
}

fn lb_service(name: &str, ip: &str, hc_port: u16) -> k8s_openapi::api::core::v1::Service {
    simple_service(
        name,
        json!({
            "type": "LoadBalancer", "clusterIP": ip, "externalTrafficPolicy": "Local",
            "healthCheckNodePort": hc_port,
            "ports": [{"name": "p80", "port": 80, "protocol": "TCP", "nodePort": 30000 + hc_port % 2000}]
        }),
    )
}

fn ep(ip: &str, node: &str, ready: bool) -> Value {
    json!({"addresses": [ip], "conditions": {"ready": ready, "serving": ready}, "nodeName": node})
}

/// Health-check ports listen only on loopback: nodePortAddresses 127.0.0.0/8.
fn state(services: &[k8s_openapi::api::core::v1::Service], eps: &[(&str, Value)]) -> DesiredState {
    let opts = ProxyOptions {
        node_port_addresses: vec!["127.0.0.0/8".into()],
        ..ProxyOptions::for_node(NODE)
    };
    let slices: Vec<_> = eps
        .iter()
        .map(|(svc, e)| simple_slice(svc, &format!("{svc}-1"), e.clone()))
        .collect();
    let n = node(NODE, None, &["127.0.0.1"]);
    // The node's loopback address, as the agent would read it.
    let local = ["127.0.0.1".parse().unwrap()];
    desired::compute_with_local_addresses(&opts, services, &slices, Some(&n), &local)
}

fn server() -> (ServiceHealthServer, Arc<ProxyHealth>) {
    let health = Arc::new(ProxyHealth::new(Duration::from_secs(60), WallClock::new()));
    (ServiceHealthServer::new(NODE, health.clone()), health)
}

#[tokio::test]
async fn a_local_policy_service_gets_a_health_check_that_follows_its_local_endpoints() {
    let port = free_port();
    let svc = lb_service("lb", "172.30.0.1", port);
    let (mut hcs, _health) = server();

    let two_local = ep_list(&[
        ep("10.0.0.1", NODE, true),
        ep("10.0.0.2", NODE, true),
        ep("10.0.1.1", "node-b", true),
        ep("10.0.0.3", NODE, false),
    ]);
    let s = state(std::slice::from_ref(&svc), &[("lb", two_local)]);
    let p = s
        .family(IpFamily::V4)
        .unwrap()
        .services
        .values()
        .next()
        .unwrap();
    assert_eq!(
        p.health_check_node_port,
        Some(port),
        "the compute kept the port"
    );
    hcs.reconcile(&s).await;
    let r = get(local(port), "/").await.unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.header("x-load-balancing-endpoint-weight"), Some("2"));
    assert_eq!(r.header("x-content-type-options"), Some("nosniff"));
    assert_eq!(r.header("content-type"), Some("application/json"));
    assert_eq!(
        r.body,
        "{\n\t\"service\": {\n\t\t\"namespace\": \"ns1\",\n\t\t\"name\": \"lb\"\n\t},\n\t\"localEndpoints\": 2,\n\t\"serviceProxyHealthy\": true\n}"
    );

    let remote_only = ep_list(&[ep("10.0.1.1", "node-b", true)]);
    hcs.reconcile(&state(std::slice::from_ref(&svc), &[("lb", remote_only)]))
        .await;
    let r = get(local(port), "/any/path").await.unwrap();
    assert_eq!(r.status, 503);
    assert_eq!(r.header("x-load-balancing-endpoint-weight"), Some("0"));
    let body: Value = serde_json::from_str(&r.body).unwrap();
    assert_eq!(body["localEndpoints"], json!(0));

    hcs.reconcile(&state(&[], &[])).await;
    assert!(hcs.open_ports().is_empty());
    assert!(
        get(local(port), "/").await.is_err(),
        "the port is closed when the Service goes"
    );
    std::net::TcpListener::bind(local(port)).expect("and free to bind again");
}

fn ep_list(eps: &[Value]) -> Value {
    Value::Array(eps.to_vec())
}

#[tokio::test]
async fn an_unhealthy_proxy_fails_service_health_checks_even_with_local_endpoints() {
    let port = free_port();
    let svc = lb_service("lb", "172.30.0.1", port);
    let (mut hcs, health) = server();
    let s = state(&[svc], &[("lb", ep_list(&[ep("10.0.0.1", NODE, true)]))]);
    hcs.reconcile(&s).await;
    assert_eq!(get(local(port), "/").await.unwrap().status, 200);

    // Synced once, then an update stays queued past the 60 s timeout (real time is not
    // paused here, so the health object gets a zero timeout instead).
    let late = Arc::new(ProxyHealth::new(Duration::ZERO, WallClock::new()));
    late.updated(&[IpFamily::V4]);
    late.queued_update(&[IpFamily::V4]);
    let mut hcs2 = ServiceHealthServer::new(NODE, late);
    hcs.shutdown().await;
    hcs2.reconcile(&s).await;
    let r = get(local(port), "/").await.unwrap();
    assert_eq!(r.status, 503);
    let body: Value = serde_json::from_str(&r.body).unwrap();
    assert_eq!(body["serviceProxyHealthy"], json!(false));
    assert_eq!(body["localEndpoints"], json!(1));
    assert!(health.is_healthy(), "the first server's proxy was fine");
}

#[tokio::test]
async fn a_port_that_cannot_be_opened_is_reported_and_does_not_block_others() {
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let busy_port = busy.local_addr().unwrap().port();
    let ok_port = free_port();
    let failures: Arc<Mutex<Vec<HealthCheckFailure>>> = Default::default();
    let seen = failures.clone();
    let (hcs, _health) = server();
    let mut hcs = hcs.on_failure(Arc::new(move |f| seen.lock().unwrap().push(f.clone())));
    let counter = hcs.failure_counter();

    let services = [
        lb_service("a", "172.30.0.1", busy_port),
        lb_service("b", "172.30.0.2", ok_port),
    ];
    let s = state(&services, &[("b", ep_list(&[ep("10.0.0.1", NODE, true)]))]);
    hcs.reconcile(&s).await;
    {
        let f = failures.lock().unwrap();
        assert_eq!(f.len(), 1);
        assert_eq!((f[0].name.as_str(), f[0].port), ("a", busy_port));
        assert_eq!(
            HealthCheckFailure::REASON,
            "FailedToStartServiceHealthcheck"
        );
    }
    assert_eq!(counter.load(std::sync::atomic::Ordering::Relaxed), 1);
    assert_eq!(get(local(ok_port), "/").await.unwrap().status, 200);

    // Retried at the next reconcile, and opened once the port is free.
    drop(busy);
    hcs.reconcile(&s).await;
    assert_eq!(failures.lock().unwrap().len(), 1);
    let r = get(local(busy_port), "/").await.unwrap();
    assert_eq!(r.status, 503, "a has no endpoints");
    assert_eq!(hcs.open_ports().len(), 2);
}
