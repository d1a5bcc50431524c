use super::*;
use crate::model::SessionAffinity;
use crate::testing::fixtures::{ep, local_policy, port, state};

fn sa(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

/// eTP=Local with one local and one remote endpoint, a NodePort and an external IP.
fn etp_local() -> DesiredState {
    let mut sp = port(
        "ns",
        "web",
        "http",
        Protocol::Tcp,
        "172.30.0.10",
        80,
        vec![ep("10.180.0.1:8080", true), ep("10.180.1.1:8080", false)],
    );
    sp.node_port = Some(30080);
    sp.external_ips = vec!["203.0.113.200".parse().unwrap()];
    state(vec![(IpFamily::V4, vec![local_policy(sp, false)])])
}

#[test]
fn each_destination_leads_to_its_paths_endpoints() {
    let r = Routes::build(&etp_local());
    let both = [sa("10.180.0.1:8080"), sa("10.180.1.1:8080")];
    let cip = r.lookup(Protocol::Tcp, sa("172.30.0.10:80")).unwrap();
    assert!(!cip.external);
    assert_eq!(r.endpoints(cip, "203.0.113.9".parse().unwrap()), &both);
    // Outside clients of a Local external path reach the local endpoint only...
    let np = r.lookup(Protocol::Tcp, sa("192.168.0.2:30080")).unwrap();
    assert_eq!(
        r.endpoints(np, "203.0.113.9".parse().unwrap()),
        &[sa("10.180.0.1:8080")]
    );
    // ...pods and the node short-circuit to the Cluster set.
    assert_eq!(r.endpoints(np, "10.1.2.3".parse().unwrap()), &both);
    assert_eq!(r.endpoints(np, "192.168.0.2".parse().unwrap()), &both);
    let eip = r.lookup(Protocol::Tcp, sa("203.0.113.200:80")).unwrap();
    assert!(eip.external);
    // Another protocol or port is not routed.
    assert!(r.lookup(Protocol::Udp, sa("172.30.0.10:80")).is_none());
    assert!(r.lookup(Protocol::Tcp, sa("172.30.0.10:81")).is_none());
    assert!(r.contains_endpoint(&cip.port.name, both[1]));
    assert!(!r.contains_endpoint(&cip.port.name, sa("10.180.9.9:8080")));
}

#[test]
fn affinity_puts_the_clients_endpoint_first_until_it_times_out() {
    let mut d = etp_local();
    for sp in d.families[0].services.values_mut() {
        sp.session_affinity = Some(SessionAffinity {
            timeout_seconds: 10,
        });
    }
    let r = Routes::build(&d);
    let t = r.lookup(Protocol::Tcp, sa("172.30.0.10:80")).unwrap();
    let client: IpAddr = "10.1.2.3".parse().unwrap();
    let a = Affinity::default();
    let eps = r.endpoints(t, client);
    let first = a.candidates(&t.port, eps, client)[0];
    a.used(&t.port, client, first);
    for _ in 0..20 {
        let c = a.candidates(&t.port, eps, client);
        assert_eq!(c[0], first);
        assert_eq!(c.len(), 2, "every endpoint stays a candidate for retries");
    }
}

#[test]
fn without_affinity_every_endpoint_comes_first_sometimes() {
    let r = Routes::build(&etp_local());
    let t = r.lookup(Protocol::Tcp, sa("172.30.0.10:80")).unwrap();
    let client: IpAddr = "10.1.2.3".parse().unwrap();
    let a = Affinity::default();
    let firsts: std::collections::BTreeSet<SocketAddr> = (0..64)
        .map(|_| a.candidates(&t.port, r.endpoints(t, client), client)[0])
        .collect();
    assert_eq!(firsts.len(), 2);
}
