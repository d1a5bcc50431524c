//! The agent loop with a recording mode on paused tokio time: no sleeps, time is advanced.

mod support;

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use kproxy::{
    agent::{self, Periods},
    source::{Event, Kind, Object},
    tracker::Tracker,
};
use kproxy_modes::{
    Mode, ModeError, SyncStats,
    model::{ChangeSet, DesiredState},
};
use serde_json::json;
use support::*;
use tokio::sync::mpsc;

#[derive(Clone, Default)]
struct Recorder {
    syncs: Arc<Mutex<Vec<(tokio::time::Instant, ChangeSet, usize)>>>,
    fail_next: Arc<Mutex<u32>>,
}

impl Mode for Recorder {
    fn name(&self) -> &'static str {
        "recorder"
    }
    fn sync(
        &mut self,
        desired: &DesiredState,
        changes: &ChangeSet,
    ) -> Result<SyncStats, ModeError> {
        let ports = desired.families.iter().map(|f| f.services.len()).sum();
        self.syncs
            .lock()
            .unwrap()
            .push((tokio::time::Instant::now(), changes.clone(), ports));
        let mut fail = self.fail_next.lock().unwrap();
        if *fail > 0 {
            *fail -= 1;
            return Err(ModeError::Apply {
                mode: "recorder",
                message: "injected".into(),
            });
        }
        Ok(SyncStats {
            full: changes.full,
            service_ports: ports,
            endpoints: 0,
        })
    }
    fn cleanup(&mut self) -> Result<(), ModeError> {
        Ok(())
    }
}

fn svc(name: &str, ip: &str) -> Object {
    Object::Service(Box::new(simple_service(name, json!({"clusterIP": ip}))))
}

async fn settle() {
    for _ in 0..20 {
        tokio::task::yield_now().await;
    }
}

/// Steps: initial lists arrive -> one full sync at once; two quick changes inside minSyncPeriod
/// -> one coalesced partial sync after it; an injected failure -> a retry that is full.
#[tokio::test(start_paused = true)]
async fn syncs_wait_for_initial_lists_coalesce_changes_and_retry_failures_as_full() {
    let rec = Recorder::default();
    let (tx, rx) = mpsc::channel(16);
    let periods = Periods {
        sync: Duration::from_secs(30),
        min_sync: Duration::from_secs(1),
    };
    let task = tokio::spawn(agent::run(
        Tracker::new(opts()),
        rx,
        Box::new(rec.clone()),
        periods,
        std::future::pending(),
    ));
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
    assert!(
        rec.syncs.lock().unwrap().is_empty(),
        "no sync before the Node list is in"
    );

    tx.send(Event::Replace(
        Kind::Node,
        vec![Object::Node(Box::new(node(NODE, None, &["192.168.0.2"])))],
    ))
    .await
    .unwrap();
    settle().await;
    {
        let s = rec.syncs.lock().unwrap();
        assert_eq!(s.len(), 1);
        assert!(s[0].1.full);
    }
    let first = rec.syncs.lock().unwrap()[0].0;

    tx.send(Event::Apply(svc("b", "172.30.0.2"))).await.unwrap();
    settle().await;
    tx.send(Event::Apply(svc("c", "172.30.0.3"))).await.unwrap();
    settle().await;
    assert_eq!(
        rec.syncs.lock().unwrap().len(),
        1,
        "minSyncPeriod holds the next sync back"
    );
    tokio::time::advance(Duration::from_millis(1100)).await;
    settle().await;
    {
        let s = rec.syncs.lock().unwrap();
        assert_eq!(s.len(), 2, "two changes, one sync");
        assert!(!s[1].1.full);
        assert_eq!(s[1].1.services.len(), 2);
        assert!(s[1].0 - first >= Duration::from_secs(1));
    }

    *rec.fail_next.lock().unwrap() = 1;
    tx.send(Event::Apply(svc("d", "172.30.0.4"))).await.unwrap();
    tokio::time::advance(Duration::from_secs(2)).await;
    settle().await;
    tokio::time::advance(Duration::from_secs(2)).await;
    settle().await;
    let s = rec.syncs.lock().unwrap();
    assert_eq!(s.len(), 4, "failed sync, then its retry");
    assert!(
        !s[2].1.full && s[3].1.full,
        "the retry after a failure is full"
    );
    assert_eq!(s[3].2, 4);
    assert!(start.elapsed() < Duration::from_secs(30));
    drop(s);
    task.abort();
}
