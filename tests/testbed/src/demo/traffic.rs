//! What the demo sends (one target per Service VIP and port, from the client that would use it) and
//! how the answers are summed up into table rows with a note saying what they show.

use super::cluster::{Cluster, Svc};
use crate::bed::TestBed;
use crate::probe::Outcome;
use crate::process::run_in;
use crate::server::Proto;
use anyhow::Result;
use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};

/// Attempts per target: enough that spreading over two or three endpoints usually shows.
pub const ATTEMPTS: usize = 4;
/// The affinity Service gets more, all from one client, to show they all land on one endpoint.
pub const STICKY_ATTEMPTS: usize = 6;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Path {
    ClusterIp,
    NodePort,
    LoadBalancer,
}

#[derive(Clone, Debug)]
pub struct Target {
    /// `namespace/name:port-name`.
    pub label: String,
    pub path: Path,
    pub from: IpAddr,
    pub proto: Proto,
    pub to: SocketAddr,
    pub attempts: usize,
    pub svc: Svc,
}

/// The clients the demo sends from.
#[derive(Clone, Debug)]
pub struct Clients {
    /// A pod on this node per family (ClusterIP traffic).
    pub pods: Vec<IpAddr>,
    /// Outside the cluster, on the node's network (NodePort and LoadBalancer traffic).
    pub external: IpAddr,
}

fn same_family(a: IpAddr, b: IpAddr) -> bool {
    a.is_ipv4() == b.is_ipv4()
}

/// Every Service port by ClusterIP (per family), NodePort (on each node address the external client
/// can reach) and load-balancer IP.
pub fn targets(c: &Cluster, clients: &Clients) -> Vec<Target> {
    let mut out = Vec::new();
    for svc in &c.services {
        let attempts = if svc.affinity {
            STICKY_ATTEMPTS
        } else {
            ATTEMPTS
        };
        for p in &svc.ports {
            let mut add = |path, from, to: SocketAddr| {
                out.push(Target {
                    label: format!("{}:{}", svc.id, p.name),
                    path,
                    from,
                    proto: p.proto,
                    to,
                    attempts,
                    svc: svc.clone(),
                })
            };
            for ip in &svc.cluster_ips {
                if let Some(pod) = clients.pods.iter().find(|c| same_family(**c, *ip)) {
                    add(Path::ClusterIp, *pod, SocketAddr::new(*ip, p.port));
                }
            }
            let ext = clients.external;
            if let Some(np) = p.node_port {
                for n in c.node_ips.iter().filter(|n| same_family(**n, ext)) {
                    add(Path::NodePort, ext, SocketAddr::new(*n, np));
                }
            }
            for lb in svc.lb_ips.iter().filter(|l| same_family(**l, ext)) {
                add(Path::LoadBalancer, ext, SocketAddr::new(*lb, p.port));
            }
        }
    }
    out
}

/// What came back for one target over all its attempts.
#[derive(Clone, Debug)]
pub struct TargetResult {
    pub target: Target,
    /// (answered by, source it saw) → count; `by` is "no answer" etc. for non-answers.
    pub seen: BTreeMap<(String, String), usize>,
    /// Why the target failed (an answer from no endpoint of its Service, no answer, broken
    /// affinity), if it did.
    pub problem: Option<String>,
    pub note: String,
}

/// The endpoint address in a server's answer (`10.0.0.1:80`, `[fd00::1]:80`).
pub fn answer_ip(by: &str) -> Option<IpAddr> {
    by.parse::<SocketAddr>().ok().map(|s| s.ip())
}

/// Sends `t.attempts` probes, flushing conntrack in the node before each so that every attempt is
/// a new connection (spreading shows; affinity must then come from kproxy, not from conntrack).
/// `relays`: the mode relays connections (userspace), so endpoints see the node, by design.
pub async fn run_target(
    bed: &TestBed,
    t: &Target,
    node_addrs: &[IpAddr],
    relays: bool,
) -> Result<TargetResult> {
    let mut outcomes = Vec::new();
    for _ in 0..t.attempts {
        run_in(&bed.node, "conntrack", &["-F"]).await?;
        outcomes.push(bed.probe(t.proto, t.from, t.to).await?);
    }
    Ok(summarize_with(t, &outcomes, node_addrs, relays))
}

pub fn summarize(t: &Target, outcomes: &[Outcome], node_addrs: &[IpAddr]) -> TargetResult {
    summarize_with(t, outcomes, node_addrs, false)
}

