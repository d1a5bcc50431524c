//! The iptables mode restarts under traffic, with real packets, on both iptables backends: a
//! pod connects to a cluster IP again and again while kproxy is stopped (SIGTERM: its rules
//! stay) and started again; not one connection fails, and the restarted kproxy adopted the
//! chains in place: the same chain names, each jump from a built-in chain still there once,
//! and only the chains of the Service deleted while it was down removed.
//!
//! Needs root (network namespaces, iptables); skipped with a message otherwise.

#[path = "support/iptables_bed.rs"]
mod ipt;

use std::{
    collections::BTreeSet,
    io::Read,
    net::{SocketAddr, TcpStream},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU8, Ordering},
    },
    time::Duration,
};

use ipt::{CLIENT, EP1, EP2, IptBed, NODE, answered_by, endpoints, service, to};
use kproxy_dataplane::netns::Netns;
use serde_json::{Value, json};

/// What the client saw, per phase of the restart.
#[derive(Default)]
struct Seen {
    /// (phase, the answer line or the error).
    results: Vec<(u8, Result<String, String>)>,
}

const RUNNING: u8 = 0;
const STOPPED: u8 = 1;
const STARTING: u8 = 2;
const RESTARTED: u8 = 3;

/// Connections per phase before the test moves on.
const PER_PHASE: usize = 20;

/// One connection: the server's line, or why there was none.
fn connect(dest: SocketAddr) -> Result<String, String> {
    let mut s =
        TcpStream::connect_timeout(&dest, Duration::from_secs(1)).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(Duration::from_secs(1)))
        .map_err(|e| e.to_string())?;
    let mut line = String::new();
    s.read_to_string(&mut line).map_err(|e| e.to_string())?;
    Ok(line)
}

/// Connects from the client pod every few ms until `stop`, recording each under the phase.
fn client_loop(pod: String, phase: Arc<AtomicU8>, stop: Arc<AtomicBool>, seen: Arc<Mutex<Seen>>) {
    let dest = to("10.96.0.10", 80);
    let ns = Netns::named(pod);
    ns.run(|| -> Result<(), kproxy_dataplane::netns::NetnsError> {
        while !stop.load(Ordering::Relaxed) {
            let p = phase.load(Ordering::Relaxed);
            let r = connect(dest);
            seen.lock().unwrap().results.push((p, r));
            // Pacing the load (a connection every few ms), not waiting for anything.
            #[allow(clippy::disallowed_methods)]
            std::thread::sleep(Duration::from_millis(3));
        }
        Ok(())
    })
    .unwrap();
}

fn objects(with_old: bool) -> Vec<Value> {
    let mut v = vec![
        service("web", "10.96.0.10", json!({})),
        endpoints("web", &[(EP1, NODE), (EP2, NODE)]),
    ];
    if with_old {
        v.push(service("old", "10.96.0.11", json!({})));
        v.push(endpoints("old", &[(EP1, NODE)]));
    }
    v
}

/// Every chain of ours in nat and filter, and every rule of a built-in chain that jumps to one.
fn ours(b: &IptBed) -> (BTreeSet<String>, Vec<String>) {
    let mut chains = BTreeSet::new();
    let mut jumps = Vec::new();
    for table in ["nat", "filter"] {
        chains.extend(b.chains(table).into_iter().map(|c| format!("{table} {c}")));
        let rules = b.ipt_ok(&["-t", table, "-S"]);
        let builtin = |l: &&str| !l.starts_with("-A KPROXY-") && l.contains("-j KPROXY-");
        jumps.extend(
            rules
                .lines()
                .filter(builtin)
                .map(|l| format!("{table} {l}")),
        );
    }
    (chains, jumps)
}

