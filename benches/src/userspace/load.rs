//! The load of the userspace benchmark: blocking servers in the server pod and clients in the
//! client pod, each on a thread that entered its namespace (a socket stays in the namespace it
//! was made in).

use std::{
    fs::File,
    io::{Read, Write},
    net::{IpAddr, SocketAddr, TcpListener, TcpStream, UdpSocket},
    time::Duration,
};

use anyhow::{Context, Result};
use nix::sched::{CloneFlags, setns};
use tokio::time::Instant;

pub const SINK: u16 = 9000;
pub const ANSWER: u16 = 9001;
pub const HOLD: u16 = 9002;
pub const UDP: u16 = 9053;
const CHUNK: usize = 1 << 20;

/// Runs `f` on a new thread inside the namespace of `ns`.
fn in_ns<T: Send + 'static>(
    ns: &File,
    f: impl FnOnce() -> Result<T> + Send + 'static,
) -> std::thread::JoinHandle<Result<T>> {
    let ns = ns.try_clone().expect("namespace handle");
    std::thread::spawn(move || {
        setns(&ns, CloneFlags::CLONE_NEWNET).context("setns")?;
        f()
    })
}

/// The servers, forever: a sink (reads to EOF, answers one byte), an answerer (reads one byte,
/// answers one), a holder (keeps every connection open) and UDP echo.
pub fn start_servers(ns: &File, at: IpAddr) -> Result<()> {
    in_ns(ns, move || {
        let l = TcpListener::bind(SocketAddr::new(at, SINK))?;
        for s in l.incoming() {
            let mut s = s?;
            std::thread::spawn(move || {
                let mut buf = vec![0u8; CHUNK];
                while matches!(s.read(&mut buf), Ok(n) if n > 0) {}
                let _ = s.write_all(b"k");
            });
        }
        Ok(())
    });
    in_ns(ns, move || {
        let l = TcpListener::bind(SocketAddr::new(at, ANSWER))?;
        for s in l.incoming() {
            let mut s = s?;
            let mut b = [0u8; 1];
            let _ = s.read_exact(&mut b);
            let _ = s.write_all(b"y");
        }
        Ok(())
    });
    in_ns(ns, move || {
        let l = listen_big(SocketAddr::new(at, HOLD))?;
        let mut held = Vec::new();
        for s in l.incoming() {
            held.push(s?);
        }
        Ok(())
    });
    in_ns(ns, move || -> Result<()> {
        let u = UdpSocket::bind(SocketAddr::new(at, UDP))?;
        let mut buf = [0u8; 64];
        loop {
            let (n, from) = u.recv_from(&mut buf)?;
            u.send_to(&buf[..n], from)?;
        }
    });
    Ok(())
}

/// A listener whose backlog takes thousands of connections at once (std's is 128: the rest of
/// a burst would wait for SYN retransmits).
fn listen_big(addr: SocketAddr) -> Result<TcpListener> {
    use nix::sys::socket::{AddressFamily, Backlog, SockFlag, SockType, SockaddrIn, bind, listen};
    let fd = nix::sys::socket::socket(
        AddressFamily::Inet,
        SockType::Stream,
        SockFlag::empty(),
        None,
    )?;
    let SocketAddr::V4(v4) = addr else {
        anyhow::bail!("IPv4 only")
    };
    bind(std::os::fd::AsRawFd::as_raw_fd(&fd), &SockaddrIn::from(v4))?;
    listen(&fd, Backlog::new(4096)?)?;
    Ok(TcpListener::from(fd))
}

pub struct Bulk {
    pub gbps: f64,
    pub cpu_per_gb: f64,
}

pub struct Latency {
    pub p50: f64,
    pub p99: f64,
    pub rate: f64,
}

/// Process CPU time (user + system), seconds: the relay and the load share this process.
fn cpu() -> f64 {
    use nix::sys::resource::{UsageWho, getrusage};
    let u = getrusage(UsageWho::RUSAGE_SELF).expect("getrusage");
    let s = |t: nix::sys::time::TimeVal| t.tv_sec() as f64 + t.tv_usec() as f64 / 1e6;
    s(u.user_time()) + s(u.system_time())
}

