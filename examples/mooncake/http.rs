//! A minimal blocking HTTP/1.1 client for the master's admin port (one request per
//! connection), so the CLI needs no HTTP library and no runtime for its read-only commands.

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};

/// The master's admin HTTP server (`--metrics_host:--metrics_port`).
pub(crate) struct Admin {
    pub(crate) addr: String,
    pub(crate) token: Option<String>,
}

impl Admin {
    /// `GET path`, the body of a 2xx answer as JSON.
    pub(crate) fn get_json(&self, path: &str) -> Result<serde_json::Value> {
        let (status, body) = self.request("GET", path, None)?;
        ok_json(status, &body, path)
    }

    /// `GET path`, the body of a 2xx answer as text.
    pub(crate) fn get_text(&self, path: &str) -> Result<String> {
        let (status, body) = self.request("GET", path, None)?;
        if !(200..300).contains(&status) {
            bail!("{path}: HTTP {status}: {}", body.trim());
        }
        Ok(body)
    }

    /// `POST path` with a JSON body, the body of a 2xx answer as JSON.
    pub(crate) fn post_json(&self, path: &str, body: &str) -> Result<serde_json::Value> {
        let (status, answer) = self.request("POST", path, Some(body))?;
        ok_json(status, &answer, path)
    }

    fn request(&self, method: &str, path: &str, body: Option<&str>) -> Result<(u16, String)> {
        let unreachable = |e: &dyn std::fmt::Display| {
            anyhow!(
                "cannot reach the master's admin HTTP server at {} (--admin_address; the master's --metrics_port): {e}",
                self.addr
            )
        };
        let addrs: Vec<_> = self
            .addr
            .to_socket_addrs()
            .map_err(|e| unreachable(&e))?
            .collect();
        let mut last = None;
        let mut stream = None;
        for a in addrs {
            match TcpStream::connect_timeout(&a, Duration::from_secs(3)) {
                Ok(s) => {
                    stream = Some(s);
                    break;
                }
                Err(e) => last = Some(e),
            }
        }
        let mut s = match (stream, last) {
            (Some(s), _) => s,
            (None, Some(e)) => return Err(unreachable(&e)),
            (None, None) => return Err(unreachable(&"the address resolves to nothing")),
        };
        s.set_read_timeout(Some(Duration::from_secs(30)))?;
        let auth = self
            .token
            .as_ref()
            .map(|t| format!("Authorization: Bearer {t}\r\n"))
            .unwrap_or_default();
        let body = body.unwrap_or("");
        let head = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n{auth}Content-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            self.addr,
            body.len()
        );
        s.write_all(head.as_bytes())?;
        s.write_all(body.as_bytes())?;
        let mut raw = Vec::new();
        s.read_to_end(&mut raw)
            .with_context(|| format!("reading the answer of {}", self.addr))?;
        parse_response(&raw).with_context(|| format!("the answer of {} to {path}", self.addr))
    }
}

fn ok_json(status: u16, body: &str, path: &str) -> Result<serde_json::Value> {
    if !(200..300).contains(&status) {
        bail!("{path}: HTTP {status}: {}", body.trim());
    }
    serde_json::from_str(body).with_context(|| format!("{path}: not JSON: {body}"))
}

fn parse_response(raw: &[u8]) -> Result<(u16, String)> {
    let text = String::from_utf8_lossy(raw);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| anyhow!("no HTTP header"))?;
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| anyhow!("no HTTP status"))?;
    let chunked = head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked");
    Ok((
        status,
        if chunked {
            dechunk(body)
        } else {
            body.to_owned()
        },
    ))
}

fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let Ok(n) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        body = rest[n..].trim_start_matches("\r\n");
    }
    out
}
