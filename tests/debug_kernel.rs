//! `kproxy debug dump --kernel` against a real kernel table: the agent programs the example
//! cluster in a network namespace made here, the dump finds no difference (with the agent's
//! flags repeated, and without them, from the agent's record), Services added and removed while
//! the agent runs show no difference either, and after the table is changed behind kproxy's
//! back the dump names the difference under the Service it concerns and exits 3.
//! Needs root (network namespaces, nftables).

mod support;

use std::{
    io::{BufRead, BufReader},
    path::Path,
    process::{Child, Command, Stdio},
    sync::mpsc,
    time::Duration,
};

use support::netns::{Netns, agent_config};

const BIN: &str = env!("CARGO_BIN_EXE_kproxy");
const EXAMPLES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/examples");
const RUNTIME_ENV: &str = "KPROXY_RUNTIME_DIR";

fn config(dir: &Path) -> String {
    agent_config(dir, "")
}

/// A kproxy agent in a namespace, its record under `runtime`; killed on drop (so its record
/// stays behind, as after a crash). Its log lines say when it synced.
struct Agent {
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl Agent {
    /// Starts the agent with `args` and waits (30 s deadline) for its first sync.
    fn start(ns: &Netns, runtime: &Path, args: &[&str]) -> Self {
        let mut child = Command::new("ip")
            .args(["netns", "exec", ns.name(), BIN])
            .args(args)
            .env("RUST_LOG", "info")
            .env(RUNTIME_ENV, runtime)
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let agent = Agent { child, lines };
        assert!(
            agent.wait_for("initial sync complete", Duration::from_secs(30)),
            "kproxy syncs within 30 s"
        );
        agent
    }

    /// Waits up to `timeout` for a log line containing `needle`.
    fn wait_for(&self, needle: &str, timeout: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) if line.contains(needle) => return true,
                Ok(_) => {}
                Err(_) => return false,
            }
        }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One run of `kproxy debug dump --kernel ARGS` in the namespace.
struct Dump {
    code: Option<i32>,
    text: String,
    stderr: String,
}

