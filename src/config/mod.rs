//! KubeProxyConfiguration (kubeproxy.config.k8s.io/v1alpha1): parsing, upstream's defaults,
//! validation, and how command-line flags combine with the file.
//!
//! The struct mirrors upstream's v1alpha1 shape field for field (including `Option` where Go
//! uses a pointer), because defaulting depends on it: a pointer field is defaulted only when
//! absent/null, a plain field whenever it holds the zero value.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

mod defaults;
mod duration;
mod modes;
mod serde_helpers;
mod validation;

pub use defaults::{MIN_SYNC_PERIOD, SYNC_PERIOD, append_port_if_needed, default_mode};
pub use duration::{DurationError, GoDuration};
pub use modes::{LocalMode, ProxyMode};
pub use serde_helpers::{
    LoggingConfiguration, LoggingFormatOptions, OutputRouting, Quantity, VModuleItem,
};

pub const API_VERSION: &str = "kubeproxy.config.k8s.io/v1alpha1";
pub const KIND: &str = "KubeProxyConfiguration";

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(
    rename_all = "camelCase",
    deny_unknown_fields,
    default = "KubeProxyConfiguration::zero"
)]
pub struct KubeProxyConfiguration {
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub feature_gates: BTreeMap<String, bool>,
    pub client_connection: ClientConnection,
    pub logging: LoggingConfiguration,
    pub hostname_override: String,
    pub bind_address: String,
    pub healthz_bind_address: String,
    pub metrics_bind_address: String,
    pub bind_address_hard_fail: bool,
    pub enable_profiling: bool,
    pub show_hidden_metrics_for_version: String,
    /// Kept as written so validation can report a bad value; read it through [`Self::proxy_mode`].
    pub mode: String,
    pub iptables: IptablesConfiguration,
    pub ipvs: IpvsConfiguration,
    pub nftables: NftablesConfiguration,
    /// Windows-only; accepted so shared config files load, otherwise ignored.
    pub winkernel: WinkernelConfiguration,
    /// Read it through [`Self::detect_local_mode`].
    pub detect_local_mode: String,
    pub detect_local: DetectLocalConfiguration,
    #[serde(rename = "clusterCIDR")]
    pub cluster_cidr: String,
    #[serde(with = "serde_helpers::null_as_empty")]
    pub node_port_addresses: Vec<String>,
    pub oom_score_adj: Option<i32>,
    pub conntrack: ConntrackConfiguration,
    pub config_sync_period: GoDuration,
    /// Unused upstream since the userspace proxy's removal; still part of the schema.
    pub port_range: String,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub windows_run_as_service: bool,
    /// kproxy's own `--service-node-port-range` (the API server's flag): the NodePorts kproxy
    /// programs. Not a field of upstream's file, so never read from or written to one; set
    /// from the flag with or without `--config`.
    #[serde(skip)]
    pub service_node_port_range: crate::desired::node_ports::PortRange,
    /// kproxy's own `--iptables-backend` (`auto`, `nft` or `legacy`; empty is `auto`): not a
    /// field of upstream's file either.
    #[serde(skip)]
    pub iptables_backend: String,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct ClientConnection {
    pub kubeconfig: String,
    pub accept_content_types: String,
    pub content_type: String,
    #[serde(serialize_with = "serde_helpers::go_float")]
    pub qps: f32,
    pub burst: i32,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct IptablesConfiguration {
    pub masquerade_bit: Option<i32>,
    pub masquerade_all: bool,
    pub localhost_node_ports: Option<bool>,
    /// Newer upstream field; accepted, written only when set.
    #[serde(rename = "snatNodeInternalIP", skip_serializing_if = "Option::is_none")]
    pub snat_node_internal_ip: Option<bool>,
    pub sync_period: GoDuration,
    pub min_sync_period: GoDuration,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct IpvsConfiguration {
    pub sync_period: GoDuration,
    pub min_sync_period: GoDuration,
    pub scheduler: String,
    #[serde(rename = "excludeCIDRs", with = "serde_helpers::null_as_empty")]
    pub exclude_cidrs: Vec<String>,
    #[serde(rename = "strictARP")]
    pub strict_arp: bool,
    pub tcp_timeout: GoDuration,
    pub tcp_fin_timeout: GoDuration,
    pub udp_timeout: GoDuration,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct NftablesConfiguration {
    pub masquerade_bit: Option<i32>,
    pub masquerade_all: bool,
    pub sync_period: GoDuration,
    pub min_sync_period: GoDuration,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct WinkernelConfiguration {
    pub network_name: String,
    pub source_vip: String,
    #[serde(rename = "enableDSR")]
    pub enable_dsr: bool,
    pub root_hns_endpoint_name: String,
    pub forward_health_check_vip: bool,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct DetectLocalConfiguration {
    pub bridge_interface: String,
    pub interface_name_prefix: String,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct ConntrackConfiguration {
    pub max_per_core: Option<i32>,
    pub min: Option<i32>,
    pub tcp_established_timeout: Option<GoDuration>,
    pub tcp_close_wait_timeout: Option<GoDuration>,
    pub tcp_be_liberal: bool,
    pub udp_timeout: GoDuration,
    pub udp_stream_timeout: GoDuration,
}

/// One invalid field: `invalid value for iptables.masqueradeBit: 40 (must be between 0 and 31)`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldError {
    pub field: String,
    pub value: String,
    pub reason: String,
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "invalid value for {}: {} ({})",
            self.field, self.value, self.reason
        )
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    // The OS error is in the message and deliberately not a `#[source]`: `{:#}` would print it
    // a second time.
    #[error("cannot read config file {}: {error}", path.display())]
    Read {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("cannot write config file {}: {error}", path.display())]
    Write {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("config is not valid yaml or json: {0}")]
    Syntax(String),
    #[error("unsupported apiVersion {0:?} (expected {API_VERSION})")]
    ApiVersion(String),
    #[error("unsupported kind {0:?} (expected {KIND})")]
    Kind(String),
    /// A field that could not be decoded: unknown, wrong type, bad duration.
    #[error("invalid config field {path}: {message}")]
    Field { path: String, message: String },
    #[error("{}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
    Invalid(Vec<FieldError>),
}

impl Default for KubeProxyConfiguration {
    /// What upstream kube-proxy runs with when given no file and no flags.
    fn default() -> Self {
        let mut cfg = Self::zero();
        cfg.apply_scheme_defaults();
        cfg.apply_platform_defaults();
        cfg
    }
}

impl KubeProxyConfiguration {
    /// Parses a v1alpha1 file (YAML, or JSON) and fills in upstream's defaults. Does not validate:
    /// flags may still be merged over it (see `cli::resolve_config`).
    pub fn from_yaml_str(text: &str) -> Result<Self, ConfigError> {
        // JSON gets serde_json's precise errors; a `{` document that is not JSON may still be a
        // YAML flow mapping, so YAML gets the last word.
        let json = text.trim_start().starts_with('{');
        let value: serde_json::Value = match json.then(|| serde_json::from_str(text)) {
            Some(Ok(value)) => value,
            _ => serde_saphyr::from_str(text).map_err(|e| ConfigError::Syntax(e.to_string()))?,
        };
        let serde_json::Value::Object(mut map) = value else {
            return Err(ConfigError::Syntax(
                "the document is not a mapping".to_string(),
            ));
        };
        match map.remove("apiVersion") {
            Some(serde_json::Value::String(v)) if v == API_VERSION => {}
            other => return Err(ConfigError::ApiVersion(serde_helpers::describe(other))),
        }
        match map.remove("kind") {
            Some(serde_json::Value::String(k)) if k == KIND => {}
            other => return Err(ConfigError::Kind(serde_helpers::describe(other))),
        }
        let mut value = serde_json::Value::Object(map);
        // Upstream decodes strictly first and, when only unknown fields stand in the way, falls
        // back to lenient decoding with a warning, so files naming fields that later releases
        // removed keep working. Each unknown field is dropped (and named) until the rest decodes.
        let mut cfg: Self = loop {
            match serde_path_to_error::deserialize(value.clone()) {
                Ok(cfg) => break cfg,
                Err(e) if e.inner().to_string().starts_with("unknown field") => {
                    let path = e.path().to_string();
                    if !remove_path(&mut value, &path) {
                        return Err(ConfigError::Field {
                            path,
                            message: e.inner().to_string(),
                        });
                    }
                    tracing::warn!(field = %path, "ignoring unknown configuration field (upstream's lenient decoding)");
                }
                Err(e) => {
                    return Err(ConfigError::Field {
                        path: e.path().to_string(),
                        message: e.inner().to_string(),
                    });
                }
            }
        };
        cfg.apply_scheme_defaults();
        cfg.apply_platform_defaults();
        Ok(cfg)
    }

    /// The file `--write-config-to` writes: every field, keys sorted, like upstream's encoder.
    pub fn to_yaml_string(&self) -> String {
        let mut value = serde_json::to_value(self).expect("config serializes to json");
        if let serde_json::Value::Object(map) = &mut value {
            map.insert("apiVersion".into(), API_VERSION.into());
            map.insert("kind".into(), KIND.into());
        }
        serde_saphyr::to_string(&serde_helpers::sorted(value))
            .expect("json value serializes to yaml")
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        let errors = validation::validate(self);
        if errors.is_empty() {
            Ok(())
        } else {
            Err(ConfigError::Invalid(errors))
        }
    }

    /// Empty and unknown modes read as [`default_mode`] (validate first).
    pub fn proxy_mode(&self) -> ProxyMode {
        self.mode.parse().unwrap_or_else(|_| default_mode())
    }

    /// Empty and unknown modes read as ClusterCIDR, upstream's default (validate first).
    pub fn detect_local_mode(&self) -> LocalMode {
        self.detect_local_mode
            .parse()
            .unwrap_or(LocalMode::ClusterCidr)
    }

    /// Upstream keeps masqueradeAll in the nftables section for nftables and in the iptables
    /// section for every other mode (ipvs included).
    pub fn effective_masquerade_all(&self) -> bool {
        match self.proxy_mode() {
            ProxyMode::Nftables => self.nftables.masquerade_all,
            _ => self.iptables.masquerade_all,
        }
    }

    /// nftables reads its own section; iptables and ipvs share the iptables one.
    pub fn effective_masquerade_bit(&self) -> u32 {
        let bit = match self.proxy_mode() {
            ProxyMode::Nftables => self.nftables.masquerade_bit,
            _ => self.iptables.masquerade_bit,
        };
        bit.and_then(|b| u32::try_from(b).ok())
            .unwrap_or(defaults::MASQUERADE_BIT)
    }

    pub fn effective_sync_period(&self) -> Duration {
        self.mode_sync_periods().0.0
    }

    pub fn effective_min_sync_period(&self) -> Duration {
        self.mode_sync_periods().1.0
    }

    /// (syncPeriod, minSyncPeriod) of the selected mode's section, as upstream's v1alpha1
    /// conversion picks them: ipvs and nftables have their own, everything else uses iptables'.
    fn mode_sync_periods(&self) -> (GoDuration, GoDuration) {
        match self.proxy_mode() {
            ProxyMode::Ipvs => (self.ipvs.sync_period, self.ipvs.min_sync_period),
            ProxyMode::Nftables => (self.nftables.sync_period, self.nftables.min_sync_period),
            _ => (self.iptables.sync_period, self.iptables.min_sync_period),
        }
    }

    /// The mode's section sync periods, for the flag merge.
    pub(crate) fn mode_sync_periods_mut(&mut self) -> (&mut GoDuration, &mut GoDuration) {
        match self.proxy_mode() {
            ProxyMode::Ipvs => (&mut self.ipvs.sync_period, &mut self.ipvs.min_sync_period),
            ProxyMode::Nftables => (
                &mut self.nftables.sync_period,
                &mut self.nftables.min_sync_period,
            ),
            _ => (
                &mut self.iptables.sync_period,
                &mut self.iptables.min_sync_period,
            ),
        }
    }

    /// `clusterCIDR` split on commas; entries that do not parse are skipped (validate first).
    pub fn cluster_cidrs(&self) -> Vec<IpNet> {
        self.cluster_cidr
            .split(',')
            .filter_map(|c| c.parse().ok())
            .collect()
    }
}

/// Removes the field at a dotted path (`conntrack.maxPerCpu`) from a JSON object tree.
fn remove_path(value: &mut serde_json::Value, path: &str) -> bool {
    let mut parts: Vec<&str> = path.split('.').collect();
    let Some(last) = parts.pop() else {
        return false;
    };
    let mut cur = value;
    for p in parts {
        match cur.get_mut(p) {
            Some(next) => cur = next,
            None => return false,
        }
    }
    cur.as_object_mut()
        .is_some_and(|m| m.remove(last).is_some())
}
