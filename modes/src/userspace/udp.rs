//! The UDP relay: one listener per family receives every captured datagram. A client's first
//! datagram opens a flow: its original destination comes from conntrack (by the reply tuple of
//! the DNAT to the listener), an endpoint is chosen, and a socket connected to it is made.
//! Replies go back through the listener, so conntrack un-DNATs them: the client sees them come
//! from the VIP and port it used. A flow ends after [`IDLE`] without traffic, or at a sync
//! that removed its endpoint (the next datagram then opens a flow to a current endpoint). At
//! most [`MAX_FLOWS`] flows: datagrams of new clients beyond that are dropped and counted.

use std::{
    collections::HashMap,
    net::{IpAddr, SocketAddr},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
};

use kproxy_dataplane::{
    conntrack::{ConntrackNetlink, FlowTuple, IPPROTO_UDP, L3},
    netns::Netns,
    relay::socket_in,
};
use std::os::fd::AsRawFd;

use nix::sys::socket::{SockType, SockaddrStorage};
use tokio::{
    net::UdpSocket,
    sync::Notify,
    time::{Duration, Instant, timeout},
};

use super::{
    routes::Routes,
    stats::{Failure, Stats},
    tcp::Relay,
};
use crate::model::{Protocol, ServicePortName};

pub const IDLE: Duration = Duration::from_secs(30);
pub const MAX_FLOWS: usize = 65_536;
const MAX_DATAGRAM: usize = 65_536;

struct Flow {
    upstream: UdpSocket,
    name: ServicePortName,
    endpoint: SocketAddr,
    /// Milliseconds since the relay's epoch at the last datagram either way.
    last: AtomicU64,
    closed: AtomicBool,
    close: Notify,
}

/// One family's UDP listener and its flows.
pub struct UdpRelay {
    socket: UdpSocket,
    port: u16,
    /// The address the capture DNATs to (with `port`, the reply tuple's source); set by syncs.
    local_ip: Mutex<IpAddr>,
    flows: Mutex<HashMap<SocketAddr, Arc<Flow>>>,
    relay: Arc<Relay>,
    conntrack: ConntrackNetlink,
    epoch: Instant,
}

