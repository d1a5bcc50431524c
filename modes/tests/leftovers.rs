//! Upstream kube-proxy's leftovers are removed, the kubelet's and anyone else's stay: real
//! nft, iptables-nft, iptables-legacy (both families) and kernel, in throwaway namespaces.
//! Needs root (skipped otherwise) and `nft`, `ip`, the `iptables` package.

use kproxy_testbed::netns;

use std::{
    io::Write,
    process::{Command, Stdio},
};

use kproxy_modes::leftovers::{Leftovers, remove_upstream_leftovers};
use netns::Netns;

/// Upstream's nftables tables, kproxy's own and someone else's.
const NFT: &str = "
table ip kube-proxy {
  chain services {
    ip daddr 10.96.0.10 tcp dport 80 dnat to 10.0.0.2:8080
  }
}
table ip6 kube-proxy {
  chain services {
  }
}
table ip kproxy {
  chain services {
  }
}
table ip other {
  chain input {
    type filter hook input priority 0;
    tcp dport 22 accept
  }
}
";

/// Upstream's iptables-mode shape (ClusterIP 10.96.0.10:80 -> 10.0.0.2:8080), the kubelet's
/// chains (KUBE-MARK-DROP, KUBE-FIREWALL, KUBE-KUBELET-CANARY) and someone else's OTHER-CHAIN.
const IPV4: &str = r#"*nat
:KUBE-SERVICES - [0:0]
:KUBE-SVC-AAAAAAAAAAAAAAAA - [0:0]
:KUBE-SEP-BBBBBBBBBBBBBBBB - [0:0]
:KUBE-MARK-MASQ - [0:0]
:KUBE-POSTROUTING - [0:0]
:KUBE-MARK-DROP - [0:0]
-A PREROUTING -m comment --comment "kubernetes service portals" -j KUBE-SERVICES
-A OUTPUT -m comment --comment "kubernetes service portals" -j KUBE-SERVICES
-A POSTROUTING -m comment --comment "kubernetes postrouting rules" -j KUBE-POSTROUTING
-A KUBE-SERVICES -d 10.96.0.10/32 -p tcp -m comment --comment "ns/svc:http cluster IP" -m tcp --dport 80 -j KUBE-SVC-AAAAAAAAAAAAAAAA
-A KUBE-SVC-AAAAAAAAAAAAAAAA -j KUBE-SEP-BBBBBBBBBBBBBBBB
-A KUBE-SEP-BBBBBBBBBBBBBBBB -s 10.0.0.2/32 -j KUBE-MARK-MASQ
-A KUBE-SEP-BBBBBBBBBBBBBBBB -p tcp -m tcp -j DNAT --to-destination 10.0.0.2:8080
-A KUBE-MARK-MASQ -j MARK --set-xmark 0x4000/0x4000
-A KUBE-POSTROUTING -m mark --mark 0x4000/0x4000 -j MASQUERADE
-A KUBE-MARK-DROP -j MARK --set-xmark 0x8000/0x8000
COMMIT
*filter
:KUBE-FIREWALL - [0:0]
:KUBE-SERVICES - [0:0]
:KUBE-PROXY-FIREWALL - [0:0]
:OTHER-CHAIN - [0:0]
-A INPUT -m conntrack --ctstate NEW -m comment --comment "kubernetes load balancer firewall" -j KUBE-PROXY-FIREWALL
-A INPUT -j KUBE-FIREWALL
-A INPUT -j OTHER-CHAIN
-A OUTPUT -m conntrack --ctstate NEW -m comment --comment "kubernetes service portals" -j KUBE-SERVICES
-A OUTPUT -j KUBE-FIREWALL
-A KUBE-FIREWALL ! -s 127.0.0.0/8 -d 127.0.0.0/8 -m comment --comment "block incoming localnet connections" -m conntrack ! --ctstate RELATED,ESTABLISHED,DNAT -j DROP
-A OTHER-CHAIN -p tcp -m tcp --dport 22 -j ACCEPT
COMMIT
*mangle
:KUBE-PROXY-CANARY - [0:0]
:KUBE-KUBELET-CANARY - [0:0]
COMMIT
"#;

