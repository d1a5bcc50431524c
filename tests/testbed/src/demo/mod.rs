//! `kproxy-demo`: the example cluster (deploy/examples) on a test bed with kproxy in the node
//! namespace, real traffic to every Service, the desired-state dump, and a live EndpointSlice change.
//! Each step prints a `== N. title ==` header and ends with `step N: ok` or `step N: FAILED: why`;
//! the last line is `demo: all steps passed` or `demo: FAILED (steps ...)`.

pub mod cluster;
pub mod table;
pub mod traffic;
pub mod update;

use crate::bed::{TestBed, Where};
use crate::conformance::agent::{self, Agent};
use crate::netns::unique_tag;
use anyhow::{Context, Result, anyhow};
use cluster::Cluster;
use std::io::Write;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use traffic::{Clients, Path as VipPath};

pub const NODE: &str = "node-a";
pub const CLUSTER_CIDR: &str = "10.244.0.0/16,fd00:244::/32";
pub const SERVICE_CIDRS: [&str; 2] = ["10.96.0.0/16", "fd00:96::/112"];
/// Clients: pods on node-a outside every example endpoint, and the example's external client.
pub const CLIENT_V4: &str = "10.244.1.200";
pub const CLIENT_V6: &str = "fd00:244:1::200";
pub const EXTERNAL: &str = "192.168.50.100";
/// The Service step 4 scales down.
pub const UPDATED_SERVICE: &str = "shop/web";

#[derive(Clone, Debug)]
pub struct Options {
    pub mode: String,
    pub kproxy_bin: PathBuf,
    pub examples: PathBuf,
}

/// The demo's files (config, manifests copy), removed on Drop: also on failure and on Ctrl-C, when
/// the future owning it is dropped.
struct WorkDir(PathBuf);

impl Drop for WorkDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn ip(s: &str) -> IpAddr {
    s.parse().expect("constant address")
}

/// Runs every step, printing to `out`; Ok(true) when all passed.
pub async fn run(opts: &Options, out: &mut dyn Write) -> Result<bool> {
    let work = WorkDir(std::env::temp_dir().join(format!("{}-demo", unique_tag())));
    let manifests = work.0.join("manifests");
    copy_examples(&opts.examples, &manifests)?;
    let cluster = Cluster::load(&manifests, NODE)?;
    // Upstream's default ports, but on loopback: no probed VIP uses them, and the node namespace is
    // the demo's own, so nothing else listens there.
    let config = agent::base_config(&opts.mode, CLUSTER_CIDR, 10256, 10249);
    let mut agent = Agent::new(&opts.kproxy_bin, &opts.mode, &work.0, NODE, &config)?;
    let cidrs: Vec<String> = SERVICE_CIDRS.iter().map(|s| s.to_string()).collect();
    let cidr_file = manifests.join("01-service-cidr.yaml");
    agent::write_atomically(
        &cidr_file,
        &serde_saphyr::to_string(&agent::service_cidr_object(&cidrs))?,
    )?;

    // A failed step is reported and the demo goes on with what still makes sense (the dump needs
    // no bed), so one run shows as much as it can.
    let mut failed: Vec<String> = Vec::new();
    let mut step = |n: u32, r: Result<()>, out: &mut dyn Write| -> Result<()> {
        match r {
            Ok(()) => writeln!(out, "step {n}: ok")?,
            Err(e) => {
                writeln!(out, "step {n}: FAILED: {e:#}")?;
                failed.push(n.to_string());
            }
        }
        writeln!(out)?;
        out.flush()?;
        Ok(())
    };

    writeln!(
        out,
        "== 1. test bed and kproxy --proxy-mode {} ==",
        opts.mode
    )?;
    let clients = Clients {
        pods: vec![ip(CLIENT_V4), ip(CLIENT_V6)],
        external: ip(EXTERNAL),
    };
    let bed = start(&cluster, &clients, &mut agent, out).await;
    let (bed, r) = match bed {
        Ok(b) => (Some(b), Ok(())),
        Err(e) => (None, Err(e)),
    };
    step(1, r, out)?;

    if let Some(bed) = &bed {
        writeln!(out, "== 2. traffic to every Service ==")?;
        let relays = opts.mode == "userspace";
        let r = traffic_step(bed, &cluster, &clients, relays, out).await;
        step(2, r, out)?;
    }

    writeln!(out, "== 3. kproxy debug dump ==")?;
    let r = dump(&agent, &manifests, out).await;
    step(3, r, out)?;

    if let Some(bed) = &bed {
        writeln!(
            out,
            "== 4. live update: {UPDATED_SERVICE} scaled to one endpoint =="
        )?;
        let r = update_step(bed, &cluster, &clients, &manifests, out).await;
        step(4, r, out)?;
    }

    // kproxy goes before the namespaces; on an early return or Ctrl-C, Drop does both.
    if let Err(e) = agent.stop().await {
        writeln!(out, "stopping kproxy: {e:#}")?;
        failed.push("stop".to_string());
    }
    drop(bed);
    if failed.is_empty() {
        writeln!(out, "demo: all steps passed")?;
    } else {
        writeln!(out, "demo: FAILED (steps {})", failed.join(", "))?;
    }
    Ok(failed.is_empty())
}

