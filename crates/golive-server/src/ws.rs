//! The WebSocket front-end of the signalling protocol (`docs/protocol.md`): one socket, one
//! session. This module owns what is about the socket (admission before the upgrade, frame
//! size, message rate, pings and the idle timeout, a client that does not read, close codes);
//! the session behind it owns what the messages mean.

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket};
use axum::extract::{ConnectInfo, State, WebSocketUpgrade};
use axum::response::Response;
use golive_proto::{CLOSE_MESSAGE_TOO_BIG, ClientMessage, ErrorCode, ProtocolError, ServerMessage};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::limits::{IpSlot, Refusal, TokenBucket};
use crate::metrics::Metrics;
use crate::outbox::{Next, OutboxRx, Outgoing};
use crate::session::{self, Admission, Refused};

/// Frames above the frame limit are read (up to this, or twice the limit) so they can be
/// refused with 1009 rather than by a dropped connection.
const READ_LIMIT_BYTES: usize = 1024 * 1024;
/// A client that keeps flooding after it was told `rate_limited` is cut: the refusals it can
/// collect are themselves a bucket, of this many...
const FLOOD_STRIKES: f64 = 100.0;
/// ...refilled over this long.
const FLOOD_WINDOW: Duration = Duration::from_secs(10);
/// How long a close frame may take to go out before the connection is simply dropped.
const CLOSE_SEND_TIMEOUT: Duration = Duration::from_secs(1);
/// WebSocket close codes (RFC 6455).
const CLOSE_GOING_AWAY: u16 = 1001;
const CLOSE_POLICY: u16 = 1008;
const CLOSE_TRY_LATER: u16 = 1013;

/// What the WebSocket front-end allows one socket.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Largest frame; a larger one closes the socket with 1009.
    pub max_frame_bytes: usize,
    /// Messages a second (bursts of twice that); more are answered `rate_limited`.
    pub max_messages_per_sec: u32,
    /// A socket that sends nothing (not even a pong) this long, or does not read, is closed.
    pub idle_timeout: Duration,
}

/// Each WebSocket's read buffer; a larger message grows it while it is read.
const WS_BUFFER_BYTES: usize = 4096;

/// `GET /ws`: admits the client (or says why not, over the socket), then runs the session.
pub async fn upgrade(
    State(admission): State<Arc<Admission>>,
    State(limits): State<Limits>,
    State(ctx): State<session::Context>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: axum::http::HeaderMap,
    upgrade: WebSocketUpgrade,
) -> Response {
    let read_limit = READ_LIMIT_BYTES.max(limits.max_frame_bytes.saturating_mul(2));
    // Refusals are sent over the socket: a browser cannot read the status of a failed upgrade.
    let admitted = admission.admit(peer, &headers);
    upgrade
        // Signalling messages are small and few: tungstenite's default 128 KiB read and write
        // buffers per connection would be most of a viewer's memory on the server.
        .read_buffer_size(WS_BUFFER_BYTES)
        .write_buffer_size(0)
        .max_message_size(read_limit)
        .max_frame_size(read_limit)
        .on_upgrade(move |socket| run(socket, ctx, limits, admitted))
}

fn text_of(msg: &ServerMessage) -> Message {
    Message::Text(Utf8Bytes::from(msg.to_json()))
}

fn message_of(out: Outgoing) -> Message {
    match out {
        Outgoing::Message(m) => text_of(&m),
        Outgoing::Frame(f) => Message::Text(f),
    }
}

fn close(code: u16, reason: &str) -> Message {
    Message::Close(Some(CloseFrame {
        code,
        reason: Utf8Bytes::from(reason.to_owned()),
    }))
}

