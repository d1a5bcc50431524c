//! The node set-up upstream kube-proxy does before its proxier runs (`platformSetup` and
//! `conntrack.go` in cmd/kube-proxy/app): conntrack's table size and timeouts from the
//! `conntrack` section, and the process's `oomScoreAdj`. `--init-only` runs the conntrack part
//! and exits.
//!
//! What is fatal follows upstream: a conntrack sysctl that cannot be read or written ends
//! kproxy, because running with a table too small or timeouts other than configured breaks
//! Services in ways that are hard to trace back. The exceptions are the cases where the kernel
//! or the runtime, not a mistake, forbids the change; those are warnings:
//! * `nf_conntrack_max` registered read-only: the kernel does that outside the initial network
//!   namespace (kproxy in a test bed, kind-like nodes). Upstream fails there and such setups
//!   set `maxPerCore: 0`; kproxy warns instead, so the same configuration runs everywhere, and
//!   says only "info" when the current value is already at least the wanted one.
//! * the hash table size: `/sys` mounted read-only (upstream checks `/proc/mounts` and sends a
//!   node Event; kproxy sees `EROFS` from the write and logs), or the kernel refusing it
//!   outside the initial network namespace (`EOPNOTSUPP`), which upstream avoids only by not
//!   writing when the table is already big enough, as kproxy does too.
//!
//! `oomScoreAdj` is applied by the agent only (upstream does it in `ProxyServer.Run`, which
//! `--init-only` never reaches), and a failure is a warning, as upstream's.

mod cpus;
pub mod lock;

use kproxy_dataplane::sysctl::{Change, IntFile, Sysctl, SysctlError};

pub use cpus::{node_cpus, parse_cpu_list};

use crate::config::{ConntrackConfiguration, GoDuration, KubeProxyConfiguration};

pub const CONNTRACK_MAX: &str = "net.netfilter.nf_conntrack_max";
pub const TCP_ESTABLISHED: &str = "net.netfilter.nf_conntrack_tcp_timeout_established";
pub const TCP_CLOSE_WAIT: &str = "net.netfilter.nf_conntrack_tcp_timeout_close_wait";
pub const TCP_BE_LIBERAL: &str = "net.netfilter.nf_conntrack_tcp_be_liberal";
pub const UDP_TIMEOUT: &str = "net.netfilter.nf_conntrack_udp_timeout";
pub const UDP_STREAM_TIMEOUT: &str = "net.netfilter.nf_conntrack_udp_timeout_stream";

/// The conntrack settings a configuration asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConntrackPlan {
    /// `nf_conntrack_max`, and through it the hash table size (max/4 at least); `None` leaves
    /// both alone (`maxPerCore: 0`).
    pub max: Option<i64>,
    /// The other sysctls, each present only when configured, in upstream's order.
    pub sysctls: Vec<(&'static str, i64)>,
}

/// What upstream's `getConntrackMax` and `setupConntrack` derive from the configuration.
pub fn plan(ct: &ConntrackConfiguration, cpus: usize) -> ConntrackPlan {
    let max = match ct.max_per_core.unwrap_or(0) {
        per_core if per_core > 0 => {
            let scaled = i64::from(per_core) * cpus as i64;
            Some(scaled.max(i64::from(ct.min.unwrap_or(0))))
        }
        _ => None,
    };
    // Upstream truncates to whole seconds, and leaves a zero (unset) duration alone.
    let secs = |d: Option<GoDuration>| d.filter(|d| !d.is_zero()).map(|d| d.0.as_secs() as i64);
    let sysctls = [
        (TCP_ESTABLISHED, secs(ct.tcp_established_timeout)),
        (TCP_CLOSE_WAIT, secs(ct.tcp_close_wait_timeout)),
        (TCP_BE_LIBERAL, ct.tcp_be_liberal.then_some(1)),
        (UDP_TIMEOUT, secs(Some(ct.udp_timeout))),
        (UDP_STREAM_TIMEOUT, secs(Some(ct.udp_stream_timeout))),
    ]
    .into_iter()
    .filter_map(|(name, value)| value.map(|v| (name, v)))
    .collect();
    ConntrackPlan { max, sysctls }
}

/// A setting left as it was, and why it is not an error.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Skipped {
    /// `nf_conntrack_max` is read-only here (outside the initial network namespace).
    MaxReadOnly { current: i64, wanted: i64 },
    /// `/sys` is mounted read-only, so the hash table cannot grow.
    HashsizeReadOnlyFs { current: i64, wanted: i64 },
    /// The kernel resizes the hash table only from the initial network namespace.
    HashsizeNotInitialNetns { current: i64, wanted: i64 },
}

/// What [`apply_conntrack`] did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Report {
    /// Every setting it looked at, by sysctl name (or the hashsize file's path).
    pub settings: Vec<(String, Change)>,
    pub skipped: Vec<Skipped>,
}

/// A conntrack setting that could not be applied: kproxy stops.
///
/// The message already holds the cause (path, errno), so it is deliberately not a `source`:
/// `{:#}` at the top would print it twice.
#[derive(Debug, thiserror::Error)]
#[error("setting {name} to {value}: {error}{}", hint(error))]
pub struct SetupError {
    pub name: String,
    pub value: i64,
    pub error: SysctlError,
}

