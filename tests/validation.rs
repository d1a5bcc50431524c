//! Bad input (issue 10, probes 1 and 5): object text the API server would refuse never reaches
//! a kernel program, the valid Services are programmed all the same, and everything skipped is
//! visible: logged once per change, counted in `kproxy_skipped_objects`, listed by `debug dump`.

mod support;

use std::sync::{Arc, Mutex};

use k8s_openapi::api::{core::v1::Service, discovery::v1::EndpointSlice};
use kproxy::{
    source::{Event, Kind, Object},
    tracker::Tracker,
};
use kproxy_dataplane::nft::{Exec, FakeNft, NftClient, NftTransaction};
use kproxy_modes::{
    model::{ChangeSet, DesiredState},
    nftables,
};
use serde_json::{Value, json};
use support::*;

const EVIL: &str = "evil\" } ; add table ip pwned ; #";

fn good(name: &str, ip: &str) -> Service {
    simple_service(name, json!({"clusterIP": ip}))
}

fn evil_services() -> Vec<Service> {
    let mut evil = good("x", "172.30.0.8");
    evil.metadata.name = Some(EVIL.into());
    let newline_port = simple_service(
        "nl",
        json!({"clusterIP": "172.30.0.9",
               "ports": [{"name": "ht\ntp", "port": 80, "protocol": "TCP"}]}),
    );
    vec![evil, newline_port]
}

fn objects(services: &[Service], slices: &[EndpointSlice]) -> [Event; 3] {
    let svcs = services
        .iter()
        .cloned()
        .map(|s| Object::Service(Box::new(s)));
    let slices = slices
        .iter()
        .cloned()
        .map(|s| Object::EndpointSlice(Box::new(s)));
    let node = Object::Node(Box::new(node(NODE, Some("zone-a"), &["192.168.0.2"])));
    [
        Event::Replace(Kind::Service, svcs.collect()),
        Event::Replace(Kind::EndpointSlice, slices.collect()),
        Event::Replace(Kind::Node, vec![node]),
    ]
}

fn tracker(services: &[Service], slices: &[EndpointSlice]) -> Tracker {
    let mut t = Tracker::new(opts());
    objects(services, slices)
        .into_iter()
        .for_each(|e| t.apply(e));
    t
}

/// The key of a cluster IP's port 80 in the nftables mode's maps.
fn vip(ip: &str) -> String {
    format!("{ip} . tcp . 80 : ")
}

/// Runs `tx` in the fake, and with root also through `nft -c` in a scratch namespace.
fn load(fake: &FakeNft, tx: &NftTransaction) {
    fake.run(tx)
        .unwrap_or_else(|e| panic!("FakeNft refused: {e}\n{tx}"));
    if let Some(ns) = kproxy_testbed::netns::Netns::scratch() {
        let exec = Exec::new().in_netns(ns.name());
        exec.check(tx)
            .unwrap_or_else(|e| panic!("nft -c refused: {e}\n{tx}"));
    }
}

fn reasons(state: &DesiredState, kind: &str) -> Vec<String> {
    (state.skipped.iter())
        .filter(|s| s.kind == kind)
        .map(|s| format!("{}/{}: {}", s.namespace, s.name, s.reason))
        .collect()
}

/// Probe 1: a Service named `evil" } ; add table ip pwned ; #`, and one whose port name holds
/// a newline, are skipped with their reasons; the program loads, holds the valid Service, and a
/// valid Service added later is programmed by the next (partial) sync.
#[test]
fn hostile_names_are_skipped_and_valid_services_are_still_programmed() {
    let mut services = evil_services();
    services.push(good("good", "172.30.0.5"));
    let slice = simple_slice("good", "good-1", json!([{"addresses": ["10.0.1.1"]}]));
    let mut t = tracker(&services, &[slice]);
    let (state, _) = t.update().expect("ready");
    assert_eq!(
        reasons(state, "Service"),
        [
            r#"ns1/evil\" } ; add table ip pwned ; #: invalid metadata.name "evil\" } ; add table ip pwned ; #": not a DNS-1123 label"#,
            r#"ns1/nl: invalid spec.ports[0].name "ht\ntp": not a DNS-1123 label"#,
        ]
    );
    let rendered = nftables::render(state, &ChangeSet::full(), None);
    let fake = FakeNft::new();
    load(&fake, &rendered.tx);
    let text = rendered.tx.to_string();
    assert!(
        !text.contains("pwned") && !text.contains("ht\ntp"),
        "{text}"
    );
    assert!(fake.dump().contains(&vip("172.30.0.5")), "{}", fake.dump());

    t.apply(Event::Apply(Object::Service(Box::new(good(
        "new",
        "172.30.0.6",
    )))));
    let (state, changes) = t.update().expect("ready");
    let next = nftables::render(state, &changes, Some(&rendered.applied));
    assert!(!next.full, "a partial sync");
    fake.run(&next.tx).expect("the next sync applies");
    assert!(fake.dump().contains(&vip("172.30.0.6")), "{}", fake.dump());
}

/// A slice of `ns1/web` with one good endpoint and one of each kind of bad one, and a second
/// slice whose port number is out of range.
fn bad_slices() -> Vec<EndpointSlice> {
    let eps = json!([
        {"addresses": ["10.244.3.4"]},
        {"addresses": ["web-0.example"]},
        {"addresses": ["fd00::1"]},
        {"addresses": ["10.244.3.999"]},
        {"addresses": []},
    ]);
    let mut port = simple_slice("web", "web-2", json!([{"addresses": ["10.244.3.5"]}]));
    port.ports.as_mut().unwrap()[0].port = Some(99999);
    vec![simple_slice("web", "web-1", eps), port]
}

