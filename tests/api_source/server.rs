//! The test API server's own protocol, seen through kube's raw list/watch: bookmarks, 410 Gone
//! as an ERROR event, and selectors on fields.

use futures::StreamExt;
use k8s_openapi::api::core::v1::Service;
use kproxy::source::api::client::{ClientSettings, build_client};
use kube::{
    Api,
    api::{ListParams, WatchEvent, WatchParams},
};
use serde_json::json;

use crate::{apiserver::ApiServer, support::simple_service};

async fn services(server: &ApiServer) -> Api<Service> {
    let settings = ClientSettings {
        kubeconfig: Some(server.kubeconfig()),
        qps: -1.0,
        ..ClientSettings::default()
    };
    Api::all(build_client(&settings).await.unwrap())
}

#[tokio::test]
async fn a_watch_that_allows_bookmarks_gets_one_at_the_current_resource_version() {
    let server = ApiServer::start().await;
    let api = services(&server).await;
    let rv = server.apply(&simple_service("a", json!({}))).to_string();
    let stream = api
        .watch(
            &WatchParams::default(), /* bookmarks are on by default */
            &rv,
        )
        .await
        .unwrap();
    futures::pin_mut!(stream);
    server
        .wait_for("the watch", |s| s.open_watches() == 1)
        .await;
    server.apply(&simple_service("b", json!({})));
    server.bookmark();
    let Some(Ok(WatchEvent::Added(b))) = stream.next().await else {
        panic!("expected b added");
    };
    assert_eq!(b.metadata.name.as_deref(), Some("b"));
    let Some(Ok(WatchEvent::Bookmark(bm))) = stream.next().await else {
        panic!("expected a bookmark");
    };
    assert_eq!(
        bm.metadata.resource_version,
        server.resource_version().to_string()
    );
}

#[tokio::test]
async fn a_watch_from_a_compacted_resource_version_gets_an_error_event_with_410() {
    let server = ApiServer::start().await;
    let api = services(&server).await;
    let old = server.apply(&simple_service("a", json!({}))).to_string();
    server.apply(&simple_service("b", json!({})));
    server.compact();
    let stream = api.watch(&WatchParams::default(), &old).await.unwrap();
    futures::pin_mut!(stream);
    let Some(Ok(WatchEvent::Error(status))) = stream.next().await else {
        panic!("expected an ERROR event");
    };
    assert_eq!(status.code, 410);
    assert!(stream.next().await.is_none(), "the stream ends after it");
}

#[tokio::test]
async fn field_selectors_on_namespace_and_name_filter_lists() {
    let server = ApiServer::start().await;
    let api = services(&server).await;
    server.apply(&simple_service("a", json!({})));
    let mut other = simple_service("b", json!({}));
    other.metadata.namespace = Some("ns2".into());
    server.apply(&other);
    let names = |l: kube::core::ObjectList<Service>| -> Vec<String> {
        l.items
            .into_iter()
            .filter_map(|s| s.metadata.name)
            .collect()
    };
    let ns2 = api
        .list(&ListParams::default().fields("metadata.namespace=ns2"))
        .await
        .unwrap();
    assert_eq!(names(ns2), ["b"]);
    let not_a = api
        .list(&ListParams::default().fields("metadata.name!=a"))
        .await
        .unwrap();
    assert_eq!(names(not_a), ["b"]);
    let err = api
        .list(&ListParams::default().fields("spec.clusterIP=x"))
        .await
        .unwrap_err();
    assert!(matches!(err, kube::Error::Api(s) if s.code == 400));
}
