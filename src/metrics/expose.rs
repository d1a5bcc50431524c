//! Encoding: which metrics each mode exports, under which names and help, and the conversion
//! of prometheus-client's OpenMetrics text to the Prometheus text format upstream serves.

use std::sync::Arc;

use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeMetric},
    metrics::{counter::Counter, family::Family, gauge::Gauge},
};

use super::{Labels, Metrics};
use crate::{config::ProxyMode, health::Probe};

#[derive(Debug)]
pub(super) struct Collect(pub(super) Arc<Metrics>);

/// component-base prefixes the help of every ALPHA metric with its stability level.
fn alpha(help: &str) -> String {
    format!("[ALPHA] {help}")
}

/// Writes one metric family; families without samples are left out, as Go's registry does.
fn put(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    metric: &dyn EncodeMetric,
) -> Result<(), std::fmt::Error> {
    if metric.is_empty() {
        return Ok(());
    }
    let m = enc.encode_descriptor(name, help, None, metric.metric_type())?;
    metric.encode(m)
}

fn code_family(m: &Metrics, probe: Probe) -> Family<Labels, Counter> {
    let family = Family::<Labels, Counter>::default();
    for code in [200u16, 503] {
        let n = m.health_responses(probe, code);
        if n > 0 {
            family
                .get_or_create(&vec![("code".to_owned(), code.to_string())])
                .inc_by(n);
        }
    }
    family
}

fn mode_counter_family(m: &Metrics) -> Family<Labels, Counter> {
    let family = Family::<Labels, Counter>::default();
    let counters = m.mode_counters.lock().unwrap_or_else(|e| e.into_inner());
    for c in counters.iter() {
        let labels = vec![("counter".to_owned(), c.name.to_owned())];
        family.get_or_create(&labels).inc_by(c.value);
    }
    family
}

/// The mode's gauges, one family per metric name (in the order the mode lists them).
fn mode_gauge_families(m: &Metrics) -> Vec<(&'static str, &'static str, Family<Labels, Gauge>)> {
    let gauges = m.mode_gauges.lock().unwrap_or_else(|e| e.into_inner());
    let mut out: Vec<(&'static str, &'static str, Family<Labels, Gauge>)> = Vec::new();
    for g in gauges.iter() {
        let at = match out.iter().position(|(name, ..)| *name == g.name) {
            Some(at) => at,
            None => {
                out.push((g.name, g.help, Family::default()));
                out.len() - 1
            }
        };
        let labels = vec![(g.label.0.to_owned(), g.label.1.clone())];
        out[at].2.get_or_create(&labels).set(g.value);
    }
    out
}

