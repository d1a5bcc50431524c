use super::*;
use crate::testing::fixtures;

fn listeners() -> BTreeMap<IpFamily, Listeners> {
    let l = |addr: &str| Listeners {
        addr: addr.parse().unwrap(),
        tcp: 40000,
        udp: 40001,
    };
    [
        (IpFamily::V4, l("192.168.0.2")),
        (IpFamily::V6, l("2001:db8::1")),
    ]
    .into()
}

fn text(c: &Capture) -> String {
    full_tx(c).to_string()
}

/// Every VIP kind is captured to the listeners on a node address; ports without endpoints,
/// source ranges and the Service CIDR drop stay in the kernel.
#[test]
fn a_full_rendering_captures_every_vip_kind_to_the_listeners() {
    let c = render(&fixtures::external_mix(), &listeners());
    let t = text(&c);
    for needle in [
        "add rule ip kproxy-userspace relay meta l4proto tcp dnat ip to 192.168.0.2:40000",
        "add rule ip kproxy-userspace relay meta l4proto udp dnat ip to 192.168.0.2:40001",
        "add rule ip kproxy-userspace capture ip daddr . meta l4proto . th dport @capture goto relay",
        "ip daddr @nodeport-ips meta l4proto . th dport @capture-nodeports goto relay",
        "add rule ip kproxy-userspace reject-chain reject",
        "add rule ip kproxy-userspace cluster-ips-check ip daddr { 172.30.0.0/16 } drop",
    ] {
        assert!(t.contains(needle), "missing {needle:?} in\n{t}");
    }
    let v4 = &c[&IpFamily::V4];
    assert!(!v4.elements[CAPTURE].is_empty());
    // No SCTP is captured (the relay does not carry it).
    assert!(!t.contains(". sctp ."), "{t}");
}

/// A partial sync is the difference of two renderings: nothing for no change; a removed port's
/// elements deleted by key.
#[test]
fn a_partial_transaction_is_the_difference_of_two_renderings() {
    let d = fixtures::external_mix();
    let a = render(&d, &listeners());
    assert!(compatible(&a, &a));
    assert!(partial_tx(&a, &a).is_empty());
    let mut d2 = d.clone();
    let fam = d2
        .families
        .iter_mut()
        .find(|f| f.family == IpFamily::V4)
        .unwrap();
    let name = fam.services.keys().next().unwrap().clone();
    let cip = fam.services.remove(&name).unwrap().cluster_ip;
    let b = render(&d2, &listeners());
    let tx = partial_tx(&a, &b).to_string();
    assert!(tx.contains("delete element ip kproxy-userspace"), "{tx}");
    assert!(tx.contains(&cip.to_string()), "{tx}");
    assert!(!tx.contains("add element"), "{tx}");
    assert!(!tx.contains(" : "), "deletes name keys only: {tx}");
}
