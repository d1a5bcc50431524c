//! The ipvs mode with real packets, in namespaces the tests make: graceful termination (a
//! connection outlives its endpoint's removal), drift repaired, a failed operation isolated, and
//! the start-up error for a missing scheduler. Needs root, IPVS and dummy links: skipped (with
//! the reason) elsewhere; scripts/test runs them in the VM (tests/vm/ipvs.sh).
//!
//! IP plan: pod C 10.0.0.2 <-> node 10.0.0.1; endpoints E1, E2 10.180.{0,1}.1 <-> node .254;
//! Services 172.30.0.60-62:80 (VIPs on kube-ipvs0).

mod nftables;

use std::{
    io::{BufRead, BufReader, Write},
    net::TcpStream,
    process::{Child, Command, Stdio},
    sync::Arc,
    time::Duration,
};

use kproxy_dataplane::netns::Netns as Target;
use kproxy_modes::{
    Mode, ModeContext, ModeError,
    ipvs::IpvsMode,
    model::{ChangeSet, DesiredState, IpFamily, Protocol},
    registry::IpvsSettings,
    testing::fixtures::{ep, port, state},
    view,
};
use kproxy_testbed::netns::Netns;
use nftables::wire::{Servers, connect, link};

const E1: &str = "10.180.0.1";
const E2: &str = "10.180.1.1";

struct Bed {
    node: Netns,
    pod: Netns,
    _eps: Vec<Netns>,
    _servers: Servers,
    mode: IpvsMode,
    rt: tokio::runtime::Runtime,
}

/// Endpoint servers that say who they are, then echo: a connection can be followed.
fn serve_echo(ns: &Netns, addr: &str) -> Child {
    Command::new("ip")
        .args(["netns", "exec", ns.name(), "socat"])
        .arg(format!("TCP-LISTEN:80,bind={addr},fork,reuseaddr"))
        .arg("SYSTEM:echo $SOCAT_SOCKADDR; cat")
        .stdout(Stdio::null())
        .spawn()
        .unwrap()
}

/// The node, a pod, two endpoints, and a started ipvs mode; `None` without root or IPVS.
fn bed(settings: IpvsSettings) -> Option<Bed> {
    let node = Netns::scratch()?;
    let pod = Netns::scratch().unwrap();
    link(&node, &pod, "c", "10.0.0.2/24", &["10.0.0.1/24"]);
    let eps: Vec<Netns> = [E1, E2]
        .iter()
        .enumerate()
        .map(|(i, a)| {
            let ns = Netns::scratch().unwrap();
            let gw = format!("10.180.{i}.254/24");
            link(&node, &ns, &format!("e{i}"), &format!("{a}/24"), &[&gw]);
            ns
        })
        .collect();
    let servers = Servers(vec![serve_echo(&eps[0], E1), serve_echo(&eps[1], E2)]);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let mut mode = IpvsMode::new(Target::named(node.name()), settings);
    let ctx = ModeContext {
        runtime: rt.handle().clone(),
        drift: Arc::new(tokio::sync::Notify::new()),
    };
    match mode.start(&ctx) {
        Ok(()) => {}
        Err(ModeError::Unavailable { reason, .. }) => {
            eprintln!("skipped: {reason}");
            return None;
        }
        Err(e) => panic!("{e}"),
    }
    Some(Bed {
        node,
        pod,
        _eps: eps,
        _servers: servers,
        mode,
        rt,
    })
}

fn desired(vips: &[(&str, &[&str])]) -> DesiredState {
    let ports = vips
        .iter()
        .map(|(vip, eps)| {
            let eps = eps.iter().map(|a| ep(&format!("{a}:80"), false)).collect();
            port(
                "ns",
                &format!("svc{}", &vip[vip.len() - 2..]),
                "",
                Protocol::Tcp,
                vip,
                80,
                eps,
            )
        })
        .collect();
    state(vec![(IpFamily::V4, ports)])
}