const IPV6: &str = r#"*nat
:KUBE-SERVICES - [0:0]
:KUBE-SVC-CCCCCCCCCCCCCCCC - [0:0]
-A PREROUTING -m comment --comment "kubernetes service portals" -j KUBE-SERVICES
-A KUBE-SERVICES -d fd00::10/128 -p tcp -m tcp --dport 80 -j KUBE-SVC-CCCCCCCCCCCCCCCC
-A KUBE-SVC-CCCCCCCCCCCCCCCC -p tcp -m tcp -j DNAT --to-destination [fd00::2]:8080
COMMIT
*filter
:OTHER-CHAIN - [0:0]
-A INPUT -j OTHER-CHAIN
-A OTHER-CHAIN -p tcp -m tcp --dport 22 -j ACCEPT
COMMIT
"#;

/// What one iptables backend's removal reports, in the order it removes them.
fn expected_iptables(backend: &str) -> Vec<String> {
    let v4 = format!("iptables-{backend}");
    let v6 = format!("ip6tables-{backend}");
    let portals = r#"-m comment --comment "kubernetes service portals" -j KUBE-SERVICES"#;
    vec![
        format!("{v4} nat rule -A PREROUTING {portals}"),
        format!("{v4} nat rule -A OUTPUT {portals}"),
        format!(
            r#"{v4} nat rule -A POSTROUTING -m comment --comment "kubernetes postrouting rules" -j KUBE-POSTROUTING"#
        ),
        format!("{v4} nat chain KUBE-MARK-MASQ (1 rules)"),
        format!("{v4} nat chain KUBE-POSTROUTING (1 rules)"),
        format!("{v4} nat chain KUBE-SEP-BBBBBBBBBBBBBBBB (2 rules)"),
        format!("{v4} nat chain KUBE-SERVICES (1 rules)"),
        format!("{v4} nat chain KUBE-SVC-AAAAAAAAAAAAAAAA (1 rules)"),
        format!(
            r#"{v4} filter rule -A INPUT -m conntrack --ctstate NEW -m comment --comment "kubernetes load balancer firewall" -j KUBE-PROXY-FIREWALL"#
        ),
        format!(
            r#"{v4} filter rule -A OUTPUT -m conntrack --ctstate NEW -m comment --comment "kubernetes service portals" -j KUBE-SERVICES"#
        ),
        format!("{v4} filter chain KUBE-PROXY-FIREWALL (0 rules)"),
        format!("{v4} filter chain KUBE-SERVICES (0 rules)"),
        format!("{v4} mangle chain KUBE-PROXY-CANARY (0 rules)"),
        format!("{v6} nat rule -A PREROUTING {portals}"),
        format!("{v6} nat chain KUBE-SERVICES (1 rules)"),
        format!("{v6} nat chain KUBE-SVC-CCCCCCCCCCCCCCCC (1 rules)"),
    ]
}

/// Lines of the kube-proxy objects above (what must be gone).
const UPSTREAM: [&str; 7] = [
    "KUBE-SERVICES",
    "KUBE-SVC-",
    "KUBE-SEP-",
    "KUBE-MARK-MASQ",
    "KUBE-POSTROUTING",
    "KUBE-PROXY-FIREWALL",
    "KUBE-PROXY-CANARY",
];

fn restore(ns: &Netns, tool: &str, text: &str) {
    let mut child = Command::new("ip")
        .args(["netns", "exec", ns.name(), tool, "--noflush"])
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(text.as_bytes()).unwrap();
    drop(stdin);
    assert!(child.wait().unwrap().success(), "{tool} of {text}");
}

