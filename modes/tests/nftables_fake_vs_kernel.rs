//! FakeNft against the real thing (root only): each probe transaction, run after the same base
//! table, must succeed or fail alike in the fake and in `nft` in a throwaway namespace, with the
//! same error kind. This is what makes the fake's refusals the kernel's, not our guesses.

use kproxy_testbed::netns;

use kproxy_dataplane::nft::{
    BaseChain, ChainType, Exec, FakeNft, Family, Hook, NftClient, NftErrorKind, NftTransaction,
};

const F: Family = Family::Ip;
const T: &str = "probe";

/// A table where every kind of reference exists once.
fn base() -> NftTransaction {
    let mut tx = NftTransaction::new();
    tx.add_table(F, T, None);
    tx.delete_table(F, T);
    tx.add_table(F, T, Some("one"));
    let input = BaseChain {
        chain_type: ChainType::Filter,
        hook: Hook::Input,
        priority: 0,
    };
    tx.add_chain(F, T, "h", Some(input));
    for c in ["a", "b", "c"] {
        tx.add_chain(F, T, c, None);
    }
    let spec = "type ipv4_addr . inet_proto . inet_service : verdict;";
    tx.add_map(F, T, "m", spec);
    tx.add_set(F, T, "s", "type ipv4_addr;");
    tx.add_set(F, T, "unused", "type ipv4_addr;");
    tx.add_rule(F, T, "a", "ip daddr . meta l4proto . th dport vmap @m");
    tx.add_rule(F, T, "a", "ip daddr @s jump b");
    tx.add_rule(F, T, "b", "accept");
    tx.add_elements(F, T, "m", &["10.0.0.1 . tcp . 80 : goto c"]);
    tx.add_elements(F, T, "s", &["10.0.0.1"]);
    tx
}

fn probe(f: impl FnOnce(&mut NftTransaction)) -> NftTransaction {
    let mut tx = NftTransaction::new();
    f(&mut tx);
    tx
}

fn probes() -> Vec<NftTransaction> {
    let input = Some(BaseChain {
        chain_type: ChainType::Filter,
        hook: Hook::Input,
        priority: 0,
    });
    vec![
        probe(|tx| tx.add_elements(F, T, "m", &["10.0.0.1 . tcp . 80 : drop"])),
        probe(|tx| tx.add_elements(F, T, "m", &["10.0.0.1 . tcp . 80 : goto c"])),
        probe(|tx| tx.add_elements(F, T, "m", &["10.0.0.2 . tcp . 80 : goto nope"])),
        probe(|tx| tx.add_elements(F, T, "m", &["10.0.0.2 . tcp . 80 : goto h"])),
        probe(|tx| tx.add_elements(F, T, "m", &["10.0.0.2 . tcp"])),
        probe(|tx| tx.add_elements(F, T, "nope", &["10.0.0.2"])),
        probe(|tx| tx.delete_elements(F, T, "s", &["10.9.9.9"])),
        probe(|tx| tx.add_set(F, T, "s", "type ipv6_addr;")),
        probe(|tx| tx.add_set(F, T, "s", "type ipv4_addr; comment \"x\";")),
        probe(|tx| tx.add_map(F, T, "s", "type ipv4_addr : verdict;")),
        probe(|tx| tx.delete_set(F, T, "s")),
        probe(|tx| tx.delete_map(F, T, "m")),
        probe(|tx| tx.delete_map(F, T, "s")),
        probe(|tx| tx.delete_map(F, T, "unused")),
        probe(|tx| tx.flush_set(F, T, "m")),
        probe(|tx| tx.flush_set(F, T, "s")),
        probe(|tx| tx.flush_set(F, T, "nope")),
        probe(|tx| tx.flush_chain(F, T, "nope")),
        probe(|tx| tx.delete_chain(F, T, "a")),
        probe(|tx| tx.delete_chain(F, T, "b")),
        probe(|tx| tx.delete_chain(F, T, "c")),
        probe(|tx| tx.delete_chain(F, T, "nope")),
        probe(|tx| tx.delete_table(F, "nope")),
        probe(|tx| tx.add_chain(F, T, "h", None)),
        probe(|tx| tx.add_chain(F, T, "h", input)),
        probe(|tx| tx.add_chain(F, T, "c", input)),
        probe(|tx| tx.add_table(F, T, Some("two"))),
        probe(|tx| tx.add_rule(F, T, "a", "jump h")),
        probe(|tx| tx.add_rule(F, T, "a", "ip daddr @nope drop")),
        probe(|tx| tx.add_rule(F, T, "nope", "drop")),
        probe(|tx| {
            tx.add_rule(
                F,
                T,
                "c",
                "numgen random mod 2 vmap { 0 : goto b, 1 : goto nope }",
            )
        }),
        probe(|tx| tx.add_chain(Family::Ip6, T, "x", None)),
        probe(|tx| {
            tx.delete_chain(F, T, "a");
            tx.delete_set(F, T, "s");
            tx.delete_elements(F, T, "m", &["10.0.0.1 . tcp . 80"]);
            tx.delete_chain(F, T, "c");
            tx.delete_map(F, T, "m");
        }),
    ]
}

type Outcome = Result<(), NftErrorKind>;

fn outcome(client: &impl NftClient, tx: &NftTransaction) -> Outcome {
    client.run(tx).map_err(|e| e.kind())
}

#[test]
fn the_fake_refuses_what_nft_refuses() {
    let Some(ns) = netns::Netns::scratch() else {
        return;
    };
    let exec = Exec::new().in_netns(ns.name());
    let mut differ = Vec::new();
    for tx in probes() {
        exec.run(&base()).unwrap();
        let fake = FakeNft::new();
        fake.run(&base()).unwrap();
        let (kernel, faked) = (outcome(&exec, &tx), outcome(&fake, &tx));
        if kernel != faked {
            differ.push(format!("{tx}  kernel {kernel:?}, fake {faked:?}"));
        }
    }
    assert!(differ.is_empty(), "\n{}", differ.join("\n"));
}
