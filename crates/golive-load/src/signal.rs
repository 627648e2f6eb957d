//! The signalling side of one session: a WebSocket to `/ws` speaking `golive-proto`.
//!
//! Every frame any of our sockets receives is counted in the run's [`WsCounters`] (frames,
//! bytes, and by type), so a run can say what the server's chat, hearts and viewer counts
//! cost in messages delivered. Heart batches are the bulk of it without batching (one frame
//! per heart per member), so they are read without a JSON parser when they have the shape the
//! server writes.

use anyhow::{Context, Result, anyhow, bail};
use futures_util::{SinkExt, StreamExt};
use golive_proto::{ClientMessage, EndReason, ErrorCode, ServerMessage};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream, connect_async};

/// What every signalling socket of a run received and sent, summed.
#[derive(Debug, Default)]
pub struct WsCounters {
    /// Frames received (text, binary, close), and their payload bytes.
    pub messages_in: AtomicU64,
    pub bytes_in: AtomicU64,
    /// `hearts` frames, the hearts they carried (sum of `count`), and the highest `total`
    /// any of them reported (the server's count for the broadcast).
    pub hearts_batches_in: AtomicU64,
    pub hearts_in: AtomicU64,
    pub hearts_total_seen: AtomicU64,
    pub chat_in: AtomicU64,
    pub viewers_in: AtomicU64,
    /// `error` frames: `rate_limited` ones (chat or messages too fast), and any other code.
    pub rate_limited_errors: AtomicU64,
    pub other_errors: AtomicU64,
    /// What our viewers sent.
    pub hearts_sent: AtomicU64,
    pub chat_sent: AtomicU64,
}

impl WsCounters {
    fn count(&self, text: &str) {
        if let Some((count, total)) = fast_hearts(text) {
            self.hearts(count, total);
            return;
        }
        match ServerMessage::parse(text) {
            Ok(ServerMessage::Hearts { count, total }) => self.hearts(count, total),
            Ok(ServerMessage::Chat { .. }) => {
                self.chat_in.fetch_add(1, Ordering::Relaxed);
            }
            Ok(ServerMessage::Viewers { .. }) => {
                self.viewers_in.fetch_add(1, Ordering::Relaxed);
            }
            Ok(ServerMessage::Error { code, .. }) => {
                let c = if code == ErrorCode::RateLimited {
                    &self.rate_limited_errors
                } else {
                    &self.other_errors
                };
                c.fetch_add(1, Ordering::Relaxed);
            }
            _ => {}
        }
    }

    fn hearts(&self, count: u64, total: u64) {
        self.hearts_batches_in.fetch_add(1, Ordering::Relaxed);
        self.hearts_in.fetch_add(count, Ordering::Relaxed);
        self.hearts_total_seen.fetch_max(total, Ordering::Relaxed);
    }
}

