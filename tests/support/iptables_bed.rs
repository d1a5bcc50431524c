//! The test bed for the iptables mode's real-packet tests: the bed's node (192.168.0.2) with
//! two endpoint pods and a client pod, an external client, and the real kproxy binary in
//! iptables mode on one backend (`--iptables-backend nft|legacy`), fed manifests from a
//! directory the test rewrites. Needs root; [`IptBed::new`] says so and returns `None` without.
#![allow(dead_code)]

use std::{
    net::{IpAddr, SocketAddr},
    path::PathBuf,
    process::Output,
    time::Duration,
};

use kproxy_testbed::{
    NsProcess, Outcome, TestBed, Where, conformance::agent::write_atomically, server::Proto,
};
use serde_json::{Value, json};
use tokio::time::Instant;

pub const BIN: &str = env!("CARGO_BIN_EXE_kproxy");
pub const NODE: &str = "node-a";
pub const NODE_IP: &str = "192.168.0.2";
/// Endpoint pods on the node, each serving TCP 8080.
pub const EP1: &str = "10.244.1.10";
pub const EP2: &str = "10.244.1.11";
/// A pod that only connects (in the cluster CIDR: not masqueraded).
pub const CLIENT: &str = "10.244.1.20";
/// A client outside the cluster, on the node's LAN.
pub const EXTERNAL: &str = "203.0.113.2";
pub const METRICS: &str = "127.0.0.1:10249";
/// How long kproxy gets for its first sync.
const READY: Duration = Duration::from_secs(30);

pub fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

pub fn to(ip_: &str, port: u16) -> SocketAddr {
    SocketAddr::new(ip(ip_), port)
}

/// `default/<name>`: TCP port `http` 80 -> 8080 on `cluster_ip`, patched by `spec`.
pub fn service(name: &str, cluster_ip: &str, spec: Value) -> Value {
    let mut v = json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"clusterIP": cluster_ip, "clusterIPs": [cluster_ip], "ipFamilies": ["IPv4"],
                 "ports": [{"name": "http", "port": 80, "protocol": "TCP", "targetPort": 8080}]}
    });
    merge(&mut v["spec"], spec);
    v
}

/// The slice of `default/<svc>`: ready endpoints `(ip, node)` on port `http` 8080.
pub fn endpoints(svc: &str, eps: &[(&str, &str)]) -> Value {
    let eps: Vec<Value> = eps
        .iter()
        .map(|(ip, node)| json!({"addresses": [ip], "conditions": {"ready": true, "serving": true}, "nodeName": node}))
        .collect();
    json!({
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": format!("{svc}-1"), "namespace": "default",
                     "labels": {"kubernetes.io/service-name": svc}},
        "addressType": "IPv4",
        "endpoints": eps,
        "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}]
    })
}

fn merge(base: &mut Value, patch: Value) {
    match (base, patch) {
        (Value::Object(b), Value::Object(p)) => {
            for (k, v) in p {
                merge(b.entry(k).or_insert(Value::Null), v);
            }
        }
        (b, p) => *b = p,
    }
}

/// Who answered, if one of the bed's servers did.
pub fn answered_by(o: &Outcome) -> Option<&str> {
    match o {
        Outcome::Answered { by, .. } => Some(by.as_str()),
        _ => None,
    }
}

pub struct IptBed {
    pub bed: TestBed,
    /// `nft` or `legacy`: kproxy's `--iptables-backend`, and the tools the test uses.
    pub backend: &'static str,
    /// Another `--iptables-backend` for kproxy (`auto`), the tools staying [`IptBed::backend`]'s.
    pub backend_flag: Option<&'static str>,
    dir: tempfile::TempDir,
    /// Extra environment for kproxy (and so for the iptables tools it runs).
    pub env: Vec<(String, String)>,
    /// `iptables.syncPeriod` of the config.
    pub sync_period: Duration,
    kproxy: Option<NsProcess>,
    /// What earlier runs of kproxy printed (a restarted agent's).
    earlier: Vec<String>,
}

