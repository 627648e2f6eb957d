//! Just enough HTTP/1.1 for WHIP, WHEP and a test's GET: one request per connection
//! (`Connection: close`), so a response ends where the connection does; every response header is
//! kept (`Link` comes more than once). Nothing here is on a hot path, and no HTTP crate is needed.

use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Larger responses are refused: an SDP answer is a few KiB.
const MAX_RESPONSE_BYTES: usize = 1024 * 1024;

/// What went wrong, in words.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct HttpError(String);

#[derive(Debug, Clone)]
pub struct HttpResponse {
    pub status: u16,
    /// Names lower-cased, in the order received.
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl HttpResponse {
    /// The first value of header `name` (any case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.all(name).into_iter().next()
    }

    /// Every value of header `name` (any case), in order.
    pub fn all(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect()
    }
}

/// The server's `host:port` from what a person types (`http://host:port`, `host:port`, or the
/// WebSocket URL).
pub fn authority(server: &str) -> Result<String, HttpError> {
    let s = server.trim();
    if s.starts_with("https://") || s.starts_with("wss://") {
        return Err(HttpError("HTTPS is not supported here; use http://".into()));
    }
    let rest = ["http://", "ws://"]
        .iter()
        .find_map(|p| s.strip_prefix(p))
        .unwrap_or(s);
    match rest.split('/').next() {
        Some(a) if !a.is_empty() => Ok(a.to_owned()),
        _ => Err(HttpError(format!("no host in {server:?}"))),
    }
}

/// Sends one request to `authority` (`host:port`) on a fresh connection and reads the whole
/// response, all within `timeout`.
pub async fn request(
    authority: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
    timeout: Duration,
) -> Result<HttpResponse, HttpError> {
    let context =
        |what: &str, e: std::io::Error| HttpError(format!("{method} {path}: {what}: {e}"));
    let exchange = async {
        let mut conn = TcpStream::connect(authority)
            .await
            .map_err(|e| context(&format!("connecting to {authority}"), e))?;
        let _ = conn.set_nodelay(true);
        let mut head = format!(
            "{method} {path} HTTP/1.1\r\nHost: {authority}\r\nConnection: close\r\n\
             Content-Length: {}\r\n",
            body.len()
        );
        for (n, v) in headers {
            head += &format!("{n}: {v}\r\n");
        }
        head += "\r\n";
        let mut raw = head.into_bytes();
        raw.extend_from_slice(body);
        conn.write_all(&raw)
            .await
            .map_err(|e| context("sending", e))?;
        let mut response = Vec::new();
        (&mut conn)
            .take(MAX_RESPONSE_BYTES as u64 + 1)
            .read_to_end(&mut response)
            .await
            .map_err(|e| context("reading the response", e))?;
        if response.len() > MAX_RESPONSE_BYTES {
            return Err(HttpError(format!(
                "{method} {path}: a response larger than {MAX_RESPONSE_BYTES} bytes"
            )));
        }
        parse_response(&response).map_err(|HttpError(e)| HttpError(format!("{method} {path}: {e}")))
    };
    tokio::time::timeout(timeout, exchange)
        .await
        .map_err(|_| HttpError(format!("{method} {path}: no response within {timeout:?}")))?
}

/// POSTs an SDP offer (WHIP or WHEP); a 201 gives `(answer, the session's path)`.
pub async fn post_offer(
    authority: &str,
    path: &str,
    offer: &str,
    timeout: Duration,
) -> Result<(String, String), HttpError> {
    let r = request(
        authority,
        "POST",
        path,
        &[("Content-Type", "application/sdp")],
        offer.as_bytes(),
        timeout,
    )
    .await?;
    created(path, r)
}

/// A 201's `(answer, the session's path)`; any other status is an error.
fn created(path: &str, r: HttpResponse) -> Result<(String, String), HttpError> {
    if r.status != 201 {
        return Err(HttpError(format!(
            "POST {path}: {} {}",
            r.status,
            r.body.trim()
        )));
    }
    let location = r
        .header("location")
        .ok_or_else(|| HttpError(format!("POST {path}: a 201 without Location")))?;
    let location = resource_path(location).to_owned();
    Ok((r.body, location))
}

/// Redirects a WHEP player follows in a row at most (a cluster node past its capacity answers
/// `307` pointing to a node with room; nodes that disagree must not bounce it for ever).
pub const MAX_REDIRECTS: usize = 3;