const BAD_ENDPOINTS: [&str; 5] = [
    "ns1/web-1: endpoints[1]: address \"web-0.example\" is not an IP",
    "ns1/web-1: endpoints[2]: IPv6 address fd00::1 in an IPv4 slice",
    "ns1/web-1: endpoints[3]: address \"10.244.3.999\" is not an IP",
    "ns1/web-1: endpoints[4]: no addresses",
    "ns1/web-2: invalid ports[0].port 99999",
];

/// Log lines (without colour) written while `f` runs on this thread.
fn logs_of<T>(f: impl FnOnce() -> T) -> (T, String) {
    #[derive(Clone, Default)]
    struct Buf(Arc<Mutex<Vec<u8>>>);
    impl std::io::Write for Buf {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let buf = Buf::default();
    let out = buf.clone();
    let sub = tracing_subscriber::fmt()
        .with_ansi(false)
        .with_writer(move || out.clone())
        .finish();
    let value = tracing::subscriber::with_default(sub, f);
    let text = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
    (value, text)
}

/// Probe 5: endpoints with a hostname, an IPv6 address in an IPv4 slice, `10.244.3.999` or no
/// address, and a slice port 99999, are left out, listed with their reasons, counted by kind
/// and reason class, and logged once each: not again at the next sync, nor after a relist.
#[test]
fn bad_endpoints_are_skipped_and_reported_once() {
    let services = [good("web", "172.30.0.5")];
    let (state, log) = logs_of(|| {
        let mut t = tracker(&services, &bad_slices());
        t.update().expect("ready");
        objects(&services, &bad_slices())
            .into_iter()
            .for_each(|e| t.apply(e));
        t.update().expect("ready").0.clone()
    });
    let port = only_port(&state);
    assert_eq!(addrs(&port.endpoints.cluster), ["10.244.3.4:80"]);
    let mut skipped = reasons(&state, "Endpoint");
    skipped.extend(reasons(&state, "EndpointSlice"));
    assert_eq!(skipped, BAD_ENDPOINTS);
    for reason in BAD_ENDPOINTS {
        let reason = reason.split_once(": ").unwrap().1;
        let lines = log.lines().filter(|l| l.contains(reason)).count();
        assert_eq!(lines, 1, "{reason} logged once:\n{log}");
    }

    let m = Arc::new(kproxy::metrics::Metrics::new(
        kproxy::config::ProxyMode::Nftables,
        kproxy::health::WallClock::new(),
    ));
    m.observe_state(&state);
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &m.registry()).unwrap();
    for (kind, class, n) in [
        ("Endpoint", "invalid-ip", 2),
        ("Endpoint", "wrong-family", 1),
        ("Endpoint", "no-address", 1),
        ("EndpointSlice", "invalid-value", 1),
    ] {
        let line = format!("kproxy_skipped_objects{{kind=\"{kind}\",reason=\"{class}\"}} {n}");
        assert!(text.lines().any(|l| l == line), "{line} in:\n{text}");
    }
}

/// An unknown node name (no Node of that name once the lists are in) is warned about once,
/// naming `--hostname-override`; it is warned about again only after the Node came and went.
#[test]
fn an_unknown_node_name_is_logged_once_naming_the_flag() {
    let (_, log) = logs_of(|| {
        let mut t = Tracker::new(opts());
        t.apply(Event::Replace(Kind::Service, vec![]));
        t.apply(Event::Replace(Kind::EndpointSlice, vec![]));
        t.apply(Event::Replace(Kind::Node, vec![]));
        t.update();
        t.update();
    });
    let warned = log.lines().filter(|l| l.contains("--hostname-override"));
    assert_eq!(warned.count(), 1, "{log}");
    assert!(log.contains("WARN"), "{log}");
}

fn dump(dir: &std::path::Path, format: &[&str]) -> String {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_kproxy"))
        .args(["debug", "dump", "--hostname-override", NODE, "--manifests"])
        .arg(dir)
        .args(format)
        .output()
        .expect("run kproxy");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// `kproxy debug dump` lists every skipped Service, slice port and endpoint with its reason,
/// in the table (names escaped: no line of it can be forged) and in JSON.
#[test]
fn debug_dump_lists_what_was_skipped_and_why() {
    let dir = tempfile::tempdir().unwrap();
    let mut docs: Vec<Value> = vec![serde_json::to_value(good("web", "172.30.0.5")).unwrap()];
    docs.extend(
        evil_services()
            .iter()
            .map(|s| serde_json::to_value(s).unwrap()),
    );
    docs.extend(
        bad_slices()
            .iter()
            .map(|s| serde_json::to_value(s).unwrap()),
    );
    let list = json!({"apiVersion": "v1", "kind": "List", "items": docs});
    std::fs::write(dir.path().join("bad.json"), list.to_string()).unwrap();

    let table = dump(dir.path(), &[]);
    let listed = table.split("skipped objects:\n").nth(1).expect(&table);
    for reason in BAD_ENDPOINTS {
        assert!(listed.contains(reason), "{reason} in:\n{table}");
    }
    assert!(listed.contains(r#"Service ns1/nl: invalid spec.ports[0].name "ht\ntp""#));
    assert_eq!(listed.lines().count(), 7, "one line each:\n{listed}");

    let json: Value = serde_json::from_str(&dump(dir.path(), &["-o", "json"])).unwrap();
    let skipped = json["skipped"].as_array().unwrap();
    assert_eq!(skipped.len(), 7, "{skipped:?}");
    assert!(skipped.iter().any(|s| s["kind"] == "Endpoint"
        && s["reason"] == "endpoints[3]: address \"10.244.3.999\" is not an IP"));
}
