//! The userspace mode: the kernel captures every Service destination (table
//! `kproxy-userspace`, see `capture`) and DNATs it to a fixed set of listeners (TCP and UDP, one
//! each per family); a relay on the agent's runtime picks an endpoint per connection or flow,
//! retries another when one refuses, and moves the bytes with `splice(2)`. See
//! docs/modes/userspace.md.

pub mod capture;
mod drift;
pub mod routes;
mod stats;
pub mod tcp;
pub mod udp;
mod view;

use std::{
    collections::{BTreeMap, BTreeSet},
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    sync::{Arc, Mutex},
};

use kproxy_dataplane::{
    netns::Netns,
    nft::{Exec, NftClient, NftTransaction},
};
use tokio::task::JoinHandle;

use crate::{
    Counter, Mode, ModeContext, ModeError, SyncError, SyncStats,
    model::{ChangeSet, DesiredState, IpFamily, Protocol, ServicePortName},
    registry::ModeSettings,
};

use self::{capture::Listeners, routes::Routes, tcp::Relay, udp::UdpRelay};

pub use stats::Failure;

const MODE: &str = "userspace";

pub fn build(settings: &ModeSettings) -> Box<dyn Mode> {
    let netns = Netns::from_name(settings.netns.as_deref());
    let exec = Exec::new().with_netns(netns.clone());
    Box::new(UserspaceMode::new(exec, netns))
}

/// One family's listeners, bound at start.
struct FamilyListeners {
    tcp: u16,
    udp: Arc<UdpRelay>,
}

pub struct UserspaceMode<C: NftClient = Exec> {
    client: C,
    relay: Arc<Relay>,
    listeners: BTreeMap<IpFamily, FamilyListeners>,
    tasks: Vec<JoinHandle<()>>,
    applied: Option<capture::Capture>,
    /// SCTP ports already logged (each is logged and counted once while it exists).
    sctp: Mutex<BTreeSet<ServicePortName>>,
}

impl<C: NftClient> UserspaceMode<C> {
    pub fn new(client: C, netns: Netns) -> Self {
        Self {
            client,
            relay: Arc::new(Relay {
                routes: Default::default(),
                affinity: Default::default(),
                stats: Default::default(),
                netns,
            }),
            listeners: BTreeMap::new(),
            tasks: Vec::new(),
            applied: None,
            sctp: Mutex::default(),
        }
    }

    /// The relay's shared state (routes, counters): for tests.
    pub fn relay(&self) -> &Arc<Relay> {
        &self.relay
    }

    fn bind(&mut self, ctx: &ModeContext, family: IpFamily) -> std::io::Result<()> {
        let any: IpAddr = match family {
            IpFamily::V4 => Ipv4Addr::UNSPECIFIED.into(),
            IpFamily::V6 => Ipv6Addr::UNSPECIFIED.into(),
        };
        let _rt = ctx.runtime.enter();
        let tcp = tcp::listen(&self.relay.netns, SocketAddr::new(any, 0))?;
        let tcp_port = tcp.local_addr()?.port();
        let udp = Arc::new(UdpRelay::bind(self.relay.clone(), SocketAddr::new(any, 0))?);
        self.tasks
            .push(ctx.runtime.spawn(tcp::serve(tcp, self.relay.clone())));
        self.tasks.push(ctx.runtime.spawn(udp::serve(udp.clone())));
        self.listeners
            .insert(family, FamilyListeners { tcp: tcp_port, udp });
        Ok(())
    }

    /// Where each family's capture DNATs to: its first node IP (an address every interface's
    /// traffic can be DNATed to, unlike REDIRECT's "address of the incoming interface", which
    /// a pod's veth without an address does not have).
    fn targets(&self, desired: &DesiredState) -> BTreeMap<IpFamily, Listeners> {
        let mut out = BTreeMap::new();
        for fam in &desired.families {
            let addr = fam
                .node
                .node_ips
                .iter()
                .find(|ip| !ip.is_loopback())
                .copied();
            match (addr, self.listeners.get(&fam.family)) {
                (Some(addr), Some(l)) => {
                    l.udp.set_local_ip(addr);
                    out.insert(
                        fam.family,
                        Listeners {
                            addr,
                            tcp: l.tcp,
                            udp: l.udp.port(),
                        },
                    );
                }
                _ => {
                    tracing::error!(family = %fam.family, "userspace mode: no node IP or listener in this family; its Services are not captured")
                }
            }
        }
        out
    }

