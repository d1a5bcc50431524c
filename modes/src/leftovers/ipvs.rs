//! Upstream's IPVS mode: the dummy link `kube-ipvs0` that holds its Service addresses, and the
//! IPVS virtual servers on those addresses.
//!
//! Upstream's cleanup flushes every IPVS service on the node; ours deletes only those whose
//! address is on `kube-ipvs0` (ClusterIPs, external and load-balancer IPs), so someone else's
//! IPVS services stay — and so do upstream's NodePort services, which sit on the node's own
//! addresses and cannot be told from anyone else's. Services are read with `ipvsadm -Ln` when
//! `ipvsadm` is installed; without it they are not checked (logged). The link goes only if it
//! is a dummy, as upstream's `DeleteDummyDevice` requires.

use std::{net::IpAddr, path::PathBuf, process::Command};

use kproxy_dataplane::rtnl::Rtnl;

use super::{LeftoverError, Leftovers, Removed};

/// Upstream's `defaultDummyDevice`.
const LINK: &str = "kube-ipvs0";

pub(super) fn remove(netns: Option<&str>, out: &mut Leftovers) {
    if let Err(e) = remove_link_and_services(netns, out) {
        out.failed.push(e);
    }
}

fn remove_link_and_services(netns: Option<&str>, out: &mut Leftovers) -> Result<(), LeftoverError> {
    let rtnl = match netns {
        Some(ns) => Rtnl::new().in_netns(ns),
        None => Rtnl::new(),
    };
    let link_error = |source| LeftoverError::Link { link: LINK, source };
    let link = match rtnl.link(LINK) {
        Ok(link) => link,
        // No such link is the common case, not an error.
        Err(e) if e.is_not_found() => return Ok(()),
        Err(e) => return Err(link_error(e)),
    };
    if link.kind.as_deref() != Some("dummy") {
        tracing::warn!(
            link = LINK,
            "left in place: not a dummy link, so not kube-proxy's"
        );
        return Ok(());
    }
    let addrs: Vec<IpAddr> = rtnl
        .link_addresses(LINK)
        .map_err(link_error)?
        .into_iter()
        .map(|a| a.addr)
        .collect();
    // A failure to read or delete services (no IPVS in this kernel, say) still lets the link go.
    if let Err(e) = remove_services(netns, &addrs, out) {
        out.failed.push(e);
    }
    rtnl.delete_link(LINK).map_err(link_error)?;
    out.removed.push(Removed::Link {
        name: LINK.to_owned(),
    });
    Ok(())
}

fn remove_services(
    netns: Option<&str>,
    addrs: &[IpAddr],
    out: &mut Leftovers,
) -> Result<(), LeftoverError> {
    if addrs.is_empty() {
        return Ok(());
    }
    if !installed("ipvsadm") {
        tracing::warn!(
            link = LINK,
            "IPVS services on the link's addresses were not checked: ipvsadm is not installed"
        );
        return Ok(());
    }
    for (protocol, address) in parse_services(&run(netns, &["ipvsadm", "-Ln"])?) {
        let on_link = host(&address).is_some_and(|ip| addrs.contains(&ip));
        let flag = match protocol.as_str() {
            "TCP" => "-t",
            "UDP" => "-u",
            "SCTP" => "--sctp-service",
            _ => continue,
        };
        if on_link {
            run(netns, &["ipvsadm", "-D", flag, &address])?;
            out.removed.push(Removed::IpvsService { protocol, address });
        }
    }
    Ok(())
}

/// The virtual servers of `ipvsadm -Ln`: `(protocol, address:port)` from lines like
/// `TCP  10.96.0.1:443 rr` or `UDP  [fd00::a]:53 rr` (real-server lines start with `->`).
fn parse_services(text: &str) -> Vec<(String, String)> {
    text.lines()
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            let protocol = words.next()?;
            let address = words.next()?;
            matches!(protocol, "TCP" | "UDP" | "SCTP")
                .then(|| (protocol.to_owned(), address.to_owned()))
        })
        .collect()
}

/// The IP of `10.96.0.1:443` or `[fd00::a]:53`.
fn host(address: &str) -> Option<IpAddr> {
    let (host, _port) = address.rsplit_once(':')?;
    host.trim_start_matches('[')
        .trim_end_matches(']')
        .parse()
        .ok()
}

fn installed(name: &str) -> bool {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin"].map(PathBuf::from))
        .any(|dir| dir.join(name).is_file())
}

/// Runs `argv` (inside `netns` if given) and returns its standard output.
fn run(netns: Option<&str>, argv: &[&str]) -> Result<String, LeftoverError> {
    let mut cmd = match netns {
        Some(ns) => {
            let mut c = Command::new("ip");
            c.args(["netns", "exec", ns]).args(argv);
            c
        }
        None => {
            let mut c = Command::new(argv[0]);
            c.args(&argv[1..]);
            c
        }
    };
    let program = argv.join(" ");
    let out = cmd.output().map_err(|source| LeftoverError::Spawn {
        program: program.clone(),
        source,
    })?;
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr).trim().to_owned();
        return Err(LeftoverError::Command { program, stderr });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn virtual_servers_are_read_from_ipvsadm_listing() {
        let text = "IP Virtual Server version 1.2.1 (size=4096)
Prot LocalAddress:Port Scheduler Flags
  -> RemoteAddress:Port           Forward Weight ActiveConn InActConn
TCP  10.96.0.1:443 rr
  -> 192.168.0.2:6443             Masq    1      0          0
UDP  [fd00::a]:53 rr
FWM  100 rr
";
        let services = parse_services(text);
        assert_eq!(
            services,
            [
                ("TCP".to_owned(), "10.96.0.1:443".to_owned()),
                ("UDP".to_owned(), "[fd00::a]:53".to_owned()),
            ]
        );
        assert_eq!(host("[fd00::a]:53"), Some("fd00::a".parse().unwrap()));
        assert_eq!(host("10.96.0.1:443"), Some("10.96.0.1".parse().unwrap()));
    }
}
