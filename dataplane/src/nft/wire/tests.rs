//! Parsing real notifications, captured from kernel 6.18 with a NETLINK_NETFILTER socket in a
//! namespace while `nft` changed table `ip kproxy` (pids 17567 and 17665).

use super::*;

fn hex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

/// `nft delete element ip kproxy service-ips { 10.0.0.1 . tcp . 80 }`.
const DELSETELEM: &str = "6c0000000e0a0000000000009f440000020000050b0001006b70726f7879000010000200736572766963652d697073003c0003003800010014000100100001000a0000010600000000500000200002001c00020008000100fffffffc0d000200736572766963657300000000";
/// The generation that ended that batch.
const NEWGEN: &str =
    "2c0000000f0a0000010000009f440000000000050800010000000005080002000000449f080003006e667400";
/// `nft flush table ip kproxy` on a table whose chain `nat-output` held two rules: one datagram.
const FLUSH: &str = "80000000080a00000100000001450000020000060b0001006b70726f787900000f0002006e61742d6f757470757400000c000300000000000000000544000400400001000e000100696d6d6564696174650000002c0002000800010000000000200002001c00020008000100fffffffd0d00020073657276696365730000000080000000080a00000100000001450000020000060b0001006b70726f787900000f0002006e61742d6f757470757400000c000300000000000000000644000400400001000e000100696d6d6564696174650000002c0002000800010000000000200002001c00020008000100fffffffd0d000200736572766963657300000000";

#[test]
fn a_deleted_element_names_its_table_and_set() {
    let msgs = parse(&hex(DELSETELEM)).unwrap();
    assert_eq!(
        msgs,
        [Message::Change {
            change: Change {
                family: 2,
                op: Op::Delete,
                object: Object::Element,
                table: "kproxy".into(),
                name: Some("service-ips".into()),
            },
            portid: 17567,
        }]
    );
}

#[test]
fn a_generation_names_the_committing_process() {
    let msgs = parse(&hex(NEWGEN)).unwrap();
    assert_eq!(
        msgs,
        [Message::Generation {
            generation: Generation {
                id: 5,
                pid: 17567,
                process: "nft".into(),
            },
            portid: 17567,
        }]
    );
}

#[test]
fn a_flush_is_one_deleted_rule_per_rule() {
    let msgs = parse(&hex(FLUSH)).unwrap();
    assert_eq!(msgs.len(), 2);
    for m in msgs {
        let Message::Change { change, portid } = m else {
            panic!("{m:?}")
        };
        assert_eq!((change.op, change.object), (Op::Delete, Object::Rule));
        assert_eq!(change.name.as_deref(), Some("nat-output"));
        assert_eq!(portid, 17665);
    }
}

#[test]
fn a_dumped_rule_is_counted_not_taken_for_a_change() {
    let mut b = hex(FLUSH);
    // NEWRULE with NLM_F_MULTI, as a dump answers; then NLMSG_DONE.
    b[4] = NEWRULE as u8;
    b[6] = NLM_F_MULTI as u8;
    b.truncate(0x80);
    b.extend_from_slice(&hex("14000000030002000700000000000000"));
    b.extend_from_slice(&[0; 4]);
    let msgs = parse(&b).unwrap();
    assert_eq!(
        msgs,
        [Message::DumpedRule { seq: 1 }, Message::Done { seq: 7 }]
    );
}

#[test]
fn a_map_is_told_from_a_set_by_its_flags() {
    // NEWSET ip kproxy service-ips, flags NFT_SET_MAP (the attribute order the kernel sends).
    let mut body = vec![2, 0, 0, 0];
    for (ty, v) in [
        (1u16, b"kproxy\0".to_vec()),
        (2, b"service-ips\0".to_vec()),
        (3, 8u32.to_be_bytes().to_vec()),
    ] {
        body.extend_from_slice(&((4 + v.len()) as u16).to_ne_bytes());
        body.extend_from_slice(&ty.to_ne_bytes());
        body.extend_from_slice(&v);
        body.resize(align(body.len()), 0);
    }
    let mut b = Vec::new();
    b.extend_from_slice(&((16 + body.len()) as u32).to_ne_bytes());
    b.extend_from_slice(&(SUBSYS_NFTABLES << 8 | NEWSET).to_ne_bytes());
    b.extend_from_slice(&[0; 10]);
    b.extend_from_slice(&body);
    let Message::Change { change, .. } = &parse(&b).unwrap()[0] else {
        panic!()
    };
    assert_eq!(change.object, Object::Map);
}

#[test]
fn a_truncated_datagram_is_an_error_not_a_panic() {
    let b = hex(NEWGEN);
    assert_eq!(parse(&b[..30]), Err(WireError::Truncated(0)));
    assert_eq!(parse(&b[..10]), Ok(Vec::new()));
}

#[test]
fn the_rule_dump_request_names_table_and_chain() {
    let b = rule_dump_request(9, 2, "kproxy", "services");
    assert_eq!(u32_ne(&b) as usize, b.len());
    assert_eq!(b.len(), 16 + 4 + 12 + 16);
    assert_eq!(&b[4..6], &(10u16 << 8 | 7).to_ne_bytes());
    assert_eq!(&b[6..8], &0x301u16.to_ne_bytes());
    let attrs = Attrs::parse(&b[20..]);
    assert_eq!(attrs.string(1).as_deref(), Some("kproxy"));
    assert_eq!(attrs.string(2).as_deref(), Some("services"));
}
