//! `kproxy debug dump`: the desired state as this node sees it, for every Service port: VIPs,
//! policies, the endpoints each path uses, and why each excluded endpoint was left out.

use std::fmt::Write;

use kproxy_modes::model::{
    DesiredState, Endpoint, ExcludedEndpoint, FamilyState, LocalTrafficDetector, NodePortAddresses,
    ServicePort, TrafficPolicy,
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
        node_port_addrs(&n.node_port_addresses),
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
    let mut vip_row = |vip: String, policy: TrafficPolicy, eps: &[Endpoint]| {
        let first = rows.is_empty();
        rows.push([
            if first { name.clone() } else { String::new() },
            vip,
            policy_label(policy),
            endpoint_list(eps, p),
        ]);
    };
    vip_row(
        format!("{} (cluster IP)", sock(p.cluster_ip, p.port)),
        p.internal_policy,
        p.internal_endpoints(),
    );
    if let Some(np) = p.node_port {
        vip_row(
            format!("*:{np} (node port)"),
            p.external_policy,
            p.external_endpoints(),
        );
    }
    for ip in &p.external_ips {
        vip_row(
            format!("{} (external IP)", sock(*ip, p.port)),
            p.external_policy,
            p.external_endpoints(),
        );
    }
    for ip in &p.load_balancer_ips {
        vip_row(
            format!("{} (load balancer)", sock(*ip, p.port)),
            p.external_policy,
            p.external_endpoints(),
        );
    }
    let mut notes = Vec::new();
    if p.external_policy == TrafficPolicy::Local && p.externally_accessible() {
        notes.push(format!(
            "pod and node traffic to external VIPs uses the Cluster set: {}",
            endpoint_list(&p.endpoints.cluster, p)
        ));
    }
    if let Some(a) = p.session_affinity {
        notes.push(format!(
            "session affinity ClientIP, timeout {}s",
            a.timeout_seconds
        ));
    }
    if !p.load_balancer_source_ranges.is_empty() {
        let r: Vec<String> = p
            .load_balancer_source_ranges
            .iter()
            .map(|r| r.to_string())
            .collect();
        notes.push(format!("load balancer source ranges: {}", r.join(", ")));
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

fn node_port_addrs(a: &NodePortAddresses) -> String {
    match a {
        NodePortAddresses::All => "all local addresses".into(),
        NodePortAddresses::Cidrs(c) => c
            .iter()
            .map(|c| c.to_string())
            .collect::<Vec<_>>()
            .join(", "),
    }
}
