//! The node's local addresses, read from the kernel with an rtnetlink address dump
//! ([`Rtnl::addresses`]).

use std::net::IpAddr;

use crate::{
    netns::Netns,
    rtnl::{Rtnl, RtnlError},
};

/// Why the addresses could not be read.
pub type AddrsError = RtnlError;

/// Every address configured on any interface, optionally inside network namespace `netns`
/// (a name made by `ip netns add`).
pub fn local_addresses(netns: Option<&str>) -> Result<Vec<IpAddr>, AddrsError> {
    local_addresses_in(&Netns::from_name(netns))
}

/// Every address configured on any interface of `netns`.
pub fn local_addresses_in(netns: &Netns) -> Result<Vec<IpAddr>, AddrsError> {
    let addrs = Rtnl::new().with_netns(netns.clone()).addresses()?;
    Ok(addrs.into_iter().map(|a| a.addr).collect())
}
