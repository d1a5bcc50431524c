//! Endpoint slots: how a Service port's chain picks an endpoint without per-endpoint chains or
//! per-Service anonymous sets.
//!
//! Each Service port gets a stable id. Its `Cluster` endpoints sit at keys `id<<16 | i`, its
//! `Local` endpoints at `id<<16 | 0x8000 | i`, in the map `endpoint-slots-<id / SHARD_SIZE>`.
//! A chain picks one with `dnat ip to numgen random mod N offset (id<<16) map @endpoint-slots-K`.
//!
//! Why shards, not one map: the kernel validates every element added to a map against every
//! rule bound to that map, and validates every element of a map when a new rule binds to it.
//! With one map bound by 5k rules, loading 5k x 50 took 19 s and adding one Service 66 ms
//! (measured, nft 1.0.6 / kernel 6.18). With 64 Service ports per map both costs stay small,
//! while the number of maps stays low (nft dumps every set and chain on each run).

/// Service ports per slot map.
pub const SHARD_SIZE: u32 = 64;
/// Ids fit 16 bits: the key is a 32-bit integer.
pub const MAX_ID: u32 = 0xffff;
/// Endpoints per set: the low 15 bits of the key.
pub const MAX_ENDPOINTS: usize = 0x8000;
const LOCAL_BIT: u32 = 0x8000;

pub fn shard(id: u32) -> u32 {
    id / SHARD_SIZE
}

/// The first key of a port's `Cluster` (local = false) or `Local` set.
pub fn offset(id: u32, local: bool) -> u32 {
    (id << 16) | if local { LOCAL_BIT } else { 0 }
}

/// Picks the smallest id not in `used`; `None` when all 65536 are taken.
pub fn allocate(used: &mut std::collections::BTreeSet<u32>) -> Option<u32> {
    let mut candidate = 0;
    for &id in used.iter() {
        if id != candidate {
            break;
        }
        candidate += 1;
    }
    if candidate > MAX_ID {
        return None;
    }
    used.insert(candidate);
    Some(candidate)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    #[test]
    fn allocation_fills_holes_and_offsets_do_not_overlap() {
        let mut used: BTreeSet<u32> = [0, 1, 3].into();
        assert_eq!(allocate(&mut used), Some(2));
        assert_eq!(allocate(&mut used), Some(4));
        assert_eq!(offset(2, false), 0x2_0000);
        assert_eq!(offset(2, true), 0x2_8000);
        assert!(
            offset(MAX_ID, true)
                .checked_add(MAX_ENDPOINTS as u32 - 1)
                .is_some()
        );
        assert_eq!(shard(63), 0);
        assert_eq!(shard(64), 1);
        let mut full: BTreeSet<u32> = (0..=MAX_ID).collect();
        assert_eq!(allocate(&mut full), None);
    }
}
