//! The contract every mode in `registry::MODES` keeps, checked against the real kernel of a
//! network namespace made for each test: a new mode joins these tests by being registered.
//!
//! - a full sync of each fixture reads back (`kernel_view`) as the desired state, by meaning;
//! - partial syncs of a sequence of changes end where the desired state says;
//! - the mode's own syncs are never drift;
//! - `cleanup` removes what the mode programmed (and says so), and a second cleanup removes nothing.
//!
//! Needs root (skipped otherwise).

use std::sync::Arc;

use kproxy_modes::{
    Mode, ModeContext, ModeError,
    model::{ChangeSet, DesiredState, IpFamily},
    registry::{MODES, ModeSettings, Registration},
    testing::fixtures,
    view,
};
use kproxy_testbed::netns::Netns;

/// Each registered mode, built for a namespace of its own and started on `rt`.
fn each_mode(rt: &tokio::runtime::Runtime, test: impl Fn(&Registration, &mut dyn Mode, &Netns)) {
    for reg in MODES {
        let Some(ns) = Netns::scratch() else { return };
        let settings = ModeSettings {
            netns: Some(ns.name().to_owned()),
            ..ModeSettings::default()
        };
        let mut mode = (reg.build)(&settings);
        let ctx = ModeContext {
            runtime: rt.handle().clone(),
            drift: Arc::new(tokio::sync::Notify::new()),
        };
        match mode.start(&ctx) {
            Ok(()) => {}
            // A mode this kernel cannot run (ipvs without IPVS): its contract is checked where
            // the kernel has it (scripts/test runs these tests in the VM too).
            Err(ModeError::Unavailable { reason, .. }) => {
                eprintln!("{}: skipped: {reason}", reg.name);
                continue;
            }
            Err(e) => panic!("{}: start: {e}", reg.name),
        }
        test(reg, mode.as_mut(), &ns);
        mode.shutdown();
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Runtime::new().expect("a tokio runtime")
}

/// One change to a desired state, returning the change set that names it.
type Step<'a> = dyn Fn(&mut DesiredState) -> ChangeSet + 'a;

fn is_sctp(d: &view::Dest) -> bool {
    matches!(
        d,
        view::Dest::Vip {
            protocol: kproxy_modes::model::Protocol::Sctp,
            ..
        } | view::Dest::NodePort {
            protocol: kproxy_modes::model::Protocol::Sctp,
            ..
        }
    )
}

#[track_caller]
fn assert_reads_back(name: &str, mode: &dyn Mode, desired: &DesiredState) {
    let kernel = mode.kernel_view().unwrap_or_else(|e| panic!("{name}: {e}"));
    let mut expected = view::expected(desired);
    // The userspace mode does not relay SCTP (documented in docs/modes/userspace.md).
    if name == "userspace" {
        expected.dests.retain(|d, _| !is_sctp(d));
    }
    let diff = view::diff(&kernel, &expected);
    assert!(diff.is_empty(), "{name}: the kernel differs: {diff:#?}");
}

#[test]
fn a_full_sync_of_each_fixture_reads_back_as_desired() {
    let rt = runtime();
    each_mode(&rt, |reg, mode, _| {
        for desired in [
            fixtures::cluster_ip_general(),
            fixtures::external_mix(),
            fixtures::dual_stack(),
        ] {
            let stats = mode.sync(&desired, &ChangeSet::full()).unwrap();
            assert!(stats.full, "{}: a full change set is a full sync", reg.name);
            assert_reads_back(reg.name, mode, &desired);
        }
    });
}

#[test]
fn partial_syncs_end_where_the_desired_state_says() {
    let rt = runtime();
    each_mode(&rt, |reg, mode, _| {
        let mut desired = fixtures::external_mix();
        mode.sync(&desired, &ChangeSet::full()).unwrap();
        let v4 = |d: &mut DesiredState| {
            d.families
                .iter_mut()
                .find(|f| f.family == IpFamily::V4)
                .expect("IPv4")
                .services
                .clone()
        };
        let ports = v4(&mut desired);
        let names: Vec<_> = ports.keys().cloned().collect();
        // Remove the first port, then change the endpoints of the second, then bring the first
        // back: each a partial sync naming only what changed.
        let steps: Vec<Box<Step>> = vec![
            Box::new(|d| {
                let fam = d
                    .families
                    .iter_mut()
                    .find(|f| f.family == IpFamily::V4)
                    .unwrap();
                fam.services.remove(&names[0]);
                ChangeSet {
                    full: false,
                    services: [names[0].clone()].into(),
                }
            }),
            Box::new(|d| {
                let fam = d
                    .families
                    .iter_mut()
                    .find(|f| f.family == IpFamily::V4)
                    .unwrap();
                let sp = fam.services.get_mut(&names[1]).unwrap();
                sp.endpoints.cluster.truncate(1);
                sp.endpoints.has_any =
                    !sp.endpoints.cluster.is_empty() || !sp.endpoints.local.is_empty();
                fixtures::paths(sp);
                ChangeSet {
                    full: false,
                    services: [names[1].clone()].into(),
                }
            }),
            Box::new(|d| {
                let fam = d
                    .families
                    .iter_mut()
                    .find(|f| f.family == IpFamily::V4)
                    .unwrap();
                fam.services
                    .insert(names[0].clone(), ports[&names[0]].clone());
                ChangeSet {
                    full: false,
                    services: [names[0].clone()].into(),
                }
            }),
        ];
        for step in &steps {
            let changes = step(&mut desired);
            let stats = mode.sync(&desired, &changes).unwrap();
            assert!(
                !stats.full,
                "{}: a change of one port is a partial sync",
                reg.name
            );
            assert_reads_back(reg.name, mode, &desired);
        }
        assert!(
            mode.check_drift().unwrap().is_empty(),
            "{}: its own syncs are not drift",
            reg.name
        );
    });
}

#[test]
fn cleanup_removes_what_the_mode_programmed_and_only_once() {
    let rt = runtime();
    each_mode(&rt, |reg, mode, _| {
        let desired = fixtures::dual_stack();
        mode.sync(&desired, &ChangeSet::full()).unwrap();
        let removed = mode.cleanup().unwrap();
        assert!(
            !removed.is_empty(),
            "{}: cleanup says what it removed",
            reg.name
        );
        let after = mode.kernel_view().unwrap();
        assert!(
            after.dests.is_empty(),
            "{}: left behind {:?}",
            reg.name,
            after.dests
        );
        assert!(
            mode.cleanup().unwrap().is_empty(),
            "{}: a second cleanup removes nothing",
            reg.name
        );
        // And the next sync programs everything again (nothing cached survives a cleanup).
        mode.sync(&desired, &ChangeSet::default()).unwrap();
        assert_reads_back(reg.name, mode, &desired);
    });
}
