//! What kproxy is given for a scenario (manifests directory, KubeProxyConfiguration file) and the
//! kproxy process itself, started in the node namespace.

use super::case::{Case, Flow};
use crate::netns::Netns;
use crate::process::NsProcess;
use anyhow::{Context, Result};
use serde_json::{Value, json};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The agent's contract: this line on stdout or stderr means its rules are in place.
pub const READY_LINE: &str = "initial sync complete";
pub const READY_DEADLINE: Duration = Duration::from_secs(30);
pub const STOP_GRACE: Duration = Duration::from_secs(10);

/// Writes `objects` plus the Node (and ServiceCIDR when the file has service CIDRs) into `dir`,
/// replacing whatever was there: one YAML file per object, written then renamed so a watching agent
/// never reads half a file.
pub fn write_manifests(dir: &Path, case: &Case, objects: &[Value]) -> Result<()> {
    std::fs::create_dir_all(dir)?;
    for e in std::fs::read_dir(dir)?.flatten() {
        std::fs::remove_file(e.path())?;
    }
    let mut all: Vec<Value> = vec![node_object(case)];
    if let Some(cidrs) = &case.config.service_cidrs {
        let cidrs: Vec<String> = cidrs.iter().map(|c| c.to_string()).collect();
        all.push(service_cidr_object(&cidrs));
    }
    all.extend(objects.iter().cloned());
    for (i, obj) in all.iter().enumerate() {
        let kind = obj["kind"]
            .as_str()
            .unwrap_or("object")
            .to_ascii_lowercase();
        let name = obj["metadata"]["name"].as_str().unwrap_or("unnamed");
        let ns = obj["metadata"]["namespace"].as_str().unwrap_or("cluster");
        let file = dir.join(format!("{i:03}-{kind}-{ns}-{name}.yaml"));
        write_atomically(&file, &serde_saphyr::to_string(obj)?)?;
    }
    Ok(())
}

/// The cluster's ServiceCIDR object (what tells kproxy which ranges are Service addresses).
pub fn service_cidr_object(cidrs: &[String]) -> Value {
    json!({
        "apiVersion": "networking.k8s.io/v1",
        "kind": "ServiceCIDR",
        "metadata": {"name": "kubernetes"},
        "spec": {"cidrs": cidrs},
    })
}

/// Written then renamed, so a watching agent never reads half a file.
pub fn write_atomically(file: &Path, text: &str) -> Result<()> {
    let tmp = file.with_extension("tmp");
    std::fs::write(&tmp, text).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, file).with_context(|| format!("renaming to {}", file.display()))
}

/// The Node as the proxy sees it: name, labels, InternalIP addresses with the primary first.
fn node_object(case: &Case) -> Value {
    let addresses: Vec<Value> = case
        .node_ips()
        .iter()
        .map(|ip| json!({"type": "InternalIP", "address": ip.to_string()}))
        .collect();
    json!({
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": case.node.name, "labels": case.node.labels},
        "status": {"addresses": addresses},
    })
}

/// The KubeProxyConfiguration for `mode`. healthz and metrics listen on 127.0.0.1 ports that no flow
/// of the file uses (our config turns an empty address into the upstream default 0.0.0.0:10256,
/// which a flow might target; port 0 is invalid). Each file has its own node namespace, so the
/// ports cannot collide across files.
pub fn config(case: &Case, mode: &str) -> Result<Value> {
    let flows: Vec<&Flow> = case.steps.iter().flat_map(|s| &s.flows).collect();
    let used: BTreeSet<u16> = flows.iter().map(|f| f.port).collect();
    let free = |from: u16| (from..).find(|p| !used.contains(p)).unwrap_or(from);
    let healthz = free(10256);
    let metrics = free(10249);
    let c = &case.config;
    let mut iptables = json!({"masqueradeAll": c.masquerade_all});
    let mut nftables = json!({"masqueradeAll": c.masquerade_all});
    if let Some(bit) = case.masquerade_bit()? {
        iptables["masqueradeBit"] = json!(bit);
        nftables["masqueradeBit"] = json!(bit);
    }
    if let Some(l) = c.localhost_nodeports {
        iptables["localhostNodePorts"] = json!(l);
    }
    let cluster_cidr = c.cluster_cidr.map(|n| n.to_string()).unwrap_or_default();
    let mut cfg = base_config(mode, &cluster_cidr, healthz, metrics);
    cfg["nodePortAddresses"] = json!(c.node_port_addresses);
    cfg["iptables"] = iptables;
    cfg["nftables"] = nftables;
    Ok(cfg)
}

/// What every KubeProxyConfiguration of the bed has: the mode, pod traffic detected by cluster CIDR
/// (comma-separated, one per family), and healthz/metrics on loopback ports the caller chose.
pub fn base_config(mode: &str, cluster_cidr: &str, healthz: u16, metrics: u16) -> Value {
    json!({
        "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
        "kind": "KubeProxyConfiguration",
        "mode": mode,
        "clusterCIDR": cluster_cidr,
        "detectLocalMode": "ClusterCIDR",
        "healthzBindAddress": format!("127.0.0.1:{healthz}"),
        "metricsBindAddress": format!("127.0.0.1:{metrics}"),
    })
}

