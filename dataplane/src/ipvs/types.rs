//! What ipvsadm shows: virtual services, real servers (destinations), timeouts, the kernel's
//! IPVS info and sync daemons, as plain structs, with their attribute forms. The attributes are
//! written in the order ipvsadm (libipvs) writes them, so that our requests are byte for byte
//! what `ipvsadm` sends (see `tests.rs`).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::nla::{DestAttr, Nested, RawAddr, ServiceAttr, Stats64Attr, StatsAttr};

const AF_INET: u16 = 2;
const AF_INET6: u16 = 10;
/// IP_VS_SVC_F_PERSISTENT: connections of one client go to one real server for `timeout`.
pub const SVC_F_PERSISTENT: u32 = 0x1;
/// IP_VS_SVC_F_HASHED: set by the kernel on every listed service.
pub const SVC_F_HASHED: u32 = 0x2;

/// A virtual service's transport protocol (IPPROTO_*).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Protocol {
    Tcp,
    Udp,
    Sctp,
    Other(u16),
}

impl Protocol {
    fn number(self) -> u16 {
        match self {
            Protocol::Tcp => 6,
            Protocol::Udp => 17,
            Protocol::Sctp => 132,
            Protocol::Other(n) => n,
        }
    }

    fn from_number(n: u16) -> Self {
        match n {
            6 => Protocol::Tcp,
            17 => Protocol::Udp,
            132 => Protocol::Sctp,
            n => Protocol::Other(n),
        }
    }
}

/// How a real server is reached (IP_VS_CONN_F_*): kproxy uses masquerading (NAT) only.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Forward {
    #[default]
    Masquerade,
    Local,
    Tunnel,
    DirectRoute,
    Bypass,
    Other(u32),
}

impl Forward {
    fn number(self) -> u32 {
        match self {
            Forward::Masquerade => 0,
            Forward::Local => 1,
            Forward::Tunnel => 2,
            Forward::DirectRoute => 3,
            Forward::Bypass => 4,
            Forward::Other(n) => n,
        }
    }

    fn from_number(n: u32) -> Self {
        match n & 0x7 {
            0 => Forward::Masquerade,
            1 => Forward::Local,
            2 => Forward::Tunnel,
            3 => Forward::DirectRoute,
            4 => Forward::Bypass,
            _ => Forward::Other(n),
        }
    }
}

/// Traffic counters of a service or a real server (the kernel's 64-bit ones when it has them).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    pub conns: u64,
    pub in_packets: u64,
    pub out_packets: u64,
    pub in_bytes: u64,
    pub out_bytes: u64,
}

/// A virtual service, as `ipvsadm -A -t ADDR:PORT -s SCHED [-p TIMEOUT]` makes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Service {
    pub address: IpAddr,
    pub protocol: Protocol,
    pub port: u16,
    /// A firewall-mark service (`-f MARK`) instead of an address one, when not 0.
    pub fwmark: u32,
    pub scheduler: String,
    /// IP_VS_SVC_F_*: [`SVC_F_PERSISTENT`], scheduler flags (`sh-fallback` ...).
    pub flags: u32,
    /// Persistence timeout in seconds (with [`SVC_F_PERSISTENT`]).
    pub timeout: u32,
    /// Persistence granularity: an IPv4 netmask as the kernel stores it (`0xffffffff` = one
    /// client address), or an IPv6 prefix length.
    pub netmask: u32,
    pub pe_name: Option<String>,
    /// Only in the kernel's answers.
    pub stats: Option<Stats>,
}

impl Service {
    /// An address service with scheduler `scheduler`, no persistence.
    pub fn new(address: IpAddr, protocol: Protocol, port: u16, scheduler: &str) -> Self {
        Self {
            address,
            protocol,
            port,
            fwmark: 0,
            scheduler: scheduler.to_owned(),
            flags: 0,
            timeout: 0,
            netmask: match address {
                IpAddr::V4(_) => u32::MAX,
                IpAddr::V6(_) => 128,
            },
            pe_name: None,
            stats: None,
        }
    }

    /// With persistence (`-p TIMEOUT`): one client's connections go to one real server.
    pub fn persistent(mut self, timeout: u32) -> Self {
        self.flags |= SVC_F_PERSISTENT;
        self.timeout = timeout;
        self
    }

    /// What identifies the service in the kernel: family, and protocol-address-port or mark.
    pub fn key(&self) -> ServiceKey {
        ServiceKey {
            address: self.address,
            protocol: self.protocol,
            port: self.port,
            fwmark: self.fwmark,
        }
    }