fn partial(d: &DesiredState) -> ChangeSet {
    let names = d.families[0].services.keys().cloned().collect();
    ChangeSet {
        full: false,
        services: names,
    }
}

/// A connection from the pod to `vip:80` that stays open: the endpoint it reached and the
/// stream. Closing it sends a reset (linger 0), so IPVS forgets it within seconds.
fn open(pod: &Netns, vip: &str) -> (String, TcpStream) {
    let vip = vip.to_owned();
    let stream = pod
        .run(move || Ok(TcpStream::connect((vip.as_str(), 80))?))
        .unwrap();
    socket2::SockRef::from(&stream)
        .set_linger(Some(Duration::ZERO))
        .unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut line = String::new();
    BufReader::new(&stream).read_line(&mut line).unwrap();
    (line.trim().to_owned(), stream)
}

fn echoes(stream: &TcpStream) -> bool {
    let mut w = stream;
    if w.write_all(b"ping\n").is_err() {
        return false;
    }
    let mut line = String::new();
    BufReader::new(stream).read_line(&mut line).is_ok() && line == "ping\n"
}

fn ipvsadm(node: &Netns, args: &[&str]) -> String {
    let out = node.exec(&[&["ipvsadm"], args].concat());
    out.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Steps: a Service with E1 and E2; a connection reaches E1 and stays open; E1 leaves the
/// Service: it gets weight 0, the open connection still echoes, new ones all reach E2, and it
/// survives more syncs; the connection closes: a later sync deletes E1 (waited for, 30 s at most).
#[test]
fn a_connection_survives_its_endpoints_removal_until_it_closes() {
    let Some(mut b) = bed(IpvsSettings::default()) else {
        return;
    };
    let vip = "172.30.0.60";
    let d = desired(&[(vip, &[E1, E2])]);
    b.mode.sync(&d, &ChangeSet::full()).unwrap();
    let (mut kept, mut others) = (None, Vec::new());
    for _ in 0..10 {
        let (ep, s) = open(&b.pod, vip);
        if ep == E1 && kept.is_none() {
            kept = Some(s);
            break;
        }
        others.push(s);
    }
    let kept = kept.expect("E1 never answered");
    drop(others);
    let d = desired(&[(vip, &[E2])]);
    b.mode.sync(&d, &partial(&d)).unwrap();
    let table = ipvsadm(&b.node, &["-Ln", "-t", &format!("{vip}:80")]);
    assert!(table.contains(&format!("-> {E1}:80 Masq 0 1")), "{table}");
    assert!(echoes(&kept), "the open connection to E1 broke");
    for _ in 0..6 {
        assert_eq!(open(&b.pod, vip).0, E2);
    }
    b.mode.sync(&d, &partial(&d)).unwrap();
    assert!(echoes(&kept), "a later sync broke the connection");
    drop(kept);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    b.rt.block_on(async {
        loop {
            b.mode.sync(&d, &partial(&d)).unwrap();
            let table = ipvsadm(&b.node, &["-Ln", "-t", &format!("{vip}:80")]);
            if !table.contains(E1) {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "E1 never deleted: {table}"
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    });
    assert_eq!(
        connect(&b.pod, vip, 80).unwrap().split(' ').next(),
        Some(E2)
    );
}

/// Steps: two Services synced; another program deletes a VIP from kube-ipvs0 and the other
/// Service's virtual server; the drift check names both; the next sync (full) restores them and
/// both answer again.
#[test]
fn vips_and_virtual_servers_removed_by_others_are_found_and_restored() {
    let Some(mut b) = bed(IpvsSettings::default()) else {
        return;
    };
    let d = desired(&[("172.30.0.60", &[E1]), ("172.30.0.61", &[E2])]);
    b.mode.sync(&d, &ChangeSet::full()).unwrap();
    assert!(
        b.mode.check_drift().unwrap().is_empty(),
        "its own sync is no drift"
    );
    b.node
        .exec(&["ip", "addr", "del", "172.30.0.60/32", "dev", "kube-ipvs0"]);
    b.node.exec(&["ipvsadm", "-D", "-t", "172.30.0.61:80"]);
    let found = b.mode.check_drift().unwrap();
    let kinds: Vec<&str> = found.iter().map(|d| d.kind).collect();
    assert_eq!(kinds, ["address", "virtual server"], "{found:?}");
    assert!(found[0].what.contains("172.30.0.60"), "{found:?}");
    let stats = b.mode.sync(&d, &ChangeSet::default()).unwrap();
    assert!(stats.full, "after drift the sync is full");
    let diff = view::diff(&b.mode.kernel_view().unwrap(), &view::expected(&d));
    assert!(diff.is_empty(), "{diff:?}");
    assert_eq!(
        connect(&b.pod, "172.30.0.60", 80)
            .unwrap()
            .split(' ')
            .next(),
        Some(E1)
    );
    assert_eq!(
        connect(&b.pod, "172.30.0.61", 80)
            .unwrap()
            .split(' ')
            .next(),
        Some(E2)
    );
}

/// Steps: one Service synced; another program takes the virtual server a new Service needs;
/// the partial sync adding that Service and a third fails, yet the third answers; the next sync
/// is full, takes the virtual server over and both answer.
#[test]
fn a_failed_operation_leaves_other_services_working_and_makes_the_next_sync_full() {
    let Some(mut b) = bed(IpvsSettings::default()) else {
        return;
    };
    let d = desired(&[("172.30.0.60", &[E1])]);
    b.mode.sync(&d, &ChangeSet::full()).unwrap();
    b.node
        .exec(&["ipvsadm", "-A", "-t", "172.30.0.61:80", "-s", "wrr"]);
    let d = desired(&[
        ("172.30.0.60", &[E1]),
        ("172.30.0.61", &[E2]),
        ("172.30.0.62", &[E2]),
    ]);
    let err = b.mode.sync(&d, &partial(&d)).unwrap_err();
    assert!(!err.full, "{err}");
    assert_eq!(
        connect(&b.pod, "172.30.0.62", 80)
            .unwrap()
            .split(' ')
            .next(),
        Some(E2)
    );
    assert_eq!(
        connect(&b.pod, "172.30.0.60", 80)
            .unwrap()
            .split(' ')
            .next(),
        Some(E1)
    );
    let stats = b.mode.sync(&d, &ChangeSet::default()).unwrap();
    assert!(stats.full);
    assert!(ipvsadm(&b.node, &["-Ln"]).contains("TCP 172.30.0.61:80 rr"));
    assert_eq!(
        connect(&b.pod, "172.30.0.61", 80)
            .unwrap()
            .split(' ')
            .next(),
        Some(E2)
    );
    let counted = b
        .mode
        .counters()
        .iter()
        .find(|c| c.name == "ipvs_failed_operations")
        .map(|c| c.value);
    assert_eq!(counted, Some(1));
}

/// Steps: start with a scheduler the kernel does not have: the error names its module.
#[test]
fn a_scheduler_the_kernel_lacks_is_a_start_up_error_naming_its_module() {
    let Some(node) = Netns::scratch() else { return };
    let settings = IpvsSettings {
        scheduler: "nosuch".into(),
        ..Default::default()
    };
    let mut mode = IpvsMode::new(Target::named(node.name()), settings);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let ctx = ModeContext {
        runtime: rt.handle().clone(),
        drift: Arc::new(tokio::sync::Notify::new()),
    };
    match mode.start(&ctx) {
        Err(ModeError::Unavailable { reason, .. }) if reason.contains("no IPVS:") => {
            eprintln!("skipped: {reason}")
        }
        Err(e) => assert!(
            e.to_string().contains("load kernel module ip_vs_nosuch"),
            "{e}"
        ),
        Ok(()) => panic!("started with scheduler nosuch"),
    }
}
