//! `kproxy-conformance --mode MODE FILE...`: runs conformance scenario files against kproxy with
//! real packets (as root). Prints one PASS/FAIL/SKIP line per flow and, last,
//! `conformance: N passed, M failed, K skipped`; exits 0 iff nothing failed.

use clap::Parser;
use kproxy_testbed::conformance::{Options, run_files};
use std::path::PathBuf;

#[derive(Parser)]
struct Args {
    /// The proxy mode kproxy runs in.
    #[arg(long, value_parser = ["userspace", "iptables", "nftables", "ipvs"])]
    mode: String,
    /// The kproxy binary.
    #[arg(long, env = "KPROXY_BIN", default_value = "target/release/kproxy")]
    kproxy_bin: PathBuf,
    /// The mode's known differences from upstream's expectations (default:
    /// tests/conformance/differences/MODE.yaml, when it exists).
    #[arg(long)]
    differences: Option<PathBuf>,
    /// A kproxy flag to add to its command line (repeatable), e.g.
    /// `--kproxy-arg=--iptables-backend=legacy`.
    #[arg(long = "kproxy-arg", allow_hyphen_values = true)]
    kproxy_args: Vec<String>,
    /// Scenario files (run regardless of their upstream_modes: the caller selects).
    #[arg(required = true)]
    files: Vec<PathBuf>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let differences = args
        .differences
        .unwrap_or_else(|| kproxy_testbed::conformance::differences::default_path(&args.mode));
    let opts = Options {
        differences: kproxy_testbed::conformance::differences::load(&differences)?,
        mode: args.mode,
        kproxy_bin: args.kproxy_bin,
        kproxy_args: args.kproxy_args,
    };
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    // On Ctrl-C or SIGTERM the run is dropped, and with it the bed (namespaces) and kproxy.
    let mut stdout = std::io::stdout();
    // select! keeps its futures until the whole expression ends, so the exit comes after it.
    let tally = tokio::select! {
        r = run_files(&args.files, &opts, &mut stdout) => Some(r?),
        _ = tokio::signal::ctrl_c() => None,
        _ = term.recv() => None,
    };
    let Some(tally) = tally else {
        eprintln!("kproxy-conformance: interrupted");
        std::process::exit(130)
    };
    std::process::exit(if tally.failed == 0 { 0 } else { 1 });
}
