//! Named network namespaces (compatible with `ip netns`), and running code inside one.
//!
//! A namespace is made by a short-lived thread that `unshare`s its network namespace and bind-mounts
//! `/proc/thread-self/ns/net` onto `/run/netns/NAME`; the mount keeps it alive after the thread ends.
//! Work inside a namespace runs on a fresh thread that `setns`es first: a thread's namespace is
//! per-thread, so the caller's threads (and tokio's pool) are never moved. Sockets keep the namespace
//! they were created in, so a socket made on such a thread can be used from anywhere afterwards.

use anyhow::{Context, Result, anyhow};
use nix::mount::{MntFlags, MsFlags, mount, umount2};
use nix::sched::{CloneFlags, setns, unshare};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

pub const NETNS_DIR: &str = "/run/netns";
/// Every namespace this crate makes starts with this, so `cleanup --prefix kpt` finds leftovers.
pub const DEFAULT_PREFIX: &str = "kptb";

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A name unique to this process and call: `kpt<pid>x<n>` (short: interface names derive from it).
pub fn unique_tag() -> String {
    format!(
        "{DEFAULT_PREFIX}{}x{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

/// A named network namespace, deleted on Drop (links inside die with it; processes started in it
/// through [`crate::process::NsProcess`] are killed by their own Drop).
#[derive(Debug)]
pub struct Netns {
    name: String,
    path: PathBuf,
}

impl Netns {
    /// Creates `/run/netns/<name>` holding a new, empty network namespace (`lo` stays down: the
    /// bed brings it up where it builds a namespace into the topology).
    pub fn create(name: &str) -> Result<Netns> {
        std::fs::create_dir_all(NETNS_DIR).context("creating /run/netns")?;
        let path = Path::new(NETNS_DIR).join(name);
        File::create_new(&path).with_context(|| format!("netns {name} already exists"))?;
        let ns = Netns {
            name: name.to_string(),
            path,
        };
        let target = ns.path.clone();
        std::thread::spawn(move || -> Result<()> {
            unshare(CloneFlags::CLONE_NEWNET).context("unshare(CLONE_NEWNET)")?;
            mount(
                Some("/proc/thread-self/ns/net"),
                &target,
                None::<&str>,
                MsFlags::MS_BIND,
                None::<&str>,
            )
            .context("bind-mounting the new netns")
        })
        .join()
        .map_err(|_| anyhow!("netns creation thread panicked"))??;
        // New namespaces inherit IPv4 conf from the init namespace (rp_filter may be strict there):
        // make every namespace of the bed the same regardless of the host.
        ns.sysctls(&[
            ("net/ipv4/conf/all/rp_filter", "0"),
            ("net/ipv4/conf/default/rp_filter", "0"),
            ("net/ipv6/conf/all/accept_dad", "0"),
            ("net/ipv6/conf/default/accept_dad", "0"),
        ])?;
        Ok(ns)
    }

    /// A namespace of its own for one test, with `lo` up: `None` (the test skips itself, saying
    /// so) when not running as root, which namespaces need.
    pub fn scratch() -> Option<Netns> {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("skipped: needs root for network namespaces");
            return None;
        }
        let ns = Netns::create(&unique_tag()).expect("creating a network namespace");
        ns.exec(&["ip", "link", "set", "lo", "up"]);
        Some(ns)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Runs a command inside the namespace (`ip netns exec`) and asserts it succeeded; returns
    /// its standard output.
    pub fn exec(&self, args: &[&str]) -> String {
        let out = self.try_exec(args);
        assert!(
            out.status.success(),
            "{args:?} in {}: {}",
            self.name,
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Runs a command inside the namespace; the caller judges its outcome.
    pub fn try_exec(&self, args: &[&str]) -> std::process::Output {
        std::process::Command::new("ip")
            .args(["netns", "exec", &self.name])
            .args(args)
            .output()
            .expect("running ip netns exec")
    }

    /// Loads `script` with `nft -f -` inside the namespace, asserting success.
    pub fn nft(&self, script: &str) {
        use std::io::Write;
        let mut child = std::process::Command::new("ip")
            .args(["netns", "exec", &self.name, "nft", "-f", "-"])
            .stdin(std::process::Stdio::piped())
            .spawn()
            .expect("running nft");
        let mut stdin = child.stdin.take().expect("piped stdin");
        stdin.write_all(script.as_bytes()).expect("writing to nft");
        drop(stdin);
        assert!(child.wait().expect("nft").success(), "nft -f of {script}");
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// An open handle on the namespace (for `setns` or moving a link into it).
    pub fn file(&self) -> Result<File> {
        File::open(&self.path).with_context(|| format!("opening {}", self.path.display()))
    }

    /// Runs `f` on a new thread that has entered this namespace, and returns its result.
    pub fn run<F, R>(&self, f: F) -> Result<R>
    where
        F: FnOnce() -> Result<R> + Send + 'static,
        R: Send + 'static,
    {
        let file = self.file()?;
        std::thread::spawn(move || {
            setns(&file, CloneFlags::CLONE_NEWNET).context("setns")?;
            f()
        })
        .join()
        .map_err(|_| anyhow!("thread in netns {} panicked", self.name))?
    }

    /// Like [`Netns::run`] but awaits the thread instead of blocking the async caller.
    pub async fn run_async<F, R>(&self, f: F) -> Result<R>
    where
        F: FnOnce() -> Result<R> + Send + 'static,
        R: Send + 'static,
    {
        let file = self.file()?;
        let (tx, rx) = tokio::sync::oneshot::channel();
        std::thread::spawn(move || {
            let r = setns(&file, CloneFlags::CLONE_NEWNET)
                .context("setns")
                .and_then(|()| f());
            let _ = tx.send(r);
        });
        rx.await
            .map_err(|_| anyhow!("thread in netns {} panicked", self.name))?
    }

    /// Writes `/proc/sys/<key>` values inside the namespace (/proc/sys/net follows the writer's netns).
    pub fn sysctls(&self, kv: &[(&str, &str)]) -> Result<()> {
        let kv: Vec<(String, String)> = kv
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        self.run(move || {
            for (k, v) in kv {
                std::fs::write(Path::new("/proc/sys").join(&k), &v)
                    .with_context(|| format!("sysctl {k}={v}"))?;
            }
            Ok(())
        })
    }

    /// An rtnetlink handle whose socket lives in this namespace. Must be called inside a tokio
    /// runtime: the connection task is spawned on it.
    pub fn netlink(&self) -> Result<rtnetlink::Handle> {
        let rt = tokio::runtime::Handle::current();
        let (conn, handle) = self.run(move || {
            let _guard = rt.enter();
            let (conn, handle, _) = rtnetlink::new_connection().context("netlink socket")?;
            Ok((conn, handle))
        })?;
        tokio::spawn(conn);
        Ok(handle)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = remove_netns_path(&self.path);
    }
}

fn remove_netns_path(path: &Path) -> Result<()> {
    // MNT_DETACH: a lazy unmount cannot fail on a busy namespace; the namespace itself goes away when
    // its last process or socket does.
    let _ = umount2(path, MntFlags::MNT_DETACH);
    std::fs::remove_file(path).with_context(|| format!("removing {}", path.display()))
}

/// Runs a command on the host and asserts it succeeded; returns its standard output.
pub fn sh(args: &[&str]) -> String {
    let out = std::process::Command::new(args[0])
        .args(&args[1..])
        .output()
        .expect("running a command");
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Whether a namespace of this name exists under /run/netns.
pub fn exists(name: &str) -> bool {
    Path::new(NETNS_DIR).join(name).exists()
}

/// Removes every namespace under /run/netns whose name starts with `prefix`, killing the processes
/// still inside it first (found through /proc/*/ns/net). Returns the names removed.
pub fn cleanup_prefix(prefix: &str) -> Result<Vec<String>> {
    anyhow::ensure!(!prefix.is_empty(), "refusing an empty prefix");
    let mut removed = Vec::new();
    let Ok(dir) = std::fs::read_dir(NETNS_DIR) else {
        return Ok(removed);
    };
    for entry in dir.flatten() {
        let name = entry.file_name().to_string_lossy().to_string();
        if !name.starts_with(prefix) {
            continue;
        }
        kill_processes_in(&entry.path());
        remove_netns_path(&entry.path())?;
        removed.push(name);
    }
    Ok(removed)
}

/// SIGKILLs processes whose network namespace is the one mounted at `path` (same inode).
fn kill_processes_in(path: &Path) {
    use std::os::unix::fs::MetadataExt;
    let Ok(target) = std::fs::metadata(path) else {
        return;
    };
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return;
    };
    for p in procs.flatten() {
        let Ok(pid) = p.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        if pid == std::process::id() as i32 {
            continue;
        }
        if let Ok(m) = std::fs::metadata(p.path().join("ns/net"))
            && m.ino() == target.ino()
            && m.dev() == target.dev()
        {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
}
