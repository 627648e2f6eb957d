//! The signalling client: one WebSocket to `/ws`, JSON text frames of `golive-proto` types.
//!
//! [`SignalClient`] serves a session (publish or watch, then audience messages) and a test that
//! provokes errors; [`next_incoming`] reads a raw socket for tests that need the socket itself.
//! A client can count every frame it receives into shared [`FrameCounts`], so a load run can say
//! what chat, hearts and viewer counts cost in messages. Heart batches are the bulk of those, so
//! they are read without a JSON parser when they have the shape the server writes.

use futures_util::{SinkExt, StreamExt};
use golive_proto::{ClientMessage, EndReason, ErrorCode, ServerMessage};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream, connect_async};

/// A signalling WebSocket.
pub type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// How long a reply may take by default.
pub const RECV_TIMEOUT: Duration = Duration::from_secs(10);

/// How a WebSocket ended, as the client saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Closed {
    /// The server sent a close frame (the code is absent when the frame had no body).
    Frame { code: Option<u16>, reason: String },
    /// The connection ended without a close frame.
    Abrupt(String),
}

impl Closed {
    pub fn code(&self) -> Option<u16> {
        match self {
            Closed::Frame { code, .. } => *code,
            Closed::Abrupt(_) => None,
        }
    }
}

impl std::fmt::Display for Closed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Closed::Frame {
                code: Some(code),
                reason,
            } => write!(f, "closed {code}: {reason}"),
            Closed::Frame { code: None, .. } => f.write_str("closed without a code"),
            Closed::Abrupt(why) => write!(f, "closed abruptly: {why}"),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SignalError {
    #[error("WebSocket connect to {url}: {error}")]
    Connect { url: String, error: String },
    #[error("sending on the WebSocket: {0}")]
    Send(String),
    #[error("no server message within {0:?}")]
    Timeout(Duration),
    #[error("the server closed the socket ({0})")]
    Closed(Closed),
    #[error("the server sent a frame that is not a ServerMessage: {0}")]
    NotProtocol(String),
    #[error("server refused: {code}: {message}")]
    Refused { code: ErrorCode, message: String },
    #[error("the session ended: {0:?}")]
    Ended(EndReason),
    #[error("expected {expected}, got {got:?}")]
    Unexpected {
        expected: &'static str,
        got: Box<ServerMessage>,
    },
}

/// What one read of the socket gave.
#[derive(Debug, Clone, PartialEq)]
pub enum Incoming {
    Message(ServerMessage),
    Closed(Closed),
}

/// What every counted socket received and sent, summed.
#[derive(Debug, Default)]
pub struct FrameCounts {
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
    /// What the clients sent.
    pub hearts_sent: AtomicU64,
    pub chat_sent: AtomicU64,
}

