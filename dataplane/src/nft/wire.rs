//! The few nf_tables netlink messages kproxy reads itself: change notifications (what the
//! kernel multicasts to group `NFNLGRP_NFTABLES` after each committed batch) and the answers to
//! a rule dump of one chain. Only the attributes needed are read; everything else is skipped.
//!
//! Layout (`linux/netfilter/nf_tables.h`, `nfnetlink.h`): `nlmsghdr` (16 bytes, host order),
//! `nfgenmsg` (family, version, res_id: 4 bytes), then attributes (`nlattr`: u16 length
//! including its 4-byte header, u16 type; payload padded to 4 bytes). Strings are NUL-ended,
//! integers big-endian.

/// `NFNL_SUBSYS_NFTABLES`: the high byte of every nf_tables message type.
const SUBSYS_NFTABLES: u16 = 10;
/// The multicast group of nf_tables change notifications.
pub const NFNLGRP_NFTABLES: u32 = 7;

const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const NLMSG_HDR: usize = 16;
const NFGENMSG: usize = 4;
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_MULTI: u16 = 0x2;
const NLM_F_DUMP: u16 = 0x300;

// `enum nf_tables_msg_types`.
const NEWTABLE: u16 = 0;
const DELTABLE: u16 = 2;
const NEWCHAIN: u16 = 3;
const GETCHAIN: u16 = 4;
const DELCHAIN: u16 = 5;
const NEWRULE: u16 = 6;
const GETRULE: u16 = 7;
const DELRULE: u16 = 8;
const NEWSET: u16 = 9;
const DELSET: u16 = 11;
const NEWSETELEM: u16 = 12;
const DELSETELEM: u16 = 14;
const NEWGEN: u16 = 15;
const NEWOBJ: u16 = 18;
const DELOBJ: u16 = 20;
const NEWFLOWTABLE: u16 = 22;
const DELFLOWTABLE: u16 = 24;

/// `NFT_SET_MAP`, in a set's `NFTA_SET_FLAGS`.
const SET_FLAG_MAP: u32 = 0x8;

/// What was created or deleted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Object {
    Table,
    Chain,
    Rule,
    Set,
    Map,
    /// An element of a set or map (the message does not say which).
    Element,
    /// Stateful objects and flowtables: kproxy has none, but someone may add one to our table.
    Other,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Op {
    New,
    Delete,
}

/// One object created or deleted in a committed batch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Change {
    /// The nfgenmsg family: 2 `ip`, 10 `ip6`, 1 `inet`, ...
    pub family: u8,
    pub op: Op,
    pub object: Object,
    pub table: String,
    /// The chain (of a chain or rule) or set (of a set or element); `None` for a table.
    pub name: Option<String>,
}

/// `NFT_MSG_NEWGEN`: ends each committed batch and names the process that committed it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Generation {
    pub id: u32,
    /// `NFTA_GEN_PROC_PID`: the committing task's pid in the initial pid namespace.
    pub pid: u32,
    pub process: String,
}

/// One netlink message, as far as kproxy cares.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Message {
    /// `portid` is the sender's netlink port id: its pid (in its own pid namespace) for the
    /// first socket of a process, which is what `nft` binds.
    Change {
        change: Change,
        portid: u32,
    },
    Generation {
        generation: Generation,
        portid: u32,
    },
    /// A rule in a dump (`NFT_MSG_NEWRULE` answering a request with sequence `seq`).
    DumpedRule {
        seq: u32,
    },
    Done {
        seq: u32,
    },
    /// An error (negative errno) or, when 0, an acknowledgement.
    Error {
        seq: u32,
        errno: i32,
    },
    Other,
}

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    #[error("truncated netlink message at byte {0}")]
    Truncated(usize),
}

/// Every message in one datagram.
pub fn parse(buf: &[u8]) -> Result<Vec<Message>, WireError> {
    let mut out = Vec::new();
    let mut off = 0;
    while off + NLMSG_HDR <= buf.len() {
        let len = u32_ne(&buf[off..]) as usize;
        if len < NLMSG_HDR || off + len > buf.len() {
            return Err(WireError::Truncated(off));
        }
        let ty = u16::from_ne_bytes([buf[off + 4], buf[off + 5]]);
        let flags = u16::from_ne_bytes([buf[off + 6], buf[off + 7]]);
        let seq = u32_ne(&buf[off + 8..]);
        let portid = u32_ne(&buf[off + 12..]);
        let body = &buf[off + NLMSG_HDR..off + len];
        // A dump answers with NEWRULE messages too, marked as parts of a multipart answer.
        if ty == SUBSYS_NFTABLES << 8 | NEWRULE && flags & NLM_F_MULTI != 0 {
            out.push(Message::DumpedRule { seq });
        } else {
            out.push(message(ty, seq, portid, body)?);
        }
        off += align(len);
    }
    Ok(out)
}

