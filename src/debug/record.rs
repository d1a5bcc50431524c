//! The running agent's record: what `kproxy debug dump` needs to know of the agent on this node
//! (its configuration, mode and manifests) so the operator does not repeat its flags.
//!
//! The agent writes `$KPROXY_RUNTIME_DIR/agent-<netns inode>.json` (default directory
//! `/run/kproxy`) when it starts and removes it on a clean shutdown. The network namespace's
//! inode keys it because kproxy programs the namespace it runs in: agents in different
//! namespaces (test beds, one per simulated node) do not collide, and `debug dump` run in a
//! namespace finds the agent that programs it. Format: docs/debug.md.

use std::{
    io,
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use crate::config::KubeProxyConfiguration;

/// Overrides the record's directory (tests; a node whose /run is read-only).
pub const DIR_ENV: &str = "KPROXY_RUNTIME_DIR";
pub const DEFAULT_DIR: &str = "/run/kproxy";

/// The record's content.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AgentRecord {
    pub pid: u32,
    /// The `--proxy-mode` in effect.
    pub proxy_mode: String,
    /// The effective configuration, as `--write-config-to` writes it.
    pub config: String,
    /// The `--manifests` path (absolute), or `None` when the agent reads the API server.
    pub manifests: Option<PathBuf>,
}

impl AgentRecord {
    /// The record of this process, running with `cfg` and `manifests`.
    pub fn of_this_process(cfg: &KubeProxyConfiguration, manifests: Option<&Path>) -> Self {
        // debug dump may run from another directory: a relative path would not resolve there.
        let manifests = manifests.map(|p| std::path::absolute(p).unwrap_or_else(|_| p.into()));
        Self {
            pid: std::process::id(),
            proxy_mode: cfg.proxy_mode().to_string(),
            config: cfg.to_yaml_string(),
            manifests,
        }
    }
}

/// Where the record of the agent in this network namespace is.
pub fn path() -> io::Result<PathBuf> {
    runtime_file("json")
}

/// `$KPROXY_RUNTIME_DIR/agent-<netns inode>.<ext>`: a file of the agent of this network
/// namespace (its record, its lock).
pub fn runtime_file(ext: &str) -> io::Result<PathBuf> {
    let inode = std::fs::metadata("/proc/self/ns/net")?.ino();
    let dir = std::env::var_os(DIR_ENV).map_or_else(|| PathBuf::from(DEFAULT_DIR), PathBuf::from);
    Ok(dir.join(format!("agent-{inode}.{ext}")))
}

/// Removes the record when dropped (the agent's clean shutdown), unless another agent has
/// replaced it since.
pub struct Published {
    path: PathBuf,
    pid: u32,
}

impl Drop for Published {
    fn drop(&mut self) {
        let ours = read(&self.path).is_ok_and(|r| r.is_some_and(|r| r.pid == self.pid));
        if ours {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// Writes `record` (atomically: a reader never sees half of it).
pub fn publish(record: &AgentRecord) -> io::Result<Published> {
    let path = path()?;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = path.with_extension(format!("json.{}", record.pid));
    std::fs::write(&tmp, serde_json::to_vec_pretty(record)?)?;
    std::fs::rename(&tmp, &path)?;
    Ok(Published {
        path,
        pid: record.pid,
    })
}

/// The record of the agent running in this network namespace; `None` when there is none, or
/// when the process that wrote it is gone (killed without a clean shutdown).
pub fn running_agent() -> Result<Option<AgentRecord>> {
    let path = path().context("finding this network namespace")?;
    let Some(record) = read(&path)? else {
        return Ok(None);
    };
    if is_kproxy(record.pid) {
        Ok(Some(record))
    } else {
        tracing::debug!(path = %path.display(), pid = record.pid, "stale agent record: process gone");
        Ok(None)
    }
}

fn read(path: &Path) -> Result<Option<AgentRecord>> {
    let text = match std::fs::read(path) {
        Ok(text) => text,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    let record = serde_json::from_slice(&text)
        .with_context(|| format!("{} is not an agent record", path.display()))?;
    Ok(Some(record))
}

/// Whether `pid` is alive and runs the same program as this process: a pid reused by another
/// program after the agent was killed must not make a stale record look current.
fn is_kproxy(pid: u32) -> bool {
    let comm = |p: &str| std::fs::read_to_string(format!("/proc/{p}/comm")).ok();
    match (comm(&pid.to_string()), comm("self")) {
        (Some(theirs), Some(ours)) => theirs == ours,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_reads_back_and_only_a_live_kproxy_counts() {
        let record = AgentRecord {
            pid: std::process::id(),
            proxy_mode: "nftables".into(),
            config: "kind: KubeProxyConfiguration\n".into(),
            manifests: Some("/etc/kproxy/manifests".into()),
        };
        let text = serde_json::to_string(&record).unwrap();
        assert!(text.contains("\"proxyMode\":\"nftables\""), "{text}");
        assert_eq!(serde_json::from_str::<AgentRecord>(&text).unwrap(), record);
        assert!(is_kproxy(std::process::id()));
        assert!(!is_kproxy(u32::MAX));
    }
}
