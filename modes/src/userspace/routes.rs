//! The relay's routing table: for each captured destination, the endpoints of the path the
//! desired state gave it, and the choice of endpoint for one client (random order, ClientIP
//! affinity first). Built whole by a sync and swapped in atomically: a connection reads one
//! table from start to end, never a half-updated one.

use std::{
    collections::HashMap,
    net::{IpAddr, SocketAddr},
    sync::{Arc, Mutex, RwLock},
};

use ipnet::IpNet;
use tokio::time::{Duration, Instant};

use crate::model::{
    DesiredState, IpFamily, LocalTrafficDetector, Protocol, ServicePort, ServicePortName,
    TrafficPolicy,
};

/// One Service port as the relay needs it.
#[derive(Debug)]
pub struct PortRoute {
    pub name: ServicePortName,
    /// Endpoints for cluster-IP traffic (empty: the kernel rejects or drops it).
    pub internal: Vec<SocketAddr>,
    /// Endpoints for traffic from outside to NodePorts, external and load-balancer IPs.
    pub external: Vec<SocketAddr>,
    /// Endpoints for this node's pods and the node itself to those destinations: the Cluster
    /// set under eTP=Local (the short-circuit), else the external set.
    pub external_local: Vec<SocketAddr>,
    pub affinity: Option<Duration>,
}

/// Which of a port's paths a destination is on.
#[derive(Clone, Debug)]
pub struct Target {
    pub port: Arc<PortRoute>,
    pub external: bool,
}

/// The whole table of one sync.
#[derive(Debug, Default)]
pub struct Routes {
    vips: HashMap<(Protocol, IpAddr, u16), Target>,
    node_ports: HashMap<(Protocol, IpFamily, u16), Target>,
    ports: HashMap<ServicePortName, Arc<PortRoute>>,
    /// Sources that count as this node's pods (`detectLocalMode` by CIDR).
    pod_cidrs: Vec<IpNet>,
    /// Sources that count as the node itself.
    node_ips: Vec<IpAddr>,
}

impl Routes {
    /// The table for `desired`; SCTP ports are left out (the caller logs and counts them).
    pub fn build(desired: &DesiredState) -> Routes {
        let mut r = Routes::default();
        for fam in &desired.families {
            if let LocalTrafficDetector::Cidrs(c) = &fam.node.local_traffic {
                r.pod_cidrs.extend(c.iter().copied());
            }
            r.node_ips.extend(fam.node.node_ips.iter().copied());
            for sp in fam.services.values() {
                if sp.name.protocol != Protocol::Sctp {
                    r.add(fam.family, sp);
                }
            }
        }
        r
    }

    fn add(&mut self, family: IpFamily, sp: &ServicePort) {
        let addrs = |set: TrafficPolicy| -> Vec<SocketAddr> {
            sp.endpoints.set(set).iter().map(|e| e.addr).collect()
        };
        let internal = match sp.internal.when_empty {
            None => addrs(sp.internal.set),
            Some(_) => Vec::new(),
        };
        let (external, external_local) = match &sp.external {
            None => (Vec::new(), Vec::new()),
            Some(e) => {
                let ext = match e.path.when_empty {
                    None => addrs(e.path.set),
                    Some(_) => Vec::new(),
                };
                let local = if e.short_circuit_local_traffic {
                    addrs(TrafficPolicy::Cluster)
                } else {
                    ext.clone()
                };
                (ext, local)
            }
        };
        let port = Arc::new(PortRoute {
            name: sp.name.clone(),
            internal,
            external,
            external_local,
            affinity: sp
                .session_affinity
                .map(|a| Duration::from_secs(a.timeout_seconds.into())),
        });
        self.ports.insert(sp.name.clone(), port.clone());
        let p = sp.name.protocol;
        let target = |external| Target {
            port: port.clone(),
            external,
        };
        self.vips.insert((p, sp.cluster_ip, sp.port), target(false));
        if sp.external.is_some() {
            for ip in sp.external_ips.iter().chain(&sp.load_balancer_ips) {
                self.vips.insert((p, *ip, sp.port), target(true));
            }
            if let Some(np) = sp.node_port {
                self.node_ports.insert((p, family, np), target(true));
            }
        }
    }

