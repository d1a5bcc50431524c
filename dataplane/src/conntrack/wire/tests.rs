//! ctnetlink bytes written out by hand from the layout in include/uapi/linux/netfilter/
//! nfnetlink_conntrack.h and nfnetlink.h (not captured with nlmon), not produced by the crate
//! under test, so encoder and decoder are each checked against an independent source;
//! dataplane/tests/conntrack_netlink.rs checks them against the kernel.
//!
//! IP plan: client 10.0.0.2:40000 -> VIP 172.30.0.47:53, DNATed to endpoint 10.180.0.1:5353.

use super::*;
use crate::netlink::split_messages;

/// A datagram's messages as the client reads them: `(sequence number, answer)` each.
fn parse_answers(batch: &[u8]) -> Vec<(u32, Answer)> {
    let messages = split_messages(batch).expect("well-formed lengths");
    (messages.into_iter())
        .map(|(seq, bytes)| (seq, parse_answer(bytes)))
        .collect()
}

/// An attribute: little-endian length and type, the value, padding to 4 bytes.
fn nla(kind: u16, value: &[u8]) -> Vec<u8> {
    let len = 4 + value.len();
    let mut v = (len as u16).to_le_bytes().to_vec();
    v.extend(kind.to_le_bytes());
    v.extend(value);
    v.resize(len.next_multiple_of(4), 0);
    v
}

/// A nested attribute, NLA_F_NESTED set as the kernel sets it.
fn nested(kind: u16, parts: &[Vec<u8>]) -> Vec<u8> {
    nla(kind | 0x8000, &parts.concat())
}

/// A netlink message: 16-byte header (length, type, flags, seq, port 0), then the payload.
fn msg(ty: u16, flags: u16, seq: u32, payload: &[u8]) -> Vec<u8> {
    let mut v = ((16 + payload.len()) as u32).to_le_bytes().to_vec();
    v.extend(ty.to_le_bytes());
    v.extend(flags.to_le_bytes());
    v.extend(seq.to_le_bytes());
    v.extend(0u32.to_le_bytes());
    v.extend(payload);
    v
}

/// CTA_TUPLE_{ORIG,REPLY} (`kind` 1 or 2) of an IPv4 flow.
fn tuple(kind: u16, src: [u8; 4], dst: [u8; 4], proto: u8, sport: u16, dport: u16) -> Vec<u8> {
    let ip = nested(1, &[nla(1, &src), nla(2, &dst)]);
    let ports = [nla(2, &sport.to_be_bytes()), nla(3, &dport.to_be_bytes())];
    let proto = nested(2, &[vec![nla(1, &[proto])], ports.to_vec()].concat());
    nested(kind, &[ip, proto])
}

fn udp_entry() -> Entry {
    Entry {
        orig: FlowTuple {
            src: Some("10.0.0.2".parse().unwrap()),
            dst: Some("172.30.0.47".parse().unwrap()),
            proto: Some(17),
            src_port: Some(40000),
            dst_port: Some(53),
        },
        reply: FlowTuple {
            src: Some("10.180.0.1".parse().unwrap()),
            dst: Some("10.0.0.2".parse().unwrap()),
            proto: Some(17),
            src_port: Some(5353),
            dst_port: Some(40000),
        },
        zone: Some(7),
        id: Some(0x0102_0304),
    }
}

#[test]
fn dump_request_is_a_ct_get_dump_of_one_family() {
    #[rustfmt::skip]
    let v4 = [
        20, 0, 0, 0,   0x01, 0x01,   0x01, 0x03,  // len 20; (CTNETLINK << 8) | CT_GET; REQUEST|DUMP
        9, 0, 0, 0,    0, 0, 0, 0,                 // seq 9, port 0
        2, 0, 0, 0,                                // nfgenmsg: AF_INET, v0, res_id 0
    ];
    assert_eq!(dump_request(L3::Ipv4, 9), v4);
    assert_eq!(dump_request(L3::Ipv6, 9)[16], 10, "AF_INET6");
}

