//! [`Rtnl`] and `addrs::local_addresses` against the kernel, in network namespaces the tests
//! make (root only, skipped otherwise; `ip` for the set-up and as an independent view).
//!
//! IP plan, one fresh namespace per test:
//! - `lo` (index 1): 127.0.0.1/8 and ::1/128, up.
//! - veth pair `v0` / `v1`, down: v0 gets 10.2.0.1/24 and fd00:2::1/64.

use kproxy_testbed::netns;

use std::{collections::BTreeSet, net::IpAddr};

use kproxy_dataplane::{
    addrs::local_addresses,
    rtnl::{LinkAddress, Rtnl, RtnlError},
};
use netns::Netns;

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn names(rtnl: &Rtnl) -> BTreeSet<String> {
    rtnl.links().unwrap().into_iter().map(|l| l.name).collect()
}

/// A namespace with the veth pair of the plan.
fn bed() -> Option<(Netns, Rtnl)> {
    let ns = Netns::scratch()?;
    ns.exec(&[
        "ip", "link", "add", "v0", "type", "veth", "peer", "name", "v1",
    ]);
    let rtnl = Rtnl::new().in_netns(ns.name());
    Some((ns, rtnl))
}

/// Steps: list the links of a fresh namespace with a veth pair; look one up by name.
#[test]
fn links_are_listed_with_index_and_kind_and_only_the_namespaces_own() {
    let Some((ns, rtnl)) = bed() else { return };
    let links = rtnl.links().unwrap();
    let lo = links.iter().find(|l| l.name == "lo").expect("lo");
    assert_eq!((lo.index, lo.kind.as_deref()), (1, None));
    let kinds: BTreeSet<_> = (links.iter())
        .map(|l| (l.name.as_str(), l.kind.as_deref()))
        .collect();
    assert_eq!(
        kinds,
        [("lo", None), ("v0", Some("veth")), ("v1", Some("veth"))].into()
    );
    let v0 = rtnl.link("v0").unwrap();
    let shown = ns.exec(&["ip", "-o", "link", "show", "v0"]);
    assert!(
        shown.starts_with(&format!("{}: v0@v1:", v0.index)),
        "{shown}"
    );
    assert!(matches!(rtnl.link("nope0"), Err(RtnlError::NoSuchLink(n)) if n == "nope0"));
}

/// Steps: add an IPv4 and an IPv6 address to v0, read them back three ways (per link, all
/// local addresses, `ip addr`), add one again, delete both, delete one again.
#[test]
fn addresses_are_added_listed_and_deleted_on_a_link() {
    let Some((ns, rtnl)) = bed() else { return };
    let v0 = rtnl.link("v0").unwrap().index;
    let added = [(ip("10.2.0.1"), 24), (ip("fd00:2::1"), 64)];
    for (addr, len) in added {
        rtnl.add_address("v0", addr, len).unwrap();
    }
    let on_v0: BTreeSet<_> = rtnl.link_addresses("v0").unwrap().into_iter().collect();
    let want: BTreeSet<_> = (added.iter())
        .map(|&(addr, prefix_len)| LinkAddress {
            index: v0,
            addr,
            prefix_len,
        })
        .collect();
    assert_eq!(on_v0, want);
    let shown = ns.exec(&["ip", "-o", "addr", "show", "dev", "v0"]);
    assert!(shown.contains("inet 10.2.0.1/24") && shown.contains("inet6 fd00:2::1/64"));
    let local: BTreeSet<_> = local_addresses(Some(ns.name()))
        .unwrap()
        .into_iter()
        .collect();
    let want_local = ["127.0.0.1", "::1", "10.2.0.1", "fd00:2::1"].map(ip).into();
    assert_eq!(local, want_local);

    let again = rtnl.add_address("v0", ip("10.2.0.1"), 24).unwrap_err();
    assert!(again.is_exists(), "{again}");
    for (addr, len) in added {
        rtnl.delete_address("v0", addr, len).unwrap();
    }
    assert_eq!(rtnl.link_addresses("v0").unwrap(), []);
    let gone = rtnl.delete_address("v0", ip("10.2.0.1"), 24).unwrap_err();
    assert!(gone.is_not_found(), "{gone}");
    let no_link = rtnl.add_address("nope0", ip("10.2.0.9"), 24).unwrap_err();
    assert!(matches!(no_link, RtnlError::NoSuchLink(_)), "{no_link}");
}

/// Steps: delete one end of the veth pair (both go), delete it again.
#[test]
fn deleting_a_link_removes_it_and_a_missing_one_is_not_found() {
    let Some((ns, rtnl)) = bed() else { return };
    rtnl.delete_link("v1").unwrap();
    assert_eq!(
        names(&rtnl),
        ["lo".to_owned()].into(),
        "a veth goes with its peer"
    );
    assert!(!ns.exec(&["ip", "-o", "link"]).contains("v0"));
    let err = rtnl.delete_link("v1").unwrap_err();
    assert!(
        matches!(&err, RtnlError::NoSuchLink(n) if n == "v1"),
        "{err}"
    );
    assert!(err.is_not_found());
}

/// Steps: add a dummy link. Kernels without the dummy driver (this test host's) refuse it as
/// not supported and nothing is made; with it, the link is listed as a dummy and deleted.
#[test]
fn a_dummy_link_is_made_or_cleanly_refused() {
    let Some((_ns, rtnl)) = bed() else { return };
    match rtnl.add_dummy("kube-ipvs0") {
        Ok(()) => {
            let link = rtnl.link("kube-ipvs0").unwrap();
            assert_eq!(link.kind.as_deref(), Some("dummy"));
            assert!(rtnl.add_dummy("kube-ipvs0").unwrap_err().is_exists());
            rtnl.delete_link("kube-ipvs0").unwrap();
        }
        Err(e) => assert!(e.is_not_supported(), "{e}"),
    }
    assert!(!names(&rtnl).contains("kube-ipvs0"));
}

/// A namespace that does not exist is an error naming it, not the caller's links.
#[test]
fn a_missing_namespace_is_an_error() {
    let err = Rtnl::new()
        .in_netns("kproxy-test-no-such-netns")
        .links()
        .unwrap_err();
    assert!(
        err.to_string().contains("kproxy-test-no-such-netns"),
        "{err}"
    );
    assert!(
        !err.is_not_found(),
        "a missing namespace is not a missing link: {err}"
    );
    let err = local_addresses(Some("kproxy-test-no-such-netns")).unwrap_err();
    assert!(
        err.to_string().contains("kproxy-test-no-such-netns"),
        "{err}"
    );
}