fn copy_examples(from: &Path, to: &Path) -> Result<()> {
    std::fs::create_dir_all(to)?;
    for e in std::fs::read_dir(from).with_context(|| format!("reading {}", from.display()))? {
        let p = e?.path();
        if p.extension().is_some_and(|x| x == "yaml" || x == "yml") {
            std::fs::copy(&p, to.join(p.file_name().unwrap_or_default()))?;
        }
    }
    Ok(())
}

/// Builds the bed (node with node-a's addresses, a pod per local endpoint, remote endpoints, the
/// clients, a server on every endpoint port) and starts kproxy in the node.
async fn start(
    c: &Cluster,
    clients: &Clients,
    agent: &mut Agent,
    out: &mut dyn Write,
) -> Result<TestBed> {
    let mut bed = TestBed::new(&c.node_ips)
        .await
        .context("building the test bed")?;
    let (mut pods, mut remote, mut servers) = (0, 0, 0);
    for (addr, host) in &c.hosts {
        let at = if host.local {
            bed.add_pod(*addr).await?;
            pods += 1;
            Where::Pod(*addr)
        } else {
            bed.add_remote_endpoint(*addr).await?;
            remote += 1;
            Where::Remote
        };
        for (proto, port) in &host.ports {
            if proto.available() {
                bed.serve(at, *proto, SocketAddr::new(*addr, *port), None)
                    .await?;
                servers += 1;
            }
        }
    }
    for p in &clients.pods {
        bed.add_pod(*p).await?;
    }
    bed.add_external(clients.external).await?;
    let node_ips: Vec<String> = c.node_ips.iter().map(IpAddr::to_string).collect();
    writeln!(
        out,
        "node {NODE} ({}), {pods} endpoint pods, {remote} remote endpoints, {servers} servers",
        node_ips.join(", ")
    )?;
    let cl: Vec<String> = clients.pods.iter().map(IpAddr::to_string).collect();
    writeln!(
        out,
        "clients: pods {}, external {}",
        cl.join(", "),
        clients.external
    )?;
    writeln!(
        out,
        "starting {} (waiting for \"{}\")",
        agent.bin.display(),
        agent::READY_LINE
    )?;
    out.flush()?;
    agent.start(&bed.node).await?;
    writeln!(out, "kproxy is ready")?;
    Ok(bed)
}

async fn traffic_step(
    bed: &TestBed,
    c: &Cluster,
    clients: &Clients,
    relays: bool,
    out: &mut dyn Write,
) -> Result<()> {
    let node_addrs = bed.node_addresses().await?;
    let mut results = Vec::new();
    for t in traffic::targets(c, clients) {
        results.push(traffic::run_target(bed, &t, &node_addrs, relays).await?);
    }
    let header = [
        "SERVICE",
        "FROM",
        "TO",
        "ANSWERED BY",
        "BACKEND SAW",
        "NOTE",
    ];
    write!(out, "{}", table::render(&header, &traffic::rows(&results)))?;
    let bad: Vec<&str> = results
        .iter()
        .filter(|r| r.problem.is_some())
        .map(|r| r.target.label.as_str())
        .collect();
    writeln!(
        out,
        "{} of {} targets as expected",
        results.len() - bad.len(),
        results.len()
    )?;
    anyhow::ensure!(
        bad.is_empty(),
        "{} target(s) failed: {}",
        bad.len(),
        bad.join(", ")
    );
    Ok(())
}

async fn dump(agent: &Agent, manifests: &Path, out: &mut dyn Write) -> Result<()> {
    let o = tokio::process::Command::new(&agent.bin)
        .args(["debug", "dump", "--manifests"])
        .arg(manifests)
        .args(["--hostname-override", NODE, "--config"])
        .arg(agent.config_file())
        .output()
        .await
        .with_context(|| format!("running {}", agent.bin.display()))?;
    out.write_all(&o.stdout)?;
    anyhow::ensure!(
        o.status.success(),
        "kproxy debug dump: {}: {}",
        o.status,
        String::from_utf8_lossy(&o.stderr).trim()
    );
    Ok(())
}

async fn update_step(
    bed: &TestBed,
    c: &Cluster,
    clients: &Clients,
    manifests: &Path,
    out: &mut dyn Write,
) -> Result<()> {
    let targets = traffic::targets(c, clients);
    let t = targets
        .iter()
        .find(|t| t.svc.id == UPDATED_SERVICE && t.path == VipPath::ClusterIp)
        .ok_or_else(|| anyhow!("no ClusterIP target for {UPDATED_SERVICE}"))?;
    let before = update::sample(bed, t.proto, t.from, t.to, update::CONFIRM).await?;
    let removed = update::scale_to_one(manifests, UPDATED_SERVICE)?;
    let gone: Vec<String> = removed.iter().map(IpAddr::to_string).collect();
    writeln!(
        out,
        "removed endpoint(s) {} from the EndpointSlice file",
        gone.join(", ")
    )?;
    out.flush()?;
    let (after, took) = update::wait_for_update(bed, t.proto, t.from, t.to, &removed).await?;
    let rows = vec![
        vec!["before".into(), t.to.to_string(), update::describe(&before)],
        vec![
            format!("after ({:.1} s)", took.as_secs_f64()),
            t.to.to_string(),
            update::describe(&after),
        ],
    ];
    write!(
        out,
        "{}",
        table::render(&["WHEN", "TO", "ANSWERED BY"], &rows)
    )?;
    Ok(())
}