/// One scenario's kproxy: its files and, while running, its process.
pub struct Agent {
    pub bin: PathBuf,
    pub mode: String,
    pub dir: PathBuf,
    pub node_name: String,
    /// Flags after the common ones.
    pub extra_args: Vec<String>,
    proc: Option<NsProcess>,
}

impl Agent {
    /// Writes the configuration file into `dir` (manifests go to `dir/manifests`).
    pub fn prepare(bin: &Path, mode: &str, dir: &Path, case: &Case) -> Result<Agent> {
        let mut agent = Agent::new(bin, mode, dir, &case.node.name, &config(case, mode)?)?;
        // A case's objects stand for what an API server allocated; its NodePorts (upstream's
        // tests use 3001 and the like) are in whatever range that server had. kproxy's own
        // range check must not judge them: open it to every port.
        agent.extra_args = vec!["--service-node-port-range".into(), "1-65535".into()];
        Ok(agent)
    }

    /// Writes `config` as `dir/config.yaml`; the manifests are the caller's, in `dir/manifests`.
    pub fn new(
        bin: &Path,
        mode: &str,
        dir: &Path,
        node_name: &str,
        config: &Value,
    ) -> Result<Agent> {
        std::fs::create_dir_all(dir)?;
        write_atomically(&dir.join("config.yaml"), &serde_saphyr::to_string(config)?)?;
        Ok(Agent {
            bin: bin.to_path_buf(),
            mode: mode.to_string(),
            dir: dir.to_path_buf(),
            node_name: node_name.to_string(),
            extra_args: Vec::new(),
            proc: None,
        })
    }

    pub fn config_file(&self) -> PathBuf {
        self.dir.join("config.yaml")
    }

    pub fn manifests(&self) -> PathBuf {
        self.dir.join("manifests")
    }

    /// Starts kproxy in `node` and waits for [`READY_LINE`].
    pub async fn start(&mut self, node: &Netns) -> Result<()> {
        let args: Vec<String> = [
            "--proxy-mode",
            &self.mode,
            "--config",
            &self.config_file().to_string_lossy(),
            "--manifests",
            &self.manifests().to_string_lossy(),
            "--hostname-override",
            &self.node_name,
        ]
        .iter()
        .map(|s| s.to_string())
        .chain(self.extra_args.iter().cloned())
        .collect();
        let mut p = NsProcess::spawn(
            node,
            &self.bin.to_string_lossy(),
            &args,
            &[("RUST_LOG", "info")],
        )?;
        let ready = p.wait_for_line(READY_LINE, READY_DEADLINE).await;
        self.proc = Some(p);
        ready.context("kproxy did not become ready")
    }

    /// SIGTERM and wait for the exit (the rules stay behind, for the next start to adopt).
    pub async fn stop(&mut self) -> Result<()> {
        if let Some(mut p) = self.proc.take() {
            p.stop(STOP_GRACE).await.context("stopping kproxy")?;
        }
        Ok(())
    }

    /// The agent's output so far (for failure reports).
    pub fn output(&self) -> Vec<String> {
        self.proc.as_ref().map(|p| p.output()).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_and_node_follow_the_scenario() {
        let c = Case::parse(
            r#"
name: t
node: {name: n1, ips: [192.168.0.2, 192.168.1.2], primary_ip: 192.168.1.2, labels: {zone: a}}
config: {cluster_cidr: null, masquerade_all: true, masquerade_mark: '0x8000',
         localhost_nodeports: false, node_port_addresses: [127.0.0.0/8], service_cidrs: [172.30.0.0/16]}
steps:
- flows:
  - {name: a, source: 1.2.3.4, dest: 192.168.0.2, port: 10256, protocol: TCP, expect: {verdict: none}}
"#,
        )
        .unwrap();
        let cfg = config(&c, "iptables").unwrap();
        assert_eq!(cfg["mode"], "iptables");
        assert_eq!(cfg["clusterCIDR"], "");
        assert_eq!(cfg["iptables"]["masqueradeBit"], 15);
        assert_eq!(cfg["nftables"]["masqueradeAll"], true);
        assert_eq!(cfg["iptables"]["localhostNodePorts"], false);
        assert_eq!(cfg["nodePortAddresses"][0], "127.0.0.0/8");
        // A flow uses 10256: healthz moves off it.
        assert_eq!(cfg["healthzBindAddress"], "127.0.0.1:10257");

        let dir = std::env::temp_dir().join(crate::netns::unique_tag());
        write_manifests(&dir, &c, &[]).unwrap();
        let mut files: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
            .collect();
        files.sort();
        assert_eq!(
            files,
            [
                "000-node-cluster-n1.yaml",
                "001-servicecidr-cluster-kubernetes.yaml"
            ]
        );
        let node: Value =
            serde_saphyr::from_str(&std::fs::read_to_string(dir.join(&files[0])).unwrap()).unwrap();
        assert_eq!(node["status"]["addresses"][0]["address"], "192.168.1.2");
        assert_eq!(node["metadata"]["labels"]["zone"], "a");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
