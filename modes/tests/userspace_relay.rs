//! The userspace mode with real packets in the test bed (needs root; skipped otherwise): the mode
//! runs in this process on the test's runtime, programming the bed's node namespace, and pods
//! connect through it. What the conformance cases cannot show: a refusing endpoint retried unseen
//! by the client, a large transfer byte for byte with half-close, 1,000 concurrent clients, an
//! endpoint removed under an open connection, and a DNS-like UDP exchange across an endpoint
//! change.

use std::{
    net::{IpAddr, SocketAddr},
    sync::Arc,
};

use futures::future::join_all;
use kproxy_modes::{
    Mode, ModeContext,
    model::{ChangeSet, DesiredState, IpFamily, Protocol},
    registry::{self, ModeSettings},
    testing::fixtures::{ep, port, state},
};
use kproxy_testbed::{Netns, Outcome, TestBed, Where, server::Proto};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpSocket, TcpStream, UdpSocket},
};

const NODE: &str = "192.168.0.2";
const CLIENT: &str = "10.0.0.10";
const EP1: &str = "10.180.0.1";
const EP2: &str = "10.180.0.2";
/// A pod with no server: its kernel answers RST.
const REFUSER: &str = "10.180.0.3";

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn sa(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

/// web: a refusing endpoint and a good one; echo: two echo servers; dns: UDP; empty: none.
fn desired(echo_eps: &[&str], dns_ep: &str) -> DesiredState {
    let tcp = |name, cip, eps: Vec<_>| port("t", name, "p", Protocol::Tcp, cip, 80, eps);
    let echo = echo_eps
        .iter()
        .map(|e| ep(&format!("{e}:9000"), true))
        .collect();
    let dns = port(
        "t",
        "dns",
        "p",
        Protocol::Udp,
        "172.30.0.30",
        53,
        vec![ep(&format!("{dns_ep}:53"), true)],
    );
    let ports = vec![
        tcp(
            "web",
            "172.30.0.10",
            vec![
                ep(&format!("{REFUSER}:8080"), true),
                ep(&format!("{EP1}:8080"), true),
            ],
        ),
        tcp("echo", "172.30.0.20", echo),
        tcp("empty", "172.30.0.40", vec![]),
        dns,
    ];
    state(vec![(IpFamily::V4, ports)])
}

/// Echoes every connection until the client's EOF, then closes its own side (half-close).
async fn echo_server(ns: &Netns, addr: SocketAddr) -> tokio::task::JoinHandle<()> {
    use nix::sys::socket::{AddressFamily, Backlog, SockFlag, SockType, SockaddrIn, bind, listen};
    let l = ns
        .run_async(move || {
            let fd = nix::sys::socket::socket(
                AddressFamily::Inet,
                SockType::Stream,
                SockFlag::SOCK_NONBLOCK,
                None,
            )?;
            let SocketAddr::V4(v4) = addr else {
                unreachable!()
            };
            bind(std::os::fd::AsRawFd::as_raw_fd(&fd), &SockaddrIn::from(v4))?;
            // 1,000 clients connect at once: a backlog for all of them.
            listen(&fd, Backlog::new(4096)?)?;
            Ok(std::net::TcpListener::from(fd))
        })
        .await
        .unwrap();
    let l = tokio::net::TcpListener::from_std(l).unwrap();
    tokio::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            tokio::spawn(async move {
                let (mut r, mut w) = s.into_split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
                let _ = w.shutdown().await;
            });
        }
    })
}

/// `n` TCP sockets made in `ns` (a socket stays in the namespace it was made in).
async fn sockets(ns: &Netns, n: usize) -> Vec<TcpSocket> {
    let fds = ns
        .run_async(move || {
            (0..n)
                .map(|_| {
                    let s = std::net::TcpStream::from(nix::sys::socket::socket(
                        nix::sys::socket::AddressFamily::Inet,
                        nix::sys::socket::SockType::Stream,
                        nix::sys::socket::SockFlag::SOCK_NONBLOCK,
                        None,
                    )?);
                    Ok(s)
                })
                .collect::<anyhow::Result<Vec<_>>>()
        })
        .await
        .unwrap();
    fds.into_iter().map(TcpSocket::from_std_stream).collect()
}

async fn connect(ns: &Netns, to: SocketAddr) -> TcpStream {
    let s = sockets(ns, 1).await.pop().unwrap();
    s.connect(to).await.unwrap()
}

fn counter(mode: &dyn Mode, name: &str) -> u64 {
    mode.counters()
        .iter()
        .find(|c| c.name == name)
        .map_or(0, |c| c.value)
}

fn sync(mode: &mut dyn Mode, d: &DesiredState) {
    tokio::task::block_in_place(|| mode.sync(d, &ChangeSet::full())).unwrap();
}

