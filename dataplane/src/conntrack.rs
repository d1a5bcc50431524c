//! Deleting conntrack entries by filter: [`ConntrackClient`] and [`ConntrackCli`], the
//! implementation that runs the `conntrack` binary (conntrack-tools).
//!
//! Why the CLI and not netlink (for now): the kernel's ctnetlink delete takes one exact tuple
//! (or flushes everything), so a filtered delete is a dump, a match in user space and one delete
//! per entry. Whether `netlink-packet-netfilter` has conntrack messages at its current version
//! was not checked (it is not in this tree), and hand-building those messages with `netlink-sys`
//! did not fit the time this was written in. `conntrack -D` does exactly that dump-match-delete. A netlink client
//! behind the same [`ConntrackClient`] trait is a follow-up; callers do not change.

use std::{
    net::IpAddr,
    path::PathBuf,
    process::{Command, Output},
};

/// The layer-3 family of the entries a filter selects (conntrack defaults to IPv4 otherwise).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum L3 {
    Ipv4,
    Ipv6,
}

impl L3 {
    pub fn of(ip: &IpAddr) -> Self {
        match ip {
            IpAddr::V4(_) => L3::Ipv4,
            IpAddr::V6(_) => L3::Ipv6,
        }
    }

    fn cli(self) -> &'static str {
        match self {
            L3::Ipv4 => "ipv4",
            L3::Ipv6 => "ipv6",
        }
    }
}

/// Selects UDP conntrack entries: every field that is set must match. At least one address or
/// port must be set, so a filter can never select all UDP entries of a family (kube-proxy must
/// not flush other programs' flows, at start-up or ever).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FlowFilter {
    pub l3: L3,
    /// Destination address of the original direction (a Service VIP).
    pub orig_dst: Option<IpAddr>,
    /// Destination port of the original direction (the Service port or NodePort).
    pub orig_dst_port: Option<u16>,
    /// Source address of the reply direction: the endpoint the flow was DNATed to.
    pub reply_src: Option<IpAddr>,
    pub reply_src_port: Option<u16>,
}

impl FlowFilter {
    /// UDP flows to `vip:port` (original direction), whatever they were DNATed to.
    pub fn udp_to(vip: IpAddr, port: u16) -> Self {
        Self {
            l3: L3::of(&vip),
            orig_dst: Some(vip),
            orig_dst_port: Some(port),
            reply_src: None,
            reply_src_port: None,
        }
    }

    /// UDP flows to destination port `port` on any address (a NodePort).
    pub fn udp_to_port(l3: L3, port: u16) -> Self {
        Self {
            l3,
            orig_dst: None,
            orig_dst_port: Some(port),
            reply_src: None,
            reply_src_port: None,
        }
    }

    /// Narrows the filter to flows DNATed to `endpoint ip:port` (their reply source).
    pub fn dnated_to(mut self, ip: IpAddr, port: u16) -> Self {
        self.reply_src = Some(ip);
        self.reply_src_port = Some(port);
        self
    }

    fn is_bounded(&self) -> bool {
        self.orig_dst.is_some()
            || self.orig_dst_port.is_some()
            || self.reply_src.is_some()
            || self.reply_src_port.is_some()
    }

    fn family_consistent(&self) -> bool {
        [self.orig_dst, self.reply_src]
            .iter()
            .flatten()
            .all(|ip| L3::of(ip) == self.l3)
    }

    /// The `conntrack -D` arguments for this filter.
    pub fn cli_args(&self) -> Vec<String> {
        let mut args: Vec<String> = ["-D", "-f", self.l3.cli(), "-p", "udp"]
            .map(str::to_owned)
            .into();
        let mut push = |flag: &str, value: Option<String>| {
            if let Some(v) = value {
                args.push(flag.to_owned());
                args.push(v);
            }
        };
        push("--orig-dst", self.orig_dst.map(|ip| ip.to_string()));
        push("--orig-port-dst", self.orig_dst_port.map(|p| p.to_string()));
        push("--reply-src", self.reply_src.map(|ip| ip.to_string()));
        push(
            "--reply-port-src",
            self.reply_src_port.map(|p| p.to_string()),
        );
        args
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConntrackError {
    #[error("refusing a conntrack filter that selects every UDP entry: {0:?}")]
    Unbounded(FlowFilter),
    #[error("conntrack filter mixes address families: {0:?}")]
    MixedFamilies(FlowFilter),
    #[error("running {program}: {source}")]
    Spawn {
        program: String,
        source: std::io::Error,
    },
    #[error("conntrack failed ({status}): {stderr}")]
    Failed { status: String, stderr: String },
}

/// Deletes conntrack entries.
pub trait ConntrackClient {
    /// Deletes the entries `filter` selects and returns how many; none matching is `Ok(0)`.
    fn delete(&self, filter: &FlowFilter) -> Result<u64, ConntrackError>;
}

/// Runs the `conntrack` binary, optionally inside a named network namespace (`ip netns exec`).
#[derive(Clone, Debug)]
pub struct ConntrackCli {
    conntrack: PathBuf,
    netns: Option<String>,
}

impl Default for ConntrackCli {
    fn default() -> Self {
        Self {
            conntrack: PathBuf::from("conntrack"),
            netns: None,
        }
    }
}

impl ConntrackCli {
    pub fn new() -> Self {
        Self::default()
    }

    /// Uses this `conntrack` binary instead of the one on `PATH`.
    pub fn with_binary(mut self, conntrack: impl Into<PathBuf>) -> Self {
        self.conntrack = conntrack.into();
        self
    }

    /// Works on the conntrack table of network namespace `name` (as created by `ip netns add`).
    pub fn in_netns(mut self, name: impl Into<String>) -> Self {
        self.netns = Some(name.into());
        self
    }

    fn command(&self) -> (Command, String) {
        match &self.netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns]).arg(&self.conntrack);
                (c, "ip netns exec".to_owned())
            }
            None => (
                Command::new(&self.conntrack),
                self.conntrack.display().to_string(),
            ),
        }
    }
}