impl IptBed {
    /// The bed with its pods (servers on EP1:8080 and EP2:8080) and the external client; kproxy
    /// is not started. `None` when not root.
    pub async fn new(backend: &'static str) -> Option<IptBed> {
        let root = std::fs::read_to_string("/proc/self/status")
            .is_ok_and(|s| s.lines().any(|l| l.starts_with("Uid:\t0\t")));
        if !root {
            eprintln!("skipped: needs root (network namespaces, iptables)");
            return None;
        }
        let mut bed = TestBed::new(&[ip(NODE_IP)]).await.unwrap();
        for pod in [EP1, EP2, CLIENT] {
            bed.add_pod(ip(pod)).await.unwrap();
        }
        for ep in [EP1, EP2] {
            let at = to(ep, 8080);
            bed.serve(Where::Pod(ip(ep)), Proto::Tcp, at, None)
                .await
                .unwrap();
        }
        bed.add_external(ip(EXTERNAL)).await.unwrap();
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("manifests")).unwrap();
        Some(IptBed {
            bed,
            backend,
            backend_flag: None,
            dir,
            env: vec![("RUST_LOG".into(), "info".into())],
            sync_period: Duration::from_secs(2),
            kproxy: None,
            earlier: Vec::new(),
        })
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Replaces the manifests with the Node and `objects` (each file written then renamed).
    pub fn write(&self, objects: &[Value]) {
        let dir = self.path("manifests");
        for e in std::fs::read_dir(&dir).unwrap().flatten() {
            std::fs::remove_file(e.path()).unwrap();
        }
        let node = json!({
            "apiVersion": "v1", "kind": "Node", "metadata": {"name": NODE},
            "status": {"addresses": [{"type": "InternalIP", "address": NODE_IP}]}
        });
        for (i, obj) in std::iter::once(&node).chain(objects).enumerate() {
            let file = dir.join(format!("{i:03}.json"));
            write_atomically(&file, &obj.to_string()).unwrap();
        }
    }

    /// Starts kproxy in the node and waits for its first sync (fails with its output).
    pub async fn start(&mut self) {
        let config = json!({
            "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
            "kind": "KubeProxyConfiguration",
            "mode": "iptables",
            "clusterCIDR": "10.244.0.0/16",
            "detectLocalMode": "ClusterCIDR",
            "healthzBindAddress": "127.0.0.1:10256",
            "metricsBindAddress": METRICS,
            "iptables": {"syncPeriod": format!("{}ms", self.sync_period.as_millis()),
                         "minSyncPeriod": "0s"},
        });
        let cfg = self.path("config.json");
        std::fs::write(&cfg, config.to_string()).unwrap();
        let args: Vec<String> = [
            "--config",
            &cfg.to_string_lossy(),
            "--manifests",
            &self.path("manifests").to_string_lossy(),
            "--hostname-override",
            NODE,
            "--iptables-backend",
            self.backend_flag.unwrap_or(self.backend),
        ]
        .map(String::from)
        .to_vec();
        let env: Vec<(&str, &str)> = self
            .env
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let mut p = NsProcess::spawn(&self.bed.node, BIN, &args, &env).unwrap();
        let ready = p.wait_for_line("initial sync complete", READY).await;
        if let Err(e) = ready {
            panic!("kproxy ({} backend) did not start: {e:#}", self.backend);
        }
        self.kproxy = Some(p);
    }

    /// SIGTERM and wait for the exit: the rules stay behind.
    pub async fn stop(&mut self) {
        if let Some(mut p) = self.kproxy.take() {
            let status = p.stop(Duration::from_secs(10)).await;
            self.earlier.extend(p.output());
            status.unwrap();
        }
    }

    pub fn pid(&self) -> u32 {
        self.kproxy
            .as_ref()
            .and_then(NsProcess::id)
            .expect("running")
    }

    /// Lines the running kproxy printed (not an earlier run's).
    pub fn lines(&self) -> Vec<String> {
        self.kproxy
            .as_ref()
            .map(NsProcess::output)
            .unwrap_or_default()
    }

    /// Everything every run printed, for failure messages.
    pub fn output(&self) -> String {
        let mut all = self.earlier.clone();
        all.extend(self.lines());
        all.join("\n")
    }

