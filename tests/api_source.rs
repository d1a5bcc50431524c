//! The Kubernetes API source against an in-process API server (tests/apiserver): initial lists,
//! changes, dropped watches, 410 Gone relists, selectors, paging, and readiness of the tracker.

use std::{
    collections::{BTreeMap, BTreeSet},
    time::Duration,
};

use k8s_openapi::api::{core::v1::Service, networking::v1::ServiceCIDR};
use kproxy::{
    source::{
        Event, Kind, Object,
        api::{
            PROXY_LABEL_SELECTOR, WatchOptions,
            client::{ClientSettings, build_client},
            watch_all_with,
        },
    },
    tracker::Tracker,
};
use serde_json::json;
use tokio::{sync::mpsc, task::JoinHandle, time::timeout};

use kproxy_test_apiserver as apiserver;
mod support;

// Inline, so that the submodules are found under tests/api_source/.
mod api_source {
    pub mod changes;
    pub mod server;
}

use apiserver::{ApiServer, Res};
use support::{NODE, node, simple_service, simple_slice};

/// A running API source and the events it sends.
pub struct Source {
    rx: mpsc::Receiver<Event>,
    task: JoinHandle<()>,
    /// Lists in progress, gathered by [`Source::next`].
    lists: BTreeMap<Kind, Vec<Object>>,
}

impl Source {
    pub async fn start(server: &ApiServer) -> Source {
        Self::start_paged(server, 500).await
    }

    pub async fn start_paged(server: &ApiServer, page_size: u32) -> Source {
        let settings = ClientSettings {
            kubeconfig: Some(server.kubeconfig()),
            qps: -1.0, // unlimited: these tests count requests, not time
            ..ClientSettings::default()
        };
        let client = build_client(&settings).await.expect("client");
        let (tx, rx) = mpsc::channel(64);
        let opts = WatchOptions {
            node_name: NODE.into(),
            page_size,
        };
        let task = tokio::spawn(watch_all_with(client, opts, tx));
        Source {
            rx,
            task,
            lists: BTreeMap::new(),
        }
    }

    /// The next event as the source sends it.
    pub async fn next_streamed(&mut self) -> Event {
        timeout(Duration::from_secs(10), self.rx.recv())
            .await
            .expect("an event within 10 s")
            .expect("the source runs")
    }

    /// The next change, or the next complete list gathered into one `Replace` (lists of
    /// different kinds arrive interleaved: each watcher sends its own).
    pub async fn next(&mut self) -> Event {
        loop {
            match self.next_streamed().await {
                Event::ListBegin(kind) => {
                    self.lists.insert(kind, Vec::new());
                }
                Event::Listed(o) => {
                    let list = self.lists.get_mut(&o.kind());
                    list.expect("a Listed object after its ListBegin").push(o);
                }
                Event::ListEnd(kind) => {
                    let list = self.lists.remove(&kind);
                    return Event::Replace(kind, list.expect("a ListEnd after its ListBegin"));
                }
                other => return other,
            }
        }
    }

    /// The first event of each kind must be its list: returns the names each list had.
    pub async fn initial_lists(&mut self) -> Vec<(Kind, Vec<String>)> {
        let mut lists = Vec::new();
        while lists.len() < 4 {
            match self.next().await {
                Event::Replace(kind, objects) => lists.push((kind, names(&objects))),
                other => panic!("before every list is in, got {other:?}"),
            }
        }
        lists.sort();
        lists
    }
}

impl Drop for Source {
    fn drop(&mut self) {
        self.task.abort();
    }
}

pub fn name(o: &Object) -> String {
    let meta = match o {
        Object::Service(s) => &s.metadata,
        Object::EndpointSlice(s) => &s.metadata,
        Object::Node(n) => &n.metadata,
        Object::ServiceCidr(c) => &c.metadata,
    };
    match &meta.namespace {
        Some(ns) => format!("{ns}/{}", meta.name.as_deref().unwrap_or("")),
        None => meta.name.clone().unwrap_or_default(),
    }
}

pub fn names(objects: &[Object]) -> Vec<String> {
    let mut v: Vec<String> = objects.iter().map(name).collect();
    v.sort();
    v
}

