//! The relay primitives against the kernel, in a network namespace the test makes (needs root;
//! skipped otherwise): a REDIRECTed TCP connection's original destination, a splice relay that
//! moves 64 MiB each way byte for byte and passes each half-close on, and a REDIRECTed UDP
//! flow's original destination read back from conntrack.
//!
//! Everything runs on one thread that entered the namespace, so every socket is made there.

use std::{
    net::{IpAddr, Ipv4Addr, SocketAddr},
    sync::atomic::{AtomicU64, Ordering},
};

use kproxy_dataplane::{
    conntrack::{ConntrackNetlink, FlowTuple, L3},
    relay::{DEFAULT_PIPE_SIZE, original_dst, relay},
};
use kproxy_testbed::netns::Netns;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream, UdpSocket},
};

const VIP: Ipv4Addr = Ipv4Addr::new(10, 1, 0, 100);
const SIZE: usize = 64 << 20;

fn pattern(i: usize) -> u8 {
    (i.wrapping_mul(31) ^ (i >> 11)) as u8
}

/// `tcp` and `udp` to the VIP are redirected to the relay's listeners.
fn rules(tcp: u16, udp: u16) -> String {
    format!(
        "table ip relaytest {{
            chain out {{
                type nat hook output priority -100;
                ip daddr {VIP} tcp dport 80 redirect to :{tcp}
                ip daddr {VIP} udp dport 53 redirect to :{udp}
            }}
        }}"
    )
}

/// Reads everything until EOF, checking it against the pattern; returns the count.
async fn read_checked(s: &mut (impl AsyncReadExt + Unpin)) -> usize {
    let mut buf = vec![0u8; 256 * 1024];
    let mut at = 0;
    loop {
        let n = s.read(&mut buf).await.unwrap();
        if n == 0 {
            return at;
        }
        for (k, b) in buf[..n].iter().enumerate() {
            assert_eq!(*b, pattern(at + k), "byte {} differs", at + k);
        }
        at += n;
    }
}

async fn write_pattern(s: &mut (impl AsyncWriteExt + Unpin)) {
    let chunk: Vec<u8> = (0..SIZE).map(pattern).collect();
    s.write_all(&chunk).await.unwrap();
}

async fn scenario() {
    let server = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let server_addr = server.local_addr().unwrap();
    let listener = TcpListener::bind("0.0.0.0:0").await.unwrap();
    let udp = UdpSocket::bind("0.0.0.0:0").await.unwrap();
    let (lt, lu) = (listener.local_addr().unwrap(), udp.local_addr().unwrap());
    let script = rules(lt.port(), lu.port());
    let out = std::process::Command::new("nft")
        .args(["-f", "-"])
        .stdin(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            use std::io::Write;
            c.stdin.take().unwrap().write_all(script.as_bytes())?;
            c.wait()
        })
        .unwrap();
    assert!(out.success(), "nft -f {script}");

    // The server reads the client's 64 MiB to EOF (the relayed half-close), then answers with
    // 64 MiB of its own while the client's direction is already shut.
    let served = tokio::spawn(async move {
        let (mut s, _) = server.accept().await.unwrap();
        let got = read_checked(&mut s).await;
        write_pattern(&mut s).await;
        got
    });
    let bytes = std::sync::Arc::new(AtomicU64::new(0));
    let relayed = {
        let bytes = bytes.clone();
        tokio::spawn(async move {
            let (c, _) = listener.accept().await.unwrap();
            let orig = original_dst(&c, false).unwrap();
            let s = TcpStream::connect(server_addr).await.unwrap();
            relay(&c, &s, DEFAULT_PIPE_SIZE, &bytes).await.unwrap();
            orig
        })
    };
    let mut client = TcpStream::connect(SocketAddr::new(IpAddr::V4(VIP), 80))
        .await
        .unwrap();
    write_pattern(&mut client).await;
    client.shutdown().await.unwrap();
    assert_eq!(read_checked(&mut client).await, SIZE, "client received");
    assert_eq!(served.await.unwrap(), SIZE, "server received");
    assert_eq!(relayed.await.unwrap(), SocketAddr::new(IpAddr::V4(VIP), 80));
    assert_eq!(bytes.load(Ordering::Relaxed), 2 * SIZE as u64);

    // UDP: the conntrack entry of the redirected datagram names the VIP the client used.
    let client = UdpSocket::bind("10.1.0.1:0").await.unwrap();
    client.send_to(b"q", (VIP, 53)).await.unwrap();
    let mut buf = [0u8; 16];
    let (_, from) = udp.recv_from(&mut buf).await.unwrap();
    let reply = FlowTuple {
        src: Some(IpAddr::V4(Ipv4Addr::LOCALHOST)),
        dst: Some(from.ip()),
        proto: Some(17),
        src_port: Some(lu.port()),
        dst_port: Some(from.port()),
    };
    let entry = ConntrackNetlink::new()
        .original_of_reply(L3::Ipv4, &reply)
        .unwrap()
        .expect("the redirected flow's entry");
    assert_eq!(entry.orig.dst, Some(IpAddr::V4(VIP)));
    assert_eq!(entry.orig.dst_port, Some(53));
    let mut none = reply.clone();
    none.dst_port = Some(1);
    assert_eq!(
        ConntrackNetlink::new()
            .original_of_reply(L3::Ipv4, &none)
            .unwrap(),
        None
    );
}

#[test]
fn tcp_is_spliced_both_ways_and_udp_original_destinations_come_from_conntrack() {
    let Some(ns) = Netns::scratch() else { return };
    ns.exec(&["ip", "addr", "add", "10.1.0.1/24", "dev", "lo"]);
    ns.run(|| {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        rt.block_on(scenario());
        Ok(())
    })
    .unwrap();
}
