//! The proxy health server: `/healthz` and `/livez` on healthzBindAddress.

use std::{sync::Arc, time::Duration};

use tokio::net::TcpListener;
use tracing::{error, info};

use super::{
    Probe, ProxyHealth,
    http::{self, Handler, Request, Response},
};

/// Upstream retries a server that could not bind (or stopped) every 5 s unless
/// bindAddressHardFail is set.
const RETRY: Duration = Duration::from_secs(5);

/// Answers one request to the proxy health server.
pub fn serve_proxy_health(health: &ProxyHealth, req: &Request) -> Response {
    let (probe, eligible) = match req.path.as_str() {
        "/healthz" => (Probe::Healthz, Some(health.node_eligible())),
        "/livez" => (Probe::Livez, None),
        _ => return Response::not_found(),
    };
    let mut report = health.report(eligible);
    let healthy = report.healthy && eligible.unwrap_or(true);
    let code = if healthy { 200 } else { 503 };
    if healthy {
        // Upstream's compatibility rule: a healthy proxy reports lastUpdated as "now", as old
        // releases did when the sync loop ran periodically.
        report.last_updated = report.current_time;
    }
    health.count_response(probe, code);
    let body = serde_json::to_string(&report).expect("health report serializes");
    Response::new(code, "application/json", body)
}

/// Runs the proxy health server on `addr` until the task is dropped. A bind failure is
/// returned when `hard_fail` is set (the caller exits, as upstream does), else logged and
/// retried.
pub async fn run_proxy_health_server(
    addr: String,
    health: Arc<ProxyHealth>,
    hard_fail: bool,
) -> std::io::Result<()> {
    let handler: Handler = Arc::new(move |req| serve_proxy_health(&health, req));
    serve_with_retry("healthz", addr, handler, hard_fail).await
}

/// Binds `addr` and serves it, retrying binds every 5 s unless `hard_fail`.
pub(crate) async fn serve_with_retry(
    what: &'static str,
    addr: String,
    handler: Handler,
    hard_fail: bool,
) -> std::io::Result<()> {
    loop {
        match TcpListener::bind(&addr).await {
            Ok(listener) => {
                info!(server = what, address = %addr, "serving");
                http::serve(listener, handler.clone()).await;
            }
            Err(e) if hard_fail => {
                error!(server = what, address = %addr, error = %e, "cannot bind (bindAddressHardFail is set)");
                return Err(e);
            }
            Err(e) => {
                error!(server = what, address = %addr, error = %e, retry_in = ?RETRY, "cannot bind; retrying");
                tokio::time::sleep(RETRY).await;
            }
        }
    }
}
