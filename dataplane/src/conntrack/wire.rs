//! ctnetlink messages: the dump and delete requests, and reading the kernel's answers. Pure
//! (bytes in, bytes out), so it is tested byte for byte without a kernel (`wire_tests.rs`).
//!
//! The message types come from `netlink-packet-netfilter` (0.4 has ctnetlink's
//! IPCTNL_MSG_CT_GET/DELETE with the tuple attributes). It does not model CTA_ZONE and CTA_ID,
//! which a delete needs, so those two travel as raw attributes.

use std::net::IpAddr;

use netlink_packet_core::{
    DefaultNla, NLA_TYPE_MASK, NLM_F_ACK, NLM_F_DUMP, NLM_F_REQUEST, NetlinkBuffer, NetlinkHeader,
    NetlinkMessage, NetlinkPayload, Nla,
};
use netlink_packet_netfilter::{
    NetfilterHeader, NetfilterMessage, NetfilterMessageInner, NetfilterProtoFamily,
    conntrack::{ConntrackAttribute, ConntrackMessage, IPTuple, ProtoTuple, Protocol, Tuple},
};

use super::L3;

/// `u16` zone of a conntrack entry (absent: the default zone 0). Needed in a delete, or the
/// kernel looks the tuple up in zone 0 and answers ENOENT.
const CTA_ZONE: u16 = 18;
/// The entry's id. Sent back in a delete so that an entry recreated under the same tuple since
/// the dump (already DNATed by the new rules) is left alone: the kernel answers ENOENT.
const CTA_ID: u16 = 12;

/// One direction of a conntrack entry. Fields the kernel did not send (ports of ICMP, say) are
/// `None`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct FlowTuple {
    pub src: Option<IpAddr>,
    pub dst: Option<IpAddr>,
    /// IANA protocol number (17 for UDP).
    pub proto: Option<u8>,
    pub src_port: Option<u16>,
    pub dst_port: Option<u16>,
}

/// A conntrack entry as a dump shows it: what matching and deleting need, nothing more.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Entry {
    pub orig: FlowTuple,
    pub reply: FlowTuple,
    pub zone: Option<u16>,
    pub id: Option<u32>,
}

/// One message of the kernel's answer.
#[derive(Debug, PartialEq, Eq)]
pub enum Answer {
    Entry(Entry),
    /// NLMSG_DONE with status 0: the dump is complete.
    Done,
    /// NLMSG_ERROR with code 0: the request succeeded.
    Ack,
    /// NLMSG_ERROR (or a dump's NLMSG_DONE) with this positive errno.
    Failed(i32),
    /// A message that did not decode (skipped), with the reason.
    Undecodable(String),
    /// Anything else (NLMSG_NOOP, other subsystems): ignored.
    Other,
}

fn family(l3: L3) -> NetfilterProtoFamily {
    match l3 {
        L3::Ipv4 => NetfilterProtoFamily::IPv4,
        L3::Ipv6 => NetfilterProtoFamily::IPv6,
    }
}

fn request(l3: L3, message: ConntrackMessage, flags: u16, seq: u32) -> Vec<u8> {
    let mut header = NetlinkHeader::default();
    header.flags = flags;
    header.sequence_number = seq;
    let inner = NetfilterMessage::new(NetfilterHeader::new(family(l3), 0, 0), message);
    let mut packet = NetlinkMessage::new(header, NetlinkPayload::from(inner));
    packet.finalize();
    let mut buf = vec![0; packet.buffer_len()];
    packet.serialize(&mut buf);
    buf
}

/// IPCTNL_MSG_CT_GET with NLM_F_DUMP: every entry of family `l3` (the kernel filters on the
/// nfgenmsg family).
pub fn dump_request(l3: L3, seq: u32) -> Vec<u8> {
    request(
        l3,
        ConntrackMessage::Get(vec![]),
        NLM_F_REQUEST | NLM_F_DUMP,
        seq,
    )
}

/// IPCTNL_MSG_CT_GET of the one entry whose reply direction is `reply` (all five fields set):
/// how a relay learns a redirected UDP flow's original destination, which `SO_ORIGINAL_DST`
/// does not give for UDP. The kernel answers with the entry, or ENOENT.
pub fn get_by_reply_request(l3: L3, reply: &FlowTuple, seq: u32) -> Vec<u8> {
    let attrs = vec![ConntrackAttribute::CtaTupleReply(tuple_attrs(reply))];
    request(l3, ConntrackMessage::Get(attrs), NLM_F_REQUEST, seq)
}

