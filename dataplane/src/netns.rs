//! [`Netns`]: the network namespace a kernel client works in, the caller's or another one, and
//! the one way every client enters it ([`Netns::run`]).
//!
//! `setns` moves only the calling thread, and a socket (or a child process) stays in the
//! namespace of the thread that made it. So a short-lived thread of its own enters the
//! namespace, makes the socket or spawns the process, hands it back and ends. No thread of the
//! caller ever changes namespace, and nothing has to switch back (a failed switch back would
//! leave a thread of the agent in the wrong namespace for good).

use std::{
    fmt,
    fs::File,
    path::{Path, PathBuf},
    sync::Arc,
};

use nix::sched::{CloneFlags, setns};

/// Where `ip netns add NAME` bind-mounts the namespace it makes.
pub const NETNS_RUN_DIR: &str = "/run/netns";

/// A network namespace to work in: the caller's ([`Netns::current`], the default), one made by
/// `ip netns add` ([`Netns::named`]), or any namespace file ([`Netns::at_path`], such as
/// `/proc/PID/ns/net`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Netns {
    /// `None`: the caller's namespace.
    path: Option<PathBuf>,
}

/// The namespace file could not be opened or entered.
#[derive(Clone, Debug, thiserror::Error)]
#[error("entering network namespace {}: {source}", path.display())]
pub struct NetnsError {
    pub path: PathBuf,
    /// Shared (`Arc`) so that one failure can be reported for every request it failed.
    pub source: Arc<std::io::Error>,
}

impl NetnsError {
    pub fn errno(&self) -> Option<i32> {
        self.source.raw_os_error()
    }
}

impl Netns {
    /// The caller's own network namespace.
    pub fn current() -> Self {
        Self::default()
    }

    /// The namespace `ip netns add NAME` made (`/run/netns/NAME`).
    pub fn named(name: impl AsRef<str>) -> Self {
        Self::at_path(Path::new(NETNS_RUN_DIR).join(name.as_ref()))
    }

    /// The namespace of this namespace file (a bind mount, or `/proc/PID/ns/net`).
    pub fn at_path(path: impl Into<PathBuf>) -> Self {
        Self {
            path: Some(path.into()),
        }
    }

    /// `Some(name)`: [`Netns::named`]; `None`: the caller's. For callers that carry an
    /// optional namespace name, as the agent's flags and the tests do.
    pub fn from_name(name: Option<&str>) -> Self {
        name.map_or_else(Self::current, Self::named)
    }

    /// The namespace file; `None` for the caller's namespace.
    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    pub fn is_current(&self) -> bool {
        self.path.is_none()
    }

    /// Runs `f` inside this namespace: on the calling thread for the caller's namespace, else
    /// on a thread of its own that enters the namespace first and ends with `f`. What `f`
    /// returns (a socket, a child process) keeps the namespace it was made in.
    ///
    /// A panic in `f` is passed on to the caller.
    pub fn run<T, E>(&self, f: impl FnOnce() -> Result<T, E> + Send) -> Result<T, E>
    where
        T: Send,
        E: From<NetnsError> + Send,
    {
        let Some(path) = &self.path else {
            return f();
        };
        let fail = |e: std::io::Error| NetnsError {
            path: path.clone(),
            source: Arc::new(e),
        };
        // Opened here, not on the thread: a missing file is reported without spawning one.
        let ns = File::open(path).map_err(fail)?;
        let ran = std::thread::scope(|s| {
            s.spawn(|| {
                setns(&ns, CloneFlags::CLONE_NEWNET).map_err(|e| fail(e.into()))?;
                f()
            })
            .join()
        });
        ran.unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    }
}

impl fmt::Display for Netns {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.path {
            None => f.write_str("the current network namespace"),
            Some(path) => write!(f, "network namespace {}", path.display()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_named_namespace_is_the_file_ip_netns_makes() {
        assert_eq!(
            Netns::named("kpt-1").path(),
            Some(Path::new("/run/netns/kpt-1"))
        );
        assert_eq!(Netns::from_name(Some("kpt-1")), Netns::named("kpt-1"));
        assert!(Netns::from_name(None).is_current());
        assert_eq!(
            Netns::named("kpt-1").to_string(),
            "network namespace /run/netns/kpt-1"
        );
    }

    #[test]
    fn the_current_namespace_runs_on_the_calling_thread() {
        let caller = std::thread::current().id();
        let ran_on = Netns::current().run(|| Ok::<_, NetnsError>(std::thread::current().id()));
        assert_eq!(ran_on.unwrap(), caller);
    }

    #[test]
    fn a_missing_namespace_is_an_error_naming_it_and_f_never_runs() {
        let ns = Netns::at_path("/nonexistent/netns");
        let err = ns
            .run(|| -> Result<(), NetnsError> { panic!("ran outside the namespace") })
            .unwrap_err();
        assert_eq!(err.errno(), Some(nix::errno::Errno::ENOENT as i32));
        assert!(err.to_string().contains("/nonexistent/netns"), "{err}");
    }
}
