//! The attribute layer of the IPVS family (include/uapi/linux/ip_vs.h): one enum per nest, each
//! keeping what it does not know as `Other(DefaultNla)` so that a newer kernel's attributes
//! survive a parse and emit unchanged. Constants stay private here, next to their enum.

use netlink_packet_core::{
    DecodeError, DefaultNla, Emitable, NLA_F_NESTED, Nla, NlaBuffer, NlasIterator, Parseable,
    emit_u16, emit_u32, emit_u64, parse_string, parse_u8, parse_u16, parse_u16_be, parse_u32,
    parse_u64,
};

/// A nested attribute: its members, and whether the NLA_F_NESTED bit was set (user space sets
/// it, the kernel's answers do not), so that either parses and emits back to the same bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Nested<T> {
    pub attrs: Vec<T>,
    pub flagged: bool,
}

impl<T> Nested<T> {
    /// As user space sends it: flagged.
    pub fn new(attrs: Vec<T>) -> Self {
        Self {
            attrs,
            flagged: true,
        }
    }
}

impl<T: Nla> Nested<T> {
    fn value_len(&self) -> usize {
        self.attrs.as_slice().buffer_len()
    }

    fn emit(&self, buffer: &mut [u8]) {
        self.attrs.as_slice().emit(buffer)
    }

    fn kind(&self, kind: u16) -> u16 {
        if self.flagged {
            kind | NLA_F_NESTED
        } else {
            kind
        }
    }
}

/// Parses a nest's members with `parse_one`.
pub(crate) fn parse_nested<T>(
    buf: &NlaBuffer<&[u8]>,
    parse_one: impl Fn(&NlaBuffer<&[u8]>) -> Result<T, DecodeError>,
) -> Result<Nested<T>, DecodeError> {
    let attrs = NlasIterator::new(buf.value())
        .map(|nla| nla.and_then(|n| parse_one(&n)))
        .collect::<Result<_, _>>()?;
    Ok(Nested {
        attrs,
        flagged: buf.nested_flag(),
    })
}

/// An address as the kernel and ipvsadm send it: `union nf_inet_addr`, 16 bytes whatever the
/// family (an IPv4 address in the first 4), read by the nest's family attribute.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RawAddr(pub Vec<u8>);

fn other(buf: &NlaBuffer<&[u8]>) -> Result<DefaultNla, DecodeError> {
    DefaultNla::parse(buf)
}

