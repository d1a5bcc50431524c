//! The "no cluster" source: a directory or file of YAML/JSON manifests.
//!
//! A directory means the `*.yaml`, `*.yml` and `*.json` files directly in it (not in
//! subdirectories), in name order. A file may hold several YAML documents and `kind: List`s.
//! Services, EndpointSlices and Nodes are loaded; other kinds are ignored; a document that cannot
//! be used is skipped with a warning and reported as a [`ManifestProblem`], so one typo does not
//! take the other objects down with it.

use std::{
    collections::BTreeMap,
    fs, io,
    path::{Path, PathBuf},
};

use k8s_openapi::api::{
    core::v1::Node, core::v1::Service, discovery::v1::EndpointSlice, networking::v1::ServiceCIDR,
};

use super::{Event, Kind, Object};

mod fields;
mod parse;
mod state;
mod watch;

pub use watch::{DEFAULT_POLL_INTERVAL, watch, watch_every, watch_reporting};

/// The path given to the source cannot be used at all.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    // The OS error is in the message, not a `#[source]`: `{:#}` would print it twice.
    #[error("cannot read manifests at {}: {error}", path.display())]
    Read { path: PathBuf, error: io::Error },
    #[error("manifest path {} is neither a file nor a directory", path.display())]
    NotFileOrDirectory { path: PathBuf },
}

/// A document or file that was skipped, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ManifestProblem {
    pub file: PathBuf,
    /// 0-based index of the document in the file; `None` when the whole file was skipped.
    pub document: Option<usize>,
    pub reason: String,
}

/// Everything one load found. Objects are sorted by namespace and name, one per identity.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct LoadedManifests {
    pub services: Vec<Service>,
    pub endpoint_slices: Vec<EndpointSlice>,
    pub nodes: Vec<Node>,
    pub service_cidrs: Vec<ServiceCIDR>,
    pub problems: Vec<ManifestProblem>,
}

impl LoadedManifests {
    /// One `Replace` per kind, always every kind: a load is a complete list, so a kind whose
    /// objects all disappeared must be replaced by an empty list, not left alone.
    pub fn into_events(self) -> Vec<Event> {
        fn objects<T>(items: Vec<T>, wrap: fn(Box<T>) -> Object) -> Vec<Object> {
            items.into_iter().map(|item| wrap(Box::new(item))).collect()
        }
        // ServiceCIDRs first: the tracker is ready once Services, slices and the Node are listed,
        // and the agent may sync between two events of one load; a ServiceCIDR arriving after
        // that first sync would leave the service-range DROP rule out until the next one.
        vec![
            Event::Replace(
                Kind::ServiceCidr,
                objects(self.service_cidrs, Object::ServiceCidr),
            ),
            Event::Replace(Kind::Service, objects(self.services, Object::Service)),
            Event::Replace(
                Kind::EndpointSlice,
                objects(self.endpoint_slices, Object::EndpointSlice),
            ),
            Event::Replace(Kind::Node, objects(self.nodes, Object::Node)),
        ]
    }
}

/// Loads every manifest at `path` (a file or a directory). Fails only when `path` itself cannot
/// be read; problems inside files are in [`LoadedManifests::problems`].
pub fn load(path: &Path) -> Result<LoadedManifests, ManifestError> {
    Ok(read_snapshot(path)?.parse())
}

/// The raw content of the files at a path, in load order: a reload parses exactly the bytes whose
/// fingerprint the watcher compared (see `watch`).
#[derive(Clone, Debug, PartialEq, Eq)]
struct Snapshot {
    files: Vec<(PathBuf, Result<Vec<u8>, String>)>,
}

fn read_snapshot(path: &Path) -> Result<Snapshot, ManifestError> {
    let files = list_files(path)?
        .into_iter()
        .map(|p| {
            let content = read_file(&p);
            (p, content)
        })
        .collect();
    Ok(Snapshot { files })
}

