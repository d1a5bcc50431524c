//! Property: however the desired state evolves, the partial syncs of the nftables mode leave
//! the same ruleset as one full sync of the final state. Runs against `FakeNft`, which applies
//! transactions as the kernel does (all or nothing, dangling references and deletes of missing
//! objects refused), so a partial transaction that nft would reject fails here too.

mod nftables;
use kproxy_modes::testing::fixtures;
use nftables::world;

use std::collections::BTreeSet;

use kproxy_dataplane::nft::{FakeNft, NftClient};
use kproxy_modes::{
    Mode,
    model::ChangeSet,
    nftables::{NftablesMode, render},
};
use proptest::{prelude::*, test_runner::TestCaseError};

use world::{Op, World};

fn mode() -> NftablesMode<FakeNft> {
    NftablesMode::new(FakeNft::new())
}

/// The dump without what a partial sync legitimately leaves behind and a full sync does not
/// recreate: empty `vip-slots-*` / `endpoint-slots-*` maps and the `pick-*` chain of an empty
/// `vip-slots-*` map (docs/modes/nftables.md, "Partial sync"). Anything else must match.
fn normalized(dump: &str) -> String {
    // Blocks: a `  chain/set/map` header line and its indented body, per table.
    let mut blocks: Vec<(String, Vec<&str>)> = Vec::new();
    for line in dump.lines() {
        match line.strip_prefix("    ") {
            Some(_) => blocks.last_mut().expect("body after a header").1.push(line),
            None => blocks.push((line.to_owned(), Vec::new())),
        }
    }
    let mut dropped = BTreeSet::new();
    let mut table = String::new();
    for (header, body) in &blocks {
        if header.starts_with("table ") {
            table = header.clone();
        }
        let name = header
            .trim_start()
            .strip_prefix("map ")
            .map(|h| h.split(' ').next().unwrap());
        if let Some(name) = name.filter(|_| body.is_empty()) {
            if let Some(n) = name.strip_prefix("vip-slots-") {
                dropped.insert(format!("{table}/  chain pick-{n}"));
            }
            if name.starts_with("vip-slots-") || name.starts_with("endpoint-slots-") {
                dropped.insert(format!("{table}/{header}"));
            }
        }
    }
    let mut out = String::new();
    for (header, body) in &blocks {
        if header.starts_with("table ") {
            table = header.clone();
        }
        if dropped.contains(&format!("{table}/{header}")) {
            continue;
        }
        out.push_str(header);
        out.push('\n');
        for line in body {
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}

/// Lines in `a` and not in `b`, for readable failures.
fn only_in<'a>(a: &'a str, b: &str) -> Vec<&'a str> {
    let b: BTreeSet<&str> = b.lines().collect();
    a.lines().filter(|l| !b.contains(l)).collect()
}

/// Runs `steps` from `start` through partial syncs (the first sync is full), with an injected
/// apply failure at sync `fail_at`, then compares with a fresh full sync of the final state.
fn converges(
    start: World,
    steps: Vec<Vec<Op>>,
    fail_at: Option<usize>,
) -> Result<(), TestCaseError> {
    let mut mode = mode();
    let mut world = start;
    let mut desired = world.desired();
    let first = mode.sync(&desired, &ChangeSet::full()).unwrap();
    prop_assert!(first.full);
    for (n, ops) in steps.iter().enumerate() {
        let families = world.families();
        world.apply(ops);
        let next = world.desired();
        let changes = ChangeSet {
            full: false,
            services: world::changed(&desired, &next),
        };
        desired = next;
        let must_be_full = mode.needs_full_sync() || families != world.families();
        if fail_at == Some(n) {
            mode.client().fail_next_run("Error: injected failure");
        }
        let (runs, before) = (mode.client().runs(), mode.client().dump());
        match mode.sync(&desired, &changes) {
            Ok(stats) => {
                let what = format!("sync {n} ({changes:?})");
                prop_assert_eq!(stats.full, must_be_full, "{}", what);
            }
            Err(e) => {
                // Only the injected failure may happen, and it leaves the ruleset untouched.
                prop_assert!(e.to_string().contains("injected"), "sync {}: {}", n, e);
                prop_assert_eq!(mode.client().runs(), runs + 1);
                prop_assert_eq!(mode.client().dump(), before);
                prop_assert!(mode.needs_full_sync());
            }
        }
    }
    if mode.needs_full_sync() {
        // The last sync failed: the next one, even with nothing named, must recover.
        prop_assert!(mode.sync(&desired, &ChangeSet::default()).unwrap().full);
    }
    check_against_full(&mode, &desired)
}

