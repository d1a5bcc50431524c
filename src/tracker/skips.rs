//! What the tracker skipped, kept for the desired state's `skipped` list (read by the metrics
//! and `debug dump`), and logged once per change of the object, never per sync.

use std::collections::BTreeMap;

use kproxy_modes::model::SkippedObject;
use tracing::warn;

use super::Key;
use crate::desired;

#[derive(Debug, Default)]
pub(super) struct Skips {
    /// Invalid Services, as the last recompute of each found them.
    pub services: BTreeMap<Key, SkippedObject>,
    /// What conversion left out of each slice that had a problem (slices without one have no
    /// entry, so valid slices cost nothing here).
    slices: BTreeMap<Key, Vec<SkippedObject>>,
    /// The missing own Node was reported; reset when it appears, so it is reported again.
    node_reported: bool,
}

impl Skips {
    /// Keeps what conversion left out of a slice, logging what is new: a relist, or a change
    /// elsewhere in the slice, logs nothing again.
    pub fn note_slice(&mut self, key: &Key, skipped: Vec<SkippedObject>) {
        let old = self.slices.get(key).map(Vec::as_slice).unwrap_or_default();
        for s in skipped.iter().filter(|s| !old.contains(s)) {
            desired::log_skipped(s);
        }
        if skipped.is_empty() {
            self.slices.remove(key);
        } else {
            self.slices.insert(key.clone(), skipped);
        }
    }

    pub fn forget_slice(&mut self, key: &Key) {
        self.slices.remove(key);
    }

    /// Every skip record, sorted.
    pub fn all(&self) -> impl Iterator<Item = &SkippedObject> {
        self.services.values().chain(self.slices.values().flatten())
    }

    /// Once the lists are in, a node name no Node has is almost always a wrong
    /// `--hostname-override` (or an unregistered node): without its Node, `/healthz` fails and
    /// Local traffic policies find no local endpoint, so it is worth one warning.
    pub fn check_node(&mut self, node_name: &str, found: bool) {
        if found {
            self.node_reported = false;
        } else if !self.node_reported {
            self.node_reported = true;
            warn!(
                "no Node object named \"{}\" exists: check --hostname-override (the node name \
                 defaults to the host name); /healthz fails until it exists",
                desired::validate::shown(node_name)
            );
        }
    }
}
