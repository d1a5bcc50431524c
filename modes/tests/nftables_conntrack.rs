//! UDP conntrack hygiene with real packets: a client that keeps one source port keeps its
//! conntrack entry, and with it its DNAT, until kproxy deletes the flow. Needs root (skipped
//! otherwise), `ip`, `nft`, `conntrack` and `python3`.
//!
//! IP plan: pod C 10.0.0.2 <-> node N 10.0.0.1; endpoints E1 10.180.0.1 and E2 10.180.1.1,
//! both with a UDP echo on port 53 that stays up throughout.

mod nftables;
use kproxy_modes::testing::fixtures;
use kproxy_testbed::netns;
use nftables::wire;

use std::process::Command;

use fixtures::{ep, port, state};
use kproxy_dataplane::nft::Exec;
use kproxy_modes::{
    Mode,
    model::{ChangeSet, DesiredState, IpFamily, Protocol, ServicePort},
    nftables::NftablesMode,
};
use netns::Netns;
use wire::{Servers, link, serve_udp};

const E1: &str = "10.180.0.1";
const E2: &str = "10.180.1.1";

struct Bed {
    node: Netns,
    pod: Netns,
    _eps: (Netns, Netns),
    _servers: Servers,
}

fn bed() -> Option<Bed> {
    let node = Netns::scratch()?;
    let (pod, e1, e2) = (Netns::scratch()?, Netns::scratch()?, Netns::scratch()?);
    link(&node, &pod, "c", "10.0.0.2/24", &["10.0.0.1/24"]);
    link(&node, &e1, "e1", "10.180.0.1/24", &["10.180.0.254/24"]);
    link(&node, &e2, "e2", "10.180.1.1/24", &["10.180.1.254/24"]);
    node.exec(&["sysctl", "-q", "-w", "net.ipv4.ip_forward=1"]);
    let servers = Servers(vec![serve_udp(&e1, E1), serve_udp(&e2, E2)]);
    Some(Bed {
        node,
        pod,
        _eps: (e1, e2),
        _servers: servers,
    })
}

/// One datagram from `10.0.0.2:sport` to `dest:53`; the replying server's address, or `None`
/// when no reply came within 1 s. The fixed source port keeps the conntrack tuple the same
/// across calls, as a long-lived UDP client (a DNS resolver's socket) would.
fn ask_from(pod: &Netns, sport: u16, dest: &str) -> Option<String> {
    let program = format!(
        "import socket\n\
         s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n\
         s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n\
         s.bind(('10.0.0.2', {sport}))\n\
         s.settimeout(1.0)\n\
         s.sendto(b'q', ('{dest}', 53))\n\
         try:\n    print(s.recvfrom(512)[0].decode().split()[0])\n\
         except socket.timeout:\n    pass\n"
    );
    let out = pod.exec(&["python3", "-c", &program]);
    let server = out.trim();
    (!server.is_empty()).then(|| server.to_owned())
}

/// The first reply within 10 datagrams (each waits up to 1 s: the deadline), as a UDP
/// client that retries a lost datagram would see it.
fn first_reply(pod: &Netns, sport: u16, dest: &str) -> String {
    (0..10)
        .find_map(|_| ask_from(pod, sport, dest))
        .unwrap_or_else(|| panic!("no UDP reply from {dest}:53 (source port {sport})"))
}

/// UDP conntrack entries in the node namespace whose original source port is `sport`.
fn flows(node: &Netns, sport: u16) -> Vec<String> {
    let out = Command::new("ip")
        .args(["netns", "exec", node.name(), "conntrack", "-L", "-p", "udp"])
        .args(["--orig-port-src", &sport.to_string()])
        .output()
        .expect("conntrack -L");
    assert!(out.status.success(), "conntrack -L: {out:?}");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_owned)
        .collect()
}

fn dns(cluster_ip: &str, endpoint: &str) -> ServicePort {
    dns_to(cluster_ip, &[endpoint])
}

fn dns_to(cluster_ip: &str, endpoints: &[&str]) -> ServicePort {
    let name = format!("dns-{}", cluster_ip.rsplit('.').next().unwrap());
    let eps = (endpoints.iter())
        .map(|e| ep(&format!("{e}:53"), false))
        .collect();
    port("ns", &name, "dns", Protocol::Udp, cluster_ip, 53, eps)
}

fn v4(ports: Vec<ServicePort>) -> DesiredState {
    state(vec![(IpFamily::V4, ports)])
}

fn changed(sp: &ServicePort) -> ChangeSet {
    ChangeSet {
        full: false,
        services: [sp.name.clone()].into(),
    }
}

