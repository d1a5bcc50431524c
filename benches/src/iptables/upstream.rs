//! The baseline: `iptables-restore` input shaped like upstream kube-proxy's iptables mode
//! (pkg/proxy/iptables/proxier.go, 1.28 and later) for the same Services (`objects.rs`), as its
//! full and partial syncs write it:
//!
//! - filter: `KUBE-NODEPORTS`, `KUBE-SERVICES`, `KUBE-EXTERNAL-SERVICES`, `KUBE-FORWARD`,
//!   `KUBE-PROXY-FIREWALL` declared (and so emptied) on every sync, `KUBE-FORWARD`'s three rules.
//! - nat: `KUBE-SERVICES`, `KUBE-NODEPORTS`, `KUBE-POSTROUTING`, `KUBE-MARK-MASQ` declared and
//!   refilled on every sync; per Service port `KUBE-SVC-<hash>` (the masquerade rule for traffic
//!   from outside the cluster CIDR, then one `-m statistic --mode random --probability 1/k` jump
//!   per endpoint, the last one unconditional), per endpoint `KUBE-SEP-<hash>` (hairpin mark,
//!   DNAT), and for NodePort Services a `KUBE-NODEPORTS` rule and `KUBE-EXT-<hash>` (mark for
//!   masquerade, jump to the SVC chain); `KUBE-SERVICES` ends with the `addrtype LOCAL` jump.
//! - Chain declarations first, then rules, per table; Services in Go's random map order (a
//!   fixed shuffle here), each Service's chains and rules in upstream's order.
//! - Above 1000 endpoints upstream's "large cluster mode" drops the comments of the SVC -> SEP
//!   and SEP rules (every size benchmarked here is above it); the other comments stay.
//! - A partial sync (one Service added) rewrites the filter table and the shared nat chains
//!   (every Service's `KUBE-SERVICES` and `KUBE-NODEPORTS` rule) and only the changed Service's
//!   own chains.
//!
//! The jumps from the built-in chains are not in the input: upstream ensures them with separate
//! `iptables` commands ([`jumps`], run before the clock starts).

use std::fmt::Write;

use kproxy_modes::names::hash8;

use crate::objects::{cluster_ip, endpoint_ip, node_port};

const CLUSTER_CIDR: &str = "10.0.0.0/8";
/// Upstream's `largeClusterEndpointsThreshold`.
const LARGE_CLUSTER_ENDPOINTS: u32 = 1000;
const MASQ_MARK: &str = "0x4000";

/// The flags upstream runs `iptables-restore` with: `-w 5` is its xtables-lock wait (it passes
/// `-W 100000` too, which iptables 1.8 ignores, saying so on stderr: left out).
pub fn restore_args(noflush: bool) -> Vec<&'static str> {
    let mut v = vec!["-w", "5"];
    if noflush {
        v.push("--noflush");
    }
    v.push("--counters");
    v
}

/// 16 base32 characters, as upstream's chain names carry (theirs: base32 of SHA-256; any
/// well-spread hash gives `iptables-restore` the same names to sort and compare).
fn hash16(s: &str) -> String {
    format!("{}{}", hash8(s), hash8(&format!("{s}\u{0}")))
}

/// What upstream writes per Service port, by name.
struct Port {
    i: u32,
    /// `ns<i>/svc<i>:http`, upstream's servicePortName string.
    name: String,
    svc: String,
    ext: String,
}

impl Port {
    fn new(i: u32) -> Self {
        let name = format!("ns{i}/svc{i}:http");
        let h = hash16(&format!("{name}tcp"));
        Self {
            i,
            svc: format!("KUBE-SVC-{h}"),
            ext: format!("KUBE-EXT-{h}"),
            name,
        }
    }

    fn sep(&self, ep: &str) -> String {
        format!("KUBE-SEP-{}", hash16(&format!("{}tcp{ep}", self.name)))
    }

    /// Its rules in the shared chains (written on every sync, partial or full).
    fn shared(&self, rules: &mut String) {
        let (name, vip, svc) = (&self.name, cluster_ip(self.i), &self.svc);
        writeln!(rules, "-A KUBE-SERVICES -m comment --comment \"{name} cluster IP\" -m tcp -p tcp -d {vip} --dport 80 -j {svc}").unwrap();
        if let Some(np) = node_port(self.i) {
            let ext = &self.ext;
            writeln!(
                rules,
                "-A KUBE-NODEPORTS -m comment --comment {name} -m tcp -p tcp --dport {np} -j {ext}"
            )
            .unwrap();
        }
    }

