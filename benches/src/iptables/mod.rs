//! `kproxy-bench iptables ...`: kproxy's iptables mode on both iptables backends against
//! same-run baselines (scripts/bench-iptables, docs/benchmarks.md "The iptables mode"): (a) full
//! sync vs an upstream-shaped `iptables-restore`, (b) one Service added vs upstream's partial
//! restore, (c) first-packet connect latency vs direct, (d) peak RSS at the largest size. The
//! workload (`objects.rs`), the clocks, the children and the connect rounds are the nftables
//! benchmarks'; what is iptables' own is the upstream-shaped input ([`upstream`]) and the report.

mod report;
mod rows;
mod sync;
mod toolrss;
mod upstream;

use std::{net::Ipv4Addr, path::PathBuf, time::Duration};

use anyhow::Result;
use clap::Subcommand;
use kproxy_dataplane::iptables::{Family, Iptables, Table};
use kproxy_modes::registry::Backend;
use tokio::runtime::Handle;

use crate::{child, connect};

#[derive(Subcommand)]
pub enum Cmd {
    /// Every iptables benchmark; Markdown on stdout, progress on stderr.
    All {
        /// Smaller sizes and fewer repetitions (a few minutes).
        #[arg(long)]
        quick: bool,
        /// Seconds an upstream-shaped restore may take before it is reported as "> timeout".
        #[arg(long, default_value_t = 300)]
        timeout: u64,
        /// Which benchmarks, by letter: a, b and d (full sync, additions, peak RSS) run
        /// together, c connect latency.
        #[arg(long, default_value = "abcd")]
        only: String,
    },
    /// One kproxy full sync (and `adds` single-Service additions); JSON on stdout.
    Kproxy {
        services: u32,
        endpoints: u32,
        #[arg(long, default_value_t = 0)]
        adds: u32,
        #[arg(long, value_parser = backend)]
        backend: Backend,
    },
    /// Writes the upstream-shaped full-sync input into a file (for `upstream --input`).
    UpstreamInput {
        services: u32,
        endpoints: u32,
        path: PathBuf,
    },
    /// One upstream-shaped full restore (and `adds` partial restores); JSON on stdout.
    Upstream {
        services: u32,
        endpoints: u32,
        #[arg(long, default_value_t = 0)]
        adds: u32,
        #[arg(long, value_parser = backend)]
        backend: Backend,
        /// The full restore without `--noflush` (the whole table flushed: a reference only).
        #[arg(long)]
        flush: bool,
        #[arg(long, default_value_t = 300)]
        timeout: u64,
        /// The full input, written by `upstream-input` (default: written by this process).
        #[arg(long)]
        input: Option<PathBuf>,
    },
    /// Connect latency through a ClusterIP vs direct; JSON on stdout.
    Connect {
        #[arg(long, value_parser = backend)]
        backend: Backend,
        #[arg(long, value_delimiter = ',', default_value = "10,5000,10000")]
        sizes: Vec<u32>,
        #[arg(long, default_value_t = 5000)]
        connections: u32,
    },
}

fn backend(s: &str) -> Result<Backend, String> {
    Backend::ALL
        .into_iter()
        .find(|b| b.as_str() == s)
        .ok_or_else(|| format!("{s}: nft or legacy"))
}

/// The sizes of one run.
pub struct Plan {
    /// (Services, endpoints each) for (a) and (d).
    pub sizes: Vec<(u32, u32)>,
    /// The size at which (b) adds Services, and how many.
    pub adds_at: (u32, u32),
    pub adds: u32,
    pub connect_sizes: Vec<u32>,
    pub connections: u32,
    pub timeout: Duration,
    /// Repetitions of each full sync and each baseline that takes seconds, not minutes (the
    /// median is reported, with the spread): the machine is shared, and legacy's target is a
    /// close comparison.
    pub runs: u32,
}