/// The manifest files at `path`, in load order.
fn list_files(path: &Path) -> Result<Vec<PathBuf>, ManifestError> {
    let read_error = |error| ManifestError::Read {
        path: path.to_owned(),
        error,
    };
    // metadata() follows symlinks: a ConfigMap volume presents its files as symlinks.
    let meta = fs::metadata(path).map_err(read_error)?;
    if meta.is_file() {
        Ok(vec![path.to_owned()])
    } else if meta.is_dir() {
        let mut names = Vec::new();
        for entry in fs::read_dir(path).map_err(read_error)? {
            let entry_path = entry.map_err(read_error)?.path();
            let wanted = entry_path
                .extension()
                .is_some_and(|ext| ext == "yaml" || ext == "yml" || ext == "json");
            // A dangling symlink (an editor's lock file) or a file removed since the listing
            // is not a manifest; a subdirectory is not read at all.
            if wanted && fs::metadata(&entry_path).is_ok_and(|m| m.is_file()) {
                names.push(entry_path);
            }
        }
        names.sort();
        Ok(names)
    } else {
        Err(ManifestError::NotFileOrDirectory {
            path: path.to_owned(),
        })
    }
}

fn read_file(path: &Path) -> Result<Vec<u8>, String> {
    fs::read(path).map_err(|e| e.to_string())
}

/// One file of a snapshot, parsed.
struct FileLoad<'a> {
    file: &'a Path,
    objects: Vec<parse::Located>,
    /// Some document could not be used, or the file not read: the watcher keeps the file's
    /// last good objects in force (see `state`).
    failed: bool,
}

/// An object's identity.
type Key = (Kind, String, String);

impl Snapshot {
    /// Each file parsed on its own, in load order; problems inside files are recorded.
    fn parse_files(&self, problems: &mut Vec<ManifestProblem>) -> Vec<FileLoad<'_>> {
        let mut out = Vec::new();
        for (file, content) in &self.files {
            let before = problems.len();
            let objects = match content {
                Ok(bytes) => parse::parse_file(file, bytes, problems),
                Err(e) => {
                    parse::problem(problems, file, None, format!("cannot read: {e}"));
                    Vec::new()
                }
            };
            out.push(FileLoad {
                file,
                objects,
                failed: problems.len() > before,
            });
        }
        out
    }

    fn parse(&self) -> LoadedManifests {
        let mut problems = Vec::new();
        let files = self.parse_files(&mut problems);
        let items = files.into_iter().flat_map(|f| {
            let file = f.file;
            f.objects
                .into_iter()
                .map(move |l| (key(&l.object), file, l.document, l.object))
        });
        let objects = merge(items, &mut problems);
        let mut loaded = LoadedManifests {
            problems,
            ..LoadedManifests::default()
        };
        objects.into_values().for_each(|(o, _, _)| loaded.push(o));
        loaded
    }
}

impl LoadedManifests {
    fn push(&mut self, object: Object) {
        match object {
            Object::Service(s) => self.services.push(*s),
            Object::EndpointSlice(s) => self.endpoint_slices.push(*s),
            Object::Node(n) => self.nodes.push(*n),
            Object::ServiceCidr(c) => self.service_cidrs.push(*c),
        }
    }
}

/// One entry per identity, sorted (so a load's order is stable), remembering where each came
/// from so that a duplicate is reported against the definition it replaces.
fn merge<'a, T>(
    items: impl IntoIterator<Item = (Key, &'a Path, usize, T)>,
    problems: &mut Vec<ManifestProblem>,
) -> BTreeMap<Key, (T, &'a Path, usize)> {
    let mut objects = BTreeMap::new();
    for (key, file, document, item) in items {
        // Later documents win, as when the files are applied in order with kubectl. The
        // earlier one was in effect skipped, so it is reported like any skipped document.
        let Some((_, old_file, old_document)) = objects.insert(key.clone(), (item, file, document))
        else {
            continue;
        };
        let (kind, namespace, name) = key;
        let id = if namespace.is_empty() {
            name
        } else {
            format!("{namespace}/{name}")
        };
        let reason = format!(
            "duplicate {kind} {id}: replaced by document {document} of {}",
            file.display()
        );
        parse::problem(problems, old_file, Some(old_document), reason);
    }
    objects
}

/// An object's identity; a Node's namespace is always empty (parse clears it).
fn key(object: &Object) -> Key {
    let meta = match object {
        Object::Service(s) => &s.metadata,
        Object::EndpointSlice(s) => &s.metadata,
        Object::Node(n) => &n.metadata,
        Object::ServiceCidr(c) => &c.metadata,
    };
    let namespace = meta.namespace.clone().unwrap_or_default();
    (
        object.kind(),
        namespace,
        meta.name.clone().unwrap_or_default(),
    )
}
