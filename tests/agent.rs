//! The agent loop with a recording mode on paused tokio time: no sleeps, time is advanced.

mod support;

use std::time::Duration;

use kproxy::{
    agent::{self, Periods},
    source::{Event, Kind, Object},
    tracker::Tracker,
};
use kproxy_modes::{Drift, testing::RecordingMode};
use serde_json::json;
use support::*;
use tokio::sync::mpsc;

fn svc(name: &str, ip: &str) -> Object {
    Object::Service(Box::new(simple_service(name, json!({"clusterIP": ip}))))
}

async fn settle() {
    for _ in 0..20 {
        tokio::task::yield_now().await;
    }
}

/// Runs the agent with `mode` (syncPeriod 30 s, minSyncPeriod 1 s): its event sender and task.
fn start(mode: &RecordingMode) -> (mpsc::Sender<Event>, tokio::task::JoinHandle<()>) {
    let (tx, rx) = mpsc::channel(16);
    let periods = Periods {
        sync: Duration::from_secs(30),
        min_sync: Duration::from_secs(1),
    };
    let task = tokio::spawn(agent::run(
        Tracker::new(opts()),
        rx,
        Box::new(mode.clone()),
        periods,
        std::future::pending(),
    ));
    (tx, task)
}

/// Steps: initial lists arrive -> one full sync at once; two quick changes inside minSyncPeriod
/// -> one coalesced partial sync after it; an injected failure -> a retry that is full.
#[tokio::test(start_paused = true)]
async fn syncs_wait_for_initial_lists_coalesce_changes_and_retry_failures_as_full() {
    let rec = RecordingMode::default();
    let (tx, task) = start(&rec);
    let start = tokio::time::Instant::now();

    tx.send(Event::Replace(Kind::Service, vec![svc("a", "172.30.0.1")]))
        .await
        .unwrap();
    tx.send(Event::Replace(Kind::EndpointSlice, vec![]))
        .await
        .unwrap();
    settle().await;
    tokio::time::advance(Duration::from_secs(5)).await;
    settle().await;
    assert!(rec.calls().is_empty(), "no sync before the Node list is in");

    tx.send(Event::Replace(
        Kind::Node,
        vec![Object::Node(Box::new(node(NODE, None, &["192.168.0.2"])))],
    ))
    .await
    .unwrap();
    settle().await;
    {
        let s = rec.calls();
        assert_eq!(s.len(), 1);
        assert!(s[0].changes.full);
    }
    let first = rec.calls()[0].at;

    tx.send(Event::Apply(svc("b", "172.30.0.2"))).await.unwrap();
    settle().await;
    tx.send(Event::Apply(svc("c", "172.30.0.3"))).await.unwrap();
    settle().await;
    assert_eq!(
        rec.calls().len(),
        1,
        "minSyncPeriod holds the next sync back"
    );
    tokio::time::advance(Duration::from_millis(1100)).await;
    settle().await;
    {
        let s = rec.calls();
        assert_eq!(s.len(), 2, "two changes, one sync");
        assert!(!s[1].changes.full);
        assert_eq!(s[1].changes.services.len(), 2);
        assert!(s[1].at - first >= Duration::from_secs(1));
    }

    rec.fail_next(1);
    tx.send(Event::Apply(svc("d", "172.30.0.4"))).await.unwrap();
    tokio::time::advance(Duration::from_secs(2)).await;
    settle().await;
    tokio::time::advance(Duration::from_secs(2)).await;
    settle().await;
    let s = rec.calls();
    assert_eq!(s.len(), 4, "failed sync, then its retry");
    assert!(
        !s[2].changes.full && s[3].changes.full,
        "the retry after a failure is full"
    );
    assert_eq!(s[3].service_ports, 4);
    assert!(start.elapsed() < Duration::from_secs(30));
    drop(s);
    task.abort();
}

/// Steps: the first sync; the mode signals drift between periodic syncs -> a sync follows
/// within minSyncPeriod instead of waiting for syncPeriod.
#[tokio::test(start_paused = true)]
async fn drift_the_mode_signals_is_repaired_at_once_not_at_the_next_period() {
    let rec = RecordingMode::default();
    let (tx, task) = start(&rec);
    tx.send(Event::Replace(Kind::Service, vec![svc("a", "172.30.0.1")]))
        .await
        .unwrap();
    tx.send(Event::Replace(Kind::EndpointSlice, vec![]))
        .await
        .unwrap();
    let n = node(NODE, None, &["192.168.0.2"]);
    tx.send(Event::Replace(Kind::Node, vec![Object::Node(Box::new(n))]))
        .await
        .unwrap();
    settle().await;
    assert_eq!(rec.calls().len(), 1);

    tokio::time::advance(Duration::from_secs(5)).await;
    settle().await;
    rec.signal_drift(vec![Drift {
        kind: "map element",
        what: "service-ips: 172.30.0.1 . tcp . 80".into(),
    }]);
    settle().await;
    tokio::time::advance(Duration::from_millis(10)).await;
    settle().await;
    let calls = rec.calls();
    assert_eq!(
        calls.len(),
        2,
        "the drift is repaired before the periodic sync"
    );
    assert!(calls[1].at - calls[0].at < Duration::from_secs(6));
    task.abort();
}
