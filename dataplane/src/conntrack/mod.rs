//! Deleting conntrack entries: the [`ConntrackClient`] trait and [`ConntrackNetlink`], its
//! ctnetlink implementation.
//!
//! Why netlink rather than the `conntrack` CLI: no conntrack-tools binary needed on the node, one
//! table dump per family for all the filters of a sync (the CLI dumps once per filter, i.e. per
//! stale endpoint and VIP), and kernel errors arrive as errnos instead of text on stderr. The messages
//! come from `netlink-packet-netfilter` (see `wire.rs`), the socket from `netlink-sys`.
//!
//! The kernel's ctnetlink delete takes one exact tuple (or flushes everything), so a filtered
//! delete is a dump of the family's table, a match in user space and one delete per matching
//! entry; that is what `conntrack -D` does too. Matching lives on [`FlowFilter::matches`], so
//! the client and the tests agree on what a filter selects.

mod netlink;
pub mod wire;

use std::{net::IpAddr, sync::Arc};

pub use netlink::ConntrackNetlink;
pub use wire::{Entry, FlowTuple};

/// IANA protocol number of UDP, the only protocol a [`FlowFilter`] selects.
pub const IPPROTO_UDP: u8 = 17;

/// The layer-3 family of the entries a filter selects (conntrack defaults to IPv4 otherwise).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum L3 {
    Ipv4,
    Ipv6,
}

impl L3 {
    pub fn of(ip: &IpAddr) -> Self {
        match ip {
            IpAddr::V4(_) => L3::Ipv4,
            IpAddr::V6(_) => L3::Ipv6,
        }
    }
}

/// Selects UDP conntrack entries: every field that is set must match. At least one address or
/// port must be set, so a filter can never select all UDP entries of a family (kube-proxy must
/// not flush other programs' flows, at start-up or ever).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FlowFilter {
    pub l3: L3,
    /// Destination address of the original direction (a Service VIP).
    pub orig_dst: Option<IpAddr>,
    /// Destination port of the original direction (the Service port or NodePort).
    pub orig_dst_port: Option<u16>,
    /// Source address of the reply direction: the endpoint the flow was DNATed to.
    pub reply_src: Option<IpAddr>,
    pub reply_src_port: Option<u16>,
}

impl FlowFilter {
    /// UDP flows to `vip:port` (original direction), whatever they were DNATed to.
    pub fn udp_to(vip: IpAddr, port: u16) -> Self {
        Self {
            l3: L3::of(&vip),
            orig_dst: Some(vip),
            orig_dst_port: Some(port),
            reply_src: None,
            reply_src_port: None,
        }
    }

    /// UDP flows to destination port `port` on any address (a NodePort).
    pub fn udp_to_port(l3: L3, port: u16) -> Self {
        Self {
            l3,
            orig_dst: None,
            orig_dst_port: Some(port),
            reply_src: None,
            reply_src_port: None,
        }
    }

    /// Narrows the filter to flows DNATed to `endpoint ip:port` (their reply source).
    pub fn dnated_to(mut self, ip: IpAddr, port: u16) -> Self {
        self.reply_src = Some(ip);
        self.reply_src_port = Some(port);
        self
    }

    /// Whether `entry` is a UDP entry of this filter's family whose tuples match every set field.
    pub fn matches(&self, entry: &Entry) -> bool {
        let (orig, reply) = (&entry.orig, &entry.reply);
        orig.proto == Some(IPPROTO_UDP)
            && orig.dst.is_some_and(|ip| L3::of(&ip) == self.l3)
            && self.orig_dst.is_none_or(|ip| orig.dst == Some(ip))
            && self.orig_dst_port.is_none_or(|p| orig.dst_port == Some(p))
            && self.reply_src.is_none_or(|ip| reply.src == Some(ip))
            && self
                .reply_src_port
                .is_none_or(|p| reply.src_port == Some(p))
    }

