//! Commands run inside a namespace (`ip netns exec`, which execs in place: the child's pid is the
//! command's own), with stdout and stderr captured line by line.

use crate::netns::Netns;
use anyhow::{Context, Result, anyhow, bail};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use std::process::{ExitStatus, Stdio};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::watch;

/// Everything the process printed so far (both streams, interleaved as read), and how many of the
/// two streams have ended.
#[derive(Clone, Debug, Default)]
pub struct Captured {
    pub lines: Vec<String>,
    pub closed: u8,
}

/// A long-running process in a namespace; SIGKILLed on Drop if still running.
#[derive(Debug)]
pub struct NsProcess {
    child: Child,
    out: watch::Receiver<Captured>,
}

impl NsProcess {
    pub fn spawn(ns: &Netns, program: &str, args: &[String], env: &[(&str, &str)]) -> Result<Self> {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", ns.name(), program])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            // Its own process group, so that whatever it starts (nft, a helper) can be killed
            // with it, and a Ctrl-C at the terminal reaches only the runner, which cleans up.
            .process_group(0)
            .kill_on_drop(true);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd
            .spawn()
            .with_context(|| format!("starting {program} in {}", ns.name()))?;
        let (tx, out) = watch::channel(Captured::default());
        let stdout = child.stdout.take().expect("piped");
        let stderr = child.stderr.take().expect("piped");
        tokio::spawn(pump(stdout, tx.clone()));
        tokio::spawn(pump(stderr, tx));
        Ok(NsProcess { child, out })
    }

    /// The process's pid (`ip netns exec` execs in place, so it is the program's own), while it
    /// runs: for reading its `/proc/PID` files.
    pub fn id(&self) -> Option<u32> {
        self.child.id()
    }

    pub fn output(&self) -> Vec<String> {
        self.out.borrow().lines.clone()
    }

    /// Waits until a line containing `needle` was printed; fails early if the process ends first.
    pub async fn wait_for_line(&mut self, needle: &str, deadline: Duration) -> Result<()> {
        let mut rx = self.out.clone();
        let wait = rx.wait_for(|c| c.closed == 2 || c.lines.iter().any(|l| l.contains(needle)));
        match tokio::time::timeout(deadline, wait).await {
            Ok(Ok(c)) if c.lines.iter().any(|l| l.contains(needle)) => Ok(()),
            Ok(_) => {
                let status = match self.child.wait().await {
                    Ok(s) => s.to_string(),
                    Err(e) => e.to_string(),
                };
                bail!(
                    "exited ({status}) before printing {needle:?}\noutput:\n{}",
                    self.output().join("\n")
                )
            }
            Err(_) => bail!(
                "no {needle:?} within {deadline:?}\noutput:\n{}",
                self.output().join("\n")
            ),
        }
    }

    /// SIGTERM, then waits up to `grace` for the exit; SIGKILL after that.
    pub async fn stop(&mut self, grace: Duration) -> Result<ExitStatus> {
        if let Some(status) = self.child.try_wait()? {
            return Ok(status);
        }
        let pid = self.child.id().ok_or_else(|| anyhow!("no pid"))? as i32;
        let _ = kill(Pid::from_raw(pid), Signal::SIGTERM);
        let r = match tokio::time::timeout(grace, self.child.wait()).await {
            Ok(status) => Ok(status?),
            Err(_) => {
                self.child.kill().await?;
                Err(anyhow!("did not exit within {grace:?} of SIGTERM; killed"))
            }
        };
        // Children it left behind (its process group) go too.
        let _ = kill(Pid::from_raw(-pid), Signal::SIGKILL);
        r
    }
}

impl Drop for NsProcess {
    fn drop(&mut self) {
        if let Some(pid) = self.child.id() {
            let _ = kill(Pid::from_raw(-(pid as i32)), Signal::SIGKILL);
        }
    }
}

async fn pump(stream: impl AsyncRead + Unpin, tx: watch::Sender<Captured>) {
    let mut lines = BufReader::new(stream).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        tx.send_modify(|c| c.lines.push(line));
    }
    tx.send_modify(|c| c.closed += 1);
}

/// Runs a short command in `ns` to completion; fails with its output when it exits non-zero.
pub async fn run_in(ns: &Netns, program: &str, args: &[&str]) -> Result<String> {
    let out = Command::new("ip")
        .args(["netns", "exec", ns.name(), program])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .await
        .with_context(|| format!("running {program} in {}", ns.name()))?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if !out.status.success() {
        bail!("{program} {args:?} in {} failed: {text}", ns.name());
    }
    Ok(text)
}