    /// Logs and counts SCTP ports not seen before: the relay does not carry SCTP.
    fn note_sctp(&self, desired: &DesiredState) {
        let now: BTreeSet<ServicePortName> = desired
            .families
            .iter()
            .flat_map(|f| f.services.keys())
            .filter(|n| n.protocol == Protocol::Sctp)
            .cloned()
            .collect();
        let mut seen = self.sctp.lock().unwrap_or_else(|e| e.into_inner());
        for name in now.difference(&seen) {
            tracing::warn!(service = %name, "userspace mode does not relay SCTP; Service port skipped");
            stats::Stats::inc(&self.relay.stats.sctp_skipped);
        }
        *seen = now;
    }
}

impl<C: NftClient + Send> Mode for UserspaceMode<C> {
    fn name(&self) -> &'static str {
        MODE
    }

    /// Binds the listeners (IPv4, and IPv6 where the node has it) and starts the relay's tasks.
    fn start(&mut self, ctx: &ModeContext) -> Result<(), ModeError> {
        match kproxy_dataplane::relay::raise_fd_limit() {
            Ok(n) => tracing::info!(open_files = n, "userspace mode: open-file limit raised"),
            Err(e) => {
                tracing::warn!(error = %e, "userspace mode: cannot raise the open-file limit")
            }
        }
        self.bind(ctx, IpFamily::V4)
            .map_err(|e| ModeError::kernel(MODE, "binding the IPv4 relay listeners", e))?;
        if let Err(e) = self.bind(ctx, IpFamily::V6) {
            tracing::warn!(error = %e, "userspace mode: no IPv6 listeners; IPv6 Services are not relayed");
        }
        Ok(())
    }

    fn sync(
        &mut self,
        desired: &DesiredState,
        changes: &ChangeSet,
    ) -> Result<SyncStats, SyncError> {
        if self.listeners.is_empty() {
            let error = ModeError::Unavailable {
                mode: MODE,
                reason: "the relay was not started".into(),
            };
            return Err(SyncError { full: true, error });
        }
        self.note_sctp(desired);
        let next = capture::render(desired, &self.targets(desired));
        let full = changes.full
            || !self
                .applied
                .as_ref()
                .is_some_and(|a| capture::compatible(a, &next));
        let tx = match (&self.applied, full) {
            (Some(old), false) => capture::partial_tx(old, &next),
            _ => capture::full_tx(&next),
        };
        // The relay learns new destinations before the kernel sends it their traffic.
        let routes = Routes::build(desired);
        for l in self.listeners.values() {
            l.udp.prune(&routes);
        }
        self.relay.routes.store(routes);
        self.applied = None;
        if !tx.is_empty() {
            self.client.run(&tx).map_err(|e| SyncError {
                full,
                error: ModeError::kernel(MODE, "applying the transaction", e),
            })?;
        }
        self.applied = Some(next);
        Ok(SyncStats::of(desired, full))
    }

    fn check_drift(&mut self) -> Result<Vec<crate::Drift>, ModeError> {
        let Some(applied) = &self.applied else {
            return Ok(Vec::new());
        };
        let found = drift::check(&self.relay.netns, applied)?;
        if !found.is_empty() {
            self.applied = None;
        }
        Ok(found)
    }

    fn shutdown(&mut self) {
        for t in self.tasks.drain(..) {
            t.abort();
        }
        self.listeners.clear();
    }

    fn cleanup(&mut self) -> Result<Vec<String>, ModeError> {
        self.applied = None;
        let mut removed = Vec::new();
        let mut tx = NftTransaction::new();
        for f in [IpFamily::V4, IpFamily::V6] {
            let family = capture::nft_family(f);
            match self.client.list_table(family, capture::TABLE) {
                Ok(_) => removed.push(format!("nftables table {family} {}", capture::TABLE)),
                Err(e) if e.is_not_found() => {}
                Err(e) => return Err(ModeError::kernel(MODE, "listing our tables", e)),
            }
            // `add` first so `delete` cannot fail on a missing table: only our tables are named.
            tx.add_table(family, capture::TABLE, None);
            tx.delete_table(family, capture::TABLE);
        }
        self.client
            .run(&tx)
            .map_err(|e| ModeError::kernel(MODE, "deleting our tables", e))?;
        Ok(removed)
    }

    fn kernel_view(&self) -> Result<crate::view::KernelView, ModeError> {
        let routes = self.relay.routes.load();
        let mut v = view::read(&self.client, &routes)?;
        for (f, l) in &self.listeners {
            v.summary.push(format!(
                "{f}: relay listeners tcp :{}, udp :{}",
                l.tcp,
                l.udp.port()
            ));
        }
        Ok(v)
    }

    fn counters(&self) -> Vec<Counter> {
        self.relay.stats.counters()
    }
}
