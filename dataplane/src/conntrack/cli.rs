//! [`ConntrackCli`]: deletes through the `conntrack` binary (conntrack-tools), which does the same
//! dump, match and delete as [`super::ConntrackNetlink`] in its own process.

use std::{
    path::PathBuf,
    process::{Command, Output},
};

use super::{ConntrackClient, ConntrackError, Entry, FlowFilter, L3};

impl L3 {
    fn cli(self) -> &'static str {
        match self {
            L3::Ipv4 => "ipv4",
            L3::Ipv6 => "ipv6",
        }
    }
}

impl FlowFilter {
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
        filter.validate()?;
        let (mut cmd, program) = self.command();
        let out = cmd
            .args(filter.cli_args())
            .output()
            .map_err(|source| ConntrackError::Spawn { program, source })?;
        interpret(&out)
    }

    // Listing would mean parsing `conntrack -L` text, and an exact delete by the CLI cannot
    // carry the entry's id; this client is kept for comparing filters, so it does neither.
    fn list(&self, _l3: L3) -> Result<Vec<Entry>, ConntrackError> {
        Err(unsupported("list entries"))
    }

    fn delete_entries(&self, _l3: L3, entries: &[Entry]) -> Vec<Result<bool, ConntrackError>> {
        entries
            .iter()
            .map(|_| Err(unsupported("delete exact entries")))
            .collect()
    }
}

fn unsupported(op: &'static str) -> ConntrackError {
    ConntrackError::Unsupported {
        client: "the conntrack CLI client",
        op,
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

    #[test]
    fn listing_and_exact_deletes_are_unsupported_not_silently_empty() {
        let cli = ConntrackCli::new().with_binary("/nonexistent/conntrack");
        let unsupported = |e: &ConntrackError| matches!(e, ConntrackError::Unsupported { .. });
        assert!(cli.list(L3::Ipv4).is_err_and(|e| unsupported(&e)));
        let results = cli.delete_entries(L3::Ipv4, &[Entry::default(), Entry::default()]);
        assert_eq!(results.len(), 2);
        assert!(results.iter().all(|r| r.as_ref().is_err_and(unsupported)));
    }
}
