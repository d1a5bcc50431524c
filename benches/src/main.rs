//! kproxy-bench: kproxy's nftables mode against same-run baselines. `kproxy-bench all` runs every
//! benchmark and prints Markdown tables (scripts/bench-nftables, docs/benchmarks.md); the other
//! subcommands are the pieces it runs, each sync size in a child process of its own so that the
//! child's peak RSS belongs to that size alone. `kproxy-bench iptables ...` is the same for the
//! iptables mode (scripts/bench-iptables). Runs as root (network namespaces).

use kproxy_test_apiserver as apiserver;
mod connect;
mod iptables;
mod ipvs;
mod latency;
mod measure;
mod objects;
mod report;
mod report_agent;
mod rss;
mod sync;
mod upstream;

use std::{process::Command, time::Duration};

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};
use kproxy_modes::registry::{self, ModeSettings};
use serde::de::DeserializeOwned;

#[derive(Parser)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Every benchmark; Markdown on stdout, progress on stderr.
    All {
        /// Smaller sizes and fewer repetitions (a few minutes).
        #[arg(long)]
        quick: bool,
        /// Seconds the upstream-shaped `nft -f` may take before it is reported as "> timeout".
        #[arg(long, default_value_t = 300)]
        timeout: u64,
        /// Which benchmarks, by letter: a and b (full sync, additions) run together, c connect
        /// latency, d the agent's memory, e network programming latency.
        #[arg(long, default_value = "abcde")]
        only: String,
    },
    /// One kproxy full sync (and `adds` single-Service additions); JSON on stdout.
    Kproxy {
        services: u32,
        endpoints: u32,
        #[arg(long, default_value_t = 0)]
        adds: u32,
    },
    /// One upstream-shaped `nft -f` load (and `adds` single-Service additions); JSON on stdout.
    Upstream {
        services: u32,
        endpoints: u32,
        #[arg(long, default_value_t = 0)]
        adds: u32,
        #[arg(long, default_value_t = 300)]
        timeout: u64,
    },
    /// RSS of the real kproxy binary after its first sync on manifests of this size; JSON on stdout.
    Rss {
        services: u32,
        endpoints: u32,
        /// The kproxy binary (default: the one next to kproxy-bench).
        #[arg(long)]
        bin: Option<std::path::PathBuf>,
        #[arg(long, value_enum, default_value = "manifests")]
        source: rss::Source,
        /// KEY=VALUE environment variables for kproxy (e.g. MALLOC_ARENA_MAX=2); repeatable.
        #[arg(long)]
        env: Vec<String>,
        /// Only write the manifests into this directory and exit (to profile the agent by hand).
        #[arg(long)]
        write_to: Option<std::path::PathBuf>,
    },
    /// Network programming latency under a steady stream of EndpointSlice updates; JSON on stdout.
    Latency {
        services: u32,
        #[arg(long, default_value_t = 10)]
        endpoints: u32,
        /// Updates per second.
        #[arg(long, default_value_t = 100)]
        rate: u32,
        #[arg(long, default_value_t = 30)]
        seconds: u32,
    },
    /// The iptables mode's benchmarks (`iptables all` runs them all).
    #[command(subcommand)]
    Iptables(iptables::Cmd),
    /// Connect latency through a ClusterIP vs direct; JSON on stdout.
    Connect {
        #[arg(long, value_delimiter = ',', default_value = "10,10000,30000")]
        sizes: Vec<u32>,
        #[arg(long, default_value_t = 5000)]
        connections: u32,
        /// The mode whose data path is measured.
        #[arg(long, default_value = "nftables")]
        mode: String,
    },
    /// Every ipvs-mode benchmark (scripts/bench-ipvs, in the VM); Markdown on stdout.
    IpvsAll {
        #[arg(long, value_delimiter = ',', default_value = "1000,5000,10000")]
        sizes: Vec<u32>,
        #[arg(long, value_delimiter = ',', default_value = "10,10000")]
        connect_sizes: Vec<u32>,
        #[arg(long, default_value_t = 2000)]
        connections: u32,
    },
    /// One ipvs-mode full sync, changes and the ipvsadm baseline; JSON on stdout.
    Ipvs { services: u32, endpoints: u32 },
    /// The pure part of one changed Service's ipvs sync (no kernel); JSON on stdout.
    IpvsPure { services: u32, endpoints: u32 },
}

