//! Probes: one connection (TCP, SCTP) or one datagram exchange (UDP) from a source address inside a
//! namespace, classified by what came back.

use crate::netns::Netns;
use crate::server::{NO_SCTP, Proto, new_socket, sctp_supported};
use anyhow::Result;
use socket2::SockAddr;
use std::io::{ErrorKind, Read};
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;
use tokio::time::Instant;

pub const DEFAULT_TIMEOUT: Duration = Duration::from_millis(1500);

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// One of our servers answered: `by` is its own `ip:port` (or "node"/"sink"), `saw_source` the
    /// client address it saw.
    Answered { by: String, saw_source: IpAddr },
    /// The connection was accepted by a listener that is not one of ours (it said `said`, maybe
    /// nothing before the deadline).
    Connected { said: String },
    /// Actively refused (TCP reset, ICMP unreachable); `after` is how long that took.
    Refused { why: String, after: Duration },
    /// Nothing came back before the deadline.
    NoAnswer,
    /// Not probed, for a reason the machine imposes.
    Skipped(String),
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Outcome::Answered { by, saw_source } => {
                write!(f, "answered by {by} (saw {saw_source})")
            }
            Outcome::Connected { said } => write!(f, "connected to a foreign listener ({said:?})"),
            Outcome::Refused { why, after } => write!(f, "refused ({why}) after {after:?}"),
            Outcome::NoAnswer => write!(f, "no answer"),
            Outcome::Skipped(why) => write!(f, "skipped: {why}"),
        }
    }
}

#[derive(Clone, Debug)]
pub struct Probe {
    pub proto: Proto,
    pub source: IpAddr,
    pub dest: SocketAddr,
    pub timeout: Duration,
}

impl Probe {
    pub fn new(proto: Proto, source: IpAddr, dest: SocketAddr) -> Probe {
        Probe {
            proto,
            source,
            dest,
            timeout: DEFAULT_TIMEOUT,
        }
    }

    /// Sends the probe from inside `ns` (which must own `source`).
    pub async fn send(&self, ns: &Netns) -> Result<Outcome> {
        if self.proto == Proto::Sctp && !sctp_supported() {
            return Ok(Outcome::Skipped(NO_SCTP.to_string()));
        }
        let p = self.clone();
        ns.run_async(move || p.blocking()).await
    }

    /// Runs on a thread inside the namespace; blocking sockets with timeouts keep this simple.
    fn blocking(&self) -> Result<Outcome> {
        let start = Instant::now();
        let s = new_socket(self.proto, &self.dest)?;
        s.bind(&SockAddr::from(SocketAddr::new(self.source, 0)))?;
        let refused = |e: &std::io::Error| {
            matches!(
                e.kind(),
                ErrorKind::ConnectionRefused
                    | ErrorKind::ConnectionReset
                    | ErrorKind::HostUnreachable
                    | ErrorKind::NetworkUnreachable
            )
        };
        // EPERM: netfilter dropped the namespace's own packet in its output path (the kernel says
        // so at once instead of letting the caller time out) - on the wire that is a silent drop.
        let timed_out = |e: &std::io::Error| {
            matches!(e.kind(), ErrorKind::TimedOut | ErrorKind::WouldBlock)
                || e.raw_os_error() == Some(libc::EPERM)
        };
        let mut buf = Vec::new();
        match self.proto {
            Proto::Tcp | Proto::Sctp => {
                match s.connect_timeout(&self.dest.into(), self.timeout) {
                    Ok(()) => {}
                    Err(e) if refused(&e) => {
                        return Ok(Outcome::Refused {
                            why: e.to_string(),
                            after: start.elapsed(),
                        });
                    }
                    Err(e) if timed_out(&e) => return Ok(Outcome::NoAnswer),
                    Err(e) => return Err(e.into()),
                }
                let left = self.timeout.saturating_sub(start.elapsed());
                s.set_read_timeout(Some(left.max(Duration::from_millis(100))))?;
                let mut s: std::net::TcpStream = s.into();
                // Read to EOF: our servers close after their line; a foreign listener may say
                // nothing, which the read timeout ends.
                let _ = s.read_to_end(&mut buf);
            }
            Proto::Udp => {
                s.connect(&self.dest.into())?;
                s.set_read_timeout(Some(self.timeout))?;
                match s.send(b"probe\n") {
                    Ok(_) => {}
                    Err(e) if refused(&e) => {
                        return Ok(Outcome::Refused {
                            why: e.to_string(),
                            after: start.elapsed(),
                        });
                    }
                    Err(e) if timed_out(&e) => return Ok(Outcome::NoAnswer),
                    Err(e) => return Err(e.into()),
                }
                let s: std::net::UdpSocket = s.into();
                buf.resize(1500, 0);
                match s.recv(&mut buf) {
                    Ok(n) => buf.truncate(n),
                    Err(e) if refused(&e) => {
                        return Ok(Outcome::Refused {
                            why: e.to_string(),
                            after: start.elapsed(),
                        });
                    }
                    Err(e) if timed_out(&e) => return Ok(Outcome::NoAnswer),
                    Err(e) => return Err(e.into()),
                }
            }
        }
        Ok(parse_answer(&String::from_utf8_lossy(&buf)))
    }
}

/// `<by> <peer ip:port>` from one of our servers, anything else is a foreign listener.
pub fn parse_answer(text: &str) -> Outcome {
    let line = text.lines().next().unwrap_or("").trim();
    let mut parts = line.split(' ');
    if let (Some(by), Some(peer), None) = (parts.next(), parts.next(), parts.next())
        && let Ok(peer) = peer.parse::<SocketAddr>()
    {
        return Outcome::Answered {
            by: by.to_string(),
            saw_source: peer.ip(),
        };
    }
    Outcome::Connected {
        said: text.chars().take(80).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_our_answer_lines() {
        assert_eq!(
            parse_answer("[fd00::1]:80 [fd00::2]:4000\n"),
            Outcome::Answered {
                by: "[fd00::1]:80".into(),
                saw_source: "fd00::2".parse().unwrap()
            }
        );
        assert_eq!(
            parse_answer("node 10.0.0.2:1234\n"),
            Outcome::Answered {
                by: "node".into(),
                saw_source: "10.0.0.2".parse().unwrap()
            }
        );
        assert!(matches!(
            parse_answer("HTTP/1.1 200 OK\r\n"),
            Outcome::Connected { .. }
        ));
        assert!(matches!(parse_answer(""), Outcome::Connected { .. }));
    }
}
