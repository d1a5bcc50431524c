//! The peak RSS of each iptables tool a kproxy sync runs, apart from the process that runs it.
//! `getrusage(RUSAGE_CHILDREN)` cannot give it: Linux carries the parent's high-water mark into
//! a child spawned with vfork+exec (as Rust's `Command` does), so a small `iptables-restore`
//! run by the bench's big sync process reports the bench's peak. Instead the sync child gets a
//! `PATH` whose first folder holds one wrapper per tool, which runs the real tool under GNU
//! `time` (a small process that forks it): `%M` is then the tool's own peak.

use std::{collections::BTreeMap, ffi::OsString, os::unix::fs::PermissionsExt, path::PathBuf};

use anyhow::Result;
use kproxy_dataplane::iptables::{Backend, Family};

const TIME: &str = "/usr/bin/time";

pub struct Wrappers {
    dir: tempfile::TempDir,
}

/// The real program `name` on `PATH` or in the sbin folders.
fn real(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin"].map(PathBuf::from))
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

impl Wrappers {
    pub fn new() -> Result<Self> {
        anyhow::ensure!(
            std::path::Path::new(TIME).is_file(),
            "{TIME} (GNU time) is needed"
        );
        let dir = tempfile::Builder::new().prefix("kpbench-tools").tempdir()?;
        let log = dir.path().join("rss");
        for backend in Backend::ALL {
            for family in Family::ALL {
                let stem = format!("{}-{backend}", family.command());
                for name in [format!("{stem}-restore"), format!("{stem}-save"), stem] {
                    let Some(real) = real(&name) else { continue };
                    let script = format!(
                        "#!/bin/sh\nexec {TIME} -a -o '{}' -f '%M {name}' '{}' \"$@\"\n",
                        log.display(),
                        real.display()
                    );
                    let p = dir.path().join(&name);
                    std::fs::write(&p, script)?;
                    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755))?;
                }
            }
        }
        Ok(Self { dir })
    }

    /// `PATH` for the child: the wrappers first.
    pub fn path_env(&self) -> Result<OsString> {
        let old = std::env::var_os("PATH").unwrap_or_default();
        let dirs = std::iter::once(self.dir.path().to_owned())
            .chain(std::env::split_paths(&old))
            .chain(["/usr/sbin", "/sbin"].map(PathBuf::from));
        Ok(std::env::join_paths(dirs)?)
    }

    /// The largest peak RSS (KiB) of each tool run since the wrappers were made.
    pub fn peaks(&self) -> BTreeMap<String, u64> {
        let log = self.dir.path().join("rss");
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        let mut out = BTreeMap::new();
        for line in text.lines() {
            // GNU time writes "Command exited with non-zero status N" before the format.
            let Some((kib, name)) = line.split_once(' ') else {
                continue;
            };
            let Ok(kib) = kib.parse::<u64>() else {
                continue;
            };
            let e = out.entry(name.to_owned()).or_insert(0);
            *e = (*e).max(kib);
        }
        out
    }
}
