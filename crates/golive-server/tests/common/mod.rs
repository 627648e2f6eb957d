//! Shared helpers of the server's integration tests: the real `golive` binary, a WebSocket
//! client, and Chromium-shaped offers (no media flows in these tests).
#![allow(dead_code)]

use futures_util::{SinkExt, StreamExt};
use golive_proto::{ErrorCode, ServerMessage};
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;
use tokio_tungstenite::tungstenite::Message;

pub const STEP: Duration = Duration::from_secs(10);

pub struct Server {
    pub child: Child,
    pub addr: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn start() -> Server {
    start_with(&[])
}

pub fn start_with(extra: &[&str]) -> Server {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_golive"));
    cmd.args(["--listen", "127.0.0.1:0", "--workers", "2"])
        .args(extra);
    start_command(cmd)
}

/// Starts a prepared `golive` command and waits for its `listening on` line.
pub fn start_command(mut cmd: Command) -> Server {
    let mut child = cmd
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("golive starts");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let addr = line
        .trim()
        .strip_prefix("listening on http://")
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
        .to_owned();
    Server { child, addr }
}

pub type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

pub async fn connect(s: &Server) -> Ws {
    let (ws, _) = tokio_tungstenite::connect_async(format!("ws://{}/ws", s.addr))
        .await
        .expect("websocket connects");
    ws
}

pub async fn send(ws: &mut Ws, text: &str) {
    ws.send(Message::text(text)).await.unwrap();
}

pub async fn recv(ws: &mut Ws) -> ServerMessage {
    loop {
        let m = tokio::time::timeout(STEP, ws.next())
            .await
            .expect("a reply in time")
            .expect("socket open")
            .expect("no socket error");
        if let Message::Text(t) = m {
            return ServerMessage::parse(&t).expect("server JSON parses");
        }
    }
}

/// The next reply (answer, error, ended): audience messages (counts, chat, hearts) are skipped.
pub async fn recv_reply(ws: &mut Ws) -> ServerMessage {
    loop {
        match recv(ws).await {
            ServerMessage::Viewers { .. }
            | ServerMessage::Chat { .. }
            | ServerMessage::Hearts { .. }
            | ServerMessage::Removed { .. }
            | ServerMessage::Reconnecting { .. }
            | ServerMessage::Resumed => continue,
            m => return m,
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

/// A raw HTTP/1.1 request; returns the status line's code and the whole response text.
pub async fn http(
    s: &Server,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut c = tokio::net::TcpStream::connect(&s.addr).await.unwrap();
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (n, v) in headers {
        req += &format!("{n}: {v}\r\n");
    }
    req += "\r\n";
    req += body;
    c.write_all(req.as_bytes()).await.unwrap();
    let mut out = String::new();
    c.read_to_string(&mut out).await.unwrap();
    let code = out
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (code, out)
}

/// A minimal HTTP/1.1 GET over a raw socket, to avoid an HTTP client dependency.
pub async fn reqwest_get(s: &Server, path: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut c = tokio::net::TcpStream::connect(&s.addr).await.unwrap();
    c.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut out = String::new();
    c.read_to_string(&mut out).await.unwrap();
    assert!(out.starts_with("HTTP/1.1 200"), "{path}: {out:.200}");
    out.split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default()
}