/// The WebSocket front-end: one socket, one session, until either closes. `admitted` carries
/// the client address's place (or why it has none).
async fn run(
    mut ws: WebSocket,
    ctx: session::Context,
    limits: Limits,
    admitted: Result<IpSlot, Refused>,
) {
    let metrics = ctx.metrics.clone();
    let _slot = match admitted {
        Ok(slot) => slot,
        Err(refused) => {
            let (error, code) = match refused {
                Refused::Draining => (
                    ProtocolError::new(ErrorCode::Draining, "the server is shutting down"),
                    CLOSE_GOING_AWAY,
                ),
                Refused::Limit(r) => {
                    metrics.limit_refused(r.label());
                    let code = match r {
                        Refusal::NewSessionsPerSecond => CLOSE_TRY_LATER,
                        Refusal::SessionsPerIp => CLOSE_POLICY,
                    };
                    (r.error(), code)
                }
            };
            metrics.signalling_error(error.code.as_str());
            let _ = ws.send(text_of(&error.into())).await;
            let _ = ws.send(close(code, "refused")).await;
            return;
        }
    };
    let idle = limits.idle_timeout;
    let max_frame = limits.max_frame_bytes;
    let per_sec = f64::from(limits.max_messages_per_sec.max(1));
    let mut message_limit = TokenBucket::new(per_sec * 2.0, per_sec, Instant::now());
    let mut strikes = TokenBucket::new(
        FLOOD_STRIKES,
        FLOOD_STRIKES / FLOOD_WINDOW.as_secs_f64(),
        Instant::now(),
    );
    let mut ping = tokio::time::interval(idle / 3);
    ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_heard = Instant::now();
    let (session, mut outbox) = session::spawn(ctx);
    let why = loop {
        tokio::select! {
            frame = ws.recv() => {
                let frame = match frame {
                    Some(Ok(f)) => f,
                    Some(Err(e)) => {
                        // Frames past the read limit are refused by the WebSocket layer before
                        // we see them ("Space limit exceeded: Message too long").
                        tracing::debug!(session = session.id.0, "socket error: {e}");
                        if e.to_string().contains("too long") {
                            break Some(close_too_big(max_frame));
                        }
                        break None;
                    }
                    None => break None,
                };
                last_heard = Instant::now();
                let text = match frame {
                    Message::Text(t) => t,
                    Message::Binary(_) => {
                        let e = ProtocolError::bad_request("frames are JSON text, not binary");
                        match send(&mut ws, text_of(&e.into()), idle, &mut outbox).await {
                            Sent::Done => continue,
                            Sent::Failed => break None,
                            Sent::Cut => break Some(slow_reader(&metrics)),
                        }
                    }
                    Message::Close(_) => break None,
                    Message::Ping(_) | Message::Pong(_) => continue,
                };
                if text.len() > max_frame {
                    break Some(close_too_big(max_frame));
                }
                let reply = if !message_limit.take(Instant::now()) {
                    metrics.limit_refused("messages_per_sec");
                    metrics.signalling_error(ErrorCode::RateLimited.as_str());
                    Err(ProtocolError::new(
                        ErrorCode::RateLimited,
                        "too many messages; slow down",
                    ))
                } else {
                    match ClientMessage::parse(&text) {
                        Ok(msg) => session.call(msg).await,
                        Err(e) => {
                            metrics.signalling_error(e.code.as_str());
                            Err(e)
                        }
                    }
                };
                let out = match reply {
                    Ok(Some(m)) => m,
                    Ok(None) => continue,
                    Err(e) if e.code == ErrorCode::RateLimited && !strikes.take(Instant::now()) => {
                        // It keeps sending what it is told it may not: every refusal still
                        // costs a parse and a reply, so stop serving it.
                        metrics.limit_refused("ws_flood");
                        break Some(close(CLOSE_POLICY, "too many messages"));
                    }
                    Err(e) => e.into(),
                };
                match send(&mut ws, text_of(&out), idle, &mut outbox).await {
                    Sent::Done => {}
                    Sent::Failed => break None,
                    Sent::Cut => break Some(slow_reader(&metrics)),
                }
            }
            next = outbox.next() => match next {
                Next::Send(m) => match send(&mut ws, message_of(m), idle, &mut outbox).await {
                    Sent::Done => {}
                    Sent::Failed => {
                        metrics.limit_refused("ws_slow_reader");
                        break None;
                    }
                    Sent::Cut => break Some(slow_reader(&metrics)),
                },
                Next::Cut => break Some(slow_reader(&metrics)),
                // The session ended on its own: the server is shutting down.
                Next::Closed => break Some(close(CLOSE_GOING_AWAY, "server shutting down")),
            },
            _ = ping.tick() => {
                if last_heard.elapsed() > idle {
                    metrics.limit_refused("ws_idle");
                    break Some(close(CLOSE_GOING_AWAY, "idle"));
                }
                match send(&mut ws, Message::Ping(Default::default()), idle, &mut outbox).await {
                    Sent::Done => {}
                    Sent::Failed => break None,
                    Sent::Cut => break Some(slow_reader(&metrics)),
                }
            }
        }
    };
    if let Some(close) = why {
        // A client that does not read may not take the close frame either.
        let _ = tokio::time::timeout(CLOSE_SEND_TIMEOUT, ws.send(close)).await;
    }
}

/// How a send went.
enum Sent {
    Done,
    /// The socket is closed, or did not take the message within the idle timeout.
    Failed,
    /// The client's queue filled up meanwhile.
    Cut,
}

/// Sends within `limit`, and gives up at once when the client's queue is cut meanwhile: a
/// client that does not read is not waited for.
async fn send(ws: &mut WebSocket, m: Message, limit: Duration, outbox: &mut OutboxRx) -> Sent {
    tokio::select! {
        biased;
        () = outbox.cut() => Sent::Cut,
        r = tokio::time::timeout(limit, ws.send(m)) => match r {
            Ok(Ok(())) => Sent::Done,
            _ => Sent::Failed,
        },
    }
}

/// A client whose queue filled up: counted, and closed with 1008 (policy violation). Not 1013
/// (try again later), which says the server is overloaded and invites an immediate retry: here
/// the server is fine and the client is the one that does not keep up.
fn slow_reader(metrics: &Metrics) -> Message {
    metrics.limit_refused("ws_slow_reader");
    close(CLOSE_POLICY, "not reading")
}

fn close_too_big(max: usize) -> Message {
    close(
        CLOSE_MESSAGE_TOO_BIG,
        &format!("a frame is at most {max} bytes"),
    )
}
