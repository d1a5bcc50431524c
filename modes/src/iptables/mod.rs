//! The iptables mode: upstream kube-proxy's iptables data plane (its chain layout, with a
//! `KPROXY-` prefix), written with `iptables-restore --noflush` per family, on whichever iptables
//! backend (nft or legacy) the node already uses. See docs/modes/iptables.md.

pub mod apply;
pub mod drift;
pub mod existing;
pub mod names;
pub mod render;
pub mod rule_counts;
pub mod view;

use std::sync::OnceLock;

use kproxy_dataplane::{
    conntrack::ConntrackNetlink,
    iptables::{Backend, Family, Iptables},
    netns::Netns,
};
use tokio::time::{Duration, Instant};

use crate::{
    Counter, Drift, Gauge, Mode, ModeContext, ModeError, SyncError, SyncStats,
    conntrack::ConntrackHygiene,
    model::{ChangeSet, DesiredState, IpFamily},
    registry::{IptablesSettings, ModeSettings},
    view::KernelView,
};

pub use render::{Applied, Rendered, render};

const MODE: &str = "iptables";

/// As upstream's iptables proxier: a full sync at least this often repairs whatever the cheap
/// drift checks cannot see (a rule edited inside one of our chains).
const FULL_SYNC_PERIOD: Duration = Duration::from_secs(3600);

/// The registry's constructor: nothing runs until the first call that needs the kernel.
pub fn build(settings: &ModeSettings) -> Box<dyn Mode> {
    Box::new(IptablesMode::new(
        settings.netns.clone(),
        settings.iptables.clone(),
    ))
}

/// The iptables [`Mode`]. Owns the `KPROXY-*` chains of the nat and filter tables of both
/// families, and its jump rules in the built-in chains; nothing else.
pub struct IptablesMode {
    netns: Option<String>,
    settings: IptablesSettings,
    /// The backend in use: detected once, when first needed.
    backend: OnceLock<Backend>,
    /// What the last successful sync applied; `None` makes the next sync full.
    applied: Option<Applied>,
    last_full: Option<Instant>,
    conntrack: Option<ConntrackHygiene>,
    restore_failures: u64,
    rule_counts: rule_counts::RuleCounts,
    quarantine: crate::quarantine::Quarantine,
    /// Whether KPROXY-FORWARD drops INVALID packets: read from the node at start.
    drop_invalid: bool,
}

impl IptablesMode {
    pub fn new(netns: Option<String>, settings: IptablesSettings) -> Self {
        let conntrack = ConntrackNetlink::new().with_netns(Netns::from_name(netns.as_deref()));
        Self {
            netns,
            settings,
            backend: OnceLock::new(),
            applied: None,
            last_full: None,
            conntrack: Some(ConntrackHygiene::new(conntrack)),
            restore_failures: 0,
            rule_counts: Default::default(),
            quarantine: Default::default(),
            drop_invalid: true,
        }
    }

    /// The backend this mode writes: whichever already holds more rules (see [`apply::detect`]).
    pub fn backend(&self) -> Backend {
        *self.backend.get_or_init(|| match self.settings.backend {
            Some(forced) => forced,
            None => apply::detect(self.netns.as_deref()),
        })
    }

    /// The tools of one family on our backend.
    pub fn tools(&self, family: IpFamily) -> Iptables {
        apply::tools(self.backend(), ipt_family(family), self.netns.as_deref())
    }

    /// True when the next sync will rewrite everything whatever the change set says.
    pub fn needs_full_sync(&self) -> bool {
        self.applied.is_none()
    }

    fn sync_inner(
        &mut self,
        desired: &DesiredState,
        changes: &ChangeSet,
    ) -> Result<bool, (bool, ModeError)> {
        if self
            .last_full
            .is_some_and(|t| t.elapsed() >= FULL_SYNC_PERIOD)
        {
            self.applied = None;
        }
        self.quarantine.release_changed(changes);
        let filtered = self.quarantine.filter(desired);
        let desired = filtered.as_ref().unwrap_or(desired);
        let options = render::Options {
            localhost_node_ports: self.settings.localhost_node_ports,
            drop_invalid: self.drop_invalid,
        };
        let mut rendered = render(desired, changes, self.applied.take(), options);
        let full = rendered.full;
        if let Err(error) = self.write(desired, &rendered) {
            // A refused full sync is retried at once without the ports the tool refuses, if
            // any (each table's commit is all or nothing: nothing of it was applied).
            let mut quarantine = std::mem::take(&mut self.quarantine);
            let check = |subset: &DesiredState| self.accepted(subset, options);
            let refused = full && !quarantine.isolate(desired, check).is_empty();
            self.quarantine = quarantine;
            if !refused {
                return Err((full, error));
            }
            let filtered = self.quarantine.filter(desired);
            let desired = filtered.as_ref().unwrap_or(desired);
            rendered = render(desired, &ChangeSet::full(), None, options);
            self.write(desired, &rendered).map_err(|e| (full, e))?;
        }
        self.rule_counts.record(&rendered);
        self.applied = Some(rendered.applied);
        Ok(full)
    }

