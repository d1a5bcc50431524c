//! [`ConntrackNetlink`]: filtered deletes over a NETLINK_NETFILTER socket (ctnetlink), in this
//! network namespace or a named one.

use std::{
    fs::File,
    path::{Path, PathBuf},
    sync::Arc,
};

use netlink_sys::{Socket, SocketAddr, protocols::NETLINK_NETFILTER};
use nix::{
    errno::Errno,
    libc::MSG_TRUNC,
    sched::{CloneFlags, setns},
    sys::{
        socket::{setsockopt, sockopt::ReceiveTimeout},
        time::TimeVal,
    },
};

use super::{
    ConntrackClient, ConntrackError, Entry, FlowFilter, L3, check_entry,
    wire::{self, Answer},
};

/// The kernel sizes a dump batch after the largest buffer `recv` was given, capped at 32 KiB,
/// so 64 KiB always holds a whole batch; `MSG_TRUNC` still reports one that did not fit.
const RECV_BUF: usize = 64 * 1024;

/// How long one `recv` waits for the kernel's next datagram. The kernel answers at once; a
/// socket that never answers would otherwise hold the sync waiting on it for ever (the agent
/// then reports the error, and the next sync opens a new socket).
const RECV_TIMEOUT_SECS: i64 = 10;

/// Deletes UDP conntrack entries through ctnetlink: one dump per family and call, a match in
/// user space ([`FlowFilter::matches`]) and one acknowledged delete per matching entry.
#[derive(Clone, Debug, Default)]
pub struct ConntrackNetlink {
    /// The network namespace to work in (a bind-mounted ns file); `None`: the caller's.
    netns: Option<PathBuf>,
}

impl ConntrackNetlink {
    pub fn new() -> Self {
        Self::default()
    }

    /// Works on the conntrack table of network namespace `name` (as created by `ip netns add`).
    pub fn in_netns(self, name: impl AsRef<str>) -> Self {
        self.in_netns_path(Path::new("/var/run/netns").join(name.as_ref()))
    }

    /// Works in the network namespace of this ns file (`/proc/PID/ns/net`, a bind mount).
    pub fn in_netns_path(mut self, path: impl Into<PathBuf>) -> Self {
        self.netns = Some(path.into());
        self
    }

    fn connect(&self) -> Result<Conn, ConntrackError> {
        let socket = match &self.netns {
            None => open()?,
            Some(path) => open_in(path)?,
        };
        Ok(Conn {
            socket,
            seq: 0,
            buf: Vec::with_capacity(RECV_BUF),
        })
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

fn open() -> Result<Socket, ConntrackError> {
    let err = |op| move |e| ConntrackError::netlink(op, e);
    let mut socket = Socket::new(NETLINK_NETFILTER).map_err(err("socket"))?;
    socket.bind_auto().map_err(err("bind"))?;
    socket
        .connect(&SocketAddr::new(0, 0))
        .map_err(err("connect"))?;
    setsockopt(&socket, ReceiveTimeout, &TimeVal::new(RECV_TIMEOUT_SECS, 0))
        .map_err(|e| err("setsockopt SO_RCVTIMEO")(e.into()))?;
    Ok(socket)
}

/// Opens the socket inside the namespace at `path`. A socket stays in the namespace it was
/// created in, and `setns` moves only the calling thread: so a thread of its own enters the
/// namespace, opens the socket and ends. No thread of the caller ever changes namespace, and
/// nothing has to switch back (a failed switch back would leave a thread in the wrong one).
fn open_in(path: &Path) -> Result<Socket, ConntrackError> {
    let netns_err = |e: std::io::Error| ConntrackError::Netns {
        path: path.to_owned(),
        source: Arc::new(e),
    };
    let ns = File::open(path).map_err(netns_err)?;
    let opened = std::thread::scope(|s| {
        s.spawn(|| {
            setns(&ns, CloneFlags::CLONE_NEWNET).map_err(|e| netns_err(e.into()))?;
            open()
        })
        .join()
    });
    opened.unwrap_or_else(|panic| std::panic::resume_unwind(panic))
}

/// One socket's conversation: requests carry increasing sequence numbers, and answers to
/// other numbers (a late answer to an earlier request) are ignored.
struct Conn {
    socket: Socket,
    seq: u32,
    buf: Vec<u8>,
}

impl Conn {
    fn send(
        &mut self,
        op: &'static str,
        build: impl FnOnce(u32) -> Vec<u8>,
    ) -> Result<u32, ConntrackError> {
        self.seq += 1;
        let bytes = build(self.seq);
        retry_interrupted(|| self.socket.send(&bytes, 0))
            .map_err(|e| ConntrackError::netlink(op, e))?;
        Ok(self.seq)
    }

    /// The answers to request `seq` in the next datagram.
    fn recv(&mut self, op: &'static str, seq: u32) -> Result<Vec<Answer>, ConntrackError> {
        let n = retry_interrupted(|| {
            self.buf.clear();
            self.socket.recv(&mut self.buf, MSG_TRUNC)
        })
        .map_err(|e| recv_error(op, e))?;
        if n > self.buf.len() {
            let message = format!("a {n}-byte datagram did not fit in {RECV_BUF} bytes");
            return Err(ConntrackError::Decode { op, message });
        }
        let answers = wire::parse_answers(&self.buf)
            .map_err(|message| ConntrackError::Decode { op, message })?;
        Ok(answers
            .into_iter()
            .filter_map(|(s, a)| (s == seq).then_some(a))
            .collect())
    }

    /// Reads the whole table of family `l3`, passing each entry to `visit`.
    fn dump(&mut self, l3: L3, mut visit: impl FnMut(Entry)) -> Result<(), ConntrackError> {
        let seq = self.send("dump", |seq| wire::dump_request(l3, seq))?;
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
        let seq = self.send("delete", |seq| wire::delete_request(l3, entry, seq))?;
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

/// A signal arriving during a blocking socket call (the agent handles SIGTERM) is not a failure
/// of the call: it is made again.
fn retry_interrupted<T>(mut call: impl FnMut() -> std::io::Result<T>) -> std::io::Result<T> {
    loop {
        match call() {
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            other => return other,
        }
    }
}

/// A `recv` that timed out (EAGAIN under SO_RCVTIMEO) says so rather than "try again".
fn recv_error(op: &'static str, e: std::io::Error) -> ConntrackError {
    if e.raw_os_error() == Some(Errno::EAGAIN as i32) {
        let message = format!("no answer from the kernel within {RECV_TIMEOUT_SECS} s");
        return ConntrackError::netlink(op, std::io::Error::new(e.kind(), message));
    }
    ConntrackError::netlink(op, e)
}

#[cfg(test)]
mod tests {
    use nix::sys::socket::getsockopt;

    use super::*;

    #[test]
    fn a_socket_waits_for_the_kernel_a_bounded_time() {
        let socket = open().expect("a NETLINK_NETFILTER socket");
        let timeout = getsockopt(&socket, ReceiveTimeout).expect("SO_RCVTIMEO");
        assert_eq!(timeout, TimeVal::new(RECV_TIMEOUT_SECS, 0));
        let timed_out = recv_error("dump", Errno::EAGAIN.into());
        assert_eq!(
            timed_out.to_string(),
            "conntrack netlink dump: no answer from the kernel within 10 s"
        );
        let other = recv_error("dump", Errno::EPERM.into());
        assert_eq!(other.errno(), Some(Errno::EPERM as i32));
    }
}
