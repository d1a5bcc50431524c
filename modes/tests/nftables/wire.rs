//! Real-packet helpers: veth links between namespaces, socat servers that answer with their own
//! and their peer's address, and clients.

#![allow(dead_code)]

use std::{
    collections::BTreeSet,
    process::{Child, Command, Stdio},
};

use kproxy_testbed::netns::{Netns, sh};

pub struct Servers(pub Vec<Child>);

impl Drop for Servers {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Adds IPv6 addresses to both ends of link `tag` (no DAD: usable at once) and a default route.
pub fn link6(node: &Netns, ns: &Netns, tag: &str, addr: &str, node_cidrs: &[&str]) {
    for c in node_cidrs {
        node.exec(&["ip", "addr", "add", c, "dev", &format!("n{tag}"), "nodad"]);
    }
    ns.exec(&[
        "ip",
        "addr",
        "add",
        addr,
        "dev",
        &format!("p{tag}"),
        "nodad",
    ]);
    let gw = node_cidrs[0].split('/').next().unwrap();
    ns.exec(&["ip", "-6", "route", "add", "default", "via", gw]);
}

/// Connects `veth` pair `n<tag>` (node side, `node_ip`) to `ns` (`addr`, default via node).
pub fn link(node: &Netns, ns: &Netns, tag: &str, addr: &str, node_cidrs: &[&str]) {
    let (a, b) = (format!("n{tag}"), format!("p{tag}"));
    sh(&[
        "ip",
        "link",
        "add",
        &a,
        "netns",
        node.name(),
        "type",
        "veth",
        "peer",
        "name",
        &b,
        "netns",
        ns.name(),
    ]);
    for c in node_cidrs {
        node.exec(&["ip", "addr", "add", c, "dev", &a]);
    }
    node.exec(&["ip", "link", "set", &a, "up"]);
    ns.exec(&["ip", "addr", "add", addr, "dev", &b]);
    ns.exec(&["ip", "link", "set", &b, "up"]);
    let gw = node_cidrs[0].split('/').next().unwrap();
    ns.exec(&["ip", "route", "add", "default", "via", gw]);
}

pub fn serve(ns: &Netns, addr: &str) -> Child {
    let listen = if addr.contains(':') {
        format!("TCP6-LISTEN:80,bind=[{addr}],fork,reuseaddr")
    } else {
        format!("TCP-LISTEN:80,bind={addr},fork,reuseaddr")
    };
    Command::new("ip")
        .args(["netns", "exec", ns.name(), "socat"])
        .arg(listen)
        .arg("SYSTEM:echo $SOCAT_SOCKADDR $SOCAT_PEERADDR")
        .stdout(Stdio::null())
        .spawn()
        .unwrap()
}

/// One TCP connection: `Ok("server peer")` or `Err(socat's error text)`.
pub fn connect(from: &Netns, dest: &str, port: u16) -> Result<String, String> {
    let target = if dest.contains(':') {
        format!("TCP6:[{dest}]:{port},connect-timeout=1")
    } else {
        format!("TCP:{dest}:{port},connect-timeout=1")
    };
    let out = from.try_exec(&["socat", "-T2", "-", &target]);
    if out.status.success() && !out.stdout.is_empty() {
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

/// socat prints IPv6 addresses bracketed and fully expanded; compare them in canonical form.
pub fn canonical(addr: &str) -> String {
    let bare = addr.trim_start_matches('[').trim_end_matches(']');
    bare.parse::<std::net::IpAddr>()
        .map(|ip| ip.to_string())
        .unwrap_or_else(|_| bare.to_owned())
}

/// Connects until every expected server answered (bounded), returning the peers they saw.
pub fn reach_all(from: &Netns, dest: &str, port: u16, servers: &[&str]) -> BTreeSet<String> {
    let (mut seen, mut peers) = (BTreeSet::new(), BTreeSet::new());
    for _ in 0..40 {
        let reply = connect(from, dest, port).unwrap_or_else(|e| panic!("{dest}:{port}: {e}"));
        let (server, peer) = reply.split_once(' ').unwrap();
        let (server, peer) = (canonical(server), canonical(peer));
        let server = server.as_str();
        assert!(
            servers.contains(&server),
            "{dest}:{port} answered by unexpected {server}"
        );
        seen.insert(server.to_owned());
        peers.insert(peer);
        if seen.len() == servers.len() {
            return peers;
        }
    }
    panic!("{dest}:{port}: only {seen:?} of {servers:?} answered");
}

/// A UDP echo of the same shape as [`serve`], on port 53, in Python: socat's forking
/// UDP-RECVFROM server drops packets that arrive while a previous handler still runs.
pub fn serve_udp(ns: &Netns, addr: &str) -> Child {
    let program = format!(
        "import socket\n\
         s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n\
         s.bind(('{addr}', 53))\n\
         while True:\n    _, peer = s.recvfrom(512)\n    s.sendto(('{addr} ' + peer[0] + '\\n').encode(), peer)\n"
    );
    Command::new("ip")
        .args(["netns", "exec", ns.name(), "python3", "-c", &program])
        .stdout(Stdio::null())
        .spawn()
        .unwrap()
}

/// One UDP exchange to port 53: the reply line, or `None` when nothing came back within 2 s
/// (`-t2`: after sending, socat waits that long for the answer; its default 0.5 s is too short
/// for a forking server's first reply).
pub fn ask_udp(from: &Netns, dest: &str) -> Option<String> {
    use std::io::Write;
    let mut child = Command::new("ip")
        .args(["netns", "exec", from.name(), "socat", "-T2", "-t2", "-"])
        .arg(format!("UDP:{dest}:53"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(b"q\n").unwrap();
    let out = child.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    (!text.is_empty()).then_some(text)
}
