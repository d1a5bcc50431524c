//! [`NftClient`] and [`Exec`], the implementation that runs the `nft` binary.

use std::{
    collections::VecDeque,
    io::Write,
    path::PathBuf,
    process::{Command, Stdio},
    sync::{Arc, Mutex},
};

use super::{Family, NftTransaction};
use crate::netns::{Netns, NetnsError};

/// What kind of failure nft reported, read from its stderr.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NftErrorKind {
    /// An object the text refers to does not exist (ENOENT).
    NotFound,
    /// An object the text creates already exists (EEXIST).
    Exists,
    Other,
}

#[derive(Debug, thiserror::Error)]
pub enum NftError {
    #[error("running {program}: {source}")]
    Spawn {
        program: String,
        source: std::io::Error,
    },
    /// nft rejected the input; the whole transaction was discarded.
    #[error("nft failed ({status}): {stderr}")]
    Failed {
        status: String,
        stderr: String,
        kind: NftErrorKind,
    },
    /// nft was not started: its network namespace could not be entered.
    #[error("running nft: {0}")]
    Netns(#[from] NetnsError),
}

impl NftError {
    pub fn kind(&self) -> NftErrorKind {
        match self {
            NftError::Spawn { .. } | NftError::Netns(_) => NftErrorKind::Other,
            NftError::Failed { kind, .. } => *kind,
        }
    }

    pub fn is_not_found(&self) -> bool {
        self.kind() == NftErrorKind::NotFound
    }

    pub fn is_exists(&self) -> bool {
        self.kind() == NftErrorKind::Exists
    }
}

fn classify(stderr: &str) -> NftErrorKind {
    if stderr.contains("No such file or directory") {
        NftErrorKind::NotFound
    } else if stderr.contains("File exists") {
        NftErrorKind::Exists
    } else {
        NftErrorKind::Other
    }
}

/// Runs nftables transactions and reads tables back.
pub trait NftClient {
    /// Applies the transaction atomically: all of it or none of it.
    fn run(&self, tx: &NftTransaction) -> Result<(), NftError>;
    /// Asks the kernel to validate the transaction without committing it (`nft -c`).
    fn check(&self, tx: &NftTransaction) -> Result<(), NftError>;
    /// The table as `nft list table` prints it (the kernel's view).
    fn list_table(&self, family: Family, table: &str) -> Result<String, NftError>;
    /// The table as nft's JSON (`nft -j list table`), for programs to read.
    fn list_table_json(&self, family: Family, table: &str) -> Result<String, NftError>;
}

/// How many recent child pids a [`SpawnLog`] remembers: far more than the `nft` runs between
/// two drift checks, few enough that a foreign process is unlikely to reuse one of them.
const SPAWN_LOG_LEN: usize = 64;

/// The pids of the last `nft` processes an [`Exec`] started, shared with whoever must tell
/// kproxy's own commits from other programs' (the change monitor). `ip netns exec` execs `nft`
/// in the same process, so the pid recorded is the committing process's.
#[derive(Clone, Debug, Default)]
pub struct SpawnLog(Arc<Mutex<VecDeque<u32>>>);

impl SpawnLog {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn record(&self, pid: u32) {
        let mut pids = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if pids.len() == SPAWN_LOG_LEN {
            pids.pop_front();
        }
        pids.push_back(pid);
    }

    pub fn contains(&self, pid: u32) -> bool {
        let pids = self.0.lock().unwrap_or_else(|e| e.into_inner());
        pids.contains(&pid)
    }
}

/// Runs the `nft` binary, optionally inside another network namespace: it is started by a
/// thread that has entered the namespace ([`Netns::run`]), so no `ip netns exec` is needed.
#[derive(Clone, Debug)]
pub struct Exec {
    nft: PathBuf,
    netns: Netns,
    spawned: Option<SpawnLog>,
}

impl Default for Exec {
    fn default() -> Self {
        Self {
            nft: PathBuf::from("nft"),
            netns: Netns::current(),
            spawned: None,
        }
    }
}

impl Exec {
    pub fn new() -> Self {
        Self::default()
    }

    /// Uses this `nft` binary instead of the one on `PATH`.
    pub fn with_binary(mut self, nft: impl Into<PathBuf>) -> Self {
        self.nft = nft.into();
        self
    }

