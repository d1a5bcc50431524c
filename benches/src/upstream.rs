//! The baseline: a ruleset shaped like upstream kube-proxy's nftables mode for the same Services
//! (`objects.rs`), loaded with `nft -f` exactly as upstream's full sync sends it (one transaction of
//! `add`/`flush` statements): a chain per Service and per endpoint, a per-Service
//! `numgen random mod N vmap { ... }` (an anonymous set each: the kernel cost described in
//! /work/shared/design/netfilter-facts.md), the `service-ips` verdict map, `cluster-ips`, and for
//! NodePort Services an `external-` chain and a `service-nodeports` element.

use std::fmt::Write;

use crate::objects::{cluster_ip, endpoint_ip, node_port};

const T: &str = "ip kube-proxy";
/// Upstream's masquerade rule per Service chain matches traffic from outside the cluster CIDR.
const CLUSTER_CIDR: &str = "10.0.0.0/8";

/// The fixed part: table, base chains, dispatch, masquerading, the sets and maps.
fn skeleton(out: &mut String) {
    let base = [
        ("nat-prerouting", "nat", "prerouting", -100, "jump services"),
        ("nat-output", "nat", "output", -100, "jump services"),
        (
            "nat-postrouting",
            "nat",
            "postrouting",
            100,
            "jump masquerading",
        ),
        (
            "filter-forward",
            "filter",
            "forward",
            -110,
            "ct state new jump service-endpoints-check",
        ),
        (
            "filter-output",
            "filter",
            "output",
            -110,
            "ct state new jump service-endpoints-check",
        ),
    ];
    writeln!(
        out,
        "add table {T} {{ comment \"rules for kube-proxy\" ; }}"
    )
    .unwrap();
    for (name, kind, hook, prio, _) in base {
        writeln!(
            out,
            "add chain {T} {name} {{ type {kind} hook {hook} priority {prio} ; }}"
        )
        .unwrap();
    }
    for name in [
        "services",
        "masquerading",
        "mark-for-masquerade",
        "service-endpoints-check",
        "reject-chain",
    ] {
        writeln!(out, "add chain {T} {name}").unwrap();
    }
    for (name, ty) in [
        ("cluster-ips", "ipv4_addr"),
        (
            "service-ips",
            "ipv4_addr . inet_proto . inet_service : verdict",
        ),
        ("service-nodeports", "inet_proto . inet_service : verdict"),
        (
            "no-endpoint-services",
            "ipv4_addr . inet_proto . inet_service : verdict",
        ),
    ] {
        let kind = if ty.contains(':') { "map" } else { "set" };
        writeln!(out, "add {kind} {T} {name} {{ type {ty} ; }}").unwrap();
    }
    for (name, _, _, _, rule) in base {
        writeln!(out, "add rule {T} {name} {rule}").unwrap();
    }
    for rule in [
        "services ip daddr . meta l4proto . th dport vmap @service-ips",
        "services fib daddr type local ip daddr != 127.0.0.0/8 meta l4proto . th dport vmap @service-nodeports",
        "service-endpoints-check ip daddr . meta l4proto . th dport vmap @no-endpoint-services",
        "mark-for-masquerade mark set mark or 0x4000",
        "masquerading mark and 0x4000 == 0 return",
        "masquerading mark set mark xor 0x4000",
        "masquerading masquerade fully-random",
        "reject-chain reject",
    ] {
        writeln!(out, "add rule {T} {rule}").unwrap();
    }
}

/// An 8-character hash prefix, as upstream's chain names carry (theirs is base32 of SHA-256).
fn hash(s: &str) -> String {
    let h = s.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ b as u64).wrapping_mul(0x100_0000_01b3)
    });
    format!("{:08X}", h as u32)
}

/// Everything upstream writes for Service `i` (also what its partial sync sends to add it).
pub fn service(out: &mut String, i: u32, endpoints: u32) {
    let port = format!("ns{i}/svc{i}/tcp/http");
    let svc_chain = format!("service-{}-{port}", hash(&port));
    let vip = cluster_ip(i);
    let mut vmap = Vec::new();
    for e in 0..endpoints {
        let ip = endpoint_ip(i, endpoints, e);
        let name = format!("{port}__{ip}/8080");
        let chain = format!("endpoint-{}-{name}", hash(&name));
        writeln!(out, "add chain {T} {chain}\nflush chain {T} {chain}").unwrap();
        writeln!(
            out,
            "add rule {T} {chain} ip saddr {ip} jump mark-for-masquerade"
        )
        .unwrap();
        writeln!(
            out,
            "add rule {T} {chain} meta l4proto tcp dnat to {ip}:8080"
        )
        .unwrap();
        vmap.push(format!("{e} : goto {chain}"));
    }
    writeln!(
        out,
        "add chain {T} {svc_chain}\nflush chain {T} {svc_chain}"
    )
    .unwrap();
    writeln!(
        out,
        "add rule {T} {svc_chain} ip daddr {vip} tcp dport 80 ip saddr != {CLUSTER_CIDR} jump mark-for-masquerade"
    )
    .unwrap();
    writeln!(
        out,
        "add rule {T} {svc_chain} numgen random mod {endpoints} vmap {{ {} }}",
        vmap.join(" , ")
    )
    .unwrap();
    writeln!(out, "add element {T} cluster-ips {{ {vip} }}").unwrap();
    writeln!(
        out,
        "add element {T} service-ips {{ {vip} . tcp . 80 : goto {svc_chain} }}"
    )
    .unwrap();
    if let Some(np) = node_port(i) {
        let ext = format!("external-{}-{port}", hash(&port));
        writeln!(out, "add chain {T} {ext}\nflush chain {T} {ext}").unwrap();
        writeln!(out, "add rule {T} {ext} jump mark-for-masquerade").unwrap();
        writeln!(out, "add rule {T} {ext} goto {svc_chain}").unwrap();
        writeln!(
            out,
            "add element {T} service-nodeports {{ tcp . {np} : goto {ext} }}"
        )
        .unwrap();
    }
}

/// Upstream's full-sync transaction for Services `0..services`.
pub fn full(services: u32, endpoints: u32) -> String {
    let mut out = String::new();
    skeleton(&mut out);
    for i in 0..services {
        service(&mut out, i, endpoints);
    }
    out
}
