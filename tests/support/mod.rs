//! Builders for Kubernetes objects in tests, from JSON as the API would serve it.
#![allow(dead_code)]

pub mod netns;

use k8s_openapi::api::{
    core::v1::{Node, Service},
    discovery::v1::EndpointSlice,
};
pub mod http_client;

use kproxy::desired::{self, ProxyOptions};
use kproxy_modes::model::{DesiredState, IpFamily, ServicePort};
use serde_json::{Value, json};

pub const NODE: &str = "node-a";

pub fn service(v: Value) -> Service {
    serde_json::from_value(v).expect("valid Service JSON")
}

pub fn slice(v: Value) -> EndpointSlice {
    serde_json::from_value(v).expect("valid EndpointSlice JSON")
}

pub fn node(name: &str, zone: Option<&str>, ips: &[&str]) -> Node {
    let labels = zone
        .map(|z| json!({"topology.kubernetes.io/zone": z}))
        .unwrap_or(json!({}));
    let addresses: Vec<Value> = ips
        .iter()
        .map(|ip| json!({"type": "InternalIP", "address": ip}))
        .collect();
    serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": name, "labels": labels},
        "status": {"addresses": addresses}
    }))
    .expect("valid Node JSON")
}

/// A ClusterIP Service `ns1/svc` on 172.30.0.1 with one TCP port `p80`, patched by `spec`.
pub fn simple_service(name: &str, spec: Value) -> Service {
    let mut base = json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": name, "namespace": "ns1"},
        "spec": {"clusterIP": "172.30.0.1", "ports": [{"name": "p80", "port": 80, "protocol": "TCP"}]}
    });
    merge(&mut base["spec"], spec);
    service(base)
}

/// An IPv4 slice of `ns1/<svc>` with port `p80`=80 and these endpoints.
pub fn simple_slice(svc: &str, name: &str, endpoints: Value) -> EndpointSlice {
    slice(json!({
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": name, "namespace": "ns1", "labels": {"kubernetes.io/service-name": svc}},
        "addressType": "IPv4",
        "endpoints": endpoints,
        "ports": [{"name": "p80", "port": 80, "protocol": "TCP"}]
    }))
}

pub fn merge(base: &mut Value, patch: Value) {
    match (base, patch) {
        (Value::Object(b), Value::Object(p)) => {
            for (k, v) in p {
                merge(b.entry(k).or_insert(Value::Null), v);
            }
        }
        (b, p) => *b = p,
    }
}

pub fn opts() -> ProxyOptions {
    ProxyOptions::for_node(NODE)
}

/// Computes with the default options, an IPv4 node in zone-a.
pub fn compute(services: &[Service], slices: &[EndpointSlice]) -> DesiredState {
    let n = node(NODE, Some("zone-a"), &["192.168.0.2"]);
    desired::compute(&opts(), services, slices, Some(&n))
}

/// The only IPv4 Service port of the state.
pub fn only_port(state: &DesiredState) -> &ServicePort {
    let fam = state.family(IpFamily::V4).expect("IPv4 family");
    assert_eq!(
        fam.services.len(),
        1,
        "expected one Service port: {:?}",
        fam.services.keys()
    );
    fam.services.values().next().expect("one port")
}

pub fn addrs(eps: &[kproxy_modes::model::Endpoint]) -> Vec<String> {
    eps.iter().map(|e| e.addr.to_string()).collect()
}
