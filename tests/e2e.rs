//! End to end: the real kproxy binary, in a node network namespace, watching the in-process test
//! API server, programs nftables so that real connections from a pod reach the Service's
//! endpoints as they are created, scaled and deleted; its health, metrics and Service
//! health-check ports answer, and its Starting event reaches the API.
//!
//! Needs root (network namespaces, nftables); skipped with a message otherwise.
//!
//! The API server is a task of this test process, but its listening socket is created on a
//! thread inside the node namespace: a socket stays in the namespace it was made in, so kproxy
//! reaches it on the node's 127.0.0.1 and nothing listens in the host's namespace.

use kproxy_test_apiserver as apiserver;
mod support;

use std::{
    net::{IpAddr, SocketAddr},
    time::Duration,
};

use anyhow::Result;
use apiserver::ApiServer;
use k8s_openapi::api::core::v1::Service;
use kproxy_testbed::{NsProcess, Outcome, TestBed, Where, process::run_in, server::Proto};
use serde_json::{Value, json};
use support::{NODE, node, service, slice};
use tokio::time::Instant;

const BIN: &str = env!("CARGO_BIN_EXE_kproxy");
const NODE_IP: &str = "192.168.0.2";
const CLIENT: &str = "10.244.1.20";
const EP1: &str = "10.244.1.10";
const EP2: &str = "10.244.1.11";
const CLUSTER_IP: &str = "10.96.0.10";
const LB_CLUSTER_IP: &str = "10.96.0.20";
const HC_PORT: u16 = 32100;
const DEADLINE: Duration = Duration::from_secs(20);

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .map(|s| s.lines().any(|l| l.starts_with("Uid:\t0\t")))
        .unwrap_or(false)
}

fn web_service(name: &str, cluster_ip: &str, extra: Value) -> Service {
    let mut v = json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"clusterIP": cluster_ip, "clusterIPs": [cluster_ip], "ipFamilies": ["IPv4"],
                 "ports": [{"name": "http", "port": 80, "protocol": "TCP", "targetPort": 8080}]}
    });
    support::merge(&mut v["spec"], extra);
    service(v)
}

/// The slice of `default/<svc>` with these ready endpoints on this node.
fn endpoints(svc: &str, ips: &[&str]) -> k8s_openapi::api::discovery::v1::EndpointSlice {
    let eps: Vec<Value> = ips
        .iter()
        .map(|ip| json!({"addresses": [ip], "conditions": {"ready": true, "serving": true}, "nodeName": NODE}))
        .collect();
    slice(json!({
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": format!("{svc}-1"), "namespace": "default",
                     "labels": {"kubernetes.io/service-name": svc}},
        "addressType": "IPv4",
        "endpoints": eps,
        "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}]
    }))
}

fn answered_by(o: &Outcome) -> Option<&str> {
    match o {
        Outcome::Answered { by, .. } => Some(by.as_str()),
        _ => None,
    }
}

/// Probes the cluster IP from the client pod until `done` says the last `window` outcomes are
/// what the test waits for; fails with the outcomes seen after [`DEADLINE`].
async fn probe_until(
    bed: &TestBed,
    what: &str,
    window: usize,
    done: impl Fn(&[Outcome]) -> bool,
) -> Result<Vec<Outcome>> {
    let dest = SocketAddr::new(ip(CLUSTER_IP), 80);
    let deadline = Instant::now() + DEADLINE;
    let mut seen: Vec<Outcome> = Vec::new();
    loop {
        seen.push(bed.probe(Proto::Tcp, ip(CLIENT), dest).await?);
        let last = &seen[seen.len().saturating_sub(window)..];
        if last.len() == window && done(last) {
            return Ok(seen);
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "timed out waiting for {what}; outcomes: {:?}",
            &seen[seen.len().saturating_sub(10)..]
        );
    }
}

/// `curl -si URL` inside the node namespace: (status code, body).
async fn get(bed: &TestBed, url: &str) -> Result<(u16, String)> {
    let out = run_in(&bed.node, "curl", &["-si", "--max-time", "5", url]).await?;
    let code = out
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| anyhow::anyhow!("no status line in {out:?}"))?;
    let body = out.split("\r\n\r\n").nth(1).unwrap_or("").to_string();
    Ok((code, body))
}

