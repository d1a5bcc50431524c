//! Changes after the initial lists: plain watch events, a watch dropped mid-stream, and a
//! 410 Gone that forces a relist.

use kproxy::source::{Event, Kind};
use serde_json::json;

use crate::{
    Source, apiserver::ApiServer, apiserver::Res, change, names, s, small_cluster,
    support::simple_service,
};

/// Initial lists in, and all four watches open on the server.
async fn watching(server: &ApiServer) -> Source {
    small_cluster(server);
    let mut source = Source::start(server).await;
    source.initial_lists().await;
    server
        .wait_for("four open watches", |s| s.open_watches() == 4)
        .await;
    source
}

#[tokio::test]
async fn adds_updates_and_deletes_arrive_as_apply_and_delete_in_order() {
    let server = ApiServer::start().await;
    let mut source = watching(&server).await;
    server.apply(&simple_service("c", json!({"clusterIP": "172.30.0.3"})));
    server.apply(&simple_service("a", json!({"clusterIP": "172.30.0.9"})));
    server.delete::<k8s_openapi::api::core::v1::Service>(Some("ns1"), "b");
    assert_eq!(change(&source.next().await), ("apply", "ns1/c".into()));
    let Event::Apply(kproxy::source::Object::Service(a)) = source.next().await else {
        panic!("expected the update of a");
    };
    let ip = a.spec.as_ref().and_then(|s| s.cluster_ip.as_deref());
    assert_eq!(ip, Some("172.30.0.9"), "the update carries the new spec");
    assert_eq!(change(&source.next().await), ("delete", "ns1/b".into()));
}

#[tokio::test]
async fn a_watch_dropped_mid_stream_resumes_without_a_relist_and_without_losing_events() {
    let server = ApiServer::start().await;
    let mut source = watching(&server).await;
    let listed_at = server.resource_version();
    // No await between these: the changes happen while no watch is open, so only the
    // resumed watch (replaying history after its resourceVersion) can deliver them.
    server.drop_watches();
    server.apply(&simple_service("c", json!({"clusterIP": "172.30.0.3"})));
    server.delete::<k8s_openapi::api::core::v1::Service>(Some("ns1"), "a");
    assert_eq!(change(&source.next().await), ("apply", "ns1/c".into()));
    assert_eq!(change(&source.next().await), ("delete", "ns1/a".into()));
    assert_eq!(server.count(Res::Services, false), 1, "no relist");
    let watches: Vec<String> = server
        .requests()
        .into_iter()
        .filter(|r| r.res == Res::Services && r.watch)
        .map(|r| r.query["resourceVersion"].clone())
        .collect();
    assert_eq!(
        watches,
        [listed_at.to_string(), listed_at.to_string()],
        "the resumed watch starts where the list left off"
    );
}

#[tokio::test]
async fn a_410_gone_relists_and_the_replace_leaves_out_objects_deleted_meanwhile() {
    let server = ApiServer::start().await;
    let mut source = watching(&server).await;
    server.drop_watches();
    server.delete::<k8s_openapi::api::core::v1::Service>(Some("ns1"), "b");
    server.apply(&simple_service("c", json!({"clusterIP": "172.30.0.3"})));
    server.compact(); // the resumed watches' resourceVersion is now too old
    let services = loop {
        match source.next().await {
            Event::Replace(Kind::Service, objects) => break names(&objects),
            Event::Replace(..) => {} // the other kinds relist too
            other => panic!("the compacted changes cannot arrive as events: {other:?}"),
        }
    };
    assert_eq!(services, s(&["ns1/a", "ns1/c"]));
    assert_eq!(server.count(Res::Services, false), 2, "one relist");
    // And it watches on from the relist.
    server
        .wait_for("watches open again", |s| s.open_watches() == 4)
        .await;
    server.delete::<k8s_openapi::api::core::v1::Service>(Some("ns1"), "c");
    loop {
        match source.next().await {
            Event::Replace(..) => {}
            ev => break assert_eq!(change(&ev), ("delete", "ns1/c".into())),
        }
    }
}

#[tokio::test]
async fn a_history_shorter_than_the_missed_changes_also_means_410_and_a_relist() {
    let server = ApiServer::start().await;
    let mut source = watching(&server).await;
    server.set_history_limit(2);
    server.drop_watches();
    for name in ["c", "d", "e"] {
        server.apply(&simple_service(name, json!({})));
    }
    let services = loop {
        if let Event::Replace(Kind::Service, objects) = source.next().await {
            break names(&objects);
        }
    };
    assert_eq!(services, s(&["ns1/a", "ns1/b", "ns1/c", "ns1/d", "ns1/e"]));
}
