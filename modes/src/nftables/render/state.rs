//! What the mode last applied: the diff base for partial syncs. Dropped on any failure.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::IpAddr,
};

use crate::model::{IpFamily, NodeSettings, Protocol, ServicePortName};

pub use super::objects::{Ep, Slots, Target, VKey, Verdict, VerdictMap};

/// A member of a per-protocol family of maps and chains: (protocol, shard) for slot maps,
/// (protocol, N) for `pick-N`.
pub type MapId = (Protocol, u32);

/// One element of one of our sets or maps as text, `key` or `key : value`: built for the ports
/// a sync renders, never stored.
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

/// Everything one Service port owns in the table, in a compact typed form: the diff base of the
/// next partial sync. Kept for every port, so it holds no text (at 10k Services the text form
/// took ~3 KiB per port); [`ServiceObjects::elements`] spells the elements again when a sync
/// needs them, and chains keep only a fingerprint of their rules.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceObjects {
    /// Its slot id (see `slots`), stable while the port exists.
    pub id: u32,
    /// The Service port number: the port of every `ip . proto . port` key.
    pub port: u16,
    /// Shared, reference-counted: the `cluster-ips` set holds it while some port uses it.
    pub cluster_ip: IpAddr,
    /// Its elements in the verdict maps (dispatch, no-endpoint verdicts, firewall), sorted.
    pub verdicts: Box<[Verdict]>,
    /// Its endpoints: slot map elements and (reference-counted) hairpin IPs.
    pub slots: Slots,
    /// Chain name to a [`fingerprint`] of its rules, sorted by name: enough to tell whether a
    /// chain must be rewritten, whose new rules come from the new render.
    pub chains: Box<[(String, u64)]>,
    /// Session-affinity sets: name to `add set` body, sorted by name.
    pub sets: Box<[(String, String)]>,
    /// The slot map (protocol, shard) its chains use, if any.
    pub shard: Option<MapId>,
    /// The shared `pick-N` chain (protocol, N) it dispatches to, if chainless.
    pub pick: Option<MapId>,
}

impl Default for ServiceObjects {
    /// An empty port: the diff base for a port that did not exist.
    fn default() -> Self {
        Self {
            id: 0,
            port: 0,
            cluster_ip: IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED),
            verdicts: Box::default(),
            slots: Slots::None,
            chains: Box::default(),
            sets: Box::default(),
            shard: None,
            pick: None,
        }
    }
}

impl ServiceObjects {
    /// The fingerprint of `chain`'s rules, if the port has that chain.
    pub fn chain(&self, chain: &str) -> Option<u64> {
        let i = self.chains.binary_search_by(|(c, _)| c.as_str().cmp(chain));
        i.ok().map(|i| self.chains[i].1)
    }

    /// The endpoint IPs it contributes to the hairpin set (each once).
    pub fn hairpin_ips(&self) -> BTreeSet<IpAddr> {
        let (a, b): (&[Ep], &[Ep]) = match &self.slots {
            Slots::None => (&[], &[]),
            Slots::Vip(eps) => (eps, &[]),
            Slots::Chains { cluster, local, .. } => (cluster, local),
        };
        a.iter().chain(b).map(|ep| ep.0).collect()
    }
}

/// A fingerprint of a chain's rules. 64 bits of SipHash: a changed chain going unnoticed
/// would take a collision between its old and new rules.
pub fn fingerprint(rules: &[String]) -> u64 {
    use std::hash::{DefaultHasher, Hash, Hasher};
    let mut h = DefaultHasher::new();
    rules.hash(&mut h);
    h.finish()
}

/// The applied state of one family's table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FamilyApplied {
    /// The node settings and NodePort addresses the table's fixed part was rendered from: if
    /// either changes, the next sync must be full.
    pub node: NodeSettings,
    pub nodeport_ips: Vec<IpAddr>,
    /// How many rules each fixed chain (base and dispatch chains) holds: what the periodic
    /// drift check compares with the kernel. Set by full syncs only; partial ones never touch
    /// these chains.
    pub fixed_rules: Vec<(&'static str, u32)>,
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
