//! A signalling client: one WebSocket to `/ws`, JSON text frames of `golive-proto` types.

use anyhow::{Context, Result, anyhow, bail};
use futures_util::{SinkExt, StreamExt};
use golive_proto::{ClientMessage, ErrorCode, ServerMessage};
use std::net::SocketAddr;
use std::time::Duration;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream, connect_async};

/// How long [`SignalClient::recv`] waits for a message.
pub const RECV_TIMEOUT: Duration = Duration::from_secs(10);

/// How a WebSocket ended, as seen by the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Closed {
    /// The server sent a close frame (code absent when the frame had no body).
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

/// What one read of the socket gave.
#[derive(Debug)]
enum Incoming {
    Message(ServerMessage),
    Closed(Closed),
}

/// One signalling session (a broadcaster or a viewer, or a socket used to provoke errors).
pub struct SignalClient {
    ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
    closed: Option<Closed>,
}

impl std::fmt::Debug for SignalClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SignalClient")
            .field("closed", &self.closed)
            .finish()
    }
}

impl SignalClient {
    /// Opens `ws://<addr>/ws`.
    pub async fn connect(http_addr: SocketAddr) -> Result<Self> {
        let url = format!("ws://{http_addr}/ws");
        let (ws, _response) = tokio::time::timeout(RECV_TIMEOUT, connect_async(url.as_str()))
            .await
            .map_err(|_| anyhow!("WebSocket connect to {url} timed out"))?
            .with_context(|| format!("WebSocket connect to {url}"))?;
        Ok(Self { ws, closed: None })
    }

    /// Sends one protocol message.
    pub async fn send(&mut self, msg: &ClientMessage) -> Result<()> {
        self.send_text(msg.to_json()).await
    }

    /// Sends an arbitrary text frame (for malformed-frame tests).
    pub async fn send_text(&mut self, text: impl Into<String>) -> Result<()> {
        self.ws
            .send(Message::text(text.into()))
            .await
            .context("sending a text frame")
    }

    /// Sends an arbitrary binary frame.
    pub async fn send_binary(&mut self, data: Vec<u8>) -> Result<()> {
        self.ws
            .send(Message::binary(data))
            .await
            .context("sending a binary frame")
    }

    /// The next server message, within [`RECV_TIMEOUT`].
    pub async fn recv(&mut self) -> Result<ServerMessage> {
        self.recv_timeout(RECV_TIMEOUT).await
    }

    /// The next server message, within `timeout`.
    pub async fn recv_timeout(&mut self, timeout: Duration) -> Result<ServerMessage> {
        match tokio::time::timeout(timeout, self.next_incoming()).await {
            Err(_) => bail!("no server message within {timeout:?}"),
            Ok(Incoming::Message(msg)) => Ok(msg),
            Ok(Incoming::Closed(how)) => bail!("the server closed the socket: {how:?}"),
        }
    }

    /// Reads messages until one satisfies `pred` (discarding the others) and returns it;
    /// fails after `timeout` in all or when the socket closes.
    pub async fn recv_until(
        &mut self,
        timeout: Duration,
        mut pred: impl FnMut(&ServerMessage) -> bool,
    ) -> Result<ServerMessage> {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut skipped = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let msg = self
                .recv_timeout(left)
                .await
                .with_context(|| format!("waiting for a matching message; skipped {skipped:?}"))?;
            if pred(&msg) {
                return Ok(msg);
            }
            skipped.push(msg);
        }
    }

    /// The next message that is not a `viewers` count (those arrive at any time).
    pub async fn recv_reply(&mut self) -> Result<ServerMessage> {
        self.recv_until(RECV_TIMEOUT, |m| {
            !matches!(m, ServerMessage::Viewers { .. })
        })
        .await
    }

    /// Waits for an `answer` and returns its SDP; an `error` instead is an error.
    pub async fn expect_answer(&mut self) -> Result<String> {
        match self.recv_reply().await? {
            ServerMessage::Answer { sdp, .. } => Ok(sdp),
            other => bail!("expected an answer, got {other:?}"),
        }
    }

    /// Waits for an `error` and returns its code and message; anything else is an error.
    pub async fn expect_error(&mut self) -> Result<(ErrorCode, String)> {
        match self.recv_reply().await? {
            ServerMessage::Error { code, message } => Ok((code, message)),
            other => bail!("expected an error, got {other:?}"),
        }
    }

    /// Waits until the server ends the connection, discarding messages, and says how.
    pub async fn wait_closed(&mut self, timeout: Duration) -> Result<Closed> {
        tokio::time::timeout(timeout, async {
            loop {
                if let Incoming::Closed(how) = self.next_incoming().await {
                    return how;
                }
            }
        })
        .await
        .map_err(|_| anyhow!("the socket was not closed within {timeout:?}"))
    }

    /// Closes the socket from our side (a clean close handshake, best effort).
    pub async fn close(mut self) {
        let _ = tokio::time::timeout(Duration::from_secs(2), self.ws.close(None)).await;
    }

    async fn next_incoming(&mut self) -> Incoming {
        if let Some(how) = &self.closed {
            return Incoming::Closed(how.clone());
        }
        loop {
            let how = match self.ws.next().await {
                Some(Ok(Message::Text(text))) => match ServerMessage::parse(text.as_str()) {
                    Ok(msg) => return Incoming::Message(msg),
                    // A frame the protocol does not define is a server bug; the test fails on it.
                    Err(e) => {
                        panic!("the server sent a frame that is not a ServerMessage ({e}): {text}")
                    }
                },
                Some(Ok(Message::Binary(data))) => {
                    panic!("the server sent a binary frame of {} bytes", data.len())
                }
                Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => continue,
                Some(Ok(Message::Close(frame))) => match frame {
                    Some(f) => Closed::Frame {
                        code: Some(u16::from(f.code)),
                        reason: f.reason.to_string(),
                    },
                    None => Closed::Frame {
                        code: None,
                        reason: String::new(),
                    },
                },
                Some(Err(e)) => Closed::Abrupt(e.to_string()),
                None => Closed::Abrupt("stream ended".into()),
            };
            self.closed = Some(how.clone());
            return Incoming::Closed(how);
        }
    }
}
