//! Byte-exact tests against what `ipvsadm` and the kernel exchanged (`tests/captured.rs`):
//! every captured message parses and emits back to the same bytes, our requests are ipvsadm's
//! byte for byte, and the kernel's answers read as the structs ipvsadm would show.

mod captured;

use std::net::IpAddr;

use netlink_packet_core::{NetlinkMessage, NetlinkPayload};
use netlink_packet_generic::GenlMessage;

use self::captured::*;
use super::{
    message::{IpvsCmd, IpvsMessage},
    nla::{InfoAttr, IpvsAttr, Nested, ServiceAttr},
    *,
};
use crate::netlink::split_messages;

type Msg = NetlinkMessage<GenlMessage<IpvsMessage>>;

fn bytes(hex: &str) -> Vec<u8> {
    let hex: String = hex.split_whitespace().collect();
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).expect("hex"))
        .collect()
}

fn parse(raw: &[u8]) -> Msg {
    NetlinkMessage::deserialize(raw).unwrap_or_else(|e| panic!("{e}: {raw:02x?}"))
}

fn emit(msg: &Msg) -> Vec<u8> {
    let mut out = vec![0; msg.buffer_len()];
    msg.serialize(&mut out);
    out
}

fn payload(msg: Msg) -> IpvsMessage {
    match msg.payload {
        NetlinkPayload::InnerMessage(m) => m.payload,
        other => panic!("not an IPVS message: {other:?}"),
    }
}

/// Every message of every capture (a dump answer holds several in one datagram).
fn all_captured() -> Vec<(&'static str, Vec<u8>)> {
    let all = [
        ADD_TCP,
        ADD_UDP_PERSISTENT,
        ADD_TCP6,
        ADD_SERVER,
        ADD_SERVER6,
        EDIT_SERVER,
        EDIT_SERVER_ACK,
        EDIT_SERVICE,
        LIST_SERVICES,
        LIST_SERVICES_ANSWER,
        LIST_SERVERS,
        LIST_SERVERS_ANSWER,
        SET_TIMEOUTS,
        GET_TIMEOUTS,
        GET_TIMEOUTS_ANSWER,
        LIST_DAEMONS,
        DELETE_SERVER,
        DELETE_SERVICE,
        GET_INFO,
        GET_INFO_ANSWER,
    ];
    let mut out = Vec::new();
    for hex in all {
        let raw = bytes(hex);
        for (_, one) in split_messages(&raw).expect("whole messages") {
            out.push((hex, one.to_vec()));
        }
    }
    out
}

#[test]
fn every_captured_message_parses_and_emits_back_to_the_same_bytes() {
    let all = all_captured();
    assert_eq!(all.len(), 22, "3 services in the listing's datagram");
    for (hex, raw) in all {
        let msg = parse(&raw);
        assert_eq!(emit(&msg), raw, "{hex}: {msg:#?}");
    }
}

