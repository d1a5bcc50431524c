//! Thin typed clients for the kernel interfaces kproxy programs. No Kubernetes knowledge lives here.

pub mod addrs;
pub mod conntrack;
pub mod iptables;
pub mod nft;
pub mod sysctl;
