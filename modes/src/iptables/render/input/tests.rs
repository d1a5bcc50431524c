use kproxy_dataplane::iptables::parse_save;

use super::*;
use crate::iptables::existing::Existing;
use crate::{
    iptables::render::{TableWrite, base::Jump},
    model::IpFamily,
};

fn write(jumps: Vec<Jump>) -> FamilyWrite {
    let mut nat = TableWrite::default();
    nat.chains.insert("KPROXY-SERVICES".into(), vec![]);
    FamilyWrite {
        family: IpFamily::V4,
        nat,
        filter: TableWrite::default(),
        jumps,
    }
}

/// A full sync keeps a present jump, deletes its duplicate and a stale jump, inserts the missing
/// one, and deletes our chains it no longer writes; other chains and rules are not named.
#[test]
fn a_full_sync_ensures_each_jump_once_and_deletes_stale_chains() {
    let jump = |from, to: &str| Jump {
        table: Table::Nat,
        from,
        spec: format!("-m comment --comment \"kproxy x\" -j {to}"),
    };
    let saved = parse_save(
        "*nat\n:PREROUTING ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n:KPROXY-SERVICES - [0:0]\n\
         :KPROXY-SVC-OLD - [0:0]\n:DOCKER - [0:0]\n\
         -A PREROUTING -m comment --comment \"kproxy x\" -j KPROXY-SERVICES\n\
         -A PREROUTING -m comment --comment \"kproxy x\" -j KPROXY-SERVICES\n\
         -A PREROUTING -j KPROXY-SVC-OLD\n-A PREROUTING -j DOCKER\nCOMMIT\n",
    )
    .unwrap();
    let w = write(vec![
        jump("PREROUTING", "KPROXY-SERVICES"),
        jump("OUTPUT", "KPROXY-SERVICES"),
    ]);
    let existing = Existing::from_saved(&saved);
    let text: Vec<String> = restore_input(&w, Some(&existing))
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(
        text,
        [
            "*nat\n:KPROXY-SERVICES - [0:0]\n\
             -D PREROUTING -m comment --comment \"kproxy x\" -j KPROXY-SERVICES\n\
             -D PREROUTING -j KPROXY-SVC-OLD\n\
             -I OUTPUT 1 -m comment --comment \"kproxy x\" -j KPROXY-SERVICES\nCOMMIT\n",
            "*nat\n:KPROXY-SVC-OLD - [0:0]\nCOMMIT\n",
            "*nat\n-X KPROXY-SVC-OLD\nCOMMIT\n",
        ]
    );
}

/// The nft backend's cost, modelled: iptables-nft-restore 1.8.9 inserts every chain a line names
/// (the chain, and its jump target) into a sorted list by walking from the smallest name, and
/// stops at the first larger one (`cache_chain_list_insert`). Written as this module writes it, a
/// full sync of 2,000 Services x 5 endpoints costs a few steps per name; upstream's order (all
/// declarations, then all rules) would cost thousands per name.
#[test]
fn the_nft_backend_walks_a_few_names_per_line() {
    use crate::{
        iptables::render,
        model::{ChangeSet, IpFamily, Protocol},
        testing::fixtures::{self, ep},
    };
    let ports = (0..2000u32)
        .map(|i| {
            let eps = (1..=5)
                .map(|e| ep(&format!("10.{}.{}.{e}:8080", 64 + i / 256, i % 256), false))
                .collect();
            let cip = format!("172.30.{}.{}", i / 256, i % 256);
            let name = format!("svc{i}");
            fixtures::port("ns", &name, "http", Protocol::Tcp, &cip, 80, eps)
        })
        .collect();
    let desired = fixtures::state(vec![(IpFamily::V4, ports)]);
    let r = render::render(&desired, &ChangeSet::full(), None, Default::default());
    let inputs = restore_input(&r.families[0], Some(&Existing::default()));
    let nat = inputs[0].to_string();
    let nat = nat.split("COMMIT").next().unwrap();
    // 10,000 endpoints: upstream's large cluster mode, per-endpoint rules without comments.
    let dnat = nat.lines().filter(|l| l.contains("-j DNAT"));
    assert!(dnat.clone().count() == 10_000 && dnat.clone().all(|l| !l.contains("--comment")));
    let (steps, names) = walk_cost(nat);
    assert!(names > 2000 * 7, "{names} names");
    assert!(steps < names * 12, "{steps} steps for {names} names");
}

/// Steps of the sorted-list insertion of every chain name `text` references, and the count.
fn walk_cost(text: &str) -> (usize, usize) {
    let mut list: Vec<String> = Vec::new();
    let (mut steps, mut names) = (0, 0);
    for line in text.lines() {
        for name in names_in(line) {
            names += 1;
            let at = list.iter().take_while(|n| n.as_str() < name).count();
            steps += at + 1;
            if list.get(at).is_none_or(|n| n != name) {
                list.insert(at, name.to_owned());
            }
        }
    }
    (steps, names)
}

/// The names iptables-nft puts in its list for one input line: the chain of `:`, `-A`, `-I`,
/// `-D`, `-X`, and the `-j`/`-g` target, whatever it is (built-in targets included).
fn names_in(line: &str) -> Vec<&str> {
    if let Some(decl) = line.strip_prefix(':') {
        return decl.split_whitespace().take(1).collect();
    }
    let words: Vec<&str> = line.split_whitespace().collect();
    let mut out: Vec<&str> = words.get(1).into_iter().copied().collect();
    if let Some(at) = words.iter().position(|w| *w == "-j" || *w == "-g") {
        out.extend(words.get(at + 1));
    }
    out
}
