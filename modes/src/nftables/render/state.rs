//! What the mode last applied: the diff base for partial syncs. Dropped on any failure.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::IpAddr,
};

use crate::model::{IpFamily, NodeSettings, Protocol, ServicePortName};

/// A member of a per-protocol family of maps and chains: (protocol, shard) for slot maps,
/// (protocol, N) for `pick-N`.
pub type MapId = (Protocol, u32);

/// One element of one of our sets or maps: `key` or `key : value`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Elem {
    pub set: String,
    pub key: String,
    pub value: Option<String>,
}

impl Elem {
    pub fn new(set: &str, key: String, value: Option<String>) -> Self {
        Self {
            set: set.to_owned(),
            key,
            value,
        }
    }

    /// The element as `add element` spells it.
    pub fn text(&self) -> String {
        match &self.value {
            Some(v) => format!("{} : {v}", self.key),
            None => self.key.clone(),
        }
    }
}

/// Everything one Service port owns in the table, as rendered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceObjects {
    /// Its slot id (see `slots`), stable while the port exists.
    pub id: u32,
    /// Chain name to its rules, in order.
    pub chains: BTreeMap<String, Vec<String>>,
    /// Session-affinity sets: name to `add set` body.
    pub sets: BTreeMap<String, String>,
    /// Its elements in the shared maps (dispatch, no-endpoint verdicts, firewall, slots).
    pub elements: BTreeSet<Elem>,
    /// Shared, reference-counted contributions: its cluster IP and its endpoints' IPs.
    pub cluster_ip: IpAddr,
    pub hairpin_ips: BTreeSet<IpAddr>,
    /// The slot map (protocol, shard) its chains use, if any.
    pub shard: Option<MapId>,
    /// Endpoint counts N whose shared `pick-N` chain it uses (chainless ports).
    pub picks: BTreeSet<MapId>,
}

impl Default for ServiceObjects {
    /// An empty port: the diff base for a port that did not exist.
    fn default() -> Self {
        Self {
            id: 0,
            chains: BTreeMap::new(),
            sets: BTreeMap::new(),
            elements: BTreeSet::new(),
            cluster_ip: IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED),
            hairpin_ips: BTreeSet::new(),
            shard: None,
            picks: BTreeSet::new(),
        }
    }
}

/// The applied state of one family's table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FamilyApplied {
    /// The node settings and NodePort addresses the table's fixed part was rendered from: if
    /// either changes, the next sync must be full.
    pub node: NodeSettings,
    pub nodeport_ips: Vec<IpAddr>,
    pub services: BTreeMap<ServicePortName, ServiceObjects>,
    /// How many Service ports use each cluster IP (the `cluster-ips` set holds those > 0).
    pub cluster_ip_refs: BTreeMap<IpAddr, u32>,
    /// How many Service ports use each endpoint IP (the hairpin set holds those > 0).
    pub hairpin_refs: BTreeMap<IpAddr, u32>,
    /// Slot map shards that exist in the table.
    pub shards: BTreeSet<MapId>,
    /// `pick-N` chains and `vip-slots-N` maps that exist in the table. Kept until the next
    /// full sync even when unused: an empty one costs nothing.
    pub picks: BTreeSet<MapId>,
}

impl FamilyApplied {
    pub fn used_ids(&self) -> BTreeSet<u32> {
        self.services.values().map(|s| s.id).collect()
    }
}

/// The applied state of every family; `None` in the mode means "next sync is full".
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Applied {
    pub families: BTreeMap<IpFamily, FamilyApplied>,
}

/// Adds `delta` (+1/-1) references to `ip` and reports whether it crossed zero:
/// `Some(true)` newly present, `Some(false)` newly absent.
pub fn refcount(refs: &mut BTreeMap<IpAddr, u32>, ip: IpAddr, add: bool) -> Option<bool> {
    let n = refs.entry(ip).or_insert(0);
    if add {
        *n += 1;
        (*n == 1).then_some(true)
    } else {
        *n = n.saturating_sub(1);
        if *n == 0 {
            refs.remove(&ip);
            Some(false)
        } else {
            None
        }
    }
}