fn tuple_attrs(t: &FlowTuple) -> Vec<Tuple> {
    let ip = [
        t.src.map(IPTuple::SourceAddress),
        t.dst.map(IPTuple::DestinationAddress),
    ];
    let proto = [
        t.proto.map(|p| ProtoTuple::Protocol(Protocol::from(p))),
        t.src_port.map(ProtoTuple::SourcePort),
        t.dst_port.map(ProtoTuple::DestinationPort),
    ];
    vec![
        Tuple::Ip(ip.into_iter().flatten().collect()),
        Tuple::Proto(proto.into_iter().flatten().collect()),
    ]
}

/// IPCTNL_MSG_CT_DELETE of exactly `entry` (its original tuple, zone and id), acknowledged.
/// `l3` is the family it was dumped from.
pub fn delete_request(l3: L3, entry: &Entry, seq: u32) -> Vec<u8> {
    let mut attrs = vec![ConntrackAttribute::CtaTupleOrig(tuple_attrs(&entry.orig))];
    if let Some(zone) = entry.zone {
        let zone = DefaultNla::new(CTA_ZONE, zone.to_be_bytes().to_vec());
        attrs.push(ConntrackAttribute::Other(zone));
    }
    if let Some(id) = entry.id {
        let id = DefaultNla::new(CTA_ID, id.to_be_bytes().to_vec());
        attrs.push(ConntrackAttribute::Other(id));
    }
    let flags = NLM_F_REQUEST | NLM_F_ACK;
    request(l3, ConntrackMessage::Delete(attrs), flags, seq)
}

/// One message of the kernel's answer (its whole bytes, as [`crate::netlink::NetlinkSocket::recv`]
/// passes them). A message that does not decode is reported, to be skipped.
pub fn parse_answer(bytes: &[u8]) -> Answer {
    match NetlinkMessage::<NetfilterMessage>::deserialize(bytes) {
        Ok(msg) => answer(msg.payload),
        Err(e) => {
            let ty = NetlinkBuffer::new(bytes).message_type();
            Answer::Undecodable(format!("{e} (message type {ty:#x})"))
        }
    }
}

fn answer(payload: NetlinkPayload<NetfilterMessage>) -> Answer {
    match payload {
        NetlinkPayload::Done(d) if d.code == 0 => Answer::Done,
        NetlinkPayload::Done(d) => Answer::Failed(d.code.abs()),
        NetlinkPayload::Error(e) if e.raw_code() == 0 => Answer::Ack,
        NetlinkPayload::Error(e) => Answer::Failed(e.raw_code().abs()),
        NetlinkPayload::InnerMessage(m) => match m.inner {
            NetfilterMessageInner::Conntrack(
                ConntrackMessage::New(a) | ConntrackMessage::Get(a) | ConntrackMessage::Delete(a),
            ) => Answer::Entry(entry(&a)),
            _ => Answer::Other,
        },
        _ => Answer::Other,
    }
}

fn entry(attrs: &[ConntrackAttribute]) -> Entry {
    let mut e = Entry::default();
    for attr in attrs {
        match attr {
            ConntrackAttribute::CtaTupleOrig(t) => e.orig = tuple(t),
            ConntrackAttribute::CtaTupleReply(t) => e.reply = tuple(t),
            ConntrackAttribute::Other(nla) => {
                let mut value = vec![0; nla.value_len()];
                nla.emit_value(&mut value);
                match (nla.kind() & NLA_TYPE_MASK, value.as_slice()) {
                    (CTA_ZONE, &[a, b]) => e.zone = Some(u16::from_be_bytes([a, b])),
                    (CTA_ID, &[a, b, c, d]) => e.id = Some(u32::from_be_bytes([a, b, c, d])),
                    _ => {}
                }
            }
            _ => {}
        }
    }
    e
}

fn tuple(parts: &[Tuple]) -> FlowTuple {
    let mut t = FlowTuple::default();
    for part in parts {
        match part {
            Tuple::Ip(ips) => {
                for ip in ips {
                    match ip {
                        IPTuple::SourceAddress(a) => t.src = Some(*a),
                        IPTuple::DestinationAddress(a) => t.dst = Some(*a),
                        _ => {}
                    }
                }
            }
            Tuple::Proto(protos) => {
                for p in protos {
                    match p {
                        ProtoTuple::Protocol(n) => t.proto = Some(u8::from(*n)),
                        ProtoTuple::SourcePort(n) => t.src_port = Some(*n),
                        ProtoTuple::DestinationPort(n) => t.dst_port = Some(*n),
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
    t
}

#[cfg(test)]
mod tests;
