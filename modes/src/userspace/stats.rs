//! The relay's counters, for `/metrics` through [`crate::Mode::counters`]. Updated with relaxed
//! atomics from the relay's tasks; read by the agent at scrape time.

use std::sync::atomic::{AtomicU64, Ordering};

use crate::Counter;

/// Why a TCP connection attempt to an endpoint, or a whole client connection, failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Failure {
    /// The endpoint refused (RST / ICMP unreachable).
    Refused,
    /// The endpoint did not answer within the connect timeout.
    Timeout,
    /// Another error on connect (no route, ...).
    Error,
    /// The captured destination was in no route (a race with a sync, or a stray connection
    /// to the listener itself).
    NoRoute,
    /// Every endpoint tried failed: the client's connection was reset.
    Exhausted,
    /// The original destination could not be read back.
    NoOriginalDst,
}

const FAILURES: [(Failure, &str, &str); 6] = [
    (
        Failure::Refused,
        "userspace_connect_refused",
        "Endpoint connects refused.",
    ),
    (
        Failure::Timeout,
        "userspace_connect_timeouts",
        "Endpoint connects that timed out.",
    ),
    (
        Failure::Error,
        "userspace_connect_errors",
        "Endpoint connects that failed otherwise.",
    ),
    (
        Failure::NoRoute,
        "userspace_no_route",
        "Captured connections or flows to no known destination.",
    ),
    (
        Failure::Exhausted,
        "userspace_exhausted",
        "Client connections reset: every endpoint tried failed.",
    ),
    (
        Failure::NoOriginalDst,
        "userspace_no_original_dst",
        "Connections or flows whose original destination was unknown.",
    ),
];

#[derive(Default)]
pub struct Stats {
    pub connections: AtomicU64,
    pub retries: AtomicU64,
    pub bytes: AtomicU64,
    pub active_tcp: AtomicU64,
    pub udp_flows: AtomicU64,
    pub active_udp: AtomicU64,
    pub udp_flow_limit: AtomicU64,
    pub udp_datagrams: AtomicU64,
    pub sctp_skipped: AtomicU64,
    failures: [AtomicU64; 6],
}

fn add(c: &AtomicU64, n: u64) {
    c.fetch_add(n, Ordering::Relaxed);
}

impl Stats {
    pub fn inc(c: &AtomicU64) {
        add(c, 1);
    }

    pub fn dec(c: &AtomicU64) {
        c.fetch_sub(1, Ordering::Relaxed);
    }

    pub fn failed(&self, f: Failure) {
        let i = FAILURES
            .iter()
            .position(|(x, _, _)| *x == f)
            .expect("listed");
        add(&self.failures[i], 1);
    }

    pub fn failures(&self, f: Failure) -> u64 {
        let i = FAILURES
            .iter()
            .position(|(x, _, _)| *x == f)
            .expect("listed");
        self.failures[i].load(Ordering::Relaxed)
    }

    pub fn counters(&self) -> Vec<Counter> {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let mut out = vec![
            (
                "userspace_connections",
                "TCP client connections accepted by the relay.",
                get(&self.connections),
            ),
            (
                "userspace_retries",
                "Endpoint connects tried after a first one failed.",
                get(&self.retries),
            ),
            (
                "userspace_bytes",
                "Bytes relayed (both directions, TCP and UDP).",
                get(&self.bytes),
            ),
            (
                "userspace_active_connections",
                "TCP connections being relayed now (a gauge).",
                get(&self.active_tcp),
            ),
            (
                "userspace_udp_flows",
                "UDP client flows opened.",
                get(&self.udp_flows),
            ),
            (
                "userspace_active_udp_flows",
                "UDP client flows open now (a gauge).",
                get(&self.active_udp),
            ),
            (
                "userspace_udp_flow_limit",
                "UDP datagrams dropped because the flow table was full.",
                get(&self.udp_flow_limit),
            ),
            (
                "userspace_sctp_skipped",
                "SCTP Service ports seen and not relayed (syncs x ports).",
                get(&self.sctp_skipped),
            ),
        ];
        out.extend(
            FAILURES
                .iter()
                .zip(&self.failures)
                .map(|((_, n, h), c)| (*n, *h, get(c))),
        );
        out.into_iter()
            .map(|(name, help, value)| Counter { name, help, value })
            .collect()
    }
}
