//! The scenario file format of tests/conformance/FORMAT.md, and what its objects imply for the
//! topology (which endpoint addresses exist, where, serving which ports).

use crate::server::Proto;
use anyhow::{Context, Result, anyhow, bail};
use ipnet::IpNet;
use serde::Deserialize;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};
use std::path::Path;

#[derive(Clone, Debug, Deserialize)]
pub struct Case {
    pub name: String,
    #[serde(default)]
    pub upstream_modes: Vec<String>,
    pub node: NodeSpec,
    pub config: CaseConfig,
    #[serde(default)]
    pub objects: Vec<Value>,
    pub steps: Vec<Step>,
}

#[derive(Clone, Debug, Deserialize)]
pub struct NodeSpec {
    pub name: String,
    pub ips: Vec<IpAddr>,
    #[serde(default)]
    pub primary_ip: Option<IpAddr>,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

#[derive(Clone, Debug, Deserialize)]
pub struct CaseConfig {
    #[serde(default)]
    pub ip_family: Option<String>,
    #[serde(default)]
    pub local_traffic_detector: Option<String>,
    #[serde(default)]
    pub cluster_cidr: Option<IpNet>,
    #[serde(default)]
    pub service_cidrs: Option<Vec<IpNet>>,
    #[serde(default)]
    pub node_port_addresses: Vec<String>,
    #[serde(default)]
    pub masquerade_all: bool,
    /// `'0x4000'` in the files; a plain YAML number is accepted too.
    #[serde(default)]
    pub masquerade_mark: Option<Value>,
    #[serde(default)]
    pub localhost_nodeports: Option<bool>,
}

#[derive(Clone, Debug, Deserialize)]
pub struct Step {
    #[serde(default)]
    pub objects_replace: bool,
    #[serde(default)]
    pub objects: Vec<Value>,
    #[serde(default)]
    pub flows: Vec<Flow>,
}

#[derive(Clone, Debug, Deserialize)]
pub struct Flow {
    pub name: String,
    pub source: IpAddr,
    pub dest: IpAddr,
    pub port: u16,
    pub protocol: String,
    pub expect: Expect,
    #[serde(default)]
    pub masq: Option<bool>,
    /// Accepted beside `expect` as well as inside it.
    #[serde(default)]
    pub sticky: bool,
}

#[derive(Clone, Debug, Deserialize)]
pub struct Expect {
    #[serde(default)]
    pub endpoints: Option<Vec<String>>,
    #[serde(default)]
    pub verdict: Option<String>,
    #[serde(default)]
    pub sticky: bool,
}

/// What a flow must see, parsed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Expected {
    Endpoints { set: Vec<SocketAddr>, sticky: bool },
    Reject,
    Drop,
    None,
    Accept,
}

impl Flow {
    pub fn proto(&self) -> Result<Proto> {
        Proto::parse(&self.protocol)
    }

    pub fn dest_addr(&self) -> SocketAddr {
        SocketAddr::new(self.dest, self.port)
    }

    pub fn expected(&self) -> Result<Expected> {
        match (&self.expect.endpoints, self.expect.verdict.as_deref()) {
            (Some(eps), None) => Ok(Expected::Endpoints {
                set: eps
                    .iter()
                    .map(|e| e.parse().with_context(|| format!("endpoint {e:?}")))
                    .collect::<Result<_>>()?,
                sticky: self.sticky || self.expect.sticky,
            }),
            (None, Some(v)) => match v {
                "REJECT" => Ok(Expected::Reject),
                "DROP" => Ok(Expected::Drop),
                "none" | "NONE" => Ok(Expected::None),
                "ACCEPT" => Ok(Expected::Accept),
                other => bail!("unknown verdict {other:?}"),
            },
            _ => bail!(
                "flow {:?}: expect needs exactly one of endpoints, verdict",
                self.name
            ),
        }
    }
}