/// Fails the test with kproxy's output, which is what explains a failure here.
fn report<T>(e: anyhow::Error, kproxy: &NsProcess) -> T {
    panic!("{e:#}\nkproxy output:\n{}", kproxy.output().join("\n"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kproxy_watching_the_api_routes_a_pods_connections_to_the_endpoints_as_they_change() {
    if !is_root() {
        eprintln!("skipping: the end-to-end test needs root (network namespaces, nftables)");
        return;
    }
    let mut bed = TestBed::new(&[ip(NODE_IP)]).await.unwrap();
    for pod in [CLIENT, EP1, EP2] {
        bed.add_pod(ip(pod)).await.unwrap();
    }
    for ep in [EP1, EP2] {
        let addr = SocketAddr::new(ip(ep), 8080);
        bed.serve(Where::Pod(ip(ep)), Proto::Tcp, addr, None)
            .await
            .unwrap();
    }
    let listener = bed
        .node
        .run(|| Ok(std::net::TcpListener::bind("127.0.0.1:0")?))
        .unwrap();
    let api = ApiServer::start_on(listener).await;
    api.apply(&node(NODE, None, &[NODE_IP]));

    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.yaml");
    let kubeconfig = api.kubeconfig();
    // With --config, upstream (and kproxy) ignore --kubeconfig: the file must name it too.
    let cfg = json!({
        "clientConnection": {"kubeconfig": kubeconfig},
        "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
        "kind": "KubeProxyConfiguration",
        "mode": "nftables",
        "clusterCIDR": "10.244.0.0/16",
        "healthzBindAddress": "127.0.0.1:10256",
        "metricsBindAddress": "127.0.0.1:10249",
    });
    std::fs::write(&config, cfg.to_string()).unwrap();
    let args: Vec<String> = [
        "--config",
        config.to_str().unwrap(),
        "--kubeconfig",
        kubeconfig.to_str().unwrap(),
        "--hostname-override",
        NODE,
        "--proxy-mode",
        "nftables",
    ]
    .map(String::from)
    .to_vec();
    let mut kproxy = NsProcess::spawn(&bed.node, BIN, &args, &[("RUST_LOG", "info")]).unwrap();
    kproxy
        .wait_for_line("initial sync complete", DEADLINE)
        .await
        .unwrap();

    // The start-up event, on the own Node.
    api.wait_for("the Starting event", |s| {
        s.events().iter().any(|e| {
            e.event["reason"] == "Starting"
                && e.event["regarding"]["kind"] == "Node"
                && e.event["regarding"]["name"] == NODE
        })
    })
    .await;

    // A Service with one endpoint: the pod's connection to the cluster IP reaches it.
    api.apply(&web_service("web", CLUSTER_IP, json!({})));
    api.apply(&endpoints("web", &[EP1]));
    let ep1 = format!("{EP1}:8080");
    let ep2 = format!("{EP2}:8080");
    probe_until(&bed, "the first endpoint", 1, |o| {
        answered_by(&o[0]) == Some(ep1.as_str())
    })
    .await
    .unwrap_or_else(|e| report(e, &kproxy));

    // Scaled up: both endpoints answer.
    api.apply(&endpoints("web", &[EP1, EP2]));
    let seen = probe_until(&bed, "the second endpoint", 1, |o| {
        answered_by(&o[0]) == Some(ep2.as_str())
    })
    .await
    .unwrap_or_else(|e| report(e, &kproxy));
    assert!(seen.iter().all(|o| answered_by(o).is_some()), "{seen:?}");

    // Scaled down to the second: only it answers from then on.
    api.apply(&endpoints("web", &[EP2]));
    let seen = probe_until(&bed, "only the second endpoint", 8, |o| {
        o.iter().all(|o| answered_by(o) == Some(ep2.as_str()))
    })
    .await
    .unwrap_or_else(|e| report(e, &kproxy));
    assert!(seen.iter().all(|o| answered_by(o).is_some()), "{seen:?}");

    // Health and metrics of the agent, inside the node.
    let (code, body) = get(&bed, "http://127.0.0.1:10256/healthz")
        .await
        .unwrap_or_else(|e| report(e, &kproxy));
    assert_eq!(code, 200, "{body}");
    let health: Value = serde_json::from_str(&body).unwrap();
    assert!(health["lastUpdated"].is_string(), "{body}");
    let (code, body) = get(&bed, "http://127.0.0.1:10249/metrics")
        .await
        .unwrap_or_else(|e| report(e, &kproxy));
    assert_eq!(code, 200);
    assert!(
        body.contains("kubeproxy_sync_proxy_rules_duration_seconds_bucket"),
        "{body}"
    );

    // An eTP=Local LoadBalancer Service with a local endpoint: its health-check port says 200.
    let lb = web_service(
        "lb",
        LB_CLUSTER_IP,
        json!({"type": "LoadBalancer", "externalTrafficPolicy": "Local",
               "healthCheckNodePort": HC_PORT,
               "ports": [{"name": "http", "port": 80, "protocol": "TCP", "targetPort": 8080,
                          "nodePort": 30080}]}),
    );
    api.apply(&lb);
    api.apply(&endpoints("lb", &[EP1]));
    let url = format!("http://{NODE_IP}:{HC_PORT}/");
    let deadline = Instant::now() + DEADLINE;
    let (code, body) = loop {
        match get(&bed, &url).await {
            Ok((200, body)) => break (200, body),
            last => assert!(
                Instant::now() < deadline,
                "health check port: {last:?}\nkproxy output:\n{}",
                kproxy.output().join("\n")
            ),
        }
    };
    assert_eq!(code, 200);
    let hc: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(hc["localEndpoints"], 1, "{body}");
    assert_eq!(hc["service"]["name"], "lb", "{body}");

    // Deleted: the cluster IP is no Service's any more and the connection is refused.
    assert!(api.delete::<Service>(Some("default"), "web"));
    probe_until(&bed, "the deleted Service to refuse", 1, |o| {
        matches!(o[0], Outcome::Refused { .. })
    })
    .await
    .unwrap_or_else(|e| report(e, &kproxy));

    kproxy.stop(Duration::from_secs(10)).await.unwrap();
    // Programmed rules outlive kproxy by design; the node namespace (and its tables) goes with
    // the bed.
    drop(bed);
}