/// Every rule and chain of every iptables table, both families, both backends (no comments,
/// no counters), one line each, prefixed with the tool.
fn iptables_state(ns: &Netns) -> Vec<String> {
    let mut out = Vec::new();
    for tool in ["iptables", "ip6tables"] {
        for backend in ["nft", "legacy"] {
            let save = format!("{tool}-{backend}-save");
            let text = ns.exec(&[&save]);
            let lines = text.lines().filter(|l| !l.starts_with('#'));
            out.extend(lines.map(|l| format!("{save}: {}", l.replace(" [0:0]", ""))));
        }
    }
    out
}

fn set_up_leftovers(ns: &Netns) {
    ns.nft(NFT);
    for backend in ["nft", "legacy"] {
        restore(ns, &format!("iptables-{backend}-restore"), IPV4);
        restore(ns, &format!("ip6tables-{backend}-restore"), IPV6);
    }
}

fn names(leftovers: &Leftovers) -> Vec<String> {
    assert!(
        leftovers.failed.is_empty(),
        "failures: {:?}",
        leftovers.failed
    );
    leftovers.removed.iter().map(|r| r.to_string()).collect()
}

/// Leftovers of every upstream mode are in place beside the kubelet's chains, kproxy's table and
/// someone else's table and chain. One removal pass: the kube-proxy objects are gone and named
/// in the result; everything else is as it was, rule for rule. A second pass removes nothing.
#[test]
fn upstream_leftovers_go_and_everything_else_stays() {
    let Some(ns) = Netns::scratch() else { return };
    set_up_leftovers(&ns);
    let before = iptables_state(&ns);
    let other_before = ns.exec(&["nft", "list", "table", "ip", "other"]);

    let first = remove_upstream_leftovers(Some(ns.name()));

    let mut expected = vec![
        "nftables table ip kube-proxy".to_owned(),
        "nftables table ip6 kube-proxy".to_owned(),
    ];
    expected.extend(expected_iptables("nft"));
    expected.extend(expected_iptables("legacy"));
    assert_eq!(names(&first), expected);

    let kept: Vec<String> = before
        .into_iter()
        .filter(|l| !UPSTREAM.iter().any(|u| l.contains(u)))
        .collect();
    assert_eq!(iptables_state(&ns), kept);
    for line in [
        "iptables-legacy-save: -A INPUT -j KUBE-FIREWALL",
        "iptables-nft-save: -A KUBE-MARK-DROP -j MARK --set-xmark 0x8000/0x8000",
        "iptables-nft-save: :KUBE-KUBELET-CANARY -",
        "ip6tables-legacy-save: -A OTHER-CHAIN -p tcp -m tcp --dport 22 -j ACCEPT",
    ] {
        assert!(kept.iter().any(|l| l == line), "{line} not kept: {kept:#?}");
    }
    assert_eq!(
        ns.exec(&["nft", "list", "table", "ip", "other"]),
        other_before
    );
    ns.exec(&["nft", "list", "table", "ip", "kproxy"]);
    assert!(
        !ns.try_exec(&["nft", "list", "table", "ip", "kube-proxy"])
            .status
            .success()
    );

    let second = remove_upstream_leftovers(Some(ns.name()));
    assert_eq!(names(&second), Vec::<String>::new());
}

/// A namespace with no leftovers: nothing is reported and nothing is created (no nftables
/// table, no legacy iptables table: reading those must not instantiate them). A link named
/// kube-ipvs0 that is not a dummy is not kube-proxy's: it stays.
#[test]
fn a_clean_namespace_stays_as_it_was() {
    let Some(ns) = Netns::scratch() else { return };
    ns.exec(&[
        "ip",
        "link",
        "add",
        "kube-ipvs0",
        "type",
        "veth",
        "peer",
        "name",
        "kipvs-peer",
    ]);
    let leftovers = remove_upstream_leftovers(Some(ns.name()));
    assert_eq!(names(&leftovers), Vec::<String>::new());
    ns.exec(&["ip", "link", "show", "dev", "kube-ipvs0"]);
    assert_eq!(ns.exec(&["nft", "list", "tables"]), "");
    for names in ["/proc/net/ip_tables_names", "/proc/net/ip6_tables_names"] {
        assert_eq!(ns.exec(&["cat", names]), "", "{names}");
    }
}
