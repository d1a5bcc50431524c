//! Every kernel object name the nftables mode uses. Fixed names are constants; per-Service names
//! are derived deterministically from the Service port's name, so two kproxy processes (or a
//! restart) agree on them without reading the kernel.

use std::net::SocketAddr;

use crate::model::{Protocol, ServicePortName};

/// Our table, in family `ip` and `ip6`. kproxy creates and deletes nothing outside it.
pub const TABLE: &str = "kproxy";

// Base chains, named `<type>-<hook>` like upstream's.
pub const FILTER_PREROUTING: &str = "filter-prerouting";
pub const FILTER_INPUT: &str = "filter-input";
pub const FILTER_FORWARD: &str = "filter-forward";
pub const FILTER_OUTPUT: &str = "filter-output";
pub const FILTER_OUTPUT_POST_DNAT: &str = "filter-output-post-dnat";
pub const NAT_PREROUTING: &str = "nat-prerouting";
pub const NAT_OUTPUT: &str = "nat-output";
pub const NAT_POSTROUTING: &str = "nat-postrouting";

// Regular chains jumped to from the base chains.
pub const SERVICES: &str = "services";
pub const SERVICE_ENDPOINTS_CHECK: &str = "service-endpoints-check";
pub const NODEPORT_ENDPOINTS_CHECK: &str = "nodeport-endpoints-check";
pub const FIREWALL_CHECK: &str = "firewall-check";
pub const CLUSTER_IPS_CHECK: &str = "cluster-ips-check";
pub const REJECT_CHAIN: &str = "reject-chain";
pub const MARK_MASQ: &str = "mark-for-masquerade";
pub const MASQUERADING: &str = "masquerading";

// Maps and sets.
pub const SERVICE_IPS: &str = "service-ips";
pub const SERVICE_NODEPORTS: &str = "service-nodeports";
pub const NO_ENDPOINT_SERVICES: &str = "no-endpoint-services";
pub const NO_ENDPOINT_NODEPORTS: &str = "no-endpoint-nodeports";
pub const FIREWALL_IPS: &str = "firewall-ips";
pub const CLUSTER_IPS: &str = "cluster-ips";
pub const NODEPORT_IPS: &str = "nodeport-ips";
pub const POD_CIDRS: &str = "pod-cidrs";
pub const HAIRPIN: &str = "hairpin-endpoints";
/// Prefix of the sharded endpoint slot maps: `endpoint-slots-<proto>-<shard>`.
pub const ENDPOINT_SLOTS_PREFIX: &str = "endpoint-slots-";

/// Prefix of the pick maps: `vip-slots-<proto>-<N>`.
const VIP_SLOTS_PREFIX: &str = "vip-slots-";

/// Whether our set named `name` is a map (for naming drift: a map element or a set element).
pub fn is_map(name: &str) -> bool {
    [
        SERVICE_IPS,
        SERVICE_NODEPORTS,
        NO_ENDPOINT_SERVICES,
        NO_ENDPOINT_NODEPORTS,
        FIREWALL_IPS,
    ]
    .contains(&name)
        || name.starts_with(ENDPOINT_SLOTS_PREFIX)
        || name.starts_with(VIP_SLOTS_PREFIX)
}

// Per-Service-port name prefixes; each is at most 16 characters including the hyphen.
const CLUSTER_PREFIX: &str = "service-";
const LOCAL_PREFIX: &str = "local-";
const EXTERNAL_PREFIX: &str = "external-";
const FIREWALL_PREFIX: &str = "firewall-";
const ENDPOINT_PREFIX: &str = "endpoint-";
const AFFINITY_PREFIX: &str = "affinity-";

/// nft names are at most 255 bytes (NFT_NAME_MAXLEN 256 with the NUL).
pub const NAME_MAX: usize = 255;
const PREFIX_MAX: usize = 16;
const BASE_MAX: usize = NAME_MAX - PREFIX_MAX;

/// The name part shared by all of one Service port's objects: `HASH-ns/name/proto/port`.
///
/// Namespace, name and port name are DNS labels of at most 63 characters from `[a-z0-9-]`, all
/// legal in nft names; `/` separates them because it cannot occur inside them. Worst case:
/// 8 (hash) + 1 + 63 + 1 + 63 + 1 + 4 (sctp) + 1 + 63 = 205 characters, plus a 16-character prefix
/// = 221 <= 255, so a Service port's names are never truncated.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ServiceNames {
    base: String,
}

