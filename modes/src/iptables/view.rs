//! Our chains read back by meaning, for `kproxy debug dump --kernel` (see [`crate::view`]).
//!
//! Each dispatch rule of nat KPROXY-SERVICES (`-d VIP -p P --dport N`) and KPROXY-NODEPORTS
//! (`-p P --dport N`) is followed the way a new connection from outside the node goes: through
//! the firewall chain, the external chain's unconditional rules (not the short-circuit of pod
//! and node traffic, which matches on the source), the endpoint-set chain and each endpoint's
//! chain down to its DNAT. The REJECT and DROP rules of filter KPROXY-SERVICES and
//! KPROXY-EXTERNAL-SERVICES give the verdict of a destination nothing DNATs.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::{IpAddr, SocketAddr},
};

use kproxy_dataplane::iptables::{SavedRule, SavedTable, Table};

use super::names::*;
use crate::{
    model::{IpFamily, Protocol},
    view::{Dest, KernelView, Outcome},
};

/// Chains are followed at most this deep: a loop (never rendered by us) cannot hang the dump.
const MAX_DEPTH: u32 = 8;

/// Decodes one family's saved tables.
pub fn decode(family: IpFamily, tables: &[SavedTable]) -> KernelView {
    let mut view = KernelView::default();
    let table = |t| tables.iter().find(|s| s.table() == Some(t));
    let mut dests: BTreeMap<Dest, BTreeSet<SocketAddr>> = BTreeMap::new();
    if let Some(nat) = table(Table::Nat) {
        let chains = by_chain(nat);
        for rule in chains.get(SERVICES).into_iter().flatten() {
            let words = rule.words();
            let (Some(dest), Some(to)) = (vip(&words), target(&words)) else {
                continue;
            };
            dests.insert(dest, endpoints(&chains, to, 0));
        }
        for rule in chains.get(NODEPORTS).into_iter().flatten() {
            let words = rule.words();
            let (Some((protocol, port)), Some(to)) = (proto_port(&words), target(&words)) else {
                continue;
            };
            let dest = Dest::NodePort {
                family,
                protocol,
                port,
            };
            dests.insert(dest, endpoints(&chains, to, 0));
        }
        view.summary.push(summary(nat));
    }
    let mut verdicts = BTreeMap::new();
    if let Some(filter) = table(Table::Filter) {
        for rule in filter
            .rules
            .iter()
            .filter(|r| r.chain == SERVICES || r.chain == EXTERNAL_SERVICES)
        {
            let words = rule.words();
            let outcome = match target(&words) {
                Some("REJECT") => Outcome::Reject,
                Some("DROP") => Outcome::Drop,
                _ => continue,
            };
            let dest = vip(&words).or_else(|| {
                let local = words.iter().any(|w| w == "LOCAL");
                let (protocol, port) = proto_port(&words)?;
                local.then_some(Dest::NodePort {
                    family,
                    protocol,
                    port,
                })
            });
            verdicts.extend(dest.map(|d| (d, outcome)));
        }
        view.summary.push(summary(filter));
    }
    for (dest, eps) in dests {
        let outcome = match (eps.is_empty(), verdicts.remove(&dest)) {
            (true, Some(v)) => v,
            _ => Outcome::Endpoints(eps),
        };
        view.dests.insert(dest, outcome);
    }
    view.dests.extend(verdicts);
    view
}

fn by_chain(t: &SavedTable) -> BTreeMap<&str, Vec<&SavedRule>> {
    let mut out: BTreeMap<&str, Vec<&SavedRule>> = BTreeMap::new();
    for r in &t.rules {
        out.entry(r.chain.as_str()).or_default().push(r);
    }
    out
}

fn summary(t: &SavedTable) -> String {
    let ours = t.chains.iter().filter(|c| is_ours(&c.name)).count();
    let rules = t.rules.iter().filter(|r| is_ours(&r.chain)).count();
    format!("{}: {ours} chains, {rules} rules of ours", t.name)
}

/// Where a new connection from outside entering `chain` is DNATed to.
fn endpoints(
    chains: &BTreeMap<&str, Vec<&SavedRule>>,
    chain: &str,
    depth: u32,
) -> BTreeSet<SocketAddr> {
    let mut out = BTreeSet::new();
    if depth > MAX_DEPTH {
        return out;
    }
    for rule in chains.get(chain).into_iter().flatten() {
        let words = rule.words();
        match target(&words) {
            Some("DNAT") => out.extend(arg(&words, "--to-destination").and_then(socket)),
            Some(to) if is_ours(to) && to != MARK_MASQ => {
                // The external chain's source-matched rules are pod and node traffic only.
                if is_external(chain) && matches_source(&words) {
                    continue;
                }
                out.extend(endpoints(chains, to, depth + 1));
            }
            _ => {}
        }
    }
    out
}

fn matches_source(words: &[String]) -> bool {
    words.iter().any(|w| {
        matches!(
            w.as_str(),
            "-s" | "--source" | "-i" | "--in-interface" | "--src-type"
        )
    })
}

/// `-d IP -p P --dport N`: a VIP destination.
fn vip(words: &[String]) -> Option<Dest> {
    let ip = arg(words, "-d")?;
    let ip: IpAddr = ip.split('/').next()?.parse().ok()?;
    let (protocol, port) = proto_port(words)?;
    Some(Dest::Vip { ip, protocol, port })
}

fn proto_port(words: &[String]) -> Option<(Protocol, u16)> {
    let p = arg(words, "-p")?.to_ascii_uppercase();
    let protocol = Protocol::from_api(Some(&p))?;
    Some((protocol, arg(words, "--dport")?.parse().ok()?))
}

fn target(words: &[String]) -> Option<&str> {
    arg(words, "-j").or_else(|| arg(words, "-g"))
}

/// The value after `flag`, unless the flag is negated (`! -d X` is no destination).
fn arg<'a>(words: &'a [String], flag: &str) -> Option<&'a str> {
    let at = words.iter().position(|w| w == flag)?;
    if at > 0 && words[at - 1] == "!" {
        return None;
    }
    words.get(at + 1).map(String::as_str)
}

/// `10.0.0.1:80` or `[fd00::1]:80`.
fn socket(s: &str) -> Option<SocketAddr> {
    s.parse().ok()
}