impl Case {
    pub fn load(path: &Path) -> Result<Case> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        Case::parse(&text).with_context(|| format!("parsing {}", path.display()))
    }

    /// Parses and checks a scenario: every flow's protocol and expectation must be understood.
    pub fn parse(text: &str) -> Result<Case> {
        let case: Case = serde_saphyr::from_str(text)?;
        anyhow::ensure!(!case.node.ips.is_empty(), "node.ips is empty");
        for step in &case.steps {
            for f in &step.flows {
                f.proto()?;
                f.expected()?;
            }
        }
        Ok(case)
    }

    /// Node IPs with the primary first.
    pub fn node_ips(&self) -> Vec<IpAddr> {
        let mut ips = self.node.ips.clone();
        if let Some(p) = self.node.primary_ip {
            ips.retain(|i| *i != p);
            ips.insert(0, p);
        }
        ips
    }

    /// log2 of the masquerade mark (the configuration's masqueradeBit).
    pub fn masquerade_bit(&self) -> Result<Option<u32>> {
        let Some(v) = &self.config.masquerade_mark else {
            return Ok(None);
        };
        let n = match v {
            Value::Number(n) => n.as_u64().ok_or_else(|| anyhow!("mark {n}"))?,
            Value::String(s) => {
                let s = s.trim();
                match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
                    Some(hex) => u64::from_str_radix(hex, 16)?,
                    None => s.parse()?,
                }
            }
            other => bail!("masquerade_mark {other}"),
        };
        anyhow::ensure!(n.is_power_of_two(), "masquerade_mark {n} is not one bit");
        Ok(Some(n.trailing_zeros()))
    }

    /// Every object set the file uses: the initial one and each replacement.
    fn all_objects(&self) -> impl Iterator<Item = &Value> {
        self.objects
            .iter()
            .chain(self.steps.iter().flat_map(|s| s.objects.iter()))
    }

    /// Endpoint addresses of every EndpointSlice in the file (any step), whether each is local to
    /// the node, and the (protocol, port)s it must serve.
    pub fn endpoints(&self) -> BTreeMap<IpAddr, EndpointHost> {
        let mut out: BTreeMap<IpAddr, EndpointHost> = BTreeMap::new();
        for obj in self.all_objects() {
            if obj["kind"] != "EndpointSlice" {
                continue;
            }
            let mut ports = BTreeSet::new();
            for p in obj["ports"].as_array().into_iter().flatten() {
                let proto = p["protocol"].as_str().unwrap_or("TCP");
                if let (Ok(proto), Some(port)) = (Proto::parse(proto), p["port"].as_u64()) {
                    ports.insert((proto, port as u16));
                }
            }
            for ep in obj["endpoints"].as_array().into_iter().flatten() {
                let local = ep["nodeName"].as_str() == Some(self.node.name.as_str());
                for a in ep["addresses"].as_array().into_iter().flatten() {
                    let Some(ip) = a.as_str().and_then(|s| s.parse::<IpAddr>().ok()) else {
                        continue;
                    };
                    let host = out.entry(ip).or_insert(EndpointHost {
                        local,
                        ports: BTreeSet::new(),
                    });
                    // Local anywhere wins: the address then has a pod on this node.
                    host.local |= local;
                    host.ports.extend(ports.iter().copied());
                }
            }
        }
        out
    }

    /// Where a flow's source lives.
    pub fn source_kind(&self, source: IpAddr) -> SourceKind {
        let eps = self.endpoints();
        if source.is_loopback() || self.node.ips.contains(&source) {
            SourceKind::Node
        } else if eps.get(&source).is_some_and(|h| h.local) {
            SourceKind::Pod
        } else if eps.contains_key(&source) {
            SourceKind::Remote
        } else if match &self.config.cluster_cidr {
            Some(c) => c.contains(&source),
            // No pod CIDR given (detector `none`): private-range addresses are taken as pods.
            None => is_private(source),
        } {
            SourceKind::Pod
        } else {
            SourceKind::External
        }
    }
}

