//! Thin typed clients for the kernel interfaces kproxy programs. No Kubernetes knowledge lives here.

pub mod addrs;
mod child;
pub mod conntrack;
pub mod iptables;
pub mod ipvs;
pub mod netlink;
pub mod netns;
pub mod nft;
pub mod relay;
pub mod rtnl;
pub mod sysctl;
