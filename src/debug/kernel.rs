//! The kernel's side of `kproxy debug dump --kernel`: what the proxy mode reads back from the
//! kernel, per Service port, and every difference from what the desired state means.
//!
//! Both sides are compared by meaning ([`kproxy_modes::view`]: each destination and where new
//! connections from outside the node go), never in one mode's spelling: slot numbers, chain names
//! and handles depend on the order Services were added in, and would show differences that mean
//! nothing. Everything mode-specific is behind [`Mode::kernel_view`], so this works for any mode
//! of the registry and names none of their objects.

use std::{
    collections::{BTreeMap, BTreeSet},
    fmt::Write,
};

use anyhow::{Context, Result};
use kproxy_modes::{
    Mode,
    model::{DesiredState, IpFamily, ServicePortName},
    registry::{self, ModeSettings},
    view::{self, Dest, Difference, KernelView, Outcome},
};
use serde_json::{Value, json};

/// The exit code of `kproxy debug dump --kernel` when the kernel differs from the desired state
/// (errors exit 1).
pub const EXIT_DIFFERENCES: u8 = 3;

/// What the kernel holds and how it differs from the desired state.
pub struct Report {
    pub kernel: KernelView,
    pub differences: Vec<Difference>,
    /// The Service port each desired destination belongs to.
    owners: BTreeMap<Dest, ServicePortName>,
}

impl Report {
    pub fn matches(&self) -> bool {
        self.differences.is_empty()
    }
}

/// Reads the kernel through mode `mode_name` and compares it with `state`.
pub fn inspect(mode_name: &str, settings: &ModeSettings, state: &DesiredState) -> Result<Report> {
    let mode = registry::build(mode_name, settings)?;
    compare(mode.as_ref(), state)
}

/// Compares what `mode` reads back with `state`.
pub fn compare(mode: &dyn Mode, state: &DesiredState) -> Result<Report> {
    let kernel = mode
        .kernel_view()
        .with_context(|| format!("reading back the kernel ({} mode)", mode.name()))?;
    let differences = view::diff(&kernel, &view::expected(state));
    Ok(Report {
        kernel,
        differences,
        owners: view::owners(state),
    })
}

/// The readable report: the mode's summary, then per family each Service port's destinations
/// with what the kernel has, and its differences.
pub fn table(state: &DesiredState, report: &Report) -> String {
    let mut out = String::from("\n");
    for line in &report.kernel.summary {
        let _ = writeln!(out, "kernel: {line}");
    }
    for fam in &state.families {
        let _ = writeln!(out, "\nkernel, {}:", fam.family);
        for port in fam.services.values() {
            let _ = writeln!(out, "  {}", port.name);
            for (dest, _) in view::port_dests(fam.family, port) {
                let have = report.kernel.dests.get(&dest);
                let have = have.map_or("(no entry)".to_owned(), outcome);
                let _ = writeln!(out, "    {} -> {have}", dest_text(&dest));
            }
            for d in report.of_port(&port.name) {
                let _ = writeln!(out, "    DIFFERENCE: {}", describe(d));
            }
        }
        let unowned = report.unowned(Some(fam.family));
        if !unowned.is_empty() {
            let _ = writeln!(out, "  not desired for any Service port:");
        }
        for d in &unowned {
            let _ = writeln!(out, "    DIFFERENCE: {}", describe(d));
        }
        if !report
            .differences
            .iter()
            .any(|d| family(&d.dest) == fam.family)
        {
            let _ = writeln!(out, "  the kernel matches the desired state");
        }
    }
    // A family the desired state does not serve can still hold leftovers.
    for d in report.unowned(None) {
        let _ = writeln!(out, "\nDIFFERENCE: {}", describe(d));
    }
    out
}

impl Report {
    fn of_port<'a>(&'a self, name: &'a ServicePortName) -> impl Iterator<Item = &'a Difference> {
        self.differences
            .iter()
            .filter(move |d| self.owners.get(&d.dest) == Some(name))
    }

    /// Differences no desired Service port owns, of `fam` (`None`: of a family not desired).
    fn unowned(&self, fam: Option<IpFamily>) -> Vec<&Difference> {
        let desired: BTreeSet<IpFamily> = self.owners.keys().map(family).collect();
        self.differences
            .iter()
            .filter(|d| !self.owners.contains_key(&d.dest))
            .filter(|d| match fam {
                Some(f) => family(&d.dest) == f,
                None => !desired.contains(&family(&d.dest)),
            })
            .collect()
    }
}

fn family(dest: &Dest) -> IpFamily {
    match dest {
        Dest::Vip { ip, .. } => IpFamily::of(ip),
        Dest::NodePort { family, .. } => *family,
    }
}

/// `10.96.0.20:80/tcp` or `node port 30080/tcp (IPv4)`: protocols in lower case, as `nft`,
/// `ss` and `conntrack` print them.
fn dest_text(dest: &Dest) -> String {
    match dest {
        Dest::Vip { ip, protocol, port } => {
            let proto = protocol.as_str().to_lowercase();
            format!("{}/{proto}", std::net::SocketAddr::new(*ip, *port))
        }
        Dest::NodePort {
            family,
            protocol,
            port,
        } => {
            let proto = protocol.as_str().to_lowercase();
            format!("node port {port}/{proto} ({family})")
        }
    }
}

fn outcome(o: &Outcome) -> String {
    match o {
        Outcome::Endpoints(eps) if eps.is_empty() => "no endpoint (not DNATed)".to_owned(),
        o => o.to_string(),
    }
}

fn describe(d: &Difference) -> String {
    let dest = dest_text(&d.dest);
    match (&d.kernel, &d.desired) {
        (None, Some(want)) => format!(
            "{dest} missing from the kernel (desired: {})",
            outcome(want)
        ),
        (Some(have), None) => format!("{dest} in the kernel but not desired ({})", outcome(have)),
        (Some(have), Some(want)) => format!(
            "{dest}: the kernel has {}, desired {}",
            outcome(have),
            outcome(want)
        ),
        (None, None) => dest,
    }
}

/// The machine-readable report: the summary, whether the kernel matches, each destination with
/// both sides and the Service port it belongs to, and the differences.
pub fn json(report: &Report) -> Value {
    let owner = |d: &Dest| report.owners.get(d).map(ToString::to_string);
    let dests: BTreeSet<&Dest> = report
        .kernel
        .dests
        .keys()
        .chain(report.owners.keys())
        .collect();
    let expected: BTreeMap<&Dest, Option<&Outcome>> = report
        .differences
        .iter()
        .map(|d| (&d.dest, d.desired.as_ref()))
        .collect();
    let dests: Vec<Value> = dests
        .into_iter()
        .map(|d| {
            let kernel = report.kernel.dests.get(d);
            // Where there is no difference the desired outcome is the kernel's.
            let desired = expected.get(d).copied().unwrap_or(kernel);
            json!({"dest": d, "servicePort": owner(d), "kernel": kernel, "desired": desired})
        })
        .collect();
    let differences: Vec<Value> = report
        .differences
        .iter()
        .map(|d| json!({"dest": d.dest, "servicePort": owner(&d.dest), "kernel": d.kernel, "desired": d.desired, "text": describe(d)}))
        .collect();
    json!({
        "summary": report.kernel.summary,
        "matches": report.matches(),
        "destinations": dests,
        "differences": differences,
    })
}
