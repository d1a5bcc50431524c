use super::*;
use crate::nft::{BaseChain, ChainType, Hook, TableListing};

const T: &str = "kproxy";
const F: Family = Family::Ip;

/// A table with a base chain jumping to `services`, a verdict map and a set.
fn base() -> NftTransaction {
    let mut tx = objects();
    tx.add_rule(F, T, "nat-output", "jump services");
    tx.add_rule(
        F,
        T,
        "services",
        "ip daddr . meta l4proto . th dport vmap @service-ips",
    );
    tx
}

/// [`base`] without its rules.
fn objects() -> NftTransaction {
    let mut tx = NftTransaction::new();
    tx.add_table(F, T, Some("rules for kproxy"));
    let hook = BaseChain {
        chain_type: ChainType::Nat,
        hook: Hook::Output,
        priority: -100,
    };
    tx.add_chain(F, T, "nat-output", Some(hook));
    tx.add_chain(F, T, "services", None);
    tx.add_chain(F, T, "svc-a", None);
    tx.add_map(
        F,
        T,
        "service-ips",
        "type ipv4_addr . inet_proto . inet_service : verdict;",
    );
    tx.add_set(F, T, "cluster-ips", "type ipv4_addr;");
    tx.add_elements(F, T, "service-ips", &["10.0.0.1 . tcp . 80 : goto svc-a"]);
    tx.add_elements(F, T, "cluster-ips", &["10.0.0.1"]);
    tx
}

fn loaded() -> FakeNft {
    let fake = FakeNft::new();
    fake.run(&base()).unwrap();
    fake
}

fn one(f: impl FnOnce(&mut NftTransaction)) -> NftTransaction {
    let mut tx = NftTransaction::new();
    f(&mut tx);
    tx
}

#[test]
fn dangling_references_are_refused() {
    let fake = loaded();
    let cases = [
        one(|tx| tx.add_rule(F, T, "services", "goto nowhere")),
        one(|tx| tx.add_rule(F, T, "services", "jump nowhere")),
        one(|tx| {
            tx.add_rule(
                F,
                T,
                "services",
                "numgen random mod 2 vmap { 0 : goto svc-a, 1 : goto nowhere }",
            )
        }),
        one(|tx| tx.add_rule(F, T, "services", "ip daddr @no-such-set drop")),
        one(|tx| tx.add_rule(F, T, "no-such-chain", "drop")),
        one(|tx| tx.add_elements(F, T, "service-ips", &["10.0.0.2 . tcp . 80 : goto nowhere"])),
        one(|tx| tx.add_elements(F, T, "no-such-set", &["10.0.0.2"])),
        one(|tx| tx.add_chain(Family::Ip6, T, "c", None)),
    ];
    for tx in cases {
        let err = fake.run(&tx).unwrap_err();
        assert!(err.is_not_found(), "{tx}: {err}");
    }
    // The inline vmap's last target, followed by `}`, is found too: a valid one is accepted.
    let ok = one(|tx| {
        tx.add_rule(
            F,
            T,
            "services",
            "numgen random mod 1 vmap { 0 : goto svc-a }",
        )
    });
    fake.run(&ok).unwrap();
}

#[test]
fn a_failing_statement_discards_the_whole_transaction() {
    let fake = loaded();
    let before = fake.dump();
    let mut tx = NftTransaction::new();
    tx.add_chain(F, T, "new-chain", None);
    tx.add_elements(F, T, "cluster-ips", &["10.0.0.9"]);
    tx.delete_elements(F, T, "cluster-ips", &["10.9.9.9"]);
    let err = fake.run(&tx).unwrap_err();
    assert!(err.is_not_found(), "{err}");
    assert!(err.to_string().contains("/dev/stdin:3:"), "{err}");
    assert_eq!(fake.dump(), before);
    assert_eq!(fake.runs(), 2);
}

