//! The synthetic cluster every benchmark uses, as the API would serve it: Service `i` is
//! `ns<i>/svc<i>` on cluster IP 172.30.<i/256>.<i%256> port 80 -> 8080/TCP with one EndpointSlice of
//! `endpoints` ready endpoints on other nodes; every tenth Service is a NodePort Service (so about
//! 10 % of ports have chains of their own in kproxy's layout, as in a real cluster).
//! The upstream-shaped baseline (`upstream.rs`) is generated from the same numbers.

use std::net::Ipv4Addr;

use k8s_openapi::api::{
    core::v1::{Node, Service},
    discovery::v1::EndpointSlice,
};
use kproxy::source::{Event, Kind, Object};
use serde_json::json;

pub const NODE: &str = "node-a";
pub const NODE_IP: &str = "192.168.0.2";

/// Where the benchmark's Services live; 172.30.0.0/16 holds 65k of them.
pub fn cluster_ip(i: u32) -> Ipv4Addr {
    Ipv4Addr::new(172, 30, (i >> 8) as u8, i as u8)
}

/// Endpoint `e` of Service `i`: unique addresses from 10.64.0.0 up (250k endpoints fit in 10.64/12).
pub fn endpoint_ip(i: u32, endpoints: u32, e: u32) -> Ipv4Addr {
    let n = i * endpoints + e;
    Ipv4Addr::new(10, 64 + (n >> 16) as u8, (n >> 8) as u8, n as u8)
}

/// NodePort of Service `i`, if it has one. Kept inside upstream's default range 30000-32767.
pub fn node_port(i: u32) -> Option<u16> {
    i.is_multiple_of(10)
        .then(|| 30000 + ((i / 10) % 2768) as u16)
        // Beyond 27680 Services the range would repeat (a collision): no NodePort there.
        .filter(|_| i < 27680)
}

/// Service `i` and its slice; `endpoint_override` replaces the endpoint addresses (the latency
/// benchmark points its probed Service at a real server).
pub fn service(i: u32, endpoints: u32, endpoint_override: Option<&[Ipv4Addr]>) -> [Object; 2] {
    let np = node_port(i);
    let mut port = json!({"name": "http", "port": 80, "targetPort": 8080, "protocol": "TCP"});
    if let Some(np) = np {
        port["nodePort"] = json!(np);
    }
    let svc: Service = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": format!("svc{i}"), "namespace": format!("ns{i}"),
                     "creationTimestamp": "2026-01-01T00:00:00Z"},
        "spec": {
            "type": if np.is_some() { "NodePort" } else { "ClusterIP" },
            "clusterIP": cluster_ip(i).to_string(),
            "clusterIPs": [cluster_ip(i).to_string()],
            "ports": [port]
        }
    }))
    .expect("valid Service");
    let addrs: Vec<Ipv4Addr> = match endpoint_override {
        Some(a) => a.to_vec(),
        None => (0..endpoints)
            .map(|e| endpoint_ip(i, endpoints, e))
            .collect(),
    };
    let eps: Vec<_> = addrs
        .iter()
        .map(|ip| {
            json!({"addresses": [ip.to_string()], "conditions": {"ready": true, "serving": true},
                   "nodeName": "node-b"})
        })
        .collect();
    let slice: EndpointSlice = serde_json::from_value(json!({
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": format!("svc{i}-0"), "namespace": format!("ns{i}"),
                     "labels": {"kubernetes.io/service-name": format!("svc{i}")}},
        "addressType": "IPv4",
        "endpoints": eps,
        "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}]
    }))
    .expect("valid EndpointSlice");
    [
        Object::Service(Box::new(svc)),
        Object::EndpointSlice(Box::new(slice)),
    ]
}

pub fn node() -> Object {
    let n: Node = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": NODE},
        "status": {"addresses": [{"type": "InternalIP", "address": NODE_IP}]}
    }))
    .expect("valid Node");
    Object::Node(Box::new(n))
}

/// The three initial lists the agent waits for (Nodes, Services, EndpointSlices), ready to apply.
pub fn initial_lists(objects: Vec<[Object; 2]>) -> Vec<Event> {
    let (mut svcs, mut slices) = (Vec::new(), Vec::new());
    for [s, e] in objects {
        svcs.push(s);
        slices.push(e);
    }
    vec![
        Event::Replace(Kind::Node, vec![node()]),
        Event::Replace(Kind::Service, svcs),
        Event::Replace(Kind::EndpointSlice, slices),
    ]
}