/// The sizes of one run.
pub struct Plan {
    /// (Services, endpoints each) for benchmark (a).
    pub sizes: Vec<(u32, u32)>,
    /// The size at which (b) adds Services, and how many.
    pub adds_at: (u32, u32),
    pub adds: u32,
    pub connect_sizes: Vec<u32>,
    pub connections: u32,
    pub timeout: Duration,
    /// (Services, endpoints each) for (d), the real agent's memory; (0, 0) is the fixed cost.
    pub rss_sizes: Vec<(u32, u32)>,
    /// Services for (e), the update stream's length in seconds and its rate.
    pub latency_sizes: Vec<u32>,
    pub latency_seconds: u32,
    pub latency_rate: u32,
}

impl Plan {
    fn new(quick: bool, timeout: u64) -> Self {
        if quick {
            Plan {
                sizes: vec![(1000, 5), (5000, 5)],
                adds_at: (5000, 5),
                adds: 10,
                connect_sizes: vec![10, 1000, 5000],
                connections: 500,
                timeout: Duration::from_secs(timeout.min(60)),
                rss_sizes: vec![(0, 0), (1000, 10)],
                latency_sizes: vec![10, 1000],
                latency_seconds: 10,
                latency_rate: 100,
            }
        } else {
            Plan {
                sizes: vec![(1000, 5), (5000, 5), (10000, 5), (5000, 50)],
                adds_at: (10000, 5),
                adds: 20,
                connect_sizes: vec![10, 10000, 30000],
                connections: 5000,
                timeout: Duration::from_secs(timeout),
                rss_sizes: vec![(0, 0), (1000, 10), (10000, 10)],
                latency_sizes: vec![10, 10000],
                latency_seconds: 30,
                latency_rate: 100,
            }
        }
    }
}

/// Runs this binary with `args` as a child and parses the JSON it prints.
pub(crate) fn child<T: DeserializeOwned>(args: &[String]) -> Result<T> {
    child_env(args, &[])
}

/// [`child`] with these environment variables set.
pub(crate) fn child_env<T: DeserializeOwned>(
    args: &[String],
    env: &[(&str, std::ffi::OsString)],
) -> Result<T> {
    let exe = std::env::current_exe()?;
    let out = Command::new(exe)
        .args(args)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stderr(std::process::Stdio::inherit())
        .output()
        .with_context(|| format!("running kproxy-bench {}", args.join(" ")))?;
    if !out.status.success() {
        bail!("kproxy-bench {} failed: {}", args.join(" "), out.status);
    }
    serde_json::from_slice(&out.stdout).with_context(|| format!("output of {}", args.join(" ")))
}

fn all(plan: &Plan, only: &str) -> Result<()> {
    let mut rows = Vec::new();
    let sync_sizes: &[(u32, u32)] = if only.contains(['a', 'b']) {
        &plan.sizes
    } else {
        &[]
    };
    for &(s, e) in sync_sizes {
        let adds = if (s, e) == plan.adds_at { plan.adds } else { 0 };
        let args = |what: &str| {
            let mut v = vec![
                what.to_string(),
                s.to_string(),
                e.to_string(),
                format!("--adds={adds}"),
            ];
            if what == "upstream" {
                v.push(format!("--timeout={}", plan.timeout.as_secs()));
            }
            v
        };
        eprintln!("(a) {s} x {e}: kproxy");
        let k: sync::KproxyRun = child(&args("kproxy"))?;
        eprintln!("    {k:?}\n(a) {s} x {e}: upstream-shaped nft -f");
        let u: sync::UpstreamRun = child(&args("upstream"))?;
        eprintln!("    {:?} ms, nft RSS {} KiB", u.load_ms, u.tool_rss_kib);
        rows.push(((s, e), k, u));
    }
    let conn: Vec<connect::ConnectRow> = if only.contains('c') {
        eprintln!("(c) connect latency");
        let sizes: Vec<String> = plan.connect_sizes.iter().map(u32::to_string).collect();
        child(&[
            "connect".into(),
            format!("--sizes={}", sizes.join(",")),
            format!("--connections={}", plan.connections),
        ])?
    } else {
        Vec::new()
    };
    let mut rss = Vec::new();
    let largest = plan.rss_sizes.last().copied();
    let api = largest.map(|(s, e)| (s, e, "api"));
    let runs = plan.rss_sizes.iter().map(|&(s, e)| (s, e, "manifests"));
    for (s, e, source) in runs.chain(api).filter(|_| only.contains('d')) {
        eprintln!("(d) kproxy process memory at {s} x {e} ({source})");
        let r: rss::RssRun = child(&[
            "rss".into(),
            s.to_string(),
            e.to_string(),
            format!("--source={source}"),
        ])?;
        eprintln!("    {r:?}");
        rss.push(r);
    }
    let mut lat = Vec::new();
    for &s in plan.latency_sizes.iter().filter(|_| only.contains('e')) {
        eprintln!("(e) network programming latency at {s} Services");
        let r: latency::LatencyRun = child(&[
            "latency".into(),
            s.to_string(),
            format!("--rate={}", plan.latency_rate),
            format!("--seconds={}", plan.latency_seconds),
        ])?;
        lat.push(r);
    }
    if !rows.is_empty() || !conn.is_empty() {
        println!("{}", report::markdown(plan, &rows, &conn));
    }
    println!("{}", report_agent::markdown(&rss, &lat));
    Ok(())
}

