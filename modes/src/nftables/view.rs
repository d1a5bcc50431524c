//! Our tables read back by meaning, for `kproxy debug dump --kernel` (see [`crate::view`]).
//!
//! Each key of the dispatch maps (`service-ips`, `service-nodeports`) is followed the way a new
//! connection from outside the node would go: through `pick-N` chains and `vip-slots-*` maps,
//! policy chains and their `endpoint-slots-*` shards, the external chain's unconditional path,
//! and affinity's endpoint chains, down to the endpoints it is DNATed to. Slot numbers, shards
//! and chain names are this mode's spelling: they depend on the order ports were added in, so a
//! table built by partial syncs must read the same as a fresh full sync's, and only the meaning
//! is kept. Keys of the no-endpoint maps give [`Outcome::Reject`] / [`Outcome::Drop`] when the
//! dispatch path does not DNAT. `loadBalancerSourceRanges` (the firewall maps) are not part of
//! the [`Outcome`] and are not read.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::{IpAddr, SocketAddr},
};

use kproxy_dataplane::nft::{Family, NftClient};
use serde_json::Value;

use super::{
    MODE,
    names::{NO_ENDPOINT_NODEPORTS, NO_ENDPOINT_SERVICES, SERVICE_IPS, SERVICE_NODEPORTS, TABLE},
};
use crate::{
    ModeError,
    model::{IpFamily, Protocol},
    view::{Dest, KernelView, Outcome},
};

/// Chains are followed at most this deep: a loop (never rendered by us) cannot hang the dump.
const MAX_DEPTH: u32 = 16;

/// Lists our table of each family (`nft -j list table`) and decodes both into one view.
pub fn read(client: &impl NftClient) -> Result<KernelView, ModeError> {
    let mut view = KernelView::default();
    for family in [IpFamily::V4, IpFamily::V6] {
        let nft = nft_family(family);
        let text = match client.list_table_json(nft, TABLE) {
            Ok(text) => text,
            Err(e) if e.is_not_found() => {
                view.summary.push(format!("table {nft} {TABLE}: absent"));
                continue;
            }
            Err(e) => return Err(ModeError::kernel(MODE, "listing our tables", e)),
        };
        let one =
            decode(family, &text).map_err(|e| ModeError::kernel(MODE, "decoding our tables", e))?;
        view.dests.extend(one.dests);
        view.summary.extend(one.summary);
    }
    Ok(view)
}

fn nft_family(family: IpFamily) -> Family {
    match family {
        IpFamily::V4 => Family::Ip,
        IpFamily::V6 => Family::Ip6,
    }
}

/// Decodes the `nft -j list table` output of our table of `family`.
pub fn decode(family: IpFamily, json: &str) -> Result<KernelView, serde_json::Error> {
    let table = Table::parse(json)?;
    let mut view = KernelView::default();
    view.summary.push(format!(
        "table {} {TABLE}: {} chains, {} sets and maps",
        nft_family(family),
        table.chains.len(),
        table.elems.len()
    ));
    for (dest, verdict) in table.keyed(SERVICE_IPS, family) {
        view.dests
            .insert(dest.clone(), dispatch(&table, &dest, verdict));
    }
    for (dest, verdict) in table.keyed(SERVICE_NODEPORTS, family) {
        view.dests
            .insert(dest.clone(), dispatch(&table, &dest, verdict));
    }
    // The no-endpoint maps are consulted after DNAT, on the translated address: they decide
    // only for destinations whose dispatch path did not DNAT (none, or eTP=Local without
    // local endpoints, whose external chain falls through).
    for map in [NO_ENDPOINT_SERVICES, NO_ENDPOINT_NODEPORTS] {
        for (dest, verdict) in table.keyed(map, family) {
            let reached =
                matches!(view.dests.get(&dest), Some(Outcome::Endpoints(e)) if !e.is_empty());
            let walk = Walk {
                table: &table,
                dest: &dest,
            };
            if let (false, Some(outcome)) = (reached, walk.verdict(verdict, 0)) {
                view.dests.insert(dest, outcome);
            }
        }
    }
    Ok(view)
}

/// Where a dispatch verdict takes outside traffic; a path that DNATs nowhere is an empty set.
fn dispatch(table: &Table, dest: &Dest, verdict: &Value) -> Outcome {
    let walk = Walk { table, dest };
    walk.verdict(verdict, 0)
        .unwrap_or_else(|| Outcome::Endpoints(BTreeSet::new()))
}

/// A key of an endpoint map: an integer slot (`endpoint-slots-*`) or `VIP . port . index`
/// (`vip-slots-*`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum SlotKey {
    Int(u64),
    Vip(IpAddr, u16, u64),
}

