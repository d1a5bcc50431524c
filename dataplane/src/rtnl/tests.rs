//! rtnetlink bytes written out by hand from include/uapi/linux/rtnetlink.h, if_link.h and
//! if_addr.h (not produced by the crate under test); dataplane/tests/rtnl_netns.rs checks the
//! same requests against the kernel.
//!
//! IP plan: link `kube-ipvs0` (index 7) with 10.96.0.10/32 and fd00:96::10/128; a
//! point-to-point link whose local address 192.0.2.1 talks to peer 192.0.2.2.

use netlink_packet_core::{NetlinkDeserializable, NetlinkHeader, NetlinkMessage};

use super::{messages::*, *};

/// An attribute: little-endian length and type, the value, padding to 4 bytes.
fn nla(kind: u16, value: &[u8]) -> Vec<u8> {
    let len = 4 + value.len();
    let mut v = (len as u16).to_le_bytes().to_vec();
    v.extend(kind.to_le_bytes());
    v.extend(value);
    v.resize(len.next_multiple_of(4), 0);
    v
}

/// A netlink message: 16-byte header (length, type, flags, seq 0, port 0), then the payload.
fn msg(ty: u16, flags: u16, payload: &[u8]) -> Vec<u8> {
    let mut v = ((16 + payload.len()) as u32).to_le_bytes().to_vec();
    v.extend(ty.to_le_bytes());
    v.extend(flags.to_le_bytes());
    v.extend([0; 8]);
    v.extend(payload);
    v
}

/// ifinfomsg: family, pad, type (u16), index (i32), flags, change (u32).
fn ifinfomsg(index: u32) -> Vec<u8> {
    [&[0, 0, 0, 0][..], &index.to_le_bytes(), &[0; 8]].concat()
}

/// ifaddrmsg: family, prefix length, flags, scope, index (u32).
fn ifaddrmsg(family: u8, prefix_len: u8, index: u32) -> Vec<u8> {
    [&[family, prefix_len, 0, 0][..], &index.to_le_bytes()].concat()
}

fn bytes(mut m: NetlinkMessage<RouteNetlinkMessage>) -> Vec<u8> {
    m.finalize();
    let mut out = vec![0; m.buffer_len()];
    m.serialize(&mut out);
    out
}

fn parse(bytes: &[u8]) -> RouteNetlinkMessage {
    let mut header = NetlinkHeader::default();
    header.message_type = u16::from_le_bytes([bytes[4], bytes[5]]);
    RouteNetlinkMessage::deserialize(&header, &bytes[16..]).expect("decodes")
}

#[test]
fn delete_link_names_the_link() {
    // RTM_DELLINK (17), IFLA_IFNAME (3) "kube-ipvs0\0".
    let want = msg(17, 0, &[ifinfomsg(0), nla(3, b"kube-ipvs0\0")].concat());
    assert_eq!(bytes(del_link("kube-ipvs0")), want);
}

#[test]
fn add_dummy_creates_exclusively_a_link_of_kind_dummy() {
    // RTM_NEWLINK (16), NLM_F_CREATE | NLM_F_EXCL; IFLA_LINKINFO (18) { IFLA_INFO_KIND (1) }.
    let info = nla(18, &nla(1, b"dummy\0"));
    let want = msg(
        16,
        0x600,
        &[ifinfomsg(0), nla(3, b"kube-ipvs0\0"), info].concat(),
    );
    assert_eq!(bytes(new_dummy("kube-ipvs0")), want);
}

#[test]
fn an_ipv4_address_request_names_local_and_address_ipv6_only_address() {
    let v4 = LinkAddress {
        index: 7,
        addr: "10.96.0.10".parse().unwrap(),
        prefix_len: 32,
    };
    // RTM_NEWADDR (20), AF_INET (2); IFA_LOCAL (2) then IFA_ADDRESS (1).
    let ip = [10, 96, 0, 10];
    let want = [ifaddrmsg(2, 32, 7), nla(2, &ip), nla(1, &ip)].concat();
    assert_eq!(bytes(new_address(&v4)), msg(20, 0x600, &want));
    let v6 = LinkAddress {
        addr: "fd00:96::10".parse().unwrap(),
        prefix_len: 128,
        ..v4
    };
    // RTM_DELADDR (21), AF_INET6 (10); IFA_ADDRESS only.
    let ip: [u8; 16] = "fd00:96::10"
        .parse::<std::net::Ipv6Addr>()
        .unwrap()
        .octets();
    let want = [ifaddrmsg(10, 128, 7), nla(1, &ip)].concat();
    assert_eq!(bytes(del_address(&v6)), msg(21, 0, &want));
}

#[test]
fn dumps_ask_for_every_link_and_every_address() {
    // NLM_F_DUMP (0x300), an empty ifinfomsg / ifaddrmsg: no filter.
    assert_eq!(bytes(get_links()), msg(18, 0x300, &ifinfomsg(0)));
    assert_eq!(bytes(get_addresses()), msg(22, 0x300, &ifaddrmsg(0, 0, 0)));
}

#[test]
fn an_address_answer_reads_as_its_local_address() {
    // Point-to-point: IFA_ADDRESS (1) is the peer, IFA_LOCAL (2) ours; IFA_LABEL (3) ignored.
    let ptp = [
        ifaddrmsg(2, 32, 4),
        nla(1, &[192, 0, 2, 2]),
        nla(2, &[192, 0, 2, 1]),
        nla(3, b"tun0\0"),
    ];
    let got = address_of(parse(&msg(20, 0, &ptp.concat())));
    let want = LinkAddress {
        index: 4,
        addr: "192.0.2.1".parse().unwrap(),
        prefix_len: 32,
    };
    assert_eq!(got, Some(want));
    let ip: [u8; 16] = "fd00:96::10"
        .parse::<std::net::Ipv6Addr>()
        .unwrap()
        .octets();
    let v6 = [ifaddrmsg(10, 128, 7), nla(1, &ip)].concat();
    let got = address_of(parse(&msg(20, 0, &v6))).unwrap();
    assert_eq!((got.addr, got.index), ("fd00:96::10".parse().unwrap(), 7));
}

#[test]
fn a_link_answer_reads_as_name_index_and_kind() {
    let veth = [ifinfomsg(3), nla(3, b"v0\0"), nla(18, &nla(1, b"veth\0"))];
    let got = link_of(parse(&msg(16, 0, &veth.concat())));
    let want = Link {
        name: "v0".into(),
        index: 3,
        kind: Some("veth".into()),
    };
    assert_eq!(got, Some(want));
    let lo = [ifinfomsg(1), nla(3, b"lo\0")].concat();
    let got = link_of(parse(&msg(16, 0, &lo))).unwrap();
    assert_eq!((got.index, got.kind), (1, None));
}

#[test]
fn errors_are_classified() {
    let kernel = |errno| RtnlError::Netlink(NetlinkError::kernel("t", errno));
    assert!(RtnlError::NoSuchLink("x".into()).is_not_found());
    assert!(kernel(Errno::EADDRNOTAVAIL as i32).is_not_found());
    assert!(kernel(Errno::EEXIST as i32).is_exists());
    assert!(kernel(Errno::EOPNOTSUPP as i32).is_not_supported());
    assert!(!kernel(Errno::EPERM as i32).is_not_found());
    assert_eq!(
        RtnlError::NoSuchLink("kube-ipvs0".into()).to_string(),
        "no link named \"kube-ipvs0\""
    );
}