/// The client keeps its source port across an endpoint removal (E1's server stays up). Without
/// cleanup (the control, a mode without conntrack hygiene) the kept conntrack entry keeps sending
/// it to the removed E1; with it, the first reply after one sync comes from the live E2.
#[test]
fn udp_client_leaves_a_removed_endpoint_within_one_sync() {
    let Some(bed) = bed() else { return };
    let exec = || Exec::new().in_netns(bed.node.name());

    // Control: no hygiene, so the stale flow must survive the sync.
    let mut bare = NftablesMode::new(exec());
    let mut desired = v4(vec![dns("172.30.0.47", E1)]);
    bare.sync(&desired, &ChangeSet::full()).unwrap();
    assert_eq!(first_reply(&bed.pod, 40000, "172.30.0.47"), E1);
    desired = v4(vec![dns("172.30.0.47", E2)]);
    let sp = desired.families[0]
        .services
        .values()
        .next()
        .unwrap()
        .clone();
    bare.sync(&desired, &changed(&sp)).unwrap();
    assert_eq!(
        first_reply(&bed.pod, 40000, "172.30.0.47"),
        E1,
        "control: without cleanup the kept flow should still reach the removed endpoint"
    );

    // The real mode (as the binary builds it). Its first sync reconciles the table: E1 is an
    // endpoint of .47 again, so the control's kept flow is live and must stay.
    let mut mode = NftablesMode::with_exec(exec());
    let svc = dns("172.30.0.48", E1);
    let sp = dns_to("172.30.0.47", &[E1, E2]);
    desired = v4(vec![sp.clone(), svc.clone()]);
    mode.sync(&desired, &ChangeSet::full()).unwrap();
    assert_eq!(first_reply(&bed.pod, 40001, "172.30.0.48"), E1);
    assert_eq!(flows(&bed.node, 40001).len(), 1, "one kept flow to E1");

    desired = v4(vec![sp, dns("172.30.0.48", E2)]);
    mode.sync(&desired, &changed(&svc)).unwrap();
    assert_eq!(
        first_reply(&bed.pod, 40001, "172.30.0.48"),
        E2,
        "after one sync the client must reach the live endpoint"
    );
    let hygiene = mode.conntrack().unwrap();
    assert_eq!((hygiene.deleted(), hygiene.failures()), (1, 0));
    // The control's flow to another Service's VIP was not touched (still DNATed to E1).
    let other = flows(&bed.node, 40000);
    assert!(
        other.len() == 1 && other[0].contains(&format!("src={E1} ")),
        "unrelated flow changed: {other:?}"
    );
}

/// Start-up and restart (a new mode, a full first sync) delete no UDP flow: neither one that
/// bypasses Services nor one to a Service's live endpoint; later syncs of unrelated ports don't
/// either.
#[test]
fn startup_and_restart_leave_udp_flows_alone() {
    let Some(bed) = bed() else { return };
    let svc = dns("172.30.0.49", E1);
    let desired = v4(vec![svc.clone()]);
    let mut first = NftablesMode::with_exec(Exec::new().in_netns(bed.node.name()));
    first.sync(&desired, &ChangeSet::full()).unwrap();
    // A direct flow (no Service) and a flow through the Service.
    assert_eq!(first_reply(&bed.pod, 40010, E2), E2);
    assert_eq!(first_reply(&bed.pod, 40011, "172.30.0.49"), E1);
    let before = (flows(&bed.node, 40010), flows(&bed.node, 40011));
    assert_eq!((before.0.len(), before.1.len()), (1, 1), "{before:?}");

    // Restart: a fresh process knows nothing; its full sync must not read that as "no endpoints".
    let mut restarted = NftablesMode::with_exec(Exec::new().in_netns(bed.node.name()));
    restarted.sync(&desired, &ChangeSet::full()).unwrap();
    // An unrelated UDP Service appears with endpoints: only its own VIPs are cleaned.
    let other = dns("172.30.0.50", E2);
    let desired = v4(vec![svc, other.clone()]);
    restarted.sync(&desired, &changed(&other)).unwrap();
    assert_eq!(restarted.conntrack().unwrap().failures(), 0);

    let after = (flows(&bed.node, 40010), flows(&bed.node, 40011));
    assert_eq!(
        (after.0.len(), after.1.len()),
        (1, 1),
        "flows deleted: {after:?}"
    );
    // The Service flow still goes to E1: the entry itself survived, not a new one.
    assert_eq!(first_reply(&bed.pod, 40011, "172.30.0.49"), E1);
}

/// A restart while an endpoint went away. Steps: a first process programs UDP Service .51 with
/// E1 and E2; a client flow (fixed source port) is DNATed to one of them, G. A second Service
/// .52 is added with G alone and gets a flow of its own. Then a new process (fresh hygiene,
/// nothing known) syncs a state where .51 lost G: its first sync must delete the .51 flow
/// (the client's next datagram reaches the remaining endpoint), and only that one: the .52
/// flow to the same G stays.
///
/// Without the reconcile this fails: the fresh process has nothing to diff against, so the
/// kept .51 entry would go on DNATing to G (whose server stays up and answers) until its
/// conntrack timeout, as the control of `udp_client_leaves_a_removed_endpoint_within_one_sync`
/// shows for a mode that deletes nothing.
#[test]
fn restart_deletes_flows_to_an_endpoint_that_went_while_down() {
    let Some(bed) = bed() else { return };
    let exec = || Exec::new().in_netns(bed.node.name());
    let mut before = NftablesMode::with_exec(exec());
    let both = dns_to("172.30.0.51", &[E1, E2]);
    before
        .sync(&v4(vec![both.clone()]), &ChangeSet::full())
        .unwrap();
    let gone = first_reply(&bed.pod, 40020, "172.30.0.51");
    let remaining = if gone == E1 { E2 } else { E1 };
    let other = dns("172.30.0.52", &gone);
    let desired = v4(vec![both, other.clone()]);
    before.sync(&desired, &changed(&other)).unwrap();
    assert_eq!(first_reply(&bed.pod, 40021, "172.30.0.52"), gone);
    drop(before);

    let mut restarted = NftablesMode::with_exec(exec());
    let desired = v4(vec![dns("172.30.0.51", remaining), other]);
    restarted.sync(&desired, &ChangeSet::full()).unwrap();
    let hygiene = restarted.conntrack().unwrap();
    assert_eq!((hygiene.deleted(), hygiene.failures()), (1, 0));
    // Checked before any new datagram, so a deleted entry could not have been recreated.
    let kept = flows(&bed.node, 40021);
    assert!(
        kept.len() == 1 && kept[0].contains(&format!("src={gone} ")),
        "the .52 flow to its live endpoint must stay: {kept:?}"
    );
    assert_eq!(
        first_reply(&bed.pod, 40020, "172.30.0.51"),
        remaining,
        "after the restart's first sync the client must reach the remaining endpoint"
    );
}
