//! Claims are stable and NodePorts are bounded (issue 10, probes 2 and 3; docs/reliability.md,
//! "Claims and NodePorts"). Against the demo cluster (deploy/examples) loaded as the agent loads
//! it: a newcomer never takes a VIP tuple or NodePort a live Service holds, a loser loses only
//! that tuple, and NodePorts outside the range or on a port kproxy or a health check serves are
//! skipped, each with its reason, event and metric class.

mod support;

use std::{collections::BTreeMap, path::Path};

use kproxy::{
    cli::{ProxyFlags, resolve_config},
    desired::{self, collisions::Loss},
    events::{InvalidServices, MemorySink},
    options::proxy_options,
    source::{Event, Kind, Object, manifest},
    tracker::Tracker,
};
use kproxy_modes::model::DesiredState;
use serde_json::{Value, json};
use support::{NODE, node, service};

/// The agent's options for the demo node: default configuration (health on 10256, metrics on
/// 10249, NodePorts 30000-32767).
fn agent_tracker() -> Tracker {
    let flags = ProxyFlags {
        hostname_override: Some(NODE.into()),
        ..Default::default()
    };
    Tracker::new(proxy_options(&resolve_config(&flags).unwrap()))
}

fn demo_events() -> Vec<Event> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/examples");
    manifest::load(&dir).unwrap().into_events()
}

/// The demo cluster, synced once: every Service in it is live.
fn live_demo() -> Tracker {
    let mut t = agent_tracker();
    for e in demo_events() {
        t.apply(e);
    }
    t.update().unwrap();
    t
}

/// Every programmed VIP tuple and NodePort, with the Service that has it.
fn programmed(state: &DesiredState) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for p in state.families.iter().flat_map(|f| f.services.values()) {
        let owner = format!("{}/{}", p.name.namespace, p.name.name);
        for ip in p.vips() {
            let tuple = std::net::SocketAddr::new(ip, p.port);
            out.insert(format!("{tuple}/{}", p.name.protocol), owner.clone());
        }
        if let Some(np) = p.node_port {
            out.insert(format!("node:{np}/{}", p.name.protocol), owner.clone());
        }
    }
    out
}

fn newcomer(name: &str, spec: Value) -> Object {
    Object::Service(Box::new(service(json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": name, "namespace": "aaa"},
        "spec": spec,
    }))))
}

fn node_port_spec(cluster_ip: &str, port: u16, node_port: u16) -> Value {
    json!({"type": "NodePort", "clusterIP": cluster_ip, "clusterIPs": [cluster_ip],
           "ports": [{"name": "p", "port": port, "protocol": "TCP", "nodePort": node_port}]})
}

struct Case {
    what: &'static str,
    name: &'static str,
    spec: Value,
    /// Tuples programmed afterwards, and whose.
    kept: &'static [(&'static str, &'static str)],
    /// Tuples not programmed afterwards.
    absent: &'static [&'static str],
    reason: &'static str,
    event: &'static str,
}

fn cases() -> Vec<Case> {
    vec![
        Case {
            what: "probe 2: a newcomer on echo's NodePort, named to sort first, no timestamp",
            name: "aa-np-dup",
            spec: node_port_spec("10.96.0.40", 7000, 30070),
            kept: &[
                ("node:30070/TCP", "default/echo"),
                ("10.96.0.30:7000/TCP", "default/echo"),
                ("10.96.0.40:7000/TCP", "aaa/aa-np-dup"),
            ],
            absent: &[],
            reason: "port p: node port 30070/TCP (IPv4) is already used by default/echo:tcp/TCP",
            event: "NodePortClash",
        },
        Case {
            what: "probe 2: a newcomer on shop/web's cluster IP and port",
            name: "dup",
            spec: json!({"clusterIP": "10.96.0.20", "ports": [
                {"name": "p", "port": 80}, {"name": "q", "port": 81}]}),
            kept: &[
                ("10.96.0.20:80/TCP", "shop/web"),
                ("10.96.0.20:9090/TCP", "shop/web"),
                ("10.96.0.20:81/TCP", "aaa/dup"),
            ],
            absent: &[],
            reason: "port p: 10.96.0.20:80/TCP is already used by shop/web:http/TCP",
            event: "PortClash",
        },
        Case {
            what: "a newcomer's external IP on echo's cluster IP costs it only that tuple",
            name: "ext-dup",
            spec: json!({"clusterIP": "10.96.0.42", "externalIPs": ["10.96.0.30"],
                         "ports": [{"name": "p", "port": 7000}]}),
            kept: &[
                ("10.96.0.30:7000/TCP", "default/echo"),
                ("10.96.0.42:7000/TCP", "aaa/ext-dup"),
            ],
            absent: &[],
            reason: "port p: 10.96.0.30:7000/TCP is already used by default/echo:tcp/TCP",
            event: "PortClash",
        },
        Case {
            what: "probe 3: nodePort 22 (sshd) is outside the range",
            name: "np-22",
            spec: node_port_spec("10.96.0.43", 80, 22),
            kept: &[("10.96.0.43:80/TCP", "aaa/np-22")],
            absent: &["node:22/TCP"],
            reason: "port p: node port 22 is outside --service-node-port-range 30000-32767",
            event: "NodePortOutOfRange",
        },
        Case {
            what: "probe 3: nodePort 10256 is kproxy's own health port",
            name: "np-health",
            spec: node_port_spec("10.96.0.44", 80, 10256),
            kept: &[("10.96.0.44:80/TCP", "aaa/np-health")],
            absent: &["node:10256/TCP"],
            reason: "port p: node port 10256 is kproxy's health port (healthzBindAddress)",
            event: "NodePortClash",
        },
        Case {
            what: "probe 3: nodePort 32050 is ingress/ingress's healthCheckNodePort",
            name: "np-hc",
            spec: node_port_spec("10.96.0.45", 80, 32050),
            kept: &[("10.96.0.45:80/TCP", "aaa/np-hc")],
            absent: &["node:32050/TCP"],
            reason: "port p: node port 32050/TCP (IPv4) is the health check node port of ingress/ingress",
            event: "NodePortClash",
        },
    ]
}