impl UdpRelay {
    /// Binds the listener on `bind` (port 0: the kernel picks).
    pub fn bind(relay: Arc<Relay>, bind: SocketAddr) -> std::io::Result<Self> {
        let fd = socket_in(&relay.netns, bind.is_ipv6(), SockType::Datagram)?;
        nix::sys::socket::bind(fd.as_raw_fd(), &SockaddrStorage::from(bind))?;
        let std = std::net::UdpSocket::from(fd);
        let port = std.local_addr()?.port();
        Ok(UdpRelay {
            socket: UdpSocket::from_std(std)?,
            port,
            local_ip: Mutex::new(bind.ip()),
            flows: Mutex::default(),
            conntrack: ConntrackNetlink::new().with_netns(relay.netns.clone()),
            relay,
            epoch: Instant::now(),
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn set_local_ip(&self, ip: IpAddr) {
        *self.local_ip.lock().unwrap_or_else(|e| e.into_inner()) = ip;
    }

    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    /// Ends the flows whose endpoint is no longer in `routes` for their Service port.
    pub fn prune(&self, routes: &Routes) {
        let mut flows = self.flows.lock().unwrap_or_else(|e| e.into_inner());
        flows.retain(|_, f| {
            let keep = routes.contains_endpoint(&f.name, f.endpoint);
            if !keep {
                f.closed.store(true, Ordering::Relaxed);
                f.close.notify_one();
            }
            keep
        });
    }
}

/// Receives until the task is aborted (the mode's shutdown).
pub async fn serve(u: Arc<UdpRelay>) {
    let mut buf = vec![0u8; MAX_DATAGRAM];
    loop {
        let (n, peer) = match u.socket.recv_from(&mut buf).await {
            Ok(x) => x,
            Err(e) => {
                tracing::debug!(error = %e, "userspace relay: UDP receive failed");
                continue;
            }
        };
        let existing = u
            .flows
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&peer)
            .cloned();
        let flow = match existing {
            Some(f) => f,
            None => match open(&u, peer).await {
                Some(f) => f,
                None => continue,
            },
        };
        flow.last.store(u.now_ms(), Ordering::Relaxed);
        if flow.upstream.send(&buf[..n]).await.is_ok() {
            u.relay.stats.bytes.fetch_add(n as u64, Ordering::Relaxed);
        }
    }
}

/// The original destination of `peer`'s flow, from conntrack.
fn original(u: &UdpRelay, peer: SocketAddr) -> Option<SocketAddr> {
    let local = *u.local_ip.lock().unwrap_or_else(|e| e.into_inner());
    let reply = FlowTuple {
        src: Some(local),
        dst: Some(peer.ip()),
        proto: Some(IPPROTO_UDP),
        src_port: Some(u.port),
        dst_port: Some(peer.port()),
    };
    let entry = u
        .conntrack
        .original_of_reply(L3::of(&peer.ip()), &reply)
        .ok()??;
    Some(SocketAddr::new(entry.orig.dst?, entry.orig.dst_port?))
}

async fn open(u: &Arc<UdpRelay>, peer: SocketAddr) -> Option<Arc<Flow>> {
    let stats = &u.relay.stats;
    if u.flows.lock().unwrap_or_else(|e| e.into_inner()).len() >= MAX_FLOWS {
        Stats::inc(&stats.udp_flow_limit);
        return None;
    }
    let Some(orig) = original(u, peer) else {
        stats.failed(Failure::NoOriginalDst);
        return None;
    };
    let routes = u.relay.routes.load();
    let Some(target) = routes.lookup(Protocol::Udp, orig) else {
        stats.failed(Failure::NoRoute);
        return None;
    };
    let eps = routes.endpoints(target, peer.ip());
    let Some(&endpoint) = u
        .relay
        .affinity
        .candidates(&target.port, eps, peer.ip())
        .first()
    else {
        stats.failed(Failure::Exhausted);
        return None;
    };
    let upstream = connect(&u.relay.netns, endpoint).await.ok()?;
    u.relay.affinity.used(&target.port, peer.ip(), endpoint);
    let flow = Arc::new(Flow {
        upstream,
        name: target.port.name.clone(),
        endpoint,
        last: AtomicU64::new(u.now_ms()),
        closed: AtomicBool::new(false),
        close: Notify::new(),
    });
    u.flows
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(peer, flow.clone());
    Stats::inc(&stats.udp_flows);
    Stats::inc(&stats.active_udp);
    tokio::spawn(replies(u.clone(), peer, flow.clone()));
    Some(flow)
}

async fn connect(netns: &Netns, ep: SocketAddr) -> std::io::Result<UdpSocket> {
    let fd = socket_in(netns, ep.is_ipv6(), SockType::Datagram)?;
    let socket = UdpSocket::from_std(std::net::UdpSocket::from(fd))?;
    socket.connect(ep).await?;
    Ok(socket)
}

/// The endpoint's datagrams back to `peer`, until the flow is idle or closed.
async fn replies(u: Arc<UdpRelay>, peer: SocketAddr, flow: Arc<Flow>) {
    while !flow.closed.load(Ordering::Relaxed) {
        let wait = timeout(IDLE, flow.upstream.readable());
        let ready = tokio::select! {
            r = wait => r,
            () = flow.close.notified() => break,
        };
        match ready {
            Ok(Ok(())) => {
                // A buffer per datagram, not per flow: 10k idle flows hold no 64 KiB each.
                let mut buf = vec![0u8; MAX_DATAGRAM];
                if let Ok(n) = flow.upstream.try_recv(&mut buf) {
                    flow.last.store(u.now_ms(), Ordering::Relaxed);
                    if u.socket.send_to(&buf[..n], peer).await.is_ok() {
                        u.relay.stats.bytes.fetch_add(n as u64, Ordering::Relaxed);
                    }
                }
            }
            Ok(Err(_)) => break,
            Err(_) => {
                let idle = u.now_ms().saturating_sub(flow.last.load(Ordering::Relaxed));
                if idle >= IDLE.as_millis() as u64 {
                    break;
                }
            }
        }
    }
    let mut flows = u.flows.lock().unwrap_or_else(|e| e.into_inner());
    if flows.get(&peer).is_some_and(|f| Arc::ptr_eq(f, &flow)) {
        flows.remove(&peer);
    }
    Stats::dec(&u.relay.stats.active_udp);
}
