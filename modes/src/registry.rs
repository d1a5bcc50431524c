//! The one list of modes: what `--proxy-mode` may name, what `--cleanup` walks, and what is
//! cleared from the node before a mode starts (the other modes' objects that would overlap).
//! Adding a mode is one entry in [`MODES`].

pub use kproxy_dataplane::iptables::Backend;

use crate::{Mode, ModeError, iptables, ipvs, nftables, userspace};

/// Settings every mode's constructor gets. Mode-only settings belong in a field of their own
/// here, read by that mode alone, never in the shared node settings of the desired state.
#[derive(Clone, Debug, Default)]
pub struct ModeSettings {
    /// Program the kernel of this named network namespace (`/run/netns/NAME`) instead of the
    /// caller's: tests, the test bed, `kproxy debug dump` in a namespace.
    pub netns: Option<String>,
    pub iptables: IptablesSettings,
    pub ipvs: IpvsSettings,
}

/// iptables mode's own settings (`iptables.*` of the configuration).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct IptablesSettings {
    /// NodePorts answer on 127.0.0.1 too (IPv4 only; `route_localnet`).
    pub localhost_node_ports: bool,
    /// The backend to write (`--iptables-backend`); `None` detects it (see
    /// `iptables::apply::detect`).
    pub backend: Option<Backend>,
}

/// ipvs mode's own settings (`ipvs.*` of the configuration).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct IpvsSettings {
    /// The IPVS scheduler (`rr` when empty).
    pub scheduler: String,
    pub strict_arp: bool,
    /// Virtual servers inside these are someone else's: never touched.
    pub exclude_cidrs: Vec<ipnet::IpNet>,
    /// IPVS connection timeouts; zero leaves the kernel's value.
    pub tcp_timeout: std::time::Duration,
    pub tcp_fin_timeout: std::time::Duration,
    pub udp_timeout: std::time::Duration,
}

/// One mode of this build.
pub struct Registration {
    /// Its `--proxy-mode` value.
    pub name: &'static str,
    /// Builds the mode without touching the node (that waits for [`Mode::start`]).
    pub build: fn(&ModeSettings) -> Box<dyn Mode>,
}

/// Every mode this build has.
pub const MODES: &[Registration] = &[
    Registration {
        name: "nftables",
        build: nftables::build,
    },
    Registration {
        name: "iptables",
        build: iptables::build,
    },
    Registration {
        name: "userspace",
        build: userspace::build,
    },
    Registration {
        name: "ipvs",
        build: ipvs::build,
    },
];

/// The names of the modes this build has.
pub fn names() -> Vec<&'static str> {
    MODES.iter().map(|m| m.name).collect()
}

/// The mode called `name`, built with `settings`; nothing on the node changes.
pub fn build(name: &str, settings: &ModeSettings) -> Result<Box<dyn Mode>, ModeError> {
    let reg = MODES
        .iter()
        .find(|m| m.name == name)
        .ok_or_else(|| ModeError::Unavailable {
            mode: "registry",
            reason: format!(
                "proxy mode {name} is not in this build (it has: {})",
                names().join(", ")
            ),
        })?;
    Ok((reg.build)(settings))
}

/// Runs every mode's cleanup (`--cleanup`: whatever the configured mode, as upstream does).
/// Each mode's outcome is returned; one failing does not stop the others.
pub fn cleanup_all(settings: &ModeSettings) -> Vec<(&'static str, Result<Vec<String>, ModeError>)> {
    MODES
        .iter()
        .map(|m| (m.name, (m.build)(settings).cleanup()))
        .collect()
}

/// What was cleared from the node before a mode started.
#[derive(Debug, Default)]
pub struct Cleared {
    /// Each removal, as `what (whose)`.
    pub removed: Vec<String>,
    /// Each failure; the active mode starts all the same (`--cleanup` can finish the job).
    pub failed: Vec<String>,
}

/// Before `active` starts: removes the objects of every other mode of kproxy's, and upstream
/// kube-proxy's leftovers ([`crate::leftovers`]), so that no stale rule of an earlier proxy
/// sits in front of the active mode's. Nothing of anyone else's is touched.
pub fn clear_node_for(active: &str, settings: &ModeSettings) -> Cleared {
    let mut out = Cleared::default();
    for m in MODES.iter().filter(|m| m.name != active) {
        match (m.build)(settings).cleanup() {
            Ok(removed) => out.removed.extend(
                removed
                    .into_iter()
                    .map(|r| format!("{r} (kproxy {} mode)", m.name)),
            ),
            Err(e) => out.failed.push(format!("kproxy {} mode: {e}", m.name)),
        }
    }
    let upstream = crate::leftovers::remove_upstream_leftovers_but(
        settings.netns.as_deref(),
        active == "ipvs",
    );
    out.removed.extend(
        upstream
            .removed
            .iter()
            .map(|r| format!("{r} (upstream kube-proxy)")),
    );
    out.failed.extend(
        upstream
            .failed
            .iter()
            .map(|e| format!("upstream kube-proxy: {e}")),
    );
    out
}