#[test]
fn delete_table_needs_the_table_but_add_then_delete_always_works() {
    let fake = FakeNft::new();
    let del = one(|tx| tx.delete_table(F, T));
    assert!(fake.run(&del).unwrap_err().is_not_found());
    let both = one(|tx| {
        tx.add_table(F, T, None);
        tx.delete_table(F, T);
    });
    fake.run(&both).unwrap();
    assert_eq!(fake.dump(), "");
    let fake = loaded();
    fake.run(&both).unwrap();
    assert!(!fake.has_table(F, T));
}

#[test]
fn chains_and_sets_in_use_cannot_be_deleted() {
    let fake = loaded();
    let busy = [
        // Jumped to by a rule of another chain.
        one(|tx| tx.delete_chain(F, T, "services")),
        // Named by a verdict map element.
        one(|tx| tx.delete_chain(F, T, "svc-a")),
        // Named by a rule.
        one(|tx| tx.delete_map(F, T, "service-ips")),
    ];
    for tx in busy {
        let err = fake.run(&tx).unwrap_err();
        assert_eq!(err.kind(), NftErrorKind::Other, "{tx}");
        assert!(err.to_string().contains("resource busy"), "{err}");
    }
    let missing = one(|tx| tx.delete_chain(F, T, "nope"));
    assert!(fake.run(&missing).unwrap_err().is_not_found());
    // As in the kernel, a chain goes with its rules, which releases what they named: here
    // `services`, then `service-ips` once its element's goto is gone.
    let ok = one(|tx| {
        tx.delete_chain(F, T, "nat-output");
        tx.delete_chain(F, T, "services");
        tx.delete_elements(F, T, "service-ips", &["10.0.0.1 . tcp . 80"]);
        tx.delete_chain(F, T, "svc-a");
        tx.delete_map(F, T, "service-ips");
        tx.delete_set(F, T, "cluster-ips");
    });
    fake.run(&ok).unwrap();
    assert_eq!(
        fake.dump(),
        "table ip kproxy\n  comment \"rules for kproxy\"\n"
    );
}

#[test]
fn kinds_and_hooks_are_kept_apart() {
    let fake = loaded();
    // nft 1.0.6 has `flush set` refuse a map (but `delete map` deletes a set, by name).
    let flush_map = one(|tx| tx.flush_set(F, T, "service-ips"));
    assert!(fake.run(&flush_map).unwrap_err().is_not_found());
    let input = BaseChain {
        chain_type: ChainType::Filter,
        hook: Hook::Input,
        priority: 0,
    };
    let unsupported = [
        one(|tx| tx.add_rule(F, T, "services", "jump nat-output")),
        one(|tx| tx.add_chain(F, T, "nat-output", Some(input))),
        one(|tx| tx.add_chain(F, T, "services", Some(input))),
    ];
    for tx in unsupported {
        let err = fake.run(&tx).unwrap_err();
        assert!(err.to_string().contains("not supported"), "{tx}: {err}");
    }
    // Naming a base chain again without its hook is accepted, as by nft.
    fake.run(&one(|tx| tx.add_chain(F, T, "nat-output", None)))
        .unwrap();
    fake.run(&one(|tx| tx.flush_set(F, T, "cluster-ips")))
        .unwrap();
    assert!(!fake.dump().contains("    10.0.0.1\n"));
    fake.run(&one(|tx| tx.delete_map(F, T, "cluster-ips")))
        .unwrap();
    assert!(!fake.dump().contains("cluster-ips"));
}

