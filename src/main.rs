//! The `kproxy` binary: flags and config at the edge, then the agent or a debug command.

use std::{io::IsTerminal, path::Path, process::ExitCode, sync::Arc};

use anyhow::{Context, Result, bail};
use clap::Parser;
use kproxy::{
    agent,
    cli::{Cli, Command, DebugCommand, ProxyFlags},
    config::KubeProxyConfiguration,
    debug::record,
    events::{self, EventSink, KubeSink, LogSink, ProxyEvent},
    health::{self, ProxyHealth, WallClock, service::ServiceHealthServer},
    metrics::{Metrics, MetricsServer, run_metrics_server},
    options,
    source::{
        api::{
            self,
            client::{ClientSettings, build_client},
        },
        manifest,
    },
    tracker::Tracker,
};
use kproxy_dataplane::sysctl::IntFile;
use kproxy_modes::registry::{self, ModeSettings};
use tokio::task::JoinSet;

// jemalloc instead of glibc malloc: glibc keeps the first sync's freed transients (tens of MiB
// at 10k Services) in its arenas for the process's life; jemalloc's background thread returns
// pages that stay unused past the decay time. See docs/benchmarks.md (d).
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("kproxy: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_logging(flags: &ProxyFlags) {
    let default = match flags.v.unwrap_or(0) {
        0..=1 => "info",
        2..=4 => "debug",
        _ => "trace",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // Colour codes only for a person at a terminal, not in a journal or a log file.
        .with_ansi(std::io::stderr().is_terminal())
        .init();
}

fn run(cli: Cli) -> Result<ExitCode> {
    match cli.command {
        Some(Command::Debug(DebugCommand::Dump(args))) => {
            init_logging(&args.flags);
            kproxy::debug::command::run(&args)
        }
        None => {
            init_logging(&cli.flags);
            agent_main(cli).map(|()| ExitCode::SUCCESS)
        }
    }
}

/// The agent: node set-up, then the source, the tracker and the mode until a signal.
fn agent_main(cli: Cli) -> Result<()> {
    let cfg = kproxy::cli::resolve_config(&cli.flags).context("invalid configuration")?;
    if let Some(path) = &cli.flags.write_config_to {
        kproxy::cli::write_config_to(&cfg, path)?;
        eprintln!("kproxy: wrote configuration to {}", path.display());
        return Ok(());
    }
    let settings = options::mode_settings(&cfg);
    if cli.flags.cleanup.unwrap_or(false) {
        // A cleanup beside a running agent would delete its rules under it.
        let _lock = kproxy::setup::lock::acquire()
            .map(Some)
            .or_else(lock_io_is_a_warning)?;
        return cleanup_every_mode(&settings);
    }
    // The mode is chosen before anything on the node changes: an unavailable one is
    // refused with the node as it was.
    let mode = registry::build(&cfg.proxy_mode().to_string(), &settings)?;
    mode.preflight()?;
    // Then one agent per network namespace, still before anything changes; held until exit.
    let _lock = kproxy::setup::lock::acquire()
        .map(Some)
        .or_else(lock_io_is_a_warning)?;
    // Upstream's order: conntrack set-up before the proxier; --init-only stops after it.
    kproxy::setup::conntrack(&cfg).context("conntrack set-up")?;
    if cli.flags.init_only.unwrap_or(false) {
        tracing::info!("node set-up done (--init-only): exiting");
        return Ok(());
    }
    if let Some(adj) = cfg.oom_score_adj {
        // A failure is already logged as a warning; upstream goes on too.
        let _ = kproxy::setup::oom_score_adj(adj, &IntFile::oom_score_adj());
    }
    clear_node_for(mode.name(), &settings);
    let opts = options::proxy_options(&cfg);
    tracing::info!(node = %opts.node_name, mode = %cfg.proxy_mode(), "starting kproxy");
    let periods = agent::Periods {
        sync: cfg.effective_sync_period(),
        min_sync: cfg.effective_min_sync_period(),
    };
    // Removed again when this returns: the record says an agent runs here.
    let _record = publish_record(&cfg, cli.flags.manifests.as_deref());
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async move {
        let (tx, rx) = tokio::sync::mpsc::channel(64);
        let node = opts.node_name.clone();
        // Manifest files failing to parse, for the metrics; stays 0 with the API source.
        let failing = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let (source, sink): (_, Arc<dyn EventSink>) = match cli.flags.manifests.clone() {
            Some(manifests) => {
                tracing::info!(manifests = %manifests.display(), "reading objects from manifests");
                let poll = manifest::DEFAULT_POLL_INTERVAL;
                let watch = manifest::watch_reporting(manifests, poll, tx, failing.clone());
                let source = tokio::spawn(async move {
                    if let Err(e) = watch.await {
                        tracing::error!(error = %e, "the manifest source stopped");
                    }
                });
                (source, Arc::new(LogSink))
            }
            None => {
                let settings = ClientSettings::new(&cfg, cli.flags.master.as_deref());
                let client = build_client(&settings)
                    .await
                    .context("Kubernetes API client")?;
                let sink = KubeSink::spawn(client.clone(), &node);
                // Upstream records this once the proxier is built, before serving.
                sink.publish(ProxyEvent::starting(&node));
                (
                    tokio::spawn(api::watch_all(client, node, tx)),
                    Arc::new(sink),
                )
            }
        };
        let (observer, mut servers) = observability(&cfg, &opts.node_name, periods, sink, failing);
        let agent = agent::run_observed(
            Tracker::new(opts),
            rx,
            mode,
            periods,
            shutdown_signal(),
            observer,
        );
        // A server ends only when it cannot bind and bindAddressHardFail is set: then
        // kproxy exits, as upstream does.
        let result = tokio::select! {
            _ = agent => Ok(()),
            Some(Ok(Err(e))) = servers.join_next() => Err(e).context("bindAddressHardFail"),
        };
        source.abort();
        result
    })
}

