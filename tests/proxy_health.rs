//! Proxy health (`/healthz`, `/livez`): the timeout rule on paused tokio time, node eligibility,
//! the JSON upstream returns, and the real server on 127.0.0.1.

mod support;

use std::{
    sync::Arc,
    time::{Duration, UNIX_EPOCH},
};

use k8s_openapi::api::core::v1::Node;
use kproxy::health::{
    Probe, ProxyHealth, WallClock,
    http::{self, Handler, Request},
    run_proxy_health_server, serve_proxy_health,
};
use kproxy_modes::model::IpFamily;
use serde_json::{Value, json};
use support::http_client::get;

const SYNC: Duration = Duration::from_secs(30);
const V4: &[IpFamily] = &[IpFamily::V4];

/// A health tracker whose wall clock starts at 2023-11-14T22:13:20Z.
fn health() -> ProxyHealth {
    let start = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    ProxyHealth::new(2 * SYNC, WallClock::starting_at(start))
}

fn probe(h: &ProxyHealth, path: &str) -> (u16, Value) {
    let req = Request {
        method: "GET".into(),
        path: path.into(),
        headers: vec![],
    };
    let resp = serve_proxy_health(h, &req);
    (resp.status, serde_json::from_str(&resp.body).unwrap())
}

#[tokio::test(start_paused = true)]
async fn a_fresh_proxy_is_healthy_and_reports_upstreams_fields() {
    let h = health();
    let req = Request {
        method: "GET".into(),
        path: "/healthz".into(),
        headers: vec![],
    };
    let resp = serve_proxy_health(&h, &req);
    assert_eq!(resp.status, 200);
    assert_eq!(
        resp.body,
        r#"{"lastUpdated":"2023-11-14T22:13:20Z","currentTime":"2023-11-14T22:13:20Z","nodeEligible":true,"healthy":true}"#
    );
    let (code, livez) = probe(&h, "/livez");
    assert_eq!(code, 200);
    assert_eq!(
        livez.get("nodeEligible"),
        None,
        "/livez has no nodeEligible"
    );
}

#[tokio::test(start_paused = true)]
async fn a_queued_update_older_than_twice_the_sync_period_is_unhealthy_until_applied() {
    let h = health();
    h.updated(V4);
    tokio::time::advance(Duration::from_secs(5)).await;
    h.queued_update(V4);
    // A later change must not push the deadline out: the oldest pending one counts.
    tokio::time::advance(Duration::from_secs(30)).await;
    h.queued_update(V4);
    tokio::time::advance(Duration::from_secs(29)).await;
    assert!(h.is_healthy(), "59 s after queueing, within 2 x syncPeriod");
    assert_eq!(probe(&h, "/healthz").0, 200);

    tokio::time::advance(Duration::from_secs(1)).await;
    assert!(!h.is_healthy(), "60 s after queueing");
    let (code, body) = probe(&h, "/healthz");
    assert_eq!(code, 503);
    assert_eq!(body["healthy"], json!(false));
    assert_eq!(body["status"]["IPv4"]["healthy"], json!(false));
    // Unhealthy: lastUpdated is the last real update (t=0), not "now" (t=65 s).
    assert_eq!(body["lastUpdated"], json!("2023-11-14T22:13:20Z"));
    assert_eq!(body["currentTime"], json!("2023-11-14T22:14:25Z"));
    assert_eq!(probe(&h, "/livez").0, 503, "/livez follows the same rule");

    h.updated(V4);
    let (code, body) = probe(&h, "/healthz");
    assert_eq!(code, 200);
    assert_eq!(body["status"]["IPv4"]["healthy"], json!(true));
    assert_eq!(
        body["status"]["IPv4"]["lastUpdated"],
        json!("2023-11-14T22:14:25Z")
    );
    assert_eq!(h.responses(Probe::Healthz, 503), 1);
    assert_eq!(h.responses(Probe::Healthz, 200), 2);
    assert_eq!(h.responses(Probe::Livez, 503), 1);
}

