//! Reloading the manifests whenever they change.
//!
//! This polls the files' content instead of subscribing to inotify (the `notify` crate), because
//! polling is the one mechanism that is right everywhere this source is used:
//! - an editor's write-to-temp-then-rename replaces the inode, a ConfigMap volume swaps a
//!   `..data` symlink, and a watched path may be deleted and recreated: an inotify watch on the
//!   file misses or loses all of these, so it has to watch the parent directory, filter names,
//!   and re-arm itself; comparing content needs none of that;
//! - bind mounts from a container host, network file systems and overlay lower layers deliver no
//!   inotify events at all;
//! - debouncing is "the content has stopped changing", which is exactly what we want to know,
//!   rather than a quiet period after events that may or may not have fired.
//!
//! The price is reading a handful of small files twice a second and up to two poll intervals of
//! latency, both negligible for a demo and test source. Content, not mtimes, is compared: two
//! writes of the same size within one file-system timestamp tick would look unchanged. Content is
//! compared by fingerprint (length and hash per file), not kept: at 10k Services x 10 endpoints
//! the manifests are 15 MB, which would otherwise stay in the agent's memory, and a poll reads
//! one file at a time into one reused buffer.

use std::{
    hash::{DefaultHasher, Hasher},
    io::Read,
    path::{Path, PathBuf},
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use tokio::{sync::mpsc::Sender, time::MissedTickBehavior};

use super::{
    ManifestError, Snapshot, list_files, read_snapshot,
    state::{InForce, Reloaded},
};
use crate::source::Event;

/// How often [`watch`] looks at the files.
pub const DEFAULT_POLL_INTERVAL: Duration = Duration::from_millis(500);

/// A file that never stops changing (something appending to it) is loaded anyway after this many
/// polls, so a reload is late but never starved.
const MAX_DEFERRED_POLLS: u32 = 10;

/// Loads the manifests at `path`, sends a `Replace` event per kind, then after every change to
/// the files an `Apply` or `Delete` per object that changed. Fails only when the first load
/// cannot read `path`; later, an unreadable path keeps the last loaded objects (like a failed
/// relist) until it is readable again, and a file that stops parsing keeps its last good
/// objects until it parses again. Returns `Ok` once the receiver is dropped.
pub async fn watch(path: PathBuf, tx: Sender<Event>) -> Result<(), ManifestError> {
    watch_every(path, DEFAULT_POLL_INTERVAL, tx).await
}

/// [`watch`] with another poll interval. A change is loaded once two consecutive polls see the
/// same new content, so a burst of writes closer together than `poll` gives one reload.
pub async fn watch_every(
    path: PathBuf,
    poll: Duration,
    tx: Sender<Event>,
) -> Result<(), ManifestError> {
    watch_reporting(path, poll, tx, Arc::default()).await
}

/// [`watch_every`], keeping `failing_files` at the number of manifest files that currently
/// fail to parse (the `kproxy_manifest_files_failing` metric).
pub async fn watch_reporting(
    path: PathBuf,
    poll: Duration,
    tx: Sender<Event>,
    failing_files: Arc<AtomicU64>,
) -> Result<(), ManifestError> {
    let first = snapshot(&path).await?;
    let mut loaded = first.fingerprint();
    let (mut in_force, manifests) = InForce::first(&first);
    failing_files.store(in_force.failing() as u64, Ordering::Relaxed);
    if !send(&tx, manifests.into_events()).await {
        return Ok(());
    }
    drop(first);
    let mut ticker = tokio::time::interval(poll);
    // After a slow poll, wait a full interval again: catching up would compare two snapshots
    // taken back to back and call a half-written burst "stable".
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    ticker.tick().await; // the first tick completes at once
    let mut pending: Option<Fingerprint> = None;
    let mut deferred = 0;
    let mut failing = false;
    loop {
        tokio::select! {
            _ = tx.closed() => return Ok(()),
            _ = ticker.tick() => {}
        }
        let current = match fingerprint(&path).await {
            Ok(current) => current,
            Err(e) => {
                if !failing {
                    tracing::warn!("{e}; keeping the manifests loaded last");
                }
                failing = true;
                pending = None;
                continue;
            }
        };
        if std::mem::take(&mut failing) {
            tracing::info!(path = %path.display(), "manifest path is readable again");
        }
        if current == loaded {
            pending = None;
            deferred = 0;
            continue;
        }
        deferred += 1;
        if pending.as_ref() != Some(&current) && deferred <= MAX_DEFERRED_POLLS {
            pending = Some(current);
            continue;
        }
        // Changed and stable: read the content, and parse it only if it is what was compared
        // (unless it has been changing for too long: then what is there now).
        let Ok(content) = snapshot(&path).await else {
            continue; // the next poll reports it
        };
        let read = content.fingerprint();
        if read != current && deferred <= MAX_DEFERRED_POLLS {
            pending = Some(read);
            continue;
        }
        let reloaded = in_force.reload(&content);
        failing_files.store(in_force.failing() as u64, Ordering::Relaxed);
        log_reload(&path, &reloaded, in_force.failing());
        loaded = read;
        pending = None;
        deferred = 0;
        if !send(&tx, reloaded.events).await {
            return Ok(());
        }
    }
}

/// Per manifest file in load order: its length and content hash, or why it could not be read.
type Fingerprint = Vec<(PathBuf, Result<(usize, u64), String>)>;

fn hash(bytes: &[u8]) -> (usize, u64) {
    let mut h = DefaultHasher::new();
    h.write(bytes);
    (bytes.len(), h.finish())
}

impl Snapshot {
    fn fingerprint(&self) -> Fingerprint {
        let files = self.files.iter();
        files
            .map(|(p, c)| (p.clone(), c.as_deref().map(hash).map_err(Clone::clone)))
            .collect()
    }
}

fn read_fingerprint(path: &Path) -> Result<Fingerprint, ManifestError> {
    let mut buf = Vec::new();
    let files = list_files(path)?;
    Ok(files
        .into_iter()
        .map(|p| {
            buf.clear();
            let read = std::fs::File::open(&p).and_then(|mut f| f.read_to_end(&mut buf));
            let fp = read.map(|_| hash(&buf)).map_err(|e| e.to_string());
            (p, fp)
        })
        .collect())
}

/// Reads off the async threads: file system calls block.
async fn blocking<T: Send + 'static>(
    path: &Path,
    f: fn(&Path) -> Result<T, ManifestError>,
) -> Result<T, ManifestError> {
    let path = path.to_owned();
    match tokio::task::spawn_blocking(move || f(&path)).await {
        Ok(result) => result,
        Err(join) => std::panic::resume_unwind(join.into_panic()),
    }
}

