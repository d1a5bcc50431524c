//! `kproxy debug dump`: the desired state as this node sees it, for every Service port: VIPs,
//! policies, the endpoints each path uses, and why each excluded endpoint was left out.

use std::fmt::Write;

use kproxy_modes::model::{
    DesiredState, Endpoint, ExcludedEndpoint, FamilyState, LocalTrafficDetector, Masquerade,
    NoEndpointsVerdict, NodePortAddresses, NodePortIps, NodeSettings, Path, ServicePort,
    TrafficPolicy,
};

/// The readable table.
pub fn table(state: &DesiredState) -> String {
    let mut out = String::new();
    let zone = state.zone.as_deref().unwrap_or("(none)");
    let _ = writeln!(out, "node {}  zone {}", state.node_name, zone);
    for fam in &state.families {
        family_table(&mut out, fam);
    }
    if !state.skipped.is_empty() {
        let _ = writeln!(out, "\nskipped objects:");
        for s in &state.skipped {
            let _ = writeln!(out, "  {} {}/{}: {}", s.kind, s.namespace, s.name, s.reason);
        }
    }
    out
}

fn family_table(out: &mut String, fam: &FamilyState) {
    let n = &fam.node;
    let ips: Vec<String> = n.node_ips.iter().map(|i| i.to_string()).collect();
    let _ = writeln!(out, "\n{}: node IPs [{}]", fam.family, ips.join(", "));
    let _ = writeln!(
        out,
        "  pod traffic: {}   node ports on: {}   masquerade: mark {:#x}{}",
        detector(&n.local_traffic),
        node_port_addrs(n),
        n.masquerade_mark,
        if n.masquerade_all {
            ", all traffic"
        } else {
            ""
        }
    );
    let rows: Vec<[String; 4]> = fam.services.values().flat_map(port_rows).collect();
    let header = ["SERVICE PORT", "VIP", "POLICY", "ENDPOINTS"].map(String::from);
    let mut widths = [0usize; 3];
    for row in std::iter::once(&header).chain(&rows) {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let _ = writeln!(out);
    for row in std::iter::once(&header).chain(&rows) {
        let line = format!(
            "  {:w0$}  {:w1$}  {:w2$}  {}",
            row[0],
            row[1],
            row[2],
            row[3],
            w0 = widths[0],
            w1 = widths[1],
            w2 = widths[2]
        );
        let _ = writeln!(out, "{}", line.trim_end());
    }
}

/// One row per VIP, showing the endpoint set traffic to that VIP uses; then notes.
fn port_rows(p: &ServicePort) -> Vec<[String; 4]> {
    let mut rows = Vec::new();
    let name = p.name.to_string();
    let mut vip_row = |vip: String, path: &Path| {
        let first = rows.is_empty();
        rows.push([
            if first { name.clone() } else { String::new() },
            vip,
            policy_label(path.set),
            path_endpoints(path, p),
        ]);
    };
    vip_row(
        format!("{} (cluster IP)", sock(p.cluster_ip, p.port)),
        &p.internal,
    );
    if let Some(ext) = &p.external {
        let external_vips = (p
            .node_port
            .map(|np| format!("*:{np} (node port)"))
            .into_iter())
        .chain(
            p.external_ips
                .iter()
                .map(|ip| format!("{} (external IP)", sock(*ip, p.port))),
        )
        .chain(
            p.load_balancer_ips
                .iter()
                .map(|ip| format!("{} (load balancer)", sock(*ip, p.port))),
        );
        for vip in external_vips {
            vip_row(vip, &ext.path);
        }
    }
    let mut notes = Vec::new();
    if let Some(ext) = &p.external {
        if ext.short_circuit_local_traffic {
            notes.push(format!(
                "pod and node traffic to external VIPs uses the Cluster set: {}",
                endpoint_list(&p.endpoints.cluster, p)
            ));
        }
        notes.push(match ext.masquerade {
            Masquerade::Always => "external traffic is masqueraded".to_owned(),
            Masquerade::NodeOriginOnly => {
                "external traffic keeps its source (the node's own is masqueraded)".to_owned()
            }
        });
    }
    if let Some(a) = p.session_affinity {
        notes.push(format!(
            "session affinity ClientIP, timeout {}s",
            a.timeout_seconds
        ));
    }
    if !p.lb_allowed_sources.is_empty() {
        let r: Vec<String> = p.lb_allowed_sources.iter().map(|r| r.to_string()).collect();
        notes.push(format!("load balancer IPs only from: {}", r.join(", ")));
    }
    if let Some(hc) = p.health_check_node_port {
        notes.push(format!("health check node port {hc}"));
    }
    notes.extend(p.endpoints.excluded.iter().map(excluded));
    rows.extend(notes.into_iter().map(|n| {
        [
            String::new(),
            String::new(),
            String::new(),
            format!("- {n}"),
        ]
    }));
    rows
}

fn policy_label(p: TrafficPolicy) -> String {
    match p {
        TrafficPolicy::Cluster => "Cluster".into(),
        TrafficPolicy::Local => "Local".into(),
    }
}

/// A path's endpoints, or what happens to its traffic when it has none, and why.
fn path_endpoints(path: &Path, p: &ServicePort) -> String {
    match path.when_empty {
        Some(n) => {
            let verdict = match n.verdict {
                NoEndpointsVerdict::Reject => "rejected",
                NoEndpointsVerdict::Drop => "dropped",
            };
            format!("({}: {verdict})", n.reason)
        }
        None => endpoint_list(path.endpoints(&p.endpoints), p),
    }
}

fn endpoint_list(eps: &[Endpoint], p: &ServicePort) -> String {
    if eps.is_empty() {
        return if p.endpoints.has_any {
            "(none usable here: dropped)".into()
        } else {
            "(no endpoints: rejected)".into()
        };
    }
    let list: Vec<String> = eps
        .iter()
        .map(|e| {
            let mut s = e.addr.to_string();
            let mut tags = Vec::new();
            if e.is_local {
                tags.push("local");
            }
            if !e.ready {
                tags.push("terminating");
            }
            if !tags.is_empty() {
                let _ = write!(s, " ({})", tags.join(", "));
            }
            s
        })
        .collect();
    list.join(", ")
}

fn excluded(e: &ExcludedEndpoint) -> String {
    format!(
        "excluded from the {} set: {} ({})",
        policy_label(e.set),
        e.addr,
        e.reason
    )
}

fn sock(ip: std::net::IpAddr, port: u16) -> String {
    std::net::SocketAddr::new(ip, port).to_string()
}

fn detector(d: &LocalTrafficDetector) -> String {
    match d {
        LocalTrafficDetector::None => "not detected".into(),
        LocalTrafficDetector::Cidrs(c) => {
            let c: Vec<String> = c.iter().map(|c| c.to_string()).collect();
            format!("from {}", c.join(", "))
        }
        LocalTrafficDetector::BridgeInterface(b) => format!("via bridge {b}"),
        LocalTrafficDetector::InterfaceNamePrefix(p) => format!("via interfaces {p}*"),
    }
}

/// The addresses NodePorts are served on, with the nodePortAddresses they were resolved from.
fn node_port_addrs(n: &NodeSettings) -> String {
    let list = |items: Vec<String>| match items.is_empty() {
        true => "(none)".to_owned(),
        false => items.join(", "),
    };
    match (&n.node_port_ips, &n.node_port_addresses) {
        (NodePortIps::AllLocal, _) => "all local addresses".into(),
        (NodePortIps::Only(ips), NodePortAddresses::Cidrs(cidrs)) => format!(
            "{} (in {})",
            list(ips.iter().map(ToString::to_string).collect()),
            list(cidrs.iter().map(ToString::to_string).collect())
        ),
        (NodePortIps::Only(ips), NodePortAddresses::All) => {
            list(ips.iter().map(ToString::to_string).collect())
        }
    }
}
