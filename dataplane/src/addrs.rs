//! The node's local addresses, read from the kernel with `ip -o addr show`.

use std::{net::IpAddr, process::Command};

#[derive(Debug, thiserror::Error)]
pub enum AddrsError {
    #[error("running ip: {0}")]
    Spawn(#[from] std::io::Error),
    #[error("ip addr failed: {0}")]
    Failed(String),
}

/// Every address configured on any interface, optionally inside network namespace `netns`.
pub fn local_addresses(netns: Option<&str>) -> Result<Vec<IpAddr>, AddrsError> {
    let mut cmd = Command::new("ip");
    if let Some(ns) = netns {
        cmd.args(["-n", ns]);
    }
    let out = cmd.args(["-o", "addr", "show"]).output()?;
    if !out.status.success() {
        return Err(AddrsError::Failed(
            String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        ));
    }
    Ok(parse_ip_o_addr(&String::from_utf8_lossy(&out.stdout)))
}

/// Parses `ip -o addr show` lines: `2: eth0    inet 192.168.0.2/24 brd ... scope global eth0`.
pub fn parse_ip_o_addr(text: &str) -> Vec<IpAddr> {
    let mut addrs = Vec::new();
    for line in text.lines() {
        let mut words = line.split_whitespace();
        while let Some(w) = words.next() {
            if w == "inet" || w == "inet6" {
                if let Some(addr) = words
                    .next()
                    .and_then(|cidr| cidr.split('/').next())
                    .and_then(|a| a.parse().ok())
                {
                    addrs.push(addr);
                }
                break;
            }
        }
    }
    addrs
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_both_families_and_skips_other_lines() {
        let text = "1: lo    inet 127.0.0.1/8 scope host lo\\       valid_lft forever\n\
                    2: eth0    inet6 2001:db8::1/64 scope global \\       valid_lft forever\n\
                    garbage\n";
        let got = parse_ip_o_addr(text);
        assert_eq!(
            got,
            vec![
                "127.0.0.1".parse::<IpAddr>().unwrap(),
                "2001:db8::1".parse().unwrap()
            ]
        );
    }
}