/// Declares an attribute enum: its kinds, value types, parse and emit.
/// Value types: `u8`, `u16` (native), `be16` (network order), `u32`, `u64`, `str`
/// (NUL-terminated), `addr` ([`RawAddr`]), `bytes` (`Vec<u8>`), and nests.
macro_rules! attrs {
    (
        $(#[$meta:meta])*
        $name:ident { $( $(#[$vmeta:meta])* $variant:ident = $kind:literal : $ty:tt ),* $(,)? }
    ) => {
        $(#[$meta])*
        #[derive(Clone, Debug, PartialEq, Eq)]
        #[non_exhaustive]
        pub enum $name {
            $( $(#[$vmeta])* $variant(attrs!(@type $ty)), )*
            Other(DefaultNla),
        }

        impl Nla for $name {
            fn value_len(&self) -> usize {
                match self {
                    $( $name::$variant(_v) => attrs!(@len $ty, _v), )*
                    $name::Other(o) => o.value_len(),
                }
            }

            fn kind(&self) -> u16 {
                match self {
                    $( $name::$variant(_v) => attrs!(@kind $ty, _v, $kind), )*
                    $name::Other(o) => o.kind(),
                }
            }

            fn emit_value(&self, buffer: &mut [u8]) {
                match self {
                    $( $name::$variant(v) => attrs!(@emit $ty, v, buffer), )*
                    $name::Other(o) => o.emit_value(buffer),
                }
            }
        }

        impl $name {
            pub(crate) fn parse(buf: &NlaBuffer<&[u8]>) -> Result<Self, DecodeError> {
                let v = buf.value();
                Ok(match buf.kind() {
                    $( $kind => $name::$variant(attrs!(@parse $ty, v, buf)), )*
                    _ => $name::Other(other(buf)?),
                })
            }
        }
    };
    (@type u8) => { u8 };
    (@type u16) => { u16 };
    (@type be16) => { u16 };
    (@type u32) => { u32 };
    (@type u64) => { u64 };
    (@type str) => { String };
    (@type addr) => { RawAddr };
    (@type bytes) => { Vec<u8> };
    (@type [$nest:ident]) => { Nested<$nest> };
    (@len u8, $v:ident) => { 1 };
    (@len u16, $v:ident) => { 2 };
    (@len be16, $v:ident) => { 2 };
    (@len u32, $v:ident) => { 4 };
    (@len u64, $v:ident) => { 8 };
    (@len str, $v:ident) => { $v.len() + 1 };
    (@len addr, $v:ident) => { $v.0.len() };
    (@len bytes, $v:ident) => { $v.len() };
    (@len [$nest:ident], $v:ident) => { $v.value_len() };
    (@kind [$nest:ident], $v:ident, $kind:literal) => { $v.kind($kind) };
    (@kind $ty:tt, $v:ident, $kind:literal) => { $kind };
    (@emit u8, $v:ident, $b:ident) => { $b[0] = *$v };
    (@emit u16, $v:ident, $b:ident) => { emit_u16($b, *$v).expect("sized") };
    (@emit be16, $v:ident, $b:ident) => { $b.copy_from_slice(&$v.to_be_bytes()) };
    (@emit u32, $v:ident, $b:ident) => { emit_u32($b, *$v).expect("sized") };
    (@emit u64, $v:ident, $b:ident) => { emit_u64($b, *$v).expect("sized") };
    (@emit str, $v:ident, $b:ident) => {{
        $b[..$v.len()].copy_from_slice($v.as_bytes());
        $b[$v.len()] = 0;
    }};
    (@emit addr, $v:ident, $b:ident) => { $b.copy_from_slice(&$v.0) };
    (@emit bytes, $v:ident, $b:ident) => { $b.copy_from_slice($v) };
    (@emit [$nest:ident], $v:ident, $b:ident) => { $v.emit($b) };
    (@parse u8, $v:ident, $buf:ident) => { parse_u8($v)? };
    (@parse u16, $v:ident, $buf:ident) => { parse_u16($v)? };
    (@parse be16, $v:ident, $buf:ident) => { parse_u16_be($v)? };
    (@parse u32, $v:ident, $buf:ident) => { parse_u32($v)? };
    (@parse u64, $v:ident, $buf:ident) => { parse_u64($v)? };
    (@parse str, $v:ident, $buf:ident) => { parse_string($v)? };
    (@parse addr, $v:ident, $buf:ident) => { RawAddr($v.to_vec()) };
    (@parse bytes, $v:ident, $buf:ident) => { $v.to_vec() };
    (@parse [$nest:ident], $v:ident, $buf:ident) => { parse_nested($buf, $nest::parse)? };
}

attrs! {
    /// IPVS_SVC_ATTR_*: a virtual service.
    ServiceAttr {
        Family = 1: u16,
        Protocol = 2: u16,
        Address = 3: addr,
        Port = 4: be16,
        FwMark = 5: u32,
        Scheduler = 6: str,
        /// `struct ip_vs_flags { flags, mask }`, native order.
        Flags = 7: bytes,
        /// Persistence timeout, seconds.
        Timeout = 8: u32,
        /// Persistence netmask: an IPv4 mask as the kernel stores it, or an IPv6 prefix length.
        Netmask = 9: u32,
        Stats = 10: [StatsAttr],
        PeName = 11: str,
        Stats64 = 12: [Stats64Attr],
    }
}

attrs! {
    /// IPVS_DEST_ATTR_*: a real server of a virtual service.
    DestAttr {
        Address = 1: addr,
        Port = 2: be16,
        FwdMethod = 3: u32,
        Weight = 4: u32,
        UpperThreshold = 5: u32,
        LowerThreshold = 6: u32,
        ActiveConns = 7: u32,
        InactiveConns = 8: u32,
        PersistentConns = 9: u32,
        Stats = 10: [StatsAttr],
        Family = 11: u16,
        Stats64 = 12: [Stats64Attr],
        TunnelType = 13: u8,
        TunnelPort = 14: be16,
        TunnelFlags = 15: u16,
    }
}

attrs! {
    /// IPVS_DAEMON_ATTR_*: a connection synchronisation daemon.
    DaemonAttr {
        State = 1: u32,
        McastInterface = 2: str,
        SyncId = 3: u32,
        SyncMaxLen = 4: u16,
        McastGroup = 5: bytes,
        McastGroup6 = 6: bytes,
        McastPort = 7: u16,
        McastTtl = 8: u8,
    }
}

attrs! {
    /// IPVS_STATS_ATTR_* in IPVS_*_ATTR_STATS: 32-bit counters, 64-bit byte counts.
    StatsAttr {
        Conns = 1: u32,
        InPackets = 2: u32,
        OutPackets = 3: u32,
        InBytes = 4: u64,
        OutBytes = 5: u64,
        Cps = 6: u32,
        InPps = 7: u32,
        OutPps = 8: u32,
        InBps = 9: u32,
        OutBps = 10: u32,
    }
}

attrs! {
    /// IPVS_STATS_ATTR_* in IPVS_*_ATTR_STATS64: every counter 64 bits (PAD is kept as `Other`).
    Stats64Attr {
        Conns = 1: u64,
        InPackets = 2: u64,
        OutPackets = 3: u64,
        InBytes = 4: u64,
        OutBytes = 5: u64,
        Cps = 6: u64,
        InPps = 7: u64,
        OutPps = 8: u64,
        InBps = 9: u64,
        OutBps = 10: u64,
    }
}

attrs! {
    /// IPVS_CMD_ATTR_*: the top level of every command but the info reply.
    IpvsAttr {
        Service = 1: [ServiceAttr],
        Dest = 2: [DestAttr],
        Daemon = 3: [DaemonAttr],
        TimeoutTcp = 4: u32,
        TimeoutTcpFin = 5: u32,
        TimeoutUdp = 6: u32,
    }
}

attrs! {
    /// IPVS_INFO_ATTR_*: the top level of the answer to IPVS_CMD_GET_INFO, whose numbers
    /// overlap IPVS_CMD_ATTR_*'s.
    InfoAttr {
        /// `major << 16 | minor << 8 | patch`.
        Version = 1: u32,
        ConnTableSize = 2: u32,
    }
}