#[tokio::test(start_paused = true)]
async fn a_proxy_that_never_synced_stays_healthy_while_it_starts_up() {
    let h = health();
    h.queued_update(V4);
    tokio::time::advance(Duration::from_secs(600)).await;
    assert!(h.is_healthy());
    // Another family's late update is unhealthy once that family has synced before.
    h.updated(&[IpFamily::V6]);
    h.queued_update(&[IpFamily::V6]);
    tokio::time::advance(2 * SYNC).await;
    let (code, body) = probe(&h, "/livez");
    assert_eq!(code, 503);
    assert_eq!(body["status"]["IPv6"]["healthy"], json!(false));
    assert_eq!(body["status"].get("IPv4"), None, "IPv4 never synced");
}

fn node(patch: Value) -> Node {
    let mut v = json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": support::NODE}});
    support::merge(&mut v, patch);
    serde_json::from_value(v).unwrap()
}

#[tokio::test(start_paused = true)]
async fn a_node_being_deleted_or_drained_by_the_autoscaler_fails_healthz_but_not_livez() {
    let h = health();
    let cases = [
        (
            "deletionTimestamp",
            node(json!({"metadata": {"deletionTimestamp": "2024-01-01T00:00:00Z"}})),
        ),
        (
            "autoscaler taint",
            node(
                json!({"spec": {"taints": [{"key": "ToBeDeletedByClusterAutoscaler", "effect": "NoSchedule"}]}}),
            ),
        ),
    ];
    for (what, n) in cases {
        h.sync_node(Some(&n));
        let (code, body) = probe(&h, "/healthz");
        assert_eq!(code, 503, "{what}");
        assert_eq!(body["nodeEligible"], json!(false), "{what}");
        assert_eq!(
            body["healthy"],
            json!(true),
            "{what}: the proxy itself is fine"
        );
        assert_eq!(
            probe(&h, "/livez").0,
            200,
            "{what}: /livez ignores the node"
        );
    }
    let other_taint = node(json!({"spec": {"taints": [{"key": "other", "effect": "NoSchedule"}]}}));
    h.sync_node(Some(&other_taint));
    assert_eq!(probe(&h, "/healthz").0, 200);
    h.sync_node(None);
    assert_eq!(probe(&h, "/healthz").0, 503, "a node that does not exist");
}

async fn serve(h: Arc<ProxyHealth>) -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let handler: Handler = Arc::new(move |req| serve_proxy_health(&h, req));
    tokio::spawn(http::serve(listener, handler));
    addr
}

#[tokio::test]
async fn the_health_server_answers_json_with_upstreams_headers_over_http() {
    let h = Arc::new(ProxyHealth::new(2 * SYNC, WallClock::new()));
    h.updated(V4);
    let addr = serve(h.clone()).await;

    let r = get(addr, "/healthz").await.unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("application/json"));
    assert_eq!(r.header("x-content-type-options"), Some("nosniff"));
    let body: Value = serde_json::from_str(&r.body).unwrap();
    for field in [
        "lastUpdated",
        "currentTime",
        "nodeEligible",
        "healthy",
        "status",
    ] {
        assert!(body.get(field).is_some(), "{field} missing in {body}");
    }
    assert_eq!(
        body["lastUpdated"], body["currentTime"],
        "healthy: lastUpdated is now"
    );

    h.sync_node(Some(&node(
        json!({"metadata": {"deletionTimestamp": "2024-01-01T00:00:00Z"}}),
    )));
    assert_eq!(get(addr, "/healthz").await.unwrap().status, 503);
    assert_eq!(get(addr, "/livez").await.unwrap().status, 200);
    assert_eq!(get(addr, "/metrics").await.unwrap().status, 404);
}

#[tokio::test]
async fn a_healthz_bind_failure_is_fatal_only_with_bind_address_hard_fail() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let h = Arc::new(ProxyHealth::new(2 * SYNC, WallClock::new()));
    let err = run_proxy_health_server(addr.clone(), h.clone(), true).await;
    assert!(err.is_err(), "hard fail returns the bind error");

    let soft = tokio::spawn(run_proxy_health_server(addr, h, false));
    tokio::task::yield_now().await;
    assert!(
        !soft.is_finished(),
        "without hard fail the server keeps retrying"
    );
    soft.abort();
}
