// Shared by several test binaries; each uses a subset.
#![allow(dead_code)]

//! Random desired states for property tests of the nftables mode: a fixed set of Service ports
//! (`SLOTS` of them), each absent or shaped by a [`Spec`], in IPv4 or dual-stack, and steps that
//! change a few ports at a time.
//!
//! Ports never collide (each has its own port number and NodePort), as the compute guarantees,
//! but they share cluster IPs and endpoint IPs, so the reference-counted sets are exercised.
//! IP plan: that of `fixtures.rs`.

use std::collections::BTreeSet;

use kproxy_modes::model::*;
use proptest::{option, prelude::*, sample::select};

use kproxy_modes::testing::fixtures;

/// How many Service ports a world can hold.
pub const SLOTS: usize = 6;
/// Endpoint IPs to choose from (bit `j` of [`Spec::eps`]); even ones are on this node.
const ENDPOINTS: u32 = 5;

/// One Service port's shape, family-agnostic.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Spec {
    /// Which of 3 cluster IPs (shared between ports).
    pub cip: u8,
    /// Bitmask of usable endpoints.
    pub eps: u8,
    /// With no usable endpoint: some exist (terminating), so DROP rather than REJECT.
    pub unusable: bool,
    /// Moves every endpoint to another target port: same IPs, new slot values.
    pub alt_port: bool,
    pub node_port: bool,
    pub external_ip: Option<u8>,
    pub lb_ip: Option<u8>,
    /// loadBalancerSourceRanges; `Some(true)`: a range contains the node IP.
    pub ranges: Option<bool>,
    pub affinity: Option<u32>,
    pub itp_local: bool,
    pub etp_local: bool,
}

pub fn spec() -> impl Strategy<Value = Spec> {
    (
        (0u8..3, 0u8..(1 << ENDPOINTS), any::<bool>(), any::<bool>()),
        (any::<bool>(), option::of(0u8..2), option::of(0u8..2)),
        option::of(any::<bool>()),
        option::weighted(0.2, select(vec![60u32, 10800])),
        (prop::bool::weighted(0.3), prop::bool::weighted(0.3)),
    )
        .prop_map(
            |((cip, eps, unusable, alt_port), (np, ext, lb), ranges, affinity, (itp, etp))| Spec {
                cip,
                eps,
                unusable,
                alt_port,
                node_port: np,
                external_ip: ext,
                lb_ip: lb,
                ranges,
                affinity,
                itp_local: itp,
                etp_local: etp,
            },
        )
}

impl Spec {
    /// Changes field number `field` (0..11) using `v`.
    pub fn tweak(&mut self, field: u8, v: u8) {
        let pick = |n: u8| v % n;
        match field {
            0 => self.cip = pick(3),
            1 => self.eps ^= 1 << pick(ENDPOINTS as u8),
            2 => self.unusable = !self.unusable,
            3 => self.alt_port = !self.alt_port,
            4 => self.node_port = !self.node_port,
            5 => self.external_ip = self.external_ip.xor(Some(pick(2))),
            6 => self.lb_ip = self.lb_ip.xor(Some(pick(2))),
            7 => self.ranges = [None, Some(false), Some(true)][usize::from(pick(3))],
            8 => self.affinity = [None, Some(60), Some(10800)][usize::from(pick(3))],
            9 => self.itp_local = !self.itp_local,
            _ => self.etp_local = !self.etp_local,
        }
    }
}

/// The ports present (by slot) and whether IPv6 is served too.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct World {
    pub ports: Vec<Option<Spec>>,
    pub dual: bool,
}

#[derive(Clone, Debug)]
pub enum Op {
    /// Adds, changes or removes (`None`) the port in a slot.
    Set(usize, Option<Spec>),
    /// Changes one field of the port in a slot, if any (see [`Spec::tweak`]): how Services
    /// usually change, and what a whole new [`Spec`] rarely does alone.
    Tweak(usize, u8, u8),
    /// Starts or stops serving IPv6 (a full sync: the set of families changed).
    FlipDual,
}

pub fn world() -> impl Strategy<Value = World> {
    (
        prop::collection::vec(option::weighted(0.7, spec()), SLOTS),
        prop::bool::weighted(0.3),
    )
        .prop_map(|(ports, dual)| World { ports, dual })
}

/// One sync's worth of changes: one to three ops.
pub fn step() -> impl Strategy<Value = Vec<Op>> {
    let op = prop_oneof![
        6 => (0..SLOTS, option::weighted(0.75, spec())).prop_map(|(i, s)| Op::Set(i, s)),
        6 => (0..SLOTS, 0u8..11, any::<u8>()).prop_map(|(i, f, v)| Op::Tweak(i, f, v)),
        1 => Just(Op::FlipDual),
    ];
    prop::collection::vec(op, 1..=3)
}

