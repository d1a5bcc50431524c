//! Servers that say who answered and whom they saw: one line `<own ip:port> <peer ip:port>` (IPv6 as
//! `[addr]:port`), or `<label> <peer ip:port>` for the identities "node" (bystander) and "sink".
//! TCP and SCTP write the line on accept and close; UDP replies to each datagram.

use crate::netns::Netns;
use anyhow::{Context, Result};
use nix::sys::socket::{
    ControlMessage, ControlMessageOwned, MsgFlags, SockaddrStorage, recvmsg, sendmsg, setsockopt,
    sockopt,
};
use socket2::{Domain, Protocol, Socket, Type};
use std::io::{IoSlice, IoSliceMut};
use std::net::{IpAddr, SocketAddr};
use std::os::fd::AsRawFd;
use std::sync::OnceLock;
use tokio::io::AsyncWriteExt;
use tokio::io::Interest;
use tokio::task::JoinHandle;

pub const SCTP: i32 = 132;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Proto {
    Tcp,
    Udp,
    Sctp,
}

impl Proto {
    pub fn parse(s: &str) -> Result<Proto> {
        match s.to_ascii_uppercase().as_str() {
            "TCP" => Ok(Proto::Tcp),
            "UDP" => Ok(Proto::Udp),
            "SCTP" => Ok(Proto::Sctp),
            other => anyhow::bail!("unknown protocol {other}"),
        }
    }

    /// Whether this machine can make sockets of this protocol at all.
    pub fn available(self) -> bool {
        self != Proto::Sctp || sctp_supported()
    }
}

/// Whether this kernel can make SCTP sockets (kernel-wide, so probed once in any namespace).
pub fn sctp_supported() -> bool {
    static SUPPORTED: OnceLock<bool> = OnceLock::new();
    *SUPPORTED
        .get_or_init(|| Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::from(SCTP))).is_ok())
}

/// Why an SCTP flow is skipped here: the machine, not the code under test.
pub const NO_SCTP: &str = "kernel has no SCTP sockets";

/// A socket of `proto` for `addr`'s family (IPv6 sockets are v6-only so that wildcard servers of the
/// two families coexist and peers never show up as v4-mapped addresses).
pub fn new_socket(proto: Proto, addr: &SocketAddr) -> std::io::Result<Socket> {
    let domain = Domain::for_address(*addr);
    let s = match proto {
        Proto::Tcp => Socket::new(domain, Type::STREAM, Some(Protocol::TCP))?,
        Proto::Udp => Socket::new(domain, Type::DGRAM, Some(Protocol::UDP))?,
        Proto::Sctp => Socket::new(domain, Type::STREAM, Some(Protocol::from(SCTP)))?,
    };
    if addr.is_ipv6() {
        s.set_only_v6(true)?;
    }
    Ok(s)
}