impl ServiceNames {
    pub fn new(name: &ServicePortName) -> Self {
        let proto = name.protocol.as_str().to_ascii_lowercase();
        let full = format!("{}/{}/{}/{}", name.namespace, name.name, proto, name.port);
        Self {
            base: hash_and_truncate(&full),
        }
    }

    pub fn cluster_chain(&self) -> String {
        format!("{CLUSTER_PREFIX}{}", self.base)
    }

    pub fn local_chain(&self) -> String {
        format!("{LOCAL_PREFIX}{}", self.base)
    }

    pub fn external_chain(&self) -> String {
        format!("{EXTERNAL_PREFIX}{}", self.base)
    }

    pub fn firewall_chain(&self) -> String {
        format!("{FIREWALL_PREFIX}{}", self.base)
    }

    /// Per-endpoint chain, used only by Service ports with session affinity.
    ///
    /// The endpoint suffix `__<ip>/<port>` adds up to 2 + 39 (IPv6, `:` written `.` because
    /// nft names cannot hold `:`) + 1 + 5 = 47 characters: 205 + 47 = 252 > 239, so these names
    /// can (in theory) be truncated; the hash of the full name keeps them unique.
    pub fn endpoint_chain(&self, ep: &SocketAddr) -> String {
        format!("{ENDPOINT_PREFIX}{}", self.endpoint_base(ep))
    }

    /// The session-affinity set of one endpoint (source addresses recently sent to it).
    pub fn affinity_set(&self, ep: &SocketAddr) -> String {
        format!("{AFFINITY_PREFIX}{}", self.endpoint_base(ep))
    }

    fn endpoint_base(&self, ep: &SocketAddr) -> String {
        // Hash the readable part again so a truncated name still names one endpoint.
        let readable = &self.base[9..];
        let ip = ep.ip().to_string().replace(':', ".");
        hash_and_truncate(&format!("{readable}__{ip}/{}", ep.port()))
    }
}

// Maps and chains are per protocol: nft 1.0.6 only accepts `meta l4proto P dnat ... map @m`
// on an existing map whose data is typed with that same protocol (`P dport`).

/// The shared chain that picks one of N endpoints of a chainless port (see `render::service`).
pub fn pick_chain(proto: Protocol, n: u32) -> String {
    format!("pick-{}-{n}", proto_name(proto))
}

/// The map of chainless ports with N endpoints: `vip . port . index` to endpoint.
pub fn vip_slots(proto: Protocol, n: u32) -> String {
    format!("{VIP_SLOTS_PREFIX}{}-{n}", proto_name(proto))
}

fn proto_name(p: Protocol) -> &'static str {
    match p {
        Protocol::Tcp => "tcp",
        Protocol::Udp => "udp",
        Protocol::Sctp => "sctp",
    }
}

/// The slot map holding the endpoints of Service port `id` (see `render::slots`).
pub fn slot_map(proto: Protocol, shard: u32) -> String {
    format!("{ENDPOINT_SLOTS_PREFIX}{}-{shard}", proto_name(proto))
}

fn hash_and_truncate(name: &str) -> String {
    crate::names::hash_and_truncate(name, BASE_MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn service_names_are_readable_and_stable() {
        let n = ServiceNames::new(&ServicePortName::new("ns1", "svc1", "p80", Protocol::Tcp));
        let c = n.cluster_chain();
        assert!(c.starts_with("service-"), "{c}");
        assert!(c.ends_with("-ns1/svc1/tcp/p80"), "{c}");
        assert_eq!(c.len(), "service-".len() + 9 + "ns1/svc1/tcp/p80".len());
        assert_eq!(
            c,
            ServiceNames::new(&ServicePortName::new("ns1", "svc1", "p80", Protocol::Tcp))
                .cluster_chain()
        );
        let other = ServiceNames::new(&ServicePortName::new("ns1", "svc1", "p80", Protocol::Udp));
        assert_ne!(c[8..16], other.cluster_chain()[8..16]);
    }

    #[test]
    fn worst_case_names_fit_nft_limit() {
        let l = "a".repeat(63);
        let n = ServiceNames::new(&ServicePortName::new(&l, &l, &l, Protocol::Sctp));
        let ep: SocketAddr = "[ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff]:65535"
            .parse()
            .unwrap();
        for name in [
            n.external_chain(),
            n.endpoint_chain(&ep),
            n.affinity_set(&ep),
        ] {
            assert!(name.len() <= NAME_MAX, "{} > {NAME_MAX}", name.len());
        }
        assert!(n.endpoint_chain(&ep).ends_with("..."));
        assert!(!n.external_chain().ends_with("..."));
    }
}
