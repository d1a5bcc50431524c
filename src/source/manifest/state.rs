//! What the watcher keeps between reloads, so that a reload
//! - keeps a broken file's last good objects in force: a typo in the file holding `shop/web`'s
//!   EndpointSlice must not delete the slice (a missing path already keeps everything); the
//!   file is warned about and counted until it parses again;
//! - sends only what changed (`Apply` for a new or changed object, `Delete` for a gone one), so
//!   the change metrics and the tracker see real changes, not every object on every reload.
//!
//! Only identities, fingerprints and origins are kept, not the objects: at 10k Services the
//! manifests are tens of MB, which the tracker already holds in its own compact form.

use std::{
    collections::{BTreeMap, BTreeSet},
    path::Path,
    sync::Arc,
};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use super::{Key, LoadedManifests, ManifestProblem, Snapshot, key, merge};
use crate::source::{Event, Kind, Object};

/// Where an object in force came from, and its fingerprint. Its identity is the map's key; a
/// slice also keeps the Service it belongs to, the one more thing a later `Delete` needs (the
/// tracker and the change metrics find a slice's Service through its label). Kept this small on
/// purpose: a whole stub object per entry (metadata and labels) cost 27 MiB at 10k Services x
/// 10 endpoints (`kproxy-bench rss 10000 10`).
#[derive(Clone, Debug)]
struct Entry {
    file: Arc<Path>,
    document: usize,
    fingerprint: u64,
    service: Option<Box<str>>,
}

/// The objects in force, by identity, and the files they were read from.
#[derive(Debug, Default)]
pub(super) struct InForce {
    entries: BTreeMap<Key, Entry>,
    files: BTreeSet<Arc<Path>>,
    failing: BTreeSet<Arc<Path>>,
}

/// A file's contribution to a load: what it parses to now, or its objects kept from before.
enum Item {
    New(Object, u64),
    Kept(Entry),
}

/// What one reload did, for its log line.
#[derive(Debug, Default)]
pub(super) struct Reloaded {
    pub events: Vec<Event>,
    pub applied: usize,
    pub deleted: usize,
    pub problems: Vec<ManifestProblem>,
}

impl InForce {
    /// Files that currently fail to parse (their last good objects stay in force).
    pub fn failing(&self) -> usize {
        self.failing.len()
    }

    /// The first load: everything that parses, as a complete list of every kind.
    pub fn first(snapshot: &Snapshot) -> (Self, LoadedManifests) {
        let mut state = InForce::default();
        let mut loaded = LoadedManifests::default();
        let reloaded = state.load(snapshot);
        loaded.problems = reloaded.problems;
        for event in reloaded.events {
            if let Event::Apply(object) = event {
                loaded.push(object);
            }
        }
        (state, loaded)
    }

    /// A later load: the changes since the last one.
    pub fn reload(&mut self, snapshot: &Snapshot) -> Reloaded {
        self.load(snapshot)
    }

    fn load(&mut self, snapshot: &Snapshot) -> Reloaded {
        let mut problems = Vec::new();
        let files = snapshot.parse_files(&mut problems);
        let mut items = Vec::new();
        let mut failing = BTreeSet::new();
        for f in files {
            let path: Arc<Path> = Arc::from(f.file);
            if f.failed {
                failing.insert(path.clone());
            }
            if f.failed && self.files.contains(&path) {
                items.extend(self.keep(f.file));
                continue;
            }
            items.extend(f.objects.into_iter().map(|l| {
                let key = key(&l.object);
                (key, f.file, l.document, Item::New(l.object, l.fingerprint))
            }));
        }
        self.recover(&failing);
        let merged = merge(items, &mut problems);
        let mut out = self.diff(merged);
        out.problems = problems;
        self.files = snapshot
            .files
            .iter()
            .map(|(p, _)| Arc::from(&**p))
            .collect();
        self.failing = failing;
        out
    }