impl Collector for Collect {
    fn encode(&self, mut enc: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let m = &*self.0;
        let k = "kubeproxy_";
        let mut put = |name: &str, help: String, metric: &dyn EncodeMetric| {
            put(&mut enc, name, &help, metric)
        };
        // Counters are named without `_total`: the encoder appends it to the samples, and
        // `to_prometheus_text` to the HELP and TYPE lines.
        put(
            &format!("{k}sync_proxy_rules_duration_seconds"),
            alpha("SyncProxyRules latency in seconds"),
            &m.sync_duration,
        )?;
        put(
            &format!("{k}sync_full_proxy_rules_duration_seconds"),
            alpha("SyncProxyRules latency in seconds for full resyncs"),
            &m.sync_full_duration,
        )?;
        put(
            &format!("{k}sync_partial_proxy_rules_duration_seconds"),
            alpha("SyncProxyRules latency in seconds for partial resyncs"),
            &m.sync_partial_duration,
        )?;
        put(
            &format!("{k}sync_proxy_rules_last_timestamp_seconds"),
            alpha("The last time proxy rules were successfully synced"),
            &m.last_timestamp,
        )?;
        put(
            &format!("{k}network_programming_duration_seconds"),
            alpha("In Cluster Network Programming Latency in seconds"),
            &m.network_programming,
        )?;
        put(
            &format!("{k}sync_proxy_rules_endpoint_changes_pending"),
            alpha("Pending proxy rules Endpoint changes"),
            &m.endpoint_changes_pending,
        )?;
        put(
            &format!("{k}sync_proxy_rules_endpoint_changes"),
            alpha("Cumulative proxy rules Endpoint changes"),
            &m.endpoint_changes_total,
        )?;
        put(
            &format!("{k}sync_proxy_rules_service_changes_pending"),
            alpha("Pending proxy rules Service changes"),
            &m.service_changes_pending,
        )?;
        put(
            &format!("{k}sync_proxy_rules_service_changes"),
            alpha("Cumulative proxy rules Service changes"),
            &m.service_changes_total,
        )?;
        put(
            &format!("{k}proxy_healthz"),
            alpha("Cumulative proxy healthz HTTP status"),
            &code_family(m, Probe::Healthz),
        )?;
        put(
            &format!("{k}proxy_livez"),
            alpha("Cumulative proxy livez HTTP status"),
            &code_family(m, Probe::Livez),
        )?;
        put(
            &format!("{k}sync_proxy_rules_last_queued_timestamp_seconds"),
            alpha("The last time a sync of proxy rules was queued"),
            &m.last_queued_timestamp,
        )?;
        put(
            &format!("{k}sync_proxy_rules_no_local_endpoints_total"),
            alpha("Number of services with a Local traffic policy and no endpoints"),
            &m.no_local_endpoints,
        )?;
        // Mode-specific failure counters, under the names each upstream mode uses.
        match m.mode {
            ProxyMode::Iptables => {
                put(
                    &format!("{k}sync_proxy_rules_iptables_restore_failures"),
                    alpha("Cumulative proxy iptables restore failures"),
                    &m.sync_failures,
                )?;
                put(
                    &format!("{k}sync_proxy_rules_iptables_partial_restore_failures"),
                    alpha("Cumulative proxy iptables partial restore failures"),
                    &m.partial_sync_failures,
                )?;
            }
            ProxyMode::Ipvs => put(
                &format!("{k}sync_proxy_rules_iptables_restore_failures"),
                alpha("Cumulative proxy iptables restore failures"),
                &m.sync_failures,
            )?,
            ProxyMode::Nftables => {
                put(
                    &format!("{k}sync_proxy_rules_nftables_sync_failures"),
                    alpha("Cumulative proxy nftables sync failures"),
                    &m.sync_failures,
                )?;
                put(
                    &format!("{k}sync_proxy_rules_nftables_cleanup_failures"),
                    alpha("Cumulative proxy nftables cleanup failures"),
                    &m.cleanup_failures,
                )?;
            }
            ProxyMode::Userspace => {}
        }
        // kproxy's own: a mode-neutral failure count (full and partial), skipped objects, and
        // health-check ports that could not be opened.
        let failures = Counter::<u64>::default();
        failures.inc_by(m.sync_failures.get() + m.partial_sync_failures.get());
        put(
            "kproxy_sync_proxy_rules_failures",
            "Cumulative failed syncs of proxy rules, full and partial".into(),
            &failures,
        )?;
        put(
            "kproxy_skipped_objects",
            "Objects kproxy skipped, by kind and reason class".into(),
            &m.skipped,
        )?;
        put(
            "kproxy_drift_detected",
            "Objects of the mode found changed or missing in the kernel, by kind".into(),
            &m.drift,
        )?;
        put(
            "kproxy_mode_events",
            "The proxy mode's own cumulative counters, by counter name".into(),
            &mode_counter_family(m),
        )?;
        for (name, help, family) in mode_gauge_families(m) {
            put(name, alpha(help), &family)?;
        }
        if let Some(n) = &m.manifest_files_failing {
            let g = Gauge::<i64>::default();
            g.set(n.load(std::sync::atomic::Ordering::Relaxed) as i64);
            put(
                "kproxy_manifest_files_failing",
                "Manifest files that fail to parse; their last good objects stay in force".into(),
                &g,
            )?;
        }
        if let Some(n) = m.healthcheck_failures() {
            let c = Counter::<u64>::default();
            c.inc_by(n);
            put(
                "kproxy_service_healthcheck_failures",
                "Cumulative Service health check ports that could not be opened".into(),
                &c,
            )?;
        }
        Ok(())
    }
}

/// Converts prometheus-client's OpenMetrics text to the Prometheus text format (0.0.4) that
/// upstream serves: counter families are named with their `_total` suffix, bucket bounds are
/// written the way Go writes them (`1`, not `1.0`), a histogram's `_sum` and `_count` follow
/// its buckets, and there is no `# EOF`.
pub fn to_prometheus_text(openmetrics: &str) -> String {
    let counters: std::collections::BTreeSet<&str> = openmetrics
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.strip_suffix(" counter"))
        .collect();
    let mut out = String::with_capacity(openmetrics.len());
    let mut histogram: Option<&str> = None;
    let mut held = Vec::new();
    for line in openmetrics.lines() {
        if line == "# EOF" {
            continue;
        }
        if let Some((kind, rest)) = line
            .strip_prefix("# HELP ")
            .map(|r| ("HELP", r))
            .or_else(|| line.strip_prefix("# TYPE ").map(|r| ("TYPE", r)))
        {
            out.extend(held.drain(..));
            let (name, tail) = rest.split_once(' ').unwrap_or((rest, ""));
            histogram = (kind == "TYPE" && tail == "histogram").then_some(name);
            let suffix = if counters.contains(name) {
                "_total"
            } else {
                ""
            };
            out.push_str(&format!("# {kind} {name}{suffix} {tail}\n"));
            continue;
        }
        let summary = histogram.is_some_and(|h| {
            line.strip_prefix(h)
                .is_some_and(|r| r.starts_with("_sum") || r.starts_with("_count"))
        });
        if summary {
            held.push(format!("{line}\n"));
        } else {
            out.push_str(&go_le(line));
            out.push('\n');
        }
    }
    out.extend(held.drain(..));
    out
}

/// `le="1.0"` -> `le="1"`, as Go formats floats (shortest form, no forced decimal point).
fn go_le(line: &str) -> String {
    let Some(start) = line.find("le=\"") else {
        return line.to_owned();
    };
    let from = start + 4;
    let Some(len) = line[from..].find('"') else {
        return line.to_owned();
    };
    let value = &line[from..from + len];
    match value.parse::<f64>() {
        Ok(v) if v.is_finite() => format!("{}{}{}", &line[..from], v, &line[from + len..]),
        _ => line.to_owned(),
    }
}