/// A running server; stops (its socket closes) when dropped.
#[derive(Debug)]
pub struct Server {
    pub proto: Proto,
    pub addr: SocketAddr,
    task: JoinHandle<()>,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Server {
    /// Starts a server for `proto` on `addr` inside `ns`. `label` replaces the own address in the
    /// answer (e.g. "node", "sink"); without it the answer names the address the client reached.
    /// Must be called inside a tokio runtime (the server is a task on it).
    pub async fn start(
        ns: &Netns,
        proto: Proto,
        addr: SocketAddr,
        label: Option<&str>,
    ) -> Result<Server> {
        let sock = ns
            .run_async(move || {
                let s = new_socket(proto, &addr)?;
                s.set_reuse_address(true)?;
                if proto == Proto::Udp {
                    // Learn each datagram's destination so the reply leaves from it, also on a
                    // wildcard socket (the sink answers for addresses it has no interface for).
                    match addr {
                        SocketAddr::V4(_) => setsockopt(&s, sockopt::Ipv4PacketInfo, &true)?,
                        SocketAddr::V6(_) => setsockopt(&s, sockopt::Ipv6RecvPacketInfo, &true)?,
                    }
                }
                s.bind(&addr.into())?;
                if proto != Proto::Udp {
                    s.listen(128)?;
                }
                s.set_nonblocking(true)?;
                Ok(s)
            })
            .await
            .with_context(|| format!("{proto:?} server on {addr} in {}", ns.name()))?;
        let label = label.map(str::to_string);
        let task = match proto {
            // A one-to-one SCTP socket accepts, reads and writes with the same system calls as
            // TCP, so tokio's TCP types drive it too.
            Proto::Tcp | Proto::Sctp => {
                let l = tokio::net::TcpListener::from_std(sock.into())?;
                tokio::spawn(serve_tcp(l, label))
            }
            Proto::Udp => {
                let u = tokio::net::UdpSocket::from_std(sock.into())?;
                tokio::spawn(serve_udp(u, addr.port(), label))
            }
        };
        Ok(Server { proto, addr, task })
    }
}

fn answer(label: &Option<String>, own: SocketAddr, peer: SocketAddr) -> String {
    match label {
        Some(l) => format!("{l} {peer}\n"),
        None => format!("{own} {peer}\n"),
    }
}

async fn serve_tcp(l: tokio::net::TcpListener, label: Option<String>) {
    while let Ok((mut s, peer)) = l.accept().await {
        let own = s.local_addr().unwrap_or(peer);
        let line = answer(&label, own, peer);
        // Answer off the accept loop so a slow client cannot hold up the next one.
        tokio::spawn(async move {
            let _ = s.write_all(line.as_bytes()).await;
            let _ = s.shutdown().await;
        });
    }
}

async fn serve_udp(s: tokio::net::UdpSocket, port: u16, label: Option<String>) {
    let mut buf = [0u8; 1500];
    let mut cmsg = nix::cmsg_space!(libc::in6_pktinfo);
    loop {
        if s.readable().await.is_err() {
            return;
        }
        let got = s.try_io(Interest::READABLE, || {
            let raw = s.as_raw_fd();
            let mut iov = [IoSliceMut::new(&mut buf)];
            let msg = recvmsg::<SockaddrStorage>(raw, &mut iov, Some(&mut cmsg), MsgFlags::empty())
                .map_err(std::io::Error::from)?;
            let peer = msg.address.and_then(socket_addr);
            let mut dst = None;
            for c in msg.cmsgs().map_err(std::io::Error::from)? {
                match c {
                    ControlMessageOwned::Ipv4PacketInfo(pi) => {
                        dst = Some(IpAddr::from(u32::from_be(pi.ipi_addr.s_addr).to_be_bytes()))
                    }
                    ControlMessageOwned::Ipv6PacketInfo(pi) => {
                        dst = Some(IpAddr::from(pi.ipi6_addr.s6_addr))
                    }
                    _ => {}
                }
            }
            Ok((peer, dst))
        });
        let Ok((Some(peer), Some(dst))) = got else {
            continue;
        };
        let own = SocketAddr::new(dst, port);
        let line = answer(&label, own, peer);
        let raw = s.as_raw_fd();
        let iov = [IoSlice::new(line.as_bytes())];
        let to = SockaddrStorage::from(peer);
        // Reply from the address the datagram was sent to, or the client's connected socket (and
        // conntrack's reverse NAT) would not recognise it.
        let _ = match dst {
            IpAddr::V4(d) => {
                let pi = libc::in_pktinfo {
                    ipi_ifindex: 0,
                    ipi_spec_dst: libc::in_addr {
                        s_addr: u32::from(d).to_be(),
                    },
                    ipi_addr: libc::in_addr { s_addr: 0 },
                };
                let c = [ControlMessage::Ipv4PacketInfo(&pi)];
                sendmsg(raw, &iov, &c, MsgFlags::empty(), Some(&to))
            }
            IpAddr::V6(d) => {
                let pi = libc::in6_pktinfo {
                    ipi6_addr: libc::in6_addr {
                        s6_addr: d.octets(),
                    },
                    ipi6_ifindex: 0,
                };
                let c = [ControlMessage::Ipv6PacketInfo(&pi)];
                sendmsg(raw, &iov, &c, MsgFlags::empty(), Some(&to))
            }
        };
    }
}

fn socket_addr(s: SockaddrStorage) -> Option<SocketAddr> {
    if let Some(v4) = s.as_sockaddr_in() {
        return Some(SocketAddr::from((v4.ip(), v4.port())));
    }
    s.as_sockaddr_in6()
        .map(|v6| SocketAddr::from((v6.ip(), v6.port())))
}
