//! Service health checks: for every `externalTrafficPolicy: Local` Service with a
//! `healthCheckNodePort`, an HTTP server on that port that tells load balancers whether this
//! node has local endpoints for it (200) or not (503), as upstream's ServiceHealthServer does.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    sync::{
        Arc, RwLock,
        atomic::{AtomicU64, Ordering},
    },
};

use kproxy_modes::model::{DesiredState, NodePortIps, TrafficPolicy};
use tokio::{net::TcpListener, task::JoinHandle};
use tracing::{info, warn};

use super::{
    ProxyHealth,
    http::{self, Handler, Request, Response},
};

/// `namespace/name` of a Service.
pub type ServiceName = (String, String);

/// A health-check port that could not be opened. Upstream records a Warning Event with reason
/// `FailedToStartServiceHealthcheck` on the Service; the hook lets the agent do the same.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HealthCheckFailure {
    pub namespace: String,
    pub name: String,
    pub port: u16,
    pub error: String,
}

impl HealthCheckFailure {
    /// Upstream's Event reason.
    pub const REASON: &'static str = "FailedToStartServiceHealthcheck";
}

pub type FailureHook = Arc<dyn Fn(&HealthCheckFailure) + Send + Sync>;

/// Where health-check ports listen: every address, or these local addresses.
#[derive(Clone, Debug, PartialEq, Eq)]
enum BindTo {
    All,
    Addrs(Vec<IpAddr>),
}

struct Instance {
    port: u16,
    tasks: Vec<JoinHandle<()>>,
}

/// Opens, keeps and closes the per-Service health-check servers.
pub struct ServiceHealthServer {
    node_name: String,
    health: Arc<ProxyHealth>,
    /// Local endpoint counts, read by the request handlers.
    counts: Arc<RwLock<BTreeMap<ServiceName, usize>>>,
    instances: BTreeMap<ServiceName, Instance>,
    bind_to: Option<BindTo>,
    on_failure: Option<FailureHook>,
    failures: Arc<AtomicU64>,
}

impl ServiceHealthServer {
    pub fn new(node_name: &str, health: Arc<ProxyHealth>) -> Self {
        Self {
            node_name: node_name.to_owned(),
            health,
            counts: Default::default(),
            instances: BTreeMap::new(),
            bind_to: None,
            on_failure: None,
            failures: Default::default(),
        }
    }

    /// Called for every port that cannot be opened (after the warning is logged).
    pub fn on_failure(mut self, hook: FailureHook) -> Self {
        self.on_failure = Some(hook);
        self
    }

    /// How many health-check ports failed to open so far (shared with the metrics server).
    pub fn failure_counter(&self) -> Arc<AtomicU64> {
        self.failures.clone()
    }

    /// The Services with an open health-check port, and the port.
    pub fn open_ports(&self) -> BTreeMap<ServiceName, u16> {
        self.instances
            .iter()
            .map(|(k, i)| (k.clone(), i.port))
            .collect()
    }

    /// Brings the servers in line with `state`: opens ports of new Services, closes those of
    /// Services that went away (or changed port), updates local endpoint counts. A port that
    /// cannot be opened is reported and retried at the next reconcile; it never blocks others.
    pub async fn reconcile(&mut self, state: &DesiredState) {
        let (wanted, counts) = wanted(state);
        let bind_to = bind_to(state);
        if self.bind_to.as_ref() != Some(&bind_to) {
            // New listen addresses: reopen everything on them.
            for (name, inst) in std::mem::take(&mut self.instances) {
                close(&name, inst).await;
            }
            self.bind_to = Some(bind_to);
        }
        *self.counts.write().unwrap_or_else(|e| e.into_inner()) = counts;
        let stale: Vec<ServiceName> = self
            .instances
            .iter()
            .filter(|(name, inst)| wanted.get(*name) != Some(&inst.port))
            .map(|(name, _)| name.clone())
            .collect();
        for name in stale {
            if let Some(inst) = self.instances.remove(&name) {
                close(&name, inst).await;
            }
        }
        for (name, port) in wanted {
            if self.instances.contains_key(&name) {
                continue;
            }
            match self.open(&name, port).await {
                Ok(inst) => {
                    info!(service = %format!("{}/{}", name.0, name.1), port, "opened health check");
                    self.instances.insert(name, inst);
                }
                Err(e) => self.report_failure(&name, port, e),
            }
        }
    }

    /// Binds every address first so that a partial failure leaves nothing open (the port may
    /// be retried, or owned by someone else).
    async fn open(&self, name: &ServiceName, port: u16) -> std::io::Result<Instance> {
        let listeners = match self.bind_to.as_ref().unwrap_or(&BindTo::All) {
            BindTo::All => vec![bind_all(port).await?],
            BindTo::Addrs(ips) => {
                let mut ls = Vec::new();
                for ip in ips {
                    ls.push(TcpListener::bind(SocketAddr::new(*ip, port)).await?);
                }
                ls
            }
        };
        let handler = self.handler(name.clone());
        let tasks = listeners
            .into_iter()
            .map(|l| tokio::spawn(http::serve(l, handler.clone())))
            .collect();
        Ok(Instance { port, tasks })
    }

