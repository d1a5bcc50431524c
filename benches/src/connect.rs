//! Benchmark (c): first-packet TCP connect latency through a ClusterIP, against a direct connect to
//! the same endpoint in the same run. Topology (kproxy-testbed): client pod netns -> node netns
//! (kproxy's rules, loaded by the mode under test from the tracker's state) -> endpoint pod netns.

use std::{
    net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream},
    time::Duration,
};

use anyhow::{Context, Result, bail};
use kproxy::{
    desired::{DetectLocal, ProxyOptions},
    tracker::Tracker,
};
use kproxy_modes::Mode;
use kproxy_testbed::{Proto, TestBed, Where};
use serde::{Deserialize, Serialize};

use crate::{
    measure::{ms, percentile, timed, us},
    objects,
};

const CLIENT: Ipv4Addr = Ipv4Addr::new(10, 200, 0, 1);
const SERVER: Ipv4Addr = Ipv4Addr::new(10, 200, 0, 2);
/// Connections per path thrown away before measuring (ARP, route and socket caches).
const WARMUP: u32 = 50;

#[derive(Debug, Serialize, Deserialize)]
pub struct ConnectRow {
    pub services: u32,
    pub sync_ms: f64,
    pub cluster_p50_us: f64,
    pub cluster_p99_us: f64,
    pub direct_p50_us: f64,
    pub direct_p99_us: f64,
    /// Where the probed Service's dispatch rule sits, when the mode can say (iptables).
    #[serde(default)]
    pub probed: Option<String>,
}

/// One blocking connect, timed to its completion (the SYN-ACK), then closed.
fn connect_once(to: SocketAddr) -> Result<Duration> {
    let (res, took) = timed(|| TcpStream::connect(to));
    res.with_context(|| format!("connect {to}"))?;
    Ok(took)
}

/// `n` rounds of one ClusterIP and one direct connect, in alternating order so that whatever the
/// noisy machine does hits both paths alike. Returns (cluster, direct) latencies.
fn rounds(vip: SocketAddr, direct: SocketAddr, n: u32) -> Result<(Vec<Duration>, Vec<Duration>)> {
    let (mut c, mut d) = (Vec::new(), Vec::new());
    for k in 0..WARMUP + n {
        let (tc, td) = if k % 2 == 0 {
            let tc = connect_once(vip)?;
            (tc, connect_once(direct)?)
        } else {
            let td = connect_once(direct)?;
            (connect_once(vip)?, td)
        };
        if k >= WARMUP {
            c.push(tc);
            d.push(td);
        }
    }
    Ok((c, d))
}

/// How a connect run makes, inspects and removes the mode under test; each gets the node
/// namespace's name.
pub struct Under<B, W, C> {
    /// Builds the mode for the node namespace.
    pub build: B,
    /// Where the probed Service's rule sits (cluster IP given), for modes whose dispatch is a list.
    pub where_probed: W,
    /// Removes what the mode programmed, before the namespaces go.
    pub cleanup: C,
}

/// Connects through the mode `under` makes, at each size.
pub async fn run<B, W, C>(
    sizes: &[u32],
    connections: u32,
    under: Under<B, W, C>,
) -> Result<Vec<ConnectRow>>
where
    B: FnOnce(&str) -> Result<Box<dyn Mode>>,
    W: Fn(&str, Ipv4Addr) -> Option<String>,
    C: FnOnce(Box<dyn Mode>, &str) -> Result<()>,
{
    let node_ip: IpAddr = objects::NODE_IP.parse()?;
    let mut bed = TestBed::new(&[node_ip]).await?;
    bed.add_pod(CLIENT.into()).await?;
    bed.add_pod(SERVER.into()).await?;
    let server = SocketAddr::new(SERVER.into(), 8080);
    bed.serve(Where::Pod(SERVER.into()), Proto::Tcp, server, None)
        .await?;
    let mut mode = (under.build)(bed.node.name())?;
    let mut out = Vec::new();
    for &n in sizes {
        // The probed Service is the last one; its only endpoint is the server. Every other
        // Service has five (unreachable) endpoints.
        let probed = n - 1;
        let lists = objects::initial_lists(
            (0..n)
                .map(|i| objects::service(i, 5, (i == probed).then_some(&[SERVER][..])))
                .collect(),
        );
        let mut opts = ProxyOptions::for_node(objects::NODE);
        // Pod traffic (10.200/16) to a ClusterIP is not masqueraded, as in a cluster whose
        // clusterCIDR is configured: the common pod-to-Service path.
        opts.detect_local = DetectLocal::ClusterCidr(vec!["10.200.0.0/16".parse()?]);
        let mut tracker = Tracker::new(opts);
        for ev in lists {
            tracker.apply(ev);
        }
        let (state, changes) = tracker.update().context("tracker not ready")?;
        let (stats, took) = timed(|| mode.sync(state, &changes));
        if stats?.service_ports != n as usize {
            bail!("expected {n} Service ports");
        }
        let vip = SocketAddr::new(objects::cluster_ip(probed).into(), 80);
        let client = bed.pod(CLIENT.into()).context("client pod")?;
        let (mut c, mut d) = client
            .run_async(move || rounds(vip, server, connections))
            .await?;
        let row = ConnectRow {
            services: n,
            sync_ms: ms(took),
            cluster_p50_us: us(percentile(&mut c, 50)),
            cluster_p99_us: us(percentile(&mut c, 99)),
            direct_p50_us: us(percentile(&mut d, 50)),
            direct_p99_us: us(percentile(&mut d, 99)),
            probed: (under.where_probed)(bed.node.name(), objects::cluster_ip(probed)),
        };
        eprintln!("connect: {row:?}");
        out.push(row);
    }
    (under.cleanup)(mode, bed.node.name())?;
    Ok(out)
}