/// Each probe, added to the live demo cluster: the live Service keeps everything, the newcomer
/// loses only the contested tuple, with one skip record, one event (also after a second sync)
/// and a metric class.
#[test]
fn a_newcomer_loses_only_the_contested_tuple_and_is_reported_once() {
    for case in cases() {
        let mut t = live_demo();
        let before = programmed(t.update().unwrap().0);
        t.apply(Event::Apply(newcomer(case.name, case.spec.clone())));
        let state = t.update().unwrap().0.clone();
        let now = programmed(&state);
        for (tuple, owner) in case.kept {
            assert_eq!(
                now.get(*tuple).map(String::as_str),
                Some(*owner),
                "{}: {tuple}",
                case.what
            );
        }
        for tuple in case.absent {
            assert!(
                !now.contains_key(*tuple),
                "{}: {tuple} programmed",
                case.what
            );
        }
        for (tuple, owner) in &before {
            assert_eq!(
                now.get(tuple),
                Some(owner),
                "{}: live {tuple} changed",
                case.what
            );
        }
        let mine: Vec<_> = state
            .skipped
            .iter()
            .filter(|s| s.name == case.name)
            .collect();
        assert_eq!(mine.len(), 1, "{}: {mine:?}", case.what);
        assert_eq!(mine[0].reason, case.reason, "{}", case.what);
        let sink = MemorySink::default();
        let mut reporter = InvalidServices::default();
        reporter.observe(&state, &sink);
        reporter.observe(t.update().unwrap().0, &sink);
        let events = sink.events.lock().unwrap();
        let mine: Vec<_> = events.iter().filter(|e| e.note == case.reason).collect();
        assert_eq!(mine.len(), 1, "{}: {events:?}", case.what);
        assert_eq!(mine[0].reason, case.event, "{}", case.what);
        let class = kproxy::metrics::reason_class(case.reason);
        assert_eq!(
            Loss::of(case.reason).map(Loss::class),
            Some(class),
            "{}",
            case.what
        );
    }
}

/// "At start the older by creationTimestamp wins, then a stable order; an object without
/// creationTimestamp is the youngest" (from scratch, as at kproxy's start).
#[test]
fn at_start_the_older_wins_and_no_timestamp_is_the_youngest() {
    let echo = |ts: Option<&str>| {
        let mut v = json!({"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "echo", "namespace": "default"},
            "spec": node_port_spec("10.96.0.30", 7000, 30070)});
        if let Some(ts) = ts {
            v["metadata"]["creationTimestamp"] = json!(ts);
        }
        service(v)
    };
    let dup = |ts: Option<&str>| {
        let Object::Service(mut s) =
            newcomer("aa-np-dup", node_port_spec("10.96.0.40", 7000, 30070))
        else {
            unreachable!()
        };
        s.metadata.creation_timestamp = ts.map(|t| serde_json::from_value(json!(t)).unwrap());
        *s
    };
    let n = node(NODE, None, &["192.168.0.2"]);
    let owner = |services: &[_]| {
        let s = desired::compute(&support::opts(), services, &[], Some(&n));
        programmed(&s)["node:30070/TCP"].clone()
    };
    let (old, new) = (Some("2024-01-01T00:00:00Z"), Some("2025-01-01T00:00:00Z"));
    assert_eq!(
        owner(&[echo(old), dup(None)]),
        "default/echo",
        "no timestamp is youngest"
    );
    assert_eq!(
        owner(&[echo(new), dup(old)]),
        "aaa/aa-np-dup",
        "the older wins"
    );
    assert_eq!(
        owner(&[echo(old), dup(old)]),
        "aaa/aa-np-dup",
        "then the name"
    );
    assert_eq!(
        owner(&[echo(None), dup(None)]),
        "aaa/aa-np-dup",
        "then the name"
    );
}

