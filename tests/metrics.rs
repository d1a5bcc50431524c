//! The metrics server over HTTP on 127.0.0.1: upstream's metric names, types, help and buckets
//! per mode, kproxy's own metrics, `/proxyMode`, `/configz` and `/healthz`.

mod support;

use std::{
    sync::Arc,
    time::{Duration, SystemTime},
};

use kproxy::{
    config::{KubeProxyConfiguration, ProxyMode},
    health::{
        ProxyHealth, WallClock,
        http::{self, Request},
        serve_proxy_health,
    },
    metrics::{Metrics, MetricsServer, reason_class, to_prometheus_text},
};
use serde_json::{Value, json};
use support::{http_client::get, *};

async fn serve(metrics: &Arc<Metrics>, cfg: &KubeProxyConfiguration) -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(http::serve(
        listener,
        MetricsServer::new(metrics, cfg).handler(),
    ));
    addr
}

fn lines(text: &str) -> Vec<&str> {
    text.lines().collect()
}

/// A state with one eTP=Local Service without local endpoints and one skipped Service.
fn state() -> kproxy_modes::model::DesiredState {
    let lb = simple_service(
        "lb",
        json!({"type": "NodePort", "externalTrafficPolicy": "Local",
               "ports": [{"name": "p80", "port": 80, "protocol": "TCP", "nodePort": 30080}]}),
    );
    let bad = simple_service(
        "bad",
        json!({"clusterIP": "172.30.0.9", "sessionAffinity": "Sticky"}),
    );
    let remote = simple_slice(
        "lb",
        "lb-1",
        json!([{"addresses": ["10.0.1.1"], "conditions": {"ready": true}, "nodeName": "node-b"}]),
    );
    compute(&[lb, bad], &[remote])
}

