//! Links, addresses, routes and rules over rtnetlink, one small helper per operation the bed needs.

use crate::netns::Netns;
use anyhow::{Context, Result, anyhow};
use futures::TryStreamExt;
use rtnetlink::packet_route::address::{AddressAttribute, AddressFlags};
use rtnetlink::packet_route::route::{RouteScope, RouteType};
use rtnetlink::packet_route::rule::{RuleAction, RuleAttribute};
use rtnetlink::{Handle, IpVersion, LinkBridge, LinkUnspec, LinkVeth, RouteMessageBuilder};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::AsRawFd;

/// The ifindex of `name` in the handle's namespace.
pub async fn index(h: &Handle, name: &str) -> Result<u32> {
    let mut links = h.link().get().match_name(name.to_string()).execute();
    let msg = links
        .try_next()
        .await
        .with_context(|| format!("looking up link {name}"))?
        .ok_or_else(|| anyhow!("no link {name}"))?;
    Ok(msg.header.index)
}

pub async fn up(h: &Handle, name: &str) -> Result<()> {
    let idx = index(h, name).await?;
    h.link()
        .set(LinkUnspec::new_with_index(idx).up().build())
        .execute()
        .await
        .with_context(|| format!("setting {name} up"))
}

pub async fn bridge(h: &Handle, name: &str) -> Result<()> {
    h.link()
        .add(LinkBridge::new(name).up().build())
        .execute()
        .await
        .with_context(|| format!("adding bridge {name}"))
}

/// Creates a veth pair `local`/`peer` in the handle's namespace and moves `peer` into `peer_ns`,
/// where it is renamed `peer_name_there` (so every namespace can call its uplink `eth0`).
pub async fn veth_to(
    h: &Handle,
    local: &str,
    peer: &str,
    peer_ns: &Netns,
    peer_name_there: &str,
) -> Result<()> {
    h.link()
        .add(LinkVeth::new(local, peer).build())
        .execute()
        .await
        .with_context(|| format!("adding veth {local}/{peer}"))?;
    let idx = index(h, peer).await?;
    let file = peer_ns.file()?;
    h.link()
        .set(
            LinkUnspec::new_with_index(idx)
                .setns_by_fd(file.as_raw_fd())
                .build(),
        )
        .execute()
        .await
        .with_context(|| format!("moving {peer} to {}", peer_ns.name()))?;
    drop(file);
    let there = peer_ns.netlink()?;
    let idx = index(&there, peer).await?;
    there
        .link()
        .set(
            LinkUnspec::new_with_index(idx)
                .name(peer_name_there.to_string())
                .build(),
        )
        .execute()
        .await
        .with_context(|| format!("renaming {peer} to {peer_name_there}"))?;
    up(&there, peer_name_there).await
}

/// Enslaves `port` to `bridge` and sets it up.
pub async fn attach(h: &Handle, port: &str, bridge: &str) -> Result<()> {
    let b = index(h, bridge).await?;
    let p = index(h, port).await?;
    h.link()
        .set(LinkUnspec::new_with_index(p).controller(b).up().build())
        .execute()
        .await
        .with_context(|| format!("attaching {port} to {bridge}"))
}

/// Adds `ip/plen` on `dev`, IPv6 without duplicate address detection (usable at once).
pub async fn addr(h: &Handle, dev: &str, ip: IpAddr, plen: u8) -> Result<()> {
    add_addr(h, dev, ip, plen, AddressFlags::empty()).await
}

/// Like [`addr`], but an IPv6 address gets no prefix route: the kernel adds one to main even for a
/// /128 (IPv4 adds none for a /32), which would make the address on-link, so that a packet to it
/// routed by main would look for a neighbour owning it instead of taking the default route.
pub async fn addr_without_prefix_route(h: &Handle, dev: &str, ip: IpAddr, plen: u8) -> Result<()> {
    add_addr(h, dev, ip, plen, AddressFlags::Noprefixroute).await
}

async fn add_addr(h: &Handle, dev: &str, ip: IpAddr, plen: u8, v6: AddressFlags) -> Result<()> {
    let idx = index(h, dev).await?;
    let mut req = h.address().add(idx, ip, plen);
    if ip.is_ipv6() {
        req.message_mut()
            .attributes
            .push(AddressAttribute::Flags(AddressFlags::Nodad | v6));
    }
    req.execute()
        .await
        .with_context(|| format!("adding {ip}/{plen} on {dev}"))
}

