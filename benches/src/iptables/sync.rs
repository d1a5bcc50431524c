//! The children of (a), (b) and (d) for the iptables mode, each in a fresh network namespace it
//! enters on its main thread (so the iptables tools run there, as on a node): kproxy's full
//! sync and additions ([`kproxy`]), and the upstream-shaped restores ([`upstream`]).

use std::{io::Read, path::Path, time::Duration};

use anyhow::{Context, Result};
use kproxy_modes::{
    Mode, ModeContext,
    registry::{self, Backend, IptablesSettings, ModeSettings},
};
use tokio::runtime::Handle;

use super::upstream;
use crate::{
    measure::{max_rss_kib, ms},
    sync::{KproxyRun, UpstreamRun, enter_fresh_netns, run_mode, timed_tool},
};

/// Settings that force `backend` (in the caller's namespace unless `netns`).
pub fn settings(backend: Backend, netns: Option<String>) -> ModeSettings {
    ModeSettings {
        netns,
        iptables: IptablesSettings {
            backend: Some(backend),
            ..IptablesSettings::default()
        },
        ..ModeSettings::default()
    }
}

/// The iptables mode, started as the agent starts it (before any clock runs); its tasks, if
/// any, run on `runtime`.
pub fn started_mode(settings: &ModeSettings, runtime: Handle) -> Result<Box<dyn Mode>> {
    let mut mode = registry::build("iptables", settings)?;
    let ctx = ModeContext {
        runtime,
        drift: Default::default(),
    };
    mode.start(&ctx)?;
    Ok(mode)
}

/// kproxy's iptables mode: full sync of `services` x `endpoints`, then `adds` additions.
pub fn kproxy(services: u32, endpoints: u32, adds: u32, backend: Backend) -> Result<KproxyRun> {
    let _ns = enter_fresh_netns("ik")?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let mut mode = started_mode(&settings(backend, None), rt.handle().clone())?;
    // No pure-render split of the additions here: the registry's mode does not expose its render.
    let run = run_mode(&mut *mode, services, endpoints, adds, |_, _| Ok(None))?;
    flush_all(backend, None)?;
    Ok(run)
}

/// Empties nat and filter of both families in the benchmark's own namespace (`netns`, or this
/// process's), now rather than in the kernel's netns cleanup behind the next run's back. Not
/// `Mode::cleanup`: the namespace is the benchmark's alone, and a restore of empty tables costs
/// the same whatever the mode's cleanup does (before main 932e757 that took about 50 s at
/// 5k x 5 on the nft backend).
pub fn flush_all(backend: Backend, netns: Option<&str>) -> Result<()> {
    let path = std::env::temp_dir().join(format!("kpbench-{}.empty", std::process::id()));
    std::fs::write(&path, upstream::EMPTY)?;
    for family in ["iptables", "ip6tables"] {
        let program = format!("{family}-{backend}-restore");
        let mut args: Vec<&str> = match netns {
            Some(ns) => vec!["netns", "exec", ns, &program],
            None => Vec::new(),
        };
        args.extend(upstream::restore_args(false));
        let tool = if netns.is_some() { "ip" } else { &program };
        timed_tool(Duration::from_secs(300), tool, &args, Some(&path))?;
    }
    let _ = std::fs::remove_file(&path);
    Ok(())
}

/// `iptables-<backend>-restore`.
pub fn restore_program(backend: Backend) -> String {
    format!("iptables-{backend}-restore")
}

/// Restores `text` on `backend` under `timeout`; whether it finished in time, and how long.
fn restore(
    backend: Backend,
    text: &str,
    noflush: bool,
    timeout: Duration,
) -> Result<(bool, Duration)> {
    let path = std::env::temp_dir().join(format!("kpbench-{}.iptables", std::process::id()));
    std::fs::write(&path, text)?;
    let result = restore_file(backend, &path, noflush, timeout);
    let _ = std::fs::remove_file(&path);
    result
}

fn restore_file(
    backend: Backend,
    path: &Path,
    noflush: bool,
    timeout: Duration,
) -> Result<(bool, Duration)> {
    let program = restore_program(backend);
    let args = upstream::restore_args(noflush);
    timed_tool(timeout, &program, &args, Some(path))
        .with_context(|| format!("{program} < {}", path.display()))
}

/// Writes upstream's full-sync input for `services` x `endpoints` to `path`.
pub fn write_input(services: u32, endpoints: u32, path: &Path) -> Result<()> {
    Ok(std::fs::write(path, upstream::full(services, endpoints))?)
}

/// Lines of a file, read a block at a time (this process's peak RSS is the restore's floor).
fn count_lines(path: &Path) -> Result<usize> {
    let mut f = std::fs::File::open(path)?;
    let mut buf = vec![0u8; 1 << 16];
    let mut n = 0;
    loop {
        let k = f.read(&mut buf)?;
        if k == 0 {
            return Ok(n);
        }
        n += buf[..k].iter().filter(|&&b| b == b'\n').count();
    }
}

/// The upstream-shaped full restore (with `--noflush` as upstream runs it, or without:
/// `noflush` false), then `adds` upstream-shaped partial restores adding one Service each
/// (always `--noflush`, as upstream's). `input` is the full input written beforehand by another
/// process ([`write_input`]): a spawned tool's peak RSS is at least its parent's (Linux carries
/// the parent's high-water mark across a vfork+exec), so this process never holds it.
pub fn upstream(
    services: u32,
    endpoints: u32,
    adds: u32,
    backend: Backend,
    noflush: bool,
    timeout: Duration,
    input: &Path,
) -> Result<UpstreamRun> {
    let _ns = enter_fresh_netns("iu")?;
    restore(backend, &upstream::jumps(), true, timeout)?;
    let statements = count_lines(input)?;
    let (done, took) = restore_file(backend, input, noflush, timeout)?;
    let tool_rss_kib = max_rss_kib(false);
    let mut adds_ms = Vec::new();
    for new in (services..services + adds).filter(|_| done) {
        let (ok, t) = restore(backend, &upstream::partial(new, endpoints), true, timeout)?;
        if !ok {
            break;
        }
        adds_ms.push(ms(t));
    }
    restore(backend, upstream::EMPTY, false, timeout)?;
    Ok(UpstreamRun {
        load_ms: done.then(|| ms(took)),
        tool_rss_kib,
        statements,
        adds_ms,
    })
}