#[test]
fn delete_request_carries_the_original_tuple_zone_and_id() {
    #[rustfmt::skip]
    let want: Vec<u8> = [
        &[88, 0, 0, 0,   0x02, 0x01,   0x05, 0x00][..], // len 88; (CTNETLINK << 8) | CT_DELETE; REQUEST|ACK
        &[3, 0, 0, 0,    0, 0, 0, 0],                   // seq 3, port 0
        &[2, 0, 0, 0],                                  // nfgenmsg AF_INET
        &[52, 0, 0x01, 0x80],                           // CTA_TUPLE_ORIG | NLA_F_NESTED
        &[20, 0, 0x01, 0x80],                           //   CTA_TUPLE_IP | NLA_F_NESTED
        &[8, 0, 1, 0,   10, 0, 0, 2],                   //     CTA_IP_V4_SRC 10.0.0.2
        &[8, 0, 2, 0,   172, 30, 0, 47],                //     CTA_IP_V4_DST 172.30.0.47
        &[28, 0, 0x02, 0x80],                           //   CTA_TUPLE_PROTO | NLA_F_NESTED
        &[5, 0, 1, 0,   17, 0, 0, 0],                   //     CTA_PROTO_NUM udp (+ padding)
        &[6, 0, 2, 0,   0x9c, 0x40, 0, 0],              //     CTA_PROTO_SRC_PORT 40000, big-endian
        &[6, 0, 3, 0,   0, 53, 0, 0],                   //     CTA_PROTO_DST_PORT 53
        &[6, 0, 18, 0,  0, 7, 0, 0],                    // CTA_ZONE 7, big-endian
        &[8, 0, 12, 0,  1, 2, 3, 4],                    // CTA_ID 0x01020304, big-endian
    ]
    .concat();
    assert_eq!(delete_request(L3::Ipv4, &udp_entry(), 3), want);
}

#[test]
fn parses_a_dump_batch_with_done() {
    let udp = [
        vec![2, 0, 0, 0],
        tuple(1, [10, 0, 0, 2], [172, 30, 0, 47], 17, 40000, 53),
        tuple(2, [10, 180, 0, 1], [10, 0, 0, 2], 17, 5353, 40000),
        nla(3, &0x188u32.to_be_bytes()), // CTA_STATUS
        nla(7, &30u32.to_be_bytes()),    // CTA_TIMEOUT
        nla(12, &[1, 2, 3, 4]),          // CTA_ID
        nla(18, &[0, 7]),                // CTA_ZONE
    ]
    .concat();
    let tcp = [
        vec![2, 0, 0, 0],
        tuple(1, [10, 0, 0, 2], [172, 30, 0, 47], 6, 41000, 53),
        tuple(2, [10, 180, 0, 1], [10, 0, 0, 2], 6, 53, 41000),
    ]
    .concat();
    let batch = [
        msg(0x0101, 0x2, 5, &udp),                // NLM_F_MULTIPART
        msg(0x0101, 0x2, 4, &tcp),                // another request's answer
        msg(0x0003, 0x2, 5, &0i32.to_le_bytes()), // NLMSG_DONE, status 0
    ]
    .concat();
    let answers = parse_answers(&batch);
    let mut tcp_entry = udp_entry();
    tcp_entry.orig.proto = Some(6);
    tcp_entry.orig.src_port = Some(41000);
    tcp_entry.reply = FlowTuple {
        proto: Some(6),
        src_port: Some(53),
        dst_port: Some(41000),
        ..tcp_entry.reply
    };
    (tcp_entry.zone, tcp_entry.id) = (None, None);
    assert_eq!(
        answers,
        vec![
            (5, Answer::Entry(udp_entry())),
            (4, Answer::Entry(tcp_entry)),
            (5, Answer::Done),
        ]
    );
}

#[test]
fn parses_acks_errors_and_a_failed_dump() {
    // NLMSG_ERROR: the errno (negative), then the header of the request it answers.
    let err = |code: i32| msg(0x0002, 0, 8, &[&code.to_le_bytes()[..], &[0; 16]].concat());
    let done_failed = msg(0x0003, 0x2, 8, &(-4i32).to_le_bytes());
    let batch = [err(0), err(-2), done_failed].concat();
    let answers: Vec<_> = parse_answers(&batch).into_iter().map(|a| a.1).collect();
    assert_eq!(answers, [Answer::Ack, Answer::Failed(2), Answer::Failed(4)]);
}

#[test]
fn an_ipv6_delete_reads_back_as_the_same_tuple() {
    let mut e = udp_entry();
    e.orig.src = Some("fd00::2".parse().unwrap());
    e.orig.dst = Some("fd00:30::47".parse().unwrap());
    (e.zone, e.id) = (None, None);
    let bytes = delete_request(L3::Ipv6, &e, 1);
    assert_eq!(bytes[16], 10, "AF_INET6");
    let answers = parse_answers(&bytes);
    let [(1, Answer::Entry(back))] = answers.as_slice() else {
        panic!("{answers:?}")
    };
    assert_eq!((&back.orig, back.zone, back.id), (&e.orig, None, None));
}
