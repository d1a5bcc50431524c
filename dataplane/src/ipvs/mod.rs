//! IPVS over generic netlink: typed messages (`nla.rs`, `message.rs`), what ipvsadm shows as
//! plain structs (`types.rs`), a client whose calls read like ipvsadm's options (`client.rs`),
//! and an in-memory table that keeps the kernel's rules (`fake.rs`) for tests without IPVS.
//!
//! Why written here rather than taken from crates.io: `netlink-packet-ipvs` 0.0.1 is built on
//! `netlink-packet-core` 0.7 and `-generic` 0.3 (this workspace has 0.9 and 0.5: two copies of
//! the stack, and its types would not fit our socket), uses `anyhow` for decode errors, and
//! has no timeouts, info, daemons, or fallback for unknown attributes; `nlrs` carries its own
//! netlink stack with `unsafe` code rather than the `netlink-packet-*` types. The messages
//! here follow `netlink-packet-route`'s style on `netlink-packet-generic` 0.5: one enum per
//! attribute nest, unknown attributes kept (`Other`), and every message tested byte for byte
//! against what `ipvsadm` and the kernel exchange (`tests.rs`, captured in the VM).

mod client;
pub mod fake;
pub mod message;
pub mod nla;
#[cfg(test)]
mod tests;
pub mod types;

pub use client::Ipvs;
pub use fake::FakeIpvs;
pub use types::{
    Destination, Forward, Info, Protocol, SVC_F_HASHED, SVC_F_PERSISTENT, Service, ServiceKey,
    Stats, Timeouts,
};

use nix::errno::Errno;

use crate::netlink::NetlinkError;

#[derive(Clone, Debug, thiserror::Error)]
pub enum IpvsError {
    /// The kernel has no IPVS family: module `ip_vs` is not loaded (and could not be).
    #[error("the kernel has no IPVS (load kernel module ip_vs)")]
    Unavailable,
    #[error("ipvs {0}")]
    Netlink(#[from] NetlinkError),
}

impl IpvsError {
    pub fn errno(&self) -> Option<i32> {
        match self {
            IpvsError::Unavailable => None,
            IpvsError::Netlink(e) => e.errno(),
        }
    }

    /// The service or real server does not exist (ESRCH for a service, ENOENT for a server).
    pub fn is_not_found(&self) -> bool {
        let codes = [Errno::ESRCH as i32, Errno::ENOENT as i32];
        self.errno().is_some_and(|e| codes.contains(&e))
    }

    /// The service or real server exists already.
    pub fn is_exists(&self) -> bool {
        self.errno() == Some(Errno::EEXIST as i32)
    }
}

/// One change to the table, as a sync plans it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Op {
    AddService(Service),
    EditService(Service),
    DeleteService(ServiceKey),
    AddServer(ServiceKey, Destination),
    EditServer(ServiceKey, Destination),
    DeleteServer(ServiceKey, Destination),
}

/// What a mode needs of the IPVS table: the real one ([`Ipvs`]) or [`FakeIpvs`].
pub trait IpvsTable {
    /// Every virtual service, everyone's.
    fn list_services(&mut self) -> Result<Vec<Service>, IpvsError>;
    /// The real servers of one service.
    fn list_servers(&mut self, key: &ServiceKey) -> Result<Vec<Destination>, IpvsError>;
    /// Runs `ops` in order; each op's outcome (one failing does not stop the others).
    fn apply(&mut self, ops: &[Op]) -> Vec<Result<(), IpvsError>>;
}
