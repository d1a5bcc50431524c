//! The Kubernetes API source: one kube-runtime watcher per kind, mapped to [`Event`]s.
//!
//! What is watched follows upstream kube-proxy (`cmd/kube-proxy/app/server.go`): Services,
//! EndpointSlices and ServiceCIDRs through one label selector that keeps out objects meant for
//! another proxy or for headless Services, and this node's own Node through a field selector.
//!
//! Each watcher's initial list (and every relist, e.g. after a 410 Gone) is sent as
//! [`Event::ListBegin`], one [`Event::Listed`] per object and [`Event::ListEnd`]: the tracker
//! holds the objects apart until the end and then swaps the kind's objects atomically, so it
//! never acts on half a list. Watch errors back off with kube-runtime's default policy (exponential from
//! 0.8 s to 30 s, jittered) and then resume from the last resourceVersion; kube-runtime relists
//! when the server answers 410 Gone.

use std::fmt::Debug;

use futures::StreamExt;
use k8s_openapi::api::{
    core::v1::{Node, Service},
    discovery::v1::EndpointSlice,
    networking::v1::ServiceCIDR,
};
use kube::{
    Api, Client, Resource,
    runtime::{WatchStreamExt, watcher},
};
use serde::de::DeserializeOwned;
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

use super::{Event, Kind, Object};

pub mod client;
pub mod ratelimit;

/// Upstream's server-side selector for Services, EndpointSlices and ServiceCIDRs: objects
/// labelled `service.kubernetes.io/service-proxy-name` belong to another proxy, and
/// `service.kubernetes.io/headless` marks headless Services' EndpointSlices. This is the string
/// client-go's `labels.Selector.String()` produces (requirements sorted by key).
pub const PROXY_LABEL_SELECTOR: &str =
    "!service.kubernetes.io/headless,!service.kubernetes.io/service-proxy-name";

/// client-go's reflector and kube-runtime both page initial lists at 500 objects.
pub const DEFAULT_PAGE_SIZE: u32 = 500;

/// What the API source watches, and how.
#[derive(Clone, Debug)]
pub struct WatchOptions {
    /// This node's name: only the Node of that name is watched.
    pub node_name: String,
    /// `limit` of each list request; later pages follow `continue` tokens.
    pub page_size: u32,
}

impl WatchOptions {
    pub fn new(node_name: impl Into<String>) -> Self {
        Self {
            node_name: node_name.into(),
            page_size: DEFAULT_PAGE_SIZE,
        }
    }
}

/// Watches Services, EndpointSlices, this node's Node and ServiceCIDRs until `tx` closes.
pub async fn watch_all(client: Client, node_name: String, tx: mpsc::Sender<Event>) {
    watch_all_with(client, WatchOptions::new(node_name), tx).await
}

/// [`watch_all`] with explicit options.
pub async fn watch_all_with(client: Client, opts: WatchOptions, tx: mpsc::Sender<Event>) {
    let labelled = watcher::Config::default()
        .labels(PROXY_LABEL_SELECTOR)
        .page_size(opts.page_size);
    let node = watcher::Config::default()
        .fields(&format!("metadata.name={}", opts.node_name))
        .page_size(opts.page_size);
    tokio::join!(
        watch_kind(
            Api::<Service>::all(client.clone()),
            labelled.clone(),
            Kind::Service,
            |o| Object::Service(Box::new(o)),
            tx.clone(),
        ),
        watch_kind(
            Api::<EndpointSlice>::all(client.clone()),
            labelled.clone(),
            Kind::EndpointSlice,
            |o| Object::EndpointSlice(Box::new(o)),
            tx.clone(),
        ),
        watch_kind(
            Api::<Node>::all(client.clone()),
            node,
            Kind::Node,
            |o| Object::Node(Box::new(o)),
            tx.clone(),
        ),
        watch_kind(
            Api::<ServiceCIDR>::all(client),
            labelled,
            Kind::ServiceCidr,
            |o| Object::ServiceCidr(Box::new(o)),
            tx,
        ),
    );
}

