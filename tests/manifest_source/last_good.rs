//! Issue 10, probe 4: a typo must not delete objects. A manifest file that stops parsing keeps
//! its last good objects in force (counted in the failing-files gauge) until it parses again;
//! and a reload sends only the objects that changed, so `*_changes_total` counts real changes.

use std::{
    fs,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
};

use kproxy::source::{
    Event, Object,
    manifest::{DEFAULT_POLL_INTERVAL, watch_reporting},
};
use tokio::sync::mpsc;

use super::watch::{Seen, assert_no_reload, first_load, next_events, port, start};
use crate::service_yaml;

fn slice_yaml(service: &str, ip: &str) -> String {
    format!(
        "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: {service}-1\n  \
         labels:\n    kubernetes.io/service-name: {service}\naddressType: IPv4\n\
         endpoints:\n  - addresses: [\"{ip}\"]\nports:\n  - port: 80\n"
    )
}

/// What each event is about: `Apply Service default/a`.
fn describe(events: &[Event]) -> Vec<String> {
    let what = |verb: &str, o: &Object| {
        let meta = match o {
            Object::Service(s) => &s.metadata,
            Object::EndpointSlice(s) => &s.metadata,
            Object::Node(n) => &n.metadata,
            Object::ServiceCidr(c) => &c.metadata,
        };
        let ns = meta.namespace.as_deref().unwrap_or_default();
        let name = meta.name.as_deref().unwrap_or_default();
        format!("{verb} {} {ns}/{name}", o.kind())
    };
    events
        .iter()
        .map(|e| match e {
            Event::Apply(o) => what("Apply", o),
            Event::Delete(o) => what("Delete", o),
            other => format!("{other:?}"),
        })
        .collect()
}

/// Steps: a directory with `web.yaml` (Service web and its EndpointSlice) and `other.yaml`;
/// break web.yaml's YAML: nothing is sent (old code: a reload without web and its slice);
/// change other.yaml: only `other` is sent, web and its slice stay; fix web.yaml with another
/// endpoint: only the slice is sent.
#[tokio::test]
async fn a_file_that_stops_parsing_keeps_its_last_good_objects_until_it_is_fixed() {
    let dir = tempfile::tempdir().unwrap();
    let web = dir.path().join("web.yaml");
    let other = dir.path().join("other.yaml");
    let good = format!(
        "{}---\n{}",
        service_yaml("web", 80),
        slice_yaml("web", "10.0.0.1")
    );
    fs::write(&web, &good).unwrap();
    fs::write(&other, service_yaml("other", 80)).unwrap();
    let (mut rx, _watcher) = start(dir.path());
    let seen = &mut Seen::default();
    first_load(&mut rx, seen).await;

    fs::write(
        &web,
        good.replace("kind: EndpointSlice", "kind: [EndpointSlice"),
    )
    .unwrap();
    assert_no_reload(&mut rx).await;

    fs::write(&other, service_yaml("other", 81)).unwrap();
    let (events, services) = next_events(&mut rx, seen).await;
    assert_eq!(describe(&events), ["Apply Service default/other"]);
    assert_eq!(services.len(), 2, "web is still in force");

    fs::write(&web, good.replace("10.0.0.1", "10.0.0.2")).unwrap();
    let (events, _) = next_events(&mut rx, seen).await;
    assert_eq!(describe(&events), ["Apply EndpointSlice default/web-1"]);
}

/// Steps: two Services in two files; change one port: one Apply; remove a file: one Delete;
/// touch a file without changing it: nothing.
#[tokio::test]
async fn a_reload_sends_only_the_objects_that_changed() {
    let dir = tempfile::tempdir().unwrap();
    let file = |name: &str| dir.path().join(name);
    fs::write(file("a.yaml"), service_yaml("a", 80)).unwrap();
    fs::write(file("b.yaml"), service_yaml("b", 80)).unwrap();
    let (mut rx, _watcher) = start(dir.path());
    let seen = &mut Seen::default();
    first_load(&mut rx, seen).await;

    fs::write(file("a.yaml"), service_yaml("a", 81)).unwrap();
    let (events, services) = next_events(&mut rx, seen).await;
    assert_eq!(describe(&events), ["Apply Service default/a"]);
    assert_eq!(port(&services[0]), 81);

    fs::remove_file(file("b.yaml")).unwrap();
    let (events, _) = next_events(&mut rx, seen).await;
    assert_eq!(describe(&events), ["Delete Service default/b"]);

    // Same content under a new name: the object moved files, it did not change.
    fs::rename(file("a.yaml"), file("c.yaml")).unwrap();
    assert_no_reload(&mut rx).await;
}

/// The gauge counts the files failing now: 1 while one is broken, 0 once it is fixed.
#[tokio::test]
async fn failing_files_are_counted_until_fixed() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("a.yaml");
    fs::write(&path, service_yaml("a", 80)).unwrap();
    let failing = Arc::new(AtomicU64::new(0));
    let (tx, mut rx) = mpsc::channel(8);
    let watch = watch_reporting(
        dir.path().into(),
        DEFAULT_POLL_INTERVAL,
        tx,
        failing.clone(),
    );
    let _watcher = tokio::spawn(watch);
    let seen = &mut Seen::default();
    first_load(&mut rx, seen).await;
    assert_eq!(failing.load(Ordering::Relaxed), 0);

    fs::write(&path, "apiVersion: v1\nkind: Service\nmetadata: {name: a\n").unwrap();
    assert_no_reload(&mut rx).await;
    assert_eq!(failing.load(Ordering::Relaxed), 1);

    fs::write(&path, service_yaml("a", 81)).unwrap();
    next_events(&mut rx, seen).await;
    assert_eq!(failing.load(Ordering::Relaxed), 0);
}