/// [`post_offer`] that follows `307`/`308` redirects to other servers (at most
/// [`MAX_REDIRECTS`]): `(answer, the authority that answered, the session's path there)`.
pub async fn post_offer_following(
    authority: &str,
    path: &str,
    offer: &str,
    timeout: Duration,
) -> Result<(String, String, String), HttpError> {
    let (mut authority, mut path) = (authority.to_owned(), path.to_owned());
    for _ in 0..=MAX_REDIRECTS {
        let r = request(
            &authority,
            "POST",
            &path,
            &[("Content-Type", "application/sdp")],
            offer.as_bytes(),
            timeout,
        )
        .await?;
        if matches!(r.status, 307 | 308) {
            let to = r.header("location").ok_or_else(|| {
                HttpError(format!("POST {path}: a {} without Location", r.status))
            })?;
            let (a, p) = split_url(to)
                .ok_or_else(|| HttpError(format!("POST {path}: cannot follow Location {to:?}")))?;
            if let Some(a) = a {
                authority = a.to_owned();
            }
            path = p.to_owned();
            continue;
        }
        let (answer, location) = created(&path, r)?;
        return Ok((answer, authority, location));
    }
    Err(HttpError(format!(
        "POST {path}: more than {MAX_REDIRECTS} redirects in a row"
    )))
}

/// An `http://host:port/path` URL's authority and path, or a path alone (no authority).
fn split_url(url: &str) -> Option<(Option<&str>, &str)> {
    let url = url.trim();
    if url.starts_with('/') {
        return Some((None, url));
    }
    let rest = url.strip_prefix("http://")?;
    let slash = rest.find('/')?;
    Some((Some(&rest[..slash]), &rest[slash..]))
}

/// DELETEs a session; whether the server said 2xx.
pub async fn delete(authority: &str, location: &str, timeout: Duration) -> bool {
    request(authority, "DELETE", location, &[], b"", timeout)
        .await
        .is_ok_and(|r| (200..300).contains(&r.status))
}

/// The path of a `Location`, which may be absolute (`http://host/whep/s/id`) or a path.
pub fn resource_path(location: &str) -> &str {
    let l = location.trim();
    match l.split_once("://") {
        Some((_, rest)) => rest.find('/').map_or("/", |i| &rest[i..]),
        None => l,
    }
}

/// Reads a whole HTTP/1.1 response: status, headers, and the body (chunked or sized).
pub fn parse_response(raw: &[u8]) -> Result<HttpResponse, HttpError> {
    let bad = |what: String| HttpError(what);
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| bad("no end of headers in the response".into()))?;
    let head = std::str::from_utf8(&raw[..end])
        .map_err(|_| bad("response headers are not UTF-8".into()))?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status: u16 = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| bad(format!("bad status line {status_line:?}")))?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let mut response = HttpResponse {
        status,
        headers,
        body: String::new(),
    };
    let mut body = raw[end + 4..].to_vec();
    let chunked = response
        .header("transfer-encoding")
        .is_some_and(|v| v.to_ascii_lowercase().contains("chunked"));
    if chunked {
        body = dechunk(&body)?;
    } else if let Some(len) = response
        .header("content-length")
        .and_then(|v| v.parse::<usize>().ok())
    {
        if body.len() < len {
            return Err(bad(format!(
                "response body cut short ({} of {len} bytes)",
                body.len()
            )));
        }
        body.truncate(len);
    }
    response.body = String::from_utf8_lossy(&body).into_owned();
    Ok(response)
}

fn dechunk(mut data: &[u8]) -> Result<Vec<u8>, HttpError> {
    let bad = |what: &str| HttpError(what.to_owned());
    let mut out = Vec::new();
    loop {
        let eol = data
            .windows(2)
            .position(|w| w == b"\r\n")
            .ok_or_else(|| bad("bad chunk header"))?;
        let size_text = std::str::from_utf8(&data[..eol]).map_err(|_| bad("bad chunk header"))?;
        let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)
            .map_err(|_| bad("bad chunk size"))?;
        data = &data[eol + 2..];
        if size == 0 {
            return Ok(out);
        }
        if data.len() < size {
            return Err(bad("chunk cut short"));
        }
        out.extend_from_slice(&data[..size]);
        data = data.get(size + 2..).unwrap_or_default();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_redirect_location_gives_the_next_server_and_path() {
        assert_eq!(
            split_url("http://10.0.0.2:8080/whep/demo?x=1"),
            Some((Some("10.0.0.2:8080"), "/whep/demo?x=1"))
        );
        assert_eq!(split_url("/whep/demo"), Some((None, "/whep/demo")));
        assert_eq!(
            split_url("https://tls.example/whep/demo"),
            None,
            "no TLS here"
        );
        assert_eq!(split_url("http://no-path"), None);
    }

    #[test]
    fn authorities_come_from_what_people_type() {
        for s in [
            "http://127.0.0.1:8080",
            "127.0.0.1:8080/",
            "ws://127.0.0.1:8080/ws",
        ] {
            assert_eq!(authority(s).unwrap(), "127.0.0.1:8080");
        }
        assert!(authority("https://live.example").is_err());
    }

    #[test]
    fn responses_give_status_headers_and_body() {
        let raw = b"HTTP/1.1 201 Created\r\ncontent-type: application/sdp\r\nLocation: /whep/s/abc\r\nlink: <a>\r\nlink: <b>\r\ncontent-length: 5\r\n\r\nv=0\r\n";
        let r = parse_response(raw).unwrap();
        assert_eq!(r.status, 201);
        assert_eq!(r.header("location"), Some("/whep/s/abc"));
        assert_eq!(r.all("Link"), vec!["<a>", "<b>"]);
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
