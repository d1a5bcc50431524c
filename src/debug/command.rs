//! `kproxy debug dump`: the desired state from manifests, as the agent would build it, and with
//! `--kernel` what the kernel holds against it.

use std::{
    io::Write,
    path::{Path, PathBuf},
    process::ExitCode,
};

use anyhow::{Context, Result};
use kproxy_modes::model::DesiredState;

use super::{kernel, record};
use crate::{
    cli::{DumpArgs, OutputFormat, ProxyFlags},
    config::KubeProxyConfiguration,
    options,
    source::manifest,
    tracker::Tracker,
};

/// The configuration and manifests `debug dump` works from: the flags', and for what they do
/// not give, the running agent's.
fn dump_inputs(flags: &ProxyFlags) -> Result<(KubeProxyConfiguration, PathBuf)> {
    let agent = match (&flags.config, &flags.manifests) {
        (Some(_), Some(_)) => None,
        _ => record::running_agent()?,
    };
    let cfg = match (&flags.config, &agent) {
        (None, Some(a)) => {
            tracing::info!(pid = a.pid, mode = %a.proxy_mode, "using the running agent's configuration");
            crate::cli::resolve_config_text(flags, &a.config)
        }
        _ => crate::cli::resolve_config(flags),
    }
    .context("invalid configuration")?;
    let manifests = match (&flags.manifests, &agent) {
        (Some(path), _) => path.clone(),
        (None, Some(a)) => a.manifests.clone().with_context(|| format!(
            "the kproxy agent running here (pid {}) reads the API server; debug dump reads manifests only: pass --manifests PATH",
            a.pid
        ))?,
        (None, None) => anyhow::bail!(
            "debug dump needs --manifests PATH (a directory or file of manifests), or a kproxy agent running with --manifests in this network namespace (none found: no live record at {})",
            record::path().map_or_else(|e| e.to_string(), |p| p.display().to_string())
        ),
    };
    Ok((cfg, manifests))
}

/// Builds the desired state from the manifests at `path` the way the agent would.
fn desired_from_manifests(cfg: &KubeProxyConfiguration, path: &Path) -> Result<DesiredState> {
    let opts = options::proxy_options(cfg);
    let loaded = manifest::load(path)?;
    if !loaded
        .nodes
        .iter()
        .any(|n| n.metadata.name.as_deref() == Some(opts.node_name.as_str()))
    {
        tracing::warn!(node = %opts.node_name, "no Node object with this node's name in the manifests: no endpoint counts as local and no zone is known (set --hostname-override)");
    }
    let mut tracker = Tracker::new(opts);
    for event in loaded.into_events() {
        tracker.apply(event);
    }
    if tracker.needs_local_addresses() {
        // This host's addresses resolve nodePortAddresses, as the agent's would.
        let addrs = kproxy_dataplane::addrs::local_addresses(None).unwrap_or_default();
        tracker.set_local_addresses(addrs);
    }
    let (state, _) = tracker
        .update()
        .context("manifests did not list every kind")?;
    Ok(state.clone())
}

/// `debug dump`; with `--kernel`, the kernel is read through the configured mode and a
/// difference exits with [`kernel::EXIT_DIFFERENCES`].
pub fn run(args: &DumpArgs) -> Result<ExitCode> {
    reject_agent_flags(&args.flags)?;
    let (cfg, manifests) = dump_inputs(&args.flags)?;
    let state = desired_from_manifests(&cfg, &manifests)?;
    let report = match args.kernel {
        true => Some(kernel::inspect(
            &cfg.proxy_mode().to_string(),
            &options::mode_settings(&cfg),
            &state,
        )?),
        false => None,
    };
    let with_kernel =
        |r: &kernel::Report| serde_json::json!({"desired": state, "kernel": kernel::json(r)});
    let text = match (args.output, &report) {
        (OutputFormat::Table, None) => super::dump::table(&state),
        (OutputFormat::Table, Some(r)) => super::dump::table(&state) + &kernel::table(&state, r),
        (OutputFormat::Json, None) => serde_json::to_string_pretty(&state)? + "\n",
        (OutputFormat::Json, Some(r)) => serde_json::to_string_pretty(&with_kernel(r))? + "\n",
        (OutputFormat::Yaml, None) => serde_saphyr::to_string(&state).context("yaml output")?,
        (OutputFormat::Yaml, Some(r)) => {
            serde_saphyr::to_string(&with_kernel(r)).context("yaml output")?
        }
    };
    std::io::stdout().write_all(text.as_bytes())?;
    Ok(match report {
        Some(r) if !r.matches() => ExitCode::from(kernel::EXIT_DIFFERENCES),
        _ => ExitCode::SUCCESS,
    })
}

/// `debug dump` shares the agent's flags, but these would do something the dump never does:
/// refused rather than silently ignored.
fn reject_agent_flags(flags: &ProxyFlags) -> Result<()> {
    let given: Vec<&str> = [
        ("--cleanup", flags.cleanup.is_some()),
        ("--init-only", flags.init_only.is_some()),
        ("--write-config-to", flags.write_config_to.is_some()),
    ]
    .into_iter()
    .filter_map(|(name, given)| given.then_some(name))
    .collect();
    if given.is_empty() {
        return Ok(());
    }
    anyhow::bail!(
        "debug dump does not take {} (agent flags: run kproxy without `debug dump` for them)",
        given.join(", ")
    )
}
