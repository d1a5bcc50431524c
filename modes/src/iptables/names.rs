//! Every chain name the iptables mode uses. All start with [`PREFIX`]: what cleanup, stale-chain
//! deletion and the kernel view recognise as ours; nothing else is ever declared, flushed or
//! deleted. Per-Service-port names are derived from the port's readable name, so a restart (or a
//! second process) agrees on them without reading the kernel.

use std::net::SocketAddr;

use crate::{model::ServicePortName, names::hash8};

/// Every chain of ours starts with this; upstream's are `KUBE-`.
pub const PREFIX: &str = "KPROXY-";

// Fixed chains (upstream's names with our prefix).
pub const SERVICES: &str = "KPROXY-SERVICES";
pub const EXTERNAL_SERVICES: &str = "KPROXY-EXTERNAL-SERVICES";
pub const NODEPORTS: &str = "KPROXY-NODEPORTS";
pub const POSTROUTING: &str = "KPROXY-POSTROUTING";
pub const MARK_MASQ: &str = "KPROXY-MARK-MASQ";
pub const FORWARD: &str = "KPROXY-FORWARD";
pub const FIREWALL: &str = "KPROXY-PROXY-FIREWALL";
/// Empty, in nat and filter: if it is gone, someone flushed or deleted our chains.
pub const CANARY: &str = "KPROXY-CANARY";

// Per-Service-port chain prefixes (nat table), as upstream's KUBE-SVC-, -SVL-, -EXT-, -FW-, -SEP-.
pub const SVC_PREFIX: &str = "KPROXY-SVC-";
pub const SVL_PREFIX: &str = "KPROXY-SVL-";
pub const EXT_PREFIX: &str = "KPROXY-EXT-";
pub const FW_PREFIX: &str = "KPROXY-FW-";
pub const SEP_PREFIX: &str = "KPROXY-SEP-";

/// iptables chain names are at most 28 characters (XT_EXTENSION_MAXNAMELEN 29 with the NUL).
pub const CHAIN_MAX: usize = 28;

/// A hash of 16 base32 characters, as upstream's chain names have (80 bits: unlike 8 characters,
/// no collision to fear among 100k endpoints). Two [`hash8`]s of distinct inputs, because the
/// shared name hashing gives 40 bits at a time.
fn hash16(key: &str) -> String {
    format!("{}{}", hash8(key), hash8(&format!("{key}\u{0}")))
}

/// The names of one Service port's chains: a prefix of at most 11 characters plus 16 hash
/// characters = 27 <= [`CHAIN_MAX`]. Only `[A-Z0-9-]`, which every iptables accepts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceChains {
    /// The readable name the hashes are taken of: `ns/name/proto/port`.
    key: String,
    hash: String,
}

impl ServiceChains {
    pub fn new(name: &ServicePortName) -> Self {
        let proto = name.protocol.as_str().to_ascii_lowercase();
        let key = format!("{}/{}/{}/{}", name.namespace, name.name, proto, name.port);
        Self {
            hash: hash16(&key),
            key,
        }
    }

    pub fn cluster(&self) -> String {
        format!("{SVC_PREFIX}{}", self.hash)
    }

    pub fn local(&self) -> String {
        format!("{SVL_PREFIX}{}", self.hash)
    }

    pub fn external(&self) -> String {
        format!("{EXT_PREFIX}{}", self.hash)
    }

    pub fn firewall(&self) -> String {
        format!("{FW_PREFIX}{}", self.hash)
    }

    /// One endpoint's chain, hashed with the port's name, so two ports sharing an endpoint
    /// address have two chains (each port's affinity is its own, as upstream's).
    pub fn endpoint(&self, ep: &SocketAddr) -> String {
        format!("{SEP_PREFIX}{}", hash16(&format!("{}/{ep}", self.key)))
    }
}

/// Whether `chain` is one of ours.
pub fn is_ours(chain: &str) -> bool {
    chain.starts_with(PREFIX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Protocol;

    #[test]
    fn names_fit_iptables_and_differ_per_port_and_endpoint() {
        let l = "a".repeat(63);
        let n = ServiceChains::new(&ServicePortName::new(&l, &l, &l, Protocol::Sctp));
        let ep: SocketAddr = "[ffff::1]:65535".parse().unwrap();
        for name in [
            n.cluster(),
            n.local(),
            n.external(),
            n.firewall(),
            n.endpoint(&ep),
        ] {
            assert!(name.len() <= CHAIN_MAX, "{name}");
            assert!(is_ours(&name));
        }
        let tcp = ServiceChains::new(&ServicePortName::new("ns", "s", "p", Protocol::Tcp));
        let udp = ServiceChains::new(&ServicePortName::new("ns", "s", "p", Protocol::Udp));
        assert_ne!(tcp.cluster(), udp.cluster());
        assert_ne!(tcp.endpoint(&ep), udp.endpoint(&ep));
        assert_eq!(
            tcp,
            ServiceChains::new(&ServicePortName::new("ns", "s", "p", Protocol::Tcp))
        );
    }
}
