//! kproxy's test bed: network namespaces for a node, its pods, a remote node, external clients and a
//! sink; servers that say who answered and whom they saw; probes that classify what came back; and
//! the conformance runner that drives kproxy through scenario files with real packets.

pub mod bed;
pub mod conformance;
pub mod demo;
pub mod link;
pub mod netns;
pub mod probe;
pub mod process;
pub mod server;

pub use bed::{TestBed, Where};
pub use netns::{Netns, cleanup_prefix};
pub use probe::{Outcome, Probe};
pub use process::{NsProcess, run_in};
pub use server::{Proto, Server, sctp_supported};
