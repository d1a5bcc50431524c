//! [`ConntrackNetlink`] against the kernel: real UDP (and one TCP) conntrack entries in a
//! network namespace the test makes, deleted by filter and exactly. Needs root (skipped otherwise), `ip`,
//! `nft` and `python3`; `conntrack` (the CLI) too, as an independent view of what is left.
//!
//! IP plan, all on `lo` of one namespace (10.1.0.0/24 is local there):
//! - VIP 10.1.0.100: UDP :53 DNATed to 10.1.0.1:5353, UDP :54 to 10.1.0.2:5353, TCP :53 to
//!   10.1.0.1:5353 (a listener).
//! - UDP to port 55 goes to conntrack zone 7.
//! - Clients send from 10.1.0.1 (IPv6: ::1) at fixed source ports, one flow per port:
//!
//! | sport | flow                                  | selected by             |
//! |-------|---------------------------------------|-------------------------|
//! | 41000 | udp -> 10.1.0.100:53 => 10.1.0.1:5353 | endpoint filter         |
//! | 41001 | same                                  | endpoint filter         |
//! | 41002 | udp -> 10.1.0.100:54 => 10.1.0.2:5353 | (other port)            |
//! | 41003 | udp -> 10.1.0.1:5353, no DNAT         | (other address)         |
//! | 41004 | udp -> 10.1.0.2:55, zone 7            | udp_to(10.1.0.2, 55)    |
//! | 41005 | udp [::1] -> [::1]:5353               | udp_to_port(v6, 5353)   |
//! | any   | tcp -> 10.1.0.100:53 => 10.1.0.1:5353 | (TCP: never)            |

use kproxy_testbed::netns;

use std::{collections::BTreeSet, net::IpAddr, process::Command};

use kproxy_dataplane::conntrack::{ConntrackClient, ConntrackNetlink, Entry, FlowFilter, L3};
use netns::Netns;

const RULES: &str = "
table ip t {
    chain raw {
        type filter hook output priority -300;
        udp dport 55 ct zone set 7
    }
    chain nat {
        type nat hook output priority -100;
        ip daddr 10.1.0.100 udp dport 53 dnat to 10.1.0.1:5353
        ip daddr 10.1.0.100 udp dport 54 dnat to 10.1.0.2:5353
        ip daddr 10.1.0.100 tcp dport 53 dnat to 10.1.0.1:5353
    }
}
table ip6 t {
    chain out {
        type filter hook output priority 0;
        ct state new accept
    }
}
";

/// One datagram per flow of the plan, and one TCP connection (closed again: TIME_WAIT keeps
/// its entry for two minutes, UDP entries stay 30 s, far longer than the test).
const TRAFFIC: &str = "
import socket
def udp(family, src, sport, dst, dport):
    s = socket.socket(family, socket.SOCK_DGRAM)
    s.bind((src, sport))
    s.sendto(b'q', (dst, dport))
    s.close()
for sport, dst, dport in [(41000, '10.1.0.100', 53), (41001, '10.1.0.100', 53),
                          (41002, '10.1.0.100', 54), (41003, '10.1.0.1', 5353),
                          (41004, '10.1.0.2', 55)]:
    udp(socket.AF_INET, '10.1.0.1', sport, dst, dport)
udp(socket.AF_INET6, '::1', 41005, '::1', 5353)
l = socket.socket(); l.bind(('10.1.0.1', 5353)); l.listen()
c = socket.create_connection(('10.1.0.100', 53), timeout=5)
a, _ = l.accept(); a.close(); c.close(); l.close()
";

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn bed() -> Option<Netns> {
    let ns = Netns::scratch()?;
    ns.exec(&["ip", "addr", "add", "10.1.0.1/24", "dev", "lo"]);
    ns.nft(RULES);
    ns.exec(&["python3", "-c", TRAFFIC]);
    Some(ns)
}

/// Original source ports of the UDP entries of family `l3`, read through the client under test.
fn udp_sports(ct: &ConntrackNetlink, l3: L3) -> BTreeSet<u16> {
    let entries = ct.list(l3).expect("dump");
    (entries.iter())
        .filter(|e| e.orig.proto == Some(17))
        .filter_map(|e| e.orig.src_port)
        .collect()
}

/// The same, as the conntrack CLI sees it (`None` when it is not installed).
fn cli_udp_sports(ns: &Netns, family: &str) -> Option<BTreeSet<u16>> {
    let out = Command::new("ip")
        .args([
            "netns",
            "exec",
            ns.name(),
            "conntrack",
            "-L",
            "-f",
            family,
            "-p",
            "udp",
        ])
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    // The first `sport=` of a line is the original direction's.
    let sport = |line: &str| line.split("sport=").nth(1)?.split(' ').next()?.parse().ok();
    Some(text.lines().filter_map(sport).collect())
}

