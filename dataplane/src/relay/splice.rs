//! Both directions of a TCP relay with `splice(2)`: socket -> pipe -> socket, so the bytes stay
//! in the kernel (pages move between the socket buffers and the pipe; no copy to user space).
//! A large pipe means few syscalls per byte, which is what sets a relay's throughput on a busy
//! node (see docs/benchmarks.md).

use std::{
    io,
    os::fd::{AsFd, AsRawFd, OwnedFd},
    sync::atomic::{AtomicU64, Ordering},
};

use nix::{
    fcntl::{FcntlArg, OFlag, SpliceFFlags, fcntl, splice},
    sys::socket::{Shutdown, shutdown},
    unistd::pipe2,
};
use tokio::io::Interest;
use tokio::net::TcpStream;

/// The pipe size asked for: 1 MiB (the default `fs.pipe-max-size`, allowed to anyone).
pub const DEFAULT_PIPE_SIZE: usize = 1 << 20;

/// A non-blocking pipe with its capacity.
pub struct Pipe {
    read: OwnedFd,
    write: OwnedFd,
    capacity: usize,
}

impl Pipe {
    /// A pipe of (about) `size` bytes. When the kernel refuses that size (above
    /// `fs.pipe-max-size` without CAP_SYS_RESOURCE, or past the user's pipe pages), the pipe
    /// keeps its default size: slower, never a failed connection.
    pub fn new(size: usize) -> io::Result<Pipe> {
        let (read, write) = pipe2(OFlag::O_NONBLOCK | OFlag::O_CLOEXEC)?;
        let asked = i32::try_from(size).unwrap_or(i32::MAX);
        let capacity = match fcntl(&write, FcntlArg::F_SETPIPE_SZ(asked)) {
            Ok(n) => n as usize,
            Err(_) => fcntl(&write, FcntlArg::F_GETPIPE_SZ).map(|n| n as usize)?,
        };
        Ok(Pipe {
            read,
            write,
            capacity,
        })
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }
}

/// Relays `a` and `b` both ways until each side has closed its sending direction, propagating
/// each half-close (`shutdown(SHUT_WR)` on the other socket) as it comes. Bytes moved are added
/// to `bytes`. The first error (a reset, say) ends both directions; the caller then drops the
/// sockets. Each direction's pipe is made on its first byte, so idle connections hold none.
pub async fn relay(
    a: &TcpStream,
    b: &TcpStream,
    pipe_size: usize,
    bytes: &AtomicU64,
) -> io::Result<()> {
    let forward = pump(a, b, pipe_size, bytes);
    let backward = pump(b, a, pipe_size, bytes);
    tokio::try_join!(forward, backward).map(|_| ())
}

/// One direction: `src` -> pipe -> `dst`, until `src`'s EOF, then `dst`'s write side is shut.
/// While the pipe holds bytes, more are taken from `src` without waiting (so reading and writing
/// overlap); only an empty pipe waits for `src`, and only then does EAGAIN mean "no data" (with
/// bytes in the pipe it may mean "pipe full", which must not clear the socket's readiness).
async fn pump(
    src: &TcpStream,
    dst: &TcpStream,
    pipe_size: usize,
    bytes: &AtomicU64,
) -> io::Result<()> {
    let mut pipe: Option<Pipe> = None;
    let (mut held, mut eof) = (0usize, false);
    loop {
        if !eof && held == 0 {
            src.readable().await?;
            let p = match &pipe {
                Some(p) => p,
                None => pipe.insert(Pipe::new(pipe_size)?),
            };
            match src.try_io(Interest::READABLE, || move_bytes(src, &p.write, p.capacity)) {
                Ok(0) => eof = true,
                Ok(n) => held += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Err(e),
            }
        } else if let (false, Some(p)) = (eof, &pipe)
            && held < p.capacity
        {
            // (A zero length would read as EOF: only with room in the pipe.)
            match move_bytes(src, &p.write, p.capacity - held) {
                Ok(0) => eof = true,
                Ok(n) => held += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(e),
            }
        }
        if let (true, Some(p)) = (held > 0, &pipe) {
            match dst.try_io(Interest::WRITABLE, || move_bytes(&p.read, dst, held)) {
                Ok(m) => {
                    held -= m;
                    bytes.fetch_add(m as u64, Ordering::Relaxed);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => dst.writable().await?,
                Err(e) => return Err(e),
            }
        }
        if eof && held == 0 {
            return match shutdown(dst.as_raw_fd(), Shutdown::Write) {
                // The peer is gone already: nothing left to tell it.
                Ok(()) | Err(nix::errno::Errno::ENOTCONN) => Ok(()),
                Err(e) => Err(e.into()),
            };
        }
    }
}

/// One non-blocking splice of at most `len` bytes.
fn move_bytes(from: impl AsFd, to: impl AsFd, len: usize) -> io::Result<usize> {
    let flags = SpliceFFlags::SPLICE_F_MOVE | SpliceFFlags::SPLICE_F_NONBLOCK;
    splice(from, None, to, None, len, flags).map_err(io::Error::from)
}
