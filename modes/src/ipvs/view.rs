//! The kernel read back by meaning for `kproxy debug dump --kernel` (see [`crate::view`]): each
//! of our virtual servers with its real servers of weight > 0 (VIPs on kube-ipvs0; NodePorts on
//! the node's other addresses), with the no-endpoint verdicts of the nftables table in front.
//! The summary lists the IPVS table, kube-ipvs0's addresses and the table's sets.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::{IpAddr, SocketAddr},
};

use kproxy_dataplane::{
    ipvs::{self, Ipvs, IpvsTable},
    nft::NftClient,
};
use serde_json::Value;

use super::{IpvsMode, MODE, nft};
use crate::{
    ModeError,
    model::{IpFamily, Protocol},
    view::{Dest, KernelView, Outcome},
};

fn protocol(p: ipvs::Protocol) -> Option<Protocol> {
    match p {
        ipvs::Protocol::Tcp => Some(Protocol::Tcp),
        ipvs::Protocol::Udp => Some(Protocol::Udp),
        ipvs::Protocol::Sctp => Some(Protocol::Sctp),
        ipvs::Protocol::Other(_) => None,
    }
}

fn kernel(op: &'static str) -> impl Fn(ipvs::IpvsError) -> ModeError {
    move |e| ModeError::kernel(MODE, op, e)
}

pub fn read(mode: &IpvsMode) -> Result<KernelView, ModeError> {
    let mut view = KernelView::default();
    let (_, vips) = mode.addresses()?;
    view.summary
        .push(format!("kube-ipvs0: {} addresses", vips.len()));
    let tables = read_tables(mode)?;
    let node_ports: BTreeSet<_> = tables.iter().flat_map(|t| t.nodeport_servers()).collect();
    let mut ipvs = Ipvs::open(&mode.netns).map_err(kernel("opening IPVS"))?;
    let services = ipvs
        .list_services()
        .map_err(kernel("listing virtual servers"))?;
    let mut shown = 0;
    for svc in &services {
        let Some(protocol) = protocol(svc.protocol) else {
            continue;
        };
        let dest = if vips.contains(&svc.address) {
            Dest::Vip {
                ip: svc.address,
                protocol,
                port: svc.port,
            }
        } else if node_ports.contains(&(svc.address, protocol, svc.port)) {
            let family = IpFamily::of(&svc.address);
            Dest::NodePort {
                family,
                protocol,
                port: svc.port,
            }
        } else {
            continue; // someone else's
        };
        let servers = ipvs
            .list_servers(&svc.key())
            .map_err(kernel("listing real servers"))?;
        shown += 1;
        let persistence = match svc.flags & ipvs::SVC_F_PERSISTENT {
            0 => String::new(),
            _ => format!(" persistent {}", svc.timeout),
        };
        let list: Vec<String> = (servers.iter())
            .map(|d| format!("{} weight {}", SocketAddr::new(d.address, d.port), d.weight))
            .collect();
        view.summary.push(format!(
            "{:?} {} {}{persistence}: {}",
            svc.protocol,
            SocketAddr::new(svc.address, svc.port),
            svc.scheduler,
            list.join(", ")
        ));
        let eps = (servers.iter().filter(|d| d.weight > 0))
            .map(|d| SocketAddr::new(d.address, d.port))
            .collect();
        view.dests.insert(dest, Outcome::Endpoints(eps));
    }
    let head = format!(
        "IPVS: {shown} virtual servers of kproxy's ({} in all)",
        services.len()
    );
    view.summary.insert(1, head);
    for t in tables {
        view.summary.extend(t.summary);
        view.dests.extend(t.no_endpoints);
    }
    Ok(view)
}

/// What one family's nftables table of ours holds that the view and cleanup need.
#[derive(Default)]
pub struct TableData {
    pub no_endpoints: BTreeMap<Dest, Outcome>,
    pub nodeport_ips: Vec<IpAddr>,
    pub nodeports: Vec<(Protocol, u16)>,
    pub summary: Vec<String>,
}

impl TableData {
    /// The NodePort virtual servers kproxy made: node-port address x NodePort.
    pub fn nodeport_servers(&self) -> impl Iterator<Item = (IpAddr, Protocol, u16)> + '_ {
        (self.nodeport_ips.iter()).flat_map(|ip| self.nodeports.iter().map(|(p, n)| (*ip, *p, *n)))
    }
}

/// Our table of each family that exists.
pub fn read_tables(mode: &IpvsMode) -> Result<Vec<TableData>, ModeError> {
    let mut out = Vec::new();
    for fam in [IpFamily::V4, IpFamily::V6] {
        let json = match mode.nft.list_table_json(nft::nft_family(fam), nft::TABLE) {
            Ok(j) => j,
            Err(e) if e.is_not_found() => continue,
            Err(e) => return Err(ModeError::kernel(MODE, "listing our tables", e)),
        };
        let t =
            decode(fam, &json).map_err(|e| ModeError::kernel(MODE, "decoding our tables", e))?;
        out.push(t);
    }
    Ok(out)
}

fn decode(fam: IpFamily, json: &str) -> Result<TableData, serde_json::Error> {
    let v: Value = serde_json::from_str(json)?;
    let mut out = TableData::default();
    let items = v["nftables"].as_array().cloned().unwrap_or_default();
    for item in items {
        let Some(set) = item.get("map").or_else(|| item.get("set")) else {
            continue;
        };
        let name = set["name"].as_str().unwrap_or_default();
        let elems = set["elem"].as_array().cloned().unwrap_or_default();
        let family = nft::nft_family(fam);
        (out.summary).push(format!(
            "{family} {} {name}: {} elements",
            nft::TABLE,
            elems.len()
        ));
        for e in elems {
            match name {
                "nodeport-ips" => out
                    .nodeport_ips
                    .extend(e.as_str().and_then(|s| s.parse::<IpAddr>().ok())),
                "external-nodeports" => {
                    let parts = e[0]["concat"].as_array().cloned().unwrap_or_default();
                    if let Some(Dest::NodePort { protocol, port, .. }) = dest_of(fam, true, &parts)
                    {
                        out.nodeports.push((protocol, port));
                    }
                }
                "no-endpoint-services" | "no-endpoint-nodeports" => {
                    let parts = e[0]["concat"].as_array().cloned().unwrap_or_default();
                    let outcome = match e[1].get("drop") {
                        Some(_) => Outcome::Drop,
                        None => Outcome::Reject,
                    };
                    let nodeport = name == "no-endpoint-nodeports";
                    if let Some(dest) = dest_of(fam, nodeport, &parts) {
                        out.no_endpoints.insert(dest, outcome);
                    }
                }
                _ => {}
            }
        }
    }
    Ok(out)
}

fn dest_of(family: IpFamily, nodeport: bool, parts: &[Value]) -> Option<Dest> {
    let proto = |v: &Value| match v.as_str()? {
        "tcp" => Some(Protocol::Tcp),
        "udp" => Some(Protocol::Udp),
        "sctp" => Some(Protocol::Sctp),
        _ => None,
    };
    let port = |v: &Value| v.as_u64().and_then(|p| u16::try_from(p).ok());
    match (nodeport, parts) {
        (true, [p, n]) => Some(Dest::NodePort {
            family,
            protocol: proto(p)?,
            port: port(n)?,
        }),
        (false, [ip, p, n]) => Some(Dest::Vip {
            ip: ip.as_str()?.parse().ok()?,
            protocol: proto(p)?,
            port: port(n)?,
        }),
        _ => None,
    }
}