    /// The nest: the identifying attributes, and when `full` the settings too (what a
    /// create, edit or delete sends; a listing of destinations sends only the key).
    pub fn to_attrs(&self, full: bool) -> Nested<ServiceAttr> {
        let mut attrs = self.key().to_attrs().attrs;
        if full {
            attrs.push(ServiceAttr::Scheduler(self.scheduler.clone()));
            if let Some(pe) = &self.pe_name {
                attrs.push(ServiceAttr::PeName(pe.clone()));
            }
            let mut flags = self.flags.to_ne_bytes().to_vec();
            flags.extend(u32::MAX.to_ne_bytes());
            attrs.push(ServiceAttr::Flags(flags));
            attrs.push(ServiceAttr::Timeout(self.timeout));
            attrs.push(ServiceAttr::Netmask(self.netmask));
        }
        Nested::new(attrs)
    }

    /// A service of the kernel's answer; `None` when it lacks its family or address.
    pub fn from_attrs(attrs: &[ServiceAttr]) -> Option<Self> {
        let mut family = None;
        let mut raw = None;
        let mut svc = Service::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), Protocol::Tcp, 0, "");
        for a in attrs {
            match a {
                ServiceAttr::Family(f) => family = Some(*f),
                ServiceAttr::Protocol(p) => svc.protocol = Protocol::from_number(*p),
                ServiceAttr::Address(a) => raw = Some(a),
                ServiceAttr::Port(p) => svc.port = *p,
                ServiceAttr::FwMark(m) => svc.fwmark = *m,
                ServiceAttr::Scheduler(s) => svc.scheduler = s.clone(),
                ServiceAttr::Flags(f) if f.len() >= 4 => {
                    svc.flags = u32::from_ne_bytes(f[..4].try_into().expect("4 bytes"))
                }
                ServiceAttr::Timeout(t) => svc.timeout = *t,
                ServiceAttr::Netmask(n) => svc.netmask = *n,
                ServiceAttr::PeName(p) => svc.pe_name = Some(p.clone()),
                ServiceAttr::Stats(s) => svc.stats = svc.stats.or(Some(stats32(&s.attrs))),
                ServiceAttr::Stats64(s) => svc.stats = Some(stats64(&s.attrs)),
                _ => {}
            }
        }
        svc.address = match raw {
            Some(raw) => addr_of(family?, raw)?,
            None if svc.fwmark != 0 => unspecified(family?)?,
            None => return None,
        };
        Some(svc)
    }
}

/// What identifies a virtual service.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ServiceKey {
    pub address: IpAddr,
    pub protocol: Protocol,
    pub port: u16,
    pub fwmark: u32,
}

impl ServiceKey {
    pub fn to_attrs(&self) -> Nested<ServiceAttr> {
        let mut attrs = vec![ServiceAttr::Family(family_of(&self.address))];
        if self.fwmark != 0 {
            attrs.push(ServiceAttr::FwMark(self.fwmark));
        } else {
            attrs.push(ServiceAttr::Protocol(self.protocol.number()));
            attrs.push(ServiceAttr::Address(raw_of(&self.address)));
            attrs.push(ServiceAttr::Port(self.port));
        }
        Nested::new(attrs)
    }
}

/// A real server of a virtual service, as `ipvsadm -a ... -r ADDR:PORT -m -w WEIGHT` makes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Destination {
    pub address: IpAddr,
    pub port: u16,
    pub forward: Forward,
    pub weight: u32,
    pub upper_threshold: u32,
    pub lower_threshold: u32,
    /// Connections, only in the kernel's answers.
    pub active_conns: u32,
    pub inactive_conns: u32,
    pub persistent_conns: u32,
    pub stats: Option<Stats>,
}

impl Destination {
    /// A masqueraded (NAT) real server of weight `weight`.
    pub fn masquerade(address: IpAddr, port: u16, weight: u32) -> Self {
        Self {
            address,
            port,
            forward: Forward::Masquerade,
            weight,
            upper_threshold: 0,
            lower_threshold: 0,
            active_conns: 0,
            inactive_conns: 0,
            persistent_conns: 0,
            stats: None,
        }
    }

    /// The nest as ipvsadm sends it (tunnel settings zero: kproxy never tunnels).
    pub fn to_attrs(&self) -> Nested<DestAttr> {
        Nested::new(vec![
            DestAttr::Family(family_of(&self.address)),
            DestAttr::Address(raw_of(&self.address)),
            DestAttr::Port(self.port),
            DestAttr::FwdMethod(self.forward.number()),
            DestAttr::Weight(self.weight),
            DestAttr::TunnelType(0),
            DestAttr::TunnelPort(0),
            DestAttr::TunnelFlags(0),
            DestAttr::UpperThreshold(self.upper_threshold),
            DestAttr::LowerThreshold(self.lower_threshold),
        ])
    }

