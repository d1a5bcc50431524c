//! `Monitor` and `RuleCounter` against the real kernel, in a throwaway network namespace.
//! Needs root (skipped otherwise), `ip` and `nft`.

use std::{path::PathBuf, process::Command, sync::mpsc, time::Duration};

use kproxy_dataplane::netns::Netns;
use kproxy_dataplane::nft::{
    Exec, Family, NftClient, NftTransaction, SpawnLog,
    monitor::{Finding, Monitor, RuleCounter},
    wire::{Object, Op},
};

struct Ns(String);

impl Ns {
    fn new(tag: &str) -> Option<Self> {
        let name = format!("kpmon-{tag}-{}", std::process::id());
        let ok = Command::new("ip")
            .args(["netns", "add", &name])
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            eprintln!("skipped: needs root for ip netns");
            return None;
        }
        Some(Self(name))
    }

    fn path(&self) -> PathBuf {
        PathBuf::from("/var/run/netns").join(&self.0)
    }

    fn nft(&self, args: &[&str]) {
        let st = Command::new("ip")
            .args(["netns", "exec", &self.0, "nft"])
            .args(args)
            .status()
            .unwrap();
        assert!(st.success(), "nft {args:?}");
    }
}

impl Drop for Ns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

fn table(tx: &mut NftTransaction) {
    let (f, t) = (Family::Ip, "kproxy");
    tx.add_table(f, t, None);
    tx.add_chain(f, t, "services", None);
    tx.add_rule(f, t, "services", "ip daddr 10.0.0.1 drop");
    tx.add_rule(f, t, "services", "ip daddr 10.0.0.2 drop");
    tx.add_map(
        f,
        t,
        "service-ips",
        "type ipv4_addr . inet_proto . inet_service : verdict;",
    );
    tx.add_elements(
        f,
        t,
        "service-ips",
        &["10.0.0.1 . tcp . 80 : goto services"],
    );
}

/// Waits (deadline) for the next notification, then drains the findings.
fn next(monitor: &Monitor, rx: &mpsc::Receiver<()>) -> Vec<Finding> {
    rx.recv_timeout(Duration::from_secs(10))
        .expect("a finding within 10 s");
    monitor.take()
}

#[test]
fn foreign_changes_to_our_table_are_found_and_our_own_are_not() {
    let Some(ns) = Ns::new("w") else { return };
    let log = SpawnLog::new();
    let exec = Exec::new().in_netns(&ns.0).with_spawn_log(log.clone());
    let (tx, rx) = mpsc::channel();
    let tx = std::sync::Mutex::new(tx);
    let notify = Box::new(move || {
        let _ = tx.lock().unwrap().send(());
    });
    let monitor = Monitor::start(&Netns::at_path(ns.path()), "kproxy", log, notify).unwrap();

    // Ours: creation, then an element added.
    let mut t = NftTransaction::new();
    table(&mut t);
    exec.run(&t).unwrap();
    let mut add = NftTransaction::new();
    add.add_elements(
        Family::Ip,
        "kproxy",
        "service-ips",
        &["10.0.0.2 . tcp . 80 : goto services"],
    );
    exec.run(&add).unwrap();
    // Someone else's table: not ours to watch.
    ns.nft(&["add", "table", "ip", "other"]);
    ns.nft(&["add", "chain", "ip", "other", "c"]);
    // Foreign: one element deleted.
    ns.nft(&[
        "delete",
        "element",
        "ip",
        "kproxy",
        "service-ips",
        "{ 10.0.0.1 . tcp . 80 }",
    ]);
    let found = next(&monitor, &rx);
    let [Finding::Foreign(b)] = found.as_slice() else {
        panic!("{found:?}")
    };
    assert_eq!(b.process, "nft");
    assert_eq!(b.changes.len(), 1, "{b:?}");
    assert_eq!(
        (b.changes[0].op, b.changes[0].object),
        (Op::Delete, Object::Element)
    );
    assert_eq!(b.changes[0].name.as_deref(), Some("service-ips"));

    ns.nft(&["flush", "table", "ip", "kproxy"]);
    let found = next(&monitor, &rx);
    let [Finding::Foreign(b)] = found.as_slice() else {
        panic!("{found:?}")
    };
    assert!(b.changes.iter().all(|c| c.object == Object::Rule), "{b:?}");
    assert_eq!(b.changes.len(), 2);

    // Paused: our (or anyone's) commit is not seen; resumed: it is again.
    monitor.pause().unwrap();
    exec.run(&t).unwrap();
    ns.nft(&["delete", "table", "ip", "kproxy"]);
    monitor.resume().unwrap();
    exec.run(&t).unwrap();
    ns.nft(&["delete", "table", "ip", "kproxy"]);
    let found = next(&monitor, &rx);
    let [Finding::Foreign(b)] = found.as_slice() else {
        panic!("{found:?}")
    };
    assert!(
        b.changes
            .iter()
            .any(|c| (c.op, c.object) == (Op::Delete, Object::Table)),
        "{b:?}"
    );
    assert!(monitor.take().is_empty());
    assert!(monitor.is_running());
}

#[test]
// The kernel's real time is measured here; this crate has no tokio to pause time with.
#[allow(clippy::disallowed_types)]
fn rules_are_counted_per_chain_without_reading_big_maps() {
    let Some(ns) = Ns::new("c") else { return };
    let exec = Exec::new().in_netns(&ns.0);
    let mut t = NftTransaction::new();
    table(&mut t);
    let elems: Vec<String> = (0..50_000u32)
        .map(|i| {
            format!(
                "10.{}.{}.{} . tcp . 80 : goto services",
                i >> 16,
                (i >> 8) & 255,
                i & 255
            )
        })
        .collect();
    t.add_elements(Family::Ip, "kproxy", "service-ips", &elems);
    exec.run(&t).unwrap();
    let mut counter = RuleCounter::open(&Netns::at_path(ns.path())).unwrap();
    let started = std::time::Instant::now();
    assert_eq!(counter.count(2, "kproxy", "services").unwrap(), 2);
    let took = started.elapsed();
    eprintln!("one chain of a 50k-element table counted in {took:?}");
    assert_eq!(counter.count(2, "kproxy", "absent").unwrap(), 0);
    assert_eq!(counter.count(10, "kproxy", "services").unwrap(), 0);
    assert_eq!(counter.count(2, "nothing", "services").unwrap(), 0);
    // A listing of the map takes about a second; the dump of one chain, microseconds.
    assert!(took < Duration::from_millis(50), "{took:?}");
    ns.nft(&["flush", "chain", "ip", "kproxy", "services"]);
    assert_eq!(counter.count(2, "kproxy", "services").unwrap(), 0);
}
