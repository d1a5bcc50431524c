//! Runs scenario files: topology, kproxy, every flow as real packets, one line per flow.

use super::agent::{self, Agent};
use super::case::{Case, Expected, Flow, SourceKind};
use super::judge::{Verdict, judge};
use crate::bed::{TestBed, Where};
use crate::netns::unique_tag;
use crate::process::run_in;
use crate::server::{Proto, Server};
use anyhow::{Context, Result};
use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};

#[derive(Clone, Debug)]
pub struct Options {
    pub mode: String,
    pub kproxy_bin: PathBuf,
    /// The mode's known differences from upstream (see `differences`).
    pub differences: Vec<super::differences::Difference>,
    /// More kproxy flags (`--kproxy-arg`), after the runner's own: e.g. an iptables backend.
    pub kproxy_args: Vec<String>,
}

impl Options {
    /// Whether the mode relays connections in user space (its endpoints see the node).
    pub fn relays(&self) -> bool {
        self.mode == "userspace"
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Tally {
    pub passed: usize,
    pub failed: usize,
    pub skipped: usize,
    /// Flows judged [`Verdict::ModeDifference`] (said only when there are some).
    pub mode_differences: usize,
}

impl Tally {
    pub fn closing_line(&self) -> String {
        let line = format!(
            "conformance: {} passed, {} failed, {} skipped",
            self.passed, self.failed, self.skipped
        );
        match self.mode_differences {
            0 => line,
            n => format!("{line}, {n} mode differences"),
        }
    }

    fn add(&mut self, other: Tally) {
        self.passed += other.passed;
        self.failed += other.failed;
        self.skipped += other.skipped;
        self.mode_differences += other.mode_differences;
    }
}

/// Runs every file in turn, printing flow lines and the closing line to `out`.
pub async fn run_files(files: &[PathBuf], opts: &Options, out: &mut dyn Write) -> Result<Tally> {
    let mut total = Tally::default();
    for f in files {
        total.add(run_file(f, opts, out).await?);
    }
    writeln!(out, "{}", total.closing_line())?;
    Ok(total)
}

fn wildcard(like: IpAddr, port: u16) -> SocketAddr {
    match like {
        IpAddr::V4(_) => SocketAddr::new(Ipv4Addr::UNSPECIFIED.into(), port),
        IpAddr::V6(_) => SocketAddr::new(Ipv6Addr::UNSPECIFIED.into(), port),
    }
}

/// Prints one flow's line and counts it.
struct Reporter<'a> {
    file: String,
    out: &'a mut dyn Write,
    tally: Tally,
    reported: BTreeSet<(usize, usize)>,
    /// Known differences, by (step, flow): said on the flow's line.
    notes: BTreeMap<(usize, usize), String>,
}

impl Reporter<'_> {
    fn line(&mut self, step: usize, flow: usize, f: &Flow, v: &Verdict) -> Result<()> {
        self.reported.insert((step, flow));
        let head = format!(
            "{} step {} flow {} {}",
            self.file,
            step + 1,
            flow + 1,
            f.name
        );
        let note = self.notes.get(&(step, flow));
        match v {
            Verdict::Pass => {
                self.tally.passed += 1;
                match note {
                    Some(note) => writeln!(self.out, "PASS {head} -- {note}")?,
                    None => writeln!(self.out, "PASS {head}")?,
                }
            }
            Verdict::Fail(why) => {
                self.tally.failed += 1;
                let note = note.map(|n| format!(" ({n})")).unwrap_or_default();
                writeln!(self.out, "FAIL {head} -- {why}{note}")?;
            }
            Verdict::Skip(why) => {
                self.tally.skipped += 1;
                writeln!(self.out, "SKIP {head} -- {why}")?;
            }
            Verdict::ModeDifference(why) => {
                self.tally.mode_differences += 1;
                writeln!(self.out, "MODE-DIFFERENCE {head} -- {why}")?;
            }
        }
        self.out.flush()?;
        Ok(())
    }

    /// Every flow not reported yet fails for the same reason (no topology, no agent): the full
    /// reason (with the agent's output) goes to stderr once, its first line onto each flow line.
    fn fail_rest(&mut self, case: &Case, why: &str) -> Result<()> {
        eprintln!("{}: {why}", self.file);
        let why = why.lines().next().unwrap_or_default();
        for (i, s) in case.steps.iter().enumerate() {
            for (j, f) in s.flows.iter().enumerate() {
                if !self.reported.contains(&(i, j)) {
                    self.line(i, j, f, &Verdict::Fail(why.to_string()))?;
                }
            }
        }
        Ok(())
    }
}

/// One file: a parse or setup error fails all its flows (counted), it never aborts the run.
pub async fn run_file(path: &Path, opts: &Options, out: &mut dyn Write) -> Result<Tally> {
    let mut rep = Reporter {
        file: path.display().to_string(),
        out,
        tally: Tally::default(),
        reported: BTreeSet::new(),
        notes: BTreeMap::new(),
    };
    let case = Case::load(path).and_then(|mut case| {
        let notes = super::differences::apply(&mut case, path, &opts.differences)?;
        rep.notes.extend(notes);
        Ok(case)
    });
    let case = match case {
        Ok(c) => c,
        Err(e) => {
            rep.tally.failed += 1;
            writeln!(rep.out, "FAIL {} -- cannot load: {e:#}", rep.file)?;
            return Ok(rep.tally);
        }
    };
    let workdir = std::env::temp_dir().join(format!("{}-conformance", unique_tag()));
    let r = run_case(&case, opts, &workdir, &mut rep).await;
    let _ = std::fs::remove_dir_all(&workdir);
    if let Err(e) = r {
        rep.fail_rest(&case, &format!("{e:#}"))?;
    }
    Ok(rep.tally)
}