fn dump(ns: &Netns, runtime: &Path, args: &[&str]) -> Dump {
    let out = Command::new("ip")
        .args(["netns", "exec", ns.name(), BIN, "debug", "dump", "--kernel"])
        .args(args)
        .env(RUNTIME_ENV, runtime)
        .output()
        .unwrap();
    Dump {
        code: out.status.code(),
        text: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// The dump exited 0 and shows no difference in either family.
fn assert_matches(d: &Dump) {
    assert_eq!(d.code, Some(0), "{}\n{}", d.stderr, d.text);
    assert!(d.text.contains("kernel: table ip kproxy"), "{}", d.text);
    assert_eq!(
        d.text
            .matches("the kernel matches the desired state")
            .count(),
        2,
        "{}",
        d.text
    );
    assert!(!d.text.contains("DIFFERENCE"), "{}", d.text);
}

#[test]
fn the_kernel_view_matches_after_a_sync_and_names_a_difference_under_its_service() {
    let ns = Netns::new("dk");
    let dir = tempfile::tempdir().unwrap();
    // The agent repairs drift itself, after minSyncPeriod: a long one keeps the difference made
    // below in place while the dump looks at it.
    let cfg = agent_config(
        dir.path(),
        "nftables:\n  syncPeriod: 1h\n  minSyncPeriod: 10m\n",
    );
    let flags = [
        "--config",
        &cfg,
        "--manifests",
        EXAMPLES,
        "--hostname-override",
        "node-a",
    ];
    let _agent = Agent::start(&ns, dir.path(), &flags);

    let d = dump(&ns, dir.path(), &flags);
    assert_matches(&d);
    assert!(
        d.text
            .contains("10.96.0.20:80/tcp -> endpoints 10.244.1.10:8080, 10.244.2.10:8080"),
        "{}",
        d.text
    );

    let del = ns.run(&[
        "nft",
        "delete",
        "element",
        "ip",
        "kproxy",
        "service-ips",
        "{ 10.96.0.20 . tcp . 80 }",
    ]);
    assert!(del.status.success());
    let d = dump(&ns, dir.path(), &flags);
    assert_eq!(d.code, Some(3), "a difference exits 3: {}", d.stderr);
    let web = d
        .text
        .split("shop/web:http/TCP")
        .nth(2)
        .expect("the kernel section lists shop/web");
    let web = web.split("shop/web:metrics").next().unwrap();
    assert!(web.contains("10.96.0.20:80/tcp -> (no entry)"), "{web}");
    assert!(
        web.contains("DIFFERENCE: 10.96.0.20:80/tcp missing from the kernel"),
        "{web}"
    );
    assert_eq!(d.text.matches("DIFFERENCE").count(), 1, "{}", d.text);
    assert_eq!(
        d.text
            .matches("the kernel matches the desired state")
            .count(),
        1,
        "IPv6 still matches: {}",
        d.text
    );
}

/// Without flags the dump uses the running agent's configuration and manifests; a killed
/// agent's record is not trusted, and then the dump says what it needs.
#[test]
fn the_dump_reads_the_running_agents_settings() {
    let ns = Netns::new("dka");
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path());
    let flags = [
        "--config",
        &cfg,
        "--manifests",
        EXAMPLES,
        "--hostname-override",
        "node-a",
    ];
    let agent = Agent::start(&ns, dir.path(), &flags);
    let d = dump(&ns, dir.path(), &[]);
    assert_matches(&d);
    assert!(d.text.contains("node node-a  zone zone-a"), "{}", d.text);

    let json = dump(&ns, dir.path(), &["-o", "json"]);
    assert_eq!(json.code, Some(0), "{}", json.stderr);
    let v: serde_json::Value = serde_json::from_str(&json.text).unwrap();
    assert_eq!(v["kernel"]["matches"], true, "{}", json.text);
    assert!(v["kernel"]["destinations"].as_array().unwrap().len() > 10);

    drop(agent);
    let d = dump(&ns, dir.path(), &[]);
    assert_eq!(d.code, Some(1), "{}", d.text);
    assert!(d.stderr.contains("needs --manifests PATH"), "{}", d.stderr);
}

const ADDED: &str = "apiVersion: v1\nkind: Service\nmetadata: {name: added-np, namespace: shop}\n\
spec:\n  type: NodePort\n  clusterIP: 10.96.0.95\n  clusterIPs: [10.96.0.95]\n  selector: {app: added}\n  ports:\n  \
- {name: http, port: 80, protocol: TCP, targetPort: 8080, nodePort: 30095}\n---\n\
apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\n\
metadata: {name: added-np-1, namespace: shop, labels: {kubernetes.io/service-name: added-np}}\n\
addressType: IPv4\nports:\n- {name: http, port: 8080, protocol: TCP}\nendpoints:\n\
- {addresses: [10.244.1.95], conditions: {ready: true}, nodeName: node-a}\n\
- {addresses: [10.244.2.95], conditions: {ready: true}, nodeName: node-b}\n---\n\
apiVersion: v1\nkind: Service\nmetadata: {name: added-ip, namespace: shop}\n\
spec:\n  clusterIP: 10.96.0.96\n  clusterIPs: [10.96.0.96]\n  selector: {app: added-ip}\n  ports:\n  \
- {name: http, port: 80, protocol: TCP, targetPort: 8080}\n---\n\
apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\n\
metadata: {name: added-ip-1, namespace: shop, labels: {kubernetes.io/service-name: added-ip}}\n\
addressType: IPv4\nports:\n- {name: http, port: 8080, protocol: TCP}\nendpoints:\n\
- {addresses: [10.244.1.96], conditions: {ready: true}, nodeName: node-a}\n\
- {addresses: [10.244.2.96], conditions: {ready: true}, nodeName: node-b}\n\
- {addresses: [10.244.2.97], conditions: {ready: true}, nodeName: node-b}\n";

/// Services added and removed while the agent runs are applied by partial syncs, which give
/// slots and slot ids another layout than a fresh full sync: the dump still finds no difference.
#[test]
fn no_difference_after_services_are_added_and_removed() {
    let ns = Netns::new("dkc");
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path());
    let manifests = dir.path().join("manifests");
    std::fs::create_dir(&manifests).unwrap();
    for entry in std::fs::read_dir(EXAMPLES).unwrap() {
        let path = entry.unwrap().path();
        std::fs::copy(&path, manifests.join(path.file_name().unwrap())).unwrap();
    }
    let m = manifests.to_string_lossy().into_owned();
    let flags = [
        "--config",
        &cfg,
        "--manifests",
        &m,
        "--hostname-override",
        "node-a",
    ];
    let agent = Agent::start(&ns, dir.path(), &flags);
    assert_matches(&dump(&ns, dir.path(), &[]));

    // The NodePort Service holds the first slot id; the new NodePort Service takes it over.
    std::fs::remove_file(manifests.join("20-echo-nodeport.yaml")).unwrap();
    std::fs::remove_file(manifests.join("50-dns.yaml")).unwrap();
    std::fs::write(manifests.join("95-added.yaml"), ADDED).unwrap();
    let applied = |d: &Dump| {
        d.text
            .contains("node port 30095/tcp (IPv4) -> endpoints 10.244.1.95:8080, 10.244.2.95:8080")
            && d.text.contains("10.96.0.96:80/tcp -> endpoints")
            && !d.text.contains("kube-dns")
            && !d.text.contains("default/echo")
    };
    let mut last = dump(&ns, dir.path(), &[]);
    for _ in 0..30 {
        if applied(&last) {
            break;
        }
        agent.wait_for("synced", Duration::from_secs(1));
        last = dump(&ns, dir.path(), &[]);
    }
    assert!(
        applied(&last),
        "the agent applied the change: {}",
        last.text
    );
    assert_matches(&last);
}
