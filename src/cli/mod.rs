//! The command line (clap), with upstream kube-proxy's flag names, and how the flags combine
//! with `--config` (see [`resolve_config`] and docs/config.md).

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::PathBuf;

use clap::builder::BoolishValueParser;
use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::config::{GoDuration, LocalMode, ProxyMode};

#[derive(Debug, Parser)]
#[command(
    name = "kproxy",
    version,
    about = "Makes Kubernetes Services work on this node (a kube-proxy replacement)"
)]
#[command(args_conflicts_with_subcommands = true, args_override_self = true)]
pub struct Cli {
    #[command(flatten)]
    pub flags: ProxyFlags,
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Troubleshooting tools.
    #[command(subcommand)]
    Debug(DebugCommand),
}

#[derive(Debug, Subcommand)]
pub enum DebugCommand {
    /// Print the desired state kproxy would program from manifests; with --kernel, compare it
    /// with what the kernel holds.
    ///
    /// Without --config, the running agent's configuration (and so its proxy mode) is used as if
    /// given with --config; without --manifests, the agent's manifests. Both come from the record
    /// the agent in this network namespace writes ($KPROXY_RUNTIME_DIR or /run/kproxy,
    /// agent-<netns inode>.json); flags given explicitly win. See docs/debug.md.
    ///
    /// Exit status: 0 when done (and, with --kernel, the kernel matches), 3 with --kernel when
    /// the kernel differs from the desired state, 1 on errors.
    #[command(args_override_self = true)]
    Dump(DumpArgs),
}

#[derive(Debug, Args)]
pub struct DumpArgs {
    #[command(flatten)]
    pub flags: ProxyFlags,
    #[arg(short = 'o', long, value_enum, default_value_t = OutputFormat::Table)]
    pub output: OutputFormat,
    /// Also show what the proxy mode has programmed in this network namespace per Service port
    /// (each VIP and NodePort and the endpoints it leads to), and every difference from the
    /// desired state; exits 3 when there is one (needs root).
    #[arg(long)]
    pub kernel: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    Table,
    Json,
    Yaml,
}

/// The proxy flags shared by the agent and `debug dump`. Every config-backed flag is an
/// `Option` so we know whether it was given, which is what upstream's precedence rule uses.
#[derive(Clone, Debug, Default, Args)]
pub struct ProxyFlags {
    /// The path to the configuration file (kubeproxy.config.k8s.io/v1alpha1).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Write the configuration (defaults plus flags) to this file and exit.
    #[arg(long, value_name = "FILE")]
    pub write_config_to: Option<PathBuf>,
    /// Remove kproxy's rules from the kernel and exit.
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true", value_parser = BoolishValueParser::new())]
    pub cleanup: Option<bool>,
    /// Do the initialization that needs full root privileges, then exit.
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true", value_parser = BoolishValueParser::new())]
    pub init_only: Option<bool>,
    /// A directory or file of manifests to read Services/EndpointSlices/Nodes from instead of
    /// an API server (kproxy only).
    #[arg(long, value_name = "PATH")]
    pub manifests: Option<PathBuf>,

    /// key=bool pairs, comma-separated. Ignored with --config.
    #[arg(long, value_name = "KEY=BOOL,...", value_parser = parse_feature_gates)]
    pub feature_gates: Option<BTreeMap<String, bool>>,
    /// Path to a kubeconfig file. Ignored with --config.
    #[arg(long, value_name = "FILE")]
    pub kubeconfig: Option<String>,
    /// The API server address (overrides the kubeconfig's); applies with --config too.
    #[arg(long, value_name = "URL")]
    pub master: Option<String>,
    #[arg(long, value_name = "TYPE")]
    pub kube_api_content_type: Option<String>,
    #[arg(long, value_name = "N", allow_negative_numbers = true)]
    pub kube_api_burst: Option<i32>,
    #[arg(long, value_name = "QPS", allow_negative_numbers = true)]
    pub kube_api_qps: Option<f32>,

