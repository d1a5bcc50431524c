//! Watching one nftables table for changes made by other programs, and counting the rules of a
//! chain without `nft` (whose cache would fetch every element of every set on the way).
//!
//! [`Monitor`] is a thread with a NETLINK_NETFILTER socket in multicast group
//! `NFNLGRP_NFTABLES`: after each committed batch the kernel sends one message per object
//! created or deleted, then `NFT_MSG_NEWGEN` with the committing process's pid. A batch that
//! touched the watched table and was not committed by one of our own `nft` processes (their
//! pids are in a [`SpawnLog`]) is a [`Finding`]. [`RuleCounter`] dumps the rules of one chain.
//!
//! The sockets are opened inside the target network namespace by a short-lived thread that
//! `setns`es (a socket stays in the namespace it was created in).

use std::{
    io,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
};

use netlink_sys::{Socket, SocketAddr, protocols::NETLINK_NETFILTER};
use nix::{
    errno::Errno,
    libc::MSG_TRUNC,
    sys::{
        socket::{
            setsockopt,
            sockopt::{RcvBufForce, ReceiveTimeout},
        },
        time::TimeVal,
    },
};

use crate::netns::{Netns, NetnsError};

use super::{
    SpawnLog,
    wire::{self, Change, Message, NFNLGRP_NFTABLES, Object, WireError},
};

const RECV_BUF: usize = 64 * 1024;
/// Room for the notifications of a big partial sync or a foreign flush of a large table.
/// A limit, not an allocation. Overflowing it is not wrong, only costly: lost notifications
/// count as unknown drift, repaired by a full sync.
const MONITOR_RCVBUF: usize = 4 << 20;
/// How often the monitor thread wakes to see whether it should stop.
const POLL_SECS: i64 = 1;
/// How long a dump waits for the kernel's next datagram.
const DUMP_TIMEOUT_SECS: i64 = 10;
/// Findings kept between two drains; more are only counted (a huge foreign change must not
/// grow memory).
const MAX_FINDINGS: usize = 100;
/// Changes kept per batch; more are only counted.
const MAX_CHANGES: usize = 32;