/// `(kind, name)` of an Apply or Delete, for compact assertions.
pub fn change(ev: &Event) -> (&'static str, String) {
    match ev {
        Event::Apply(o) => ("apply", name(o)),
        Event::Delete(o) => ("delete", name(o)),
        Event::Replace(k, _) | Event::ListBegin(k) | Event::ListEnd(k) => {
            panic!("expected a change, got a {k} list")
        }
        Event::Listed(o) => panic!("expected a change, got a listed {}", name(o)),
    }
}

pub fn labelled_service(name: &str, labels: serde_json::Value) -> Service {
    let mut s = simple_service(name, json!({}));
    s.metadata.labels = serde_json::from_value(labels).unwrap();
    s
}

pub fn service_cidr(name: &str, cidr: &str) -> ServiceCIDR {
    serde_json::from_value(json!({
        "apiVersion": "networking.k8s.io/v1", "kind": "ServiceCIDR",
        "metadata": {"name": name}, "spec": {"cidrs": [cidr]}
    }))
    .unwrap()
}

/// Two Services, a slice, this node and another, one ServiceCIDR.
pub fn small_cluster(server: &ApiServer) {
    server.apply(&simple_service("a", json!({})));
    server.apply(&simple_service("b", json!({"clusterIP": "172.30.0.2"})));
    server.apply(&simple_slice(
        "a",
        "a-1",
        json!([{"addresses": ["10.0.0.1"]}]),
    ));
    server.apply(&node(NODE, Some("zone-a"), &["192.168.0.2"]));
    server.apply(&node("node-b", Some("zone-b"), &["192.168.0.3"]));
    server.apply(&service_cidr("kubernetes", "172.30.0.0/16"));
}

fn s(v: &[&str]) -> Vec<String> {
    v.iter().map(|x| x.to_string()).collect()
}

#[tokio::test]
async fn initial_lists_arrive_as_one_replace_per_kind_with_only_this_node() {
    let server = ApiServer::start().await;
    small_cluster(&server);
    let mut source = Source::start(&server).await;
    assert_eq!(
        source.initial_lists().await,
        [
            (Kind::Service, s(&["ns1/a", "ns1/b"])),
            (Kind::EndpointSlice, s(&["ns1/a-1"])),
            (Kind::Node, s(&[NODE])),
            (Kind::ServiceCidr, s(&["kubernetes"])),
        ]
    );
}

#[tokio::test]
async fn the_label_selector_keeps_out_objects_for_other_proxies_and_headless_services() {
    let server = ApiServer::start().await;
    server.apply(&labelled_service("plain", json!({})));
    server.apply(&labelled_service(
        "other-proxy",
        json!({"service.kubernetes.io/service-proxy-name": "other"}),
    ));
    server.apply(&labelled_service(
        "headless",
        json!({"service.kubernetes.io/headless": ""}),
    ));
    let mut headless_slice = simple_slice("headless", "headless-1", json!([]));
    headless_slice
        .metadata
        .labels
        .get_or_insert_default()
        .insert("service.kubernetes.io/headless".into(), "".into());
    server.apply(&headless_slice);
    server.apply(&simple_slice("plain", "plain-1", json!([])));
    let mut source = Source::start(&server).await;
    let lists = source.initial_lists().await;
    assert_eq!(lists[0], (Kind::Service, s(&["ns1/plain"])));
    assert_eq!(lists[1], (Kind::EndpointSlice, s(&["ns1/plain-1"])));

    // The server filtered: every Service/EndpointSlice/ServiceCIDR request carried the selector.
    let selectors: BTreeSet<(Res, Option<String>)> = server
        .requests()
        .into_iter()
        .filter(|r| r.res != Res::Nodes)
        .map(|r| (r.res, r.query.get("labelSelector").cloned()))
        .collect();
    let want = Some(PROXY_LABEL_SELECTOR.to_string());
    assert_eq!(
        selectors,
        BTreeSet::from([
            (Res::Services, want.clone()),
            (Res::EndpointSlices, want.clone()),
            (Res::ServiceCidrs, want),
        ])
    );

    // A Service that gains the label leaves the selection: the watch reports it deleted.
    server
        .wait_for("four open watches", |s| s.open_watches() == 4)
        .await;
    server.apply(&labelled_service(
        "plain",
        json!({"service.kubernetes.io/service-proxy-name": "other"}),
    ));
    assert_eq!(change(&source.next().await), ("delete", "ns1/plain".into()));
}