/// Runs one watcher until `tx` closes, translating its events.
async fn watch_kind<K>(
    api: Api<K>,
    config: watcher::Config,
    kind: Kind,
    wrap: fn(K) -> Object,
    tx: mpsc::Sender<Event>,
) where
    K: Resource + Clone + DeserializeOwned + Debug + Send + 'static,
{
    let stream = watcher(api, config).default_backoff();
    futures::pin_mut!(stream);
    let mut translate = Translator::new(kind);
    while let Some(item) = stream.next().await {
        let event = match item {
            Ok(ev) => translate.event(map_event(ev, wrap)),
            Err(e) => translate.error(&e),
        };
        if let Some(event) = event
            && tx.send(event).await.is_err()
        {
            return; // the agent is gone
        }
    }
}

/// Turns one watcher's events into ours. Kept apart from the stream so it can be tested
/// without a server.
pub struct Translator {
    kind: Kind,
    /// Objects of the list in progress so far (between `Init` and `InitDone`), for the log.
    listed: usize,
    /// ServiceCIDRs only: the resource was found missing and an empty list was sent.
    absent: bool,
}

impl Translator {
    pub fn new(kind: Kind) -> Self {
        Self {
            kind,
            listed: 0,
            absent: false,
        }
    }

    pub fn event(&mut self, ev: watcher::Event<Object>) -> Option<Event> {
        match ev {
            // A (re)list starts: the tracker abandons whatever a failed earlier attempt sent.
            watcher::Event::Init => {
                self.listed = 0;
                Some(Event::ListBegin(self.kind))
            }
            // Passed on one by one rather than gathered here: the tracker keeps each in its
            // compact form, where the whole list of API objects would be held at once.
            watcher::Event::InitApply(o) => {
                self.listed += 1;
                Some(Event::Listed(o))
            }
            watcher::Event::InitDone => {
                self.absent = false;
                debug!(kind = %self.kind, count = self.listed, "listed");
                Some(Event::ListEnd(self.kind))
            }
            watcher::Event::Apply(o) => Some(Event::Apply(o)),
            watcher::Event::Delete(o) => Some(Event::Delete(o)),
        }
    }

    /// Logs a watch error (the stream backs off and retries by itself). For ServiceCIDRs, a
    /// 404 means the API server predates networking.k8s.io/v1 ServiceCIDRs: that counts as an
    /// empty list, said once, while the watcher keeps retrying in case the API appears.
    pub fn error(&mut self, e: &watcher::Error) -> Option<Event> {
        if self.kind == Kind::ServiceCidr && is_not_found(e) {
            if self.absent {
                return None;
            }
            self.absent = true;
            info!(
                "the API server serves no networking.k8s.io/v1 ServiceCIDRs; treating them as none"
            );
            return Some(Event::Replace(Kind::ServiceCidr, Vec::new()));
        }
        match e {
            watcher::Error::WatchError(status) if status.code == 410 => {
                info!(kind = %self.kind, "resourceVersion too old (410 Gone); relisting")
            }
            _ => warn!(kind = %self.kind, error = %e, "watch failed; retrying with backoff"),
        }
        None
    }
}

fn map_event<K>(ev: watcher::Event<K>, wrap: fn(K) -> Object) -> watcher::Event<Object> {
    match ev {
        watcher::Event::Init => watcher::Event::Init,
        watcher::Event::InitApply(o) => watcher::Event::InitApply(wrap(o)),
        watcher::Event::InitDone => watcher::Event::InitDone,
        watcher::Event::Apply(o) => watcher::Event::Apply(wrap(o)),
        watcher::Event::Delete(o) => watcher::Event::Delete(wrap(o)),
    }
}

fn is_not_found(e: &watcher::Error) -> bool {
    match e {
        watcher::Error::InitialListFailed(kube::Error::Api(status))
        | watcher::Error::WatchStartFailed(kube::Error::Api(status)) => status.is_not_found(),
        _ => false,
    }
}