    /// Panics with `what` and kproxy's output (what explains a failure here).
    pub fn fail(&self, what: &str) -> ! {
        panic!(
            "[{} backend] {what}\nkproxy output:\n{}",
            self.backend,
            self.output()
        )
    }

    /// `iptables-<backend> ARGS` in the node.
    pub fn ipt(&self, args: &[&str]) -> Output {
        self.ipt_of(self.backend, args)
    }

    /// `iptables-<backend> ARGS` in the node, for either backend.
    pub fn ipt_of(&self, backend: &str, args: &[&str]) -> Output {
        let tool = format!("iptables-{backend}");
        let mut all = vec![tool.as_str()];
        all.extend_from_slice(args);
        self.bed.node.try_exec(&all)
    }

    /// [`IptBed::ipt`], asserting success; its standard output.
    pub fn ipt_ok(&self, args: &[&str]) -> String {
        let out = self.ipt(args);
        if !out.status.success() {
            self.fail(&format!(
                "iptables {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `iptables-<backend>-restore` of `input` in the node, with or without `--noflush`.
    pub fn restore(&self, input: &str, noflush: bool) {
        self.restore_of(self.backend, input, noflush)
    }

    /// [`IptBed::restore`] with either backend's tool.
    pub fn restore_of(&self, backend: &str, input: &str, noflush: bool) {
        use std::io::Write;
        let tool = format!("iptables-{backend}-restore");
        let mut cmd = std::process::Command::new("ip");
        cmd.args(["netns", "exec", self.bed.node.name(), &tool]);
        if noflush {
            cmd.arg("--noflush");
        }
        let mut child = cmd.stdin(std::process::Stdio::piped()).spawn().unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(input.as_bytes())
            .unwrap();
        assert!(child.wait().unwrap().success(), "{tool} of {input}");
    }

    /// The names of the chains (`-N` lines) of `table`.
    pub fn chains(&self, table: &str) -> Vec<String> {
        let out = self.ipt_ok(&["-t", table, "-S"]);
        let mut names: Vec<String> = out
            .lines()
            .filter_map(|l| l.strip_prefix("-N "))
            .map(str::to_owned)
            .collect();
        names.sort();
        names
    }

    /// One TCP connection from `source` (a pod, the external client, the node) to `dest`.
    pub async fn probe(&self, source: &str, dest: SocketAddr) -> Outcome {
        self.bed
            .probe(Proto::Tcp, ip(source), dest)
            .await
            .unwrap_or_else(|e| self.fail(&format!("probe: {e:#}")))
    }

    /// The value of one series on kproxy's /metrics (`name{labels}` exactly as printed); 0
    /// when it is not there.
    pub fn metric(&self, series: &str) -> f64 {
        let url = format!("http://{METRICS}/metrics");
        let out = self
            .bed
            .node
            .try_exec(&["curl", "-sf", "--max-time", "5", &url]);
        let body = String::from_utf8_lossy(&out.stdout);
        let key = format!("{series} ");
        (body.lines())
            .find_map(|l| l.strip_prefix(&key))
            .map_or(0.0, |v| v.trim().parse().unwrap())
    }

    /// Waits until `done` holds; fails with `what`, the last state and kproxy's output after
    /// `within`. Polled every 20 ms: the condition, never the sleep, is what is waited for.
    pub async fn wait_for(&self, what: &str, within: Duration, done: impl AsyncFn() -> bool) {
        let deadline = Instant::now() + within;
        while !done().await {
            if Instant::now() > deadline {
                self.fail(&format!("not within {within:?}: {what}"));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits until the running kproxy printed, after its line `from`, a line with every needle.
    pub async fn wait_for_line(&self, from: usize, needles: &[&str], within: Duration) -> String {
        let found = || {
            let lines = self.lines();
            lines
                .iter()
                .skip(from)
                .find(|l| needles.iter().all(|n| l.contains(n)))
                .cloned()
        };
        let what = format!("a log line with {needles:?}");
        self.wait_for(&what, within, async || found().is_some())
            .await;
        found().unwrap()
    }
}
