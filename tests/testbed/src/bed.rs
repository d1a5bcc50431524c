//! The topology: a node, its pods, a remote node, external clients and a sink, all namespaces of
//! this test, joined by a bridge in a "lan" namespace.
//!
//! ```text
//!   pod ──veth── node ──eth0── lan(br0) ──┬── remote node (serves remote endpoint IPs on lo)
//!   pod ──veth──/                         ├── external clients (any source address)
//!                                         └── sink (router of the node's default route; answers
//!                                             for every destination)
//! ```
//! Addresses of the bed itself (the router, the remote node) are in 198.18.0.0/15 and fdff:ffff::/64,
//! ranges no scenario uses.

use crate::link;
use crate::netns::{Netns, unique_tag};
use crate::probe::{Outcome, Probe};
use crate::server::{Proto, Server};
use anyhow::{Context, Result, anyhow, bail};
use rtnetlink::Handle;
use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

pub const ROUTER_V4: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);
pub const ROUTER_V6: Ipv6Addr = Ipv6Addr::new(0xfdff, 0xffff, 0, 0, 0, 0, 0, 1);
pub const REMOTE_V4: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 3);
pub const REMOTE_V6: Ipv6Addr = Ipv6Addr::new(0xfdff, 0xffff, 0, 0, 0, 0, 0, 3);
/// The pods' gateway: 169.254.1.1 answered by proxy ARP on the node's veth (no node address needed),
/// fe80::1 configured on each node-side veth.
const POD_GW_V4: Ipv4Addr = Ipv4Addr::new(169, 254, 1, 1);
const POD_GW_V6: Ipv6Addr = Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 1);

fn plen(ip: IpAddr) -> u8 {
    if ip.is_ipv4() { 32 } else { 128 }
}

/// Fields drop in declaration order: servers first, then the namespaces (which takes their links).
pub struct TestBed {
    servers: Vec<Server>,
    tag: String,
    node_ips: Vec<IpAddr>,
    next_port: u32,
    pods: BTreeMap<IpAddr, Netns>,
    externals: BTreeMap<IpAddr, Netns>,
    remote_ips: Vec<IpAddr>,
    pub node: Netns,
    pub remote: Netns,
    pub sink: Netns,
    pub lan: Netns,
}

impl TestBed {
    /// Builds lan, node (with `node_ips` on eth0, forwarding on, default route to the sink), the sink
    /// and the remote node. Call inside a multi-threaded tokio runtime.
    pub async fn new(node_ips: &[IpAddr]) -> Result<TestBed> {
        let tag = unique_tag();
        let mk = |role: &str| Netns::create(&format!("{tag}-{role}"));
        let lan = mk("lan")?;
        let node = mk("node")?;
        let sink = mk("sink")?;
        let remote = mk("remote")?;
        let bed = TestBed {
            servers: Vec::new(),
            tag,
            node_ips: node_ips.to_vec(),
            next_port: 0,
            pods: BTreeMap::new(),
            externals: BTreeMap::new(),
            remote_ips: Vec::new(),
            node,
            remote,
            sink,
            lan,
        };
        let l = bed.lan.netlink()?;
        link::up(&l, "lo").await?;
        link::bridge(&l, "br0").await?;
        bed.node.sysctls(&[
            ("net/ipv4/ip_forward", "1"),
            ("net/ipv6/conf/all/forwarding", "1"),
            // Replies to external clients leave by the interface they came in on: no redirects.
            ("net/ipv4/conf/all/send_redirects", "0"),
            ("net/ipv4/conf/default/send_redirects", "0"),
        ])?;
        let n = bed.attach_to_lan(&bed.node, "ln").await?;
        for ip in node_ips {
            link::addr(&n, "eth0", *ip, plen(*ip)).await?;
        }
        link::route(
            &n,
            Ipv4Addr::UNSPECIFIED.into(),
            0,
            Some(ROUTER_V4.into()),
            "eth0",
        )
        .await?;
        link::route(
            &n,
            Ipv6Addr::UNSPECIFIED.into(),
            0,
            Some(ROUTER_V6.into()),
            "eth0",
        )
        .await?;

        // The sink's local 0/0 would make it answer ARP for every address on the lan (the node's
        // too): answer only for addresses really configured on the interface. The remote node's
        // endpoint addresses on lo must not be claimed on the lan either.
        for ns in [&bed.sink, &bed.remote] {
            ns.sysctls(&[("net/ipv4/conf/all/arp_ignore", "1")])?;
        }
        let s = bed.attach_to_lan(&bed.sink, "ls").await?;
        link::addr(&s, "eth0", ROUTER_V4.into(), 32).await?;
        link::addr(&s, "eth0", ROUTER_V6.into(), 128).await?;
        bed.default_via_node(&s).await?;
        link::local_everything(&s).await?;
        link::locally_generated_use_main(&s).await?;

        let r = bed.attach_to_lan(&bed.remote, "lr").await?;
        link::addr(&r, "eth0", REMOTE_V4.into(), 32).await?;
        link::addr(&r, "eth0", REMOTE_V6.into(), 128).await?;
        bed.default_via_node(&r).await?;
        Ok(bed)
    }

