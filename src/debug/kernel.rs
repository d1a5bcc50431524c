//! The kernel's side of `kproxy debug dump --kernel` (nftables mode): what kproxy's tables hold
//! for each Service port, and every difference from what the desired state renders to.
//!
//! The expected table is not re-derived by hand: the mode's own pure render of the desired state
//! is loaded into a scratch network namespace and listed by the kernel, so both sides of the
//! comparison are the kernel's canonical form.

use std::{fmt::Write, net::IpAddr};

use anyhow::{Context, Result};
use kproxy_dataplane::nft::{Difference, Exec, Family, NftClient, TableListing};
use kproxy_modes::{
    model::{ChangeSet, DesiredState, IpFamily, ServicePort},
    nftables::{self, LocalAddrs},
};
use serde_json::Value;

const TABLE: &str = "kproxy";

/// Both listings of one family.
pub struct FamilyView {
    pub family: IpFamily,
    pub live: TableListing,
    pub differences: Vec<Difference>,
}

/// Lists the live tables and compares them with the desired state's render.
pub fn inspect(state: &DesiredState) -> Result<Vec<FamilyView>> {
    let addrs = kproxy_dataplane::addrs::local_addresses(None).unwrap_or_default();
    let mut local = LocalAddrs::new();
    for ip in addrs {
        local.entry(IpFamily::of(&ip)).or_default().push(ip);
    }
    let rendered = nftables::render(state, &ChangeSet::full(), None, &local);
    let scratch = Scratch::new()?;
    let expected_exec = Exec::new().in_netns(&scratch.name);
    expected_exec
        .run(&rendered.tx)
        .context("loading the expected table into a scratch namespace")?;
    let live_exec = Exec::new();
    let mut out = Vec::new();
    for fam in &state.families {
        let nft_family = match fam.family {
            IpFamily::V4 => Family::Ip,
            IpFamily::V6 => Family::Ip6,
        };
        let list = |exec: &Exec| -> Result<TableListing> {
            let text = match exec.list_table_json(nft_family, TABLE) {
                Ok(t) => t,
                Err(e) if e.is_not_found() => String::new(),
                Err(e) => return Err(e.into()),
            };
            Ok(TableListing::from_json(&text)?)
        };
        let live = list(&live_exec)?;
        let expected = list(&expected_exec)?;
        let differences = live.diff(&expected);
        out.push(FamilyView {
            family: fam.family,
            live,
            differences,
        });
    }
    Ok(out)
}

/// A network namespace that exists while this value lives.
struct Scratch {
    name: String,
}

