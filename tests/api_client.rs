//! Building the API client from flags and config as upstream does, and the whole path
//! `--kubeconfig F` -> client -> API source -> agent -> mode against the in-process server.

use std::time::Duration;

use clap::Parser;
use kproxy::{
    agent::{self, Periods},
    cli::{Cli, resolve_config},
    source::api::{
        self,
        client::{ClientError, ClientSettings, build_client, kube_config},
    },
    tracker::Tracker,
};
use kproxy_modes::testing::RecordingMode;
use serde_json::json;
use tokio::time::Instant;

use kproxy_test_apiserver as apiserver;
mod support;

use apiserver::{ApiServer, Res};
use support::{NODE, node, simple_service, simple_slice};

/// The settings `kproxy ARGS` would build its client from.
fn settings(args: &[&str]) -> ClientSettings {
    let cli = Cli::try_parse_from(std::iter::once("kproxy").chain(args.iter().copied()))
        .expect("valid flags");
    let cfg = resolve_config(&cli.flags).expect("valid config");
    ClientSettings::new(&cfg, cli.flags.master.as_deref())
}

#[tokio::test]
async fn the_kubeconfig_flag_points_the_client_at_its_server_with_the_configured_rate_limit() {
    let server = ApiServer::start().await;
    let path = server.kubeconfig();
    let s = settings(&[
        "--kubeconfig",
        path.to_str().unwrap(),
        "--kube-api-qps",
        "7",
        "--kube-api-burst",
        "3",
    ]);
    assert_eq!((s.qps, s.burst), (7.0, 3));
    let config = kube_config(&s).await.unwrap();
    assert_eq!(config.cluster_url.to_string(), format!("{}/", server.url()));
}

#[tokio::test]
async fn master_overrides_the_kubeconfigs_server_and_alone_a_bare_host_means_https() {
    let server = ApiServer::start().await;
    let path = server.kubeconfig();
    let s = settings(&[
        "--kubeconfig",
        path.to_str().unwrap(),
        "--master",
        "http://127.0.0.1:1",
    ]);
    let config = kube_config(&s).await.unwrap();
    assert_eq!(config.cluster_url.to_string(), "http://127.0.0.1:1/");
    let config = kube_config(&settings(&["--master", "127.0.0.1:6443"]))
        .await
        .unwrap();
    assert_eq!(config.cluster_url.to_string(), "https://127.0.0.1:6443/");
}

#[tokio::test]
async fn without_kubeconfig_or_master_only_the_in_cluster_config_is_tried() {
    // This test process is no Pod: the in-cluster config is missing, and that is the error
    // (not a fallback to ~/.kube/config, which upstream does not read either).
    assert!(std::env::var_os("KUBERNETES_SERVICE_HOST").is_none());
    let err = kube_config(&settings(&[])).await.unwrap_err();
    assert!(matches!(err, ClientError::InCluster(_)), "{err:?}");
    let err = kube_config(&settings(&["--kubeconfig", "/nonexistent/kubeconfig"]))
        .await
        .unwrap_err();
    assert!(matches!(err, ClientError::Kubeconfig { .. }), "{err:?}");
}

/// Waits until the mode's last sync had `want` Service ports.
async fn wait_for_ports(mode: &RecordingMode, want: usize) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while mode.port_counts().last() != Some(&want) {
        assert!(
            Instant::now() < deadline,
            "no sync with {want} ports: {:?}",
            mode.port_counts()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn the_agent_started_with_a_kubeconfig_programs_the_servers_services_and_follows_changes() {
    let server = ApiServer::start().await;
    server.apply(&simple_service("a", json!({})));
    server.apply(&simple_slice(
        "a",
        "a-1",
        json!([{"addresses": ["10.0.0.1"]}]),
    ));
    server.apply(&node(NODE, Some("zone-a"), &["192.168.0.2"]));
    let path = server.kubeconfig();
    // Protobuf is asked for, JSON is spoken: the client still works.
    let args = [
        "--kubeconfig",
        path.to_str().unwrap(),
        "--hostname-override",
        NODE,
        "--kube-api-content-type",
        "application/vnd.kubernetes.protobuf",
    ];
    let client = build_client(&settings(&args)).await.unwrap();
    let (tx, rx) = tokio::sync::mpsc::channel(64);
    let source = tokio::spawn(api::watch_all(client, NODE.into(), tx));
    let mode = RecordingMode::default();
    let periods = Periods {
        sync: Duration::from_secs(3600),
        min_sync: Duration::ZERO,
    };
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let agent = tokio::spawn(agent::run(
        Tracker::new(support::opts()),
        rx,
        Box::new(mode.clone()),
        periods,
        async {
            let _ = stopped.await;
        },
    ));
    wait_for_ports(&mode, 1).await;
    server
        .wait_for("the Service watch", |s| s.count(Res::Services, true) >= 1)
        .await;
    server.apply(&simple_service("b", json!({"clusterIP": "172.30.0.2"})));
    wait_for_ports(&mode, 2).await;
    let _ = stop.send(());
    agent.await.unwrap();
    source.abort();
}