    /// The Node name to use instead of the hostname; applies over --config too.
    #[arg(long, value_name = "NAME")]
    pub hostname_override: Option<String>,
    /// This node's primary IP. Ignored with --config.
    #[arg(long, value_name = "IP", value_parser = parse_ip)]
    pub bind_address: Option<String>,
    /// IP[:port] of the health check server. Ignored with --config.
    #[arg(long, value_name = "IP:PORT", value_parser = parse_ip_port)]
    pub healthz_bind_address: Option<String>,
    /// IP[:port] of the metrics server. Ignored with --config.
    #[arg(long, value_name = "IP:PORT", value_parser = parse_ip_port)]
    pub metrics_bind_address: Option<String>,
    #[arg(long, hide = true, value_name = "PORT")]
    pub healthz_port: Option<u16>,
    #[arg(long, hide = true, value_name = "PORT")]
    pub metrics_port: Option<u16>,
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true", value_parser = BoolishValueParser::new())]
    pub bind_address_hard_fail: Option<bool>,
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true", value_parser = BoolishValueParser::new())]
    pub profiling: Option<bool>,
    #[arg(long, value_name = "MAJOR.MINOR")]
    pub show_hidden_metrics_for_version: Option<String>,

    /// userspace, iptables, nftables or ipvs; this build has nftables only. Default: the first
    /// mode this build has, nftables (upstream's default, iptables, once kproxy has it). Ignored
    /// with --config.
    #[arg(long, value_name = "MODE", value_parser = parse_proxy_mode)]
    pub proxy_mode: Option<ProxyMode>,
    #[arg(long, value_name = "BIT", allow_negative_numbers = true)]
    pub iptables_masquerade_bit: Option<i32>,
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true", value_parser = BoolishValueParser::new())]
    pub masquerade_all: Option<bool>,
    #[arg(long = "iptables-localhost-nodeports", num_args = 0..=1, require_equals = true, default_missing_value = "true", value_parser = BoolishValueParser::new())]
    pub iptables_localhost_nodeports: Option<bool>,
    #[arg(long, value_name = "DURATION", value_parser = parse_duration, allow_hyphen_values = true)]
    pub iptables_sync_period: Option<GoDuration>,
    #[arg(long, value_name = "DURATION", value_parser = parse_duration, allow_hyphen_values = true)]
    pub iptables_min_sync_period: Option<GoDuration>,
    #[arg(long, value_name = "DURATION", value_parser = parse_duration, allow_hyphen_values = true)]
    pub ipvs_sync_period: Option<GoDuration>,
    #[arg(long, value_name = "DURATION", value_parser = parse_duration, allow_hyphen_values = true)]
    pub ipvs_min_sync_period: Option<GoDuration>,
    #[arg(long, value_name = "NAME")]
    pub ipvs_scheduler: Option<String>,
    #[arg(long, value_name = "CIDR,...", value_delimiter = ',')]
    pub ipvs_exclude_cidrs: Option<Vec<String>>,
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true", value_parser = BoolishValueParser::new())]
    pub ipvs_strict_arp: Option<bool>,
    #[arg(long, value_name = "DURATION", value_parser = parse_duration, allow_hyphen_values = true)]
    pub ipvs_tcp_timeout: Option<GoDuration>,
    #[arg(long = "ipvs-tcpfin-timeout", value_name = "DURATION", value_parser = parse_duration, allow_hyphen_values = true)]
    pub ipvs_tcpfin_timeout: Option<GoDuration>,
    #[arg(long, value_name = "DURATION", value_parser = parse_duration, allow_hyphen_values = true)]
    pub ipvs_udp_timeout: Option<GoDuration>,

