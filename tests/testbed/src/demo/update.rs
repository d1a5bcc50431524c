//! Step 4: a change to the cluster while kproxy runs. The demo scales a Service down to its first
//! endpoint by rewriting its EndpointSlice file, then probes until the removed endpoints stop
//! answering.

use super::cluster::read_objects;
use super::traffic::answer_ip;
use crate::bed::TestBed;
use crate::conformance::agent::write_atomically;
use crate::process::run_in;
use crate::server::Proto;
use anyhow::{Context, Result, anyhow, bail};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::time::Duration;

pub const UPDATE_DEADLINE: Duration = Duration::from_secs(15);
/// Consecutive probes that must all avoid the removed endpoints before the update counts as seen:
/// were the change not applied yet, twelve in a row from the kept one of two endpoints would
/// happen by chance once in 4096 runs.
pub const CONFIRM: usize = 12;

/// Removes every endpoint but the first from `svc_id`'s (`namespace/name`) EndpointSlice in `dir`;
/// returns the addresses removed.
pub fn scale_to_one(dir: &Path, svc_id: &str) -> Result<Vec<IpAddr>> {
    let (ns, name) = svc_id
        .split_once('/')
        .ok_or_else(|| anyhow!("{svc_id}: want namespace/name"))?;
    let files: BTreeSet<String> = read_objects(dir)?.into_iter().map(|(f, _)| f).collect();
    for f in files {
        let path = dir.join(&f);
        let mut docs: Vec<Value> = serde_saphyr::from_multiple(&std::fs::read_to_string(&path)?)?;
        let mut removed = Vec::new();
        for d in docs.iter_mut() {
            let m = &d["metadata"];
            let ours = d["kind"] == "EndpointSlice"
                && m["namespace"].as_str().unwrap_or("default") == ns
                && m["labels"]["kubernetes.io/service-name"] == name;
            if let (true, Some(eps)) = (ours, d["endpoints"].as_array_mut()) {
                for ep in eps.drain(1.min(eps.len())..) {
                    removed.extend(
                        ep["addresses"]
                            .as_array()
                            .into_iter()
                            .flatten()
                            .filter_map(|a| a.as_str().and_then(|s| s.parse::<IpAddr>().ok())),
                    );
                }
            }
        }
        if !removed.is_empty() {
            let text = serde_saphyr::to_string_multiple(&docs)?;
            write_atomically(&path, &text).with_context(|| format!("rewriting {f}"))?;
            return Ok(removed);
        }
    }
    bail!(
        "no EndpointSlice of {svc_id} with more than one endpoint in {}",
        dir.display()
    )
}

/// Counts of who answered `n` fresh connections (conntrack flushed before each).
pub async fn sample(
    bed: &TestBed,
    proto: Proto,
    from: IpAddr,
    to: SocketAddr,
    n: usize,
) -> Result<BTreeMap<String, usize>> {
    let mut seen = BTreeMap::new();
    for _ in 0..n {
        run_in(&bed.node, "conntrack", &["-F"]).await?;
        let o = bed.probe(proto, from, to).await?;
        let by = match o {
            crate::probe::Outcome::Answered { by, .. } => by,
            other => other.to_string(),
        };
        *seen.entry(by).or_insert(0) += 1;
    }
    Ok(seen)
}

/// Probes until `CONFIRM` answers in a row came from none of `removed`; returns those answers and
/// how long it took. Fails after [`UPDATE_DEADLINE`].
pub async fn wait_for_update(
    bed: &TestBed,
    proto: Proto,
    from: IpAddr,
    to: SocketAddr,
    removed: &[IpAddr],
) -> Result<(BTreeMap<String, usize>, Duration)> {
    let start = tokio::time::Instant::now();
    let mut streak = BTreeMap::new();
    let mut in_a_row = 0;
    let (mut probes, mut stale_answers, mut last_stale) = (0, 0, String::new());
    loop {
        let got = sample(bed, proto, from, to, 1).await?;
        let by = got.keys().next().cloned().unwrap_or_default();
        probes += 1;
        // A non-answer (e.g. while rules are replaced) does not count as the update either.
        let stale = answer_ip(&by).is_none_or(|ip| removed.contains(&ip));
        if stale {
            streak.clear();
            in_a_row = 0;
            stale_answers += 1;
            last_stale = by;
        } else {
            *streak.entry(by.clone()).or_insert(0) += 1;
            in_a_row += 1;
            if in_a_row == CONFIRM {
                return Ok((streak, start.elapsed()));
            }
        }
        if start.elapsed() > UPDATE_DEADLINE {
            bail!(
                "{UPDATE_DEADLINE:?} after the change, {stale_answers} of {probes} probes still \
                 went to removed endpoints or got no answer (last: {last_stale})"
            );
        }
    }
}

/// `10.0.0.1:80 ×3, 10.0.0.2:80 ×1`.
pub fn describe(seen: &BTreeMap<String, usize>) -> String {
    let v: Vec<String> = seen.iter().map(|(k, n)| format!("{k} ×{n}")).collect();
    v.join(", ")
}