    /// The last good objects of a file that no longer parses.
    fn keep<'a>(&self, file: &'a Path) -> Vec<(Key, &'a Path, usize, Item)> {
        let kept: Vec<_> = self
            .entries
            .iter()
            .filter(|(_, e)| *e.file == *file)
            .map(|(k, e)| (k.clone(), file, e.document, Item::Kept(e.clone())))
            .collect();
        tracing::warn!(file = %file.display(), objects = kept.len(), "manifest file has errors (above): its last good objects stay in force until it is fixed");
        kept
    }

    /// Says so when a file that failed parses again.
    fn recover(&self, failing: &BTreeSet<Arc<Path>>) {
        for file in self.failing.difference(failing) {
            if self.files.contains(file) {
                tracing::info!(file = %file.display(), "manifest file is valid again");
            }
        }
    }

    /// Events for what changed between the objects in force and `merged`, which replaces them.
    /// Deletions first (a renamed Service frees its address before the new name claims it),
    /// ServiceCIDRs before the rest, as in a first load.
    fn diff(&mut self, merged: BTreeMap<Key, (Item, &Path, usize)>) -> Reloaded {
        let mut out = Reloaded::default();
        let mut next = BTreeMap::new();
        let mut applies = Vec::new();
        for (key, (item, file, document)) in merged {
            let entry = match item {
                Item::Kept(entry) => entry,
                Item::New(object, fingerprint) => {
                    let old = self.entries.get(&key).map(|e| e.fingerprint);
                    let entry = Entry {
                        file: Arc::from(file),
                        document,
                        fingerprint,
                        service: slice_service(&object),
                    };
                    if old != Some(fingerprint) {
                        applies.push(Event::Apply(object));
                    }
                    entry
                }
            };
            next.insert(key, entry);
        }
        let gone = self.entries.iter().filter(|(k, _)| !next.contains_key(*k));
        let mut deletes: Vec<Event> = gone
            .map(|(k, e)| Event::Delete(stub(k, e.service.as_deref())))
            .collect();
        (out.applied, out.deleted) = (applies.len(), deletes.len());
        deletes.sort_by_key(cidrs_first);
        applies.sort_by_key(cidrs_first);
        out.events = deletes.into_iter().chain(applies).collect();
        self.entries = next;
        out
    }
}

fn cidrs_first(event: &Event) -> bool {
    !matches!(event, Event::Apply(o) | Event::Delete(o) if o.kind() == Kind::ServiceCidr)
}

/// A slice's `kubernetes.io/service-name` label.
fn slice_service(object: &Object) -> Option<Box<str>> {
    match object {
        Object::EndpointSlice(s) => crate::desired::slice_service(s).map(|(_, name)| name.into()),
        _ => None,
    }
}

/// The object a `Delete` carries: its identity and, for a slice, its Service's label.
fn stub((kind, namespace, name): &Key, service: Option<&str>) -> Object {
    let metadata = ObjectMeta {
        name: Some(name.clone()),
        namespace: (!namespace.is_empty()).then(|| namespace.clone()),
        labels: service
            .map(|s| [(crate::desired::SERVICE_NAME_LABEL.to_owned(), s.to_owned())].into()),
        ..ObjectMeta::default()
    };
    match kind {
        Kind::Service => Object::Service(Box::new(k8s_openapi::api::core::v1::Service {
            metadata,
            ..Default::default()
        })),
        Kind::EndpointSlice => {
            Object::EndpointSlice(Box::new(k8s_openapi::api::discovery::v1::EndpointSlice {
                metadata,
                ..Default::default()
            }))
        }
        Kind::Node => Object::Node(Box::new(k8s_openapi::api::core::v1::Node {
            metadata,
            ..Default::default()
        })),
        Kind::ServiceCidr => {
            Object::ServiceCidr(Box::new(k8s_openapi::api::networking::v1::ServiceCIDR {
                metadata,
                ..Default::default()
            }))
        }
    }
}
