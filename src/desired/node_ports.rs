//! Which NodePorts kproxy may program at all, whatever other Services claim: those inside
//! kproxy's `--service-node-port-range` (the API server's flag and default), and never a port
//! kproxy itself listens on (its health and metrics servers). A NodePort DNAT on such a port
//! would hand the node's own service (sshd on 22, kproxy's `/healthz` on 10256) to a pod.
//! Health-check node ports of other Services are handled with the collisions
//! (`collisions.rs`), since they come from Services.

use std::{fmt, str::FromStr};

/// An inclusive range of port numbers, written as the API server takes it: `30000-32767`,
/// `30000+2767` (base and size) or a single port.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PortRange {
    pub first: u16,
    pub last: u16,
}

/// The API server's `--service-node-port-range` default.
pub const DEFAULT_NODE_PORT_RANGE: PortRange = PortRange {
    first: 30000,
    last: 32767,
};

impl Default for PortRange {
    fn default() -> Self {
        DEFAULT_NODE_PORT_RANGE
    }
}

impl PortRange {
    pub fn contains(&self, port: u16) -> bool {
        (self.first..=self.last).contains(&port)
    }
}

impl fmt::Display for PortRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.first, self.last)
    }
}

impl FromStr for PortRange {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("{s:?} is not a port range (e.g. 30000-32767)");
        let port = |p: &str| p.trim().parse::<u16>().ok().filter(|p| *p != 0);
        let (first, last) = if let Some((a, b)) = s.split_once('-') {
            (port(a).ok_or_else(bad)?, port(b).ok_or_else(bad)?)
        } else if let Some((a, n)) = s.split_once('+') {
            let first = port(a).ok_or_else(bad)?;
            let size: u16 = n.trim().parse().map_err(|_| bad())?;
            (first, first.checked_add(size).ok_or_else(bad)?)
        } else {
            let p = port(s).ok_or_else(bad)?;
            (p, p)
        };
        if first > last {
            return Err(format!("{s:?}: the first port is above the last"));
        }
        Ok(PortRange { first, last })
    }
}

/// The NodePort rules the compute applies to every Service port on its own.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NodePortRules {
    pub range: PortRange,
    /// Ports kproxy serves itself, with what serves them (e.g. `10256`, "kproxy's health port
    /// (healthzBindAddress)"): never programmed as NodePorts, whatever the range says.
    pub reserved: Vec<(u16, &'static str)>,
}

impl NodePortRules {
    /// Why `node_port` may not be programmed, if it may not.
    pub fn refuse(&self, node_port: u16) -> Option<String> {
        if let Some((_, what)) = self.reserved.iter().find(|(p, _)| *p == node_port) {
            return Some(format!("node port {node_port} is {what}"));
        }
        (!self.range.contains(node_port)).then(|| {
            format!(
                "node port {node_port} is outside --service-node-port-range {}",
                self.range
            )
        })
    }
}

/// The port of a `host:port` bind address (`healthzBindAddress`, `metricsBindAddress`); `None`
/// when the server is off (empty address, or port 0).
pub fn bind_port(addr: &str) -> Option<u16> {
    let addr = addr.trim();
    if let Ok(sa) = addr.parse::<std::net::SocketAddr>() {
        return Some(sa.port()).filter(|p| *p != 0);
    }
    let (host, port) = addr.rsplit_once(':')?;
    if host.contains(':') {
        return None; // A bare IPv6 address: no port.
    }
    port.parse().ok().filter(|p| *p != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_parse_as_the_api_server_writes_them() {
        let r = |s: &str| s.parse::<PortRange>().map(|r| (r.first, r.last));
        assert_eq!(r("30000-32767"), Ok((30000, 32767)));
        assert_eq!(r("30000+2767"), Ok((30000, 32767)));
        assert_eq!(r("8080"), Ok((8080, 8080)));
        for bad in ["", "a-b", "0-10", "10-5", "1-70000", "65535+1"] {
            assert!(r(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn reserved_ports_and_the_range_refuse_with_a_reason() {
        let rules = NodePortRules {
            range: PortRange::default(),
            reserved: vec![(30256, "kproxy's health port (healthzBindAddress)")],
        };
        assert_eq!(rules.refuse(30070), None);
        assert_eq!(
            rules.refuse(22).unwrap(),
            "node port 22 is outside --service-node-port-range 30000-32767"
        );
        assert_eq!(
            rules.refuse(30256).unwrap(),
            "node port 30256 is kproxy's health port (healthzBindAddress)"
        );
        assert_eq!(bind_port("0.0.0.0:10256"), Some(10256));
        assert_eq!(bind_port("[::]:10249"), Some(10249));
        assert_eq!(bind_port(""), None);
        assert_eq!(bind_port("::1"), None);
        assert_eq!(bind_port("localhost:10249"), Some(10249));
        assert_eq!(bind_port("0.0.0.0:0"), None);
    }
}