impl ConntrackClient for ConntrackCli {
    fn delete(&self, filter: &FlowFilter) -> Result<u64, ConntrackError> {
        if !filter.is_bounded() {
            return Err(ConntrackError::Unbounded(filter.clone()));
        }
        if !filter.family_consistent() {
            return Err(ConntrackError::MixedFamilies(filter.clone()));
        }
        let (mut cmd, program) = self.command();
        let out = cmd
            .args(filter.cli_args())
            .output()
            .map_err(|source| ConntrackError::Spawn { program, source })?;
        interpret(&out)
    }
}

/// `conntrack -D` exits 1 when nothing matched ("0 flow entries have been deleted."): that is
/// success with a count of 0, so the count printed on stderr decides, not the exit status alone.
fn interpret(out: &Output) -> Result<u64, ConntrackError> {
    let stderr = String::from_utf8_lossy(&out.stderr);
    match deleted_count(&stderr) {
        Some(n) if out.status.success() || n == 0 => Ok(n),
        _ => Err(ConntrackError::Failed {
            status: out.status.to_string(),
            stderr: stderr.trim().to_owned(),
        }),
    }
}

/// Reads N from "conntrack v1.4.7 (conntrack-tools): N flow entries have been deleted.".
fn deleted_count(stderr: &str) -> Option<u64> {
    let (before, _) = stderr.split_once(" flow entries have been deleted")?;
    before.rsplit(' ').next()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoint_filter_args() {
        let f = FlowFilter::udp_to("172.30.0.1".parse().unwrap(), 53)
            .dnated_to("10.180.0.1".parse().unwrap(), 5353);
        assert_eq!(
            f.cli_args().join(" "),
            "-D -f ipv4 -p udp --orig-dst 172.30.0.1 --orig-port-dst 53 \
             --reply-src 10.180.0.1 --reply-port-src 5353"
        );
        let f = FlowFilter::udp_to_port(L3::Ipv6, 30053);
        assert_eq!(
            f.cli_args().join(" "),
            "-D -f ipv6 -p udp --orig-port-dst 30053"
        );
    }

    #[test]
    fn reads_the_deleted_count() {
        let line = "conntrack v1.4.7 (conntrack-tools): 3 flow entries have been deleted.\n";
        assert_eq!(deleted_count(line), Some(3));
        assert_eq!(
            deleted_count("conntrack v1.4.7: mismatched address family"),
            None
        );
    }

    #[test]
    fn refuses_unbounded_and_mixed_filters() {
        let cli = ConntrackCli::new().with_binary("/nonexistent/conntrack");
        let all = FlowFilter {
            l3: L3::Ipv4,
            orig_dst: None,
            orig_dst_port: None,
            reply_src: None,
            reply_src_port: None,
        };
        assert!(matches!(
            cli.delete(&all),
            Err(ConntrackError::Unbounded(_))
        ));
        let mixed = FlowFilter::udp_to("10.0.0.1".parse().unwrap(), 53)
            .dnated_to("fd00::1".parse().unwrap(), 53);
        assert!(matches!(
            cli.delete(&mixed),
            Err(ConntrackError::MixedFamilies(_))
        ));
        // A bounded filter reaches the (missing) binary: the spawn error says so.
        let ok = FlowFilter::udp_to("10.0.0.1".parse().unwrap(), 53);
        assert!(matches!(cli.delete(&ok), Err(ConntrackError::Spawn { .. })));
    }
}
