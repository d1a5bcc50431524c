//! A minimal HTTP/1.1 server for kproxy's probe and metrics endpoints.
//!
//! Every endpoint kproxy serves is a small GET answered from memory, asked by kubelet probes,
//! load-balancer health checkers and Prometheus. One request per connection (`Connection:
//! close`) keeps this small and obviously correct, without pulling a full HTTP stack into the
//! agent.

use std::{sync::Arc, time::Duration};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
    task::JoinSet,
};
use tracing::debug;

/// The parts of a request the handlers look at.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request {
    pub method: String,
    /// The path without the query string.
    pub path: String,
    /// Lower-cased header names with their values.
    pub headers: Vec<(String, String)>,
}

impl Request {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(&'static str, String)>,
    pub body: String,
}

impl Response {
    pub fn new(status: u16, content_type: &str, body: impl Into<String>) -> Self {
        Self {
            status,
            headers: vec![
                ("Content-Type", content_type.to_owned()),
                ("X-Content-Type-Options", "nosniff".to_owned()),
            ],
            body: body.into(),
        }
    }

    pub fn header(mut self, name: &'static str, value: impl Into<String>) -> Self {
        self.headers.push((name, value.into()));
        self
    }

    /// Go's `http.NotFound`, which upstream's muxes answer for unknown paths.
    pub fn not_found() -> Self {
        Self::new(404, "text/plain; charset=utf-8", "404 page not found\n")
    }
}

pub type Handler = Arc<dyn Fn(&Request) -> Response + Send + Sync>;

/// A slow or silent client must not pin a connection task forever.
const READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Probe and scrape requests are a request line and a few headers.
const MAX_HEAD: usize = 16 * 1024;

/// Accepts connections until the returned future is dropped; dropping it also drops the
/// listener (freeing the port) and every connection still being answered.
pub async fn serve(listener: TcpListener, handler: Handler) {
    let mut conns = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    conns.spawn(answer(stream, handler.clone()));
                }
                Err(e) => debug!(error = %e, "accept failed"),
            },
            // Reap finished connections so the set does not grow.
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
        }
    }
}

async fn answer(mut stream: TcpStream, handler: Handler) {
    let Ok(Some(req)) = tokio::time::timeout(READ_TIMEOUT, read_head(&mut stream))
        .await
        .unwrap_or(Ok(None))
    else {
        return;
    };
    // Like upstream's handlers, every method gets the same answer.
    let resp = handler(&req);
    let _ = stream.write_all(&encode(&resp, req.method == "HEAD")).await;
    let _ = stream.shutdown().await;
}

async fn read_head(stream: &mut TcpStream) -> std::io::Result<Option<Request>> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
        if buf.len() > MAX_HEAD {
            return Ok(None);
        }
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Ok(None);
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    Ok(parse_head(&String::from_utf8_lossy(&buf)))
}

fn parse_head(text: &str) -> Option<Request> {
    let mut lines = text.split("\r\n");
    let mut first = lines.next()?.split(' ');
    let method = first.next()?.to_owned();
    let target = first.next()?;
    let path = target.split('?').next().unwrap_or(target).to_owned();
    let headers = lines
        .take_while(|l| !l.is_empty())
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    Some(Request {
        method,
        path,
        headers,
    })
}

fn encode(resp: &Response, head_only: bool) -> Vec<u8> {
    let mut out = format!("HTTP/1.1 {} {}\r\n", resp.status, reason(resp.status));
    for (name, value) in &resp.headers {
        out.push_str(&format!("{name}: {value}\r\n"));
    }
    out.push_str(&format!(
        "Content-Length: {}\r\nConnection: close\r\n\r\n",
        resp.body.len()
    ));
    let mut bytes = out.into_bytes();
    if !head_only {
        bytes.extend_from_slice(resp.body.as_bytes());
    }
    bytes
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        404 => "Not Found",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_head_is_parsed_without_its_query() {
        let req = parse_head("GET /healthz?verbose=1 HTTP/1.1\r\nHost: x\r\nAccept: a/b\r\n\r\n")
            .unwrap();
        assert_eq!(req.method, "GET");
        assert_eq!(req.path, "/healthz");
        assert_eq!(req.header("accept"), Some("a/b"));
    }

    #[test]
    fn a_head_request_gets_headers_but_no_body() {
        let resp = Response::new(200, "text/plain", "hello");
        let full = String::from_utf8(encode(&resp, false)).unwrap();
        let head = String::from_utf8(encode(&resp, true)).unwrap();
        assert!(full.ends_with("\r\n\r\nhello"));
        assert!(head.ends_with("Content-Length: 5\r\nConnection: close\r\n\r\n"));
    }
}
