//! `kproxy-demo [--mode MODE]`: the example cluster on a test bed with kproxy, real traffic to every
//! Service, the desired-state dump and a live EndpointSlice change (as root; `scripts/demo` builds
//! and runs it). Exits 0 iff every step passed; 130 when interrupted (everything is cleaned up first).

use clap::Parser;
use kproxy_testbed::demo::{Options, run};
use std::path::PathBuf;

#[derive(Parser)]
struct Args {
    /// The proxy mode kproxy runs in.
    #[arg(long, default_value = "nftables", value_parser = ["userspace", "iptables", "nftables", "ipvs"])]
    mode: String,
    /// The kproxy binary (a stand-in for tests).
    #[arg(long, env = "KPROXY_BIN", default_value = "target/release/kproxy")]
    kproxy_bin: PathBuf,
    /// The example manifests (copied; the copy is what kproxy reads and the demo changes).
    #[arg(long, default_value = "deploy/examples")]
    examples: PathBuf,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let opts = Options {
        mode: args.mode,
        kproxy_bin: args.kproxy_bin,
        examples: args.examples,
    };
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let mut stdout = std::io::stdout();
    // On Ctrl-C or SIGTERM the run future is dropped, and with it kproxy (killed), the bed's
    // namespaces and the work directory; select! drops it before the expression's value is used.
    let passed = tokio::select! {
        r = run(&opts, &mut stdout) => Some(r),
        _ = tokio::signal::ctrl_c() => None,
        _ = term.recv() => None,
    };
    match passed {
        None => {
            eprintln!("kproxy-demo: interrupted; cleaned up");
            std::process::exit(130)
        }
        Some(Err(e)) => {
            eprintln!("kproxy-demo: {e:#}");
            std::process::exit(1)
        }
        Some(Ok(ok)) => std::process::exit(if ok { 0 } else { 1 }),
    }
}
