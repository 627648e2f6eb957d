//! The signalling side of one session: a WebSocket to `/ws` speaking `golive-proto`.

use anyhow::{Context, Result, anyhow, bail};
use futures_util::{SinkExt, StreamExt};
use golive_proto::{ClientMessage, EndReason, ServerMessage};
use std::time::Duration;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream, connect_async};

pub struct Signal {
    ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
}

/// What the server said after the answer.
#[derive(Debug)]
pub enum Later {
    /// Anything else: viewer counts, chat, hearts.
    Other,
    Ended(EndReason),
    Closed,
}

impl Signal {
    pub async fn connect(url: &str, timeout: Duration) -> Result<Self> {
        let (ws, _) = tokio::time::timeout(timeout, connect_async(url))
            .await
            .map_err(|_| anyhow!("WebSocket connect to {url} timed out"))?
            .with_context(|| format!("WebSocket connect to {url}"))?;
        Ok(Self { ws })
    }

    pub async fn send(&mut self, msg: &ClientMessage) -> Result<()> {
        self.ws
            .send(Message::text(msg.to_json()))
            .await
            .context("sending on the WebSocket")
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
            Ok(None) | Err(_) => Later::Closed,
        }
    }

    /// Ends the session politely: `leave`, then a close frame.
    pub async fn leave(mut self) {
        let _ = self.send(&ClientMessage::Leave).await;
        let _ = self.ws.close(None).await;
    }

    async fn next(&mut self) -> Result<Option<ServerMessage>> {
        loop {
            match self.ws.next().await {
                None => return Ok(None),
                Some(Err(e)) => return Err(e).context("reading the WebSocket"),
                Some(Ok(Message::Text(text))) => {
                    return ServerMessage::parse(&text)
                        .map(Some)
                        .with_context(|| format!("unparsable server message {text}"));
                }
                Some(Ok(Message::Close(_))) => return Ok(None),
                Some(Ok(_)) => {}
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
    fn candidate_ports_come_from_host_candidates() {
        let sdp = "v=0\r\na=candidate:1 1 udp 2130706431 127.0.0.1 40123 typ host\r\n\
                   a=end-of-candidates\r\na=candidate:1 1 udp 2130706431 127.0.0.1 40124 typ host\r\n";
        assert_eq!(candidate_ports(sdp), vec![40123, 40124]);
    }
}
