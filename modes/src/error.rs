//! What a mode's calls fail with: typed, with the kernel client's error kept as the source.

/// A boxed error of a kernel client (nft, netlink, iptables-restore, ...), kept whole so its
/// kind (not found, permission, busy) can still be asked.
pub type Source = Box<dyn std::error::Error + Send + Sync + 'static>;

#[derive(Debug, thiserror::Error)]
pub enum ModeError {
    /// A kernel client call failed: `op` says what the mode was doing.
    #[error("{mode}: {op}: {source}")]
    Kernel {
        mode: &'static str,
        op: &'static str,
        #[source]
        source: Source,
    },
    /// The mode cannot run on this node (a kernel feature or a tool is missing).
    #[error("{mode} is not available on this node: {reason}")]
    Unavailable { mode: &'static str, reason: String },
    #[error("{mode}: {what} is not supported")]
    Unsupported {
        mode: &'static str,
        what: &'static str,
    },
}

impl ModeError {
    pub fn kernel(
        mode: &'static str,
        op: &'static str,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        ModeError::Kernel {
            mode,
            op,
            source: Box::new(source),
        }
    }
}
