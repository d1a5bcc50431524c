//! [`Rtnl`]: links and addresses over rtnetlink (NETLINK_ROUTE), what `ip link` and `ip addr`
//! do, in any network namespace. For the node's local addresses (nodePortAddresses), the IPVS
//! mode's dummy link and its VIPs, and the start-up clean-up.
//!
//! Requests go through the crate's blocking [`NetlinkSocket`] (see there why not the async
//! `rtnetlink` crate); the messages are `netlink-packet-route`'s, built and read in
//! `messages.rs`. Each call opens its own socket: calls are rare (a sync, a start-up), and a
//! socket kept open would pin a namespace that a test or an operator wants to delete.

mod messages;
#[cfg(test)]
mod tests;

use std::net::IpAddr;

use netlink_packet_route::RouteNetlinkMessage;
use nix::errno::Errno;

use crate::{
    netlink::{NETLINK_ROUTE, NetlinkError, NetlinkSocket},
    netns::Netns,
};
pub use messages::{Link, LinkAddress};

#[derive(Clone, Debug, thiserror::Error)]
pub enum RtnlError {
    /// The link named in a request does not exist.
    #[error("no link named {0:?}")]
    NoSuchLink(String),
    /// A request about one link failed.
    #[error("link {link:?}: {source}")]
    Link { link: String, source: NetlinkError },
    #[error("rtnetlink {0}")]
    Netlink(#[from] NetlinkError),
}

impl RtnlError {
    fn source_error(&self) -> Option<&NetlinkError> {
        match self {
            RtnlError::NoSuchLink(_) => None,
            RtnlError::Link { source, .. } | RtnlError::Netlink(source) => Some(source),
        }
    }

    /// The errno of the kernel's answer or of the failed socket call.
    pub fn errno(&self) -> Option<i32> {
        self.source_error().and_then(NetlinkError::errno)
    }

    /// The link, or the address on it, does not exist.
    pub fn is_not_found(&self) -> bool {
        matches!(self, RtnlError::NoSuchLink(_))
            || self.source_error().is_some_and(NetlinkError::is_not_found)
            || self.errno() == Some(Errno::EADDRNOTAVAIL as i32)
    }

    /// The link or address to create exists already.
    pub fn is_exists(&self) -> bool {
        self.errno() == Some(Errno::EEXIST as i32)
    }

    /// The kernel cannot make a link of this kind (its module is missing): EOPNOTSUPP.
    pub fn is_not_supported(&self) -> bool {
        self.errno() == Some(Errno::EOPNOTSUPP as i32)
    }
}

/// Links and addresses in one network namespace (by default the caller's).
#[derive(Clone, Debug, Default)]
pub struct Rtnl {
    netns: Netns,
}

impl Rtnl {
    pub fn new() -> Self {
        Self::default()
    }

    /// Works in network namespace `name` (as created by `ip netns add`).
    pub fn in_netns(self, name: impl AsRef<str>) -> Self {
        self.with_netns(Netns::named(name))
    }

    pub fn with_netns(mut self, netns: Netns) -> Self {
        self.netns = netns;
        self
    }

    fn socket(&self) -> Result<NetlinkSocket, NetlinkError> {
        NetlinkSocket::open(NETLINK_ROUTE, &self.netns)
    }

    /// Sends one request about link `name`; ENODEV (no such link) is [`RtnlError::NoSuchLink`].
    fn on_link(
        &self,
        op: &'static str,
        name: &str,
        msg: netlink_packet_core::NetlinkMessage<RouteNetlinkMessage>,
        visit: impl FnMut(RouteNetlinkMessage),
    ) -> Result<(), RtnlError> {
        let done = self.socket().and_then(|mut s| s.request(op, msg, visit));
        done.map_err(|source| match source.errno() {
            Some(e) if e == Errno::ENODEV as i32 => RtnlError::NoSuchLink(name.to_owned()),
            _ => RtnlError::Link {
                link: name.to_owned(),
                source,
            },
        })
    }

    /// Every link (`ip link show`).
    pub fn links(&self) -> Result<Vec<Link>, RtnlError> {
        let mut links = Vec::new();
        (self.socket()?).request("list links", messages::get_links(), |m| {
            links.extend(messages::link_of(m))
        })?;
        Ok(links)
    }

    /// The link named `name`.
    pub fn link(&self, name: &str) -> Result<Link, RtnlError> {
        let mut link = None;
        self.on_link("get link", name, messages::get_link(name), |m| {
            link = link.take().or(messages::link_of(m))
        })?;
        link.ok_or_else(|| RtnlError::NoSuchLink(name.to_owned()))
    }