    /// A real server of the kernel's answer; `None` without an address. Old kernels send no
    /// family attribute: then the service's (`service_family`) is the real server's.
    pub fn from_attrs(attrs: &[DestAttr], service_family: IpAddr) -> Option<Self> {
        let mut family = family_of(&service_family);
        let mut raw = None;
        let mut d = Destination::masquerade(service_family, 0, 0);
        for a in attrs {
            match a {
                DestAttr::Family(f) => family = *f,
                DestAttr::Address(a) => raw = Some(a),
                DestAttr::Port(p) => d.port = *p,
                DestAttr::FwdMethod(m) => d.forward = Forward::from_number(*m),
                DestAttr::Weight(w) => d.weight = *w,
                DestAttr::UpperThreshold(t) => d.upper_threshold = *t,
                DestAttr::LowerThreshold(t) => d.lower_threshold = *t,
                DestAttr::ActiveConns(n) => d.active_conns = *n,
                DestAttr::InactiveConns(n) => d.inactive_conns = *n,
                DestAttr::PersistentConns(n) => d.persistent_conns = *n,
                DestAttr::Stats(s) => d.stats = d.stats.or(Some(stats32(&s.attrs))),
                DestAttr::Stats64(s) => d.stats = Some(stats64(&s.attrs)),
                _ => {}
            }
        }
        d.address = addr_of(family, raw?)?;
        Some(d)
    }
}

/// IPVS connection timeouts in seconds (`ipvsadm --set TCP TCPFIN UDP`); 0 leaves a value as
/// it is when set.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Timeouts {
    pub tcp: u32,
    pub tcp_fin: u32,
    pub udp: u32,
}

/// The kernel's IPVS version and connection table size (the head of `ipvsadm -L`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Info {
    /// `major << 16 | minor << 8 | patch`: 1.2.1 is 0x010201.
    pub version: u32,
    pub conn_table_size: u32,
}

fn family_of(addr: &IpAddr) -> u16 {
    match addr {
        IpAddr::V4(_) => AF_INET,
        IpAddr::V6(_) => AF_INET6,
    }
}

/// 16 bytes, as `union nf_inet_addr` (ipvsadm and the kernel send all of it for IPv4 too).
fn raw_of(addr: &IpAddr) -> RawAddr {
    let mut bytes = vec![0; 16];
    match addr {
        IpAddr::V4(a) => bytes[..4].copy_from_slice(&a.octets()),
        IpAddr::V6(a) => bytes.copy_from_slice(&a.octets()),
    }
    RawAddr(bytes)
}

fn addr_of(family: u16, raw: &RawAddr) -> Option<IpAddr> {
    match family {
        AF_INET => Some(IpAddr::V4(
            <[u8; 4]>::try_from(raw.0.get(..4)?).ok()?.into(),
        )),
        AF_INET6 => Some(IpAddr::V6(
            <[u8; 16]>::try_from(raw.0.get(..16)?).ok()?.into(),
        )),
        _ => None,
    }
}

fn unspecified(family: u16) -> Option<IpAddr> {
    match family {
        AF_INET => Some(Ipv4Addr::UNSPECIFIED.into()),
        AF_INET6 => Some(Ipv6Addr::UNSPECIFIED.into()),
        _ => None,
    }
}

fn stats32(attrs: &[StatsAttr]) -> Stats {
    let mut s = Stats::default();
    for a in attrs {
        match a {
            StatsAttr::Conns(n) => s.conns = (*n).into(),
            StatsAttr::InPackets(n) => s.in_packets = (*n).into(),
            StatsAttr::OutPackets(n) => s.out_packets = (*n).into(),
            StatsAttr::InBytes(n) => s.in_bytes = *n,
            StatsAttr::OutBytes(n) => s.out_bytes = *n,
            _ => {}
        }
    }
    s
}

fn stats64(attrs: &[Stats64Attr]) -> Stats {
    let mut s = Stats::default();
    for a in attrs {
        match a {
            Stats64Attr::Conns(n) => s.conns = *n,
            Stats64Attr::InPackets(n) => s.in_packets = *n,
            Stats64Attr::OutPackets(n) => s.out_packets = *n,
            Stats64Attr::InBytes(n) => s.in_bytes = *n,
            Stats64Attr::OutBytes(n) => s.out_bytes = *n,
            _ => {}
        }
    }
    s
}
