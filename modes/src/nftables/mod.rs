//! The nftables mode: upstream kube-proxy's nftables data plane, with endpoint selection through
//! sharded slot maps instead of per-endpoint chains and per-Service anonymous sets, so that a
//! full sync scales linearly. See docs/modes/nftables.md.

pub mod names;
pub mod render;

use std::net::IpAddr;

use kproxy_dataplane::{
    conntrack::ConntrackNetlink,
    nft::{Exec, Family, NftClient},
};

use crate::{
    Mode, ModeError, SyncStats,
    conntrack::ConntrackHygiene,
    model::{ChangeSet, DesiredState, IpFamily, NodePortAddresses},
};

pub use render::{LocalAddrs, Rendered, render, state::Applied};

const MODE: &str = "nftables";

/// Reads the node's local addresses (all families); called only when some family restricts
/// NodePorts to CIDRs.
pub type AddrSource = Box<dyn Fn() -> Result<Vec<IpAddr>, String> + Send>;

/// The nftables [`Mode`]. Owns tables `ip kproxy` and `ip6 kproxy` and nothing else.
pub struct NftablesMode<C: NftClient = Exec> {
    client: C,
    addrs: AddrSource,
    /// What the last successful sync applied; `None` forces the next sync to be full.
    applied: Option<Applied>,
    /// Deletes stale UDP flows after each successful sync; `None` leaves conntrack alone.
    conntrack: Option<ConntrackHygiene>,
}

impl NftablesMode<Exec> {
    /// Runs `exec`'s nft, and reads local addresses and cleans UDP conntrack entries in the
    /// same network namespace.
    pub fn with_exec(exec: Exec) -> Self {
        let netns = exec.netns().clone();
        let conntrack = ConntrackNetlink::new().with_netns(netns.clone());
        let addrs: AddrSource = Box::new(move || {
            kproxy_dataplane::addrs::local_addresses_in(&netns).map_err(|e| e.to_string())
        });
        Self::new(exec, addrs).with_conntrack(ConntrackHygiene::new(conntrack))
    }
}

impl<C: NftClient> NftablesMode<C> {
    pub fn new(client: C, addrs: AddrSource) -> Self {
        Self {
            client,
            addrs,
            applied: None,
            conntrack: None,
        }
    }

    /// Cleans stale UDP conntrack entries after each successful sync (see `crate::conntrack`).
    pub fn with_conntrack(mut self, hygiene: ConntrackHygiene) -> Self {
        self.conntrack = Some(hygiene);
        self
    }

    pub fn conntrack(&self) -> Option<&ConntrackHygiene> {
        self.conntrack.as_ref()
    }

    /// True when the next sync will replace the tables whatever the change set says.
    pub fn needs_full_sync(&self) -> bool {
        self.applied.is_none()
    }

    /// What the last successful sync applied (`None` before it, or after a failure).
    pub fn applied(&self) -> Option<&Applied> {
        self.applied.as_ref()
    }

    pub fn client(&self) -> &C {
        &self.client
    }

    /// After a successful apply only: the new rules must be in place before stale flows go, or
    /// the next packet would recreate the same flow.
    fn clean_conntrack(&mut self, desired: &DesiredState, changes: &ChangeSet, full: bool) {
        let Some(hygiene) = &mut self.conntrack else {
            return;
        };
        // A full render (first sync, or after a failure) may cover changes the caller's change
        // set no longer names, so every port is compared then.
        if full && !changes.full {
            hygiene.after_sync(desired, &ChangeSet::full());
        } else {
            hygiene.after_sync(desired, changes);
        }
    }

    fn local_addrs(&self, desired: &DesiredState) -> Result<LocalAddrs, ModeError> {
        let mut out = LocalAddrs::new();
        let needed = desired
            .families
            .iter()
            .any(|f| matches!(f.node.node_port_addresses, NodePortAddresses::Cidrs(_)));
        if !needed {
            return Ok(out);
        }
        let addrs = (self.addrs)().map_err(|message| ModeError::Apply {
            mode: MODE,
            message: format!("reading local addresses: {message}"),
        })?;
        for ip in addrs {
            out.entry(IpFamily::of(&ip)).or_default().push(ip);
        }
        Ok(out)
    }
}

impl<C: NftClient> Mode for NftablesMode<C> {
    fn name(&self) -> &'static str {
        MODE
    }

    fn sync(
        &mut self,
        desired: &DesiredState,
        changes: &ChangeSet,
    ) -> Result<SyncStats, ModeError> {
        let local = match self.local_addrs(desired) {
            Ok(l) => l,
            Err(e) => {
                self.applied = None;
                return Err(e);
            }
        };
        // Taken, not borrowed: on failure the cache is gone anyway (the next sync is full).
        let rendered = render::render_owned(desired, changes, self.applied.take(), &local);
        if rendered.tx.is_empty() {
            self.applied = Some(rendered.applied);
            self.clean_conntrack(desired, changes, false);
            return Ok(stats(desired, false));
        }
        match self.client.run(&rendered.tx) {
            Ok(()) => {
                self.applied = Some(rendered.applied);
                self.clean_conntrack(desired, changes, rendered.full);
                Ok(stats(desired, rendered.full))
            }
            Err(e) => {
                // The kernel kept its previous state, which our cache may no longer describe
                // exactly (e.g. after a failed partial sync): start over with a full one.
                self.applied = None;
                Err(ModeError::Apply {
                    mode: MODE,
                    message: e.to_string(),
                })
            }
        }
    }

    fn cleanup(&mut self) -> Result<(), ModeError> {
        self.applied = None;
        let mut tx = kproxy_dataplane::nft::NftTransaction::new();
        // `add` first so `delete` cannot fail on a missing table: only our tables are named.
        for family in [Family::Ip, Family::Ip6] {
            tx.add_table(family, names::TABLE, None);
            tx.delete_table(family, names::TABLE);
        }
        self.client.run(&tx).map_err(|e| ModeError::Apply {
            mode: MODE,
            message: e.to_string(),
        })
    }

    fn dump(&self) -> Result<String, ModeError> {
        let mut out = String::new();
        for family in [Family::Ip, Family::Ip6] {
            match self.client.list_table(family, names::TABLE) {
                Ok(text) => out.push_str(&text),
                Err(e) if e.is_not_found() => {}
                Err(e) => {
                    return Err(ModeError::Apply {
                        mode: MODE,
                        message: e.to_string(),
                    });
                }
            }
        }
        Ok(out)
    }
}

fn stats(desired: &DesiredState, full: bool) -> SyncStats {
    let ports = desired.families.iter().flat_map(|f| f.services.values());
    SyncStats {
        full,
        service_ports: ports.clone().count(),
        endpoints: ports
            .map(|sp| sp.endpoints.cluster.len() + sp.endpoints.local.len())
            .sum(),
    }
}
