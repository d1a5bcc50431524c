//! Helpers of the nftables test binaries (each uses a subset): real-packet probes and the random
//! desired states of the property tests. Desired-state fixtures are `kproxy_modes::testing`'s.
#![allow(dead_code)]

pub mod wire;
pub mod world;