/// Our request for `ipvs`, with the captured message's header (sequence, port, flags).
fn ours(captured: &str, ipvs: IpvsMessage) -> Vec<u8> {
    let theirs = parse(&bytes(captured));
    let mut msg = ipvs.into_netlink(0x20, theirs.header.flags);
    msg.header.sequence_number = theirs.header.sequence_number;
    msg.header.port_number = theirs.header.port_number;
    emit(&msg)
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn tcp80() -> Service {
    Service::new(ip("10.96.0.10"), Protocol::Tcp, 80, "rr")
}

/// ipvsadm sends a real server's service whole (its scheduler empty); the client sends the
/// key only, which is all the kernel reads of it.
fn server_msg(cmd: IpvsCmd, svc: &Service, dest: &Destination) -> IpvsMessage {
    let attrs = vec![
        IpvsAttr::Service(svc.to_attrs(true)),
        IpvsAttr::Dest(dest.to_attrs()),
    ];
    IpvsMessage::new(cmd, attrs)
}

#[test]
fn our_requests_are_ipvsadms_byte_for_byte() {
    let svc = |s: Service| {
        IpvsMessage::new(
            IpvsCmd::NewService,
            vec![IpvsAttr::Service(s.to_attrs(true))],
        )
    };
    assert_eq!(ours(ADD_TCP, svc(tcp80())), bytes(ADD_TCP));
    let udp = Service::new(ip("10.96.0.10"), Protocol::Udp, 53, "wrr").persistent(10800);
    assert_eq!(
        ours(ADD_UDP_PERSISTENT, svc(udp)),
        bytes(ADD_UDP_PERSISTENT)
    );
    let v6 = Service::new(ip("fd00::10"), Protocol::Tcp, 443, "rr");
    assert_eq!(ours(ADD_TCP6, svc(v6.clone())), bytes(ADD_TCP6));
    let mut edit = tcp80();
    edit.scheduler = "wlc".into();
    let edit = IpvsMessage::new(
        IpvsCmd::SetService,
        vec![IpvsAttr::Service(edit.to_attrs(true))],
    );
    assert_eq!(ours(EDIT_SERVICE, edit), bytes(EDIT_SERVICE));

    let unscheduled = |mut s: Service| {
        s.scheduler.clear();
        s
    };
    let ep = Destination::masquerade(ip("10.244.1.5"), 8080, 1);
    let add = server_msg(IpvsCmd::NewDest, &unscheduled(tcp80()), &ep);
    assert_eq!(ours(ADD_SERVER, add), bytes(ADD_SERVER));
    let ep6 = Destination::masquerade(ip("fd00:1::5"), 8443, 1);
    let add6 = server_msg(IpvsCmd::NewDest, &unscheduled(v6), &ep6);
    assert_eq!(ours(ADD_SERVER6, add6), bytes(ADD_SERVER6));
    let quiesced = Destination {
        weight: 0,
        ..ep.clone()
    };
    let edit = server_msg(IpvsCmd::SetDest, &unscheduled(tcp80()), &quiesced);
    assert_eq!(ours(EDIT_SERVER, edit), bytes(EDIT_SERVER));
    // ipvsadm fills in its defaults (-g, -w 1), which the kernel does not read in a delete.
    let defaults = Destination {
        forward: Forward::DirectRoute,
        ..ep.clone()
    };
    let del = server_msg(IpvsCmd::DelDest, &unscheduled(tcp80()), &defaults);
    assert_eq!(ours(DELETE_SERVER, del), bytes(DELETE_SERVER));

    let t = Timeouts {
        tcp: 900,
        tcp_fin: 120,
        udp: 300,
    };
    let attrs = vec![
        IpvsAttr::TimeoutTcp(t.tcp),
        IpvsAttr::TimeoutTcpFin(t.tcp_fin),
        IpvsAttr::TimeoutUdp(t.udp),
    ];
    let set = IpvsMessage::new(IpvsCmd::SetConfig, attrs);
    assert_eq!(ours(SET_TIMEOUTS, set), bytes(SET_TIMEOUTS));
    for (hex, cmd) in [
        (LIST_SERVICES, IpvsCmd::GetService),
        (GET_TIMEOUTS, IpvsCmd::GetConfig),
        (GET_INFO, IpvsCmd::GetInfo),
        (LIST_DAEMONS, IpvsCmd::GetDaemon),
    ] {
        assert_eq!(
            ours(hex, IpvsMessage::new(cmd, vec![])),
            bytes(hex),
            "{cmd:?}"
        );
    }
    let list = IpvsMessage::new(
        IpvsCmd::GetDest,
        vec![IpvsAttr::Service(tcp80().key().to_attrs())],
    );
    assert_eq!(ours(LIST_SERVERS, list), bytes(LIST_SERVERS));
}

fn services_of(msg: IpvsMessage) -> Vec<Service> {
    msg.attrs
        .into_iter()
        .filter_map(|a| match a {
            IpvsAttr::Service(s) => Service::from_attrs(&s.attrs),
            _ => None,
        })
        .collect()
}

#[test]
fn the_kernels_answers_read_as_ipvsadm_shows_them() {
    let raw = bytes(LIST_SERVICES_ANSWER);
    let msgs = split_messages(&raw).unwrap();
    let services: Vec<Service> = msgs
        .iter()
        .flat_map(|(_, m)| services_of(payload(parse(m))))
        .collect();
    let shown: Vec<(IpAddr, Protocol, u16, &str, u32, u32)> = services
        .iter()
        .map(|s| {
            (
                s.address,
                s.protocol,
                s.port,
                s.scheduler.as_str(),
                s.flags,
                s.timeout,
            )
        })
        .collect();
    assert_eq!(
        shown,
        [
            (ip("fd00::10"), Protocol::Tcp, 443, "rr", SVC_F_HASHED, 0),
            (ip("10.96.0.10"), Protocol::Tcp, 80, "wlc", SVC_F_HASHED, 0),
            (
                ip("10.96.0.10"),
                Protocol::Udp,
                53,
                "wrr",
                SVC_F_HASHED | SVC_F_PERSISTENT,
                10800
            ),
        ]
    );
    assert_eq!(services[0].stats, Some(Stats::default()));

    let answer = payload(parse(&bytes(LIST_SERVERS_ANSWER)));
    assert_eq!(answer.cmd, IpvsCmd::NewDest);
    let dests: Vec<Destination> = answer
        .attrs
        .iter()
        .filter_map(|a| match a {
            IpvsAttr::Dest(d) => Destination::from_attrs(&d.attrs, ip("10.96.0.10")),
            _ => None,
        })
        .collect();
    assert_eq!(dests.len(), 1);
    assert_eq!((dests[0].address, dests[0].port), (ip("10.244.1.5"), 8080));
    assert_eq!(
        (dests[0].forward, dests[0].weight),
        (Forward::Masquerade, 0)
    );

    let t = payload(parse(&bytes(GET_TIMEOUTS_ANSWER)));
    assert_eq!(
        t.attrs,
        [
            IpvsAttr::TimeoutTcp(900),
            IpvsAttr::TimeoutTcpFin(120),
            IpvsAttr::TimeoutUdp(300)
        ]
    );
    let info = payload(parse(&bytes(GET_INFO_ANSWER)));
    assert_eq!(info.cmd, IpvsCmd::SetInfo);
    assert_eq!(
        info.info,
        [InfoAttr::Version(0x010201), InfoAttr::ConnTableSize(4096)]
    );
}

#[test]
fn unknown_attributes_are_kept_through_parse_and_emit() {
    // A service nest with an attribute this code does not know (kind 99, 4 bytes).
    let mut nest = tcp80().to_attrs(true);
    let unknown = netlink_packet_core::DefaultNla::new(99, vec![1, 2, 3, 4]);
    nest.attrs.push(ServiceAttr::Other(unknown.clone()));
    let mut msg =
        IpvsMessage::new(IpvsCmd::NewService, vec![IpvsAttr::Service(nest)]).into_netlink(0x20, 0);
    msg.header.sequence_number = 7;
    let raw = emit(&msg);
    let back = payload(parse(&raw));
    let IpvsAttr::Service(Nested {
        attrs,
        flagged: true,
    }) = &back.attrs[0]
    else {
        panic!("{back:?}");
    };
    assert_eq!(attrs.last(), Some(&ServiceAttr::Other(unknown)));
    assert_eq!(emit(&parse(&raw)), raw);
}
