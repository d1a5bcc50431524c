//! An in-process Kubernetes API server for tests: real HTTP/1.1 on 127.0.0.1 serving list and
//! watch of Services, EndpointSlices, Nodes and ServiceCIDRs as the real one does (object JSON
//! from k8s-openapi types, a global resourceVersion counter, `limit`/`continue` pages, watch
//! streams with bookmarks, 410 Gone for compacted history, label and field selectors), plus
//! controls a test needs: change objects, drop every open watch, compact history, and see the
//! requests that came in.
//!
//! A crate of its own (`kproxy-test-apiserver`) so that every test crate and the benchmarks use
//! it as a dependency: `use kproxy_test_apiserver as apiserver;`.

mod http;
pub mod selector;

use std::{
    collections::{BTreeMap, HashMap, VecDeque},
    net::SocketAddr,
    path::PathBuf,
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use k8s_openapi::{Metadata, Resource, apimachinery::pkg::apis::meta::v1::ObjectMeta};
use serde::Serialize;
use serde_json::Value;
use tokio::{
    sync::{broadcast, watch},
    task::JoinHandle,
    time::Instant,
};

/// The collections served, by their URL.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Res {
    Services,
    EndpointSlices,
    Nodes,
    ServiceCidrs,
}

impl Res {
    fn from_path(path: &str) -> Option<Res> {
        Some(match path {
            "/api/v1/services" => Res::Services,
            "/apis/discovery.k8s.io/v1/endpointslices" => Res::EndpointSlices,
            "/api/v1/nodes" => Res::Nodes,
            "/apis/networking.k8s.io/v1/servicecidrs" => Res::ServiceCidrs,
            _ => return None,
        })
    }

    fn of_kind(kind: &str) -> Res {
        match kind {
            "Service" => Res::Services,
            "EndpointSlice" => Res::EndpointSlices,
            "Node" => Res::Nodes,
            "ServiceCIDR" => Res::ServiceCidrs,
            other => panic!("the test API server does not serve {other}"),
        }
    }

    /// (apiVersion, kind) of the objects.
    fn type_meta(self) -> (&'static str, &'static str) {
        match self {
            Res::Services => ("v1", "Service"),
            Res::EndpointSlices => ("discovery.k8s.io/v1", "EndpointSlice"),
            Res::Nodes => ("v1", "Node"),
            Res::ServiceCidrs => ("networking.k8s.io/v1", "ServiceCIDR"),
        }
    }
}

/// One stored change, as watches replay it.
#[derive(Debug)]
pub struct Change {
    pub rv: u64,
    pub res: Res,
    pub old: Option<Value>,
    pub new: Option<Value>,
}

#[derive(Clone, Debug)]
enum Msg {
    Change(Arc<Change>),
    Bookmark(u64),
}

/// One list or watch request, as received.
#[derive(Clone, Debug)]
pub struct Request {
    pub res: Res,
    pub watch: bool,
    pub query: HashMap<String, String>,
}

type Key = (Res, String, String);

/// An events.k8s.io/v1 Event as a client sent it.
#[derive(Clone, Debug)]
pub struct RecordedEvent {
    /// POST (created) or PATCH (a repeat, updating the series).
    pub method: String,
    pub namespace: String,
    pub event: Value,
}

struct State {
    rv: u64,
    objects: BTreeMap<Key, Value>,
    history: VecDeque<Arc<Change>>,
    history_limit: usize,
    /// Watches may resume from this resourceVersion or later; older ones get 410 Gone.
    oldest_resumable: u64,
    /// Snapshots of paged lists in progress, by continue token.
    continues: HashMap<String, (u64, Vec<Value>)>,
    next_token: u64,
    requests: Vec<Request>,
    serve_service_cidrs: bool,
    events: Vec<RecordedEvent>,
}

struct Shared {
    state: Mutex<State>,
    changes: broadcast::Sender<Msg>,
    /// Bumped to end every open watch stream.
    drops: watch::Sender<u64>,
    open_watches: AtomicUsize,
}

/// A running server; it stops when dropped.
pub struct ApiServer {
    pub addr: SocketAddr,
    shared: Arc<Shared>,
    task: JoinHandle<()>,
    dir: tempfile::TempDir,
}

impl ApiServer {
    pub async fn start() -> ApiServer {
        Self::start_with(true).await
    }

    /// A server of a release before networking.k8s.io/v1 ServiceCIDRs: that URL is a 404.
    pub async fn start_without_service_cidrs() -> ApiServer {
        Self::start_with(false).await
    }

    /// A server on a listener the test bound itself, e.g. inside a network namespace (a socket
    /// stays in the namespace it was created in, whichever thread serves it).
    pub async fn start_on(listener: std::net::TcpListener) -> ApiServer {
        listener.set_nonblocking(true).unwrap();
        let listener = tokio::net::TcpListener::from_std(listener).unwrap();
        Self::serve(listener, true)
    }

    async fn start_with(serve_service_cidrs: bool) -> ApiServer {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        Self::serve(listener, serve_service_cidrs)
    }