impl World {
    pub fn apply(&mut self, ops: &[Op]) {
        for op in ops {
            match op {
                Op::Set(i, s) => self.ports[*i] = s.clone(),
                Op::Tweak(i, field, v) => {
                    if let Some(s) = &mut self.ports[*i] {
                        s.tweak(*field, *v);
                    }
                }
                Op::FlipDual => self.dual = !self.dual,
            }
        }
    }

    pub fn families(&self) -> Vec<IpFamily> {
        if self.dual {
            vec![IpFamily::V4, IpFamily::V6]
        } else {
            vec![IpFamily::V4]
        }
    }

    pub fn desired(&self) -> DesiredState {
        let families = self.families().into_iter().map(|f| {
            let ports = self.ports.iter().enumerate();
            let ports = ports.filter_map(|(i, s)| s.as_ref().map(|s| build(i, s, f)));
            (f, ports.collect())
        });
        fixtures::state(families.collect())
    }
}

/// The ports that differ between two desired states, in any family: what the tracker's
/// ChangeSet would name.
pub fn changed(old: &DesiredState, new: &DesiredState) -> BTreeSet<ServicePortName> {
    let mut out = BTreeSet::new();
    for fam in [IpFamily::V4, IpFamily::V6] {
        let (a, b) = (old.family(fam), new.family(fam));
        let ports = |s: Option<&FamilyState>| s.map(|f| f.services.clone()).unwrap_or_default();
        let (a, b) = (ports(a), ports(b));
        for name in a.keys().chain(b.keys()) {
            if a.get(name) != b.get(name) {
                out.insert(name.clone());
            }
        }
    }
    out
}

fn addr(f: IpFamily, v4: String, v6: String) -> String {
    match f {
        IpFamily::V4 => v4,
        IpFamily::V6 => v6,
    }
}

/// The Service port in slot `i` with shape `s`, in family `f`.
pub fn build(i: usize, s: &Spec, f: IpFamily) -> ServicePort {
    let proto = [Protocol::Tcp, Protocol::Udp, Protocol::Sctp][i % 3];
    let target = if s.alt_port { 9000 } else { 8000 } + i as u16;
    let eps = (0..ENDPOINTS)
        .filter(|j| s.eps & (1 << j) != 0)
        .map(|j| {
            let a = addr(
                f,
                format!("10.180.0.{}", j + 1),
                format!("[fd00:10:180::{}]", j + 1),
            );
            fixtures::ep(&format!("{a}:{target}"), j % 2 == 0)
        })
        .collect::<Vec<_>>();
    let cip = addr(
        f,
        format!("172.30.0.{}", 10 + s.cip),
        format!("fd00:172:30::{}", 10 + s.cip),
    );
    let (ns, svc, port) = (
        format!("ns{}", i % 2),
        format!("svc{}", i / 2),
        format!("p{i}"),
    );
    let mut sp = fixtures::port(&ns, &svc, &port, proto, &cip, 80 + i as u16, eps);
    sp.endpoints.has_any |= s.unusable;
    sp.node_port = s.node_port.then_some(30000 + i as u16);
    if let Some(k) = s.external_ip {
        let ip = addr(
            f,
            format!("192.168.99.{}", 11 + k),
            format!("2001:db8:99::{}", 11 + k),
        );
        sp.external_ips = vec![fixtures::ip(&ip)];
    }
    if let Some(k) = s.lb_ip {
        let ip = addr(
            f,
            format!("1.2.3.{}", 4 + k),
            format!("2001:db8:1b::{}", 4 + k),
        );
        sp.load_balancer_ips = vec![fixtures::ip(&ip)];
    }
    if let Some(node_allowed) = s.ranges {
        let outside = addr(f, "203.0.113.0/25".into(), "2001:db8:ff::/64".into());
        let node = addr(f, "192.168.0.0/24".into(), "2001:db8::/64".into());
        let mut ranges = vec![outside];
        if node_allowed {
            ranges.push(node);
        }
        let ranges: Vec<&str> = ranges.iter().map(String::as_str).collect();
        sp.lb_allowed_sources = fixtures::lb_sources(&sp, &ranges);
    }
    sp.session_affinity = s.affinity.map(|t| SessionAffinity { timeout_seconds: t });
    if s.itp_local {
        sp = fixtures::local_policy(sp, true);
    }
    if s.etp_local {
        sp = fixtures::local_policy(sp, false);
    }
    fixtures::paths(&mut sp);
    sp
}
