//! A network namespace and a kproxy agent inside it, for tests that need the real kernel.

use std::{
    io::{BufRead, BufReader},
    process::{Child, Command, Stdio},
    sync::mpsc,
    time::Duration,
};

/// A network namespace made for one test (node address 192.168.50.2 on lo), removed on drop:
/// the test bed's namespace with the node's address.
pub struct Netns(kproxy_testbed::netns::Netns);

impl Netns {
    pub fn new(tag: &str) -> Self {
        let name = format!("{}-{tag}", kproxy_testbed::netns::unique_tag());
        let ns = kproxy_testbed::netns::Netns::create(&name).expect("creating a network namespace");
        ns.exec(&["ip", "link", "set", "lo", "up"]);
        ns.exec(&["ip", "addr", "add", "192.168.50.2/32", "dev", "lo"]);
        Self(ns)
    }

    pub fn name(&self) -> &str {
        self.0.name()
    }

    pub fn run(&self, args: &[&str]) -> std::process::Output {
        self.0.try_exec(args)
    }
}

/// A running kproxy agent, killed on drop.
pub struct Agent(Child, Vec<String>);

impl Agent {
    /// Starts `args` in the namespace and waits (30 s deadline) for its first sync.
    pub fn start(ns: &Netns, args: &[&str]) -> Self {
        let mut child = Command::new("ip")
            .args(["netns", "exec", ns.name()])
            .args(args)
            .env("RUST_LOG", "info")
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let mut agent = Agent(child, Vec::new());
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        loop {
            let line = rx
                .recv_timeout(Duration::from_secs(30))
                .expect("kproxy syncs within 30 s");
            let done = line.contains("initial sync complete");
            agent.1.push(line);
            if done {
                return agent;
            }
        }
    }

    /// The agent's pid (`ip netns exec` and `env` exec it, so it is the child's).
    pub fn pid(&self) -> u32 {
        self.0.id()
    }

    /// What the agent logged up to its first sync.
    pub fn log(&self) -> String {
        self.1.join("\n")
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Writes an nftables-mode KubeProxyConfiguration for an agent in a test namespace (cluster CIDR
/// 10.244.0.0/16, health and metrics on loopback) into `dir`, with `extra` YAML appended;
/// returns its path.
pub fn agent_config(dir: &std::path::Path, extra: &str) -> String {
    let path = dir.join("config.yaml");
    let base = "apiVersion: kubeproxy.config.k8s.io/v1alpha1\nkind: KubeProxyConfiguration\nmode: nftables\n\
         clusterCIDR: 10.244.0.0/16\nhealthzBindAddress: 127.0.0.1:10256\nmetricsBindAddress: 127.0.0.1:10249\n";
    std::fs::write(&path, format!("{base}{extra}")).expect("writing the config");
    path.to_string_lossy().into_owned()
}