    /// ClusterCIDR (default), NodeCIDR, BridgeInterface or InterfaceNamePrefix. Ignored with --config.
    #[arg(long, value_name = "MODE", value_parser = parse_local_mode)]
    pub detect_local_mode: Option<LocalMode>,
    #[arg(long, value_name = "NAME")]
    pub pod_bridge_interface: Option<String>,
    #[arg(long, value_name = "PREFIX")]
    pub pod_interface_name_prefix: Option<String>,
    /// The pods' CIDR, or an IPv4,IPv6 pair. Ignored with --config.
    #[arg(long, value_name = "CIDR[,CIDR]")]
    pub cluster_cidr: Option<String>,
    /// CIDRs of the node IPs that serve NodePorts, or `primary`. Ignored with --config.
    #[arg(
        long = "nodeport-addresses",
        value_name = "CIDR,...|primary",
        value_delimiter = ','
    )]
    pub nodeport_addresses: Option<Vec<String>>,

    #[arg(long, value_name = "N", allow_negative_numbers = true)]
    pub oom_score_adj: Option<i32>,
    #[arg(long, value_name = "N", allow_negative_numbers = true)]
    pub conntrack_max_per_core: Option<i32>,
    #[arg(long, value_name = "N", allow_negative_numbers = true)]
    pub conntrack_min: Option<i32>,
    #[arg(long, value_name = "DURATION", value_parser = parse_duration, allow_hyphen_values = true)]
    pub conntrack_tcp_timeout_established: Option<GoDuration>,
    #[arg(long, value_name = "DURATION", value_parser = parse_duration, allow_hyphen_values = true)]
    pub conntrack_tcp_timeout_close_wait: Option<GoDuration>,
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true", value_parser = BoolishValueParser::new())]
    pub conntrack_tcp_be_liberal: Option<bool>,
    #[arg(long, value_name = "DURATION", value_parser = parse_duration, allow_hyphen_values = true)]
    pub conntrack_udp_timeout: Option<GoDuration>,
    #[arg(long, value_name = "DURATION", value_parser = parse_duration, allow_hyphen_values = true)]
    pub conntrack_udp_timeout_stream: Option<GoDuration>,
    #[arg(long, value_name = "DURATION", value_parser = parse_duration, allow_hyphen_values = true)]
    pub config_sync_period: Option<GoDuration>,

    /// NodePorts kproxy programs (kproxy's own flag, with the API server's name and default
    /// 30000-32767); others are skipped and reported. Applies over --config too.
    #[arg(long, value_name = "FIRST-LAST", value_parser = parse_port_range)]
    pub service_node_port_range: Option<crate::desired::node_ports::PortRange>,

    /// Which iptables backend iptables mode writes (kproxy's own flag): `auto` (default) uses
    /// the one that already holds the node's rules, as upstream's image does; `nft` or `legacy`
    /// force one. Applies over --config too.
    #[arg(long, value_name = "auto|nft|legacy", value_parser = ["auto", "nft", "legacy"])]
    pub iptables_backend: Option<String>,

    /// Log verbosity; applies over --config too.
    #[arg(short = 'v', long = "v", value_name = "LEVEL")]
    pub v: Option<u32>,
}

/// Duration flags allow values with a leading '-' (`allow_hyphen_values`): a negative duration
/// then reaches this parser and is named as negative, where clap alone would call `-5s` an
/// unexpected argument.
fn parse_duration(s: &str) -> Result<GoDuration, String> {
    s.parse()
        .map_err(|e: crate::config::DurationError| e.to_string())
}

fn parse_port_range(s: &str) -> Result<crate::desired::node_ports::PortRange, String> {
    s.parse()
}

fn parse_proxy_mode(s: &str) -> Result<ProxyMode, String> {
    s.parse()
}

fn parse_local_mode(s: &str) -> Result<LocalMode, String> {
    s.parse()
}

fn parse_ip(s: &str) -> Result<String, String> {
    s.parse::<IpAddr>()
        .map(|_| s.to_string())
        .map_err(|_| format!("{s:?} is not an IP address"))
}

/// Like upstream's IPPortVar: an IP, or IP:port.
fn parse_ip_port(s: &str) -> Result<String, String> {
    let ok = s.parse::<IpAddr>().is_ok() || s.parse::<std::net::SocketAddr>().is_ok();
    if ok {
        Ok(s.to_string())
    } else {
        Err(format!("{s:?} is not an IP or IP:port"))
    }
}

fn parse_feature_gates(s: &str) -> Result<BTreeMap<String, bool>, String> {
    let mut gates = BTreeMap::new();
    for pair in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (key, value) = pair
            .split_once('=')
            .ok_or_else(|| format!("{pair:?} is not key=bool"))?;
        let value = value
            .trim()
            .parse()
            .map_err(|_| format!("{pair:?}: value must be true or false"))?;
        gates.insert(key.trim().to_string(), value);
    }
    Ok(gates)
}

mod merge;
pub use merge::{resolve_config, resolve_config_text, write_config_to};