    fn serve(listener: tokio::net::TcpListener, serve_service_cidrs: bool) -> ApiServer {
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                rv: 100,
                objects: BTreeMap::new(),
                history: VecDeque::new(),
                history_limit: 1000,
                oldest_resumable: 100,
                continues: HashMap::new(),
                next_token: 0,
                requests: Vec::new(),
                serve_service_cidrs,
                events: Vec::new(),
            }),
            changes: broadcast::channel(1024).0,
            drops: watch::channel(0).0,
            open_watches: AtomicUsize::new(0),
        });
        let addr = listener.local_addr().unwrap();
        let router = http::router(shared.clone());
        let task = tokio::spawn(async move {
            axum::serve(listener, router).await.unwrap();
        });
        ApiServer {
            addr,
            shared,
            task,
            dir: tempfile::tempdir().unwrap(),
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// A kubeconfig file whose current context points at this server.
    pub fn kubeconfig(&self) -> PathBuf {
        let path = self.dir.path().join("kubeconfig");
        let text = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: test\n  cluster:\n    server: {}\n\
             contexts:\n- name: test\n  context:\n    cluster: test\n    user: test\n\
             current-context: test\nusers:\n- name: test\n  user: {{}}\n",
            self.url()
        );
        std::fs::write(&path, text).unwrap();
        path
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.shared.state.lock().unwrap()
    }

    /// Creates or replaces an object; returns its new resourceVersion.
    pub fn apply<K: Resource + Metadata<Ty = ObjectMeta> + Serialize>(&self, obj: &K) -> u64 {
        let mut value = serde_json::to_value(obj).unwrap();
        let key = key_of(K::KIND, obj.metadata());
        let mut st = self.state();
        st.rv += 1;
        let rv = st.rv;
        value["metadata"]["resourceVersion"] = Value::String(rv.to_string());
        let old = st.objects.insert(key.clone(), value.clone());
        self.record(&mut st, key.0, old, Some(value));
        rv
    }

    /// Deletes an object by kind, namespace and name; false when there was none.
    pub fn delete<K: Resource>(&self, namespace: Option<&str>, name: &str) -> bool {
        let key = (
            Res::of_kind(K::KIND),
            namespace.unwrap_or("").to_string(),
            name.to_string(),
        );
        let mut st = self.state();
        let Some(mut last) = st.objects.remove(&key) else {
            return false;
        };
        st.rv += 1;
        // A DELETED event carries the object at the deletion's resourceVersion.
        last["metadata"]["resourceVersion"] = Value::String(st.rv.to_string());
        self.record(&mut st, key.0, Some(last), None);
        true
    }

    /// Appends to history and tells open watches, under the state lock so a watch that
    /// subscribes while replaying history misses nothing and sees nothing twice.
    fn record(&self, st: &mut State, res: Res, old: Option<Value>, new: Option<Value>) {
        let change = Arc::new(Change {
            rv: st.rv,
            res,
            old,
            new,
        });
        st.history.push_back(change.clone());
        trim_history(st);
        let _ = self.shared.changes.send(Msg::Change(change));
    }

    /// Keeps at most `n` changes: a watch resuming from before them gets 410 Gone.
    pub fn set_history_limit(&self, n: usize) {
        let mut st = self.state();
        st.history_limit = n;
        trim_history(&mut st);
    }

    /// Forgets all history, as etcd compaction does: any resume from an older
    /// resourceVersion than the current one gets 410 Gone.
    pub fn compact(&self) {
        let mut st = self.state();
        st.history.clear();
        st.oldest_resumable = st.rv;
    }

    /// Ends every open watch stream cleanly, as an API server restart or a load balancer would.
    pub fn drop_watches(&self) {
        self.shared.drops.send_modify(|g| *g += 1);
    }

    /// Sends a BOOKMARK at the current resourceVersion to watches that allow them.
    pub fn bookmark(&self) {
        let rv = self.state().rv;
        let _ = self.shared.changes.send(Msg::Bookmark(rv));
    }

    pub fn resource_version(&self) -> u64 {
        self.state().rv
    }

    /// Events received, oldest first.
    pub fn events(&self) -> Vec<RecordedEvent> {
        self.state().events.clone()
    }

    pub fn requests(&self) -> Vec<Request> {
        self.state().requests.clone()
    }

    /// How many list (`watch == false`) or watch requests came for `res`.
    pub fn count(&self, res: Res, watch: bool) -> usize {
        let st = self.state();
        st.requests
            .iter()
            .filter(|r| r.res == res && r.watch == watch)
            .count()
    }

    pub fn open_watches(&self) -> usize {
        self.shared.open_watches.load(Ordering::SeqCst)
    }

    /// Waits until `cond` holds, failing the test after 10 s.
    pub async fn wait_for(&self, what: &str, cond: impl Fn(&ApiServer) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !cond(self) {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

impl Drop for ApiServer {
    fn drop(&mut self) {
        self.task.abort();
        self.drop_watches();
    }
}

fn trim_history(st: &mut State) {
    while st.history.len() > st.history_limit {
        let dropped = st.history.pop_front().unwrap();
        st.oldest_resumable = st.oldest_resumable.max(dropped.rv);
    }
}

fn key_of(kind: &str, meta: &ObjectMeta) -> Key {
    (
        Res::of_kind(kind),
        meta.namespace.clone().unwrap_or_default(),
        meta.name.clone().expect("objects need a name"),
    )
}
