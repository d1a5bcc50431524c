//! The manifest watcher, on temporary directories. Every wait is a deadline on the channel; a
//! wait that must time out checks that a reload did NOT happen, and lasts three poll intervals.

use std::{collections::BTreeMap, fs, path::Path, time::Duration};

use k8s_openapi::api::core::v1::Service;
use kproxy::source::{
    Event, Kind, Object,
    manifest::{DEFAULT_POLL_INTERVAL, ManifestError, watch},
};
use tokio::{
    sync::mpsc::{self, Receiver},
    task::JoinHandle,
    time::timeout,
};

use crate::{data, ids, service_yaml};

pub const DEADLINE: Duration = Duration::from_secs(10);
pub const QUIET: Duration = DEFAULT_POLL_INTERVAL.saturating_mul(3);
/// Longer than the watcher takes between two events of one load, shorter than a poll.
const BURST_GAP: Duration = Duration::from_millis(200);

pub type Watcher = (Receiver<Event>, JoinHandle<Result<(), ManifestError>>);

pub fn start(path: &Path) -> Watcher {
    let (tx, rx) = mpsc::channel(8);
    (rx, tokio::spawn(watch(path.to_owned(), tx)))
}

/// The Services in force, as a consumer of the watcher's events sees them.
#[derive(Default)]
pub struct Seen(pub BTreeMap<String, Service>);

impl Seen {
    fn apply(&mut self, event: Event) {
        let id = |s: &Service| ids(std::slice::from_ref(s)).remove(0);
        match event {
            Event::Replace(Kind::Service, objects) => {
                self.0 = objects
                    .into_iter()
                    .filter_map(service)
                    .map(|s| (id(&s), s))
                    .collect();
            }
            Event::Apply(o) => {
                if let Some(s) = service(o) {
                    self.0.insert(id(&s), s);
                }
            }
            Event::Delete(o) => {
                if let Some(s) = service(o) {
                    self.0.remove(&id(&s));
                }
            }
            _ => {}
        }
    }
}

fn service(o: Object) -> Option<Service> {
    match o {
        Object::Service(s) => Some(*s),
        _ => None,
    }
}

/// Receives one load's events (sent back to back) and returns the events and the Services
/// in force after them.
pub async fn next_events(rx: &mut Receiver<Event>, seen: &mut Seen) -> (Vec<Event>, Vec<Service>) {
    let first = timeout(DEADLINE, rx.recv()).await;
    let mut events = vec![
        first
            .expect("no load before the deadline")
            .expect("watcher ended"),
    ];
    while let Ok(Some(event)) = timeout(BURST_GAP, rx.recv()).await {
        events.push(event);
    }
    events.iter().cloned().for_each(|e| seen.apply(e));
    (events, seen.0.values().cloned().collect())
}

pub async fn next_load(rx: &mut Receiver<Event>, seen: &mut Seen) -> Vec<Service> {
    next_events(rx, seen).await.1
}

/// The first load is a complete list of every kind, in this order.
pub async fn first_load(rx: &mut Receiver<Event>, seen: &mut Seen) -> Vec<Service> {
    let (events, services) = next_events(rx, seen).await;
    let kinds: Vec<_> = events
        .iter()
        .map(|e| match e {
            Event::Replace(kind, objects) => {
                assert!(objects.iter().all(|o| o.kind() == *kind), "{objects:?}");
                *kind
            }
            other => panic!("expected a Replace, got {other:?}"),
        })
        .collect();
    let want = [
        Kind::ServiceCidr,
        Kind::Service,
        Kind::EndpointSlice,
        Kind::Node,
    ];
    assert_eq!(kinds, want);
    services
}

pub async fn assert_no_reload(rx: &mut Receiver<Event>) {
    if let Ok(event) = timeout(QUIET, rx.recv()).await {
        panic!("unexpected reload: {event:?}");
    }
}

pub fn port(service: &Service) -> i32 {
    service.spec.as_ref().unwrap().ports.as_ref().unwrap()[0].port
}

