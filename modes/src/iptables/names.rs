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

/// Every Service port's chains start with this, then the port's key: see [`ServiceChains`].
pub const PORT_PREFIX: &str = "KPROXY-SP";

/// iptables chain names are at most 28 characters (XT_EXTENSION_MAXNAMELEN 29 with the NUL).
pub const CHAIN_MAX: usize = 28;

/// Characters of the port's key: 50 bits, no collision to fear among 100k Service ports.
const KEY_LEN: usize = 10;

/// The names of one Service port's chains: [`PORT_PREFIX`], a key of [`KEY_LEN`] base32
/// characters hashed from `namespace/name/protocol/port`, then the kind: `SVC` (the Cluster
/// set), `SVL` (the Local set), `EXT`, `FW`, or `E` plus 8 characters hashed from the endpoint
/// (40 bits, unique among one port's endpoints). At most 9 + 10 + 9 = 28 = [`CHAIN_MAX`].
///
/// Why this shape and not upstream's `KUBE-SVC-<hash>` / `KUBE-SEP-<hash>`: iptables-nft-restore
/// `--noflush` keeps every chain name its input references in a sorted list, inserting each by a
/// walk from the smallest (iptables 1.8.9 `cache_chain_list_insert`), which is quadratic in the
/// names (10k Services x 5 endpoints: over 10 minutes). A walk stops at the first larger name. So
/// all chains of a port share one prefix (`KPROXY-SP<key>`), every fixed chain sorts before every
/// port's (`SERVICES` < `SP`), and the input is written port by port in descending key order
/// ([`super::render::input`]): each name then sits behind only the fixed chains and its own
/// port's other chains, and a full sync's list costs a few steps per name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceChains {
    /// The readable name the endpoint hashes are taken of: `ns/name/proto/port`.
    key: String,
    /// `KPROXY-SP<key>`: what every chain of this port starts with.
    group: String,
}

impl ServiceChains {
    pub fn new(name: &ServicePortName) -> Self {
        let proto = name.protocol.as_str().to_ascii_lowercase();
        let key = format!("{}/{}/{}/{}", name.namespace, name.name, proto, name.port);
        let hash = format!("{}{}", hash8(&key), hash8(&format!("{key}\u{0}")));
        Self {
            group: format!("{PORT_PREFIX}{}", &hash[..KEY_LEN]),
            key,
        }
    }

    pub fn cluster(&self) -> String {
        format!("{}SVC", self.group)
    }

    pub fn local(&self) -> String {
        format!("{}SVL", self.group)
    }

    pub fn external(&self) -> String {
        format!("{}EXT", self.group)
    }

    pub fn firewall(&self) -> String {
        format!("{}FW", self.group)
    }

    /// One endpoint's chain, hashed with the port's name, so two ports sharing an endpoint
    /// address have two chains (each port's affinity is its own, as upstream's).
    pub fn endpoint(&self, ep: &SocketAddr) -> String {
        format!("{}E{}", self.group, hash8(&format!("{}/{ep}", self.key)))
    }
}

/// The port group (`KPROXY-SP<key>`) a chain of ours belongs to; `None` for a fixed chain.
pub fn port_group(chain: &str) -> Option<&str> {
    let len = PORT_PREFIX.len() + KEY_LEN;
    (chain.starts_with(PORT_PREFIX) && chain.len() > len).then(|| &chain[..len])
}

/// Whether `chain` is a port's external chain (`...EXT`).
pub fn is_external(chain: &str) -> bool {
    port_group(chain).is_some() && chain.ends_with("EXT")
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
        // Every chain of a port shares its group, and every fixed chain sorts before any port's.
        for name in [tcp.cluster(), tcp.external(), tcp.endpoint(&ep)] {
            assert_eq!(port_group(&name), port_group(&tcp.cluster()));
        }
        assert!(is_external(&tcp.external()) && !is_external(&tcp.cluster()));
        for fixed in [
            SERVICES,
            EXTERNAL_SERVICES,
            NODEPORTS,
            POSTROUTING,
            MARK_MASQ,
            FIREWALL,
        ] {
            assert_eq!(port_group(fixed), None);
            assert!(fixed < tcp.cluster().as_str(), "{fixed}");
        }
        assert_eq!(
            tcp,
            ServiceChains::new(&ServicePortName::new("ns", "s", "p", Protocol::Tcp))
        );
    }
}