fn main() -> Result<()> {
    match Cli::parse().cmd {
        Cmd::All {
            quick,
            timeout,
            only,
        } => all(&Plan::new(quick, timeout), &only),
        Cmd::Kproxy {
            services,
            endpoints,
            adds,
        } => {
            let r = sync::kproxy(services, endpoints, adds)?;
            println!("{}", serde_json::to_string(&r)?);
            Ok(())
        }
        Cmd::Upstream {
            services,
            endpoints,
            adds,
            timeout,
        } => {
            let r = sync::upstream(services, endpoints, adds, Duration::from_secs(timeout))?;
            println!("{}", serde_json::to_string(&r)?);
            Ok(())
        }
        Cmd::Rss {
            services,
            endpoints,
            bin,
            source,
            env,
            write_to,
        } => {
            if let Some(dir) = write_to {
                let bytes = rss::write_manifests(&dir, services, endpoints)?;
                eprintln!("{bytes} bytes of manifests in {}", dir.display());
                return Ok(());
            }
            let bin = match bin {
                Some(b) => b,
                None => rss::default_bin()?,
            };
            let r = runtime()?.block_on(rss::run(&bin, (services, endpoints), source, &env))?;
            println!("{}", serde_json::to_string(&r)?);
            Ok(())
        }
        Cmd::Latency {
            services,
            endpoints,
            rate,
            seconds,
        } => {
            let r = latency::run(services, endpoints, rate, seconds)?;
            println!("{}", serde_json::to_string(&r)?);
            Ok(())
        }
        Cmd::Iptables(cmd) => iptables::run(cmd),
        Cmd::Connect {
            sizes,
            connections,
            mode,
        } => {
            let build = |netns: &str| -> Result<Box<dyn kproxy_modes::Mode>> {
                let settings = ModeSettings {
                    netns: Some(netns.to_owned()),
                    ..ModeSettings::default()
                };
                let mut built = registry::build(&mode, &settings)?;
                let ctx = kproxy_modes::ModeContext {
                    runtime: tokio::runtime::Handle::current(),
                    drift: Default::default(),
                };
                built.start(&ctx)?;
                Ok(built)
            };
            let under = connect::Under {
                build,
                where_probed: |_: &str, _| None,
                cleanup: |mut mode: Box<dyn kproxy_modes::Mode>, _: &str| {
                    mode.cleanup()?;
                    Ok(())
                },
            };
            let rows = runtime()?.block_on(connect::run(&sizes, connections, under))?;
            println!("{}", serde_json::to_string(&rows)?);
            Ok(())
        }
        Cmd::IpvsAll {
            sizes,
            connect_sizes,
            connections,
        } => ipvs::all(&sizes, &connect_sizes, connections),
        Cmd::Ipvs {
            services,
            endpoints,
        } => {
            let r = ipvs::run(services, endpoints)?;
            println!("{}", serde_json::to_string(&r)?);
            Ok(())
        }
        Cmd::IpvsPure {
            services,
            endpoints,
        } => {
            let r = ipvs::pure(services, endpoints)?;
            println!("{}", serde_json::to_string(&r)?);
            Ok(())
        }
    }
}

pub(crate) fn runtime() -> Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?)
}
