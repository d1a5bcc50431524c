//! `kproxy-testbed`: small helpers for scripts around the test bed.
//!
//! - `cleanup [--prefix P]`: removes leftover namespaces named P* (default `kpt`), killing what
//!   still runs in them.
//! - `sctp`: exits 0 when this kernel has SCTP sockets, 1 when not.

use clap::{Parser, Subcommand};

#[derive(Parser)]
struct Args {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Remove leftover namespaces (and their processes) whose name starts with the prefix.
    Cleanup {
        #[arg(long, default_value = kproxy_testbed::netns::DEFAULT_PREFIX)]
        prefix: String,
    },
    /// Exit 0 if the kernel has SCTP sockets, 1 if not.
    Sctp,
}

fn main() -> anyhow::Result<()> {
    match Args::parse().cmd {
        Cmd::Cleanup { prefix } => {
            for name in kproxy_testbed::cleanup_prefix(&prefix)? {
                println!("removed {name}");
            }
        }
        Cmd::Sctp => {
            let ok = kproxy_testbed::sctp_supported();
            println!("{}", if ok { "sctp: yes" } else { "sctp: no" });
            std::process::exit(if ok { 0 } else { 1 });
        }
    }
    Ok(())
}