/// Builds the bed; errors here mean no flow of the file ran.
async fn build(case: &Case) -> Result<TestBed> {
    let mut bed = TestBed::new(&case.node_ips()).await?;
    for (ip, host) in case.endpoints() {
        let at = if host.local {
            bed.add_pod(ip).await?;
            Where::Pod(ip)
        } else {
            bed.add_remote_endpoint(ip).await?;
            Where::Remote
        };
        for (proto, port) in host.ports {
            if !proto.available() {
                continue;
            }
            bed.serve(at, proto, SocketAddr::new(ip, port), None)
                .await?;
        }
    }
    let mut sink_ports = BTreeSet::new();
    for f in case.steps.iter().flat_map(|s| &s.flows) {
        match case.source_kind(f.source) {
            SourceKind::Node | SourceKind::Remote => {}
            SourceKind::Pod => {
                bed.add_pod(f.source).await?;
            }
            SourceKind::External => {
                bed.add_external(f.source).await?;
            }
        }
        let proto = f.proto()?;
        if proto.available() {
            sink_ports.insert((proto, wildcard(f.dest, f.port)));
        }
    }
    // The sink answers anything routed past the node, so `none` is told apart from REJECT/DROP
    // and a wrongly unhandled packet shows up as "sink" rather than as silence.
    for (proto, addr) in sink_ports {
        bed.serve(Where::Sink, proto, addr, Some("sink")).await?;
    }
    Ok(bed)
}

async fn run_case(
    case: &Case,
    opts: &Options,
    workdir: &Path,
    rep: &mut Reporter<'_>,
) -> Result<()> {
    let bed = build(case).await.context("building the topology")?;
    let mut agent = Agent::prepare(&opts.kproxy_bin, &opts.mode, workdir, case)?;
    agent.extra_args.extend(opts.kproxy_args.iter().cloned());
    agent::write_manifests(&agent.manifests(), case, &case.objects)?;
    if let Err(e) = agent.start(&bed.node).await {
        rep.fail_rest(case, &format!("{e:#}"))?;
        return Ok(());
    }
    for (i, step) in case.steps.iter().enumerate() {
        if step.objects_replace {
            // A restart: the new process must adopt the rules the old one left, atomically.
            let restarted = async {
                agent.stop().await?;
                agent::write_manifests(&agent.manifests(), case, &step.objects)?;
                agent.start(&bed.node).await
            }
            .await;
            if let Err(e) = restarted {
                rep.fail_rest(case, &format!("restart for step {}: {e:#}", i + 1))?;
                break;
            }
        }
        let bystanders = start_bystanders(&bed, &step.flows).await?;
        let node_addrs = bed.node_addresses().await?;
        for (j, flow) in step.flows.iter().enumerate() {
            // Upstream judges each flow as a new connection: no conntrack state carries over.
            let v = match run_in(&bed.node, "conntrack", &["-F"]).await {
                Ok(_) => judge(&bed, flow, &node_addrs, opts.relays()).await,
                Err(e) => Verdict::Fail(format!("flushing conntrack: {e:#}")),
            };
            rep.line(i, j, flow, &v)?;
        }
        drop(bystanders);
    }
    if let Err(e) = agent.stop().await {
        eprintln!("{}: {e:#}", rep.file);
    }
    Ok(())
}

/// Bystanders: a listener on the node's wildcard address on every port/protocol of this step,
/// answering "node". For `none` they prove a packet was delivered locally untouched; for REJECT and
/// DROP they keep the node kernel's own reset for a closed port from passing as a REJECT. Ports of
/// ACCEPT flows get none (the node's own listener must answer there), nor do ports something on
/// the node already listens on.
async fn start_bystanders(bed: &TestBed, flows: &[Flow]) -> Result<Vec<Server>> {
    let mut accept = BTreeSet::new();
    let mut want = BTreeSet::new();
    for f in flows {
        let proto = f.proto()?;
        if f.expected()? == Expected::Accept {
            accept.insert((proto, f.port));
        } else if proto.available() {
            want.insert((proto, SocketAddr::new(f.dest, f.port)));
        }
    }
    let mut servers = Vec::new();
    for (proto, addr) in want {
        if accept.contains(&(proto, addr.port())) {
            continue;
        }
        match start_bystander(bed, proto, addr).await {
            Ok(s) => servers.push(s),
            Err(e) if in_use(&e) => eprintln!("no bystander on {proto:?} {addr}: port in use"),
            Err(e) => return Err(e),
        }
    }
    Ok(servers)
}

/// A bystander on the flow's own address when it is the node's (so it never competes with a
/// listener of kproxy's on another address of the node, such as a health-check server bound to
/// 127.0.0.1 only), else on the wildcard address.
async fn start_bystander(bed: &TestBed, proto: Proto, dest: SocketAddr) -> Result<Server> {
    match Server::start(&bed.node, proto, dest, Some("node")).await {
        Err(e) if not_local(&e) => {
            let any = wildcard(dest.ip(), dest.port());
            Server::start(&bed.node, proto, any, Some("node")).await
        }
        other => other,
    }
}

fn not_local(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::AddrNotAvailable)
    })
}

fn in_use(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::AddrInUse)
    })
}