/// "Once a claim is held by a Service that stays, a newcomer that arrives later loses it even
/// if it is older or sorts first": across syncs, relists, a change of the holder, and a Node
/// change (a full recompute); the newcomer takes over only when the holder goes.
#[test]
fn a_live_holder_keeps_its_claims_across_relists_changes_and_node_changes() {
    let mut t = live_demo();
    let mut older = newcomer("aa-np-dup", node_port_spec("10.96.0.40", 7000, 30070));
    if let Object::Service(s) = &mut older {
        s.metadata.creation_timestamp =
            serde_json::from_value(json!("2000-01-01T00:00:00Z")).unwrap();
    }
    t.apply(Event::Apply(older.clone()));
    let owner = |t: &mut Tracker| programmed(t.update().unwrap().0)["node:30070/TCP"].clone();
    assert_eq!(
        owner(&mut t),
        "default/echo",
        "arrived later: loses though older"
    );
    // A relist of every Service (the reconnecting watch, a manifest reload), with echo changed.
    let mut services: Vec<Object> = demo_events()
        .into_iter()
        .filter_map(|e| match e {
            Event::Replace(Kind::Service, list) => Some(list),
            _ => None,
        })
        .flatten()
        .collect();
    for o in services.iter_mut() {
        if let Object::Service(s) = o
            && s.metadata.name.as_deref() == Some("echo")
        {
            s.spec.as_mut().unwrap().session_affinity = Some("ClientIP".into());
        }
    }
    services.push(older.clone());
    t.apply(Event::Replace(Kind::Service, services.clone()));
    assert_eq!(
        owner(&mut t),
        "default/echo",
        "a relist changing the holder"
    );
    let relabelled = node(NODE, Some("zone-z"), &["192.168.60.10"]);
    t.apply(Event::Apply(Object::Node(Box::new(relabelled))));
    assert_eq!(owner(&mut t), "default/echo", "a full recompute");
    let echo = services
        .iter()
        .find(|o| matches!(o, Object::Service(s) if s.metadata.name.as_deref() == Some("echo")))
        .unwrap()
        .clone();
    t.apply(Event::Delete(echo.clone()));
    assert_eq!(owner(&mut t), "aaa/aa-np-dup", "the holder went");
    t.apply(Event::Apply(echo));
    assert_eq!(owner(&mut t), "aaa/aa-np-dup", "now echo is the newcomer");
    let state = t.update().unwrap().0;
    assert!(
        programmed(state).contains_key("10.96.0.30:7000/TCP"),
        "echo keeps its cluster IP"
    );
}

/// "kproxy's own `--service-node-port-range` (the API server's name and default) bounds what
/// NodePorts it programs": the flag applies with or without `--config`, and is no field of the
/// file (upstream's KubeProxyConfiguration has none: one in a file is an unknown field).
#[test]
fn the_node_port_range_is_a_flag_only() {
    use clap::Parser;
    use kproxy::cli::{Cli, resolve_config_text};
    let flags = |args: &[&str]| {
        let argv = [&["kproxy", "--hostname-override", NODE][..], args].concat();
        Cli::try_parse_from(argv).unwrap().flags
    };
    let range = |f: &ProxyFlags| proxy_options(&resolve_config(f).unwrap()).node_ports.range;
    assert_eq!(range(&flags(&[])).to_string(), "30000-32767");
    let f = flags(&["--service-node-port-range", "20-30"]);
    assert_eq!(range(&f).to_string(), "20-30");
    let file = "apiVersion: kubeproxy.config.k8s.io/v1alpha1\nkind: KubeProxyConfiguration\n";
    let cfg = resolve_config_text(&f, file).unwrap();
    assert_eq!(
        cfg.service_node_port_range.to_string(),
        "20-30",
        "applies over --config"
    );
    let with_field = format!("{file}serviceNodePortRange: 20-30\n");
    // An unknown field, as any: warned and dropped (upstream's lenient decoding).
    let cfg = resolve_config_text(&flags(&[]), &with_field).unwrap();
    assert_eq!(cfg.service_node_port_range.to_string(), "30000-32767");
    let bad = ["kproxy", "--service-node-port-range", "9-1"];
    assert!(Cli::try_parse_from(bad).is_err());
}