fn raise_fd_limit() {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let (_, hard) = getrlimit(Resource::RLIMIT_NOFILE).unwrap();
    setrlimit(Resource::RLIMIT_NOFILE, hard, hard).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_relay_retries_splices_and_keeps_connections_across_syncs() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipped: needs root for network namespaces");
        return;
    }
    raise_fd_limit();
    let mut bed = TestBed::new(&[ip(NODE)]).await.unwrap();
    for p in [CLIENT, EP1, EP2, REFUSER] {
        bed.add_pod(ip(p)).await.unwrap();
    }
    for e in [EP1, EP2] {
        bed.serve(
            Where::Pod(ip(e)),
            Proto::Tcp,
            sa(&format!("{e}:8080")),
            None,
        )
        .await
        .unwrap();
        bed.serve(Where::Pod(ip(e)), Proto::Udp, sa(&format!("{e}:53")), None)
            .await
            .unwrap();
    }
    let _echo1 = echo_server(bed.pod(ip(EP1)).unwrap(), sa("10.180.0.1:9000")).await;
    let _echo2 = echo_server(bed.pod(ip(EP2)).unwrap(), sa("10.180.0.2:9000")).await;
    let settings = ModeSettings {
        netns: Some(bed.node.name().to_owned()),
        ..Default::default()
    };
    let mut mode = registry::build("userspace", &settings).unwrap();
    let ctx = ModeContext {
        runtime: tokio::runtime::Handle::current(),
        drift: Arc::new(tokio::sync::Notify::new()),
    };
    mode.start(&ctx).unwrap();
    sync(mode.as_mut(), &desired(&[EP1, EP2], EP1));
    let client = bed.pod(ip(CLIENT)).unwrap();
    let udp = client
        .run_async(|| {
            let s = std::net::UdpSocket::bind("10.0.0.10:40053")?;
            s.set_nonblocking(true)?;
            Ok(s)
        })
        .await
        .unwrap();
    let udp = UdpSocket::from_std(udp).unwrap();
    udp.connect("172.30.0.30:53").await.unwrap();
    let answer = ask(&udp).await;
    assert!(answer.starts_with("10.180.0.1:53 "), "{answer}");

    // 1. A refusing endpoint is retried: the client is always answered by the good one.
    for _ in 0..12 {
        let o = bed
            .probe(Proto::Tcp, ip(CLIENT), sa("172.30.0.10:80"))
            .await
            .unwrap();
        assert!(
            matches!(&o, Outcome::Answered { by, .. } if by == "10.180.0.1:8080"),
            "{o}"
        );
    }
    assert!(counter(mode.as_ref(), "userspace_connect_refused") > 0);
    assert!(counter(mode.as_ref(), "userspace_retries") > 0);
    assert_eq!(counter(mode.as_ref(), "userspace_exhausted"), 0);

    // 2. No endpoints: REJECTed by the kernel at once.
    let o = bed
        .probe(Proto::Tcp, ip(CLIENT), sa("172.30.0.40:80"))
        .await
        .unwrap();
    assert!(matches!(o, Outcome::Refused { .. }), "{o}");

    // 3. 32 MiB each way, byte for byte, with the client's half-close passed on.
    let mut s = connect(client, sa("172.30.0.20:80")).await;
    let data: Vec<u8> = (0..32usize << 20)
        .map(|i| (i.wrapping_mul(131) >> 3) as u8)
        .collect();
    let (mut r, mut w) = s.split();
    let send = async {
        w.write_all(&data).await.unwrap();
        w.shutdown().await.unwrap();
    };
    let mut back = Vec::with_capacity(data.len());
    let (_, got) = tokio::join!(send, r.read_to_end(&mut back));
    got.unwrap();
    assert!(
        back == data,
        "the echo differs ({} of {} bytes)",
        back.len(),
        data.len()
    );

    // 4. 1,000 concurrent clients, all open at once, each echoed.
    let socks = sockets(client, 1000).await;
    let conns = join_all(socks.into_iter().map(|s| s.connect(sa("172.30.0.20:80")))).await;
    let mut conns: Vec<TcpStream> = conns.into_iter().map(Result::unwrap).collect();
    // The relay connects upstream after the kernel completed the client's handshake: wait.
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(20);
    while counter(mode.as_ref(), "userspace_active_connections") < 1000 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "1,000 connections relayed at once"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    let rounds = conns.iter_mut().enumerate().map(|(i, c)| async move {
        let msg = format!("client {i}");
        c.write_all(msg.as_bytes()).await.unwrap();
        c.shutdown().await.unwrap();
        let mut got = String::new();
        c.read_to_string(&mut got).await.unwrap();
        assert_eq!(got, msg);
    });
    join_all(rounds).await;
    drop(conns);

    // 5. An endpoint removed under an open connection: the connection lives on; new ones avoid it.
    let mut held = connect(client, sa("172.30.0.20:80")).await;
    held.write_all(b"before").await.unwrap();
    let mut buf = [0u8; 6];
    held.read_exact(&mut buf).await.unwrap();
    sync(mode.as_mut(), &desired(&[EP2], EP2));
    held.write_all(b"after!").await.unwrap();
    held.read_exact(&mut buf).await.unwrap();
    assert_eq!(&buf, b"after!");

    // 6. DNS-like UDP from one client port across an endpoint change (EP1 -> EP2 above): the
    // reply comes from the VIP the client used, and the flow to the removed endpoint is gone.
    let answer = ask(&udp).await;
    assert!(answer.starts_with("10.180.0.2:53 "), "{answer}");
    mode.shutdown();
}

/// One query on the client's connected socket; the answer names the endpoint. Connected to the
/// VIP, the socket takes only datagrams from it: an answer proves the reply came from the VIP.
async fn ask(udp: &UdpSocket) -> String {
    udp.send(b"q").await.unwrap();
    let mut buf = [0u8; 128];
    let n = tokio::time::timeout(std::time::Duration::from_secs(5), udp.recv(&mut buf))
        .await
        .expect("an answer from the VIP")
        .unwrap();
    String::from_utf8_lossy(&buf[..n]).into_owned()
}