    pub fn tag(&self) -> &str {
        &self.tag
    }

    pub fn node_ips(&self) -> &[IpAddr] {
        &self.node_ips
    }

    /// The node's first address of `ip`'s family: the gateway of everything on the lan.
    pub fn node_ip_like(&self, ip: IpAddr) -> Result<IpAddr> {
        self.node_ips
            .iter()
            .copied()
            .find(|n| n.is_ipv4() == ip.is_ipv4())
            .ok_or_else(|| anyhow!("the node has no address of {ip}'s family"))
    }

    /// A veth `eth0` in `ns`, its peer `lan_name` on the bridge; returns `ns`'s netlink handle.
    async fn attach_to_lan(&self, ns: &Netns, lan_name: &str) -> Result<Handle> {
        let h = ns.netlink()?;
        link::up(&h, "lo").await?;
        link::veth_to(&h, "eth0", lan_name, &self.lan, lan_name).await?;
        link::up(&h, "eth0").await?;
        link::attach(&self.lan.netlink()?, lan_name, "br0").await?;
        Ok(h)
    }

    async fn default_via_node(&self, h: &Handle) -> Result<()> {
        for any in [
            IpAddr::from(Ipv4Addr::UNSPECIFIED),
            Ipv6Addr::UNSPECIFIED.into(),
        ] {
            if let Ok(gw) = self.node_ip_like(any) {
                link::route(h, any, 0, Some(gw), "eth0").await?;
            }
        }
        Ok(())
    }

    /// A pod: its own namespace with `ip` on eth0, a veth to the node, the node's /32 (/128) route to
    /// it and its default route back to the node. Idempotent per address.
    pub async fn add_pod(&mut self, ip: IpAddr) -> Result<&Netns> {
        if !self.pods.contains_key(&ip) {
            let n = self.next_port;
            self.next_port += 1;
            let ns = Netns::create(&format!("{}-p{n}", self.tag))?;
            let h = ns.netlink()?;
            link::up(&h, "lo").await?;
            let node_side = format!("vp{n}");
            link::veth_to(&h, "eth0", &node_side, &self.node, &node_side).await?;
            link::up(&h, "eth0").await?;
            link::addr(&h, "eth0", ip, plen(ip)).await?;
            let nh = self.node.netlink()?;
            // Proxy ARP answers the pod's ARP for its gateway at once (no proxy_delay).
            self.node.sysctls(&[
                (&format!("net/ipv4/conf/{node_side}/proxy_arp"), "1"),
                (&format!("net/ipv4/neigh/{node_side}/proxy_delay"), "0"),
            ])?;
            link::addr(&nh, &node_side, POD_GW_V6.into(), 64).await?;
            link::route(&nh, ip, plen(ip), None, &node_side).await?;
            let gw: IpAddr = if ip.is_ipv4() {
                POD_GW_V4.into()
            } else {
                POD_GW_V6.into()
            };
            let any: IpAddr = if ip.is_ipv4() {
                Ipv4Addr::UNSPECIFIED.into()
            } else {
                Ipv6Addr::UNSPECIFIED.into()
            };
            link::route(&h, any, 0, Some(gw), "eth0").await?;
            self.pods.insert(ip, ns);
        }
        Ok(&self.pods[&ip])
    }

    /// An external client on the node's link with source `ip`, routing everything via the node; the
    /// node routes `ip` back out of its eth0. Idempotent per address.
    pub async fn add_external(&mut self, ip: IpAddr) -> Result<&Netns> {
        if !self.externals.contains_key(&ip) {
            let n = self.next_port;
            self.next_port += 1;
            let gw = self.node_ip_like(ip)?;
            let ns = Netns::create(&format!("{}-e{n}", self.tag))?;
            let h = self.attach_to_lan(&ns, &format!("le{n}")).await?;
            link::addr_without_prefix_route(&h, "eth0", ip, plen(ip)).await?;
            let any: IpAddr = if ip.is_ipv4() {
                Ipv4Addr::UNSPECIFIED.into()
            } else {
                Ipv6Addr::UNSPECIFIED.into()
            };
            link::route(&h, any, 0, Some(gw), "eth0").await?;
            own_address_via_node(&ns, &h).await?;
            link::route(&self.node.netlink()?, ip, plen(ip), None, "eth0").await?;
            self.externals.insert(ip, ns);
        }
        Ok(&self.externals[&ip])
    }