impl Scratch {
    fn new() -> Result<Self> {
        let name = format!("kproxy-dump-{}", std::process::id());
        let ok = std::process::Command::new("ip")
            .args(["netns", "add", &name])
            .status()?
            .success();
        anyhow::ensure!(
            ok,
            "could not create the scratch network namespace {name} (run as root)"
        );
        Ok(Self { name })
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::process::Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

/// The readable report.
pub fn table(state: &DesiredState, views: &[FamilyView]) -> String {
    let mut out = String::new();
    for view in views {
        let Some(fam) = state.family(view.family) else {
            continue;
        };
        let family = if view.family == IpFamily::V4 {
            "ip"
        } else {
            "ip6"
        };
        let _ = writeln!(
            out,
            "\nkernel: table {family} {TABLE} ({} chains, {} sets and maps)",
            view.live.chains.len(),
            view.live.sets.len()
        );
        for port in fam.services.values() {
            let _ = writeln!(out, "  {}", port.name);
            for line in port_lines(&view.live, port) {
                let _ = writeln!(out, "    {line}");
            }
            for d in view.differences.iter().filter(|d| concerns(d, port)) {
                let _ = writeln!(out, "    DIFFERENCE: {}", describe(d));
            }
        }
        let other: Vec<&Difference> = view
            .differences
            .iter()
            .filter(|d| !fam.services.values().any(|p| concerns(d, p)))
            .collect();
        match (view.differences.is_empty(), other.is_empty()) {
            (true, _) => {
                let _ = writeln!(out, "  the kernel matches the desired state");
            }
            (false, true) => {}
            (false, false) => {
                let _ = writeln!(out, "  table-wide differences:");
                for d in other {
                    let _ = writeln!(out, "    {}", describe(d));
                }
            }
        }
    }
    out
}

fn describe(d: &Difference) -> String {
    let what = if d.missing {
        "missing from the kernel"
    } else {
        "in the kernel but not desired"
    };
    if d.item.is_empty() {
        format!("{} {what}", d.object)
    } else {
        format!("{}: {} {what}", d.object, d.item)
    }
}

/// Whether a difference is about this Service port: it names one of its VIP tuples or a chain
/// of its Service.
fn concerns(d: &Difference, p: &ServicePort) -> bool {
    let svc = format!("{}/{}/", p.name.namespace, p.name.name);
    d.object.contains(&svc)
        || d.item.contains(&svc)
        || vips(p).iter().any(|(ip, port)| {
            d.item
                .contains(&format!("\"{ip}\",\"{}\",{port}]", proto(p)))
                || d.item.contains(&format!("\"{ip}\",{port},"))
        })
}

fn proto(p: &ServicePort) -> String {
    p.name.protocol.as_str().to_lowercase()
}

fn vips(p: &ServicePort) -> Vec<(IpAddr, u16)> {
    p.vips().map(|ip| (ip, p.port)).collect()
}

/// The dispatch entries for the port's VIPs and NodePort, and the endpoints its slot elements
/// hold, as the live table has them.
fn port_lines(live: &TableListing, p: &ServicePort) -> Vec<String> {
    let mut lines = Vec::new();
    let proto = proto(p);
    for (ip, port) in vips(p) {
        let key = Value::Array(vec![
            ip.to_string().into(),
            proto.clone().into(),
            port.into(),
        ]);
        lines.push(format!(
            "{}/{proto} -> {}",
            std::net::SocketAddr::new(ip, port),
            lookup(live, "map service-ips", &key).unwrap_or_else(|| "(no entry)".into())
        ));
    }
    if let Some(np) = p.node_port {
        let key = Value::Array(vec![proto.clone().into(), np.into()]);
        lines.push(format!(
            "node port {np}/{proto} -> {}",
            lookup(live, "map service-nodeports", &key).unwrap_or_else(|| "(no entry)".into())
        ));
    }
    let mut endpoints = Vec::new();
    let slot_maps = format!("map vip-slots-{proto}-");
    for (_, elems) in live.sets.iter().filter(|(n, _)| n.starts_with(&slot_maps)) {
        for e in elems {
            let Ok(Value::Array(pair)) = serde_json::from_str::<Value>(e) else {
                continue;
            };
            let (Some(k), Some(v)) = (pair.first(), pair.get(1)) else {
                continue;
            };
            let k = &k["concat"];
            if k[0] == p.cluster_ip.to_string() && k[1] == p.port {
                let ip: Option<IpAddr> = v["concat"][0].as_str().and_then(|s| s.parse().ok());
                let port = v["concat"][1].as_u64().and_then(|p| u16::try_from(p).ok());
                if let (Some(ip), Some(port)) = (ip, port) {
                    endpoints.push(std::net::SocketAddr::new(ip, port).to_string());
                }
            }
        }
    }
    if !endpoints.is_empty() {
        lines.push(format!("endpoints (slot map): {}", endpoints.join(", ")));
    }
    lines
}

/// The verdict of the element whose key's concatenation is `key` in a verdict map.
fn lookup(live: &TableListing, map: &str, key: &Value) -> Option<String> {
    live.sets.get(map)?.iter().find_map(|e| {
        let pair: Value = serde_json::from_str(e).ok()?;
        (pair[0]["concat"] == *key).then(|| verdict(&pair[1]))
    })
}

fn verdict(v: &Value) -> String {
    match v.as_object().and_then(|o| o.iter().next()) {
        Some((k, target)) => match target.get("target").and_then(Value::as_str) {
            Some(t) => format!("{k} {t}"),
            None => k.clone(),
        },
        None => v.to_string(),
    }
}

/// The machine-readable report: per family, the differences.
pub fn json(views: &[FamilyView]) -> Value {
    let families: Vec<Value> = views
        .iter()
        .map(|v| {
            let diffs: Vec<Value> = v
                .differences
                .iter()
                .map(|d| serde_json::json!({"object": d.object, "item": d.item, "missing": d.missing}))
                .collect();
            serde_json::json!({"family": v.family, "chains": v.live.chains.len(), "sets": v.live.sets.len(), "differences": diffs})
        })
        .collect();
    Value::Array(families)
}
