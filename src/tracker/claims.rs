//! Counting the VIP tuples and NodePorts candidate ports claim, so the tracker can tell when no
//! collision is possible and skip the collision pass.

use std::collections::HashMap;

use kproxy_modes::model::ServicePort;

use crate::desired::{self, collisions::Claim};

/// Adds (or removes) a candidate port's claims to the counts, tracking contested tuples.
pub(super) fn count(
    counts: &mut HashMap<Claim, u32>,
    contested: &mut usize,
    port: &ServicePort,
    add: bool,
) {
    for claim in desired::collisions::claims(port) {
        let n = counts.entry(claim.clone()).or_default();
        let before = *n;
        *n = if add {
            before + 1
        } else {
            before.saturating_sub(1)
        };
        match (before > 1, *n > 1) {
            (false, true) => *contested += 1,
            (true, false) => *contested -= 1,
            _ => {}
        }
        if *n == 0 {
            counts.remove(&claim);
        }
    }
}
