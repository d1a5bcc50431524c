//! User-space relaying primitives (the userspace mode's data path): moving a TCP connection's
//! bytes to another socket with `splice(2)` through a pipe, so they never enter user space, and
//! recovering the destination a client used before the kernel's NAT sent it to the relay.
//!
//! No `unsafe` is needed: `nix` wraps `splice`, `pipe2`, `F_SETPIPE_SZ`, `SO_ORIGINAL_DST` and
//! `IP6T_SO_ORIGINAL_DST`. A UDP flow's original destination comes from conntrack instead
//! ([`crate::conntrack::ConntrackNetlink::original_of_reply`]): the kernel answers
//! `SO_ORIGINAL_DST` for TCP and SCTP sockets only.

mod splice;

use std::{
    io,
    net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6},
    os::fd::{AsFd, OwnedFd},
};

use nix::sys::socket::{
    AddressFamily, SockFlag, SockType, getsockopt,
    sockopt::{Ip6tOriginalDst, OriginalDst},
};

pub use splice::{DEFAULT_PIPE_SIZE, Pipe, relay};

use crate::netns::{Netns, NetnsError};

/// The destination a DNATed (or REDIRECTed) TCP connection had before NAT, read from conntrack
/// through the accepted socket. `v6` selects the family's socket option (a socket of the other
/// family answers ENOPROTOOPT / ENOENT).
pub fn original_dst(sock: &impl AsFd, v6: bool) -> io::Result<SocketAddr> {
    if v6 {
        let sin6 = getsockopt(sock, Ip6tOriginalDst)?;
        let ip = Ipv6Addr::from(sin6.sin6_addr.s6_addr);
        let port = u16::from_be(sin6.sin6_port);
        return Ok(SocketAddr::V6(SocketAddrV6::new(ip, port, 0, 0)));
    }
    let sin = getsockopt(sock, OriginalDst)?;
    let ip = Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr));
    let port = u16::from_be(sin.sin_port);
    Ok(SocketAddr::V4(SocketAddrV4::new(ip, port)))
}

/// A non-blocking, close-on-exec socket of `family` created in `netns` (a socket belongs to the
/// namespace it was created in, wherever it is used later). In the current namespace this is a
/// plain `socket(2)`; in another one it costs a thread (see [`Netns::run`]), which only tests and
/// the test bed pay.
pub fn socket_in(netns: &Netns, v6: bool, ty: SockType) -> io::Result<OwnedFd> {
    let family = if v6 {
        AddressFamily::Inet6
    } else {
        AddressFamily::Inet
    };
    let flags = SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC;
    let make = || nix::sys::socket::socket(family, ty, flags, None).map_err(io::Error::from);
    if entered(netns) {
        return make();
    }
    netns
        .run(|| make().map_err(SocketError::Io))
        .map_err(|e| match e {
            SocketError::Io(e) => e,
            SocketError::Netns(e) => io::Error::other(e),
        })
}

/// Raises this process's open-file soft limit to its hard limit and returns the new limit: a
/// relayed TCP connection holds two sockets and, while data flows, two pipes (six descriptors),
/// and the usual soft limit (1024) would stop the relay at about 170 connections.
pub fn raise_fd_limit() -> io::Result<u64> {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE)?;
    if soft < hard {
        setrlimit(Resource::RLIMIT_NOFILE, hard, hard)?;
    }
    Ok(hard)
}

/// Whether this thread is in `netns` already (a relay whose runtime threads entered it): then
/// a socket needs no thread of its own. Two `stat`s, against a thread spawn.
fn entered(netns: &Netns) -> bool {
    use std::os::unix::fs::MetadataExt;
    let Some(path) = netns.path() else {
        return true;
    };
    match (
        std::fs::metadata(path),
        std::fs::metadata("/proc/thread-self/ns/net"),
    ) {
        (Ok(a), Ok(b)) => a.ino() == b.ino() && a.dev() == b.dev(),
        _ => false,
    }
}

enum SocketError {
    Io(io::Error),
    Netns(NetnsError),
}

impl From<NetnsError> for SocketError {
    fn from(e: NetnsError) -> Self {
        SocketError::Netns(e)
    }
}

#[cfg(test)]
mod tests;