    /// An endpoint address served by the remote node (on its lo), routed from the node via the
    /// remote node's address.
    pub async fn add_remote_endpoint(&mut self, ip: IpAddr) -> Result<()> {
        if self.remote_ips.contains(&ip) {
            return Ok(());
        }
        link::addr(&self.remote.netlink()?, "lo", ip, plen(ip)).await?;
        let via: IpAddr = if ip.is_ipv4() {
            REMOTE_V4.into()
        } else {
            REMOTE_V6.into()
        };
        link::route(&self.node.netlink()?, ip, plen(ip), Some(via), "eth0").await?;
        self.remote_ips.push(ip);
        Ok(())
    }

    pub fn pod(&self, ip: IpAddr) -> Option<&Netns> {
        self.pods.get(&ip)
    }

    /// The namespace a probe from `source` is sent from: the node for its own and loopback
    /// addresses, else the pod, external client or remote node that owns it.
    pub fn ns_for_source(&self, source: IpAddr) -> Result<&Netns> {
        if source.is_loopback() || self.node_ips.contains(&source) {
            return Ok(&self.node);
        }
        if let Some(ns) = self
            .pods
            .get(&source)
            .or_else(|| self.externals.get(&source))
        {
            return Ok(ns);
        }
        if self.remote_ips.contains(&source) {
            return Ok(&self.remote);
        }
        bail!("no namespace owns source {source}")
    }

    /// Starts a server in `ns` and keeps it until the bed drops (or [`TestBed::stop_servers_on`]).
    pub async fn serve(
        &mut self,
        which: Where,
        proto: Proto,
        addr: SocketAddr,
        label: Option<&str>,
    ) -> Result<()> {
        let ns = match which {
            Where::Node => &self.node,
            Where::Sink => &self.sink,
            Where::Remote => &self.remote,
            Where::Pod(ip) => self.pods.get(&ip).ok_or_else(|| anyhow!("no pod {ip}"))?,
            Where::External(ip) => self
                .externals
                .get(&ip)
                .ok_or_else(|| anyhow!("no external {ip}"))?,
        };
        let s = Server::start(ns, proto, addr, label).await?;
        self.servers.push(s);
        Ok(())
    }

    /// Sends one probe from the namespace owning `source`.
    pub async fn probe(&self, proto: Proto, source: IpAddr, dest: SocketAddr) -> Result<Outcome> {
        let ns = self.ns_for_source(source)?;
        Probe::new(proto, source, dest)
            .send(ns)
            .await
            .with_context(|| format!("{proto:?} probe {source} -> {dest}"))
    }

    /// Every address the node namespace has (what a masqueraded source may be).
    pub async fn node_addresses(&self) -> Result<Vec<IpAddr>> {
        link::all_addresses(&self.node.netlink()?).await
    }

    /// Names of every namespace of this bed (to check that they go away).
    pub fn namespace_names(&self) -> Vec<String> {
        let mut v: Vec<String> = [&self.node, &self.remote, &self.sink, &self.lan]
            .iter()
            .map(|n| n.name().to_string())
            .collect();
        v.extend(self.pods.values().map(|n| n.name().to_string()));
        v.extend(self.externals.values().map(|n| n.name().to_string()));
        v
    }
}

/// Makes an external client's packets to its own address leave for the node instead of being
/// delivered to itself, so that it can play a load balancer that SNATs to its own IP: source and
/// destination both the LB IP, arriving at the node from outside. The client keeps the address
/// (bind, ARP for the node's replies and local delivery of what comes back all need it); only its
/// own outgoing packets skip the local table: `iif lo lookup main` ahead of it, as in the sink, and
/// main routes everything via the node (the address was added without an IPv6 prefix route, see
/// [`link::addr_without_prefix_route`]). The replies then arrive from the client's own address,
/// which IPv4 takes as a martian source unless `accept_local` says otherwise. Traffic between
/// other addresses is unchanged.
async fn own_address_via_node(ns: &Netns, h: &Handle) -> Result<()> {
    link::locally_generated_use_main(h).await?;
    ns.sysctls(&[("net/ipv4/conf/all/accept_local", "1")])
}

/// Where a server runs.
#[derive(Clone, Copy, Debug)]
pub enum Where {
    Node,
    Sink,
    Remote,
    Pod(IpAddr),
    External(IpAddr),
}