    /// Its own chains: declarations into `chains`, rules into `rules`.
    fn own(&self, endpoints: u32, large: bool, chains: &mut String, rules: &mut String) {
        let (name, vip, svc, ext) = (&self.name, cluster_ip(self.i), &self.svc, &self.ext);
        writeln!(rules, "-A {svc} -m comment --comment \"{name} cluster IP\" -m tcp -p tcp -d {vip} --dport 80 ! -s {CLUSTER_CIDR} -j KUBE-MARK-MASQ").unwrap();
        if node_port(self.i).is_some() {
            writeln!(chains, ":{ext} - [0:0]").unwrap();
            writeln!(rules, "-A {ext} -m comment --comment \"masquerade traffic for {name} external destinations\" -j KUBE-MARK-MASQ").unwrap();
            writeln!(rules, "-A {ext} -j {svc}").unwrap();
        }
        writeln!(chains, ":{svc} - [0:0]").unwrap();
        let eps: Vec<String> = (0..endpoints)
            .map(|e| format!("{}:8080", endpoint_ip(self.i, endpoints, e)))
            .collect();
        for (k, ep) in eps.iter().enumerate() {
            let mut rule = format!("-A {svc}");
            if !large {
                write!(rule, " -m comment --comment \"{name} -> {ep}\"").unwrap();
            }
            let left = eps.len() - k;
            if left > 1 {
                let p = 1.0 / left as f64;
                write!(rule, " -m statistic --mode random --probability {p:.10}").unwrap();
            }
            writeln!(rules, "{rule} -j {}", self.sep(ep)).unwrap();
        }
        let comment = match large {
            true => String::new(),
            false => format!(" -m comment --comment {name}"),
        };
        for ep in &eps {
            let sep = self.sep(ep);
            let ip = ep.trim_end_matches(":8080");
            writeln!(chains, ":{sep} - [0:0]").unwrap();
            writeln!(rules, "-A {sep}{comment} -s {ip} -j KUBE-MARK-MASQ").unwrap();
            writeln!(
                rules,
                "-A {sep}{comment} -m tcp -p tcp -j DNAT --to-destination {ep}"
            )
            .unwrap();
        }
    }
}

/// Upstream's filter chains, declared (so emptied) by every sync.
fn filter_chains(out: &mut String) {
    out.push_str("*filter\n");
    for c in [
        "KUBE-NODEPORTS",
        "KUBE-SERVICES",
        "KUBE-EXTERNAL-SERVICES",
        "KUBE-FORWARD",
        "KUBE-PROXY-FIREWALL",
    ] {
        writeln!(out, ":{c} - [0:0]").unwrap();
    }
}

fn filter_table(out: &mut String) {
    filter_chains(out);
    out.push_str("-A KUBE-FORWARD -m conntrack --ctstate INVALID -j DROP\n");
    writeln!(out, "-A KUBE-FORWARD -m comment --comment \"kubernetes forwarding rules\" -m mark --mark {MASQ_MARK}/{MASQ_MARK} -j ACCEPT").unwrap();
    out.push_str("-A KUBE-FORWARD -m comment --comment \"kubernetes forwarding conntrack rule\" -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT\nCOMMIT\n");
}

/// Services `0..services` in the order of a Go map walk: a fixed pseudo-random permutation.
fn map_order(services: u32) -> Vec<u32> {
    let mut v: Vec<u32> = (0..services).collect();
    fastrand::Rng::with_seed(0x6b75_6265).shuffle(&mut v);
    v
}

/// A sync's input with `services` present, `endpoints` each; only the Services `own` says
/// get their own chains written (all of them in a full sync).
fn sync_input(services: u32, endpoints: u32, own: impl Fn(u32) -> bool) -> String {
    let large = services * endpoints > LARGE_CLUSTER_ENDPOINTS;
    let mut chains = String::new();
    let mut rules = String::new();
    for c in [
        "KUBE-SERVICES",
        "KUBE-NODEPORTS",
        "KUBE-POSTROUTING",
        "KUBE-MARK-MASQ",
    ] {
        writeln!(chains, ":{c} - [0:0]").unwrap();
    }
    writeln!(rules, "-A KUBE-POSTROUTING -m mark ! --mark {MASQ_MARK}/{MASQ_MARK} -j RETURN\n-A KUBE-POSTROUTING -j MARK --xor-mark {MASQ_MARK}").unwrap();
    rules.push_str("-A KUBE-POSTROUTING -m comment --comment \"kubernetes service traffic requiring SNAT\" -j MASQUERADE --random-fully\n");
    writeln!(rules, "-A KUBE-MARK-MASQ -j MARK --or-mark {MASQ_MARK}").unwrap();
    for i in map_order(services) {
        let port = Port::new(i);
        port.shared(&mut rules);
        if own(i) {
            port.own(endpoints, large, &mut chains, &mut rules);
        }
    }
    rules.push_str("-A KUBE-SERVICES -m comment --comment \"kubernetes service nodeports; NOTE: this must be the last rule in this chain\" -m addrtype --dst-type LOCAL -j KUBE-NODEPORTS\n");
    let mut out = String::new();
    filter_table(&mut out);
    out.push_str("*nat\n");
    out.push_str(&chains);
    out.push_str(&rules);
    out.push_str("COMMIT\n");
    out
}