/// [`summarize`]; with `relays`, an endpoint that saw the node is what the mode does (a relay
/// cannot keep the client's address) and is said so, not counted as a failure.
pub fn summarize_with(
    t: &Target,
    outcomes: &[Outcome],
    node_addrs: &[IpAddr],
    relays: bool,
) -> TargetResult {
    let mut seen = BTreeMap::new();
    let mut problem = None;
    let mut backends = std::collections::BTreeSet::new();
    let mut sources = std::collections::BTreeSet::new();
    for o in outcomes {
        let key = match o {
            Outcome::Answered { by, saw_source } => {
                match answer_ip(by) {
                    Some(ip) if t.svc.endpoints.contains(&ip) => {}
                    _ => problem = Some(format!("{by} is no endpoint of {}", t.svc.id)),
                }
                backends.insert(by.clone());
                sources.insert(*saw_source);
                (by.clone(), saw_source.to_string())
            }
            other => {
                let what = match other {
                    Outcome::Refused { .. } => "refused".to_string(),
                    Outcome::NoAnswer => "no answer".to_string(),
                    o => o.to_string(),
                };
                problem.get_or_insert(format!("{what} (expected an endpoint of {})", t.svc.id));
                (what, "-".to_string())
            }
        };
        *seen.entry(key).or_insert(0) += 1;
    }
    // Outside traffic under eTP=Local must stay on this node and keep its source address.
    if t.path != Path::ClusterIp && t.svc.etp_local {
        let remote = backends
            .iter()
            .filter_map(|b| answer_ip(b))
            .find(|ip| !t.svc.local_endpoints.contains(ip));
        if let Some(ip) = remote {
            problem.get_or_insert(format!("eTP=Local but {ip} is not on this node"));
        }
        let relayed = relays && sources.iter().all(|s| node_addrs.contains(s));
        if sources.iter().any(|s| *s != t.from) && !relayed {
            problem.get_or_insert("eTP=Local but the client address was not kept".to_string());
        }
    }
    if t.svc.affinity && backends.len() > 1 {
        problem.get_or_insert("ClientIP affinity broken: several endpoints".to_string());
    }
    let note = match &problem {
        Some(p) => format!("FAILED: {p}"),
        None if relays => note(t, backends.len(), &sources, node_addrs)
            .replace("masqueraded", "relayed (the endpoint sees the node)"),
        None => note(t, backends.len(), &sources, node_addrs),
    };
    TargetResult {
        target: t.clone(),
        seen,
        problem,
        note,
    }
}

/// What the answers show: whose address the endpoint saw, and how the attempts were spread.
fn note(
    t: &Target,
    backends: usize,
    sources: &std::collections::BTreeSet<IpAddr>,
    node_addrs: &[IpAddr],
) -> String {
    let mut parts = Vec::new();
    if sources.iter().all(|s| *s == t.from) {
        if t.path != Path::ClusterIp && t.svc.etp_local {
            parts.push("client IP kept (eTP=Local)".to_string());
        } else {
            parts.push("client IP kept".to_string());
        }
    } else if sources.iter().all(|s| node_addrs.contains(s)) {
        parts.push("masqueraded".to_string());
    } else {
        parts.push("some masqueraded".to_string());
    }
    if t.svc.affinity {
        parts.push(format!(
            "sticky: {} of {} to one endpoint",
            t.attempts, t.attempts
        ));
    } else if backends > 1 {
        parts.push(format!("spread over {backends}"));
    }
    parts.join(", ")
}

/// Table rows: one per (endpoint, source seen) of each target; the target's own columns and note
/// only on its first row.
pub fn rows(results: &[TargetResult]) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    for r in results {
        let t = &r.target;
        let path = match t.path {
            Path::ClusterIp => "",
            Path::NodePort => " (NodePort)",
            Path::LoadBalancer => " (LB)",
        };
        let proto = if t.proto == Proto::Tcp { "" } else { "/udp" };
        for (i, ((by, saw), n)) in r.seen.iter().enumerate() {
            let first = i == 0;
            let cell = |s: String| if first { s } else { String::new() };
            out.push(vec![
                cell(format!("{}{path}", t.label)),
                cell(t.from.to_string()),
                cell(format!("{}{proto}", t.to)),
                format!("{by} ×{n}"),
                saw.clone(),
                cell(r.note.clone()),
            ]);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn target(path: Path, etp_local: bool, affinity: bool) -> Target {
        let eps = [ip("10.0.1.1"), ip("10.0.2.1")];
        Target {
            label: "ns/s:http".into(),
            path,
            from: ip("192.168.0.100"),
            proto: Proto::Tcp,
            to: "10.96.0.1:80".parse().unwrap(),
            attempts: 2,
            svc: Svc {
                id: "ns/s".into(),
                cluster_ips: vec![ip("10.96.0.1")],
                lb_ips: vec![],
                ports: vec![],
                etp_local,
                affinity,
                endpoints: eps.into_iter().collect(),
                local_endpoints: [eps[0]].into_iter().collect(),
            },
        }
    }

    fn answer(by: &str, saw: &str) -> Outcome {
        Outcome::Answered {
            by: by.into(),
            saw_source: ip(saw),
        }
    }

    #[test]
    fn notes_and_problems() {
        let node = [ip("192.168.0.2")];
        let spread = [
            answer("10.0.1.1:80", "192.168.0.2"),
            answer("10.0.2.1:80", "192.168.0.2"),
        ];
        let r = summarize(&target(Path::NodePort, false, false), &spread, &node);
        assert_eq!(
            (r.problem.as_deref(), r.note.as_str()),
            (None, "masqueraded, spread over 2")
        );
        assert_eq!(rows(std::slice::from_ref(&r)).len(), 2);

        let r = summarize(&target(Path::NodePort, true, false), &spread, &node);
        assert!(
            r.note.starts_with("FAILED: eTP=Local but 10.0.2.1"),
            "{}",
            r.note
        );

        let kept = [
            answer("10.0.1.1:80", "192.168.0.100"),
            answer("10.0.1.1:80", "192.168.0.100"),
        ];
        let r = summarize(&target(Path::LoadBalancer, true, true), &kept, &node);
        assert_eq!(
            r.note,
            "client IP kept (eTP=Local), sticky: 2 of 2 to one endpoint"
        );
        let r = summarize(&target(Path::ClusterIp, false, true), &spread, &node);
        assert!(r.problem.unwrap().contains("affinity broken"));

        let odd = [answer("10.9.9.9:80", "192.168.0.100"), Outcome::NoAnswer];
        let r = summarize(&target(Path::ClusterIp, false, false), &odd, &node);
        assert_eq!(r.problem.unwrap(), "10.9.9.9:80 is no endpoint of ns/s");
        assert!(
            r.seen
                .contains_key(&("no answer".to_string(), "-".to_string()))
        );
    }
}
