//! The API client, built as upstream's `createClient` builds it: an explicit kubeconfig and/or
//! `--master` first, else the in-cluster config, else an error. (kube's `Config::infer` would
//! also read `$KUBECONFIG` and `~/.kube/config`; upstream kube-proxy does not, so neither do we.)

use std::path::PathBuf;

use kube::{
    Client,
    client::ClientBuilder,
    config::{Config, InClusterError, KubeConfigOptions, Kubeconfig, KubeconfigError},
};
use tracing::{info, warn};

use super::ratelimit::TokenBucketLayer;
use crate::config::KubeProxyConfiguration;

/// What the client is built from: `clientConnection` plus the `--master` flag.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ClientSettings {
    pub kubeconfig: Option<PathBuf>,
    pub master: Option<String>,
    pub qps: f32,
    pub burst: i32,
    pub content_type: String,
}

impl ClientSettings {
    /// From the resolved configuration (where `--kubeconfig`, `--kube-api-qps` and the like have
    /// already been applied) and `--master`, which is no config field. Empty strings are unset.
    pub fn new(cfg: &KubeProxyConfiguration, master: Option<&str>) -> Self {
        let cc = &cfg.client_connection;
        Self {
            kubeconfig: Some(cc.kubeconfig.trim())
                .filter(|p| !p.is_empty())
                .map(PathBuf::from),
            master: master
                .map(str::trim)
                .filter(|m| !m.is_empty())
                .map(String::from),
            qps: cc.qps,
            burst: cc.burst,
            content_type: cc.content_type.clone(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("reading kubeconfig {path}: {source}")]
    Kubeconfig {
        path: PathBuf,
        #[source]
        source: KubeconfigError,
    },
    #[error("invalid API server address {url:?}: {reason}")]
    Master { url: String, reason: String },
    #[error(
        "neither a kubeconfig nor --master was given, and the in-cluster config is unavailable: {0}"
    )]
    InCluster(#[source] InClusterError),
    #[error("building the API client: {0}")]
    Build(#[source] kube::Error),
}

/// The connection settings, before any client exists.
pub async fn kube_config(s: &ClientSettings) -> Result<Config, ClientError> {
    let mut config = match (&s.kubeconfig, &s.master) {
        (Some(path), _) => {
            let kubeconfig =
                Kubeconfig::read_from(path).map_err(|source| kubeconfig_err(path, source))?;
            Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
                .await
                .map_err(|source| kubeconfig_err(path, source))?
        }
        (None, Some(master)) => Config::new(parse_master(master)?),
        (None, None) => {
            info!(
                "neither kubeconfig file nor master URL was specified, falling back to in-cluster config"
            );
            Config::incluster().map_err(ClientError::InCluster)?
        }
    };
    if let Some(master) = &s.master {
        // --master overrides the kubeconfig's server, as clientcmd's ConfigOverrides do.
        config.cluster_url = parse_master(master)?;
    }
    Ok(config)
}

/// The client, rate limited as client-go's would be.
pub async fn build_client(s: &ClientSettings) -> Result<Client, ClientError> {
    let config = kube_config(s).await?;
    if s.content_type.contains("protobuf") {
        // kube-rs only speaks JSON; the objects are the same either way.
        warn!(content_type = %s.content_type, "protobuf is not supported: the API client uses JSON");
    }
    let builder = ClientBuilder::try_from(config).map_err(ClientError::Build)?;
    Ok(match TokenBucketLayer::from_client_go(s.qps, s.burst) {
        Some(limit) => {
            info!(
                qps = limit.qps(),
                burst = limit.burst(),
                "API client rate limit"
            );
            builder.with_layer(&limit).build()
        }
        None => {
            info!("negative clientConnection.qps: the API client is not rate limited");
            builder.build()
        }
    })
}

fn kubeconfig_err(path: &std::path::Path, source: KubeconfigError) -> ClientError {
    ClientError::Kubeconfig {
        path: path.to_path_buf(),
        source,
    }
}

/// `--master` as client-go takes it: a URL, or a bare `host:port` meaning https.
fn parse_master(master: &str) -> Result<http::Uri, ClientError> {
    let url = if master.contains("://") {
        master.to_string()
    } else {
        format!("https://{master}")
    };
    url.parse()
        .map_err(|e: http::uri::InvalidUri| ClientError::Master {
            url: master.to_string(),
            reason: e.to_string(),
        })
}