#[test]
fn add_is_idempotent_but_clashes_are_refused() {
    let fake = loaded();
    let before = fake.dump();
    // Re-adding the same objects and elements changes nothing (a rule would be appended again).
    fake.run(&objects()).unwrap();
    assert_eq!(fake.dump(), before);
    let clash = [
        one(|tx| tx.add_elements(F, T, "service-ips", &["10.0.0.1 . tcp . 80 : drop"])),
        one(|tx| tx.add_set(F, T, "cluster-ips", "type ipv6_addr;")),
        one(|tx| tx.add_map(F, T, "cluster-ips", "type ipv4_addr : verdict;")),
    ];
    for tx in clash {
        assert!(fake.run(&tx).unwrap_err().is_exists(), "{tx}");
    }
    // Elements must fit the type: parts of the key, a value in maps only (nft 1.0.6 says
    // "No such file or directory").
    let invalid = [
        one(|tx| tx.add_elements(F, T, "service-ips", &["10.0.0.2 . tcp : drop"])),
        one(|tx| tx.add_elements(F, T, "service-ips", &["10.0.0.2 . tcp . 80"])),
        one(|tx| tx.add_elements(F, T, "cluster-ips", &["10.0.0.2 : drop"])),
    ];
    for tx in invalid {
        assert_eq!(
            fake.run(&tx).unwrap_err().kind(),
            NftErrorKind::Other,
            "{tx}"
        );
    }
}

#[test]
fn dump_does_not_depend_on_statement_order() {
    let a = loaded();
    let b = FakeNft::new();
    let mut tx = base();
    // Same content, elements in another order and over two statements.
    tx.add_elements(F, T, "cluster-ips", &["10.0.0.3", "10.0.0.2"]);
    b.run(&tx).unwrap();
    a.run(&one(|tx| {
        tx.add_elements(F, T, "cluster-ips", &["10.0.0.2"])
    }))
    .unwrap();
    a.run(&one(|tx| {
        tx.add_elements(F, T, "cluster-ips", &["10.0.0.3"])
    }))
    .unwrap();
    assert_eq!(a.dump(), b.dump());
    // Rules keep their order: a different order is a different ruleset.
    let c = loaded();
    c.run(&one(|tx| tx.add_rule(F, T, "svc-a", "drop")))
        .unwrap();
    c.run(&one(|tx| tx.add_rule(F, T, "svc-a", "accept")))
        .unwrap();
    let d = loaded();
    d.run(&one(|tx| tx.add_rule(F, T, "svc-a", "accept")))
        .unwrap();
    d.run(&one(|tx| tx.add_rule(F, T, "svc-a", "drop")))
        .unwrap();
    assert_ne!(c.dump(), d.dump());
}

#[test]
fn injected_failure_fails_one_run_and_changes_nothing() {
    let fake = loaded();
    let before = fake.dump();
    fake.fail_next_run("Error: injected");
    let tx = one(|tx| tx.add_chain(F, T, "x", None));
    let err = fake.run(&tx).unwrap_err();
    assert!(err.to_string().contains("injected"), "{err}");
    assert_eq!(fake.dump(), before);
    fake.run(&tx).unwrap();
    assert_eq!(fake.runs(), 3);
}

#[test]
fn unknown_statements_are_refused_and_check_commits_nothing() {
    let fake = loaded();
    let mut tx = NftTransaction::new();
    tx.comment("a comment is fine");
    tx.add_chain(F, T, "x", None);
    fake.check(&tx).unwrap();
    assert!(!fake.dump().contains("chain x"));
    let mut other = NftTransaction::new();
    other.extend(tx);
    other.add_rule(F, T, "x", "accept");
    fake.run(&other).unwrap();
    assert!(fake.dump().contains("chain x\n    rule accept"));
}

#[test]
fn listings_read_back_what_was_applied() {
    let fake = loaded();
    let text = fake.list_table(F, T).unwrap();
    assert!(
        text.contains("elements = { 10.0.0.1 . tcp . 80 : goto svc-a }"),
        "{text}"
    );
    let json = fake.list_table_json(F, T).unwrap();
    let listing = TableListing::from_json(&json).unwrap();
    assert_eq!(listing.chains["nat-output"], ["\"jump services\""]);
    assert_eq!(listing.sets["set cluster-ips"].len(), 1);
    assert!(listing.diff(&listing).is_empty());
    let err = fake.list_table(Family::Ip6, T).unwrap_err();
    assert!(err.is_not_found(), "{err}");
}
