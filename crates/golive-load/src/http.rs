//! Just enough HTTP/1.1 for WHIP and WHEP: POST an SDP offer, read the 201's answer and
//! `Location`, DELETE the session. One connection per request (`Connection: close`), so a
//! response ends where the connection does; nothing here is on a hot path.

use anyhow::{Context, Result, anyhow, bail};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Larger responses are refused: an SDP answer is a few KiB.
const MAX_RESPONSE_BYTES: usize = 1024 * 1024;

/// The server's `host:port`, from what a person types (`http://host:port`, `host:port`, or
/// the WebSocket URL).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpBase {
    pub authority: String,
}

#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

impl HttpBase {
    pub fn parse(server: &str) -> Result<Self> {
        let s = server.trim();
        if s.starts_with("https://") || s.starts_with("wss://") {
            bail!("WHIP/WHEP over TLS is not supported by golive-load; use http://");
        }
        let rest = ["http://", "ws://"]
            .iter()
            .find_map(|p| s.strip_prefix(p))
            .unwrap_or(s);
        let authority = rest.split('/').next().unwrap_or_default();
        if authority.is_empty() {
            bail!("no host in {server:?}");
        }
        Ok(Self {
            authority: authority.to_owned(),
        })
    }

    /// One request on a fresh connection.
    pub async fn request(
        &self,
        method: &str,
        path: &str,
        body: Option<(&str, &str)>,
        timeout: Duration,
    ) -> Result<Response> {
        let exchange = async {
            let mut conn = TcpStream::connect(&self.authority)
                .await
                .with_context(|| format!("connecting to {}", self.authority))?;
            let _ = conn.set_nodelay(true);
            let mut req = format!(
                "{method} {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n",
                self.authority
            );
            let (content_type, text) = body.unwrap_or(("", ""));
            if body.is_some() {
                req += &format!("Content-Type: {content_type}\r\n");
            }
            req += &format!("Content-Length: {}\r\n\r\n", text.len());
            req += text;
            conn.write_all(req.as_bytes()).await.context("sending")?;
            let mut raw = Vec::new();
            (&mut conn)
                .take(MAX_RESPONSE_BYTES as u64 + 1)
                .read_to_end(&mut raw)
                .await
                .context("reading the response")?;
            if raw.len() > MAX_RESPONSE_BYTES {
                bail!("response larger than {MAX_RESPONSE_BYTES} bytes");
            }
            parse_response(&raw)
        };
        tokio::time::timeout(timeout, exchange)
            .await
            .map_err(|_| anyhow!("{method} {path}: no response within {timeout:?}"))?
            .with_context(|| format!("{method} {path}"))
    }

    /// POSTs an SDP offer (WHIP or WHEP); a 201 gives `(answer, Location)`.
    pub async fn post_offer(
        &self,
        path: &str,
        offer: &str,
        timeout: Duration,
    ) -> Result<(String, String)> {
        let r = self
            .request("POST", path, Some(("application/sdp", offer)), timeout)
            .await?;
        if r.status != 201 {
            bail!("POST {path}: {} {}", r.status, r.body.trim());
        }
        let location = r
            .header("location")
            .with_context(|| format!("POST {path}: a 201 without Location"))?;
        let location = resource_path(location).to_owned();
        Ok((r.body, location))
    }

    /// DELETEs a session; whether the server said 2xx.
    pub async fn delete(&self, location: &str, timeout: Duration) -> bool {
        self.request("DELETE", location, None, timeout)
            .await
            .is_ok_and(|r| (200..300).contains(&r.status))
    }
}

/// The path of a `Location`, which may be absolute (`http://host/whep/s/id`) or a path.
fn resource_path(location: &str) -> &str {
    let l = location.trim();
    match l.split_once("://") {
        Some((_, rest)) => rest.find('/').map_or("/", |i| &rest[i..]),
        None => l,
    }
}

fn parse_response(raw: &[u8]) -> Result<Response> {
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .context("no end of headers in the response")?;
    let head = std::str::from_utf8(&raw[..end]).context("response headers are not UTF-8")?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status: u16 = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .with_context(|| format!("bad status line {status_line:?}"))?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_owned(), v.trim().to_owned()))
        .collect();
    let mut body = raw[end + 4..].to_vec();
    let chunked = headers.iter().any(|(n, v)| {
        n.eq_ignore_ascii_case("transfer-encoding") && v.to_ascii_lowercase().contains("chunked")
    });
    if chunked {
        body = dechunk(&body)?;
    } else if let Some(len) = headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.parse::<usize>().ok())
    {
        if body.len() < len {
            bail!("response body cut short ({} of {len} bytes)", body.len());
        }
        body.truncate(len);
    }
    Ok(Response {
        status,
        headers,
        body: String::from_utf8(body).context("response body is not UTF-8")?,
    })
}

fn dechunk(mut data: &[u8]) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let eol = data
            .windows(2)
            .position(|w| w == b"\r\n")
            .context("bad chunk header")?;
        let size_text = std::str::from_utf8(&data[..eol])?;
        let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)
            .context("bad chunk size")?;
        data = &data[eol + 2..];
        if size == 0 {
            return Ok(out);
        }
        if data.len() < size {
            bail!("chunk cut short");
        }
        out.extend_from_slice(&data[..size]);
        data = data.get(size + 2..).unwrap_or_default();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bases_come_from_what_people_type() {
        for s in [
            "http://127.0.0.1:8080",
            "127.0.0.1:8080/",
            "ws://127.0.0.1:8080/ws",
        ] {
            assert_eq!(HttpBase::parse(s).unwrap().authority, "127.0.0.1:8080");
        }
        assert!(HttpBase::parse("https://live.example").is_err());
    }

    #[test]
    fn responses_give_status_headers_and_body() {
        let raw = b"HTTP/1.1 201 Created\r\ncontent-type: application/sdp\r\nlocation: /whep/s/abc\r\ncontent-length: 5\r\n\r\nv=0\r\n";
        let r = parse_response(raw).unwrap();
        assert_eq!(r.status, 201);
        assert_eq!(r.header("Location"), Some("/whep/s/abc"));
        assert_eq!(r.body, "v=0\r\n");
        let chunked = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n3\r\nv=0\r\n2\r\n\r\n\r\n0\r\n\r\n";
        assert_eq!(parse_response(chunked).unwrap().body, "v=0\r\n");
        assert!(parse_response(b"HTTP/1.1 200 OK\r\n").is_err());
    }

    #[test]
    fn locations_become_paths() {
        assert_eq!(resource_path("/whep/s/id"), "/whep/s/id");
        assert_eq!(resource_path("http://h:1/whep/s/id"), "/whep/s/id");
    }
}