fn hint(err: &SysctlError) -> &'static str {
    match err.is_not_found() {
        true => " (is the nf_conntrack kernel module loaded?)",
        false => "",
    }
}

/// Applies `plan` through `sysctl` (normally `/proc/sys`) and `hashsize` (normally
/// [`kproxy_dataplane::sysctl::CONNTRACK_HASHSIZE`]), logging every change.
pub fn apply_conntrack(
    plan: &ConntrackPlan,
    sysctl: &Sysctl,
    hashsize: &IntFile,
) -> Result<Report, SetupError> {
    let mut report = Report::default();
    if let Some(max) = plan.max {
        set_max(sysctl, max, &mut report)?;
        set_hashsize(hashsize, max / 4, &mut report)?;
    }
    for &(name, value) in &plan.sysctls {
        let change = sysctl.ensure(name, value).map_err(fail(name, value))?;
        record(&mut report, name, change);
    }
    Ok(report)
}

fn set_max(sysctl: &Sysctl, max: i64, report: &mut Report) -> Result<(), SetupError> {
    let current = sysctl
        .read(CONNTRACK_MAX)
        .map_err(fail(CONNTRACK_MAX, max))?;
    if current == max {
        record(report, CONNTRACK_MAX, Change::Unchanged(current));
        return Ok(());
    }
    if !sysctl
        .is_writable(CONNTRACK_MAX)
        .map_err(fail(CONNTRACK_MAX, max))?
    {
        match current >= max {
            true => tracing::info!(
                current,
                wanted = max,
                "nf_conntrack_max is read-only in this network namespace and already large enough; leaving it"
            ),
            false => tracing::warn!(
                current,
                wanted = max,
                "nf_conntrack_max is read-only in this network namespace (not the initial one): the conntrack table stays smaller than configured"
            ),
        }
        report.skipped.push(Skipped::MaxReadOnly {
            current,
            wanted: max,
        });
        return Ok(());
    }
    sysctl
        .write(CONNTRACK_MAX, max)
        .map_err(fail(CONNTRACK_MAX, max))?;
    record(
        report,
        CONNTRACK_MAX,
        Change::Changed {
            old: current,
            new: max,
        },
    );
    Ok(())
}

/// Grows (never shrinks) the hash table to `wanted` buckets, as upstream.
fn set_hashsize(file: &IntFile, wanted: i64, report: &mut Report) -> Result<(), SetupError> {
    let name = file.path().display().to_string();
    let current = file.read().map_err(fail(&name, wanted))?;
    if current >= wanted {
        record(report, &name, Change::Unchanged(current));
        return Ok(());
    }
    match file.write(wanted) {
        Ok(()) => {
            record(
                report,
                &name,
                Change::Changed {
                    old: current,
                    new: wanted,
                },
            );
            Ok(())
        }
        Err(e) if e.is_read_only_fs() => {
            tracing::warn!(
                current,
                wanted,
                "/sys is read-only: cannot grow the conntrack hash table, lookups get slower as the table fills (a container runtime mounting /sys read-only; upstream reports this as a node event)"
            );
            report
                .skipped
                .push(Skipped::HashsizeReadOnlyFs { current, wanted });
            Ok(())
        }
        Err(e) if e.is_not_supported() => {
            tracing::warn!(
                current,
                wanted,
                "the kernel resizes the conntrack hash table only from the initial network namespace: leaving it"
            );
            report
                .skipped
                .push(Skipped::HashsizeNotInitialNetns { current, wanted });
            Ok(())
        }
        Err(e) => Err(fail(&name, wanted)(e)),
    }
}

fn fail(name: &str, value: i64) -> impl FnOnce(SysctlError) -> SetupError + '_ {
    move |error| SetupError {
        name: name.to_string(),
        value,
        error,
    }
}

fn record(report: &mut Report, name: &str, change: Change) {
    match change {
        Change::Changed { old, new } => tracing::info!(sysctl = name, old, new, "set"),
        Change::Unchanged(value) => tracing::debug!(sysctl = name, value, "left as it is"),
    }
    report.settings.push((name.to_string(), change));
}

/// The whole conntrack set-up for `cfg` on this node, against the kernel's own files.
pub fn conntrack(cfg: &KubeProxyConfiguration) -> Result<Report, SetupError> {
    let plan = plan(&cfg.conntrack, node_cpus());
    apply_conntrack(&plan, &Sysctl::new(), &IntFile::conntrack_hashsize())
}

/// Writes `oomScoreAdj` to `file` (normally `/proc/self/oom_score_adj`). A failure (no
/// CAP_SYS_RESOURCE to lower it, say) is logged and returned for the caller to ignore.
pub fn oom_score_adj(value: i32, file: &IntFile) -> Result<Change, SysctlError> {
    let result = file.ensure(i64::from(value));
    match &result {
        Ok(Change::Changed { old, new }) => tracing::info!(old, new, "set oom_score_adj"),
        Ok(Change::Unchanged(_)) => {}
        Err(e) => tracing::warn!(error = %e, "could not apply oomScoreAdj; going on"),
    }
    result
}

#[cfg(test)]
mod tests;
