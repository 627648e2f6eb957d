//! Every limit refuses with its own error code and counts the refusal, while the server keeps
//! serving everyone else; SIGTERM drains and exits 0; configuration precedence end to end.

mod common;

use common::*;
use futures_util::{SinkExt, StreamExt};
use golive_proto::{EndReason, ErrorCode, ServerMessage};
use std::time::Duration;
use tokio_tungstenite::tungstenite::Message;

fn publish(stream: &str) -> String {
    msg("publish", stream, &vp8_offer())
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

/// Next close code (or None if the socket just ended).
async fn closed_with(ws: &mut Ws) -> Option<u16> {
    tokio::time::timeout(STEP, async {
        while let Some(m) = ws.next().await {
            match m {
                Ok(Message::Close(f)) => return f.map(|f| u16::from(f.code)),
                Ok(_) => continue,
                Err(_) => return None,
            }
        }
        None
    })
    .await
    .expect("closed in time")
}

#[tokio::test]
async fn stream_and_viewer_limits_refuse_with_their_codes() {
    let s = start_with(&[
        "--max-streams",
        "1",
        "--max-viewers-per-stream",
        "2",
        "--max-viewers",
        "2",
    ]);
    let mut a = connect(&s).await;
    answered(&mut a, &publish("one")).await;
    let mut b = connect(&s).await;
    let m = expect_error(&mut b, &publish("two"), ErrorCode::ServerFull).await;
    assert!(m.contains("streams"), "{m}");
    let _v1 = {
        let mut v = connect(&s).await;
        answered(&mut v, &watch("one")).await;
        v
    };
    let _v2 = {
        let mut v = connect(&s).await;
        answered(&mut v, &watch("one")).await;
        v
    };
    let mut v3 = connect(&s).await;
    expect_error(&mut v3, &watch("one"), ErrorCode::StreamFull).await;
    // The socket that was refused is still usable, and the server still serves.
    expect_error(&mut v3, &watch("absent"), ErrorCode::StreamNotFound).await;
    still_serving(&s).await;
    assert_eq!(
        metric(&s, "golive_limit_refusals_total{limit=\"max_streams\"}").await,
        1.0
    );
    assert_eq!(
        metric(
            &s,
            "golive_limit_refusals_total{limit=\"max_viewers_per_stream\"}"
        )
        .await,
        1.0
    );
    assert_eq!(
        metric(&s, "golive_signalling_errors_total{code=\"server_full\"}").await,
        1.0
    );
}

#[tokio::test]
async fn total_viewer_limit_refuses_with_server_full() {
    let s = start_with(&["--max-viewers", "1"]);
    let mut a = connect(&s).await;
    answered(&mut a, &publish("a")).await;
    let mut b = connect(&s).await;
    answered(&mut b, &publish("b")).await;
    let _va = {
        let mut v = connect(&s).await;
        answered(&mut v, &watch("a")).await;
        v
    };
    let mut vb = connect(&s).await;
    expect_error(&mut vb, &watch("b"), ErrorCode::ServerFull).await;
    assert_eq!(
        metric(&s, "golive_limit_refusals_total{limit=\"max_viewers\"}").await,
        1.0
    );
    still_serving(&s).await;
}

#[tokio::test]
async fn message_rate_limit_refuses_then_recovers() {
    let s = start_with(&["--max-messages-per-sec", "2"]);
    let mut ws = connect(&s).await;
    // A burst of twice the rate passes; the rest is refused, each with an answer.
    let mut codes = Vec::new();
    for _ in 0..8 {
        send(&mut ws, &watch("absent")).await;
        if let ServerMessage::Error { code, .. } = recv_reply(&mut ws).await {
            codes.push(code);
        }
    }
    assert_eq!(
        codes
            .iter()
            .filter(|c| **c == ErrorCode::StreamNotFound)
            .count(),
        4,
        "{codes:?}"
    );
    assert_eq!(
        codes
            .iter()
            .filter(|c| **c == ErrorCode::RateLimited)
            .count(),
        4,
        "{codes:?}"
    );
    tokio::time::sleep(Duration::from_millis(1100)).await;
    expect_error(&mut ws, &watch("absent"), ErrorCode::StreamNotFound).await;
    still_serving(&s).await;
    assert_eq!(
        metric(
            &s,
            "golive_limit_refusals_total{limit=\"messages_per_sec\"}"
        )
        .await,
        4.0
    );
}

#[tokio::test]
async fn per_address_session_limits_refuse_and_close() {
    // The server listens on loopback, whose clients are exempt by default: count them here.
    let s = start_with(&[
        "--ip-limits-loopback",
        "enforce",
        "--max-sessions-per-ip",
        "3",
        "--max-new-sessions-per-sec-per-ip",
        "100",
    ]);
    let mut open = Vec::new();
    for _ in 0..3 {
        open.push(connect(&s).await);
    }
    let mut fourth = connect(&s).await;
    match recv(&mut fourth).await {
        ServerMessage::Error { code, .. } => assert_eq!(code, ErrorCode::TooManySessions),
        other => panic!("{other:?}"),
    }
    assert_eq!(closed_with(&mut fourth).await, Some(1008));
    // Closing one frees a place.
    drop(open.pop());
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut again = connect(&s).await;
    expect_error(&mut again, &watch("absent"), ErrorCode::StreamNotFound).await;
    drop(again);
    drop(open);

    let s = start_with(&[
        "--ip-limits-loopback",
        "enforce",
        "--max-new-sessions-per-sec-per-ip",
        "2",
    ]);
    let _a = connect(&s).await;
    let _b = connect(&s).await;
    let mut c = connect(&s).await;
    match recv(&mut c).await {
        ServerMessage::Error { code, .. } => assert_eq!(code, ErrorCode::RateLimited),
        other => panic!("{other:?}"),
    }
    assert_eq!(closed_with(&mut c).await, Some(1013));
    assert!(
        metric(
            &s,
            "golive_limit_refusals_total{limit=\"new_sessions_per_sec_per_ip\"}"
        )
        .await
            >= 1.0
    );
    // WHIP from the same address is held to the same budget: 429.
    let (code, text) = http(
        &s,
        "POST",
        "/whip/x",
        &[("Content-Type", "application/sdp")],
        &vp8_offer(),
    )
    .await;
    assert_eq!(code, 429, "{text}");
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert!(reqwest_get(&s, "/healthz").await.contains("ok"));
}

#[tokio::test]
async fn frame_size_and_idle_limits_close_the_socket() {
    let s = start_with(&["--max-frame-bytes", "1000", "--ws-idle-timeout-secs", "2"]);
    let mut ws = connect(&s).await;
    ws.send(Message::text("x".repeat(1001))).await.unwrap();
    assert_eq!(closed_with(&mut ws).await, Some(1009));
    // A client that stops reading (and so never answers pings) is cut.
    let mut quiet = connect(&s).await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    // Closed with 1001, or reset before the client read the close frame.
    let code = closed_with(&mut quiet).await;
    assert!(matches!(code, Some(1001) | None), "idle client: {code:?}");
    assert!(metric(&s, "golive_limit_refusals_total{limit=\"ws_idle\"}").await >= 1.0);
    still_serving(&s).await;
}

#[tokio::test]
async fn sigterm_tells_everyone_and_exits_zero() {
    let mut s = start_with(&["--drain-timeout-secs", "5"]);
    let mut host = connect(&s).await;
    answered(&mut host, &publish("bye")).await;
    let mut viewer = connect(&s).await;
    answered(&mut viewer, &watch("bye")).await;
    let pid = s.child.id();
    let killed = std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    for ws in [&mut host, &mut viewer] {
        assert_eq!(
            recv_reply(ws).await,
            ServerMessage::Ended {
                reason: EndReason::ServerShutdown
            }
        );
    }
    let status = tokio::task::spawn_blocking(move || {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(st) = s.child.try_wait().unwrap() {
                return st;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "golive did not exit after SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    })
    .await
    .unwrap();
    assert_eq!(status.code(), Some(0));
}

#[tokio::test]
async fn environment_overrides_the_config_file_and_flags_override_both() {
    let dir = std::env::temp_dir().join(format!("golive-cfg-e2e-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("golive.toml");
    std::fs::write(&file, "max_streams = 1\nmax_viewers_per_stream = 1\n").unwrap();
    // File says 1 stream; the environment says 2; a flag says 1 viewer per stream... and the
    // file's max_viewers_per_stream = 1 is overridden by the flag 3.
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_golive"));
    cmd.args([
        "--listen",
        "127.0.0.1:0",
        "--config",
        file.to_str().unwrap(),
        "--max-viewers-per-stream",
        "3",
    ])
    .env("GOLIVE_MAX_STREAMS", "2");
    let s = start_command(cmd);
    let mut a = connect(&s).await;
    answered(&mut a, &publish("one")).await;
    let mut b = connect(&s).await;
    answered(&mut b, &publish("two")).await; // env: 2 streams
    let mut c = connect(&s).await;
    expect_error(&mut c, &publish("three"), ErrorCode::ServerFull).await;
    let mut viewers = Vec::new();
    for _ in 0..3 {
        let mut v = connect(&s).await;
        answered(&mut v, &watch("one")).await; // flag: 3 viewers
        viewers.push(v);
    }
    expect_error(&mut c, &watch("one"), ErrorCode::StreamFull).await;
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test]
async fn behind_a_trusted_proxy_limits_apply_per_forwarded_client() {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let s = start_with(&[
        "--ip-limits-loopback",
        "enforce",
        "--trusted-proxies",
        "127.0.0.1",
        "--max-sessions-per-ip",
        "1",
    ]);
    let open = |xff: &'static str| {
        let url = format!("ws://{}/ws", s.addr);
        async move {
            let mut req = url.into_client_request().unwrap();
            req.headers_mut()
                .insert("x-forwarded-for", xff.parse().unwrap());
            tokio_tungstenite::connect_async(req).await.unwrap().0
        }
    };
    // Two clients behind the same proxy each get their own place...
    let mut a = open("198.51.100.1").await;
    let mut b = open("203.0.113.9, 198.51.100.2").await;
    expect_error(&mut a, &msg("watch", "x", "v=0"), ErrorCode::StreamNotFound).await;
    expect_error(&mut b, &msg("watch", "x", "v=0"), ErrorCode::StreamNotFound).await;
    // ...and the same client twice is held to its limit.
    let mut again = open("198.51.100.1").await;
    match recv(&mut again).await {
        ServerMessage::Error { code, .. } => assert_eq!(code, ErrorCode::TooManySessions),
        other => panic!("{other:?}"),
    }
}