#[tokio::test]
async fn the_node_watch_sees_only_the_node_named_like_this_one() {
    let server = ApiServer::start().await;
    small_cluster(&server);
    let mut source = Source::start(&server).await;
    source.initial_lists().await;
    server
        .wait_for("four open watches", |s| s.open_watches() == 4)
        .await;
    server.apply(&node("node-b", Some("zone-c"), &["192.168.0.3"]));
    server.apply(&node(NODE, Some("zone-c"), &["192.168.0.2"]));
    let Event::Apply(Object::Node(n)) = source.next().await else {
        panic!("expected this node's update");
    };
    assert_eq!(n.metadata.name.as_deref(), Some(NODE));
    let node_selectors: BTreeSet<Option<String>> = server
        .requests()
        .into_iter()
        .filter(|r| r.res == Res::Nodes)
        .map(|r| r.query.get("fieldSelector").cloned())
        .collect();
    assert_eq!(
        node_selectors,
        BTreeSet::from([Some(format!("metadata.name={NODE}"))])
    );
}

#[tokio::test]
async fn small_pages_are_assembled_into_one_replace() {
    let server = ApiServer::start().await;
    for i in 0..5 {
        server.apply(&simple_service(&format!("s{i}"), json!({})));
    }
    let mut source = Source::start_paged(&server, 2).await;
    let lists = source.initial_lists().await;
    assert_eq!(
        lists[0],
        (
            Kind::Service,
            s(&["ns1/s0", "ns1/s1", "ns1/s2", "ns1/s3", "ns1/s4"])
        )
    );
    let pages: Vec<_> = server
        .requests()
        .into_iter()
        .filter(|r| r.res == Res::Services && !r.watch)
        .map(|r| {
            (
                r.query.get("limit").cloned(),
                r.query.contains_key("continue"),
            )
        })
        .collect();
    let two = Some("2".to_string());
    assert_eq!(
        pages,
        [(two.clone(), false), (two.clone(), true), (two, true)]
    );
}

#[tokio::test]
async fn the_tracker_has_no_state_until_services_slices_and_the_node_are_each_listed() {
    let server = ApiServer::start().await;
    small_cluster(&server);
    let mut source = Source::start(&server).await;
    let mut tracker = Tracker::new(support::opts());
    let mut listed = BTreeSet::new();
    let required = BTreeSet::from([Kind::Service, Kind::EndpointSlice, Kind::Node]);
    while listed != required {
        // As the agent gets them: the tracker acts on a list only at its end.
        let ev = source.next_streamed().await;
        if let Event::ListEnd(kind) = &ev
            && *kind != Kind::ServiceCidr
        {
            listed.insert(*kind);
        }
        tracker.apply(ev);
        let update = tracker.update();
        assert_eq!(
            update.is_some(),
            listed == required,
            "listed so far: {listed:?}"
        );
    }
    let (state, _) = tracker.update().expect("a state once all are listed");
    let v4 = state.family(kproxy_modes::model::IpFamily::V4).unwrap();
    assert_eq!(v4.services.len(), 2, "both Services' ports: {state:?}");
}

#[tokio::test]
async fn service_cidrs_missing_on_an_old_server_count_as_an_empty_list_said_once() {
    let server = ApiServer::start_without_service_cidrs().await;
    small_cluster_without_cidrs(&server);
    let mut source = Source::start(&server).await;
    let lists = source.initial_lists().await;
    assert_eq!(lists[3], (Kind::ServiceCidr, vec![]));
    // The watcher retries (with backoff) in case the API appears; no second list is sent.
    server
        .wait_for("a retried ServiceCIDR list", |s| {
            s.count(Res::ServiceCidrs, false) >= 2
        })
        .await;
    server.apply(&simple_service("c", json!({})));
    assert_eq!(change(&source.next().await), ("apply", "ns1/c".into()));
}

fn small_cluster_without_cidrs(server: &ApiServer) {
    server.apply(&simple_service("a", json!({})));
    server.apply(&node(NODE, None, &["192.168.0.2"]));
}