    /// Creates a link of kind `dummy` (`ip link add NAME type dummy`), left down as upstream
    /// leaves `kube-ipvs0`. [`RtnlError::is_exists`] if one of that name exists,
    /// [`RtnlError::is_not_supported`] if the kernel has no dummy driver.
    pub fn add_dummy(&self, name: &str) -> Result<(), RtnlError> {
        self.on_link("add dummy link", name, messages::new_dummy(name), drop)
    }

    /// Deletes link `name` (`ip link del NAME`); [`RtnlError::NoSuchLink`] if there is none.
    pub fn delete_link(&self, name: &str) -> Result<(), RtnlError> {
        self.on_link("delete link", name, messages::del_link(name), drop)
    }

    /// Every address of every link, both families (`ip addr show`).
    pub fn addresses(&self) -> Result<Vec<LinkAddress>, RtnlError> {
        let mut addrs = Vec::new();
        (self.socket()?).request("list addresses", messages::get_addresses(), |m| {
            addrs.extend(messages::address_of(m))
        })?;
        Ok(addrs)
    }

    /// The addresses on link `name` (`ip addr show dev NAME`).
    pub fn link_addresses(&self, name: &str) -> Result<Vec<LinkAddress>, RtnlError> {
        let index = self.link(name)?.index;
        let mut addrs = self.addresses()?;
        addrs.retain(|a| a.index == index);
        Ok(addrs)
    }

    /// Adds `addr/prefix_len` to link `name` (`ip addr add`); [`RtnlError::is_exists`] if it
    /// is there already.
    pub fn add_address(&self, name: &str, addr: IpAddr, prefix_len: u8) -> Result<(), RtnlError> {
        let a = self.on(name, addr, prefix_len)?;
        self.on_link("add address", name, messages::new_address(&a), drop)
    }

    /// Removes `addr/prefix_len` from link `name` (`ip addr del`); [`RtnlError::is_not_found`]
    /// if it is not there.
    pub fn delete_address(
        &self,
        name: &str,
        addr: IpAddr,
        prefix_len: u8,
    ) -> Result<(), RtnlError> {
        let a = self.on(name, addr, prefix_len)?;
        self.on_link("delete address", name, messages::del_address(&a), drop)
    }

    /// Adds each of `addrs` (with its prefix length) to link `name` over one socket, pipelined
    /// (see [`NetlinkSocket::request_batch`]): thousands of VIPs in a few round trips, where
    /// one call each would open a socket and look the link up each time. Each address's
    /// outcome, in order ([`RtnlError::is_exists`] for one already there).
    pub fn add_addresses(
        &self,
        name: &str,
        addrs: &[(IpAddr, u8)],
    ) -> Result<Vec<Result<(), RtnlError>>, RtnlError> {
        self.address_batch("add addresses", name, addrs, messages::new_address)
    }

    /// Removes each of `addrs` from link `name`, like [`Rtnl::add_addresses`].
    pub fn delete_addresses(
        &self,
        name: &str,
        addrs: &[(IpAddr, u8)],
    ) -> Result<Vec<Result<(), RtnlError>>, RtnlError> {
        self.address_batch("delete addresses", name, addrs, messages::del_address)
    }

    fn address_batch(
        &self,
        op: &'static str,
        name: &str,
        addrs: &[(IpAddr, u8)],
        build: fn(&LinkAddress) -> netlink_packet_core::NetlinkMessage<RouteNetlinkMessage>,
    ) -> Result<Vec<Result<(), RtnlError>>, RtnlError> {
        if addrs.is_empty() {
            return Ok(Vec::new());
        }
        let index = self.link(name)?.index;
        let msgs = addrs.iter().map(|&(addr, prefix_len)| {
            build(&LinkAddress {
                index,
                addr,
                prefix_len,
            })
        });
        let results = self.socket()?.request_batch(op, msgs);
        let link = |source| RtnlError::Link {
            link: name.to_owned(),
            source,
        };
        Ok(results.into_iter().map(|r| r.map_err(link)).collect())
    }

    /// An address request names its link by index: look it up.
    fn on(&self, name: &str, addr: IpAddr, prefix_len: u8) -> Result<LinkAddress, RtnlError> {
        let index = self.link(name)?.index;
        Ok(LinkAddress {
            index,
            addr,
            prefix_len,
        })
    }
}
