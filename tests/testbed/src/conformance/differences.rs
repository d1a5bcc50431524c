//! Known differences of a mode from a case's upstream expectation, as data:
//! `tests/conformance/differences/<mode>.yaml` (or the file `--differences` names). Each entry
//! names one flow (file name, step, position, flow name) and what the mode does instead, with the
//! reason. The runner judges that flow against the mode's documented behaviour and says so on its
//! line (`known difference: ...`), so a difference is never passed silently and never hides a
//! change in behaviour: if the mode starts doing what upstream expects, the flow fails until the
//! entry is removed.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::Deserialize;

use super::case::{Case, Expect};

#[derive(Clone, Debug, Deserialize)]
pub struct Difference {
    /// The case's file name (without its folder: a shared file replaces the in-tree one).
    pub file: String,
    /// 1-based, as the runner prints them.
    pub step: usize,
    pub flow: usize,
    pub name: String,
    /// What this mode does instead (the `expect` of FORMAT.md).
    pub mode_does: Expect,
    pub why: String,
}

/// The default list of `mode`'s differences (absent: none).
pub fn default_path(mode: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../conformance/differences")
        .join(format!("{mode}.yaml"))
}

pub fn load(path: &Path) -> Result<Vec<Difference>> {
    if !path.exists() {
        return Ok(Vec::new());
    }
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    serde_saphyr::from_str(&text).with_context(|| format!("parsing {}", path.display()))
}

/// Replaces the expectation of each listed flow of `case` (loaded from `file`) and returns the
/// notes to print on their lines, by (step, flow), 0-based. An entry whose flow name does not
/// match is an error: the case changed under it.
pub fn apply(
    case: &mut Case,
    file: &Path,
    diffs: &[Difference],
) -> Result<Vec<((usize, usize), String)>> {
    let name = file
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut notes = Vec::new();
    for d in diffs.iter().filter(|d| d.file == name) {
        let flow = case
            .steps
            .get_mut(d.step.wrapping_sub(1))
            .and_then(|s| s.flows.get_mut(d.flow.wrapping_sub(1)))
            .filter(|f| f.name == d.name)
            .with_context(|| {
                format!(
                    "known difference {name} step {} flow {} {:?}: no such flow",
                    d.step, d.flow, d.name
                )
            })?;
        flow.expect = d.mode_does.clone();
        notes.push((
            (d.step - 1, d.flow - 1),
            format!("known difference: {}", d.why),
        ));
    }
    Ok(notes)
}
