//! Memory of the real agent: the `kproxy` binary, started with `--manifests` on a directory of
//! the benchmark's objects in a fresh network namespace, read from `/proc/PID` once its first sync
//! is done. The bench process only writes files and reads `/proc`, so none of its own memory is in
//! the figures (unlike (a), whose process also holds the generated objects).

use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::{Context, Result, bail};
use kproxy::source::Object;
use kproxy_testbed::{Netns, NsProcess, process::run_in};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::{apiserver::ApiServer, measure::Stopwatch, objects};

/// The agent's contract with the test bed: this line means its rules are in place.
const READY_LINE: &str = "initial sync complete";
const READY_DEADLINE: Duration = Duration::from_secs(600);
/// Objects per manifest file: the page size of kube-runtime's watcher lists, so the parser holds
/// about as much unparsed text at once as the API source would.
const PER_FILE: usize = 500;
/// After the first sync the agent keeps polling the manifests (every 0.5 s): RSS is sampled
/// across several polls so a transient read is visible as the spread between median and max.
const SAMPLES: u32 = 25;
const SAMPLE_EVERY: Duration = Duration::from_millis(200);

#[derive(Debug, Serialize, Deserialize)]
pub struct RssRun {
    /// `manifests` or `api`.
    pub source: String,
    pub services: u32,
    pub endpoints: u32,
    /// Bytes of the manifest files (compact JSON), which the manifest source keeps in memory to
    /// compare the next poll against.
    pub manifest_bytes: u64,
    /// From starting the process to its initial-sync log line (parse, tracker, first sync).
    pub ready_ms: f64,
    /// VmRSS after the first sync: median and max of the samples.
    pub rss_kib: u64,
    pub rss_max_kib: u64,
    /// VmHWM: the peak resident size, reached during the first sync or before it.
    pub hwm_kib: u64,
    /// Anonymous memory (heap, stacks) at the end, from smaps_rollup: RSS minus the mapped binary.
    pub anon_kib: u64,
}

/// The kproxy binary next to this one (both are built into target/release by the script).
pub fn default_bin() -> Result<PathBuf> {
    let exe = std::env::current_exe()?;
    Ok(exe.with_file_name("kproxy"))
}

/// Where the agent reads the objects from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Source {
    /// `--manifests DIR`.
    Manifests,
    /// The test API server (tests/apiserver) in the namespace, through kproxy's kube-rs watchers.
    Api,
}

pub async fn run(
    bin: &Path,
    (services, endpoints): (u32, u32),
    source: Source,
    env: &[String],
) -> Result<RssRun> {
    let env: Vec<(&str, &str)> = env
        .iter()
        .map(|kv| kv.split_once('=').context("--env wants KEY=VALUE"))
        .collect::<Result<_>>()?;
    let tag = format!("kpbench{}-rss{services}", std::process::id());
    let dir = std::env::temp_dir().join(&tag);
    let ns = Netns::create(&tag)?;
    // Netns::create leaves lo down: kproxy's health and metrics, and the API server, use it.
    run_in(&ns, "ip", &["link", "set", "lo", "up"]).await?;
    let (manifest_bytes, _api, source_args) = match source {
        Source::Manifests => {
            let bytes = write_manifests(&dir, services, endpoints)?;
            (
                bytes,
                None,
                vec!["--manifests".into(), dir.to_string_lossy().into()],
            )
        }
        Source::Api => {
            let (api, kubeconfig) = api_server(&ns, services, endpoints).await?;
            (0, Some(api), vec!["--kubeconfig".into(), kubeconfig])
        }
    };
    let result = measure(bin, &ns, &source_args, &env).await.map(|m| RssRun {
        source: format!("{source:?}").to_lowercase(),
        services,
        endpoints,
        manifest_bytes,
        ..m
    });
    // Delete the table now, so the namespace's teardown does no work behind the next run's back.
    let cleanup = run_in(
        &ns,
        &bin.to_string_lossy(),
        &["--cleanup", "--proxy-mode", "nftables"],
    )
    .await;
    let _ = std::fs::remove_dir_all(&dir);
    let r = result?;
    cleanup.context("kproxy --cleanup")?;
    Ok(r)
}

