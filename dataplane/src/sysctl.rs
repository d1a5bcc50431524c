//! Integer kernel parameters: sysctls under `/proc/sys` ([`Sysctl`]) and single-value files
//! elsewhere such as a module parameter or `/proc/self/oom_score_adj` ([`IntFile`]).
//!
//! Every path is injectable so tests run against a temporary directory; the files there must
//! exist beforehand, as the kernel's do (a write never creates one, so a missing sysctl is
//! reported as missing rather than silently created).

use std::{
    fs, io,
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
};

use nix::errno::Errno;

/// Where the kernel lists conntrack's hash table size (its buckets). Writable only from the
/// initial network namespace.
pub const CONNTRACK_HASHSIZE: &str = "/sys/module/nf_conntrack/parameters/hashsize";
/// The calling process's OOM killer adjustment.
pub const OOM_SCORE_ADJ: &str = "/proc/self/oom_score_adj";

/// A failed read or write of one parameter file, with the path and the value.
#[derive(Debug, thiserror::Error)]
pub enum SysctlError {
    #[error("reading {}: {source}", path.display())]
    Read { path: PathBuf, source: io::Error },
    #[error("{} holds {text:?}, not an integer", path.display())]
    Parse { path: PathBuf, text: String },
    #[error("writing {value} to {}: {source}", path.display())]
    Write {
        path: PathBuf,
        value: i64,
        source: io::Error,
    },
}

impl SysctlError {
    fn errno(&self) -> Option<Errno> {
        match self {
            SysctlError::Read { source, .. } | SysctlError::Write { source, .. } => {
                source.raw_os_error().map(Errno::from_raw)
            }
            SysctlError::Parse { .. } => None,
        }
    }

    /// The file does not exist (for conntrack's, the nf_conntrack module is not loaded).
    pub fn is_not_found(&self) -> bool {
        self.errno() == Some(Errno::ENOENT)
    }

    /// The file system holding the file is mounted read-only (a container's `/sys`).
    pub fn is_read_only_fs(&self) -> bool {
        self.errno() == Some(Errno::EROFS)
    }

    /// The kernel refuses the change in this context; for conntrack's hashsize that means the
    /// writer is not in the initial network namespace.
    pub fn is_not_supported(&self) -> bool {
        self.errno() == Some(Errno::EOPNOTSUPP)
    }
}

/// What a write-if-different did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Change {
    /// The file already held the value; nothing was written.
    Unchanged(i64),
    Changed {
        old: i64,
        new: i64,
    },
}

/// One file holding one integer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IntFile {
    path: PathBuf,
}

impl IntFile {
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self { path: path.into() }
    }

    /// Conntrack's hash table size, at [`CONNTRACK_HASHSIZE`].
    pub fn conntrack_hashsize() -> Self {
        Self::new(CONNTRACK_HASHSIZE)
    }

    /// This process's OOM score adjustment, at [`OOM_SCORE_ADJ`].
    pub fn oom_score_adj() -> Self {
        Self::new(OOM_SCORE_ADJ)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn read(&self) -> Result<i64, SysctlError> {
        let text = fs::read_to_string(&self.path).map_err(|source| SysctlError::Read {
            path: self.path.clone(),
            source,
        })?;
        text.trim().parse().map_err(|_| SysctlError::Parse {
            path: self.path.clone(),
            text,
        })
    }

    pub fn write(&self, value: i64) -> Result<(), SysctlError> {
        let err = |source| SysctlError::Write {
            path: self.path.clone(),
            value,
            source,
        };
        // No `create`: a missing kernel file must stay an error. `truncate` matters only for
        // regular files (tests); the kernel's files take the whole value from one write.
        let mut file = fs::OpenOptions::new()
            .write(true)
            .truncate(true)
            .open(&self.path)
            .map_err(err)?;
        io::Write::write_all(&mut file, value.to_string().as_bytes()).map_err(err)
    }

    /// Writes `value` unless the file already holds it.
    pub fn ensure(&self, value: i64) -> Result<Change, SysctlError> {
        let old = self.read()?;
        if old == value {
            return Ok(Change::Unchanged(old));
        }
        self.write(value)?;
        Ok(Change::Changed { old, new: value })
    }

    /// Whether the file's mode lets anyone write it. The kernel registers some sysctls
    /// read-only in some contexts (`nf_conntrack_max` outside the initial network namespace);
    /// the mode says so before a write is tried, and even for root, whom the mode of a regular
    /// file would not stop.
    pub fn is_writable(&self) -> Result<bool, SysctlError> {
        let meta = fs::metadata(&self.path).map_err(|source| SysctlError::Read {
            path: self.path.clone(),
            source,
        })?;
        Ok(meta.permissions().mode() & 0o222 != 0)
    }
}

/// The sysctl tree: names such as `net.netfilter.nf_conntrack_max` or
/// `net/netfilter/nf_conntrack_max` resolve to files under a root, `/proc/sys` by default.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sysctl {
    root: PathBuf,
}

impl Default for Sysctl {
    fn default() -> Self {
        Self::new()
    }
}

impl Sysctl {
    pub fn new() -> Self {
        Self::with_root("/proc/sys")
    }

    pub fn with_root(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    /// The file behind a sysctl name. A name containing `/` is taken as a path, as sysctl(8)
    /// does, because interface names in a dotted name may themselves contain dots (`eth0.100`).
    pub fn file(&self, name: &str) -> IntFile {
        let rel = match name.contains('/') {
            true => name.trim_start_matches('/').to_string(),
            false => name.replace('.', "/"),
        };
        IntFile::new(self.root.join(rel))
    }

    pub fn read(&self, name: &str) -> Result<i64, SysctlError> {
        self.file(name).read()
    }

    pub fn write(&self, name: &str, value: i64) -> Result<(), SysctlError> {
        self.file(name).write(value)
    }

    /// Writes `value` unless the sysctl already holds it.
    pub fn ensure(&self, name: &str, value: i64) -> Result<Change, SysctlError> {
        self.file(name).ensure(value)
    }

    pub fn is_writable(&self, name: &str) -> Result<bool, SysctlError> {
        self.file(name).is_writable()
    }
}

#[cfg(test)]
mod tests;
