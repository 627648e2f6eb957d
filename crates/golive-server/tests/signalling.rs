//! The real `golive` binary against a WebSocket client: every signalling error, the answer's
//! shape, stream ownership and viewer counts. Offers are fixed SDP texts shaped like
//! Chromium's; no media flows here (the `tests/` crate does that with real WebRTC peers).

mod common;

use common::*;
use futures_util::{SinkExt, StreamExt};
use golive_proto::{ErrorCode, ServerMessage};
use tokio_tungstenite::tungstenite::Message;

#[tokio::test]
async fn health_and_stream_list_answer() {
    let s = start();
    let health = reqwest_get(&s, "/healthz").await;
    assert!(health.contains("\"status\":\"ok\""), "{health}");
    assert_eq!(reqwest_get(&s, "/api/streams").await, "[]");
    assert!(reqwest_get(&s, "/").await.contains("golive"));
    assert!(reqwest_get(&s, "/docs/protocol").await.contains("publish"));
}

#[tokio::test]
async fn every_signalling_error_is_answered_and_the_socket_stays_usable() {
    let s = start();
    let mut ws = connect(&s).await;
    expect_error(&mut ws, "not json", ErrorCode::BadRequest).await;
    expect_error(&mut ws, "[1]", ErrorCode::BadRequest).await;
    expect_error(&mut ws, r#"{"type":"dance"}"#, ErrorCode::BadRequest).await;
    expect_error(
        &mut ws,
        r#"{"type":"watch","stream":"x"}"#,
        ErrorCode::BadRequest,
    )
    .await;
    expect_error(
        &mut ws,
        r#"{"type":"candidate","candidate":"candidate:1 1 udp 1 127.0.0.1 9 typ host"}"#,
        ErrorCode::BadRequest,
    )
    .await;
    ws.send(Message::binary(vec![1, 2, 3])).await.unwrap();
    assert!(matches!(
        recv(&mut ws).await,
        ServerMessage::Error {
            code: ErrorCode::BadRequest,
            ..
        }
    ));
    for bad in ["", "has space", "ünï", &"x".repeat(65), "a/b"] {
        expect_error(
            &mut ws,
            &msg("publish", bad, &vp8_offer()),
            ErrorCode::BadStreamName,
        )
        .await;
        expect_error(
            &mut ws,
            &msg("watch", bad, &vp8_offer()),
            ErrorCode::BadStreamName,
        )
        .await;
    }
    expect_error(
        &mut ws,
        &msg("publish", "demo", "garbage"),
        ErrorCode::BadSdp,
    )
    .await;
    let no_bundle = vp8_offer().replace("a=group:BUNDLE 0 1\r\n", "");
    let m = expect_error(
        &mut ws,
        &msg("publish", "demo", &no_bundle),
        ErrorCode::BadSdp,
    )
    .await;
    assert!(m.contains("BUNDLE"), "{m}");
    expect_error(
        &mut ws,
        &msg("watch", "nobody-here", &vp8_offer()),
        ErrorCode::StreamNotFound,
    )
    .await;
    // A bad offer never makes a stream appear.
    assert_eq!(reqwest_get(&s, "/api/streams").await, "[]");

    // After all that, the same socket still publishes.
    send(&mut ws, &msg("publish", "demo", &vp8_offer())).await;
    let ServerMessage::Answer { sdp, peer } = recv_reply(&mut ws).await else {
        panic!("expected an answer");
    };
    assert!(!peer.is_empty());
    // ICE-lite with our candidate and end-of-candidates in every m-section; VP8 only.
    assert!(sdp.contains("a=ice-lite"), "{sdp}");
    let sections: Vec<&str> = sdp.split("\r\nm=").skip(1).collect();
    assert_eq!(sections.len(), 2, "{sdp}");
    for section in sections {
        assert!(section.contains("a=candidate:"), "{section}");
        assert!(section.contains("a=end-of-candidates"), "{section}");
        assert!(section.contains("a=setup:passive"), "{section}");
    }
    assert!(sdp.contains("VP8/90000") && !sdp.contains("H264"), "{sdp}");
    // A second publish on the same session is out of place.
    expect_error(
        &mut ws,
        &msg("publish", "other", &vp8_offer()),
        ErrorCode::BadRequest,
    )
    .await;
    // Empty candidate (end of trickle) and a valid one are accepted silently; garbage is not.
    send(
        &mut ws,
        r#"{"type":"candidate","candidate":"","sdpMid":"0","sdpMLineIndex":0}"#,
    )
    .await;
    expect_error(
        &mut ws,
        r#"{"type":"candidate","candidate":"candidate:garbage","sdpMid":"0"}"#,
        ErrorCode::BadRequest,
    )
    .await;

    // Another socket: the name is taken; a viewer that cannot take VP8 is refused.
    let mut other = connect(&s).await;
    expect_error(
        &mut other,
        &msg("publish", "demo", &vp8_offer()),
        ErrorCode::StreamBusy,
    )
    .await;
    let h264_only = offer(&[(
        102,
        "H264",
        "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f",
    )]);
    let m = expect_error(
        &mut other,
        &msg("watch", "demo", &h264_only),
        ErrorCode::CodecUnsupported,
    )
    .await;
    assert!(m.contains("VP8"), "{m}");
    // A publisher offering only an unknown video codec.
    expect_error(
        &mut other,
        &msg("publish", "weird", &offer(&[(98, "H265", "")])),
        ErrorCode::CodecUnsupported,
    )
    .await;

    // A frame over 64 KiB closes the socket with 1009.
    other
        .send(Message::text("x".repeat(65 * 1024)))
        .await
        .unwrap();
    let close = tokio::time::timeout(STEP, async {
        while let Some(m) = other.next().await {
            if let Ok(Message::Close(frame)) = m {
                return frame;
            }
        }
        None
    })
    .await
    .expect("closed in time");
    assert_eq!(close.map(|f| u16::from(f.code)), Some(1009));

    // The first socket was never disturbed.
    send(&mut ws, r#"{"type":"leave"}"#).await;
    send(&mut ws, &msg("watch", "demo", &vp8_offer())).await;
    assert!(matches!(
        recv_reply(&mut ws).await,
        ServerMessage::Error {
            code: ErrorCode::StreamNotFound,
            ..
        }
    ));
}

#[tokio::test]
async fn viewer_counts_reach_everyone_and_ended_reaches_viewers() {
    let s = start_with(&["--reconnect-grace-secs", "1"]);
    let mut publisher = connect(&s).await;
    send(
        &mut publisher,
        &serde_json::json!({"type":"publish","stream":"show","sdp":vp8_offer(),"title":"Hello"})
            .to_string(),
    )
    .await;
    assert!(matches!(
        recv_reply(&mut publisher).await,
        ServerMessage::Answer { .. }
    ));
    assert_eq!(
        recv(&mut publisher).await,
        ServerMessage::Viewers { count: 0 }
    );

    let mut v1 = connect(&s).await;
    let mut v2 = connect(&s).await;
    for v in [&mut v1, &mut v2] {
        send(v, &msg("watch", "show", &vp8_offer())).await;
        assert!(matches!(recv_reply(v).await, ServerMessage::Answer { .. }));
    }
    let list = reqwest_get(&s, "/api/streams").await;
    assert!(
        list.contains("\"stream\":\"show\"")
            && list.contains("\"title\":\"Hello\"")
            && list.contains("\"viewers\":2"),
        "{list}"
    );
    // Counts are coalesced: the broadcaster sees 2 within about a second.
    let mut last = None;
    while last != Some(2) {
        if let ServerMessage::Viewers { count } = recv(&mut publisher).await {
            last = Some(count);
        }
    }
    drop(v2);
    while last != Some(1) {
        if let ServerMessage::Viewers { count } = recv(&mut publisher).await {
            last = Some(count);
        }
    }
    // The broadcaster's socket closes: after the reconnect grace period (1 s here) the viewer is
    // told, and the stream is gone.
    drop(publisher);
    assert!(matches!(
        recv_reply(&mut v1).await,
        ServerMessage::Ended {
            reason: golive_proto::EndReason::BroadcasterLeft
        }
    ));
    assert_eq!(reqwest_get(&s, "/api/streams").await, "[]");
}

#[tokio::test]
async fn frames_far_over_the_limit_close_with_1009_too() {
    let s = start();
    for size in [64 * 1024 + 1, 2 * 1024 * 1024] {
        let mut ws = connect(&s).await;
        // An exactly-at-the-limit frame is an ordinary (bad) request.
        send(&mut ws, &"y".repeat(64 * 1024)).await;
        assert!(matches!(
            recv(&mut ws).await,
            ServerMessage::Error {
                code: ErrorCode::BadRequest,
                ..
            }
        ));
        let _ = ws.send(Message::text("x".repeat(size))).await;
        let close = tokio::time::timeout(STEP, async {
            while let Some(m) = ws.next().await {
                match m {
                    Ok(Message::Close(frame)) => return frame.map(|f| u16::from(f.code)),
                    Ok(_) => continue,
                    Err(_) => return None,
                }
            }
            None
        })
        .await
        .expect("closed in time");
        if size <= 1024 * 1024 {
            assert_eq!(close, Some(1009), "frame of {size} bytes");
        } else {
            // Past the 1 MiB read limit the frame is refused unread: the server sends 1009 and
            // closes while the client may still be writing, so the client may see a reset
            // before it reads the close frame. Either way the socket is closed.
            assert!(
                matches!(close, Some(1009) | None),
                "frame of {size} bytes: {close:?}"
            );
        }
    }
    // The server is still serving.
    assert!(reqwest_get(&s, "/healthz").await.contains("ok"));
}
