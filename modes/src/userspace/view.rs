//! `kproxy debug dump --kernel` for the userspace mode: what the kernel captures (read back from
//! our tables: capture sets and no-endpoint maps) joined with where the relay's routing table
//! sends each captured destination.

use std::collections::BTreeSet;

use kproxy_dataplane::nft::{NftClient, TableListing};
use serde_json::Value;

use super::{
    capture::{CAPTURE, CAPTURE_NODEPORTS, TABLE, nft_family},
    routes::Routes,
};
use crate::{
    ModeError,
    model::{IpFamily, Protocol},
    nftables::names::{NO_ENDPOINT_NODEPORTS, NO_ENDPOINT_SERVICES},
    view::{Dest, KernelView, Outcome},
};

const MODE: &str = "userspace";

pub fn read(client: &impl NftClient, routes: &Routes) -> Result<KernelView, ModeError> {
    let mut view = KernelView::default();
    for family in [IpFamily::V4, IpFamily::V6] {
        let json = match client.list_table_json(nft_family(family), TABLE) {
            Ok(j) => j,
            Err(e) if e.is_not_found() => continue,
            Err(e) => return Err(ModeError::kernel(MODE, "listing our tables", e)),
        };
        let table = TableListing::from_json(&json)
            .map_err(|e| ModeError::kernel(MODE, "reading our tables", e))?;
        let count = |k: &str| table.sets.get(k).map_or(0, BTreeSet::len);
        view.summary.push(format!(
            "{family}: table {TABLE}: {} captured VIPs, {} captured NodePorts, {} without endpoints",
            count(&format!("set {CAPTURE}")),
            count(&format!("set {CAPTURE_NODEPORTS}")),
            count(&format!("map {NO_ENDPOINT_SERVICES}")) + count(&format!("map {NO_ENDPOINT_NODEPORTS}")),
        ));
        for (set, outcome_of) in [
            (format!("set {CAPTURE}"), None),
            (format!("set {CAPTURE_NODEPORTS}"), None),
            (format!("map {NO_ENDPOINT_SERVICES}"), Some(())),
            (format!("map {NO_ENDPOINT_NODEPORTS}"), Some(())),
        ] {
            for text in table.sets.get(&set).into_iter().flatten() {
                let Ok(v) = serde_json::from_str::<Value>(text) else {
                    continue;
                };
                let (key, data) = match &v {
                    Value::Array(kv) if outcome_of.is_some() => (&kv[0], kv.get(1)),
                    _ => (&v, None),
                };
                let Some(dest) = dest(key, family) else {
                    continue;
                };
                let outcome = match data {
                    Some(d) if d.get("drop").is_some() => Outcome::Drop,
                    Some(_) => Outcome::Reject,
                    None => relayed(routes, &dest),
                };
                view.dests.insert(dest, outcome);
            }
        }
    }
    Ok(view)
}

/// Where the relay sends outside traffic to a captured destination.
fn relayed(routes: &Routes, dest: &Dest) -> Outcome {
    let target = match dest {
        Dest::Vip { ip, protocol, port } => routes.lookup(*protocol, (*ip, *port).into()),
        Dest::NodePort {
            family,
            protocol,
            port,
        } => routes
            .node_ports()
            .find(|((p, f, n), _)| p == protocol && f == family && n == port)
            .map(|(_, t)| t),
    };
    let eps = target.map_or(&[][..], |t| {
        if t.external {
            &t.port.external[..]
        } else {
            &t.port.internal[..]
        }
    });
    Outcome::Endpoints(eps.iter().copied().collect())
}

/// `{"concat": [ip, proto, port]}` or `{"concat": [proto, port]}` (elements with options are
/// listed as `{"elem": {"val": KEY}}`).
fn dest(key: &Value, family: IpFamily) -> Option<Dest> {
    let key = key.get("elem").map_or(key, |e| &e["val"]);
    let parts = key.get("concat")?.as_array()?;
    let protocol = |v: &Value| match v.as_str()? {
        "tcp" => Some(Protocol::Tcp),
        "udp" => Some(Protocol::Udp),
        "sctp" => Some(Protocol::Sctp),
        _ => None,
    };
    let port = |v: &Value| v.as_u64().and_then(|p| u16::try_from(p).ok());
    match parts.as_slice() {
        [ip, p, n] => Some(Dest::Vip {
            ip: ip.as_str()?.parse().ok()?,
            protocol: protocol(p)?,
            port: port(n)?,
        }),
        [p, n] => Some(Dest::NodePort {
            family,
            protocol: protocol(p)?,
            port: port(n)?,
        }),
        _ => None,
    }
}
