//! [`Ipvs`] and the dummy link's batched addresses against the kernel, in namespaces the tests
//! make, with `ipvsadm` and `ip` as the independent view. Needs root and a kernel with IPVS and
//! dummy links: skipped (with the reason) elsewhere; scripts/test runs them in the VM
//! (tests/vm/ipvs.sh).
//!
//! IP plan: virtual services 10.96.0.10:80/TCP, 10.96.0.10:53/UDP, [fd00::10]:443/TCP; real
//! servers 10.244.1.5:8080, 10.244.1.6:8080, [fd00:1::5]:8443; dummy link `kube-ipvs0`.

use std::net::IpAddr;

use kproxy_dataplane::{
    ipvs::{Destination, Ipvs, IpvsError, IpvsTable, Op, Protocol, Service, Timeouts},
    netns::Netns as Target,
    rtnl::Rtnl,
};
use kproxy_testbed::netns::Netns;

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// What `args` prints in `ns`, its runs of spaces made one (ipvsadm pads columns).
fn table(ns: &Netns, args: &[&str]) -> String {
    ns.exec(args)
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

/// A fresh namespace and an IPVS connection in it; `None` (the test is skipped) without root
/// or IPVS.
fn bed() -> Option<(Netns, Ipvs)> {
    let ns = Netns::scratch()?;
    match Ipvs::open(&Target::named(ns.name())) {
        Ok(ipvs) => Some((ns, ipvs)),
        Err(IpvsError::Unavailable) => {
            eprintln!("skipped: this kernel has no IPVS");
            None
        }
        Err(e) => panic!("{e}"),
    }
}

/// Steps: add two services and three real servers as ipvsadm would; `ipvsadm -Ln` shows
/// them; list them back; quiesce one (weight 0), delete it; edit a service's scheduler.
#[test]
fn services_and_servers_are_added_listed_edited_and_deleted_as_ipvsadm_shows() {
    let Some((ns, mut ipvs)) = bed() else { return };
    let tcp = Service::new(ip("10.96.0.10"), Protocol::Tcp, 80, "rr");
    let udp = Service::new(ip("10.96.0.10"), Protocol::Udp, 53, "rr").persistent(10800);
    ipvs.add_service(&tcp).unwrap();
    ipvs.add_service(&udp).unwrap();
    let a = Destination::masquerade(ip("10.244.1.5"), 8080, 1);
    let b = Destination::masquerade(ip("10.244.1.6"), 8080, 1);
    ipvs.add_server(&tcp.key(), &a).unwrap();
    ipvs.add_server(&tcp.key(), &b).unwrap();
    assert!(ipvs.add_service(&tcp).unwrap_err().is_exists());
    assert!(ipvs.add_server(&tcp.key(), &a).unwrap_err().is_exists());

    let shown = table(&ns, &["ipvsadm", "-Ln"]);
    assert!(shown.contains("TCP 10.96.0.10:80 rr"), "{shown}");
    assert!(
        shown.contains("UDP 10.96.0.10:53 rr persistent 10800"),
        "{shown}"
    );
    assert!(shown.contains("-> 10.244.1.6:8080 Masq 1"), "{shown}");

    let mut listed = ipvs.list_services().unwrap();
    listed.sort_by_key(|s| s.key());
    assert_eq!(listed.len(), 2);
    assert_eq!((listed[0].port, listed[0].timeout), (80, 0));
    assert_eq!((listed[1].port, listed[1].timeout), (53, 10800));
    let servers = ipvs.list_servers(&tcp.key()).unwrap();
    assert_eq!(servers.len(), 2);

    let quiesced = Destination {
        weight: 0,
        ..a.clone()
    };
    ipvs.edit_server(&tcp.key(), &quiesced).unwrap();
    let shown = table(&ns, &["ipvsadm", "-Ln", "-t", "10.96.0.10:80"]);
    assert!(shown.contains("-> 10.244.1.5:8080 Masq 0"), "{shown}");
    ipvs.delete_server(&tcp.key(), &a).unwrap();
    assert!(
        ipvs.delete_server(&tcp.key(), &a)
            .unwrap_err()
            .is_not_found()
    );
    let mut wlc = tcp.clone();
    wlc.scheduler = "wlc".into();
    ipvs.edit_service(&wlc).unwrap();
    assert!(table(&ns, &["ipvsadm", "-Ln"]).contains("TCP 10.96.0.10:80 wlc"));
    ipvs.delete_service(&udp.key()).unwrap();
    assert!(ipvs.delete_service(&udp.key()).unwrap_err().is_not_found());
    assert_eq!(ipvs.list_services().unwrap().len(), 1);
}

/// Steps: a batch with an IPv6 service, its server, a server of a service that does not exist
/// and one more server: the bad op fails alone, the others are applied.
#[test]
fn a_batch_applies_every_op_and_reports_each_failure_alone() {
    let Some((ns, mut ipvs)) = bed() else { return };
    let v6 = Service::new(ip("fd00::10"), Protocol::Tcp, 443, "rr");
    let missing = Service::new(ip("fd00::11"), Protocol::Tcp, 443, "rr");
    let ep = |a: &str| Destination::masquerade(ip(a), 8443, 1);
    let ops = [
        Op::AddService(v6.clone()),
        Op::AddServer(v6.key(), ep("fd00:1::5")),
        Op::AddServer(missing.key(), ep("fd00:1::6")),
        Op::AddServer(v6.key(), ep("fd00:1::7")),
    ];
    let results = ipvs.apply(&ops);
    assert!(results[0].is_ok() && results[1].is_ok() && results[3].is_ok());
    assert!(
        results[2].as_ref().unwrap_err().is_not_found(),
        "{results:?}"
    );
    let shown = table(&ns, &["ipvsadm", "-Ln"]);
    assert!(shown.contains("-> [fd00:1::7]:8443"), "{shown}");
    // Many more ops than the batch window.
    let many: Vec<Op> = (1..=300u16)
        .map(|p| Op::AddService(Service::new(ip("10.96.1.1"), Protocol::Udp, p, "rr")))
        .collect();
    assert!(ipvs.apply(&many).iter().all(Result::is_ok));
    assert_eq!(ipvs.list_services().unwrap().len(), 301);
}

/// Steps: set the timeouts, read them back and through `ipvsadm -L --timeout`; read the info.
#[test]
fn timeouts_and_info_are_read_and_set() {
    let Some((ns, mut ipvs)) = bed() else { return };
    let t = Timeouts {
        tcp: 900,
        tcp_fin: 120,
        udp: 300,
    };
    ipvs.set_timeouts(&t).unwrap();
    assert_eq!(ipvs.timeouts().unwrap(), t);
    let shown = table(&ns, &["ipvsadm", "-L", "--timeout"]);
    assert!(
        shown.contains("Timeout (tcp tcpfin udp): 900 120 300"),
        "{shown}"
    );
    let info = ipvs.info().unwrap();
    assert!(
        info.version >= 0x010200 && info.conn_table_size > 0,
        "{info:?}"
    );
    assert!(ipvs.daemons().unwrap().is_empty());
}

/// Steps: a dummy link, 1000 addresses added in one batch (one already there fails alone),
/// `ip addr` shows them, then deleted in one batch.
#[test]
fn a_dummy_links_addresses_are_added_and_deleted_in_batches() {
    let Some((ns, _)) = bed() else { return };
    let rtnl = Rtnl::new().in_netns(ns.name());
    rtnl.add_dummy("kube-ipvs0").unwrap();
    let mut addrs: Vec<(IpAddr, u8)> = (0..1000u32)
        .map(|i| (IpAddr::V4((0x0a60_0000u32 + i).into()), 32))
        .collect();
    addrs.push((ip("fd00::10"), 128));
    addrs.push((ip("10.96.0.5"), 32));
    let results = rtnl.add_addresses("kube-ipvs0", &addrs).unwrap();
    assert!(results[..1001].iter().all(Result::is_ok));
    assert!(results[1001].as_ref().unwrap_err().is_exists());
    assert_eq!(rtnl.link_addresses("kube-ipvs0").unwrap().len(), 1001);
    let shown = table(&ns, &["ip", "addr", "show", "dev", "kube-ipvs0"]);
    assert!(shown.contains("inet 10.96.3.231/32") && shown.contains("inet6 fd00::10/128"));
    let results = rtnl.delete_addresses("kube-ipvs0", &addrs[..1001]).unwrap();
    assert!(results.iter().all(Result::is_ok));
    assert!(rtnl.link_addresses("kube-ipvs0").unwrap().is_empty());
}
