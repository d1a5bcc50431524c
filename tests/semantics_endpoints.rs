//! Table-driven tests of which endpoints each traffic path uses. Every row names the upstream
//! rule it checks (kubernetes.io docs or upstream kube-proxy's `CategorizeEndpoints`).

mod support;

use serde_json::{Value, json};
use support::*;

struct Case {
    /// The upstream rule, as documented.
    rule: &'static str,
    spec: Value,
    endpoints: Value,
    internal: &'static [&'static str],
    external: &'static [&'static str],
    has_any: bool,
}

fn ep(ip: &str, node: Option<&str>, ready: bool, serving: bool, terminating: bool) -> Value {
    let mut v = json!({"addresses": [ip], "conditions": {"ready": ready, "serving": serving, "terminating": terminating}});
    if let Some(n) = node {
        v["nodeName"] = json!(n);
    }
    v
}

fn ready(ip: &str, node: Option<&str>) -> Value {
    ep(ip, node, true, true, false)
}

fn hinted(ip: &str, zones: &[&str], nodes: &[&str]) -> Value {
    let mut v = ready(ip, Some("other"));
    let mut hints = json!({});
    if !zones.is_empty() {
        hints["forZones"] = json!(zones.iter().map(|z| json!({"name": z})).collect::<Vec<_>>());
    }
    if !nodes.is_empty() {
        hints["forNodes"] = json!(nodes.iter().map(|n| json!({"name": n})).collect::<Vec<_>>());
    }
    v["hints"] = hints;
    v
}

const LB_LOCAL: &str = r#"{"type": "LoadBalancer", "externalTrafficPolicy": "Local", "ports": [{"name": "p80", "port": 80, "protocol": "TCP", "nodePort": 30080}]}"#;

fn cases() -> Vec<Case> {
    let lb_local: Value = serde_json::from_str(LB_LOCAL).unwrap();
    vec![
        Case {
            rule: "endpoints without conditions are ready (discovery/v1 EndpointConditions: nil ready means ready)",
            spec: json!({}),
            endpoints: json!([{"addresses": ["10.0.1.1"]}, {"addresses": ["10.0.1.2"]}]),
            internal: &["10.0.1.1:80", "10.0.1.2:80"],
            external: &["10.0.1.1:80", "10.0.1.2:80"],
            has_any: true,
        },
        Case {
            rule: "only ready endpoints are used while any exist (CategorizeEndpoints: ready endpoints by default)",
            spec: json!({}),
            endpoints: json!([
                ready("10.0.1.1", None),
                ep("10.0.1.2", None, false, true, true),
                ep("10.0.1.3", None, false, false, false)
            ]),
            internal: &["10.0.1.1:80"],
            external: &["10.0.1.1:80"],
            has_any: true,
        },
        Case {
            rule: "with no ready endpoint, serving terminating endpoints are used (KEP-1669 terminating fallback)",
            spec: json!({}),
            endpoints: json!([
                ep("10.0.1.2", None, false, true, true),
                ep("10.0.1.3", None, false, false, true)
            ]),
            internal: &["10.0.1.2:80"],
            external: &["10.0.1.2:80"],
            has_any: true,
        },
        Case {
            rule: "no usable endpoint anywhere: the Service has no endpoints (traffic is rejected)",
            spec: json!({}),
            endpoints: json!([ep("10.0.1.3", None, false, false, true)]),
            internal: &[],
            external: &[],
            has_any: false,
        },
        Case {
            rule: "internalTrafficPolicy Local: cluster IP traffic goes only to endpoints on this node",
            spec: json!({"internalTrafficPolicy": "Local"}),
            endpoints: json!([
                ready("10.0.1.1", Some(NODE)),
                ready("10.0.1.2", Some("other"))
            ]),
            internal: &["10.0.1.1:80"],
            // Not externally accessible: no external path, so no Cluster set is computed.
            external: &[],
            has_any: true,
        },
        Case {
            rule: "internalTrafficPolicy Local with no local endpoint: cluster IP traffic is dropped, the Service still has endpoints",
            spec: json!({"internalTrafficPolicy": "Local"}),
            endpoints: json!([ready("10.0.1.2", Some("other"))]),
            internal: &[],
            external: &[],
            has_any: true,
        },
        Case {
            rule: "externalTrafficPolicy Local: external traffic goes only to local endpoints, cluster IP traffic to all",
            spec: lb_local.clone(),
            endpoints: json!([
                ready("10.0.1.1", Some(NODE)),
                ready("10.0.1.2", Some("other"))
            ]),
            internal: &["10.0.1.1:80", "10.0.1.2:80"],
            external: &["10.0.1.1:80"],
            has_any: true,
        },
        Case {
            rule: "externalTrafficPolicy Local: the local set falls back to local serving terminating endpoints independently",
            spec: lb_local.clone(),
            endpoints: json!([
                ep("10.0.1.1", Some(NODE), false, true, true),
                ready("10.0.1.2", Some("other"))
            ]),
            internal: &["10.0.1.2:80"],
            external: &["10.0.1.1:80"],
            has_any: true,
        },
        Case {
            rule: "externalTrafficPolicy is ignored for a ClusterIP Service without external IPs (ExternallyAccessible)",
            spec: json!({"externalTrafficPolicy": "Local"}),
            endpoints: json!([
                ready("10.0.1.1", Some(NODE)),
                ready("10.0.1.2", Some("other"))
            ]),
            internal: &["10.0.1.1:80", "10.0.1.2:80"],
            external: &["10.0.1.1:80", "10.0.1.2:80"],
            has_any: true,
        },
        Case {
            rule: "topology: when every ready endpoint has zone hints and one is for this zone, only those are used",
            spec: json!({"trafficDistribution": "PreferSameZone"}),
            endpoints: json!([
                hinted("10.0.1.1", &["zone-a"], &[]),
                hinted("10.0.1.2", &["zone-b"], &[])
            ]),
            internal: &["10.0.1.1:80"],
            external: &["10.0.1.1:80"],
            has_any: true,
        },
        Case {
            rule: "topology (topology-mode Auto): hints are all-or-nothing, one ready endpoint without a hint disables them",
            spec: json!({}),
            endpoints: json!([
                hinted("10.0.1.1", &["zone-a"], &[]),
                ready("10.0.1.2", None)
            ]),
            internal: &["10.0.1.1:80", "10.0.1.2:80"],
            external: &["10.0.1.1:80", "10.0.1.2:80"],
            has_any: true,
        },
        Case {
            rule: "topology: hints that name no endpoint for this zone are ignored (no black-holing)",
            spec: json!({"trafficDistribution": "PreferClose"}),
            endpoints: json!([
                hinted("10.0.1.1", &["zone-b"], &[]),
                hinted("10.0.1.2", &["zone-c"], &[])
            ]),
            internal: &["10.0.1.1:80", "10.0.1.2:80"],
            external: &["10.0.1.1:80", "10.0.1.2:80"],
            has_any: true,
        },
        Case {
            rule: "trafficDistribution PreferSameNode: node hints take precedence over zone hints",
            spec: json!({"trafficDistribution": "PreferSameNode"}),
            endpoints: json!([
                hinted("10.0.1.1", &["zone-a"], &[NODE]),
                hinted("10.0.1.2", &["zone-a"], &["other"])
            ]),
            internal: &["10.0.1.1:80"],
            external: &["10.0.1.1:80"],
            has_any: true,
        },
        Case {
            rule: "topology ranks below Local policies: internalTrafficPolicy Local ignores hints",
            spec: json!({"internalTrafficPolicy": "Local"}),
            endpoints: json!([
                {"addresses": ["10.0.1.1"], "nodeName": NODE, "hints": {"forZones": [{"name": "zone-b"}]}},
                {"addresses": ["10.0.1.2"], "nodeName": "other", "hints": {"forZones": [{"name": "zone-a"}]}}
            ]),
            internal: &["10.0.1.1:80"],
            external: &[],
            has_any: true,
        },
        Case {
            rule: "topology: a not-ready endpoint's missing hint does not disable hints (only ready endpoints count)",
            spec: json!({}),
            endpoints: json!([
                hinted("10.0.1.1", &["zone-a"], &[]),
                hinted("10.0.1.2", &["zone-b"], &[]),
                ep("10.0.1.3", None, false, false, false)
            ]),
            internal: &["10.0.1.1:80"],
            external: &["10.0.1.1:80"],
            has_any: true,
        },
    ]
}