/// A route to `dst/plen` out of `dev`, optionally via `gw` (always onlink: gateways here are
/// addresses on a shared link without a covering subnet route).
pub async fn route(h: &Handle, dst: IpAddr, plen: u8, gw: Option<IpAddr>, dev: &str) -> Result<()> {
    let idx = index(h, dev).await?;
    let msg = match (dst, gw) {
        (IpAddr::V4(d), gw) => {
            let mut b = RouteMessageBuilder::<Ipv4Addr>::new()
                .destination_prefix(d, plen)
                .output_interface(idx);
            match gw {
                Some(IpAddr::V4(g)) => b = b.gateway(g).onlink(),
                Some(IpAddr::V6(_)) => anyhow::bail!("IPv6 gateway for IPv4 route {dst}"),
                None => b = b.scope(RouteScope::Link),
            }
            b.build()
        }
        (IpAddr::V6(d), gw) => {
            let mut b = RouteMessageBuilder::<Ipv6Addr>::new()
                .destination_prefix(d, plen)
                .output_interface(idx);
            match gw {
                Some(IpAddr::V6(g)) => b = b.gateway(g).onlink(),
                Some(IpAddr::V4(_)) => anyhow::bail!("IPv4 gateway for IPv6 route {dst}"),
                None => {}
            }
            b.build()
        }
    };
    h.route()
        .add(msg)
        .execute()
        .await
        .with_context(|| format!("route {dst}/{plen} via {gw:?} dev {dev}"))
}

/// `ip route add local 0.0.0.0/0 dev lo` and `local ::/0` (table local): every destination is
/// delivered locally, which is what lets a sink answer for any address routed to it.
pub async fn local_everything(h: &Handle) -> Result<()> {
    let lo = index(h, "lo").await?;
    let v4 = RouteMessageBuilder::<Ipv4Addr>::new()
        .destination_prefix(Ipv4Addr::UNSPECIFIED, 0)
        .output_interface(lo)
        .kind(RouteType::Local)
        .scope(RouteScope::Host)
        .table_id(255)
        .build();
    let v6 = RouteMessageBuilder::<Ipv6Addr>::new()
        .destination_prefix(Ipv6Addr::UNSPECIFIED, 0)
        .output_interface(lo)
        .kind(RouteType::Local)
        .table_id(255)
        .build();
    h.route().add(v4).execute().await.context("local 0/0")?;
    h.route().add(v6).execute().await.context("local ::/0")
}

/// Makes the namespace's own packets (its replies) route by the main table although the local
/// table claims every destination: `ip rule add pref 10 iif lo lookup main`, then the local table's
/// rule moves from pref 0 to pref 20 (rules are tried by ascending pref), for both families.
pub async fn locally_generated_use_main(h: &Handle) -> Result<()> {
    for v in [IpVersion::V4, IpVersion::V6] {
        let rule = |pref: u32, table: u32, iif: Option<&str>| {
            let v = v.clone();
            let mut r = h.rule().add().action(RuleAction::ToTable).table_id(table);
            if let Some(i) = iif {
                r = r.input_interface(i);
            }
            let r = r.priority(pref);
            async move {
                match v {
                    IpVersion::V4 => r.v4().execute().await,
                    IpVersion::V6 => r.v6().execute().await,
                }
            }
        };
        rule(10, 254, Some("lo"))
            .await
            .context("rule iif lo lookup main")?;
        rule(20, 255, None).await.context("rule lookup local")?;
        let mut rules = h.rule().get(v.clone()).execute();
        let mut old = None;
        while let Some(msg) = rules.try_next().await? {
            let pref0 = !msg
                .attributes
                .iter()
                .any(|a| matches!(a, RuleAttribute::Priority(p) if *p != 0));
            if pref0 && msg.header.table == 255 {
                old = Some(msg);
            }
        }
        let old = old.ok_or_else(|| anyhow!("no pref 0 local rule"))?;
        h.rule()
            .del(old)
            .execute()
            .await
            .context("deleting pref 0 rule")?;
    }
    Ok(())
}

/// Every address configured in the handle's namespace (for "did the endpoint see a node address").
pub async fn all_addresses(h: &Handle) -> Result<Vec<IpAddr>> {
    let mut out = Vec::new();
    let mut s = h.address().get().execute();
    while let Some(msg) = s.try_next().await? {
        for a in msg.attributes {
            if let AddressAttribute::Address(ip) = a {
                out.push(ip);
            }
        }
    }
    Ok(out)
}