/// The reference: one full sync of `desired` on an empty fake, with the slot ids the mode
/// holds. A full sync keeps surviving ports' ids (so do we, to compare keys); ids are checked
/// apart, for uniqueness. Empty leftovers aside, the dumps must be equal.
fn check_against_full(
    mode: &NftablesMode<FakeNft>,
    desired: &kproxy_modes::model::DesiredState,
) -> Result<(), TestCaseError> {
    let applied = mode.applied().expect("applied after a successful sync");
    for (family, fa) in &applied.families {
        let ids: Vec<u32> = fa.services.values().map(|s| s.id).collect();
        let unique: BTreeSet<u32> = ids.iter().copied().collect();
        prop_assert_eq!(
            unique.len(),
            ids.len(),
            "{:?}: duplicate slot ids {:?}",
            family,
            ids
        );
    }
    let full = render(desired, &ChangeSet::full(), Some(applied));
    let fresh = FakeNft::new();
    fresh
        .run(&full.tx)
        .map_err(|e| TestCaseError::fail(format!("full sync refused: {e}")))?;
    let (got, want) = (normalized(&mode.client().dump()), normalized(&fresh.dump()));
    prop_assert!(
        got == want,
        "after partial syncs only:\n{}\nafter a full sync only:\n{}",
        only_in(&got, &want).join("\n"),
        only_in(&want, &got).join("\n")
    );
    // The bookkeeping the next partial sync diffs against must agree too.
    for (family, want) in &full.applied.families {
        let got = &applied.families[family];
        prop_assert_eq!(&got.services, &want.services, "{:?} services", family);
        prop_assert_eq!(
            &got.cluster_ip_refs,
            &want.cluster_ip_refs,
            "{:?} cluster IPs",
            family
        );
        prop_assert_eq!(
            &got.hairpin_refs,
            &want.hairpin_refs,
            "{:?} hairpin",
            family
        );
        prop_assert!(got.picks.is_superset(&want.picks) && got.shards.is_superset(&want.shards));
    }
    Ok(())
}

fn steps() -> impl Strategy<Value = Vec<Vec<Op>>> {
    prop::collection::vec(world::step(), 1..10)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Partial syncs converge to the full sync's ruleset.
    #[test]
    fn partial_syncs_converge_to_a_full_sync(start in world::world(), steps in steps()) {
        converges(start, steps, None)?;
    }

    /// A failed sync (injected) changes nothing, and the syncs after it still converge.
    #[test]
    fn syncs_after_a_failure_converge(
        start in world::world(),
        steps in steps(),
        fail_at in 0usize..10,
    ) {
        converges(start, steps, Some(fail_at))?;
    }
}

/// The fixture states apply cleanly as full syncs, a no-op partial leaves them unchanged, and
/// cleanup removes them.
#[test]
fn fixture_states_apply_on_the_fake() {
    for desired in [
        fixtures::cluster_ip_general(),
        fixtures::external_mix(),
        fixtures::dual_stack(),
    ] {
        let mut mode = mode();
        mode.sync(&desired, &ChangeSet::full()).unwrap();
        let dump = mode.client().dump();
        let all: BTreeSet<_> = desired
            .families
            .iter()
            .flat_map(|f| f.services.keys().cloned())
            .collect();
        let stats = mode
            .sync(
                &desired,
                &ChangeSet {
                    full: false,
                    services: all,
                },
            )
            .unwrap();
        assert!(!stats.full);
        assert_eq!(mode.client().dump(), dump);
        assert_eq!(
            mode.client().runs(),
            1,
            "an empty partial sync runs nothing"
        );
        assert_eq!(
            dump.matches("table ").count(),
            desired.families.len(),
            "{dump}"
        );
        // `debug dump` reads each family's table (a missing one is skipped); cleanup removes
        // both, present or not.
        assert!(mode.dump().unwrap().contains("table ip kproxy {"));
        mode.cleanup().unwrap();
        assert_eq!(mode.client().dump(), "");
    }
}
