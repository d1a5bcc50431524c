use kproxy_dataplane::iptables::parse_save;

use super::*;
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
    let text = restore_input(&w, Some(&saved)).to_string();
    assert_eq!(
        text,
        "*nat\n:KPROXY-SERVICES - [0:0]\n:KPROXY-SVC-OLD - [0:0]\n\
         -D PREROUTING -m comment --comment \"kproxy x\" -j KPROXY-SERVICES\n\
         -D PREROUTING -j KPROXY-SVC-OLD\n\
         -I OUTPUT 1 -m comment --comment \"kproxy x\" -j KPROXY-SERVICES\n\
         -X KPROXY-SVC-OLD\nCOMMIT\n"
    );
}
