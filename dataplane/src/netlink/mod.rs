//! [`NetlinkSocket`]: the one netlink socket every kernel client of this crate talks through
//! (ctnetlink, rtnetlink, generic netlink), in any network namespace ([`Netns`]).
//!
//! It does the plumbing all of them need and none should repeat: a fresh sequence number per
//! request, answers matched by it (a late answer to an earlier request is dropped), signals
//! (EINTR) retried, NLMSG_ERROR turned into an errno, dumps read until NLMSG_DONE, and a bounded
//! wait for the kernel (SO_RCVTIMEO).
//!
//! Why a blocking socket of our own rather than the `rtnetlink`/`netlink-proto` crates: those
//! are async, built around a tokio connection task, while every caller here is synchronous
//! code run by a mode's sync (or start-up clean-up) that wants one request and its answer. A
//! blocking request-reply over `netlink-sys` with the typed messages of the `netlink-packet-*`
//! crates is all that needs: no runtime, no background task, one socket per call.

mod genl;
#[cfg(test)]
mod tests;

use std::{io, sync::Arc};

use netlink_packet_core::{
    NLM_F_ACK, NLM_F_DUMP, NLM_F_REQUEST, NetlinkBuffer, NetlinkDeserializable, NetlinkMessage,
    NetlinkPayload, NetlinkSerializable,
};
pub use netlink_sys::protocols::{NETLINK_GENERIC, NETLINK_NETFILTER, NETLINK_ROUTE};
use netlink_sys::{Socket, SocketAddr};
use nix::{
    errno::Errno,
    libc::MSG_TRUNC,
    sys::{
        socket::{setsockopt, sockopt::ReceiveTimeout},
        time::TimeVal,
    },
};

use crate::netns::{Netns, NetnsError};

/// The kernel sizes a dump batch after the largest buffer `recv` was given, capped at 32 KiB,
/// so 64 KiB always holds a whole batch; `MSG_TRUNC` still reports one that did not fit.
const RECV_BUF: usize = 64 * 1024;

/// How long one `recv` waits for the kernel's next datagram. The kernel answers at once; a
/// socket that never answers would otherwise hold the sync waiting on it for ever (the caller
/// then reports the error, and the next call opens a new socket).
pub const RECV_TIMEOUT_SECS: i64 = 10;

/// Requests [`NetlinkSocket::request_batch`] leaves unanswered at most: their acknowledgements
/// (about 1 KiB of socket buffer each) must fit the default receive buffer (208 KiB).
pub const BATCH_WINDOW: usize = 128;

