//! [`ConntrackNetlink`]: filtered deletes over a NETLINK_NETFILTER socket (ctnetlink), in this
//! network namespace or another one. The socket plumbing (namespace, sequence numbers, signals,
//! the bounded wait) is the crate's shared [`NetlinkSocket`].

use std::path::PathBuf;

use nix::errno::Errno;

use super::{
    ConntrackClient, ConntrackError, Entry, FlowFilter, L3, check_entry,
    wire::{self, Answer},
};
use crate::{
    netlink::{NETLINK_NETFILTER, NetlinkError, NetlinkSocket},
    netns::Netns,
};

/// Deletes UDP conntrack entries through ctnetlink: one dump per family and call, a match in
/// user space ([`FlowFilter::matches`]) and one acknowledged delete per matching entry.
#[derive(Clone, Debug, Default)]
pub struct ConntrackNetlink {
    /// The network namespace to work in; by default the caller's.
    netns: Netns,
}

impl ConntrackNetlink {
    pub fn new() -> Self {
        Self::default()
    }

    /// Works on the conntrack table of network namespace `name` (as created by `ip netns add`).
    pub fn in_netns(self, name: impl AsRef<str>) -> Self {
        self.with_netns(Netns::named(name))
    }

    /// Works in the network namespace of this ns file (`/proc/PID/ns/net`, a bind mount).
    pub fn in_netns_path(self, path: impl Into<PathBuf>) -> Self {
        self.with_netns(Netns::at_path(path))
    }

    /// Works on the conntrack table of `netns`.
    pub fn with_netns(mut self, netns: Netns) -> Self {
        self.netns = netns;
        self
    }

    fn connect(&self) -> Result<Conn, ConntrackError> {
        let socket = NetlinkSocket::open(NETLINK_NETFILTER, &self.netns)?;
        Ok(Conn { socket })
    }

    /// Deletes, for the filters at `idx` (all of family `l3`), what they select; counts go to
    /// `results`. Matches are collected first and deleted after the dump: a request sent while
    /// the dump is still being read would interleave its answer with the dump's.
    fn delete_family(
        &self,
        l3: L3,
        filters: &[FlowFilter],
        idx: &[usize],
        results: &mut [Result<u64, ConntrackError>],
    ) -> Result<(), ConntrackError> {
        let mut conn = self.connect()?;
        let mut doomed = Vec::new();
        conn.dump(l3, |e| {
            if let Some(&i) = idx.iter().find(|&&i| filters[i].matches(&e)) {
                doomed.push((i, e));
            }
        })?;
        for (i, entry) in doomed {
            match conn.delete(l3, &entry) {
                Ok(true) => {
                    if let Ok(n) = &mut results[i] {
                        *n += 1;
                    }
                }
                Ok(false) => {}
                Err(e) => results[i] = Err(e),
            }
        }
        Ok(())
    }
}

impl ConntrackNetlink {
    /// The entry whose reply direction is exactly `reply` (`None`: no such entry). A relay
    /// that received a REDIRECTed UDP datagram knows the reply tuple (its own address and the
    /// client's); the entry's original direction holds the destination the client used.
    pub fn original_of_reply(
        &self,
        l3: L3,
        reply: &super::FlowTuple,
    ) -> Result<Option<Entry>, ConntrackError> {
        let mut conn = self.connect()?;
        let seq =
            (conn.socket).send_bytes("get", |seq| wire::get_by_reply_request(l3, reply, seq))?;
        loop {
            for answer in conn.recv("get", seq)? {
                match answer {
                    Answer::Entry(e) => return Ok(Some(e)),
                    Answer::Failed(errno) if errno == Errno::ENOENT as i32 => return Ok(None),
                    Answer::Failed(errno) => {
                        let e = std::io::Error::from_raw_os_error(errno);
                        return Err(ConntrackError::netlink("get", e));
                    }
                    _ => {}
                }
            }
        }
    }
}

impl ConntrackClient for ConntrackNetlink {
    fn delete(&self, filter: &FlowFilter) -> Result<u64, ConntrackError> {
        let mut results = self.delete_each(std::slice::from_ref(filter));
        results.pop().expect("one result per filter")
    }

    fn delete_each(&self, filters: &[FlowFilter]) -> Vec<Result<u64, ConntrackError>> {
        let mut results: Vec<_> = filters.iter().map(|f| f.validate().map(|()| 0)).collect();
        for l3 in [L3::Ipv4, L3::Ipv6] {
            let idx: Vec<usize> = (0..filters.len())
                .filter(|&i| results[i].is_ok() && filters[i].l3 == l3)
                .collect();
            if idx.is_empty() {
                continue;
            }
            if let Err(e) = self.delete_family(l3, filters, &idx, &mut results) {
                for &i in &idx {
                    results[i] = Err(e.shared());
                }
            }
        }
        results
    }

