use kproxy_dataplane::iptables::parse_save;

use super::*;

/// Upstream's iptables-mode shape, the kubelet's chains, kproxy's and someone else's.
const SAVED: &str = r#"*nat
:PREROUTING ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:POSTROUTING ACCEPT [0:0]
:KUBE-SERVICES - [0:0]
:KUBE-SVC-NPX46M4PTMTKRN6Y - [0:0]
:KUBE-SEP-ABCDEFGHIJKLMNOP - [0:0]
:KUBE-POSTROUTING - [0:0]
:KUBE-MARK-DROP - [0:0]
:KPROXY-SERVICES - [0:0]
:OTHER-CHAIN - [0:0]
-A PREROUTING -m comment --comment "kubernetes service portals" -j KUBE-SERVICES
-A PREROUTING -j OTHER-CHAIN
-A OUTPUT -m comment --comment "kubernetes service portals" -j KUBE-SERVICES
-A POSTROUTING -m comment --comment "kubernetes postrouting rules" -j KUBE-POSTROUTING
-A KUBE-SERVICES -d 10.96.0.1/32 -p tcp -m tcp --dport 443 -j KUBE-SVC-NPX46M4PTMTKRN6Y
-A KUBE-SVC-NPX46M4PTMTKRN6Y -j KUBE-SEP-ABCDEFGHIJKLMNOP
-A KUBE-SEP-ABCDEFGHIJKLMNOP -p tcp -m tcp -j DNAT --to-destination 10.0.0.2:6443
-A KUBE-MARK-DROP -j MARK --set-xmark 0x8000/0x8000
-A OTHER-CHAIN -m comment --comment "-j KUBE-SERVICES" -j RETURN
COMMIT
*filter
:INPUT ACCEPT [0:0]
:KUBE-FIREWALL - [0:0]
:KUBE-SVC-LOOKALIKE - [0:0]
-A INPUT -j KUBE-FIREWALL
COMMIT
"#;

fn plans() -> Vec<Plan> {
    parse_save(SAVED)
        .unwrap()
        .iter()
        .map(|t| plan(Backend::Nft, Family::V4, t))
        .collect()
}

#[test]
fn upstream_chains_are_emptied_with_the_jumps_into_them_then_deleted() {
    let plans = plans();
    assert_eq!(
        plans[0].input.to_string(),
        "*nat
-D PREROUTING -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES
-D OUTPUT -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES
-D POSTROUTING -m comment --comment \"kubernetes postrouting rules\" -j KUBE-POSTROUTING
:KUBE-SVC-NPX46M4PTMTKRN6Y - [0:0]
:KUBE-SERVICES - [0:0]
:KUBE-SEP-ABCDEFGHIJKLMNOP - [0:0]
:KUBE-POSTROUTING - [0:0]
COMMIT
"
    );
    assert_eq!(
        plans[0].delete.to_string(),
        "*nat
-X KUBE-SVC-NPX46M4PTMTKRN6Y
-X KUBE-SERVICES
-X KUBE-SEP-ABCDEFGHIJKLMNOP
-X KUBE-POSTROUTING
COMMIT
"
    );
}

#[test]
fn each_removal_is_named_with_its_tool_table_and_rule_count() {
    let names: Vec<String> = plans()[0].removed.iter().map(|r| r.to_string()).collect();
    assert_eq!(
        names,
        [
            "iptables-nft nat rule -A PREROUTING -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES",
            "iptables-nft nat rule -A OUTPUT -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES",
            "iptables-nft nat rule -A POSTROUTING -m comment --comment \"kubernetes postrouting rules\" -j KUBE-POSTROUTING",
            "iptables-nft nat chain KUBE-POSTROUTING (0 rules)",
            "iptables-nft nat chain KUBE-SEP-ABCDEFGHIJKLMNOP (1 rules)",
            "iptables-nft nat chain KUBE-SERVICES (1 rules)",
            "iptables-nft nat chain KUBE-SVC-NPX46M4PTMTKRN6Y (1 rules)",
        ]
    );
}

#[test]
fn the_kubelets_kproxys_and_others_chains_stay() {
    let plans = plans();
    let text = plans[0].input.to_string();
    for kept in ["KUBE-MARK-DROP", "KPROXY-SERVICES", "OTHER-CHAIN"] {
        assert!(!text.contains(kept), "{kept} touched:\n{text}");
    }
    // The filter table: the kubelet's KUBE-FIREWALL stays, and service-chain prefixes are
    // upstream's only in nat.
    assert!(plans[1].input.is_empty() && plans[1].delete.is_empty());
    assert!(plans[1].removed.is_empty());
}