/// A failed netlink exchange. Cloneable (`Arc`) because one failed socket or dump fails every
/// request that needed it, and each caller reports it.
#[derive(Clone, Debug, thiserror::Error)]
pub enum NetlinkError {
    #[error(transparent)]
    Netns(#[from] NetnsError),
    /// A socket call failed, or the kernel answered `op` with an errno (NLMSG_ERROR).
    #[error("{op}: {source}")]
    Io {
        op: &'static str,
        source: Arc<io::Error>,
    },
    #[error("{op}: undecodable answer: {message}")]
    Decode { op: &'static str, message: String },
}

impl NetlinkError {
    pub fn io(op: &'static str, source: io::Error) -> Self {
        NetlinkError::Io {
            op,
            source: Arc::new(source),
        }
    }

    /// The kernel's answer to `op` was this errno (positive or negative, as netlink sends it).
    pub fn kernel(op: &'static str, errno: i32) -> Self {
        Self::io(op, io::Error::from_raw_os_error(errno.abs()))
    }

    /// The errno of a failed socket call, kernel answer or namespace switch.
    pub fn errno(&self) -> Option<i32> {
        match self {
            NetlinkError::Netns(e) => e.errno(),
            NetlinkError::Io { source, .. } => source.raw_os_error(),
            NetlinkError::Decode { .. } => None,
        }
    }

    /// The kernel has no such object (ENOENT; ENODEV for a link).
    pub fn is_not_found(&self) -> bool {
        let not_found = [Errno::ENOENT as i32, Errno::ENODEV as i32];
        !matches!(self, NetlinkError::Netns(_))
            && self.errno().is_some_and(|e| not_found.contains(&e))
    }

    /// The object to create exists already (EEXIST).
    pub fn is_exists(&self) -> bool {
        self.errno() == Some(Errno::EEXIST as i32)
    }
}

/// A netlink socket connected to the kernel, opened in a network namespace; one request at a
/// time.
pub struct NetlinkSocket {
    socket: Socket,
    seq: u32,
    buf: Vec<u8>,
}

impl NetlinkSocket {
    /// Opens a socket of `protocol` ([`NETLINK_ROUTE`], [`NETLINK_NETFILTER`],
    /// [`NETLINK_GENERIC`]) inside `netns`; it stays there whichever thread uses it.
    pub fn open(protocol: isize, netns: &Netns) -> Result<Self, NetlinkError> {
        let socket = netns.run(|| open(protocol))?;
        Ok(Self {
            socket,
            seq: 0,
            buf: Vec::with_capacity(RECV_BUF),
        })
    }

    /// Sends the bytes `build` makes for the next sequence number; returns that number.
    pub fn send_bytes(
        &mut self,
        op: &'static str,
        build: impl FnOnce(u32) -> Vec<u8>,
    ) -> Result<u32, NetlinkError> {
        self.seq = self.seq.wrapping_add(1);
        let bytes = build(self.seq);
        retry_interrupted(|| self.socket.send(&bytes, 0)).map_err(|e| NetlinkError::io(op, e))?;
        Ok(self.seq)
    }

    /// Sends `msg` with the next sequence number (its length filled in); returns that number.
    pub fn send<T: NetlinkSerializable>(
        &mut self,
        op: &'static str,
        mut msg: NetlinkMessage<T>,
    ) -> Result<u32, NetlinkError> {
        self.send_bytes(op, |seq| {
            msg.header.sequence_number = seq;
            msg.finalize();
            let mut bytes = vec![0; msg.buffer_len()];
            msg.serialize(&mut bytes);
            bytes
        })
    }

    /// Reads the next datagram and passes each message in it that answers request `seq` (its
    /// whole bytes, header included) to `visit`; answers to other requests are dropped.
    pub fn recv(
        &mut self,
        op: &'static str,
        seq: u32,
        mut visit: impl FnMut(&[u8]),
    ) -> Result<(), NetlinkError> {
        self.recv_any(op, |s, bytes| {
            if s == seq {
                visit(bytes)
            }
        })
    }

    /// Sends `msg` as a request and passes each message of the answer to `visit`, until the
    /// answer ends: NLMSG_DONE for a dump (`NLM_F_DUMP` in its flags), the acknowledgement
    /// for anything else (`NLM_F_ACK` is added, so that a request whose answer is empty, or a
    /// single message, still has a recognisable end). An NLMSG_ERROR is the error.
    pub fn request<T>(
        &mut self,
        op: &'static str,
        mut msg: NetlinkMessage<T>,
        mut visit: impl FnMut(T),
    ) -> Result<(), NetlinkError>
    where
        T: NetlinkSerializable + NetlinkDeserializable,
    {
        let flags = &mut msg.header.flags;
        *flags |= NLM_F_REQUEST;
        if *flags & NLM_F_DUMP != NLM_F_DUMP {
            *flags |= NLM_F_ACK;
        }
        let seq = self.send(op, msg)?;
        let mut end: Option<Result<(), NetlinkError>> = None;
        while end.is_none() {
            self.recv(op, seq, |bytes| {
                if end.is_none() {
                    end = answer(op, bytes, &mut visit);
                }
            })?;
        }
        end.expect("the loop ends with an answer")
    }
}

impl NetlinkSocket {
    /// Sends `msgs` as acknowledged requests, at most [`BATCH_WINDOW`] unanswered at a time,
    /// and returns each one's outcome in order: one round trip per window instead of one per
    /// request (what `ip -batch` and `ipvsadm --restore` would need thousands of). A failed
    /// request does not stop the others; a socket that fails fails every unanswered one.
    pub fn request_batch<T>(
        &mut self,
        op: &'static str,
        msgs: impl IntoIterator<Item = NetlinkMessage<T>>,
    ) -> Vec<Result<(), NetlinkError>>
    where
        T: NetlinkSerializable + NetlinkDeserializable,
    {
        let mut results: Vec<Option<Result<(), NetlinkError>>> = Vec::new();
        let mut waiting: std::collections::HashMap<u32, usize> = Default::default();
        let mut msgs = msgs.into_iter().peekable();
        while msgs.peek().is_some() || !waiting.is_empty() {
            while waiting.len() < BATCH_WINDOW
                && let Some(mut msg) = msgs.next()
            {
                msg.header.flags |= NLM_F_REQUEST | NLM_F_ACK;
                let i = results.len();
                match self.send(op, msg) {
                    Ok(seq) => {
                        waiting.insert(seq, i);
                        results.push(None);
                    }
                    Err(e) => results.push(Some(Err(e))),
                }
            }
            if waiting.is_empty() {
                continue;
            }
            let received = self.recv_any(op, |seq, bytes| {
                if let Some(i) = waiting.remove(&seq) {
                    let end = answer::<T>(op, bytes, &mut drop);
                    results[i] = Some(end.unwrap_or(Ok(())));
                }
            });
            if let Err(e) = received {
                for r in results.iter_mut().filter(|r| r.is_none()) {
                    *r = Some(Err(e.clone()));
                }
                results.extend(msgs.map(|_| Some(Err(e.clone()))));
                break;
            }
        }
        results.into_iter().map(|r| r.expect("answered")).collect()
    }

    /// Reads the next datagram and passes each message in it to `visit` with its sequence
    /// number.
    fn recv_any(
        &mut self,
        op: &'static str,
        mut visit: impl FnMut(u32, &[u8]),
    ) -> Result<(), NetlinkError> {
        let n = retry_interrupted(|| {
            self.buf.clear();
            self.socket.recv(&mut self.buf, MSG_TRUNC)
        })
        .map_err(|e| recv_error(op, e))?;
        if n > self.buf.len() {
            let message = format!("a {n}-byte datagram did not fit in {RECV_BUF} bytes");
            return Err(NetlinkError::Decode { op, message });
        }
        let messages =
            split_messages(&self.buf).map_err(|message| NetlinkError::Decode { op, message })?;
        for (seq, bytes) in messages {
            visit(seq, bytes);
        }
        Ok(())
    }
}

/// One message of an answer: `Some` when it ends the answer (successfully or not).
fn answer<T: NetlinkDeserializable>(
    op: &'static str,
    bytes: &[u8],
    visit: &mut impl FnMut(T),
) -> Option<Result<(), NetlinkError>> {
    let msg = match NetlinkMessage::<T>::deserialize(bytes) {
        Ok(msg) => msg,
        Err(e) => {
            return Some(Err(NetlinkError::Decode {
                op,
                message: e.to_string(),
            }));
        }
    };
    match msg.payload {
        NetlinkPayload::Done(d) if d.code == 0 => Some(Ok(())),
        NetlinkPayload::Done(d) => Some(Err(NetlinkError::kernel(op, d.code))),
        NetlinkPayload::Error(e) if e.code.is_none() => Some(Ok(())),
        NetlinkPayload::Error(e) => Some(Err(NetlinkError::kernel(op, e.raw_code()))),
        NetlinkPayload::InnerMessage(m) => {
            visit(m);
            None
        }
        _ => None,
    }
}

fn open(protocol: isize) -> Result<Socket, NetlinkError> {
    let err = |op| move |e| NetlinkError::io(op, e);
    let mut socket = Socket::new(protocol).map_err(err("socket"))?;
    socket.bind_auto().map_err(err("bind"))?;
    socket
        .connect(&SocketAddr::new(0, 0))
        .map_err(err("connect"))?;
    setsockopt(&socket, ReceiveTimeout, &TimeVal::new(RECV_TIMEOUT_SECS, 0))
        .map_err(|e| err("setsockopt SO_RCVTIMEO")(e.into()))?;
    Ok(socket)
}

/// Splits one `recv` worth of bytes into its messages: `(sequence number, bytes)` each. A
/// corrupt length is an error, since nothing after it can be located.
pub fn split_messages(buf: &[u8]) -> Result<Vec<(u32, &[u8])>, String> {
    let mut out = Vec::new();
    let mut rest = buf;
    while !rest.is_empty() {
        let raw = NetlinkBuffer::new_checked(rest).map_err(|e| e.to_string())?;
        // Checked: at least a header, at most the rest of the datagram.
        let len = raw.length() as usize;
        out.push((raw.sequence_number(), &rest[..len]));
        // Messages are 4-byte aligned; the last one may lack its padding.
        rest = rest.get(len.next_multiple_of(4)..).unwrap_or_default();
    }
    Ok(out)
}

/// A signal arriving during a blocking socket call (the agent handles SIGTERM) is not a failure
/// of the call: it is made again.
fn retry_interrupted<T>(mut call: impl FnMut() -> io::Result<T>) -> io::Result<T> {
    loop {
        match call() {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            other => return other,
        }
    }
}

/// A `recv` that timed out (EAGAIN under SO_RCVTIMEO) says so rather than "try again".
fn recv_error(op: &'static str, e: io::Error) -> NetlinkError {
    if e.raw_os_error() == Some(Errno::EAGAIN as i32) {
        let message = format!("no answer from the kernel within {RECV_TIMEOUT_SECS} s");
        return NetlinkError::io(op, io::Error::new(e.kind(), message));
    }
    NetlinkError::io(op, e)
}
