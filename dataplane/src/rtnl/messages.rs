//! rtnetlink requests for links and addresses, and the parts of the kernel's answers kproxy
//! reads. Pure (messages in, messages out); the types are `netlink-packet-route`'s.

use std::net::IpAddr;

use netlink_packet_core::{NLM_F_CREATE, NLM_F_DUMP, NLM_F_EXCL, NetlinkHeader, NetlinkMessage};
use netlink_packet_route::{
    AddressFamily, RouteNetlinkMessage,
    address::{AddressAttribute, AddressMessage},
    link::{InfoKind, LinkAttribute, LinkInfo, LinkMessage},
};

/// A network interface as `ip link` lists it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Link {
    pub name: String,
    pub index: u32,
    /// The driver kind of a virtual link (`dummy`, `veth`, `bridge`); `None` for a physical
    /// one or the loopback.
    pub kind: Option<String>,
}

/// An address on a link, as `ip addr` lists it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LinkAddress {
    /// The index of the link it is on.
    pub index: u32,
    pub addr: IpAddr,
    pub prefix_len: u8,
}

/// The request is for a whole table (NLMSG_DONE ends the answer).
const DUMP: u16 = NLM_F_DUMP;
/// Create, and fail with EEXIST if it exists (`ip link add`, `ip addr add`).
const CREATE: u16 = NLM_F_CREATE | NLM_F_EXCL;

fn message(flags: u16, inner: RouteNetlinkMessage) -> NetlinkMessage<RouteNetlinkMessage> {
    let mut header = NetlinkHeader::default();
    header.flags = flags;
    NetlinkMessage::new(header, inner.into())
}

fn link_named(name: &str, attributes: Vec<LinkAttribute>) -> LinkMessage {
    let mut link = LinkMessage::default();
    link.attributes.push(LinkAttribute::IfName(name.to_owned()));
    link.attributes.extend(attributes);
    link
}

/// RTM_GETLINK dump: every link.
pub fn get_links() -> NetlinkMessage<RouteNetlinkMessage> {
    message(DUMP, RouteNetlinkMessage::GetLink(LinkMessage::default()))
}

/// RTM_GETLINK of the link named `name` (ENODEV when there is none).
pub fn get_link(name: &str) -> NetlinkMessage<RouteNetlinkMessage> {
    message(0, RouteNetlinkMessage::GetLink(link_named(name, vec![])))
}

/// RTM_NEWLINK of a link of kind `dummy` named `name` (`ip link add NAME type dummy`).
pub fn new_dummy(name: &str) -> NetlinkMessage<RouteNetlinkMessage> {
    let info = LinkAttribute::LinkInfo(vec![LinkInfo::Kind(InfoKind::Dummy)]);
    message(
        CREATE,
        RouteNetlinkMessage::NewLink(link_named(name, vec![info])),
    )
}

/// RTM_DELLINK of the link named `name` (`ip link del NAME`).
pub fn del_link(name: &str) -> NetlinkMessage<RouteNetlinkMessage> {
    message(0, RouteNetlinkMessage::DelLink(link_named(name, vec![])))
}

/// RTM_GETADDR dump: every address of every link, both families.
pub fn get_addresses() -> NetlinkMessage<RouteNetlinkMessage> {
    message(
        DUMP,
        RouteNetlinkMessage::GetAddress(AddressMessage::default()),
    )
}

fn address_message(a: &LinkAddress) -> AddressMessage {
    let mut msg = AddressMessage::default();
    msg.header.family = match a.addr {
        IpAddr::V4(_) => AddressFamily::Inet,
        IpAddr::V6(_) => AddressFamily::Inet6,
    };
    msg.header.prefix_len = a.prefix_len;
    msg.header.index = a.index;
    // As `ip addr` sends it: IPv4 names the local address and the (same) peer address, IPv6
    // only the address.
    if a.addr.is_ipv4() {
        msg.attributes.push(AddressAttribute::Local(a.addr));
    }
    msg.attributes.push(AddressAttribute::Address(a.addr));
    msg
}

/// RTM_NEWADDR of `a` (`ip addr add ADDR/LEN dev LINK`; EEXIST when it is there).
pub fn new_address(a: &LinkAddress) -> NetlinkMessage<RouteNetlinkMessage> {
    message(CREATE, RouteNetlinkMessage::NewAddress(address_message(a)))
}

/// RTM_DELADDR of `a` (`ip addr del`; EADDRNOTAVAIL when it is not there).
pub fn del_address(a: &LinkAddress) -> NetlinkMessage<RouteNetlinkMessage> {
    message(0, RouteNetlinkMessage::DelAddress(address_message(a)))
}

/// The link a RTM_NEWLINK answer describes; `None` for other messages or one without a name.
pub fn link_of(msg: RouteNetlinkMessage) -> Option<Link> {
    let RouteNetlinkMessage::NewLink(link) = msg else {
        return None;
    };
    let mut name = None;
    let mut kind = None;
    for attr in link.attributes {
        match attr {
            LinkAttribute::IfName(n) => name = Some(n),
            LinkAttribute::LinkInfo(infos) => {
                kind = infos.into_iter().find_map(|i| match i {
                    LinkInfo::Kind(k) => Some(k.to_string()),
                    _ => None,
                })
            }
            _ => {}
        }
    }
    let index = link.header.index;
    name.map(|name| Link { name, index, kind })
}

/// The address a RTM_NEWADDR answer describes. For IPv4 that is IFA_LOCAL: IFA_ADDRESS is the
/// peer's on a point-to-point link (`ip addr` shows IFA_LOCAL too). IPv6 has only IFA_ADDRESS.
pub fn address_of(msg: RouteNetlinkMessage) -> Option<LinkAddress> {
    let RouteNetlinkMessage::NewAddress(a) = msg else {
        return None;
    };
    let (mut local, mut address) = (None, None);
    for attr in &a.attributes {
        match attr {
            AddressAttribute::Local(ip) => local = Some(*ip),
            AddressAttribute::Address(ip) => address = Some(*ip),
            _ => {}
        }
    }
    local.or(address).map(|addr| LinkAddress {
        index: a.header.index,
        addr,
        prefix_len: a.header.prefix_len,
    })
}