/// Only another agent holding the lock stops kproxy; a lock that cannot be taken at all (a
/// read-only /run) is a warning, as the record is: kproxy runs, without the guard.
fn lock_io_is_a_warning(
    e: kproxy::setup::lock::LockError,
) -> Result<Option<kproxy::setup::lock::AgentLock>> {
    match e {
        kproxy::setup::lock::LockError::Io { .. } => {
            tracing::warn!(error = %e, "a second kproxy in this network namespace would not be detected");
            Ok(None)
        }
        held => Err(held.into()),
    }
}

/// Proxy health, metrics and Service health checks, and the tasks serving the first two.
fn observability(
    cfg: &KubeProxyConfiguration,
    node_name: &str,
    periods: agent::Periods,
    sink: Arc<dyn EventSink>,
    manifest_files_failing: Arc<std::sync::atomic::AtomicU64>,
) -> (agent::Observer, JoinSet<std::io::Result<()>>) {
    let clock = WallClock::new();
    // Upstream's healthTimeout.
    let health = Arc::new(ProxyHealth::new(2 * periods.sync, clock));
    let services = ServiceHealthServer::new(node_name, health.clone())
        .on_failure(events::health_check_hook(node_name, sink.clone()));
    let metrics = Arc::new(
        Metrics::new(cfg.proxy_mode(), clock)
            .with_health(health.clone())
            .with_healthcheck_failures(services.failure_counter())
            .with_manifest_files_failing(manifest_files_failing),
    );
    let hard_fail = cfg.bind_address_hard_fail;
    let mut servers = JoinSet::new();
    if !cfg.healthz_bind_address.is_empty() {
        let addr = cfg.healthz_bind_address.clone();
        servers.spawn(health::run_proxy_health_server(
            addr,
            health.clone(),
            hard_fail,
        ));
    }
    if !cfg.metrics_bind_address.is_empty() {
        let server = MetricsServer::new(&metrics, cfg);
        let addr = cfg.metrics_bind_address.clone();
        servers.spawn(run_metrics_server(addr, server, hard_fail));
    }
    let observer =
        agent::Observer::new(Some(health), Some(metrics), Some(services)).with_events(sink);
    (observer, servers)
}

/// `--cleanup`: as upstream, whatever mode is configured, every mode's objects go, so a node
/// that switched modes keeps nothing of the old one. Every mode is tried; any failure fails.
fn cleanup_every_mode(settings: &ModeSettings) -> Result<()> {
    let mut failed = Vec::new();
    for (name, outcome) in registry::cleanup_all(settings) {
        match outcome {
            Ok(removed) => {
                for what in &removed {
                    tracing::warn!(mode = name, removed = %what, "removed");
                }
                tracing::info!(mode = name, count = removed.len(), "cleaned up");
            }
            Err(e) => {
                tracing::error!(mode = name, error = %e, "cleanup failed");
                failed.push(name);
            }
        }
    }
    if !failed.is_empty() {
        bail!("cleanup failed for: {}", failed.join(", "));
    }
    Ok(())
}

/// Removes what kproxy's other modes and upstream kube-proxy left on the node before this mode
/// starts (each removal logged). A failure is logged: the active mode can still run, and
/// `--cleanup` (or kube-proxy's own) can finish the job.
fn clear_node_for(active: &str, settings: &ModeSettings) {
    let cleared = registry::clear_node_for(active, settings);
    for what in &cleared.removed {
        tracing::warn!(removed = %what, "removed a leftover of an earlier proxy");
    }
    for what in &cleared.failed {
        tracing::error!(error = %what, "could not remove a leftover of an earlier proxy");
    }
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}

/// Writes the record `debug dump` reads; a failure only costs the operator repeating flags.
fn publish_record(
    cfg: &KubeProxyConfiguration,
    manifests: Option<&Path>,
) -> Option<record::Published> {
    let rec = record::AgentRecord::of_this_process(cfg, manifests);
    match record::publish(&rec) {
        Ok(published) => Some(published),
        Err(e) => {
            tracing::warn!(error = %e, "could not write the agent record: debug dump will need this agent's flags");
            None
        }
    }
}
