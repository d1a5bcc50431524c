//! kproxy's data-plane modes. Each mode turns a [`model::DesiredState`] into kernel state behind
//! the one [`Mode`] trait; modes never see Kubernetes objects.

pub mod conntrack;
pub mod leftovers;
pub mod model;
pub mod nftables;

use model::{ChangeSet, DesiredState};

/// Counts a sync reports, for logs and metrics.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SyncStats {
    pub full: bool,
    pub service_ports: usize,
    pub endpoints: usize,
}

#[derive(Debug, thiserror::Error)]
pub enum ModeError {
    #[error("{mode}: {message}")]
    Apply { mode: &'static str, message: String },
    #[error("{mode}: {what} is not supported")]
    Unsupported {
        mode: &'static str,
        what: &'static str,
    },
}

/// A data plane. `sync` renders (purely) and applies atomically; on failure the next sync must be
/// a full one.
pub trait Mode {
    fn name(&self) -> &'static str;
    fn sync(&mut self, desired: &DesiredState, changes: &ChangeSet)
    -> Result<SyncStats, ModeError>;
    /// Removes everything this mode owns, and nothing else.
    fn cleanup(&mut self) -> Result<(), ModeError>;
    /// The kernel's view of what this mode owns, as text (for `debug dump`). Reads the kernel:
    /// can be slow on very large rule sets, so it is never part of a sync.
    fn dump(&self) -> Result<String, ModeError> {
        Err(ModeError::Unsupported {
            mode: self.name(),
            what: "dump",
        })
    }
}