    fn list(&self, l3: L3) -> Result<Vec<Entry>, ConntrackError> {
        let mut conn = self.connect()?;
        let mut out = Vec::new();
        conn.dump(l3, |e| out.push(e))?;
        Ok(out)
    }

    fn delete_entries(&self, l3: L3, entries: &[Entry]) -> Vec<Result<bool, ConntrackError>> {
        let checked: Vec<_> = entries.iter().map(|e| check_entry(l3, e)).collect();
        if checked.iter().all(Result::is_err) {
            return checked.into_iter().map(|r| r.map(|()| false)).collect();
        }
        let mut conn = match self.connect() {
            Ok(c) => c,
            Err(e) => {
                let fail = |r: Result<(), _>| r.and(Err(e.shared()));
                return checked.into_iter().map(fail).collect();
            }
        };
        (entries.iter().zip(checked))
            .map(|(entry, ok)| ok.and_then(|()| conn.delete(l3, entry)))
            .collect()
    }
}

/// ctnetlink's dump and delete over one socket. Its answers are read message by message
/// ([`wire::parse_answer`]) rather than through [`NetlinkSocket::request`], so that one entry
/// that does not decode is skipped instead of failing the dump.
struct Conn {
    socket: NetlinkSocket,
}

impl Conn {
    /// The answers to request `seq` in the next datagram.
    fn recv(&mut self, op: &'static str, seq: u32) -> Result<Vec<Answer>, ConntrackError> {
        let mut answers = Vec::new();
        (self.socket).recv(op, seq, |bytes| answers.push(wire::parse_answer(bytes)))?;
        Ok(answers)
    }

    /// Reads the whole table of family `l3`, passing each entry to `visit`.
    fn dump(&mut self, l3: L3, mut visit: impl FnMut(Entry)) -> Result<(), ConntrackError> {
        let seq = (self.socket).send_bytes("dump", |seq| wire::dump_request(l3, seq))?;
        loop {
            for answer in self.recv("dump", seq)? {
                match answer {
                    Answer::Entry(e) => visit(e),
                    Answer::Done => return Ok(()),
                    Answer::Failed(errno) => {
                        let e = std::io::Error::from_raw_os_error(errno);
                        return Err(ConntrackError::netlink("dump", e));
                    }
                    // Not a flow kproxy made (those all decode): leave it, do not fail the rest.
                    Answer::Undecodable(why) => {
                        tracing::warn!(%why, "skipped an undecodable conntrack entry")
                    }
                    Answer::Ack | Answer::Other => {}
                }
            }
        }
    }

    /// Deletes exactly `entry`; `false` when it was gone already (expired, deleted by another
    /// program, or recreated under a new id).
    fn delete(&mut self, l3: L3, entry: &Entry) -> Result<bool, ConntrackError> {
        let seq = (self.socket).send_bytes("delete", |seq| wire::delete_request(l3, entry, seq))?;
        loop {
            for answer in self.recv("delete", seq)? {
                match answer {
                    Answer::Ack => return Ok(true),
                    Answer::Failed(errno) if errno == Errno::ENOENT as i32 => return Ok(false),
                    Answer::Failed(errno) => {
                        let e = std::io::Error::from_raw_os_error(errno);
                        return Err(ConntrackError::netlink("delete", e));
                    }
                    _ => {}
                }
            }
        }
    }
}

impl From<NetlinkError> for ConntrackError {
    fn from(e: NetlinkError) -> Self {
        match e {
            NetlinkError::Netns(e) => ConntrackError::Netns {
                path: e.path,
                source: e.source,
            },
            NetlinkError::Io { op, source } => ConntrackError::Netlink { op, source },
            NetlinkError::Decode { op, message } => ConntrackError::Decode { op, message },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The shared socket's errors keep their op, errno and text under conntrack's prefix.
    #[test]
    fn socket_errors_read_as_conntrack_errors() {
        let timed_out = std::io::Error::new(
            std::io::ErrorKind::WouldBlock,
            "no answer from the kernel within 10 s",
        );
        let e = ConntrackError::from(NetlinkError::io("dump", timed_out));
        assert_eq!(
            e.to_string(),
            "conntrack netlink dump: no answer from the kernel within 10 s"
        );
        let e = ConntrackError::from(NetlinkError::kernel("delete", -1));
        assert_eq!(e.errno(), Some(Errno::EPERM as i32));
        let missing = Netns::at_path("/nonexistent/netns");
        let e = ConntrackError::from(NetlinkError::from(
            missing
                .run(|| Ok::<_, crate::netns::NetnsError>(()))
                .unwrap_err(),
        ));
        assert!(matches!(e, ConntrackError::Netns { .. }), "{e:?}");
        assert_eq!(e.errno(), Some(Errno::ENOENT as i32));
    }
}