impl FrameCounts {
    fn count(&self, msg: &ServerMessage) {
        let counter = match msg {
            ServerMessage::Hearts { count, total } => {
                self.hearts_in.fetch_add(*count, Ordering::Relaxed);
                self.hearts_total_seen.fetch_max(*total, Ordering::Relaxed);
                &self.hearts_batches_in
            }
            ServerMessage::Chat { .. } => &self.chat_in,
            ServerMessage::Viewers { .. } => &self.viewers_in,
            ServerMessage::Error {
                code: ErrorCode::RateLimited,
                ..
            } => &self.rate_limited_errors,
            ServerMessage::Error { .. } => &self.other_errors,
            _ => return,
        };
        counter.fetch_add(1, Ordering::Relaxed);
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

/// Whether a message is about the audience (counts, chat, hearts, the broadcaster's
/// reconnection) or the viewer's own video layer, rather than a reply to what the client sent;
/// such messages arrive at any time.
pub fn is_audience(msg: &ServerMessage) -> bool {
    matches!(
        msg,
        ServerMessage::Viewers { .. }
            | ServerMessage::Quality { .. }
            | ServerMessage::Chat { .. }
            | ServerMessage::Hearts { .. }
            | ServerMessage::Removed { .. }
            | ServerMessage::Reconnecting { .. }
            | ServerMessage::Resumed
    )
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

/// Opens a WebSocket to `url` within `timeout`.
pub async fn connect_ws(url: &str, timeout: Duration) -> Result<Ws, SignalError> {
    let error = |error: String| SignalError::Connect {
        url: url.to_owned(),
        error,
    };
    let (ws, _) = tokio::time::timeout(timeout, connect_async(url))
        .await
        .map_err(|_| error(format!("timed out after {timeout:?}")))?
        .map_err(|e| error(e.to_string()))?;
    Ok(ws)
}

/// The next message or the end of the socket; every frame on the way is counted in `counts`.
/// Cancel-safe: a frame is handled as soon as it is read.
pub async fn next_incoming(
    ws: &mut Ws,
    counts: Option<&FrameCounts>,
) -> Result<Incoming, SignalError> {
    loop {
        let frame = match ws.next().await {
            None => return Ok(Incoming::Closed(Closed::Abrupt("stream ended".into()))),
            Some(Err(e)) => return Ok(Incoming::Closed(Closed::Abrupt(e.to_string()))),
            Some(Ok(frame)) => frame,
        };
        if let Some(c) = counts
            && !matches!(frame, Message::Ping(_) | Message::Pong(_))
        {
            c.messages_in.fetch_add(1, Ordering::Relaxed);
            c.bytes_in.fetch_add(frame.len() as u64, Ordering::Relaxed);
        }
        let msg = match frame {
            Message::Text(text) => match fast_hearts(&text) {
                Some((count, total)) => ServerMessage::Hearts { count, total },
                None => ServerMessage::parse(&text)
                    .map_err(|e| SignalError::NotProtocol(format!("{e}: {text}")))?,
            },
            Message::Binary(data) => {
                return Err(SignalError::NotProtocol(format!(
                    "a binary frame of {} bytes",
                    data.len()
                )));
            }
            Message::Close(frame) => {
                return Ok(Incoming::Closed(match frame {
                    Some(f) => Closed::Frame {
                        code: Some(u16::from(f.code)),
                        reason: f.reason.to_string(),
                    },
                    None => Closed::Frame {
                        code: None,
                        reason: String::new(),
                    },
                }));
            }
            Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => continue,
        };
        if let Some(c) = counts {
            c.count(&msg);
        }
        return Ok(Incoming::Message(msg));
    }
}

/// One signalling session: a broadcaster, a viewer, or a socket used to provoke errors.
pub struct SignalClient {
    ws: Ws,
    closed: Option<Closed>,
    counts: Option<Arc<FrameCounts>>,
}

impl std::fmt::Debug for SignalClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SignalClient")
            .field("closed", &self.closed)
            .finish_non_exhaustive()
    }
}

impl SignalClient {
    /// Opens a WebSocket to `url` (see [`ws_url`]), within [`RECV_TIMEOUT`].
    pub async fn connect(url: &str) -> Result<Self, SignalError> {
        Ok(Self::from_ws(connect_ws(url, RECV_TIMEOUT).await?))
    }

    pub fn from_ws(ws: Ws) -> Self {
        Self {
            ws,
            closed: None,
            counts: None,
        }
    }

    /// Counts every frame this client receives and every heart and chat it sends.
    pub fn with_counts(mut self, counts: Arc<FrameCounts>) -> Self {
        self.counts = Some(counts);
        self
    }

    /// Sends one protocol message.
    pub async fn send(&mut self, msg: &ClientMessage) -> Result<(), SignalError> {
        self.send_frame(Message::text(msg.to_json())).await
    }

    /// Sends an arbitrary text frame (for malformed-frame tests).
    pub async fn send_text(&mut self, text: impl Into<String>) -> Result<(), SignalError> {
        self.send_frame(Message::text(text.into())).await
    }

    /// Sends an arbitrary binary frame.
    pub async fn send_binary(&mut self, data: Vec<u8>) -> Result<(), SignalError> {
        self.send_frame(Message::binary(data)).await
    }

    async fn send_frame(&mut self, frame: Message) -> Result<(), SignalError> {
        self.ws
            .send(frame)
            .await
            .map_err(|e| SignalError::Send(e.to_string()))
    }

    /// A heart for the stream.
    pub async fn heart(&mut self) -> Result<(), SignalError> {
        self.send(&ClientMessage::Heart).await?;
        if let Some(c) = &self.counts {
            c.hearts_sent.fetch_add(1, Ordering::Relaxed);
        }
        Ok(())
    }

    /// A chat message.
    pub async fn chat(&mut self, text: String) -> Result<(), SignalError> {
        self.send(&ClientMessage::Chat { text }).await?;
        if let Some(c) = &self.counts {
            c.chat_sent.fetch_add(1, Ordering::Relaxed);
        }
        Ok(())
    }

