//! The iptables mode's filter rules, with real packets, on both iptables backends: on a node
//! whose filter policy is DROP (set with the same backend's tool, as a hardened node has it),
//! what kproxy's own filter rules accept is all that gets through:
//!
//! - INPUT DROP: an outside client reaches kproxy's Service health-check server on
//!   nodeIP:healthCheckNodePort (200 with a local endpoint, 503 without) only because
//!   `KPROXY-NODEPORTS` accepts it; a port of the node without such a rule gets no answer.
//! - FORWARD DROP: connections through a NodePort and a cluster IP to an endpoint pod still
//!   work (`KPROXY-FORWARD` accepts marked and established traffic, as upstream's
//!   `KUBE-FORWARD`); a direct connection to the same pod, which no rule accepts, does not.
//!
//! Needs root (network namespaces, iptables); skipped with a message otherwise.

#[path = "support/iptables_bed.rs"]
mod ipt;

use ipt::{EP1, EP2, EXTERNAL, IptBed, NODE, NODE_IP, answered_by, endpoints, service, to};
use kproxy_testbed::{Outcome, Where, server::Proto};
use serde_json::{Value, json};

/// A port of the node nothing of kproxy's accepts: a bystander server answers "node" on it.
const CONTROL: u16 = 31001;
const HC_LOCAL: u16 = 32100;
const HC_AWAY: u16 = 32101;

fn objects() -> Vec<Value> {
    let lb = |name: &str, vip: &str, np: u16, hc: u16| {
        service(
            name,
            vip,
            json!({"type": "LoadBalancer", "externalTrafficPolicy": "Local",
                   "healthCheckNodePort": hc,
                   "ports": [{"name": "http", "port": 80, "protocol": "TCP",
                              "targetPort": 8080, "nodePort": np}]}),
        )
    };
    vec![
        service(
            "web",
            "10.96.0.10",
            json!({"type": "NodePort", "ports": [{"name": "http", "port": 80,
                   "protocol": "TCP", "targetPort": 8080, "nodePort": 30080}]}),
        ),
        endpoints("web", &[(EP1, NODE)]),
        // A local endpoint: its health check says 200.
        lb("lb", "10.96.0.20", 30081, HC_LOCAL),
        endpoints("lb", &[(EP2, NODE)]),
        // Its only endpoint on another node: 503.
        lb("lb-away", "10.96.0.21", 30082, HC_AWAY),
        endpoints("lb-away", &[("10.244.2.10", "node-b")]),
    ]
}

/// GET http://NODE_IP:port/ from the external client: the status code (0 for no answer), body.
fn health_check(b: &IptBed, port: u16) -> (u16, String) {
    let ns = b.bed.ns_for_source(ipt::ip(EXTERNAL)).unwrap();
    let url = format!("http://{NODE_IP}:{port}/");
    let out = ns.try_exec(&[
        "curl",
        "-s",
        "--max-time",
        "3",
        "-w",
        "\n%{http_code}",
        &url,
    ]);
    let text = String::from_utf8_lossy(&out.stdout);
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
    (code.trim().parse().unwrap_or(0), body.to_owned())
}

async fn input_drop_leaves_only_the_health_check_ports_open(b: &IptBed) {
    // Loopback stays open as on any node (kproxy's own /metrics and /healthz live there).
    b.ipt_ok(&["-I", "INPUT", "-i", "lo", "-j", "ACCEPT"]);
    let control = to(NODE_IP, CONTROL);
    let seen = b.probe(EXTERNAL, control).await;
    assert_eq!(
        answered_by(&seen),
        Some("node"),
        "before the policy: {seen}"
    );

    b.ipt_ok(&["-P", "INPUT", "DROP"]);
    let seen = b.probe(EXTERNAL, control).await;
    assert_eq!(
        seen,
        Outcome::NoAnswer,
        "INPUT DROP must drop the control port"
    );

    let (code, body) = health_check(b, HC_LOCAL);
    if code != 200 {
        b.fail(&format!(
            "health check with a local endpoint: {code} {body:?}"
        ));
    }
    let hc: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(hc["localEndpoints"], 1, "{body}");
    assert_eq!(hc["service"]["name"], "lb", "{body}");
    let (code, body) = health_check(b, HC_AWAY);
    if code != 503 {
        b.fail(&format!(
            "health check without a local endpoint: {code} {body:?}"
        ));
    }
    // What accepted them is kproxy's rule: without it the port is as closed as the control.
    let rules = b.ipt_ok(&["-S", "KPROXY-NODEPORTS"]);
    let rules: Vec<&str> = rules.lines().filter(|l| l.starts_with("-A ")).collect();
    let at = (rules.iter())
        .position(|l| l.contains(&format!("--dport {HC_LOCAL} ")))
        .unwrap_or_else(|| b.fail(&format!("no ACCEPT for {HC_LOCAL} in {rules:?}")));
    b.ipt_ok(&["-D", "KPROXY-NODEPORTS", &(at + 1).to_string()]);
    assert_eq!(
        health_check(b, HC_LOCAL).0,
        0,
        "{HC_LOCAL} answered without its rule"
    );
}

async fn forward_drop_still_forwards_service_traffic(b: &IptBed) {
    let pod = to(EP1, 8080);
    let seen = b.probe(EXTERNAL, pod).await;
    assert_eq!(
        answered_by(&seen),
        Some("10.244.1.10:8080"),
        "before: {seen}"
    );

    b.ipt_ok(&["-P", "FORWARD", "DROP"]);
    let seen = b.probe(EXTERNAL, pod).await;
    assert_eq!(
        seen,
        Outcome::NoAnswer,
        "FORWARD DROP must drop a direct connection"
    );
    for dest in [to(NODE_IP, 30080), to("10.96.0.10", 80)] {
        let seen = b.probe(EXTERNAL, dest).await;
        if answered_by(&seen) != Some("10.244.1.10:8080") {
            b.fail(&format!("{dest} under FORWARD DROP: {seen}"));
        }
    }
}

async fn filter_policy_drop(backend: &'static str) {
    let Some(mut b) = IptBed::new(backend).await else {
        return;
    };
    b.write(&objects());
    b.start().await;
    b.bed
        .serve(
            Where::Node,
            Proto::Tcp,
            to("0.0.0.0", CONTROL),
            Some("node"),
        )
        .await
        .unwrap();
    forward_drop_still_forwards_service_traffic(&b).await;
    input_drop_leaves_only_the_health_check_ports_open(&b).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn policy_drop_nft_backend() {
    filter_policy_drop("nft").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn policy_drop_legacy_backend() {
    filter_policy_drop("legacy").await;
}
