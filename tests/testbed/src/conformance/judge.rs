//! One flow against what the scenario expects, with real probes.

use super::case::{Expected, Flow};
use crate::bed::TestBed;
use crate::probe::Outcome;
use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

/// Endpoint flows repeat until every listed endpoint answered, at most this often.
pub const MAX_ATTEMPTS: usize = 40;
/// Sticky flows must see the same endpoint this many times in a row.
pub const STICKY_ATTEMPTS: usize = 10;
/// "Promptly" for REJECT.
pub const PROMPT: Duration = Duration::from_secs(1);

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    Pass,
    Fail(String),
    Skip(String),
    /// Everything held except what the mode cannot do by design, said here: a relaying mode's
    /// endpoint sees the node, never the client (`masq: false`). Its own line prefix and count.
    ModeDifference(String),
}

/// What a relaying mode cannot keep: the client's source address.
pub const RELAY_SOURCE: &str =
    "masq: false cannot hold in a relay: the endpoint saw the node, not the client";

/// `relays`: the mode relays connections (userspace), so an endpoint sees a node address;
/// a `masq: false` flow that passes otherwise is a [`Verdict::ModeDifference`], never a pass.
pub async fn judge(bed: &TestBed, flow: &Flow, node_addrs: &[IpAddr], relays: bool) -> Verdict {
    // Only an endpoint's answer passes through the relay; untouched, rejected or dropped
    // traffic is judged as the case says.
    let relayed_flow = relays && flow.masq == Some(false) && answers(flow);
    let judged = if relayed_flow {
        let mut f = flow.clone();
        f.masq = Some(true);
        judge_inner(bed, &f, node_addrs).await
    } else {
        judge_inner(bed, flow, node_addrs).await
    };
    match judged {
        Ok(Verdict::Pass) if relayed_flow => Verdict::ModeDifference(RELAY_SOURCE.into()),
        Ok(v) => v,
        Err(e) => Verdict::Fail(format!("error: {e:#}")),
    }
}

/// Whether the flow expects an endpoint to answer (only then does the source it sees matter).
fn answers(flow: &Flow) -> bool {
    matches!(flow.expected(), Ok(Expected::Endpoints { .. }))
}

/// The masquerade check: the endpoint saw a node address (`masq: true`) or the client's own.
fn masq_problem(flow: &Flow, saw: IpAddr, node_addrs: &[IpAddr]) -> Option<String> {
    match flow.masq {
        Some(true) if !node_addrs.contains(&saw) => Some(format!(
            "expected a masqueraded (node) source, endpoint saw {saw}"
        )),
        Some(false) if saw != flow.source => Some(format!(
            "expected the client's own source {}, endpoint saw {saw}",
            flow.source
        )),
        _ => None,
    }
}

async fn judge_inner(bed: &TestBed, flow: &Flow, node_addrs: &[IpAddr]) -> anyhow::Result<Verdict> {
    let proto = flow.proto()?;
    let dest = flow.dest_addr();
    let probe = || bed.probe(proto, flow.source, dest);
    let expected = flow.expected()?;
    let Expected::Endpoints { set, sticky } = expected else {
        let o = probe().await?;
        if let Outcome::Skipped(why) = o {
            return Ok(Verdict::Skip(why));
        }
        return Ok(single(flow, &expected, &o, node_addrs));
    };
    let mut seen: BTreeMap<SocketAddr, usize> = BTreeMap::new();
    let mut attempts = 0;
    while attempts < MAX_ATTEMPTS {
        attempts += 1;
        let o = probe().await?;
        let (by, saw) = match o {
            Outcome::Answered { by, saw_source } => (by, saw_source),
            Outcome::Skipped(why) => return Ok(Verdict::Skip(why)),
            other => {
                return Ok(Verdict::Fail(format!(
                    "expected endpoints {set:?}; attempt {attempts}: {other}"
                )));
            }
        };
        let Some(ep) = by.parse::<SocketAddr>().ok().filter(|a| set.contains(a)) else {
            return Ok(Verdict::Fail(format!(
                "expected endpoints {set:?}; attempt {attempts}: answered by unlisted {by}"
            )));
        };
        if let Some(p) = masq_problem(flow, saw, node_addrs) {
            return Ok(Verdict::Fail(format!("answered by {ep} but {p}")));
        }
        *seen.entry(ep).or_default() += 1;
        let done = if sticky {
            attempts >= STICKY_ATTEMPTS
        } else {
            seen.len() == set.len()
        };
        if done {
            break;
        }
    }
    let summary = || format!("{seen:?} over {attempts} attempts");
    Ok(if sticky && seen.len() != 1 {
        Verdict::Fail(format!("expected one sticky endpoint, saw {}", summary()))
    } else if !sticky && seen.len() != set.len() {
        Verdict::Fail(format!(
            "expected every one of {set:?} to answer, saw {}",
            summary()
        ))
    } else {
        Verdict::Pass
    })
}

/// REJECT, DROP, none and ACCEPT: one probe decides.
fn single(flow: &Flow, expected: &Expected, o: &Outcome, node_addrs: &[IpAddr]) -> Verdict {
    let fail = |what: &str| Verdict::Fail(format!("expected {what}, saw {o}"));
    match (expected, o) {
        (Expected::Reject, Outcome::Refused { after, .. }) if *after < PROMPT => Verdict::Pass,
        (Expected::Reject, _) => fail("REJECT (refused within 1s)"),
        (Expected::Drop, Outcome::NoAnswer) => Verdict::Pass,
        (Expected::Drop, _) => fail("DROP (no answer)"),
        (Expected::Accept, Outcome::Connected { .. }) => Verdict::Pass,
        (Expected::Accept, _) => fail("ACCEPT (a connection to the node's own listener)"),
        (Expected::None, Outcome::Answered { by, saw_source }) => {
            // Delivered locally when the destination is the node's: our bystander answers; else
            // routed onward: the sink answers.
            let local = flow.dest.is_loopback() || node_addrs.contains(&flow.dest);
            let want = if local { "node" } else { "sink" };
            if by != want {
                return fail(&format!("none (answered by \"{want}\")"));
            }
            match masq_problem(flow, *saw_source, node_addrs) {
                Some(p) => Verdict::Fail(format!("answered by {by} but {p}")),
                None => Verdict::Pass,
            }
        }
        (Expected::None, _) => fail("none (untouched: answered by the bystander or the sink)"),
        (Expected::Endpoints { .. }, _) => {
            Verdict::Fail("internal: endpoints judged singly".into())
        }
    }
}