fn vm_rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let kib = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .unwrap_or(0.0);
    kib / 1024.0
}

pub struct Client {
    ns: File,
}

impl Client {
    pub fn new(ns: File) -> Self {
        Client { ns }
    }

    fn run<T: Send + 'static>(&self, f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
        in_ns(&self.ns, f)
            .join()
            .map_err(|_| anyhow::anyhow!("client thread panicked"))?
    }

    /// `gib` GiB to the sink, `runs` times; the median run.
    pub fn bulk_median(&self, to: SocketAddr, gib: usize, runs: usize) -> Result<Bulk> {
        let mut all = Vec::new();
        for _ in 0..runs {
            let bytes = gib << 30;
            let (c0, t0) = (cpu(), Instant::now());
            self.run(move || {
                let mut s = TcpStream::connect(to)?;
                let buf = vec![7u8; CHUNK];
                for _ in 0..bytes / CHUNK {
                    s.write_all(&buf)?;
                }
                s.shutdown(std::net::Shutdown::Write)?;
                let mut k = [0u8; 1];
                s.read_exact(&mut k)?;
                Ok(())
            })?;
            let (secs, gb) = (t0.elapsed().as_secs_f64(), bytes as f64 / 1e9);
            all.push(Bulk {
                gbps: gb / secs,
                cpu_per_gb: (cpu() - c0) / gb,
            });
        }
        all.sort_by(|a, b| a.gbps.total_cmp(&b.gbps));
        Ok(all.swap_remove(all.len() / 2))
    }

    /// `n` sequential connect + one byte each way; latencies in µs and the rate.
    pub fn latency(&self, to: SocketAddr, n: usize) -> Result<Latency> {
        let t0 = Instant::now();
        let mut us = self.run(move || {
            let mut us = Vec::with_capacity(n);
            for _ in 0..n {
                let t = Instant::now();
                let mut s = TcpStream::connect(to)?;
                s.set_nodelay(true)?;
                s.write_all(b"x")?;
                let mut b = [0u8; 1];
                s.read_exact(&mut b)?;
                us.push(t.elapsed().as_secs_f64() * 1e6);
            }
            Ok(us)
        })?;
        let rate = n as f64 / t0.elapsed().as_secs_f64();
        us.sort_by(f64::total_cmp);
        let at = |q: f64| us[((us.len() as f64 * q) as usize).min(us.len() - 1)];
        Ok(Latency {
            p50: at(0.5),
            p99: at(0.99),
            rate,
        })
    }

    /// `n` sequential UDP requests and replies on one connected socket, per second.
    pub fn udp_rate(&self, to: SocketAddr, n: usize) -> Result<f64> {
        self.run(move || {
            let u = UdpSocket::bind("0.0.0.0:0")?;
            u.connect(to)?;
            u.set_read_timeout(Some(Duration::from_secs(2)))?;
            let mut buf = [0u8; 64];
            let t0 = Instant::now();
            for i in 0..n {
                u.send(&(i as u64).to_be_bytes())?;
                u.recv(&mut buf)
                    .with_context(|| format!("UDP reply {i} from {to}"))?;
            }
            Ok(n as f64 / t0.elapsed().as_secs_f64())
        })
    }

    /// VmRSS (MiB) before, and with up to `n` idle connections through `to`, and how many the
    /// relay holds (`active`): all of them, or as many as it reached when that count stopped
    /// growing for 3 s (the report says which).
    pub fn idle_rss(
        &self,
        to: SocketAddr,
        n: usize,
        active: impl Fn() -> u64,
    ) -> Result<(f64, f64, u64)> {
        let before = vm_rss_mib();
        let held = self.run(move || {
            let conns = (0..n).map(|_| TcpStream::connect(to).map_err(Into::into));
            conns.collect::<Result<Vec<_>>>()
        })?;
        let (mut last, mut since) = (active(), Instant::now());
        while active() < n as u64 && since.elapsed() < Duration::from_secs(3) {
            if active() != last {
                (last, since) = (active(), Instant::now());
            }
            std::thread::yield_now();
        }
        let (after, relayed) = (vm_rss_mib(), active());
        drop(held);
        Ok((before, after, relayed))
    }
}
