//! A network namespace and a kproxy agent inside it, for tests that need the real kernel.

use std::{
    io::{BufRead, BufReader},
    process::{Child, Command, Stdio},
    sync::mpsc,
    time::Duration,
};

/// A network namespace made for one test (node address 192.168.50.2 on lo), removed on drop.
pub struct Netns(pub String);

impl Netns {
    pub fn new(tag: &str) -> Self {
        let name = format!("kproxy-{tag}-{}", std::process::id());
        assert!(
            Command::new("ip")
                .args(["netns", "add", &name])
                .status()
                .unwrap()
                .success()
        );
        let ok = |args: &[&str]| {
            assert!(
                Command::new("ip")
                    .args(["-n", &name])
                    .args(args)
                    .status()
                    .unwrap()
                    .success()
            )
        };
        ok(&["link", "set", "lo", "up"]);
        ok(&["addr", "add", "192.168.50.2/32", "dev", "lo"]);
        Self(name)
    }

    pub fn run(&self, args: &[&str]) -> std::process::Output {
        Command::new("ip")
            .args(["netns", "exec", &self.0])
            .args(args)
            .output()
            .unwrap()
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

/// A running kproxy agent, killed on drop.
pub struct Agent(Child, Vec<String>);

impl Agent {
    /// Starts `args` in the namespace and waits (30 s deadline) for its first sync.
    pub fn start(ns: &Netns, args: &[&str]) -> Self {
        let mut child = Command::new("ip")
            .args(["netns", "exec", &ns.0])
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