#[tokio::test]
async fn metrics_have_upstreams_names_types_help_and_buckets() {
    let clock = WallClock::new();
    let health = Arc::new(ProxyHealth::new(Duration::from_secs(60), clock));
    let m = Arc::new(Metrics::new(ProxyMode::Nftables, clock).with_health(health.clone()));
    m.changes_queued(3, 2, 2, 1);
    m.sync_finished(true, Duration::from_millis(3), true);
    m.sync_finished(false, Duration::from_millis(1), true);
    m.sync_finished(true, Duration::from_millis(2), false);
    m.observe_network_programming(SystemTime::now() - Duration::from_millis(1500));
    m.observe_state(&state());
    let req = Request {
        method: "GET".into(),
        path: "/healthz".into(),
        headers: vec![],
    };
    serve_proxy_health(&health, &req);

    let addr = serve(&m, &KubeProxyConfiguration::default()).await;
    let r = get(addr, "/metrics").await.unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(
        r.header("content-type"),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
    let text = r.body;
    let l = lines(&text);
    let expect = [
        "# HELP kubeproxy_sync_proxy_rules_duration_seconds [ALPHA] SyncProxyRules latency in seconds",
        "# TYPE kubeproxy_sync_proxy_rules_duration_seconds histogram",
        "kubeproxy_sync_proxy_rules_duration_seconds_bucket{le=\"0.001\"} 1",
        "kubeproxy_sync_proxy_rules_duration_seconds_bucket{le=\"0.004\"} 3",
        "kubeproxy_sync_proxy_rules_duration_seconds_bucket{le=\"16.384\"} 3",
        "kubeproxy_sync_proxy_rules_duration_seconds_bucket{le=\"+Inf\"} 3",
        "kubeproxy_sync_proxy_rules_duration_seconds_count 3",
        "# TYPE kubeproxy_sync_full_proxy_rules_duration_seconds histogram",
        "kubeproxy_sync_full_proxy_rules_duration_seconds_count 2",
        "kubeproxy_sync_partial_proxy_rules_duration_seconds_count 1",
        "# HELP kubeproxy_network_programming_duration_seconds [ALPHA] In Cluster Network Programming Latency in seconds",
        "kubeproxy_network_programming_duration_seconds_bucket{le=\"0\"} 0",
        "kubeproxy_network_programming_duration_seconds_bucket{le=\"1\"} 0",
        "kubeproxy_network_programming_duration_seconds_bucket{le=\"2\"} 1",
        "kubeproxy_network_programming_duration_seconds_bucket{le=\"115\"} 1",
        "kubeproxy_network_programming_duration_seconds_bucket{le=\"300\"} 1",
        "# TYPE kubeproxy_sync_proxy_rules_last_timestamp_seconds gauge",
        "# TYPE kubeproxy_sync_proxy_rules_last_queued_timestamp_seconds gauge",
        "# HELP kubeproxy_sync_proxy_rules_service_changes_total [ALPHA] Cumulative proxy rules Service changes",
        "# TYPE kubeproxy_sync_proxy_rules_service_changes_total counter",
        "kubeproxy_sync_proxy_rules_service_changes_total 3",
        "# TYPE kubeproxy_sync_proxy_rules_endpoint_changes_total counter",
        "kubeproxy_sync_proxy_rules_endpoint_changes_total 2",
        "# TYPE kubeproxy_sync_proxy_rules_service_changes_pending gauge",
        "kubeproxy_sync_proxy_rules_service_changes_pending 2",
        "kubeproxy_sync_proxy_rules_endpoint_changes_pending 1",
        "# TYPE kubeproxy_proxy_healthz_total counter",
        "kubeproxy_proxy_healthz_total{code=\"200\"} 1",
        "# HELP kubeproxy_sync_proxy_rules_no_local_endpoints_total [ALPHA] Number of services with a Local traffic policy and no endpoints",
        "# TYPE kubeproxy_sync_proxy_rules_no_local_endpoints_total gauge",
        "kubeproxy_sync_proxy_rules_no_local_endpoints_total{traffic_policy=\"external\"} 1",
        "kubeproxy_sync_proxy_rules_no_local_endpoints_total{traffic_policy=\"internal\"} 0",
        "# TYPE kubeproxy_sync_proxy_rules_nftables_sync_failures_total counter",
        "kubeproxy_sync_proxy_rules_nftables_sync_failures_total 1",
        "kubeproxy_sync_proxy_rules_nftables_cleanup_failures_total 0",
        "kproxy_sync_proxy_rules_failures_total 1",
        "# TYPE kproxy_skipped_objects gauge",
        "kproxy_skipped_objects{kind=\"Service\",reason=\"unknown-value\"} 1",
    ];
    for e in expect {
        assert!(l.contains(&e), "missing {e:?} in\n{text}");
    }
    assert_eq!(
        l.iter()
            .filter(|x| x.starts_with("kubeproxy_network_programming_duration_seconds_bucket"))
            .count(),
        1 + 2 + 59 + 12 + 7 + 1,
        "upstream's network programming buckets: 0, two quarter steps, 59 + 12 + 7, +Inf"
    );
    assert!(
        !text.contains("iptables"),
        "no iptables metrics in nftables mode"
    );
    assert!(!text.contains("# EOF"));
    assert!(
        !text.contains("kubeproxy_proxy_livez"),
        "a vector without samples is left out, as Go does"
    );
}

#[tokio::test]
async fn each_mode_exports_its_own_failure_counters() {
    let clock = WallClock::new();
    let m = Arc::new(Metrics::new(ProxyMode::Iptables, clock));
    m.sync_finished(false, Duration::from_millis(1), false);
    let addr = serve(&m, &KubeProxyConfiguration::default()).await;
    let text = get(addr, "/metrics").await.unwrap().body;
    let l = lines(&text);
    assert!(l.contains(&"kubeproxy_sync_proxy_rules_iptables_restore_failures_total 0"));
    assert!(l.contains(&"kubeproxy_sync_proxy_rules_iptables_partial_restore_failures_total 1"));
    assert!(!text.contains("nftables"));
}

#[tokio::test]
async fn a_modes_gauges_are_families_under_upstreams_names() {
    let m = Arc::new(Metrics::new(ProxyMode::Iptables, WallClock::new()));
    let gauge = |name, table: &str, value| kproxy_modes::Gauge {
        name,
        help: "h",
        label: ("table", table.to_owned()),
        value,
    };
    m.observe_mode_gauges(vec![
        gauge("kubeproxy_sync_proxy_rules_iptables_total", "nat", 12),
        gauge("kubeproxy_sync_proxy_rules_iptables_total", "filter", 3),
        gauge("kubeproxy_sync_proxy_rules_iptables_last", "nat", 5),
    ]);
    let addr = serve(&m, &KubeProxyConfiguration::default()).await;
    let text = get(addr, "/metrics").await.unwrap().body;
    let l = lines(&text);
    assert!(l.contains(&r#"kubeproxy_sync_proxy_rules_iptables_total{table="nat"} 12"#));
    assert!(l.contains(&r#"kubeproxy_sync_proxy_rules_iptables_total{table="filter"} 3"#));
    assert!(l.contains(&r#"kubeproxy_sync_proxy_rules_iptables_last{table="nat"} 5"#));
    assert!(l.contains(&"# TYPE kubeproxy_sync_proxy_rules_iptables_total gauge"));
}

#[tokio::test]
async fn the_metrics_server_serves_proxy_mode_configz_and_healthz() {
    let cfg = KubeProxyConfiguration {
        mode: "nftables".into(),
        ..Default::default()
    };
    let m = Arc::new(Metrics::new(cfg.proxy_mode(), WallClock::new()));
    let addr = serve(&m, &cfg).await;

    let r = get(addr, "/proxyMode").await.unwrap();
    assert_eq!((r.status, r.body.as_str()), (200, "nftables"));
    assert_eq!(r.header("content-type"), Some("text/plain; charset=utf-8"));
    assert_eq!(r.header("x-content-type-options"), Some("nosniff"));

    let r = get(addr, "/configz").await.unwrap();
    assert_eq!(r.header("content-type"), Some("application/json"));
    let v: Value = serde_json::from_str(&r.body).unwrap();
    let c = &v["kubeproxy.config.k8s.io"];
    // Upstream serves its internal type: Go field names, in declaration order.
    assert!(
        r.body
            .starts_with(r#"{"kubeproxy.config.k8s.io":{"Linux":{"Conntrack":{"MaxPerCore":"#),
        "{}",
        r.body
    );
    assert_eq!(c["Mode"], json!("nftables"));
    assert_eq!(c["MetricsBindAddress"], json!(cfg.metrics_bind_address));
    assert_eq!(
        c["SyncPeriod"],
        json!("30s"),
        "the selected mode's syncPeriod"
    );
    assert_eq!(
        c["FeatureGates"],
        Value::Null,
        "Go writes a nil map as null"
    );
    assert_eq!(c["Linux"]["MasqueradeAll"], json!(false));

    let r = get(addr, "/healthz").await.unwrap();
    assert_eq!((r.status, r.body.as_str()), (200, "ok"));
    assert_eq!(get(addr, "/livez").await.unwrap().status, 404);
}

#[test]
fn openmetrics_counters_and_bounds_are_rewritten_to_the_prometheus_text_format() {
    let om = "# HELP a_total_x Help.\n# TYPE a_total_x counter\na_total_x_total 1\n\
              # HELP h H.\n# TYPE h histogram\nh_sum 0.0\nh_count 0\n\
              h_bucket{le=\"1.0\"} 0\nh_bucket{le=\"+Inf\"} 0\n# EOF\n";
    assert_eq!(
        to_prometheus_text(om),
        "# HELP a_total_x_total Help.\n# TYPE a_total_x_total counter\na_total_x_total 1\n\
         # HELP h H.\n# TYPE h histogram\nh_bucket{le=\"1\"} 0\nh_bucket{le=\"+Inf\"} 0\n\
         h_sum 0.0\nh_count 0\n"
    );
}

#[test]
fn skip_reasons_map_to_short_label_values() {
    assert_eq!(
        reason_class("port 80: 1.2.3.4:80/TCP is already used by ns/x"),
        "port-collision"
    );
    assert_eq!(
        reason_class("no kubernetes.io/service-name label"),
        "missing-label"
    );
    assert_eq!(
        reason_class("invalid IP \"x\" in spec.externalIPs"),
        "invalid-value"
    );
    assert_eq!(reason_class("something new"), "other");
}