/// Upstream's full-sync input for Services `0..services`.
pub fn full(services: u32, endpoints: u32) -> String {
    sync_input(services, endpoints, |_| true)
}

/// Upstream's partial-sync input after Service `new` was added to `0..new`.
pub fn partial(new: u32, endpoints: u32) -> String {
    sync_input(new + 1, endpoints, |i| i == new)
}

/// The jumps from the built-in chains into upstream's, as its full sync ensures them (with
/// `iptables -C`/`-I` commands, not in the restore input): set up before the clock starts.
pub fn jumps() -> String {
    let mut out = String::new();
    filter_chains(&mut out);
    let new = "-m conntrack --ctstate NEW";
    for (chain, cond, comment, target) in [
        (
            "INPUT",
            new,
            "kubernetes load balancer firewall",
            "KUBE-PROXY-FIREWALL",
        ),
        (
            "INPUT",
            "",
            "kubernetes health check service ports",
            "KUBE-NODEPORTS",
        ),
        (
            "INPUT",
            new,
            "kubernetes externally-visible service portals",
            "KUBE-EXTERNAL-SERVICES",
        ),
        (
            "FORWARD",
            new,
            "kubernetes load balancer firewall",
            "KUBE-PROXY-FIREWALL",
        ),
        ("FORWARD", "", "kubernetes forwarding rules", "KUBE-FORWARD"),
        (
            "FORWARD",
            new,
            "kubernetes service portals",
            "KUBE-SERVICES",
        ),
        (
            "FORWARD",
            new,
            "kubernetes externally-visible service portals",
            "KUBE-EXTERNAL-SERVICES",
        ),
        (
            "OUTPUT",
            new,
            "kubernetes load balancer firewall",
            "KUBE-PROXY-FIREWALL",
        ),
        ("OUTPUT", new, "kubernetes service portals", "KUBE-SERVICES"),
    ] {
        let cond = if cond.is_empty() {
            String::new()
        } else {
            format!(" {cond}")
        };
        writeln!(
            out,
            "-I {chain}{cond} -m comment --comment \"{comment}\" -j {target}"
        )
        .unwrap();
    }
    out.push_str("COMMIT\n*nat\n:KUBE-SERVICES - [0:0]\n:KUBE-POSTROUTING - [0:0]\n");
    for (chain, comment, target) in [
        ("PREROUTING", "kubernetes service portals", "KUBE-SERVICES"),
        ("OUTPUT", "kubernetes service portals", "KUBE-SERVICES"),
        (
            "POSTROUTING",
            "kubernetes postrouting rules",
            "KUBE-POSTROUTING",
        ),
    ] {
        writeln!(
            out,
            "-I {chain} -m comment --comment \"{comment}\" -j {target}"
        )
        .unwrap();
    }
    out.push_str("COMMIT\n");
    out
}

/// Removes everything from nat and filter (a restore without `--noflush` of empty tables): the
/// benchmark's own namespace, torn down now rather than in the kernel's netns cleanup later.
pub const EMPTY: &str = "*nat\nCOMMIT\n*filter\nCOMMIT\n";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_input_has_upstreams_chains_and_probabilities() {
        let text = full(20, 5);
        // 20 SVC + 100 SEP + 2 EXT chains of the Services, 4 fixed nat + 5 filter chains.
        assert_eq!(text.lines().filter(|l| l.starts_with(':')).count(), 131);
        assert!(
            text.contains("-m statistic --mode random --probability 0.2000000000 -j KUBE-SEP-")
        );
        assert!(
            text.contains("-m statistic --mode random --probability 0.5000000000 -j KUBE-SEP-")
        );
        // 100 endpoints: not large-cluster mode, so the SEP rules carry their comments.
        assert!(
            text.contains("-m comment --comment ns3/svc3:http -s 10.64.0.15 -j KUBE-MARK-MASQ")
        );
        assert!(!full(300, 5).contains("--comment ns3/svc3:http -s"));
        assert!(text.ends_with("-j KUBE-NODEPORTS\nCOMMIT\n"));
    }

    #[test]
    fn partial_input_rewrites_shared_chains_and_the_new_service_only() {
        let text = partial(10, 5);
        assert_eq!(
            text.matches("-A KUBE-SERVICES -m comment --comment \"ns")
                .count(),
            11
        );
        assert_eq!(text.matches("-A KUBE-NODEPORTS").count(), 2);
        let svc_chains: Vec<_> = text
            .lines()
            .filter(|l| l.starts_with(":KUBE-SVC-"))
            .collect();
        assert_eq!(svc_chains, [format!(":{} - [0:0]", Port::new(10).svc)]);
        assert_eq!(
            text.lines().filter(|l| l.starts_with(":KUBE-SEP-")).count(),
            5
        );
    }
}