    /// The next message or how the socket ended (again on every later call). Cancel-safe.
    pub async fn next(&mut self) -> Result<Incoming, SignalError> {
        if let Some(how) = &self.closed {
            return Ok(Incoming::Closed(how.clone()));
        }
        let incoming = next_incoming(&mut self.ws, self.counts.as_deref()).await?;
        if let Incoming::Closed(how) = &incoming {
            self.closed = Some(how.clone());
        }
        Ok(incoming)
    }

    /// The next server message, within [`RECV_TIMEOUT`].
    pub async fn recv(&mut self) -> Result<ServerMessage, SignalError> {
        self.recv_timeout(RECV_TIMEOUT).await
    }

    /// The next server message, within `timeout`; the socket closing is an error.
    pub async fn recv_timeout(&mut self, timeout: Duration) -> Result<ServerMessage, SignalError> {
        match tokio::time::timeout(timeout, self.next()).await {
            Err(_) => Err(SignalError::Timeout(timeout)),
            Ok(Ok(Incoming::Message(msg))) => Ok(msg),
            Ok(Ok(Incoming::Closed(how))) => Err(SignalError::Closed(how)),
            Ok(Err(e)) => Err(e),
        }
    }

    /// Reads messages until one satisfies `pred` (dropping the others) and returns it; fails
    /// after `timeout` in all, or when the socket closes.
    pub async fn recv_until(
        &mut self,
        timeout: Duration,
        mut pred: impl FnMut(&ServerMessage) -> bool,
    ) -> Result<ServerMessage, SignalError> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let msg = self.recv_timeout(left).await?;
            if pred(&msg) {
                return Ok(msg);
            }
        }
    }

    /// The next message that is not about the audience (see [`is_audience`]).
    pub async fn recv_reply(&mut self) -> Result<ServerMessage, SignalError> {
        self.recv_until(RECV_TIMEOUT, |m| !is_audience(m)).await
    }

    /// Waits for the `answer` to a publish or watch and returns its SDP; an `error` or `ended`
    /// instead is an error.
    pub async fn expect_answer(&mut self) -> Result<String, SignalError> {
        match self.recv_reply().await? {
            ServerMessage::Answer { sdp, .. } => Ok(sdp),
            ServerMessage::Error { code, message } => Err(SignalError::Refused { code, message }),
            ServerMessage::Ended { reason } => Err(SignalError::Ended(reason)),
            other => Err(SignalError::Unexpected {
                expected: "an answer",
                got: Box::new(other),
            }),
        }
    }

    /// Waits for an `error` and returns its code and message; anything else is an error.
    pub async fn expect_error(&mut self) -> Result<(ErrorCode, String), SignalError> {
        match self.recv_reply().await? {
            ServerMessage::Error { code, message } => Ok((code, message)),
            other => Err(SignalError::Unexpected {
                expected: "an error",
                got: Box::new(other),
            }),
        }
    }

    /// Waits until the server ends the connection, dropping messages, and says how.
    pub async fn wait_closed(&mut self, timeout: Duration) -> Result<Closed, SignalError> {
        tokio::time::timeout(timeout, async {
            loop {
                if let Incoming::Closed(how) = self.next().await? {
                    return Ok(how);
                }
            }
        })
        .await
        .map_err(|_| SignalError::Timeout(timeout))?
    }

    /// Closes the socket from our side (a clean close handshake, best effort).
    pub async fn close(mut self) {
        let _ = tokio::time::timeout(Duration::from_secs(2), self.ws.close(None)).await;
    }

    /// Ends the session politely: `leave`, then a close frame.
    pub async fn leave(mut self) {
        let _ = self.send(&ClientMessage::Leave).await;
        self.close().await;
    }
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
    }

    #[test]
    fn counts_sort_messages_by_kind() {
        let c = FrameCounts::default();
        for text in [
            r#"{"type":"hearts","count":3,"total":1234}"#,
            r#"{"type":"hearts", "total":9, "count":2}"#,
            r#"{"type":"error","code":"rate_limited","message":"slow"}"#,
            r#"{"type":"chat","id":1,"from":"a","text":"hi","at":"x"}"#,
        ] {
            c.count(&ServerMessage::parse(text).unwrap());
        }
        assert_eq!(c.hearts_batches_in.load(Ordering::Relaxed), 2);
        assert_eq!(c.hearts_in.load(Ordering::Relaxed), 5);
        assert_eq!(c.hearts_total_seen.load(Ordering::Relaxed), 1234);
        assert_eq!(c.rate_limited_errors.load(Ordering::Relaxed), 1);
        assert_eq!(c.chat_in.load(Ordering::Relaxed), 1);
    }
}