fn message(ty: u16, seq: u32, portid: u32, body: &[u8]) -> Result<Message, WireError> {
    match ty {
        NLMSG_DONE => return Ok(Message::Done { seq }),
        NLMSG_ERROR => {
            let errno = body.get(..4).map_or(0, |b| u32_ne(b) as i32);
            return Ok(Message::Error { seq, errno });
        }
        _ if ty >> 8 != SUBSYS_NFTABLES => return Ok(Message::Other),
        _ => {}
    }
    if body.len() < NFGENMSG {
        return Ok(Message::Other);
    }
    let family = body[0];
    let attrs = Attrs::parse(&body[NFGENMSG..]);
    let msg = ty & 0xff;
    if msg == NEWGEN {
        let generation = Generation {
            id: attrs.u32(1).unwrap_or(0),
            pid: attrs.u32(2).unwrap_or(0),
            process: attrs.string(3).unwrap_or_default(),
        };
        return Ok(Message::Generation { generation, portid });
    }
    let Some((op, object, name_attr)) = classify(msg) else {
        return Ok(Message::Other);
    };
    let object = match object {
        Object::Set if attrs.u32(3).is_some_and(|f| f & SET_FLAG_MAP != 0) => Object::Map,
        o => o,
    };
    let change = Change {
        family,
        op,
        object,
        table: attrs.string(1).unwrap_or_default(),
        name: name_attr.and_then(|a| attrs.string(a)),
    };
    Ok(Message::Change { change, portid })
}

/// The message's operation, object and the attribute holding the object's chain or set name
/// (the table is attribute 1 in all of them).
fn classify(msg: u16) -> Option<(Op, Object, Option<u16>)> {
    Some(match msg {
        NEWTABLE => (Op::New, Object::Table, None),
        DELTABLE => (Op::Delete, Object::Table, None),
        NEWCHAIN => (Op::New, Object::Chain, Some(3)),
        DELCHAIN => (Op::Delete, Object::Chain, Some(3)),
        NEWRULE => (Op::New, Object::Rule, Some(2)),
        DELRULE => (Op::Delete, Object::Rule, Some(2)),
        NEWSET => (Op::New, Object::Set, Some(2)),
        DELSET => (Op::Delete, Object::Set, Some(2)),
        NEWSETELEM => (Op::New, Object::Element, Some(2)),
        DELSETELEM => (Op::Delete, Object::Element, Some(2)),
        NEWOBJ | NEWFLOWTABLE => (Op::New, Object::Other, None),
        DELOBJ | DELFLOWTABLE => (Op::Delete, Object::Other, None),
        _ => return None,
    })
}

/// `NFT_MSG_GETRULE` with `NLM_F_DUMP`, filtered by table and chain: the kernel walks only that
/// chain's rules.
pub fn rule_dump_request(seq: u32, family: u8, table: &str, chain: &str) -> Vec<u8> {
    dump_request(GETRULE, seq, family, &[(1, table), (2, chain)])
}

/// `NFT_MSG_GETCHAIN` with `NLM_F_DUMP`, filtered by table: every chain of one table, without
/// its rules (cheap however many rules the table holds).
pub fn chain_dump_request(seq: u32, family: u8, table: &str) -> Vec<u8> {
    dump_request(GETCHAIN, seq, family, &[(1, table)])
}

fn dump_request(msg: u16, seq: u32, family: u8, attrs: &[(u16, &str)]) -> Vec<u8> {
    let mut b = Vec::with_capacity(64);
    b.extend_from_slice(&0u32.to_ne_bytes()); // length, set below
    b.extend_from_slice(&(SUBSYS_NFTABLES << 8 | msg).to_ne_bytes());
    b.extend_from_slice(&(NLM_F_REQUEST | NLM_F_DUMP).to_ne_bytes());
    b.extend_from_slice(&seq.to_ne_bytes());
    b.extend_from_slice(&0u32.to_ne_bytes());
    b.extend_from_slice(&[family, 0, 0, 0]);
    for (ty, s) in attrs {
        let len = 4 + s.len() + 1;
        b.extend_from_slice(&(len as u16).to_ne_bytes());
        b.extend_from_slice(&ty.to_ne_bytes());
        b.extend_from_slice(s.as_bytes());
        b.push(0);
        b.resize(align(b.len()), 0);
    }
    let len = (b.len() as u32).to_ne_bytes();
    b[..4].copy_from_slice(&len);
    b
}

/// The top-level attributes of one message, by type (nested ones are not opened).
struct Attrs<'a>(Vec<(u16, &'a [u8])>);

impl<'a> Attrs<'a> {
    fn parse(mut buf: &'a [u8]) -> Self {
        let mut out = Vec::new();
        while buf.len() >= 4 {
            let len = u16::from_ne_bytes([buf[0], buf[1]]) as usize;
            // NLA_F_NESTED and NLA_F_NET_BYTEORDER are flags in the type's top bits.
            let ty = u16::from_ne_bytes([buf[2], buf[3]]) & 0x3fff;
            if len < 4 || len > buf.len() {
                break;
            }
            out.push((ty, &buf[4..len]));
            buf = &buf[align(len).min(buf.len())..];
        }
        Self(out)
    }

    fn get(&self, ty: u16) -> Option<&'a [u8]> {
        self.0.iter().find(|(t, _)| *t == ty).map(|(_, v)| *v)
    }

    fn string(&self, ty: u16) -> Option<String> {
        let v = self.get(ty)?;
        let end = v.iter().position(|&c| c == 0).unwrap_or(v.len());
        Some(String::from_utf8_lossy(&v[..end]).into_owned())
    }

    fn u32(&self, ty: u16) -> Option<u32> {
        let v = self.get(ty)?;
        Some(u32::from_be_bytes(v.get(..4)?.try_into().ok()?))
    }
}

fn u32_ne(b: &[u8]) -> u32 {
    u32::from_ne_bytes([b[0], b[1], b[2], b[3]])
}

fn align(len: usize) -> usize {
    (len + 3) & !3
}

#[cfg(test)]
mod tests;