/// One table as listed: what the walk needs of it.
#[derive(Default)]
struct Table {
    /// Each chain's rules, each rule its statements.
    chains: BTreeMap<String, Vec<Vec<Value>>>,
    /// Each set's and map's elements as listed (`[key, data]` for maps).
    elems: BTreeMap<String, Vec<Value>>,
    /// The maps whose data are endpoints, indexed by key (built once: a big cluster has tens of
    /// thousands of slots, looked up per destination).
    slots: BTreeMap<String, BTreeMap<SlotKey, SocketAddr>>,
}

impl Table {
    fn parse(json: &str) -> Result<Self, serde_json::Error> {
        let doc: Value = serde_json::from_str(json)?;
        let mut table = Table::default();
        for obj in doc["nftables"].as_array().into_iter().flatten() {
            if let Some(chain) = obj.get("chain") {
                table.chains.entry(str_of(chain, "name")).or_default();
            } else if let Some(rule) = obj.get("rule") {
                let stmts = rule["expr"].as_array().cloned().unwrap_or_default();
                let chain = table.chains.entry(str_of(rule, "chain")).or_default();
                chain.push(stmts);
            } else if let Some(set) = obj.get("set").or_else(|| obj.get("map")) {
                let elems = set["elem"].as_array().cloned().unwrap_or_default();
                table.elems.insert(str_of(set, "name"), elems);
            }
        }
        for (name, elems) in &table.elems {
            let index: BTreeMap<SlotKey, SocketAddr> = elems.iter().filter_map(slot).collect();
            if !index.is_empty() {
                table.slots.insert(name.clone(), index);
            }
        }
        Ok(table)
    }

    /// The elements of verdict map `map` whose keys are destinations, with their verdicts.
    fn keyed<'a>(&'a self, map: &str, family: IpFamily) -> Vec<(Dest, &'a Value)> {
        let elems = self.elems.get(map).map(Vec::as_slice).unwrap_or_default();
        elems
            .iter()
            .filter_map(|e| Some((dest(unwrap_elem(&e[0]), family)?, &e[1])))
            .collect()
    }
}

fn str_of(v: &Value, field: &str) -> String {
    v[field].as_str().unwrap_or_default().to_owned()
}

/// An element with per-element options is listed as `{"elem": {"val": KEY, ...}}`.
fn unwrap_elem(v: &Value) -> &Value {
    v.get("elem").map_or(v, |e| &e["val"])
}

/// `VIP . proto . port` or, for NodePorts, `proto . port`.
fn dest(key: &Value, family: IpFamily) -> Option<Dest> {
    match key["concat"].as_array()?.as_slice() {
        [ip, proto, port] => {
            let ip: IpAddr = ip.as_str()?.parse().ok()?;
            (IpFamily::of(&ip) == family).then_some(Dest::Vip {
                ip,
                protocol: protocol(proto)?,
                port: u16::try_from(port.as_u64()?).ok()?,
            })
        }
        [proto, port] => Some(Dest::NodePort {
            family,
            protocol: protocol(proto)?,
            port: u16::try_from(port.as_u64()?).ok()?,
        }),
        _ => None,
    }
}

/// nft names the protocols it knows and prints the others as numbers.
fn protocol(v: &Value) -> Option<Protocol> {
    match (v.as_str(), v.as_u64()) {
        (Some("tcp"), _) | (_, Some(6)) => Some(Protocol::Tcp),
        (Some("udp"), _) | (_, Some(17)) => Some(Protocol::Udp),
        (Some("sctp"), _) | (_, Some(132)) => Some(Protocol::Sctp),
        _ => None,
    }
}

/// An endpoint map element: `[key, ADDR . PORT]`.
fn slot(elem: &Value) -> Option<(SlotKey, SocketAddr)> {
    let data = elem.get(1)?;
    let key = unwrap_elem(elem.get(0)?);
    let key = match key.as_u64() {
        Some(i) => SlotKey::Int(i),
        None => match key["concat"].as_array()?.as_slice() {
            [ip, port, index] => SlotKey::Vip(
                ip.as_str()?.parse().ok()?,
                u16::try_from(port.as_u64()?).ok()?,
                index.as_u64()?,
            ),
            _ => return None,
        },
    };
    Some((key, sock(data)?))
}

fn sock(v: &Value) -> Option<SocketAddr> {
    match v["concat"].as_array()?.as_slice() {
        [ip, port] => Some(SocketAddr::new(
            ip.as_str()?.parse().ok()?,
            u16::try_from(port.as_u64()?).ok()?,
        )),
        _ => None,
    }
}

/// What one rule does to a packet of the walked destination.
enum Step {
    /// Not matched, or matched without a verdict: the next rule.
    Next,
    /// The chain's walk ends here (`None`: no DNAT on this path).
    Done(Option<Outcome>),
}

/// Follows one destination's verdicts as a new connection from outside the node: matches on
/// the source (pod CIDRs, pod interfaces, `fib saddr type local`, affinity sets) do not hold
/// for it, a match on the destination's own protocol does.
struct Walk<'a> {
    table: &'a Table,
    dest: &'a Dest,
}

