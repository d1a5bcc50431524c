//! [`Iptables`]: runs one backend's and family's save and restore tools.

use std::{
    io::Write,
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use super::{Backend, Family, RestoreInput, SavedRule, SavedTable, Table, save::ParseError};

/// How long `iptables-restore` waits for the xtables lock (`-w`), in seconds: other iptables
/// users (the kubelet, CNI plugins) hold it briefly; waiting for ever would hang a sync.
const LOCK_WAIT_SECONDS: &str = "5";

#[derive(Debug, thiserror::Error)]
pub enum IptablesError {
    #[error("running {program}: {source}")]
    Spawn {
        program: String,
        source: std::io::Error,
    },
    /// The tool failed; a restore changed nothing in the table whose block failed.
    #[error("{program} failed ({status}): {stderr}")]
    Failed {
        program: String,
        status: String,
        stderr: String,
    },
    #[error(transparent)]
    Parse(#[from] ParseError),
}

/// The save and restore tools of one backend and family, e.g. `ip6tables-legacy-save`.
#[derive(Clone, Debug)]
pub struct Iptables {
    backend: Backend,
    family: Family,
    netns: Option<String>,
}

impl Iptables {
    pub fn new(backend: Backend, family: Family) -> Self {
        Self {
            backend,
            family,
            netns: None,
        }
    }

    /// Runs every command inside network namespace `name` (as created by `ip netns add`).
    pub fn in_netns(mut self, name: impl Into<String>) -> Self {
        self.netns = Some(name.into());
        self
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    pub fn family(&self) -> Family {
        self.family
    }

    /// The tool's file name, e.g. `iptables-nft-save` for `tool` `save`.
    pub fn program(&self, tool: &str) -> String {
        format!("{}-{}-{tool}", self.family.command(), self.backend)
    }

    /// Whether this backend's tools are installed (searched on `PATH` and in the sbin folders,
    /// which a non-login root environment may leave off `PATH`).
    pub fn is_installed(&self) -> bool {
        let name = self.program("save");
        let path = std::env::var_os("PATH").unwrap_or_default();
        std::env::split_paths(&path)
            .chain(["/usr/sbin", "/sbin"].map(PathBuf::from))
            .any(|dir| is_file(&dir.join(&name)))
    }

    /// Every table that exists, as `iptables-save` without `-t` prints them. Unlike `-t TABLE`,
    /// this does not make the legacy backend instantiate a table nobody uses.
    pub fn save_all(&self) -> Result<Vec<SavedTable>, IptablesError> {
        let out = self.run(&self.program("save"), &[], None)?;
        Ok(super::parse_save(&out)?)
    }

    /// One table (`-t TABLE`); the legacy backend creates it in the kernel if it did not exist.
    pub fn save(&self, table: Table) -> Result<SavedTable, IptablesError> {
        let out = self.run(&self.program("save"), &["-t", table.as_str()], None)?;
        let tables = super::parse_save(&out)?;
        Ok(tables.into_iter().next().unwrap_or_else(|| SavedTable {
            name: table.as_str().to_owned(),
            ..SavedTable::default()
        }))
    }

    /// The rules of one chain (`iptables -t TABLE -S CHAIN`: cheap, unlike a save of a big
    /// table); `None` when the chain (or, for legacy, the table) does not exist.
    pub fn list_chain(
        &self,
        table: Table,
        chain: &str,
    ) -> Result<Option<Vec<SavedRule>>, IptablesError> {
        let program = format!("{}-{}", self.family.command(), self.backend);
        let args = ["-w", LOCK_WAIT_SECONDS, "-t", table.as_str(), "-S", chain];
        match self.run(&program, &args, None) {
            Ok(out) => Ok(Some(parse_list(&out))),
            Err(IptablesError::Failed { stderr, .. }) if is_missing(&stderr, chain) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Parses and builds `input` as [`Iptables::restore`] would, without committing anything
    /// (`--test`): what the tool itself refuses, it refuses here.
    pub fn test(&self, input: &RestoreInput) -> Result<(), IptablesError> {
        let args = ["-w", LOCK_WAIT_SECONDS, "--noflush", "--test"];
        self.run(&self.program("restore"), &args, Some(input.to_string()))
            .map(drop)
    }

    /// Applies `input` with `--noflush` (only what the input names changes), waiting at most
    /// [`LOCK_WAIT_SECONDS`] for the xtables lock.
    pub fn restore(&self, input: &RestoreInput) -> Result<(), IptablesError> {
        if input.is_empty() {
            return Ok(());
        }
        let args = ["-w", LOCK_WAIT_SECONDS, "--noflush"];
        self.run(&self.program("restore"), &args, Some(input.to_string()))
            .map(drop)
    }

    fn command(&self, program: &str, args: &[&str]) -> Command {
        let mut cmd = match &self.netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns, program]);
                c
            }
            None => Command::new(program),
        };
        cmd.args(args);
        cmd
    }

    /// Runs `program`, feeding `stdin` if given, and returns its standard output.
    fn run(
        &self,
        program: &str,
        args: &[&str],
        stdin: Option<String>,
    ) -> Result<String, IptablesError> {
        let mut cmd = self.command(program, args);
        let spawn_err = |source| IptablesError::Spawn {
            program: program.to_owned(),
            source,
        };
        let child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(spawn_err)?;
        let write = stdin.map(|text| move |w: &mut dyn Write| w.write_all(text.as_bytes()));
        let out = crate::child::feed_and_wait(child, write).map_err(spawn_err)?;
        if out.status.success() {
            return Ok(String::from_utf8_lossy(&out.stdout).into_owned());
        }
        Err(IptablesError::Failed {
            program: program.to_owned(),
            status: out.status.to_string(),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        })
    }
}

/// `-A CHAIN SPEC` lines of `iptables -S` (the `-N` / `-P` lines are left out).
fn parse_list(out: &str) -> Vec<SavedRule> {
    out.lines()
        .filter_map(|l| l.strip_prefix("-A "))
        .map(|rule| {
            let (chain, spec) = rule.split_once(' ').unwrap_or((rule, ""));
            SavedRule {
                chain: chain.to_owned(),
                spec: spec.to_owned(),
            }
        })
        .collect()
}

/// What the tools say when a chain (or a legacy table) does not exist. iptables-nft 1.8.9 says
/// "chain `X' in table `nat' is incompatible, use 'nft' tool" for a chain that is not there.
fn is_missing(stderr: &str, chain: &str) -> bool {
    stderr.contains("No chain/target/match by that name")
        || stderr.contains("does not exist")
        || stderr.contains(&format!("chain `{chain}' in table"))
            && stderr.contains("is incompatible")
}

fn is_file(path: &Path) -> bool {
    path.metadata().map(|m| m.is_file()).unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn argv(cmd: &Command) -> Vec<String> {
        std::iter::once(cmd.get_program())
            .chain(cmd.get_args())
            .map(|s| s.to_string_lossy().into_owned())
            .collect()
    }

    #[test]
    fn tools_are_named_by_family_and_backend() {
        let ipt = Iptables::new(Backend::Legacy, Family::V6);
        assert_eq!(ipt.program("save"), "ip6tables-legacy-save");
        let ipt = Iptables::new(Backend::Nft, Family::V4);
        assert_eq!(ipt.program("restore"), "iptables-nft-restore");
    }

    #[test]
    fn netns_wraps_the_command_in_ip_netns_exec() {
        let ipt = Iptables::new(Backend::Nft, Family::V4).in_netns("t1");
        let cmd = ipt.command("iptables-nft-restore", &["-w", "5", "--noflush"]);
        assert_eq!(
            argv(&cmd),
            [
                "ip",
                "netns",
                "exec",
                "t1",
                "iptables-nft-restore",
                "-w",
                "5",
                "--noflush"
            ]
        );
    }

    #[test]
    fn an_empty_restore_runs_nothing() {
        // A backend that cannot exist: any spawn would fail.
        let ipt = Iptables::new(Backend::Nft, Family::V4).in_netns("/nonexistent");
        assert!(ipt.restore(&RestoreInput::new()).is_ok());
    }
}
