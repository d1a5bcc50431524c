//! The metrics server on metricsBindAddress: `/metrics`, `/proxyMode`, `/configz` and
//! `/healthz`, the paths upstream's metrics mux serves.

use std::sync::Arc;

use prometheus_client::{encoding::text::encode_registry, registry::Registry};

use super::{Metrics, to_prometheus_text};
use crate::{
    config::{KubeProxyConfiguration, ProxyMode},
    health::http::{Handler, Request, Response},
};

pub struct MetricsServer {
    registry: Registry,
    mode: ProxyMode,
    configz: String,
}

impl MetricsServer {
    pub fn new(metrics: &Arc<Metrics>, config: &KubeProxyConfiguration) -> Self {
        let configz = super::configz::configz(config);
        Self {
            registry: metrics.registry(),
            mode: metrics.mode,
            configz,
        }
    }

    pub fn handle(&self, req: &Request) -> Response {
        match req.path.as_str() {
            "/metrics" => {
                let mut text = String::new();
                match encode_registry(&mut text, &self.registry) {
                    Ok(()) => Response::new(
                        200,
                        "text/plain; version=0.0.4; charset=utf-8",
                        to_prometheus_text(&text),
                    ),
                    Err(_) => Response::new(500, "text/plain; charset=utf-8", "encoding failed\n"),
                }
            }
            // Upstream writes the bare mode name, no newline.
            "/proxyMode" => Response::new(200, "text/plain; charset=utf-8", self.mode.to_string()),
            "/configz" => Response::new(200, "application/json", self.configz.clone()),
            // The generic healthz handler upstream installs: no checks, so always "ok".
            "/healthz" => Response::new(200, "text/plain; charset=utf-8", "ok"),
            _ => Response::not_found(),
        }
    }

    pub fn handler(self) -> Handler {
        let me = Arc::new(self);
        Arc::new(move |req| me.handle(req))
    }
}

/// Runs the metrics server on `addr` until the task is dropped; bind failures follow
/// bindAddressHardFail as for the health server.
pub async fn run_metrics_server(
    addr: String,
    server: MetricsServer,
    hard_fail: bool,
) -> std::io::Result<()> {
    crate::health::serve_with_retry("metrics", addr, server.handler(), hard_fail).await
}