async fn restart_under_traffic(backend: &'static str) {
    let Some(mut b) = IptBed::new(backend).await else {
        return;
    };
    b.write(&objects(true));
    b.start().await;
    let (chains, jumps) = ours(&b);
    let old_group = (b.ipt_ok(&["-t", "nat", "-S", "KPROXY-SERVICES"]).lines())
        .find(|l| l.contains("-d 10.96.0.11/32"))
        .and_then(|l| l.split("-j KPROXY-SP").nth(1))
        .map(|c| format!("KPROXY-SP{}", &c[..10]))
        .unwrap_or_else(|| b.fail("no dispatch rule for 10.96.0.11"));

    let (phase, stop) = (
        Arc::new(AtomicU8::new(RUNNING)),
        Arc::new(AtomicBool::new(false)),
    );
    let seen = Arc::new(Mutex::new(Seen::default()));
    let pod = b.bed.pod(ipt::ip(CLIENT)).unwrap().name().to_owned();
    let client = {
        let (phase, stop, seen) = (phase.clone(), stop.clone(), seen.clone());
        std::thread::spawn(move || client_loop(pod, phase, stop, seen))
    };
    let enough = |p: u8| {
        let seen = seen.clone();
        async move || {
            seen.lock()
                .unwrap()
                .results
                .iter()
                .filter(|r| r.0 == p)
                .count()
                >= PER_PHASE
        }
    };
    let within = Duration::from_secs(20);
    b.wait_for("connections before the stop", within, enough(RUNNING))
        .await;
    phase.store(STOPPED, Ordering::Relaxed);
    b.stop().await;
    // The Service deleted while kproxy is down: the restart must delete its chains. A jump
    // inserted a second time meanwhile (a script, an older agent) must be there once after.
    b.write(&objects(false));
    let jump = (jumps.iter())
        .find_map(|j| j.strip_prefix("nat -A PREROUTING "))
        .unwrap_or_else(|| b.fail(&format!("no jump from PREROUTING: {jumps:?}")));
    b.restore(&format!("*nat\n-I PREROUTING {jump}\nCOMMIT\n"), true);
    b.wait_for("connections while stopped", within, enough(STOPPED))
        .await;
    phase.store(STARTING, Ordering::Relaxed);
    b.start().await;
    phase.store(RESTARTED, Ordering::Relaxed);
    b.wait_for("connections after the restart", within, enough(RESTARTED))
        .await;
    stop.store(true, Ordering::Relaxed);
    client.join().unwrap();

    let results = std::mem::take(&mut seen.lock().unwrap().results);
    let ok = |line: &str| {
        [EP1, EP2]
            .iter()
            .any(|ep| line.starts_with(&format!("{ep}:8080 ")))
    };
    let failed: Vec<_> = (results.iter())
        .filter(|(_, r)| !r.as_ref().is_ok_and(|l| ok(l)))
        .collect();
    let per_phase: Vec<usize> = (RUNNING..=RESTARTED)
        .map(|p| results.iter().filter(|r| r.0 == p).count())
        .collect();
    eprintln!(
        "[{backend} backend] connections per phase (running, stopped, starting, restarted): {per_phase:?}"
    );
    if !failed.is_empty() {
        b.fail(&format!(
            "{} of {} connections failed: {failed:?}",
            failed.len(),
            results.len()
        ));
    }

    let (after, jumps_after) = ours(&b);
    let gone: BTreeSet<&String> = chains.difference(&after).collect();
    let new: BTreeSet<&String> = after.difference(&chains).collect();
    assert!(new.is_empty(), "chains made by the restart: {new:?}");
    assert!(
        !gone.is_empty() && gone.iter().all(|c| c.contains(&old_group)),
        "removed: {gone:?}"
    );
    assert!(
        after.iter().all(|c| !c.contains(&old_group)),
        "left: {after:?}"
    );
    assert_eq!(
        jumps_after, jumps,
        "the jumps from the built-in chains changed"
    );
    let unique: BTreeSet<&String> = jumps_after.iter().collect();
    assert_eq!(
        unique.len(),
        jumps_after.len(),
        "a jump twice: {jumps_after:?}"
    );
    let seen = b.probe(CLIENT, to("10.96.0.11", 80)).await;
    assert!(
        answered_by(&seen).is_none_or(|by| by == "sink"),
        "deleted Service: {seen}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_under_traffic_nft_backend() {
    restart_under_traffic("nft").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_under_traffic_legacy_backend() {
    restart_under_traffic("legacy").await;
}