/// `(count, total)` of a `hearts` frame in the exact shape the server writes
/// (`{"type":"hearts","count":1,"total":7}`), without a JSON parser; `None` for anything else.
fn fast_hearts(text: &str) -> Option<(u64, u64)> {
    let rest = text.strip_prefix(r#"{"type":"hearts","count":"#)?;
    let (count, rest) = rest.split_once(r#","total":"#)?;
    let total = rest.strip_suffix('}')?;
    Some((count.parse().ok()?, total.parse().ok()?))
}

pub struct Signal {
    ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
    counters: Arc<WsCounters>,
    /// The close frame's code and reason, if the server sent one.
    close_reason: Option<String>,
}

/// What the server said after the answer.
#[derive(Debug)]
pub enum Later {
    /// Anything else: viewer counts, chat, hearts (counted in [`WsCounters`]).
    Other,
    Ended(EndReason),
    /// The socket closed; the server's close code and reason, if it gave them.
    Closed(Option<String>),
}

impl Signal {
    pub async fn connect(url: &str, timeout: Duration, counters: Arc<WsCounters>) -> Result<Self> {
        let (ws, _) = tokio::time::timeout(timeout, connect_async(url))
            .await
            .map_err(|_| anyhow!("WebSocket connect to {url} timed out"))?
            .with_context(|| format!("WebSocket connect to {url}"))?;
        Ok(Self {
            ws,
            counters,
            close_reason: None,
        })
    }

    pub async fn send(&mut self, msg: &ClientMessage) -> Result<()> {
        self.ws
            .send(Message::text(msg.to_json()))
            .await
            .context("sending on the WebSocket")
    }

    /// A heart for the stream.
    pub async fn heart(&mut self) -> Result<()> {
        self.send(&ClientMessage::Heart).await?;
        self.counters.hearts_sent.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// A chat message.
    pub async fn chat(&mut self, text: String) -> Result<()> {
        self.send(&ClientMessage::Chat { text }).await?;
        self.counters.chat_sent.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// Waits for the answer to a publish or watch; an `error` reply is an error.
    pub async fn answer(&mut self, timeout: Duration) -> Result<String> {
        let wait = async {
            loop {
                match self.next().await? {
                    Some(ServerMessage::Answer { sdp, .. }) => return Ok(sdp),
                    Some(ServerMessage::Error { code, message }) => {
                        let hint = if code.as_str() == "rate_limited" {
                            " (a load test comes from one address: raise the server's \
                             --max-new-sessions-per-sec-per-ip and --max-sessions-per-ip)"
                        } else {
                            ""
                        };
                        bail!("server refused: {code}: {message}{hint}")
                    }
                    Some(ServerMessage::Ended { reason }) => {
                        bail!("ended before answer: {reason:?}")
                    }
                    // Viewer counts, chat, hearts: not what we wait for.
                    Some(_) => {}
                    None => bail!("the server closed the WebSocket before answering"),
                }
            }
        };
        tokio::time::timeout(timeout, wait)
            .await
            .map_err(|_| anyhow!("no answer within {timeout:?}"))?
    }

    /// The next thing that matters after the answer.
    pub async fn later(&mut self) -> Later {
        match self.next().await {
            Ok(Some(ServerMessage::Ended { reason })) => Later::Ended(reason),
            Ok(Some(_)) => Later::Other,
            Ok(None) => Later::Closed(self.close_reason.take()),
            Err(e) => Later::Closed(Some(format!("{e:#}"))),
        }
    }

    /// Ends the session politely: `leave`, then a close frame.
    pub async fn leave(mut self) {
        let _ = self.send(&ClientMessage::Leave).await;
        let _ = self.ws.close(None).await;
    }

    /// The next message that matters to the session (an answer, an error, `ended`); every
    /// frame on the way is counted. Cancel-safe: a frame is handled as soon as it is read.
    async fn next(&mut self) -> Result<Option<ServerMessage>> {
        let c = &self.counters;
        loop {
            let frame = match self.ws.next().await {
                None => return Ok(None),
                Some(Err(e)) => return Err(e).context("reading the WebSocket"),
                Some(Ok(f)) => f,
            };
            if !matches!(frame, Message::Ping(_) | Message::Pong(_)) {
                c.messages_in.fetch_add(1, Ordering::Relaxed);
                c.bytes_in.fetch_add(frame.len() as u64, Ordering::Relaxed);
            }
            match frame {
                Message::Text(text) => {
                    c.count(&text);
                    // The frames a session waits for are rare: skip the parse for the rest.
                    if fast_hearts(&text).is_some() {
                        continue;
                    }
                    return ServerMessage::parse(&text)
                        .map(Some)
                        .with_context(|| format!("unparsable server message {text}"));
                }
                Message::Close(f) => {
                    self.close_reason = f.map(|f| format!("closed {}: {}", f.code, f.reason));
                    return Ok(None);
                }
                _ => {}
            }
        }
    }
}

/// `ws://host:port/ws` from what a person types: `http://host:port`, `host:port`, or a
/// `ws://` URL as it is.
pub fn ws_url(server: &str) -> String {
    let s = server.trim().trim_end_matches('/');
    if s.starts_with("ws://") || s.starts_with("wss://") {
        return s.to_owned();
    }
    let (scheme, rest) = if let Some(r) = s.strip_prefix("https://") {
        ("wss", r)
    } else if let Some(r) = s.strip_prefix("http://") {
        ("ws", r)
    } else {
        ("ws", s)
    };
    format!("{scheme}://{rest}/ws")
}

/// The UDP ports of the server's host candidates in an answer.
pub fn candidate_ports(sdp: &str) -> Vec<u16> {
    sdp.lines()
        .filter_map(|l| l.trim().strip_prefix("a=candidate:"))
        .filter_map(|c| {
            let f: Vec<&str> = c.split_whitespace().collect();
            (f.len() > 5 && f[1] == "1" && f[2].eq_ignore_ascii_case("udp"))
                .then(|| f[5].parse().ok())
                .flatten()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_become_the_websocket_endpoint() {
        assert_eq!(ws_url("http://127.0.0.1:8080"), "ws://127.0.0.1:8080/ws");
        assert_eq!(ws_url("http://127.0.0.1:8080/"), "ws://127.0.0.1:8080/ws");
        assert_eq!(ws_url("127.0.0.1:8080"), "ws://127.0.0.1:8080/ws");
        assert_eq!(ws_url("https://live.example"), "wss://live.example/ws");
        assert_eq!(ws_url("ws://h:1/ws"), "ws://h:1/ws");
    }

    #[test]
    fn heart_batches_are_read_without_a_parser_in_the_server_shape() {
        let text = ServerMessage::Hearts {
            count: 3,
            total: 1234,
        }
        .to_json();
        assert_eq!(fast_hearts(&text), Some((3, 1234)));
        assert_eq!(fast_hearts(r#"{"type":"viewers","count":3}"#), None);
        assert_eq!(
            fast_hearts(r#"{"type":"hearts","count":x,"total":1}"#),
            None
        );
        let c = WsCounters::default();
        c.count(&text);
        c.count(r#"{"type":"hearts", "total":9, "count":2}"#);
        c.count(r#"{"type":"error","code":"rate_limited","message":"slow"}"#);
        c.count(r#"{"type":"chat","id":1,"from":"a","text":"hi","at":"x"}"#);
        assert_eq!(c.hearts_batches_in.load(Ordering::Relaxed), 2);
        assert_eq!(c.hearts_in.load(Ordering::Relaxed), 5);
        assert_eq!(c.hearts_total_seen.load(Ordering::Relaxed), 1234);
        assert_eq!(c.rate_limited_errors.load(Ordering::Relaxed), 1);
        assert_eq!(c.chat_in.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn candidate_ports_come_from_host_candidates() {
        let sdp = "v=0\r\na=candidate:1 1 udp 2130706431 127.0.0.1 40123 typ host\r\n\
                   a=end-of-candidates\r\na=candidate:1 1 udp 2130706431 127.0.0.1 40124 typ host\r\n";
        assert_eq!(candidate_ports(sdp), vec![40123, 40124]);
    }
}
