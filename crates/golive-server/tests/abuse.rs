//! Attacks on the signalling side, each against the real binary while a healthy client is
//! served: a client that floods messages after it is told `rate_limited`, and a client that
//! stops reading while its stream's audience keeps talking.

mod common;

use common::*;
use futures_util::{SinkExt, StreamExt};
use golive_proto::{ErrorCode, ServerMessage};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;

/// How long an attack may take before the test gives up (a guard against a hang, not a
/// measurement: each attack ends in well under a second when the server does its job).
const ATTACK_GUARD: Duration = Duration::from_secs(120);

/// A message every server answers at once, with `stream_not_found`.
fn probe() -> String {
    msg("watch", "nothing-here", "v=0")
}

fn watch(stream: &str) -> String {
    msg("watch", stream, &vp8_offer())
}

async fn answered(ws: &mut Ws, text: &str) {
    send(ws, text).await;
    match recv_reply(ws).await {
        ServerMessage::Answer { .. } => {}
        other => panic!("expected an answer to {text:.50}, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flooder_is_cut_while_a_healthy_client_keeps_being_served() {
    let s = start_with(&["--max-messages-per-sec", "5"]);
    let mut healthy = connect(&s).await;
    expect_error(&mut healthy, &probe(), ErrorCode::StreamNotFound).await;

    // The flooder sends as fast as the server answers, reading every reply, as a script in a
    // loop would. Each message waits for its reply, so nothing of it is left unread when the
    // server closes, and the close frame reaches it. Halfway through it pauses, refused many
    // times over and still connected, so the healthy client is served in the middle of it.
    let mut flooder = connect(&s).await;
    let (halfway_tx, halfway) = tokio::sync::oneshot::channel::<()>();
    let (go_on_tx, go_on) = tokio::sync::oneshot::channel::<()>();
    let flood = tokio::spawn(async move {
        let mut halfway = Some((halfway_tx, go_on));
        let mut rate_limited = 0u32;
        loop {
            if rate_limited == 50
                && let Some((tell, wait)) = halfway.take()
            {
                tell.send(()).unwrap();
                wait.await.unwrap();
            }
            if flooder.send(Message::text(probe())).await.is_err() {
                return (rate_limited, None);
            }
            match flooder.next().await {
                Some(Ok(Message::Text(t))) => {
                    if let Ok(ServerMessage::Error {
                        code: ErrorCode::RateLimited,
                        ..
                    }) = ServerMessage::parse(&t)
                    {
                        rate_limited += 1;
                    }
                }
                Some(Ok(Message::Close(f))) => {
                    return (rate_limited, f.map(|f| u16::from(f.code)));
                }
                Some(Ok(_)) => {}
                Some(Err(_)) | None => return (rate_limited, None),
            }
        }
    });

    tokio::time::timeout(ATTACK_GUARD, halfway)
        .await
        .expect("the flooder is refused 50 times")
        .unwrap();
    // Mid-flood, the healthy client is answered (at its own pace, within the message rate).
    for _ in 0..3 {
        expect_error(&mut healthy, &probe(), ErrorCode::StreamNotFound).await;
    }
    go_on_tx.send(()).unwrap();
    let (rate_limited, close_code) = tokio::time::timeout(ATTACK_GUARD, flood)
        .await
        .expect("the flooder is cut")
        .unwrap();
    assert_eq!(close_code, Some(1008), "after {rate_limited} rate_limited");
    // It was told a hundred times over (the allowance refills while it floods) before it was cut.
    assert!(rate_limited >= 100, "{rate_limited}");
    assert_eq!(
        metric(&s, "golive_limit_refusals_total{limit=\"ws_flood\"}").await,
        1.0
    );
    // The healthy client was never refused and is still served.
    expect_error(&mut healthy, &probe(), ErrorCode::StreamNotFound).await;
}

/// A chat text of 280 four-byte characters: about 1.2 KB a frame, so the audience's chat fills
/// a socket's buffers quickly.
fn big_chat(tag: usize) -> String {
    let text = format!("{tag:03}{}", "😀".repeat(277));
    serde_json::json!({"type": "chat", "text": text}).to_string()
}

/// A viewer that, while `talk` says so, sends a chat message a little less often than once a
/// second (the chat limit), and reads everything it is sent.
async fn chatter(
    s: &Server,
    stream: &str,
    tag: usize,
    mut talk: tokio::sync::watch::Receiver<bool>,
) {
    let mut ws = connect(s).await;
    answered(&mut ws, &watch(stream)).await;
    let (mut tx, mut rx) = ws.split();
    tokio::spawn(async move { while let Some(Ok(_)) = rx.next().await {} });
    tokio::spawn(async move {
        if talk.wait_for(|t| *t).await.is_err() {
            return;
        }
        let mut tick = tokio::time::interval(Duration::from_millis(1100));
        loop {
            tokio::select! {
                _ = tick.tick() => {
                    if tx.send(Message::text(big_chat(tag))).await.is_err() {
                        return;
                    }
                }
                _ = talk.changed() => return,
            }
        }
    });
}

/// A WebSocket client with a small receive buffer and small TCP segments, so that what it does
/// not read fills the connection's buffers after tens of kilobytes rather than megabytes (on
/// loopback the server's send buffer grows with the segment size, 64 KiB there).
async fn connect_small(s: &Server) -> tokio_tungstenite::WebSocketStream<tokio::net::TcpStream> {
    use socket2::{Domain, Socket, Type};
    let addr: std::net::SocketAddr = s.addr;
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None).unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    socket.set_tcp_mss(536).unwrap();
    socket.connect(&addr.into()).unwrap();
    socket.set_nonblocking(true).unwrap();
    let stream = tokio::net::TcpStream::from_std(socket.into()).unwrap();
    tokio_tungstenite::client_async(format!("ws://{}/ws", s.addr), stream)
        .await
        .expect("websocket connects")
        .0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_viewer_that_stops_reading_is_cut_while_its_audience_keeps_being_served() {
    // The idle timeout (which also bounds one send) is longer than the attack may take, so only
    // the queue's rule can cut the viewer here.
    let s = start_with(&[
        "--ws-idle-timeout-secs",
        "600",
        "--max-queued-messages",
        "64",
        "--max-new-sessions-per-sec-per-ip",
        "1000",
    ]);
    let mut host = connect(&s).await;
    answered(&mut host, &msg("publish", "crowd", &vp8_offer())).await;

    // The slow viewer watches, then never reads again.
    let mut slow = connect_small(&s).await;
    slow.send(Message::text(watch("crowd"))).await.unwrap();
    loop {
        let m = slow.next().await.unwrap().unwrap();
        if let Message::Text(t) = m
            && let Ok(ServerMessage::Answer { .. }) = ServerMessage::parse(&t)
        {
            break;
        }
    }

    // A healthy viewer reads everything; what it reads comes out of `seen`.
    let healthy = connect(&s).await;
    let (mut healthy_tx, mut healthy_rx) = healthy.split();
    healthy_tx
        .send(Message::text(watch("crowd")))
        .await
        .unwrap();
    let (seen_tx, mut seen) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Some(Ok(m)) = healthy_rx.next().await {
            if let Message::Text(t) = m
                && let Ok(m) = ServerMessage::parse(&t)
                && seen_tx.send(m).is_err()
            {
                return;
            }
        }
    });
    // The host reads everything too.
    let (_host_tx, mut host_rx) = host.split();
    tokio::spawn(async move { while let Some(Ok(_)) = host_rx.next().await {} });

    // The audience joins, then chats: 30 messages a second, each to every member. (A client's
    // queue is drained between its requests, not while the server answers one: the crowd is
    // quiet while it joins.)
    let (talk_tx, talk) = tokio::sync::watch::channel(false);
    for tag in 0..30 {
        chatter(&s, "crowd", tag, talk.clone()).await;
    }
    talk_tx.send_replace(true);
    tokio::time::timeout(ATTACK_GUARD, async {
        while metric(&s, "golive_limit_refusals_total{limit=\"ws_slow_reader\"}").await < 1.0 {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await
    .expect("the viewer that stopped reading is cut");
    talk_tx.send_replace(false);

    // The slow viewer's connection is over: what was buffered, then the end.
    tokio::time::timeout(ATTACK_GUARD, async {
        while let Some(Ok(m)) = slow.next().await {
            if let Message::Close(_) = m {
                break;
            }
        }
    })
    .await
    .expect("the slow viewer's connection ends");

    // The healthy viewer was answered and still gets the stream's chat.
    let mut marker = connect(&s).await;
    answered(&mut marker, &watch("crowd")).await;
    send(
        &mut marker,
        &serde_json::json!({"type": "chat", "text": "after the cut"}).to_string(),
    )
    .await;
    let mut answered_healthy = false;
    tokio::time::timeout(STEP, async {
        loop {
            match seen
                .recv()
                .await
                .expect("the healthy viewer is still connected")
            {
                ServerMessage::Answer { .. } => answered_healthy = true,
                ServerMessage::Chat { text, .. } if text == "after the cut" => break,
                ServerMessage::Error { code, message } => panic!("{code}: {message}"),
                ServerMessage::Ended { reason } => panic!("ended: {reason:?}"),
                _ => {}
            }
        }
    })
    .await
    .expect("the healthy viewer gets the chat after the cut");
    assert!(answered_healthy);
    // Only the viewer that stopped reading was cut: the host, the healthy viewer and the 30
    // chatters were all served throughout.
    assert_eq!(
        metric(&s, "golive_limit_refusals_total{limit=\"ws_slow_reader\"}").await,
        1.0
    );
    assert_eq!(
        metric(
            &s,
            "golive_limit_refusals_total{limit=\"messages_per_sec\"}"
        )
        .await,
        0.0
    );
}
