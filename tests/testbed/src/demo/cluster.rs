//! The example cluster as the demo needs it: this node's addresses, the proxied Services with their
//! VIPs, and every endpoint address (local pod or remote) with the ports it must serve.

use crate::server::Proto;
use anyhow::{Context, Result, anyhow};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::path::Path;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SvcPort {
    pub name: String,
    pub proto: Proto,
    pub port: u16,
    pub node_port: Option<u16>,
}

#[derive(Clone, Debug)]
pub struct Svc {
    /// `namespace/name`.
    pub id: String,
    pub cluster_ips: Vec<IpAddr>,
    pub lb_ips: Vec<IpAddr>,
    pub ports: Vec<SvcPort>,
    pub etp_local: bool,
    pub affinity: bool,
    /// Every address in the Service's slices: an answer from anything else is wrong.
    pub endpoints: BTreeSet<IpAddr>,
    /// Those on this node (the only ones outside traffic may reach under eTP=Local).
    pub local_endpoints: BTreeSet<IpAddr>,
}

/// An endpoint address: on this node (a pod) or not (the bed's remote node), and what it serves.
#[derive(Clone, Debug, Default)]
pub struct Host {
    pub local: bool,
    pub ports: BTreeSet<(Proto, u16)>,
}

#[derive(Clone, Debug)]
pub struct Cluster {
    pub node_ips: Vec<IpAddr>,
    pub services: Vec<Svc>,
    pub hosts: BTreeMap<IpAddr, Host>,
}

/// Every object of the `*.yaml`/`*.yml` files directly in `dir`, with the file each came from.
pub fn read_objects(dir: &Path) -> Result<Vec<(String, Value)>> {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml" || x == "yml"))
        .collect();
    files.sort();
    let mut out = Vec::new();
    for f in files {
        let text = std::fs::read_to_string(&f)?;
        let docs: Vec<Value> = serde_saphyr::from_multiple(&text)
            .with_context(|| format!("parsing {}", f.display()))?;
        let name = f
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .to_string();
        out.extend(
            docs.into_iter()
                .filter(|d| d.is_object())
                .map(|d| (name.clone(), d)),
        );
    }
    Ok(out)
}

fn str_of<'a>(v: &'a Value, key: &str) -> &'a str {
    v[key].as_str().unwrap_or_default()
}

fn ips(v: &Value) -> Vec<IpAddr> {
    v.as_array()
        .into_iter()
        .flatten()
        .filter_map(|x| x.as_str()?.parse().ok())
        .collect()
}

fn id(obj: &Value) -> String {
    let m = &obj["metadata"];
    format!(
        "{}/{}",
        m["namespace"].as_str().unwrap_or("default"),
        str_of(m, "name")
    )
}

impl Cluster {
    pub fn load(dir: &Path, node_name: &str) -> Result<Cluster> {
        let objects: Vec<Value> = read_objects(dir)?.into_iter().map(|(_, o)| o).collect();
        let kind = |o: &&Value, k: &str| str_of(o, "kind") == k;
        let node = objects
            .iter()
            .find(|o| kind(o, "Node") && str_of(&o["metadata"], "name") == node_name)
            .ok_or_else(|| anyhow!("no Node {node_name} in {}", dir.display()))?;
        let node_ips: Vec<IpAddr> = node["status"]["addresses"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|a| str_of(a, "type") == "InternalIP")
            .filter_map(|a| str_of(a, "address").parse().ok())
            .collect();
        anyhow::ensure!(!node_ips.is_empty(), "Node {node_name} has no InternalIP");

        let mut services = Vec::new();
        for s in objects.iter().filter(|o| kind(o, "Service")) {
            let spec = &s["spec"];
            // Headless and ExternalName Services have nothing to proxy.
            let cluster_ips = ips(&spec["clusterIPs"]);
            if str_of(spec, "type") == "ExternalName" || cluster_ips.is_empty() {
                continue;
            }
            let ports = spec["ports"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|p| {
                    Ok(SvcPort {
                        name: str_of(p, "name").to_string(),
                        proto: Proto::parse(p["protocol"].as_str().unwrap_or("TCP"))?,
                        port: p["port"]
                            .as_u64()
                            .ok_or_else(|| anyhow!("port without number"))?
                            as u16,
                        node_port: p["nodePort"].as_u64().map(|n| n as u16),
                    })
                })
                .collect::<Result<Vec<_>>>()
                .with_context(|| format!("Service {}", id(s)))?;
            let lb_ips = s["status"]["loadBalancer"]["ingress"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|i| str_of(i, "ip").parse().ok())
                .collect();
            services.push(Svc {
                id: id(s),
                cluster_ips,
                lb_ips,
                ports,
                etp_local: str_of(spec, "externalTrafficPolicy") == "Local",
                affinity: str_of(spec, "sessionAffinity") == "ClientIP",
                endpoints: BTreeSet::new(),
                local_endpoints: BTreeSet::new(),
            });
        }

        let mut hosts: BTreeMap<IpAddr, Host> = BTreeMap::new();
        for sl in objects.iter().filter(|o| kind(o, "EndpointSlice")) {
            let svc_name = str_of(&sl["metadata"]["labels"], "kubernetes.io/service-name");
            let ns = sl["metadata"]["namespace"].as_str().unwrap_or("default");
            let svc_id = format!("{ns}/{svc_name}");
            let ports: Vec<(Proto, u16)> = sl["ports"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|p| {
                    let proto = Proto::parse(p["protocol"].as_str().unwrap_or("TCP")).ok()?;
                    Some((proto, p["port"].as_u64()? as u16))
                })
                .collect();
            for ep in sl["endpoints"].as_array().into_iter().flatten() {
                let local = str_of(ep, "nodeName") == node_name;
                for ip in ips(&ep["addresses"]) {
                    let h = hosts.entry(ip).or_default();
                    h.local |= local;
                    h.ports.extend(ports.iter().copied());
                    if let Some(s) = services.iter_mut().find(|s| s.id == svc_id) {
                        s.endpoints.insert(ip);
                        if local {
                            s.local_endpoints.insert(ip);
                        }
                    }
                }
            }
        }
        Ok(Cluster {
            node_ips,
            services,
            hosts,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_example_cluster() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/examples");
        let c = Cluster::load(&dir, "node-a").unwrap();
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert_eq!(c.node_ips, [ip("192.168.50.2"), ip("fd00:50::2")]);
        let web = c.services.iter().find(|s| s.id == "shop/web").unwrap();
        assert_eq!(web.cluster_ips, [ip("10.96.0.20")]);
        assert_eq!(web.ports.len(), 2);
        assert!(web.endpoints.contains(&ip("10.244.2.10")));
        let ingress = c
            .services
            .iter()
            .find(|s| s.id == "ingress/ingress")
            .unwrap();
        assert!(ingress.etp_local);
        assert_eq!(ingress.lb_ips, [ip("192.168.60.11")]);
        assert_eq!(ingress.ports[0].node_port, Some(30443));
        assert!(
            c.services
                .iter()
                .all(|s| s.id != "shop/db" && s.id != "shop/payments")
        );
        assert!(c.hosts[&ip("10.244.1.53")].local);
        assert!(
            c.hosts[&ip("10.244.1.53")]
                .ports
                .contains(&(Proto::Udp, 53))
        );
        assert!(!c.hosts[&ip("fd00:244:2::70")].local);
    }
}