/// The test API server, listening on the namespace's 127.0.0.1 (a socket stays in the namespace
/// it was made in) and holding the objects; and a kubeconfig for it.
async fn api_server(ns: &Netns, services: u32, endpoints: u32) -> Result<(ApiServer, String)> {
    let listener = ns.run(|| Ok(std::net::TcpListener::bind("127.0.0.1:0")?))?;
    let api = ApiServer::start_on(listener).await;
    let Object::Node(node) = objects::node() else {
        bail!("objects::node is a Node");
    };
    api.apply(&*node);
    for i in 0..services {
        if let [Object::Service(s), Object::EndpointSlice(e)] = objects::service(i, endpoints, None)
        {
            api.apply(&*s);
            api.apply(&*e);
        }
    }
    let kubeconfig = api.kubeconfig().to_string_lossy().into_owned();
    Ok((api, kubeconfig))
}

async fn measure(
    bin: &Path,
    ns: &Netns,
    source_args: &[String],
    env: &[(&str, &str)],
) -> Result<RssRun> {
    let mut args: Vec<String> = source_args.to_vec();
    args.extend(
        [
            "--proxy-mode",
            "nftables",
            "--hostname-override",
            objects::NODE,
            "--healthz-bind-address",
            "127.0.0.1:10256",
            "--metrics-bind-address",
            "127.0.0.1:10249",
        ]
        .map(String::from),
    );
    let sw = Stopwatch::start();
    let env: Vec<(&str, &str)> = [("RUST_LOG", "info")]
        .into_iter()
        .chain(env.iter().copied())
        .collect();
    let mut p = NsProcess::spawn(ns, &bin.to_string_lossy(), &args, &env)?;
    p.wait_for_line(READY_LINE, READY_DEADLINE).await?;
    let ready = sw.elapsed();
    let pid = p.id().context("kproxy exited")?;
    let mut rss = Vec::new();
    for _ in 0..SAMPLES {
        tokio::time::sleep(SAMPLE_EVERY).await;
        rss.push(status_kib(pid, "VmRSS:")?);
    }
    let hwm_kib = status_kib(pid, "VmHWM:")?;
    let anon_kib = field_kib(
        &std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup"))?,
        "Anonymous:",
    )?;
    p.stop(Duration::from_secs(10)).await?;
    rss.sort_unstable();
    Ok(RssRun {
        source: String::new(),
        services: 0,
        endpoints: 0,
        manifest_bytes: 0,
        ready_ms: ready.as_secs_f64() * 1e3,
        rss_kib: rss[rss.len() / 2],
        rss_max_kib: *rss.last().expect("samples"),
        hwm_kib,
        anon_kib,
    })
}

fn status_kib(pid: u32, field: &str) -> Result<u64> {
    field_kib(
        &std::fs::read_to_string(format!("/proc/{pid}/status"))?,
        field,
    )
}

/// `Field:   1234 kB` -> 1234.
fn field_kib(text: &str, field: &str) -> Result<u64> {
    let line = text
        .lines()
        .find(|l| l.starts_with(field))
        .with_context(|| format!("no {field} in /proc"))?;
    let n = line[field.len()..].trim().trim_end_matches("kB").trim();
    Ok(n.parse()?)
}

/// The Node, then the Services and their slices as `List`s of [`PER_FILE`] items; returns the
/// bytes written.
pub fn write_manifests(dir: &Path, services: u32, endpoints: u32) -> Result<u64> {
    std::fs::create_dir_all(dir)?;
    let mut bytes = 0;
    let mut write = |name: String, v: &Value| -> Result<()> {
        let text = serde_json::to_vec(v)?;
        bytes += text.len() as u64;
        std::fs::write(dir.join(name), text).context("writing manifests")
    };
    write("node.json".into(), &to_json(&objects::node())?)?;
    let (mut svcs, mut slices) = (Vec::new(), Vec::new());
    for i in 0..services {
        let [s, e] = objects::service(i, endpoints, None);
        svcs.push(to_json(&s)?);
        slices.push(to_json(&e)?);
    }
    for (what, items) in [("services", svcs), ("slices", slices)] {
        for (n, chunk) in items.chunks(PER_FILE).enumerate() {
            let list = json!({"apiVersion": "v1", "kind": "List", "items": chunk});
            write(format!("{what}-{n:04}.json"), &list)?;
        }
    }
    if bytes == 0 {
        bail!("no manifests written");
    }
    Ok(bytes)
}

fn to_json(o: &Object) -> Result<Value> {
    Ok(match o {
        Object::Service(s) => serde_json::to_value(&**s)?,
        Object::EndpointSlice(s) => serde_json::to_value(&**s)?,
        Object::Node(n) => serde_json::to_value(&**n)?,
        Object::ServiceCidr(c) => serde_json::to_value(&**c)?,
    })
}