    /// Runs every command inside network namespace `name` (as created by `ip netns add`).
    pub fn in_netns(self, name: impl AsRef<str>) -> Self {
        self.with_netns(Netns::named(name))
    }

    /// Runs every command inside `netns`.
    pub fn with_netns(mut self, netns: Netns) -> Self {
        self.netns = netns;
        self
    }

    pub fn netns(&self) -> &Netns {
        &self.netns
    }

    /// Records the pid of every process started in `log`.
    pub fn with_spawn_log(mut self, log: SpawnLog) -> Self {
        self.spawned = Some(log);
        self
    }

    /// Runs nft with `tx`'s text (if any) on its standard input, returning its standard output.
    fn run_with_stdin(
        &self,
        args: &[&str],
        tx: Option<&NftTransaction>,
    ) -> Result<String, NftError> {
        let mut cmd = Command::new(&self.nft);
        cmd.args(args);
        let program = format!("{cmd:?}");
        let spawn_err = |source| NftError::Spawn {
            program: program.clone(),
            source,
        };
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let child = self.netns.run(|| cmd.spawn().map_err(spawn_err))?;
        if let Some(log) = &self.spawned {
            log.record(child.id());
        }
        // The lines go straight from the transaction into the pipe: a full sync's text is
        // megabytes, and a copy of it (or two) was most of the first sync's peak memory.
        let write = tx.map(|tx| {
            move |w: &mut dyn Write| {
                for line in tx.lines() {
                    w.write_all(line.as_bytes())?;
                    w.write_all(b"\n")?;
                }
                Ok(())
            }
        });
        let out = crate::child::feed_and_wait(child, write).map_err(spawn_err)?;
        if out.status.success() {
            return Ok(String::from_utf8_lossy(&out.stdout).into_owned());
        }
        let stderr = String::from_utf8_lossy(&out.stderr).trim().to_owned();
        Err(NftError::Failed {
            status: out.status.to_string(),
            kind: classify(&stderr),
            stderr,
        })
    }
}

impl NftClient for Exec {
    fn run(&self, tx: &NftTransaction) -> Result<(), NftError> {
        tracing::trace!(transaction = %tx, "nft -f -");
        self.run_with_stdin(&["-f", "-"], Some(tx)).map(drop)
    }

    fn check(&self, tx: &NftTransaction) -> Result<(), NftError> {
        self.run_with_stdin(&["-c", "-f", "-"], Some(tx)).map(drop)
    }

    fn list_table(&self, family: Family, table: &str) -> Result<String, NftError> {
        self.run_with_stdin(&["list", "table", &family.to_string(), table], None)
    }

    fn list_table_json(&self, family: Family, table: &str) -> Result<String, NftError> {
        self.run_with_stdin(&["-j", "list", "table", &family.to_string(), table], None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stderr_is_classified() {
        assert_eq!(
            classify("Error: Could not process rule: No such file or directory"),
            NftErrorKind::NotFound
        );
        assert_eq!(
            classify("Error: Could not process rule: File exists"),
            NftErrorKind::Exists
        );
        assert_eq!(classify("Error: syntax error"), NftErrorKind::Other);
    }

    #[test]
    fn a_missing_namespace_fails_before_nft_runs() {
        // A binary that cannot exist: had it been started, the error would be a Spawn.
        let exec = Exec::new()
            .with_binary("/nonexistent/nft")
            .with_netns(Netns::at_path("/nonexistent/netns"));
        let err = exec
            .list_table(Family::Ip, "kproxy")
            .expect_err("no namespace");
        assert!(matches!(err, NftError::Netns(_)), "{err:?}");
        assert!(err.to_string().contains("/nonexistent/netns"), "{err}");
        assert_eq!(err.kind(), NftErrorKind::Other);
    }

    #[test]
    fn the_spawn_log_keeps_the_latest_pids() {
        let log = SpawnLog::new();
        for pid in 0..SPAWN_LOG_LEN as u32 + 1 {
            log.record(pid);
        }
        assert!(!log.contains(0));
        assert!(log.contains(1) && log.contains(SPAWN_LOG_LEN as u32));
        let exec = Exec::new().with_spawn_log(log.clone());
        exec.run_with_stdin(&["--version"], None).ok();
        assert_eq!(log.0.lock().unwrap().len(), SPAWN_LOG_LEN);
    }
}