async fn snapshot(path: &Path) -> Result<Snapshot, ManifestError> {
    blocking(path, read_snapshot).await
}

async fn fingerprint(path: &Path) -> Result<Fingerprint, ManifestError> {
    blocking(path, read_fingerprint).await
}

fn log_reload(path: &Path, reloaded: &Reloaded, failing_files: usize) {
    tracing::info!(
        path = %path.display(),
        applied = reloaded.applied,
        deleted = reloaded.deleted,
        problems = reloaded.problems.len(),
        failing_files,
        "reloaded manifests",
    );
}

/// False once the receiver is gone.
async fn send(tx: &Sender<Event>, events: Vec<Event>) -> bool {
    for event in events {
        if tx.send(event).await.is_err() {
            return false;
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The poll (file by file, one buffer) and the load (whole snapshot) must fingerprint the same
    /// bytes alike: otherwise every poll would see a change that is not there, or miss one.
    #[test]
    fn poll_and_load_fingerprints_agree_and_follow_content() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a.yaml"), "kind: Service\n").unwrap();
        std::fs::write(dir.path().join("b.json"), "{}").unwrap();
        std::fs::write(dir.path().join("notes.txt"), "not a manifest").unwrap();
        let polled = read_fingerprint(dir.path()).unwrap();
        assert_eq!(polled, read_snapshot(dir.path()).unwrap().fingerprint());
        assert_eq!(polled.len(), 2);

        // Same length, other content: a change.
        std::fs::write(dir.path().join("b.json"), "[]").unwrap();
        assert_ne!(read_fingerprint(dir.path()).unwrap(), polled);
    }
}