    /// Refuses what no client may run: an unbounded filter, or one mixing families.
    fn validate(&self) -> Result<(), ConntrackError> {
        let bounded = self.orig_dst.is_some()
            || self.orig_dst_port.is_some()
            || self.reply_src.is_some()
            || self.reply_src_port.is_some();
        if !bounded {
            return Err(ConntrackError::Unbounded(self.clone()));
        }
        let consistent = [self.orig_dst, self.reply_src]
            .iter()
            .flatten()
            .all(|ip| L3::of(ip) == self.l3);
        if !consistent {
            return Err(ConntrackError::MixedFamilies(self.clone()));
        }
        Ok(())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConntrackError {
    #[error("refusing a conntrack filter that selects every UDP entry: {0:?}")]
    Unbounded(FlowFilter),
    #[error("conntrack filter mixes address families: {0:?}")]
    MixedFamilies(FlowFilter),
    /// A failure of an earlier filter of the same call, repeated for a later one.
    #[error("conntrack: {0}")]
    Earlier(String),
    /// A socket call or a kernel answer (NLMSG_ERROR) failed. Shared (`Arc`) because one failed
    /// dump fails every filter of its family.
    #[error("conntrack netlink {op}: {source}")]
    Netlink {
        op: &'static str,
        source: Arc<std::io::Error>,
    },
    #[error("entering network namespace {}: {source}", path.display())]
    Netns {
        path: std::path::PathBuf,
        source: Arc<std::io::Error>,
    },
    #[error("conntrack netlink {op}: undecodable answer: {message}")]
    Decode { op: &'static str, message: String },
    /// An exact delete of an entry kproxy must never touch: not UDP, or not of the family
    /// named with it.
    #[error("refusing to delete a conntrack entry that is not UDP of {l3:?}: {entry:?}")]
    Foreign { l3: L3, entry: Box<Entry> },
}

impl ConntrackError {
    fn netlink(op: &'static str, source: std::io::Error) -> Self {
        ConntrackError::Netlink {
            op,
            source: Arc::new(source),
        }
    }

    /// The errno of a failed netlink call or kernel answer.
    pub fn errno(&self) -> Option<i32> {
        match self {
            ConntrackError::Netlink { source, .. } | ConntrackError::Netns { source, .. } => {
                source.raw_os_error()
            }
            _ => None,
        }
    }

    /// The same failure again, for the next filter of a family whose dump failed.
    fn shared(&self) -> Self {
        match self {
            ConntrackError::Netlink { op, source } => ConntrackError::Netlink {
                op,
                source: Arc::clone(source),
            },
            ConntrackError::Netns { path, source } => ConntrackError::Netns {
                path: path.clone(),
                source: Arc::clone(source),
            },
            ConntrackError::Decode { op, message } => ConntrackError::Decode {
                op,
                message: message.clone(),
            },
            other => ConntrackError::Earlier(other.to_string()),
        }
    }
}

/// Whether `entry` is one kproxy may delete when listed from family `l3`: a UDP entry of it.
pub fn check_entry(l3: L3, entry: &Entry) -> Result<(), ConntrackError> {
    let orig = &entry.orig;
    if orig.proto == Some(IPPROTO_UDP) && orig.dst.is_some_and(|ip| L3::of(&ip) == l3) {
        return Ok(());
    }
    Err(ConntrackError::Foreign {
        l3,
        entry: Box::new(entry.clone()),
    })
}

/// Lists and deletes conntrack entries.
pub trait ConntrackClient {
    /// Deletes the entries `filter` selects and returns how many; none matching is `Ok(0)`.
    fn delete(&self, filter: &FlowFilter) -> Result<u64, ConntrackError>;

    /// Deletes the entries each filter selects: one result per filter, in order. An entry that
    /// several filters select counts for the first. The default runs [`Self::delete`] per filter;
    /// a client that must read the whole table to match overrides it to read the table once.
    fn delete_each(&self, filters: &[FlowFilter]) -> Vec<Result<u64, ConntrackError>> {
        filters.iter().map(|f| self.delete(f)).collect()
    }

    /// Every conntrack entry of family `l3` (any protocol), for a caller that decides itself
    /// which are stale.
    fn list(&self, l3: L3) -> Result<Vec<Entry>, ConntrackError>;

    /// Deletes exactly these entries (as [`Self::list`] returned them from family `l3`; UDP
    /// only, see [`check_entry`]): one result per entry, `Ok(false)` when it was gone already
    /// or has been recreated since the listing (a new entry is DNATed by the current rules).
    fn delete_entries(&self, l3: L3, entries: &[Entry]) -> Vec<Result<bool, ConntrackError>>;
}

#[cfg(test)]
mod tests;
