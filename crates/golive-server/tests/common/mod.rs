//! Shared helpers of the server's integration tests: the real `golive` binary (golive-client's
//! harness), raw signalling sockets read with golive-client's signalling code, and
//! Chromium-shaped offers (no media flows in these tests).
#![allow(dead_code)]

use futures_util::SinkExt;
use golive_client::http::HttpResponse;
use golive_client::signal::{Incoming, connect_ws, is_audience, next_incoming};
use golive_proto::{ErrorCode, ServerMessage};
use std::process::Command;
use std::time::Duration;
use tokio_tungstenite::tungstenite::Message;

pub use golive_client::ServerProcess as Server;
pub use golive_client::signal::Ws;

pub const STEP: Duration = Duration::from_secs(10);

pub fn start() -> Server {
    start_with(&[])
}

pub fn start_with(extra: &[&str]) -> Server {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_golive"));
    cmd.args(["--listen", "127.0.0.1:0", "--workers", "2"])
        .args(extra);
    start_command(cmd)
}

/// Starts a prepared `golive` command and waits for its `listening on` line. Its stderr is
/// printed if the test fails.
pub fn start_command(mut cmd: Command) -> Server {
    cmd.env("RUST_LOG", "warn");
    Server::start_command(cmd).unwrap_or_else(|e| panic!("{e}"))
}

pub async fn connect(s: &Server) -> Ws {
    connect_ws(&s.ws_url(), STEP)
        .await
        .unwrap_or_else(|e| panic!("{e}"))
}

pub async fn send(ws: &mut Ws, text: &str) {
    ws.send(Message::text(text)).await.unwrap();
}

pub async fn recv(ws: &mut Ws) -> ServerMessage {
    let incoming = tokio::time::timeout(STEP, next_incoming(ws, None))
        .await
        .expect("a reply in time")
        .unwrap_or_else(|e| panic!("{e}"));
    match incoming {
        Incoming::Message(m) => m,
        Incoming::Closed(how) => panic!("the socket closed: {how}"),
    }
}

/// The next reply (answer, error, ended): audience messages (counts, chat, hearts) are skipped.
pub async fn recv_reply(ws: &mut Ws) -> ServerMessage {
    loop {
        let m = recv(ws).await;
        if !is_audience(&m) {
            return m;
        }
    }
}

pub async fn expect_error(ws: &mut Ws, text: &str, code: ErrorCode) -> String {
    send(ws, text).await;
    match recv_reply(ws).await {
        ServerMessage::Error { code: c, message } => {
            assert_eq!(c, code, "for {text:.80}: {message}");
            assert!(!message.is_empty());
            message
        }
        other => panic!("for {text:.80}: expected error {code}, got {other:?}"),
    }
}

/// A Chromium-shaped offer: BUNDLE, audio (Opus) and video with the given codecs.
pub fn offer(video: &[(u8, &str, &str)]) -> String {
    let pts: Vec<String> = video.iter().map(|c| c.0.to_string()).collect();
    let mut s = String::from(
        "v=0\r\no=- 4611731400430051336 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n\
         a=group:BUNDLE 0 1\r\na=extmap-allow-mixed\r\na=msid-semantic: WMS\r\n\
         m=audio 9 UDP/TLS/RTP/SAVPF 111\r\nc=IN IP4 0.0.0.0\r\na=rtcp:9 IN IP4 0.0.0.0\r\n\
         a=ice-ufrag:abcd\r\na=ice-pwd:abcdefghijklmnopqrstuvwx\r\na=ice-options:trickle\r\n\
         a=fingerprint:sha-256 5D:7D:4C:6E:5C:4D:9A:1C:6F:3B:0E:1E:9E:8D:63:7E:8B:6C:15:1E:96:02:F6:59:1D:2E:8E:0C:3E:5E:33:0A\r\n\
         a=setup:actpass\r\na=mid:0\r\na=sendrecv\r\na=rtcp-mux\r\n\
         a=rtpmap:111 opus/48000/2\r\na=fmtp:111 minptime=10;useinbandfec=1\r\n",
    );
    s += &format!(
        "m=video 9 UDP/TLS/RTP/SAVPF {}\r\nc=IN IP4 0.0.0.0\r\na=rtcp:9 IN IP4 0.0.0.0\r\n\
         a=ice-ufrag:abcd\r\na=ice-pwd:abcdefghijklmnopqrstuvwx\r\na=ice-options:trickle\r\n\
         a=fingerprint:sha-256 5D:7D:4C:6E:5C:4D:9A:1C:6F:3B:0E:1E:9E:8D:63:7E:8B:6C:15:1E:96:02:F6:59:1D:2E:8E:0C:3E:5E:33:0A\r\n\
         a=setup:actpass\r\na=mid:1\r\na=sendrecv\r\na=rtcp-mux\r\na=rtcp-rsize\r\n",
        pts.join(" ")
    );
    for (pt, name, fmtp) in video {
        s += &format!(
            "a=rtpmap:{pt} {name}/90000\r\na=rtcp-fb:{pt} nack\r\na=rtcp-fb:{pt} nack pli\r\n"
        );
        if !fmtp.is_empty() {
            s += &format!("a=fmtp:{pt} {fmtp}\r\n");
        }
    }
    s
}

pub fn vp8_offer() -> String {
    offer(&[
        (96, "VP8", ""),
        (
            102,
            "H264",
            "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f",
        ),
    ])
}

pub fn msg(ty: &str, stream: &str, sdp: &str) -> String {
    serde_json::json!({"type": ty, "stream": stream, "sdp": sdp}).to_string()
}

/// An HTTP/1.1 request; returns the status and the response as text (status line, headers with
/// lower-cased names, body).
pub async fn http(
    s: &Server,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, String) {
    let r = request(s, method, path, headers, body).await;
    let mut text = format!("HTTP/1.1 {}\r\n", r.status);
    for (n, v) in &r.headers {
        text += &format!("{n}: {v}\r\n");
    }
    (r.status, text + "\r\n" + &r.body)
}

/// The body of a `GET path` that must answer 200.
pub async fn reqwest_get(s: &Server, path: &str) -> String {
    let r = request(s, "GET", path, &[], "").await;
    assert_eq!(r.status, 200, "{path}: {r:?}");
    r.body
}

async fn request(
    s: &Server,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> HttpResponse {
    let authority = s.addr.to_string();
    golive_client::http::request(&authority, method, path, headers, body.as_bytes(), STEP)
        .await
        .unwrap_or_else(|e| panic!("{e}"))
}

/// The value of the first `/metrics` line that starts with `line_start` (0 when absent).
pub async fn metric(s: &Server, line_start: &str) -> f64 {
    let body = reqwest_get(s, "/metrics").await;
    body.lines()
        .find(|l| l.starts_with(line_start))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

/// A healthy client is served: `/healthz` is ok, and a new WebSocket session answers.
pub async fn still_serving(s: &Server) {
    assert!(
        reqwest_get(s, "/healthz")
            .await
            .contains("\"status\":\"ok\"")
    );
    let mut ws = connect(s).await;
    // A small frame, so it fits every frame limit the tests set.
    expect_error(
        &mut ws,
        &msg("watch", "nothing-here", "v=0"),
        ErrorCode::StreamNotFound,
    )
    .await;
}
