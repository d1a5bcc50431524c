//! One kproxy per network namespace: the agent (and `--cleanup`, `--init-only`) holds an
//! exclusive `flock` on `$KPROXY_RUNTIME_DIR/agent-<netns inode>.lock` (default `/run/kproxy`),
//! keyed like the agent's record because kproxy programs the namespace it runs in.
//!
//! Two agents in one namespace would share the same tables and undo each other's syncs, each
//! then failing and resyncing in turn; a cleanup beside a running agent would delete its rules
//! under it. The lock turns both into a refusal at start that names the holder's pid.
//!
//! `flock` rather than a pid file: the kernel releases it when the holder's last descriptor
//! closes, so a SIGKILLed agent leaves no stale lock behind. The file itself stays (removing a
//! locked file lets a newcomer lock a fresh inode beside the holder); it only holds the pid of
//! its last holder, for the message. The descriptor is close-on-exec (std opens it so), so
//! children (`nft`) never hold the lock past the agent.

use std::{
    fs::{File, OpenOptions},
    io::{self, Read, Seek, Write},
    path::{Path, PathBuf},
};

use crate::debug::record;

/// The lock, held until dropped (or the process ends, however it ends).
#[derive(Debug)]
pub struct AgentLock {
    _file: File,
    path: PathBuf,
}

impl AgentLock {
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Why the lock was not taken.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    /// Another kproxy holds it: the only case that must stop the caller.
    #[error(
        "another kproxy ({holder}) already runs in this network namespace (lock {}); stop it first: two would fight over the same rules",
        path.display()
    )]
    Held { path: PathBuf, holder: String },
    /// The lock file cannot be made or locked (e.g. a read-only /run).
    #[error("cannot take the agent lock {}: {error}", path.display())]
    Io { path: PathBuf, error: io::Error },
}

/// Takes the lock of this network namespace, writing this process's pid into it.
pub fn acquire() -> Result<AgentLock, LockError> {
    let path = record::runtime_file("lock").map_err(|error| LockError::Io {
        path: PathBuf::from(record::DEFAULT_DIR),
        error,
    })?;
    acquire_at(&path)
}

/// [`acquire`] at an explicit path.
pub fn acquire_at(path: &Path) -> Result<AgentLock, LockError> {
    let io_error = |error| LockError::Io {
        path: path.to_owned(),
        error,
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(io_error)?;
    }
    // Not truncated on open: the holder's pid must survive a newcomer's failed attempt.
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .map_err(io_error)?;
    match file.try_lock() {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => {
            return Err(LockError::Held {
                path: path.to_owned(),
                holder: holder(&mut file),
            });
        }
        Err(std::fs::TryLockError::Error(e)) => return Err(io_error(e)),
    }
    write_pid(&mut file).map_err(io_error)?;
    Ok(AgentLock {
        _file: file,
        path: path.to_owned(),
    })
}

fn write_pid(file: &mut File) -> io::Result<()> {
    file.set_len(0)?;
    file.rewind()?;
    writeln!(file, "{}", std::process::id())?;
    file.flush()
}

/// "pid N", from the file the holder wrote (it may not have written it yet).
fn holder(file: &mut File) -> String {
    let mut text = String::new();
    let _ = file.read_to_string(&mut text);
    match text.trim().parse::<u32>() {
        Ok(pid) => format!("pid {pid}"),
        Err(_) => "pid unknown".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// flock locks belong to the open file description, so a second open in the same process
    /// conflicts just as another process would.
    #[test]
    fn a_second_taker_is_refused_with_the_holders_pid_until_the_first_lets_go() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/agent-1.lock");
        let first = acquire_at(&path).unwrap();
        let err = acquire_at(&path).unwrap_err();
        let pid = format!("pid {}", std::process::id());
        assert!(
            matches!(&err, LockError::Held { holder, .. } if *holder == pid),
            "{err}"
        );
        assert!(err.to_string().contains(&pid), "{err}");
        drop(first);
        acquire_at(&path).expect("free again once the holder is gone");
    }
}