#[tokio::test]
async fn the_watcher_reloads_after_a_file_is_modified_added_removed_and_renamed_over() {
    let dir = tempfile::tempdir().unwrap();
    let file = |name: &str| dir.path().join(name);
    fs::write(file("a.yaml"), service_yaml("a", 80)).unwrap();
    let (mut rx, _watcher) = start(dir.path());
    let seen = &mut Seen::default();
    assert_eq!(ids(&first_load(&mut rx, seen).await), ["default/a"]);

    fs::write(file("a.yaml"), service_yaml("a", 81)).unwrap();
    let services = next_load(&mut rx, seen).await;
    assert_eq!(
        (ids(&services), port(&services[0])),
        (vec!["default/a".to_owned()], 81)
    );

    fs::write(file("b.yml"), service_yaml("b", 90)).unwrap();
    assert_eq!(
        ids(&next_load(&mut rx, seen).await),
        ["default/a", "default/b"]
    );

    fs::remove_file(file("a.yaml")).unwrap();
    assert_eq!(ids(&next_load(&mut rx, seen).await), ["default/b"]);

    // An editor's save: write a temporary file (not a manifest by its name), rename it over.
    fs::write(file("b.yml.tmp"), service_yaml("b", 91)).unwrap();
    fs::rename(file("b.yml.tmp"), file("b.yml")).unwrap();
    let services = next_load(&mut rx, seen).await;
    assert_eq!(
        (ids(&services), port(&services[0])),
        (vec!["default/b".to_owned()], 91)
    );
}

#[tokio::test]
async fn a_burst_of_writes_gives_one_reload_with_the_final_content() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("a.yaml");
    fs::write(&path, service_yaml("a", 80)).unwrap();
    let (mut rx, _watcher) = start(dir.path());
    let seen = &mut Seen::default();
    first_load(&mut rx, seen).await;
    // A writer that keeps going for two poll intervals, faster than one write per poll. The
    // sleep paces the writer; it synchronises nothing.
    let gap = DEFAULT_POLL_INTERVAL / 10;
    for port in 1000..1020 {
        fs::write(&path, service_yaml("a", port)).unwrap();
        tokio::time::sleep(gap).await;
    }
    assert_eq!(port(&next_load(&mut rx, seen).await[0]), 1019);
    assert_no_reload(&mut rx).await;
}

#[tokio::test]
async fn a_watched_single_file_is_followed_across_rename_over_and_kept_while_it_is_missing() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("svc.yaml");
    let temp = dir.path().join("svc.yaml.swp");
    fs::write(&path, service_yaml("a", 80)).unwrap();
    fs::write(dir.path().join("other.yaml"), service_yaml("other", 80)).unwrap();
    let (mut rx, _watcher) = start(&path);
    let seen = &mut Seen::default();
    assert_eq!(ids(&first_load(&mut rx, seen).await), ["default/a"]);

    fs::write(&temp, service_yaml("a", 81)).unwrap();
    fs::rename(&temp, &path).unwrap();
    assert_eq!(port(&next_load(&mut rx, seen).await[0]), 81);

    // A missing path is like a failed relist: the last objects stay until it is back.
    fs::remove_file(&path).unwrap();
    assert_no_reload(&mut rx).await;
    fs::write(&path, service_yaml("a", 82)).unwrap();
    assert_eq!(port(&next_load(&mut rx, seen).await[0]), 82);
}

#[tokio::test]
async fn the_watcher_returns_once_the_receiver_is_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let (mut rx, watcher) = start(dir.path());
    assert_eq!(first_load(&mut rx, &mut Seen::default()).await, []);
    drop(rx);
    let result = timeout(DEADLINE, watcher)
        .await
        .expect("watcher still running");
    assert!(matches!(result, Ok(Ok(()))), "{result:?}");
}

#[tokio::test]
async fn watching_a_missing_path_fails_at_once_without_sending_anything() {
    let (tx, mut rx) = mpsc::channel(8);
    let result = timeout(DEADLINE, watch(data("no-such-dir"), tx))
        .await
        .unwrap();
    assert!(
        matches!(result, Err(ManifestError::Read { .. })),
        "{result:?}"
    );
    assert!(rx.recv().await.is_none(), "the sender is dropped unused");
}