fn is_private(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_private(),
        IpAddr::V6(v6) => (v6.segments()[0] & 0xfe00) == 0xfc00,
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EndpointHost {
    pub local: bool,
    pub ports: BTreeSet<(Proto, u16)>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SourceKind {
    Node,
    Pod,
    Remote,
    External,
}

#[cfg(test)]
mod tests {
    use super::*;

    const CASE: &str = r#"
name: t
node: {name: n1, ips: [192.168.0.2, '2001:db8::1'], primary_ip: 2001:db8::1}
config: {cluster_cidr: 10.0.0.0/8, masquerade_mark: '0x4000', node_port_addresses: []}
objects:
- apiVersion: discovery.k8s.io/v1
  kind: EndpointSlice
  metadata: {name: s, namespace: ns}
  endpoints:
  - {addresses: [10.180.0.1], nodeName: n1}
  - {addresses: [10.180.2.1]}
  ports: [{port: 80}, {port: 53, protocol: UDP}]
steps:
- flows:
  - {name: a, source: 10.0.0.2, dest: 172.30.0.1, port: 80, protocol: TCP, expect: {endpoints: ['10.180.0.1:80'], sticky: true}}
- objects_replace: true
  objects:
  - {kind: EndpointSlice, endpoints: [{addresses: [10.180.2.1], nodeName: n1}], ports: [{port: 8080}]}
  flows:
  - {name: b, source: 203.0.113.2, dest: 192.168.0.2, port: 3001, protocol: udp, expect: {verdict: REJECT}, masq: false}
"#;

    #[test]
    fn parses_a_scenario_and_derives_the_topology() {
        let c = Case::parse(CASE).unwrap();
        assert_eq!(c.node_ips()[0], "2001:db8::1".parse::<IpAddr>().unwrap());
        assert_eq!(c.masquerade_bit().unwrap(), Some(14));
        let eps = c.endpoints();
        let local = &eps[&"10.180.0.1".parse::<IpAddr>().unwrap()];
        assert!(local.local);
        assert_eq!(
            local.ports,
            BTreeSet::from([(Proto::Tcp, 80), (Proto::Udp, 53)])
        );
        // Remote in the first object set, local in the replacement: it gets a pod.
        let both = &eps[&"10.180.2.1".parse::<IpAddr>().unwrap()];
        assert!(both.local);
        assert!(both.ports.contains(&(Proto::Tcp, 8080)));
        let kind = |s: &str| c.source_kind(s.parse().unwrap());
        assert_eq!(kind("10.0.0.2"), SourceKind::Pod);
        assert_eq!(kind("10.180.0.1"), SourceKind::Pod);
        assert_eq!(kind("127.0.0.1"), SourceKind::Node);
        assert_eq!(kind("192.168.0.2"), SourceKind::Node);
        assert_eq!(kind("203.0.113.2"), SourceKind::External);
        let f = &c.steps[0].flows[0];
        assert_eq!(
            f.expected().unwrap(),
            Expected::Endpoints {
                set: vec!["10.180.0.1:80".parse().unwrap()],
                sticky: true
            }
        );
        assert_eq!(c.steps[1].flows[0].proto().unwrap(), Proto::Udp);
        assert_eq!(c.steps[1].flows[0].expected().unwrap(), Expected::Reject);
    }

    #[test]
    fn rejects_what_it_cannot_judge() {
        let bad_verdict = CASE.replace("verdict: REJECT", "verdict: MAYBE");
        assert!(Case::parse(&bad_verdict).is_err());
        let bad_proto = CASE.replace("protocol: udp", "protocol: ICMP");
        assert!(Case::parse(&bad_proto).is_err());
        let two_bits = CASE.replace("'0x4000'", "'0x4001'");
        assert!(Case::parse(&two_bits).unwrap().masquerade_bit().is_err());
    }
}
