//! Start-up: the kernel must have IPVS and the configured scheduler (a clear error naming the
//! module otherwise), the sysctls IPVS needs, the connection timeouts, and `kube-ipvs0`.

use kproxy_dataplane::{
    ipvs::{Ipvs, IpvsError, Protocol, Service, Timeouts},
    netns::Netns,
    rtnl::Rtnl,
    sysctl::Sysctl,
};

use super::{MODE, plan::DEFAULT_SCHEDULER};
use crate::{ModeError, registry::IpvsSettings};

/// The dummy link holding every VIP, as upstream names it (tools and runbooks know it).
pub const DUMMY: &str = "kube-ipvs0";

/// A firewall mark no Service uses, for the scheduler probe's short-lived virtual server.
const PROBE_FWMARK: u32 = 0x6b70_7278;

/// The sysctls this mode sets, and why (docs/modes/ipvs.md lists them too).
pub const SYSCTLS: [(&str, i64); 5] = [
    // IPVS keeps conntrack entries for its connections, so that nftables NAT (masquerade) and
    // `ct state` matches see them.
    ("net/ipv4/vs/conntrack", 1),
    // A connection whose real server was deleted is expired on its next packet, not left
    // hanging until its timeout.
    ("net/ipv4/vs/expire_nodest_conn", 1),
    // A persistence template of a quiesced (weight 0) server expires instead of pinning clients.
    ("net/ipv4/vs/expire_quiescent_template", 1),
    // 1 reschedules a new connection that reuses the port of a finished one. Kernels before 5.9
    // stalled such connections for a second with conntrack on (upstream then set 0); 5.9
    // fixed it ("ipvs: allow connection reuse for unconfirmed conntrack"), so 1 is safe and
    // keeps new connections off removed endpoints. See `conn_reuse_mode`.
    ("net/ipv4/vs/conn_reuse_mode", 1),
    // VIP traffic is forwarded to endpoints on other hosts.
    ("net/ipv4/ip_forward", 1),
];

/// strictARP: the node answers ARP only for addresses of the interface asked, so the VIPs on
/// kube-ipvs0 are not announced on the node's network (MetalLB in L2 mode needs it).
const STRICT_ARP: [(&str, i64); 2] = [
    ("net/ipv4/conf/all/arp_ignore", 1),
    ("net/ipv4/conf/all/arp_announce", 2),
];

/// The kernel's IPVS, or an error naming the module to load.
pub fn open(netns: &Netns) -> Result<Ipvs, ModeError> {
    Ipvs::open(netns).map_err(|e| match e {
        IpvsError::Unavailable => unavailable("the kernel has no IPVS: load kernel module ip_vs"),
        e => ModeError::kernel(MODE, "opening IPVS", e),
    })
}

/// Checks the kernel and prepares the node; an error says what is missing.
pub fn start(netns: &Netns, settings: &IpvsSettings) -> Result<(), ModeError> {
    let mut ipvs = open(netns)?;
    probe_scheduler(&mut ipvs, &settings.scheduler)?;
    set_sysctls(netns, settings.strict_arp)?;
    let t = Timeouts {
        tcp: settings.tcp_timeout.as_secs() as u32,
        tcp_fin: settings.tcp_fin_timeout.as_secs() as u32,
        udp: settings.udp_timeout.as_secs() as u32,
    };
    if t != Timeouts::default() {
        ipvs.set_timeouts(&t)
            .map_err(|e| ModeError::kernel(MODE, "setting IPVS timeouts", e))?;
    }
    ensure_dummy(&Rtnl::new().with_netns(netns.clone()))
}

fn unavailable(reason: impl Into<String>) -> ModeError {
    ModeError::Unavailable {
        mode: MODE,
        reason: reason.into(),
    }
}

/// The kernel loads a scheduler's module when a service first names it: a virtual server on a
/// firewall mark no one uses, made and deleted at once, asks it. ENOENT: no such scheduler.
fn probe_scheduler(ipvs: &mut Ipvs, scheduler: &str) -> Result<(), ModeError> {
    let name = if scheduler.is_empty() {
        DEFAULT_SCHEDULER
    } else {
        scheduler
    };
    let mut probe = Service::new([0, 0, 0, 0].into(), Protocol::Tcp, 0, name);
    probe.fwmark = PROBE_FWMARK;
    match ipvs.add_service(&probe) {
        Ok(()) => {}
        Err(e) if e.is_exists() => {}
        // ENOENT from a create: the scheduler is unknown (its module missing).
        Err(e) if e.is_not_found() => {
            return Err(unavailable(format!(
                "the kernel has no IPVS scheduler {name:?}: load kernel module ip_vs_{name}"
            )));
        }
        Err(e) => return Err(ModeError::kernel(MODE, "probing the IPVS scheduler", e)),
    }
    ipvs.delete_service(&probe.key())
        .map_err(|e| ModeError::kernel(MODE, "deleting the scheduler probe", e))
}

fn set_sysctls(netns: &Netns, strict_arp: bool) -> Result<(), ModeError> {
    let mut all: Vec<(&str, i64)> = SYSCTLS.to_vec();
    if strict_arp {
        all.extend(STRICT_ARP);
    }
    // /proc/sys/net is the namespace of the thread that opens it.
    netns
        .run(|| {
            let sysctl = Sysctl::new();
            for (name, value) in &all {
                let set = sysctl.file(name).ensure(*value);
                set.map_err(|e| SysctlFailed::Write(name.to_string(), e))?;
            }
            Ok::<_, SysctlFailed>(())
        })
        .map_err(|e| ModeError::kernel(MODE, "setting the IPVS sysctls", e))
}

#[derive(Debug, thiserror::Error)]
enum SysctlFailed {
    #[error(transparent)]
    Netns(#[from] kproxy_dataplane::netns::NetnsError),
    #[error("{0}: {1}")]
    Write(String, kproxy_dataplane::sysctl::SysctlError),
}

/// Creates kube-ipvs0 unless it exists; a kernel without dummy links is a clear error.
pub fn ensure_dummy(rtnl: &Rtnl) -> Result<(), ModeError> {
    match rtnl.add_dummy(DUMMY) {
        Ok(()) => Ok(()),
        Err(e) if e.is_exists() => Ok(()),
        Err(e) if e.is_not_supported() => Err(unavailable(
            "the kernel has no dummy links: load kernel module dummy",
        )),
        Err(e) => Err(ModeError::kernel(MODE, "creating kube-ipvs0", e)),
    }
}