    fn handler(&self, name: ServiceName) -> Handler {
        let counts = self.counts.clone();
        let health = self.health.clone();
        Arc::new(move |_req: &Request| {
            let count = counts
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .get(&name)
                .copied()
                .unwrap_or(0);
            service_response(&name, count, health.is_healthy())
        })
    }

    fn report_failure(&self, name: &ServiceName, port: u16, e: std::io::Error) {
        self.failures.fetch_add(1, Ordering::Relaxed);
        let failure = HealthCheckFailure {
            namespace: name.0.clone(),
            name: name.1.clone(),
            port,
            error: e.to_string(),
        };
        warn!(node = %self.node_name, service = %format!("{}/{}", name.0, name.1), port, error = %e, reason = HealthCheckFailure::REASON, "failed to start service health check");
        if let Some(hook) = &self.on_failure {
            hook(&failure);
        }
    }

    /// Closes every health-check port.
    pub async fn shutdown(&mut self) {
        for (name, inst) in std::mem::take(&mut self.instances) {
            close(&name, inst).await;
        }
    }
}

/// Waits until the listeners are really dropped, so the port is free when this returns.
async fn close(name: &ServiceName, inst: Instance) {
    info!(service = %format!("{}/{}", name.0, name.1), port = inst.port, "closing health check");
    for task in inst.tasks {
        task.abort();
        let _ = task.await;
    }
}

/// Upstream listens on "0.0.0.0", which Go opens dual-stack; `[::]` does that on Linux, and
/// `0.0.0.0` is the fallback on hosts without IPv6.
async fn bind_all(port: u16) -> std::io::Result<TcpListener> {
    match TcpListener::bind(SocketAddr::new(Ipv6Addr::UNSPECIFIED.into(), port)).await {
        Ok(l) => Ok(l),
        Err(_) => TcpListener::bind(SocketAddr::new(Ipv4Addr::UNSPECIFIED.into(), port)).await,
    }
}

/// The response upstream gives, byte for byte: its JSON is a tab-indented template.
pub fn service_response(
    name: &ServiceName,
    local_endpoints: usize,
    proxy_healthy: bool,
) -> Response {
    let q = |s: &str| serde_json::to_string(s).expect("string serializes");
    let body = format!(
        "{{\n\t\"service\": {{\n\t\t\"namespace\": {},\n\t\t\"name\": {}\n\t}},\n\t\"localEndpoints\": {local_endpoints},\n\t\"serviceProxyHealthy\": {proxy_healthy}\n}}",
        q(&name.0),
        q(&name.1)
    );
    let code = if local_endpoints != 0 && proxy_healthy {
        200
    } else {
        503
    };
    Response::new(code, "application/json", body).header(
        "X-Load-Balancing-Endpoint-Weight",
        local_endpoints.to_string(),
    )
}

/// Health-check ports per Service, and each Service's count of local ready endpoints (distinct
/// addresses across its ports and families).
fn wanted(state: &DesiredState) -> (BTreeMap<ServiceName, u16>, BTreeMap<ServiceName, usize>) {
    let mut ports = BTreeMap::new();
    let mut ips: BTreeMap<ServiceName, BTreeSet<IpAddr>> = BTreeMap::new();
    for family in &state.families {
        for port in family.services.values() {
            let Some(hc) = port.health_check_node_port else {
                continue;
            };
            if port.external_policy != TrafficPolicy::Local {
                continue;
            }
            let name = (port.name.namespace.clone(), port.name.name.clone());
            ports.insert(name.clone(), hc);
            // Upstream counts ready local endpoints only: while a node has nothing but
            // terminating endpoints the load balancer should drain it.
            let ready = port.endpoints.local.iter().filter(|e| e.ready);
            ips.entry(name).or_default().extend(ready.map(|e| e.ip()));
        }
    }
    let counts = ips.into_iter().map(|(k, v)| (k, v.len())).collect();
    (ports, counts)
}

/// Where the health check servers listen: on every address when some family serves NodePorts on
/// every local address, else on the NodePort addresses the compute resolved (loopback included,
/// as upstream's health check server binds `nodePortAddresses.GetNodeIPs`).
fn bind_to(state: &DesiredState) -> BindTo {
    let mut addrs = Vec::new();
    for family in &state.families {
        match &family.node.node_port_ips {
            NodePortIps::AllLocal => return BindTo::All,
            NodePortIps::Only(ips) => addrs.extend(ips.iter().copied()),
        }
    }
    if state.families.is_empty() {
        return BindTo::All;
    }
    addrs.sort();
    addrs.dedup();
    BindTo::Addrs(addrs)
}
