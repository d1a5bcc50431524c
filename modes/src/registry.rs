//! The one list of modes: what `--proxy-mode` may name, what `--cleanup` walks, and what is
//! cleared from the node before a mode starts (the other modes' objects that would overlap).
//! Adding a mode is one entry in [`MODES`].

use crate::{Mode, ModeError, nftables};

/// Settings every mode's constructor gets. Mode-only settings (e.g. an IPVS scheduler) belong in
/// a field of their own here, read by that mode alone, never in the shared node settings.
#[derive(Clone, Debug, Default)]
pub struct ModeSettings {
    /// Program the kernel of this named network namespace (`/run/netns/NAME`) instead of the
    /// caller's: tests, the test bed, `kproxy debug dump` in a namespace.
    pub netns: Option<String>,
}

/// One mode of this build.
pub struct Registration {
    /// Its `--proxy-mode` value.
    pub name: &'static str,
    /// Builds the mode without touching the node (that waits for [`Mode::start`]).
    pub build: fn(&ModeSettings) -> Box<dyn Mode>,
}

/// Every mode this build has.
pub const MODES: &[Registration] = &[Registration {
    name: "nftables",
    build: nftables::build,
}];

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

/// Removes the objects of every mode but `active`, before `active` starts: a node that switched
/// modes must not keep the old mode's rules in front of the new one's.
pub fn clear_other_modes(
    active: &str,
    settings: &ModeSettings,
) -> Vec<(&'static str, Result<Vec<String>, ModeError>)> {
    MODES
        .iter()
        .filter(|m| m.name != active)
        .map(|m| (m.name, (m.build)(settings).cleanup()))
        .collect()
}