fn tcp_entries(ct: &ConntrackNetlink) -> Vec<Entry> {
    let entries = ct.list(L3::Ipv4).expect("dump");
    entries
        .into_iter()
        .filter(|e| e.orig.proto == Some(6))
        .collect()
}

/// Steps: make the plan's flows; check the dump reads them (DNAT visible in the reply tuple,
/// the zone); delete by endpoint filter (2 flows), by address in zone 7 (1), then an IPv6
/// NodePort-style filter together with the endpoint filter again (1 and 0). After each step
/// exactly the selected flows are gone, as the client and the conntrack CLI both see it.
#[test]
fn deletes_exactly_the_udp_flows_a_filter_selects() {
    let Some(ns) = bed() else { return };
    let ct = ConntrackNetlink::new().in_netns(ns.name());
    let all_v4: BTreeSet<u16> = (41000..=41004).collect();
    assert_eq!(udp_sports(&ct, L3::Ipv4), all_v4);
    assert_eq!(udp_sports(&ct, L3::Ipv6), [41005].into());

    let v4 = ct.list(L3::Ipv4).unwrap();
    let dnated = v4.iter().find(|e| e.orig.src_port == Some(41000)).unwrap();
    assert_eq!(
        (
            dnated.orig.dst,
            dnated.orig.dst_port,
            dnated.reply.src,
            dnated.reply.src_port
        ),
        (
            Some(ip("10.1.0.100")),
            Some(53),
            Some(ip("10.1.0.1")),
            Some(5353)
        )
    );
    assert_eq!((dnated.zone, dnated.id.is_some()), (None, true));
    let zoned = v4.iter().find(|e| e.orig.src_port == Some(41004)).unwrap();
    assert_eq!(zoned.zone, Some(7));
    assert_eq!(tcp_entries(&ct).len(), 1, "one TCP flow");

    let endpoint = FlowFilter::udp_to(ip("10.1.0.100"), 53).dnated_to(ip("10.1.0.1"), 5353);
    assert_eq!(ct.delete(&endpoint).unwrap(), 2);
    let left: BTreeSet<u16> = [41002, 41003, 41004].into();
    assert_eq!(udp_sports(&ct, L3::Ipv4), left);
    if let Some(cli) = cli_udp_sports(&ns, "ipv4") {
        assert_eq!(cli, left, "as the conntrack CLI sees it");
    }

    // Without CTA_ZONE in the delete, the kernel would look in zone 0 and find nothing.
    assert_eq!(
        ct.delete(&FlowFilter::udp_to(ip("10.1.0.2"), 55)).unwrap(),
        1
    );
    assert_eq!(udp_sports(&ct, L3::Ipv4), [41002, 41003].into());

    // 41003 (IPv4, dport 5353) is not of the IPv6 filter's family; the endpoint filter
    // finds nothing left.
    let v6_port = FlowFilter::udp_to_port(L3::Ipv6, 5353);
    let counts: Vec<u64> = (ct.delete_each(&[v6_port, endpoint]).into_iter())
        .map(Result::unwrap)
        .collect();
    assert_eq!(counts, [1, 0]);
    assert_eq!(udp_sports(&ct, L3::Ipv6), BTreeSet::new());
    assert_eq!(udp_sports(&ct, L3::Ipv4), [41002, 41003].into());
    let tcp = tcp_entries(&ct);
    assert!(
        tcp.len() == 1 && tcp[0].orig.dst_port == Some(53),
        "the TCP flow to the VIP stays: {tcp:?}"
    );

    // Exact deletes of listed entries: the second delete of the same entry finds it gone, and
    // the TCP entry is refused, not deleted.
    let listed = ct.list(L3::Ipv4).unwrap();
    let e41002 = listed.iter().find(|e| e.orig.src_port == Some(41002));
    let doomed = [e41002.unwrap().clone(), tcp[0].clone()];
    let first = ct.delete_entries(L3::Ipv4, &doomed);
    assert!(matches!(first[..], [Ok(true), Err(_)]), "{first:?}");
    let again = ct.delete_entries(L3::Ipv4, &doomed[..1]);
    assert!(matches!(again[..], [Ok(false)]), "{again:?}");
    assert_eq!(udp_sports(&ct, L3::Ipv4), [41003].into());
    assert_eq!(tcp_entries(&ct).len(), 1, "TCP is never deleted");
}

/// A namespace that does not exist is an error naming it, not a delete in the caller's.
#[test]
fn a_missing_namespace_is_an_error() {
    let ct = ConntrackNetlink::new().in_netns("kproxy-test-no-such-netns");
    let err = ct
        .delete(&FlowFilter::udp_to(ip("10.1.0.100"), 53))
        .unwrap_err();
    assert!(
        err.to_string().contains("kproxy-test-no-such-netns"),
        "{err}"
    );
}