impl Plan {
    fn new(quick: bool, timeout: u64) -> Self {
        if quick {
            Plan {
                sizes: vec![(1000, 5), (2000, 5)],
                adds_at: (1000, 5),
                adds: 10,
                connect_sizes: vec![10, 1000, 2000],
                connections: 500,
                timeout: Duration::from_secs(timeout.min(60)),
                runs: 1,
            }
        } else {
            Plan {
                sizes: vec![(1000, 5), (5000, 5), (10000, 5)],
                adds_at: (10000, 5),
                adds: 20,
                connect_sizes: vec![10, 5000, 10000],
                connections: 5000,
                timeout: Duration::from_secs(timeout),
                runs: 3,
            }
        }
    }
}

fn all(plan: &Plan, only: &str) -> Result<()> {
    let rows = match only.contains(['a', 'b', 'd']) {
        true => rows::sync_rows(plan)?,
        false => Vec::new(),
    };
    let rss = match (only.contains('d'), plan.sizes.last()) {
        (true, Some(&size)) => rows::tool_rss(size)?,
        _ => Vec::new(),
    };
    let mut conn = Vec::new();
    for backend in [Backend::Legacy, Backend::Nft]
        .into_iter()
        .filter(|_| only.contains('c'))
    {
        eprintln!("(c) connect latency, {backend} backend");
        let sizes: Vec<String> = plan.connect_sizes.iter().map(u32::to_string).collect();
        let r: Vec<connect::ConnectRow> = child(&[
            "iptables".into(),
            "connect".into(),
            format!("--backend={backend}"),
            format!("--sizes={}", sizes.join(",")),
            format!("--connections={}", plan.connections),
        ])?;
        conn.push((backend, r));
    }
    println!("{}", report::markdown(plan, only, &rows, &conn, &rss));
    Ok(())
}

/// Where the rule that dispatches `vip` sits: "rule K of N in CHAIN" (the first rule naming the
/// address whose target is not the masquerade mark), read with `iptables-save -t nat`.
fn where_probed(backend: Backend, netns: &str, vip: Ipv4Addr) -> Option<String> {
    let nat = Iptables::new(backend, Family::V4)
        .in_netns(netns)
        .save(Table::Nat)
        .ok()?;
    let needle = format!("-d {vip}/32");
    let rule = nat.rules.iter().find(|r| {
        r.spec.contains(&needle) && !r.target().is_some_and(|t| t.ends_with("MARK-MASQ"))
    })?;
    let chain: Vec<_> = nat.rules_of(&rule.chain).collect();
    let k = chain.iter().position(|r| r.spec == rule.spec)? + 1;
    Some(format!("rule {k} of {} in {}", chain.len(), rule.chain))
}

pub fn run(cmd: Cmd) -> Result<()> {
    let json = match cmd {
        Cmd::All {
            quick,
            timeout,
            only,
        } => return all(&Plan::new(quick, timeout), &only),
        Cmd::Kproxy {
            services,
            endpoints,
            adds,
            backend,
        } => serde_json::to_string(&sync::kproxy(services, endpoints, adds, backend)?)?,
        Cmd::UpstreamInput {
            services,
            endpoints,
            path,
        } => {
            sync::write_input(services, endpoints, &path)?;
            "null".into()
        }
        Cmd::Upstream {
            services,
            endpoints,
            adds,
            backend,
            flush,
            timeout,
            input,
        } => {
            let timeout = Duration::from_secs(timeout);
            let own = tempfile::NamedTempFile::new()?;
            let input = match input {
                Some(p) => p,
                None => {
                    sync::write_input(services, endpoints, own.path())?;
                    own.path().to_owned()
                }
            };
            let r = sync::upstream(services, endpoints, adds, backend, !flush, timeout, &input)?;
            serde_json::to_string(&r)?
        }
        Cmd::Connect {
            backend,
            sizes,
            connections,
        } => {
            let build = |netns: &str| {
                let settings = sync::settings(backend, Some(netns.to_owned()));
                sync::started_mode(&settings, Handle::current())
            };
            let under = connect::Under {
                build,
                where_probed: |netns: &str, vip| where_probed(backend, netns, vip),
                cleanup: |_, netns: &str| sync::flush_all(backend, Some(netns)),
            };
            let rows = crate::runtime()?.block_on(connect::run(&sizes, connections, under))?;
            serde_json::to_string(&rows)?
        }
    };
    println!("{json}");
    Ok(())
}