#[derive(Debug, thiserror::Error)]
pub enum MonitorError {
    #[error(transparent)]
    Netns(#[from] NetnsError),
    #[error("nf_tables netlink {op}: {source}")]
    Netlink { op: &'static str, source: io::Error },
    #[error("nf_tables netlink {op}: {source}")]
    Wire { op: &'static str, source: WireError },
}

fn netlink(op: &'static str) -> impl Fn(io::Error) -> MonitorError {
    move |source| MonitorError::Netlink { op, source }
}

/// A batch another program committed that touched the watched table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ForeignBatch {
    pub pid: u32,
    pub process: String,
    /// The first changes to the watched table, in the kernel's order.
    pub changes: Vec<Change>,
    /// Changes beyond those kept.
    pub more: usize,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Finding {
    Foreign(ForeignBatch),
    /// Notifications were lost (socket buffer overrun) or the monitor stopped: anything may
    /// have changed.
    Lost(String),
    /// This many further findings were not kept.
    Summarized(usize),
}

#[derive(Default)]
struct Queue {
    findings: Vec<Finding>,
    dropped: usize,
}

struct Shared {
    queue: Mutex<Queue>,
    stop: AtomicBool,
    stopped: AtomicBool,
    ours: SpawnLog,
}

impl Shared {
    fn push(&self, f: Finding) {
        let mut q = self.queue.lock().unwrap_or_else(|e| e.into_inner());
        if q.findings.len() < MAX_FINDINGS {
            q.findings.push(f);
        } else {
            q.dropped += 1;
        }
    }

    /// Whether one of our own processes committed the batch: by `NFTA_GEN_PROC_PID` (global
    /// pid) or by the sender's netlink port id (its pid inside its own pid namespace, which is
    /// the one we spawned it in).
    fn is_ours(&self, pid: u32, portid: u32) -> bool {
        self.ours.contains(pid) || self.ours.contains(portid)
    }
}

/// Watches table `table` of families `ip` and `ip6`. The thread ends when the monitor is
/// dropped (within [`POLL_SECS`]).
pub struct Monitor {
    shared: Arc<Shared>,
    socket: Arc<Socket>,
}

impl Monitor {
    /// Starts watching in the namespace at `netns` (a bind-mounted ns file), or this one.
    /// `notify` is called after each finding.
    pub fn start(
        netns: &Netns,
        table: &str,
        ours: SpawnLog,
        notify: Box<dyn Fn() + Send>,
    ) -> Result<Self, MonitorError> {
        let socket = Arc::new(open(netns, POLL_SECS)?);
        // Best effort: without CAP_NET_ADMIN the default buffer stays, and overruns are
        // reported as lost notifications.
        let _ = setsockopt(&*socket, RcvBufForce, &MONITOR_RCVBUF);
        socket
            .add_membership(NFNLGRP_NFTABLES)
            .map_err(netlink("joining the nftables group"))?;
        let shared = Arc::new(Shared {
            queue: Mutex::default(),
            stop: AtomicBool::new(false),
            stopped: AtomicBool::new(false),
            ours,
        });
        let watcher = Watcher {
            shared: shared.clone(),
            socket: socket.clone(),
            table: table.to_owned(),
            notify,
            batch: Vec::new(),
            more: 0,
        };
        std::thread::Builder::new()
            .name("nft-monitor".into())
            .spawn(move || watcher.run())
            .map_err(netlink("starting the monitor thread"))?;
        Ok(Self { shared, socket })
    }

    /// Stops listening, so that the kernel neither builds nor sends notifications (a full sync
    /// of a big table would produce one per object and overrun any buffer). What changes until
    /// [`Monitor::resume`] goes unseen.
    pub fn pause(&self) -> Result<(), MonitorError> {
        self.socket
            .drop_membership(NFNLGRP_NFTABLES)
            .map_err(netlink("leaving the nftables group"))
    }

    pub fn resume(&self) -> Result<(), MonitorError> {
        self.socket
            .add_membership(NFNLGRP_NFTABLES)
            .map_err(netlink("joining the nftables group"))
    }

    /// False once the thread ended on a socket error (reported as [`Finding::Lost`]).
    pub fn is_running(&self) -> bool {
        !self.shared.stopped.load(Ordering::SeqCst)
    }

    /// Drains the findings. Batches are judged again here: a pid may have been recorded only
    /// after its batch arrived (the spawning thread is preempted between `spawn` and `record`).
    pub fn take(&self) -> Vec<Finding> {
        let q = std::mem::take(&mut *self.shared.queue.lock().unwrap_or_else(|e| e.into_inner()));
        let mut out: Vec<Finding> = (q.findings.into_iter())
            .filter(|f| !matches!(f, Finding::Foreign(b) if self.shared.ours.contains(b.pid)))
            .collect();
        if q.dropped > 0 {
            out.push(Finding::Summarized(q.dropped));
        }
        out
    }
}

impl Drop for Monitor {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
    }
}

/// The monitor thread's state: the batch being read until its `NEWGEN`.
struct Watcher {
    shared: Arc<Shared>,
    socket: Arc<Socket>,
    table: String,
    notify: Box<dyn Fn() + Send>,
    batch: Vec<Change>,
    more: usize,
}

impl Watcher {
    fn run(mut self) {
        let mut buf = Vec::with_capacity(RECV_BUF);
        while !self.shared.stop.load(Ordering::SeqCst) {
            buf.clear();
            match self.socket.recv(&mut buf, MSG_TRUNC) {
                Ok(n) if n > buf.len() => self.lost("a notification did not fit the buffer"),
                Ok(_) => match wire::parse(&buf) {
                    Ok(msgs) => msgs.into_iter().for_each(|m| self.message(m)),
                    Err(e) => self.lost(&format!("undecodable notification: {e}")),
                },
                Err(e) => match Errno::from_raw(e.raw_os_error().unwrap_or(0)) {
                    Errno::EAGAIN | Errno::EINTR => {}
                    Errno::ENOBUFS => self.lost("notifications lost (socket buffer overrun)"),
                    _ => {
                        self.shared.stopped.store(true, Ordering::SeqCst);
                        self.lost(&format!("the change monitor stopped: {e}"));
                        return;
                    }
                },
            }
        }
    }

    fn lost(&mut self, why: &str) {
        self.batch.clear();
        self.more = 0;
        self.shared.push(Finding::Lost(why.to_owned()));
        (self.notify)();
    }

    fn message(&mut self, m: Message) {
        match m {
            Message::Change { change, .. } if self.watched(&change) => {
                // A table's own change comes last in a batch (after its rules, sets and
                // chains) and says the most: it is kept beyond the limit (a few more at most).
                let room = match change.object {
                    Object::Table => MAX_CHANGES + 4,
                    _ => MAX_CHANGES,
                };
                if self.batch.len() < room {
                    self.batch.push(change);
                } else {
                    self.more += 1;
                }
            }
            Message::Generation { generation, portid } => {
                let batch = std::mem::take(&mut self.batch);
                let more = std::mem::take(&mut self.more);
                if batch.is_empty() || self.shared.is_ours(generation.pid, portid) {
                    return;
                }
                self.shared.push(Finding::Foreign(ForeignBatch {
                    pid: generation.pid,
                    process: generation.process,
                    changes: batch,
                    more,
                }));
                (self.notify)();
            }
            _ => {}
        }
    }

    /// Our table in family `ip` (2) or `ip6` (10); `inet` and others are someone else's.
    fn watched(&self, c: &Change) -> bool {
        matches!(c.family, 2 | 10) && c.table == self.table
    }
}

/// Small netlink dumps of nf_tables: the rule count of a chain, the chain names of a table.
/// Keep one: it holds its socket.
pub struct RuleCounter {
    socket: Socket,
    seq: u32,
    buf: Vec<u8>,
}

impl RuleCounter {
    pub fn open(netns: &Netns) -> Result<Self, MonitorError> {
        Ok(Self {
            socket: open(netns, DUMP_TIMEOUT_SECS)?,
            seq: 0,
            buf: Vec::with_capacity(RECV_BUF),
        })
    }

    /// The number of rules in `chain` of table `table` (family 2 `ip`, 10 `ip6`); 0 when the
    /// table or chain does not exist.
    pub fn count(&mut self, family: u8, table: &str, chain: &str) -> Result<usize, MonitorError> {
        let mut n = 0;
        self.dump(
            |seq| wire::rule_dump_request(seq, family, table, chain),
            |m| n += usize::from(matches!(m, Message::DumpedRule { .. })),
        )?;
        Ok(n)
    }

    /// The names of the chains of table `table` (family 2 `ip`, 10 `ip6`); none when the table
    /// does not exist.
    pub fn chains(&mut self, family: u8, table: &str) -> Result<Vec<String>, MonitorError> {
        let mut names = Vec::new();
        self.dump(
            |seq| wire::chain_dump_request(seq, family, table),
            |m| {
                if let Message::Change { change, .. } = m {
                    // A dump filtered by table: the filter is the kernel's since Linux 4.x;
                    // checked here too, as it costs nothing.
                    if change.object == Object::Chain && change.table == table {
                        names.extend(change.name);
                    }
                }
            },
        )?;
        Ok(names)
    }

    /// Sends one dump request and hands each reply message to `each` until the dump is done;
    /// ENOENT (no such table or chain) is an empty dump.
    fn dump(
        &mut self,
        request: impl FnOnce(u32) -> Vec<u8>,
        mut each: impl FnMut(Message),
    ) -> Result<(), MonitorError> {
        self.seq = self.seq.wrapping_add(1);
        let seq = self.seq;
        self.socket
            .send(&request(seq), 0)
            .map_err(netlink("sending a dump request"))?;
        loop {
            self.buf.clear();
            self.socket
                .recv(&mut self.buf, 0)
                .map_err(netlink("reading a dump"))?;
            let msgs = wire::parse(&self.buf).map_err(|source| MonitorError::Wire {
                op: "reading a dump",
                source,
            })?;
            for m in msgs {
                match m {
                    Message::Done { seq: s } if s == seq => return Ok(()),
                    Message::Error { seq: s, errno } if s == seq && errno < 0 => {
                        if -errno == Errno::ENOENT as i32 {
                            return Ok(());
                        }
                        let source = io::Error::from_raw_os_error(-errno);
                        return Err(netlink("dumping")(source));
                    }
                    Message::Error { .. } => {}
                    m => each(m),
                }
            }
        }
    }
}

fn open(netns: &Netns, timeout_secs: i64) -> Result<Socket, MonitorError> {
    netns.run(|| open_here(timeout_secs))
}

fn open_here(timeout_secs: i64) -> Result<Socket, MonitorError> {
    let mut socket = Socket::new(NETLINK_NETFILTER).map_err(netlink("socket"))?;
    socket.bind_auto().map_err(netlink("bind"))?;
    socket
        .connect(&SocketAddr::new(0, 0))
        .map_err(netlink("connect"))?;
    setsockopt(&socket, ReceiveTimeout, &TimeVal::new(timeout_secs, 0))
        .map_err(|e| netlink("setsockopt SO_RCVTIMEO")(e.into()))?;
    Ok(socket)
}