    /// The route of a connection the client opened to `dst` (its original destination): a
    /// VIP, else a NodePort on whatever node address it reached.
    pub fn lookup(&self, p: Protocol, dst: SocketAddr) -> Option<&Target> {
        let family = IpFamily::of(&dst.ip());
        self.vips
            .get(&(p, dst.ip(), dst.port()))
            .or_else(|| self.node_ports.get(&(p, family, dst.port())))
    }

    /// Whether `client` is one of this node's pods or the node itself.
    pub fn is_local(&self, client: IpAddr) -> bool {
        client.is_loopback()
            || self.node_ips.contains(&client)
            || self.pod_cidrs.iter().any(|c| c.contains(&client))
    }

    /// The endpoints `client` may reach through `target`.
    pub fn endpoints<'a>(&self, target: &'a Target, client: IpAddr) -> &'a [SocketAddr] {
        let port = &target.port;
        match (target.external, self.is_local(client)) {
            (false, _) => &port.internal,
            (true, true) => &port.external_local,
            (true, false) => &port.external,
        }
    }

    /// Whether `ep` is still one of `name`'s endpoints on any path (UDP flows to it may stay).
    pub fn contains_endpoint(&self, name: &ServicePortName, ep: SocketAddr) -> bool {
        self.ports.get(name).is_some_and(|p| {
            p.internal.contains(&ep) || p.external.contains(&ep) || p.external_local.contains(&ep)
        })
    }

    /// Every destination and its target (for the kernel view).
    pub fn vips(&self) -> impl Iterator<Item = (&(Protocol, IpAddr, u16), &Target)> {
        self.vips.iter()
    }

    pub fn node_ports(&self) -> impl Iterator<Item = (&(Protocol, IpFamily, u16), &Target)> {
        self.node_ports.iter()
    }
}

/// The table the relay reads; a sync swaps it whole.
#[derive(Clone, Default)]
pub struct SharedRoutes(Arc<RwLock<Arc<Routes>>>);

impl SharedRoutes {
    pub fn load(&self) -> Arc<Routes> {
        self.0.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub fn store(&self, routes: Routes) {
        *self.0.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(routes);
    }
}

/// ClientIP affinity: the endpoint each client last reached per Service port, until it has
/// been unused for the port's timeout (upstream's semantics).
#[derive(Default)]
pub struct Affinity {
    table: Mutex<HashMap<(ServicePortName, IpAddr), (SocketAddr, Instant)>>,
}

impl Affinity {
    /// The endpoints to try, in order: the client's affine endpoint (while still usable and not
    /// timed out), then the others in random order.
    pub fn candidates(
        &self,
        port: &PortRoute,
        eps: &[SocketAddr],
        client: IpAddr,
    ) -> Vec<SocketAddr> {
        let mut out: Vec<SocketAddr> = eps.to_vec();
        shuffle(&mut out);
        let Some(timeout) = port.affinity else {
            return out;
        };
        let table = self.table.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((ep, used)) = table.get(&(port.name.clone(), client))
            && used.elapsed() < timeout
            && let Some(i) = out.iter().position(|e| e == ep)
        {
            out.swap(0, i);
        }
        out
    }

    /// Records that `client` reached `ep` through `port` now.
    pub fn used(&self, port: &PortRoute, client: IpAddr, ep: SocketAddr) {
        let Some(timeout) = port.affinity else { return };
        let mut table = self.table.lock().unwrap_or_else(|e| e.into_inner());
        // Expired entries go when the table has grown: no task of its own needed.
        if table.len() >= 4096 {
            table.retain(|_, (_, used)| used.elapsed() < timeout);
        }
        table.insert((port.name.clone(), client), (ep, Instant::now()));
    }
}

/// Fisher-Yates with a small xorshift seeded by std's randomly keyed hasher: endpoint choice
/// needs spread, not cryptographic randomness (the kernel modes use `numgen random`).
fn shuffle(v: &mut [SocketAddr]) {
    use std::hash::{BuildHasher, Hasher};
    let mut x = std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish()
        | 1;
    for i in (1..v.len()).rev() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.swap(i, (x % (i as u64 + 1)) as usize);
    }
}

#[cfg(test)]
mod tests;