/// Each row: one Service `ns1/svc` with one slice; check the internal and external sets.
#[test]
fn each_endpoint_selection_rule_picks_the_documented_endpoints() {
    let mut failures = Vec::new();
    for case in cases() {
        let state = compute(
            &[simple_service("svc", case.spec.clone())],
            &[simple_slice("svc", "svc-1", case.endpoints.clone())],
        );
        let port = only_port(&state);
        let got = (
            addrs(port.internal_endpoints()),
            addrs(port.external_endpoints()),
            port.endpoints.has_any,
        );
        let want = (
            case.internal
                .iter()
                .map(|s| s.to_string())
                .collect::<Vec<_>>(),
            case.external
                .iter()
                .map(|s| s.to_string())
                .collect::<Vec<_>>(),
            case.has_any,
        );
        if got != want {
            failures.push(format!("{}\n   got  {got:?}\n   want {want:?}", case.rule));
        }
    }
    assert!(
        failures.is_empty(),
        "rules violated:\n{}",
        failures.join("\n")
    );
}

/// externalTrafficPolicy Local keeps the Cluster set for pod and node traffic to external VIPs
/// (upstream short-circuits that traffic to the cluster policy chain).
#[test]
fn external_policy_local_keeps_a_cluster_set_for_the_short_circuit() {
    let spec: Value = serde_json::from_str(LB_LOCAL).unwrap();
    let eps = json!([
        ready("10.0.1.1", Some(NODE)),
        ready("10.0.1.2", Some("other"))
    ]);
    let state = compute(
        &[simple_service("svc", spec)],
        &[simple_slice("svc", "svc-1", eps)],
    );
    let port = only_port(&state);
    assert_eq!(
        addrs(&port.endpoints.cluster),
        ["10.0.1.1:80", "10.0.1.2:80"]
    );
    assert_eq!(addrs(&port.endpoints.local), ["10.0.1.1:80"]);
    let excluded: Vec<_> = port
        .endpoints
        .excluded
        .iter()
        .map(|e| (e.addr.to_string(), e.reason))
        .collect();
    assert_eq!(
        excluded,
        [(
            "10.0.1.2:80".to_string(),
            kproxy_modes::model::ExclusionReason::RemoteUnderLocalPolicy
        )]
    );
}
