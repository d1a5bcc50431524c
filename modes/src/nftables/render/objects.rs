//! The typed pieces of a stored [`ServiceObjects`] and their nft spelling. Chain and map names
//! are not stored: they follow from the port's name, protocol, id and endpoint count.

use std::{collections::BTreeSet, net::IpAddr};

use crate::model::ServicePortName;

use super::{
    super::names::{
        FIREWALL_IPS, NO_ENDPOINT_NODEPORTS, NO_ENDPOINT_SERVICES, REJECT_CHAIN, SERVICE_IPS,
        SERVICE_NODEPORTS, ServiceNames, pick_chain, slot_map, vip_slots,
    },
    ctx::proto,
    slots,
    state::{Elem, ServiceObjects},
};

/// An endpoint as the slot maps hold it: IP and port (20 bytes; a `SocketAddr` takes 32).
pub type Ep = (IpAddr, u16);

/// A port's endpoints, as its slot map elements need them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Slots {
    /// No endpoint in use.
    #[default]
    None,
    /// Chainless: `vip-slots-<proto>-N` keys `cluster IP . port . i`, N = the length.
    Vip(Box<[Ep]>),
    /// The endpoints of its Cluster and Local policy chains (empty when the chain does not
    /// exist): at the port's offsets in its `endpoint-slots-…` shard, or, with session
    /// affinity, in the chains' rules only (no elements).
    Chains {
        cluster: Box<[Ep]>,
        local: Box<[Ep]>,
        affinity: bool,
    },
}

/// The verdict maps a port has elements in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum VerdictMap {
    ServiceIps,
    NoEndpointServices,
    FirewallIps,
    ServiceNodeports,
    NoEndpointNodeports,
}

/// A verdict element's key: `ip . proto . port` (the port's own port) or `proto . nodeport`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum VKey {
    Ip(IpAddr),
    NodePort(u16),
}

/// A verdict element's value: where the packet goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Target {
    Drop,
    Reject,
    /// The port's own chains.
    Cluster,
    Local,
    External,
    Firewall,
    /// The shared `pick-<proto>-N` chain.
    Pick(u32),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Verdict {
    pub map: VerdictMap,
    pub key: VKey,
    pub target: Target,
}

impl ServiceObjects {
    /// Its elements as the kernel is given them (port `name`'s objects).
    pub fn elements(&self, name: &ServicePortName) -> BTreeSet<Elem> {
        let p = proto(name.protocol);
        let mut out = BTreeSet::new();
        // Hashing the name is only needed for gotos to the port's own chains.
        let mut names = None;
        for v in &self.verdicts {
            let set = match v.map {
                VerdictMap::ServiceIps => SERVICE_IPS,
                VerdictMap::NoEndpointServices => NO_ENDPOINT_SERVICES,
                VerdictMap::FirewallIps => FIREWALL_IPS,
                VerdictMap::ServiceNodeports => SERVICE_NODEPORTS,
                VerdictMap::NoEndpointNodeports => NO_ENDPOINT_NODEPORTS,
            };
            let key = match v.key {
                VKey::Ip(ip) => format!("{ip} . {p} . {}", self.port),
                VKey::NodePort(np) => format!("{p} . {np}"),
            };
            let mut chain = |f: fn(&ServiceNames) -> String| {
                format!(
                    "goto {}",
                    f(names.get_or_insert_with(|| ServiceNames::new(name)))
                )
            };
            let value = match v.target {
                Target::Drop => "drop".to_owned(),
                Target::Reject => format!("goto {REJECT_CHAIN}"),
                Target::Cluster => chain(ServiceNames::cluster_chain),
                Target::Local => chain(ServiceNames::local_chain),
                Target::External => chain(ServiceNames::external_chain),
                Target::Firewall => chain(ServiceNames::firewall_chain),
                Target::Pick(n) => format!("goto {}", pick_chain(name.protocol, n)),
            };
            out.insert(Elem::new(set, key, Some(value)));
        }
        let ep = |(ip, port): &Ep| Some(format!("{ip} . {port}"));
        match &self.slots {
            Slots::None | Slots::Chains { affinity: true, .. } => {}
            Slots::Vip(eps) => {
                let map = vip_slots(name.protocol, eps.len() as u32);
                for (i, e) in eps.iter().enumerate() {
                    let key = format!("{} . {} . {i}", self.cluster_ip, self.port);
                    out.insert(Elem::new(&map, key, ep(e)));
                }
            }
            Slots::Chains { cluster, local, .. } => {
                let map = slot_map(name.protocol, slots::shard(self.id));
                for (eps, is_local) in [(cluster, false), (local, true)] {
                    let offset = slots::offset(self.id, is_local);
                    for (i, e) in eps.iter().enumerate() {
                        let key = (offset + i as u32).to_string();
                        out.insert(Elem::new(&map, key, ep(e)));
                    }
                }
            }
        }
        out
    }
}
