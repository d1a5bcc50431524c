//! The TCP relay: accept a captured connection, read its original destination, choose an
//! endpoint (affinity first, then random), connect with a short timeout, and on refusal or
//! timeout try the next endpoint, up to [`MAX_TRIES`]; then splice both ways. The client's
//! connection is already established when the endpoints are tried, so a refusing endpoint is
//! never seen by the client; when all fail, the client is reset.

use std::{io, net::SocketAddr, os::fd::OwnedFd, sync::Arc};

use kproxy_dataplane::{
    netns::Netns,
    relay::{DEFAULT_PIPE_SIZE, original_dst, relay as splice_both_ways, socket_in},
};
use nix::sys::socket::SockType;
use tokio::{
    net::{TcpListener, TcpSocket, TcpStream},
    time::{Duration, timeout},
};

use super::{
    routes::{Affinity, SharedRoutes},
    stats::{Failure, Stats},
};
use crate::model::Protocol;

/// Endpoints tried per client connection.
pub const MAX_TRIES: usize = 3;
/// How long one endpoint may take to accept: short, as the next one is waiting.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// What every connection task shares.
pub struct Relay {
    pub routes: SharedRoutes,
    pub affinity: Affinity,
    pub stats: Stats,
    pub netns: Netns,
}

/// Accepts until the task is aborted (the mode's shutdown).
pub async fn serve(listener: TcpListener, relay: Arc<Relay>) {
    loop {
        match listener.accept().await {
            Ok((client, peer)) => {
                Stats::inc(&relay.stats.connections);
                tokio::spawn(handle(relay.clone(), client, peer));
            }
            // EMFILE and the like: the listener stays; the backlog waits for a free slot.
            Err(e) => {
                tracing::warn!(error = %e, "userspace relay: accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

async fn handle(relay: Arc<Relay>, client: TcpStream, peer: SocketAddr) {
    let stats = &relay.stats;
    let Ok(orig) = original_dst(&client, peer.is_ipv6()) else {
        stats.failed(Failure::NoOriginalDst);
        return reset(client);
    };
    let routes = relay.routes.load();
    let Some(target) = routes.lookup(Protocol::Tcp, orig) else {
        stats.failed(Failure::NoRoute);
        return reset(client);
    };
    let eps = routes.endpoints(target, peer.ip());
    let candidates = relay.affinity.candidates(&target.port, eps, peer.ip());
    let mut upstream = None;
    for (i, ep) in candidates.iter().take(MAX_TRIES).enumerate() {
        if i > 0 {
            Stats::inc(&stats.retries);
        }
        match timeout(CONNECT_TIMEOUT, connect(&relay.netns, *ep)).await {
            Ok(Ok(s)) => {
                upstream = Some((s, *ep));
                break;
            }
            Ok(Err(e)) if e.kind() == io::ErrorKind::ConnectionRefused => {
                stats.failed(Failure::Refused)
            }
            Ok(Err(_)) => stats.failed(Failure::Error),
            Err(_) => stats.failed(Failure::Timeout),
        }
    }
    let Some((up, ep)) = upstream else {
        stats.failed(Failure::Exhausted);
        tracing::debug!(service = %target.port.name, client = %peer, "no endpoint accepted");
        return reset(client);
    };
    relay.affinity.used(&target.port, peer.ip(), ep);
    drop(routes);
    Stats::inc(&stats.active_tcp);
    // Dead peers are found by keepalive, so idle connections to a vanished client are not kept.
    for s in [&client, &up] {
        let _ = nix::sys::socket::setsockopt(s, nix::sys::socket::sockopt::KeepAlive, &true);
    }
    let _ = splice_both_ways(&client, &up, DEFAULT_PIPE_SIZE, &stats.bytes).await;
    Stats::dec(&stats.active_tcp);
}

/// Closes with a reset, as a kernel REJECT would answer: the client learns at once. A zero
/// linger makes close(2) send RST and return at once (it never blocks with a zero timeout).
fn reset(client: TcpStream) {
    let zero = nix::libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    let _ = nix::sys::socket::setsockopt(&client, nix::sys::socket::sockopt::Linger, &zero);
}

/// A connection to `ep` from a socket made in the mode's namespace.
async fn connect(netns: &Netns, ep: SocketAddr) -> io::Result<TcpStream> {
    let fd: OwnedFd = socket_in(netns, ep.is_ipv6(), SockType::Stream)?;
    let socket = TcpSocket::from_std_stream(std::net::TcpStream::from(fd));
    socket.set_nodelay(true)?;
    socket.connect(ep).await
}

/// A listening socket on `addr` (port 0: the kernel picks) in `netns`.
pub fn listen(netns: &Netns, addr: SocketAddr) -> io::Result<TcpListener> {
    let fd = socket_in(netns, addr.is_ipv6(), SockType::Stream)?;
    let socket = TcpSocket::from_std_stream(std::net::TcpStream::from(fd));
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(4096)
}