    /// Applies a rendered sync, family by family.
    fn write(&self, desired: &DesiredState, rendered: &Rendered) -> Result<(), ModeError> {
        let netns = self.netns.as_deref();
        if rendered.full {
            apply::route_localnet(desired, self.settings.localhost_node_ports, netns);
        }
        for w in &rendered.families {
            apply::write(&self.tools(w.family), w, rendered.full, netns)?;
        }
        if rendered.full {
            // Families no longer served keep none of our chains.
            for family in [IpFamily::V4, IpFamily::V6] {
                if desired.family(family).is_none() {
                    apply::clean(&self.tools(family), netns)?;
                }
            }
        }
        Ok(())
    }

    /// Whether the tools accept a full sync of `desired` (`iptables-restore --test`: parsed and
    /// built, never committed).
    fn accepted(&self, desired: &DesiredState, options: render::Options) -> bool {
        let rendered = render(desired, &ChangeSet::full(), None, options);
        rendered.families.iter().all(|w| {
            let ipt = self.tools(w.family);
            let inputs = render::input::restore_input(w, Some(&existing::Existing::default()));
            inputs.iter().all(|i| ipt.test(i).is_ok())
        })
    }
}

pub(crate) fn ipt_family(f: IpFamily) -> Family {
    match f {
        IpFamily::V4 => Family::V4,
        IpFamily::V6 => Family::V6,
    }
}

impl Mode for IptablesMode {
    fn name(&self) -> &'static str {
        MODE
    }

    fn start(&mut self, _ctx: &ModeContext) -> Result<(), ModeError> {
        let backend = self.backend();
        let how = match self.settings.backend {
            Some(_) => "forced by --iptables-backend",
            None => "detected: the backend holding more rules, nft on a tie",
        };
        if !self.tools(IpFamily::V4).is_installed() {
            return Err(ModeError::Unavailable {
                mode: MODE,
                reason: format!(
                    "the {backend} backend's tools ({}) are not installed",
                    self.tools(IpFamily::V4).program("restore")
                ),
            });
        }
        tracing::info!(%backend, how, "iptables mode: using this iptables backend");
        self.drop_invalid = !apply::tcp_be_liberal(self.netns.as_deref());
        Ok(())
    }

    fn sync(
        &mut self,
        desired: &DesiredState,
        changes: &ChangeSet,
    ) -> Result<SyncStats, SyncError> {
        match self.sync_inner(desired, changes) {
            Ok(full) => {
                if full {
                    self.last_full = Some(Instant::now());
                }
                if let Some(ct) = &mut self.conntrack {
                    ct.after_apply(desired, changes, full);
                }
                Ok(SyncStats::of(desired, full))
            }
            Err((full, error)) => {
                // Nothing applied is trusted any more: the next sync is full.
                self.applied = None;
                self.restore_failures += 1;
                Err(SyncError { full, error })
            }
        }
    }

    fn check_drift(&mut self) -> Result<Vec<Drift>, ModeError> {
        let Some(applied) = &self.applied else {
            return Ok(Vec::new());
        };
        let mut found = Vec::new();
        for (family, fa) in &applied.families {
            let ipt = self.tools(*family);
            found.extend(drift::check(&ipt, *family, fa, applied.options)?);
        }
        if !found.is_empty() {
            self.applied = None;
        }
        Ok(found)
    }

    fn cleanup(&mut self) -> Result<Vec<String>, ModeError> {
        self.applied = None;
        let mut removed = Vec::new();
        for backend in Backend::ALL {
            for family in Family::ALL {
                let ipt = apply::tools(backend, family, self.netns.as_deref());
                if ipt.is_installed() {
                    removed.extend(apply::clean(&ipt, self.netns.as_deref())?);
                }
            }
        }
        Ok(removed)
    }

    fn kernel_view(&self) -> Result<KernelView, ModeError> {
        let mut out = KernelView::default();
        for family in [IpFamily::V4, IpFamily::V6] {
            let ipt = self.tools(family);
            let tables = ipt
                .save_all()
                .map_err(|e| ModeError::kernel(MODE, "reading our chains", e))?;
            let one = view::decode(family, &tables);
            out.dests.extend(one.dests);
            out.summary.extend(
                one.summary
                    .into_iter()
                    .map(|s| format!("{} {s}", ipt.program("save"))),
            );
        }
        Ok(out)
    }

    fn gauges(&self) -> Vec<Gauge> {
        self.rule_counts.gauges()
    }

    fn refused(&self) -> Vec<crate::model::ServicePortName> {
        self.quarantine.ports()
    }

    fn counters(&self) -> Vec<Counter> {
        let mut out = vec![
            Counter {
                name: "iptables_restore_failures",
                help: "Syncs whose iptables-restore failed (each followed by a full sync).",
                value: self.restore_failures,
            },
            Counter {
                name: "iptables_quarantined_ports",
                help: "Service ports left out because iptables-restore refused their rules.",
                value: self.quarantine.total(),
            },
        ];
        if let Some(ct) = &self.conntrack {
            out.push(Counter {
                name: "conntrack_deleted",
                help: "Stale UDP conntrack entries deleted after syncs.",
                value: ct.deleted(),
            });
            out.push(Counter {
                name: "conntrack_failures",
                help: "Conntrack reads or deletes that failed (logged; never a sync failure).",
                value: ct.failures(),
            });
        }
        out
    }
}