impl Walk<'_> {
    fn verdict(&self, v: &Value, depth: u32) -> Option<Outcome> {
        if let Some(chain) = target(v, "goto").or_else(|| target(v, "jump")) {
            return self.chain(chain, depth + 1);
        }
        terminal(v)
    }

    fn chain(&self, name: &str, depth: u32) -> Option<Outcome> {
        if depth > MAX_DEPTH {
            return None;
        }
        for rule in self.table.chains.get(name)? {
            if let Step::Done(outcome) = self.rule(rule, depth) {
                return outcome;
            }
        }
        None
    }

    fn rule(&self, stmts: &[Value], depth: u32) -> Step {
        for s in stmts {
            if let Some(m) = s.get("match") {
                if !self.holds(m) {
                    return Step::Next;
                }
            } else if let Some(chain) = target(s, "goto") {
                return Step::Done(self.chain(chain, depth + 1));
            } else if let Some(chain) = target(s, "jump") {
                // A jumped-to chain that does not decide returns here (marking for masquerade).
                if let Some(outcome) = self.chain(chain, depth + 1) {
                    return Step::Done(Some(outcome));
                }
            } else if let Some(d) = s.get("dnat") {
                return Step::Done(self.dnat(d).map(Outcome::Endpoints));
            } else if let Some(v) = s.get("vmap") {
                return Step::Done(self.vmap(v, depth));
            } else if s.get("return").is_some() || s.get("accept").is_some() {
                return Step::Done(None);
            } else if let Some(outcome) = terminal(s) {
                return Step::Done(Some(outcome));
            }
        }
        Step::Next
    }

    /// Only the destination's protocol is known to hold; any other match is about where the
    /// packet comes from, and outside traffic meets none of ours.
    fn holds(&self, m: &Value) -> bool {
        let proto = match self.dest {
            Dest::Vip { protocol, .. } | Dest::NodePort { protocol, .. } => *protocol,
        };
        m["op"] == "=="
            && m["left"]["meta"]["key"] == "l4proto"
            && protocol(&m["right"]) == Some(proto)
    }

    /// Session affinity's `numgen ... vmap { i : goto endpoint-... }`: any of its endpoints.
    fn vmap(&self, v: &Value, depth: u32) -> Option<Outcome> {
        let choices = v["data"]["set"].as_array()?;
        let mut eps = BTreeSet::new();
        for choice in choices {
            if let Some(Outcome::Endpoints(e)) = self.verdict(&choice[1], depth) {
                eps.extend(e);
            }
        }
        (!eps.is_empty()).then_some(Outcome::Endpoints(eps))
    }

    /// `dnat to ADDR:PORT` (affinity's endpoint chains) or a lookup of `numgen random mod N
    /// offset O` (possibly behind `daddr . dport`) in an endpoint map: its N slots.
    fn dnat(&self, d: &Value) -> Option<BTreeSet<SocketAddr>> {
        let (vip, port) = match self.dest {
            Dest::Vip { ip, port, .. } => (Some(*ip), *port),
            Dest::NodePort { port, .. } => (None, *port),
        };
        if let Some(ip) = d["addr"].as_str() {
            // Without a port, DNAT keeps the packet's destination port.
            let to_port = d["port"].as_u64().and_then(|p| u16::try_from(p).ok());
            let addr = SocketAddr::new(ip.parse().ok()?, to_port.unwrap_or(port));
            return Some(BTreeSet::from([addr]));
        }
        let lookup = &d["addr"]["map"];
        let slots = self
            .table
            .slots
            .get(lookup["data"].as_str()?.trim_start_matches('@'));
        let (numgen, keyed_by_vip) = match lookup["key"]["concat"].as_array() {
            Some(parts) => (&parts.last()?["numgen"], true),
            None => (&lookup["key"]["numgen"], false),
        };
        let n = numgen["mod"].as_u64()?;
        let offset = numgen["offset"].as_u64().unwrap_or(0);
        let key = |i| match (keyed_by_vip, vip) {
            (false, _) => Some(SlotKey::Int(i)),
            (true, Some(ip)) => Some(SlotKey::Vip(ip, port, i)),
            (true, None) => None,
        };
        let found = (offset..offset + n)
            .filter_map(key)
            .filter_map(|k| slots?.get(&k).copied());
        Some(found.collect())
    }
}

fn target<'a>(v: &'a Value, verdict: &str) -> Option<&'a str> {
    v.get(verdict)?["target"].as_str()
}

fn terminal(v: &Value) -> Option<Outcome> {
    if v.get("drop").is_some() {
        Some(Outcome::Drop)
    } else if v.get("reject").is_some() {
        Some(Outcome::Reject)
    } else {
        None
    }
}
