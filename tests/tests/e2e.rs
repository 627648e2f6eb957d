//! End-to-end tests: the real `golive` binary (one process per test) against WebRTC peers on
//! the `rtc` crate, signalling over the WebSocket. See the crate docs of `golive_e2e` for the
//! client side. Set `RUST_LOG=debug` for the server's logs (printed when a test fails) and
//! `GOLIVE_E2E_LOG=rtc=debug` for the clients'.

use anyhow::{Context, Result, ensure};
use golive_e2e::media::MediaKind;
use golive_e2e::verify::{first_video_starts_keyframe, forwarded_faithfully};
use golive_e2e::{
    GoliveServer, Session, SignalClient, TestPeer, VideoCodec, publish_message, run_test,
    watch_message,
};
use golive_proto::{
    CLOSE_MESSAGE_TOO_BIG, ClientMessage, EndReason, ErrorCode, MAX_FRAME_BYTES, ServerMessage,
};
use std::time::{Duration, Instant};

/// How long a viewer count or an `ended` may take to arrive (counts are coalesced to ~1 s).
const NOTICE_TIMEOUT: Duration = Duration::from_secs(8);
/// Generous minimum packet counts for "it is flowing" after a few seconds
/// (the publisher sends ~30 video and 50 audio packets a second).
const MIN_VIDEO_PACKETS: usize = 30;
const MIN_AUDIO_PACKETS: usize = 50;

fn start_server() -> GoliveServer {
    GoliveServer::start().expect("starting golive")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_viewers_receive_publisher_payloads_byte_for_byte() {
    let server = start_server();
    run_test(
        "three_viewers_receive_publisher_payloads_byte_for_byte",
        async {
            let publisher = Session::publish(&server, "demo").await?;
            let mut viewers = Vec::new();
            for _ in 0..3 {
                viewers.push(Session::watch(&server, "demo").await?);
            }
            tokio::time::sleep(Duration::from_secs(3)).await;

            let sent = publisher.peer.snapshot();
            assert!(
                sent.errors.is_empty(),
                "publisher errors: {:?}",
                sent.errors
            );
            for (i, viewer) in viewers.iter().enumerate() {
                let got = viewer.peer.snapshot();
                for (kind, min) in [
                    (MediaKind::Video, MIN_VIDEO_PACKETS),
                    (MediaKind::Audio, MIN_AUDIO_PACKETS),
                ] {
                    let run = forwarded_faithfully(&sent, &got, kind, min);
                    assert!(run.is_ok(), "viewer {i}: {:#}", run.unwrap_err());
                }
                let key = first_video_starts_keyframe(&got);
                assert!(key.is_ok(), "viewer {i}: {:#}", key.unwrap_err());
            }
            Ok(())
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn late_viewer_first_video_packet_starts_a_keyframe() {
    let server = start_server();
    run_test("late_viewer_first_video_packet_starts_a_keyframe", async {
        let publisher = Session::publish(&server, "late").await?;
        tokio::time::sleep(Duration::from_millis(2500)).await;

        let joined_at = Instant::now();
        let viewer = Session::watch(&server, "late").await?;
        viewer.peer.wait_packets(MediaKind::Video, 10, Duration::from_secs(5)).await?;

        let got = viewer.peer.snapshot();
        let key = first_video_starts_keyframe(&got);
        assert!(key.is_ok(), "late viewer: {:#}", key.unwrap_err());
        let run = forwarded_faithfully(&publisher.peer.snapshot(), &got, MediaKind::Video, 10);
        assert!(run.is_ok(), "late viewer: {:#}", run.unwrap_err());

        // The server must ask the publisher for a key frame for the new viewer.
        let deadline = joined_at + Duration::from_secs(5);
        loop {
            let requests = publisher.peer.snapshot().keyframe_requests;
            if requests.iter().any(|r| r.at >= joined_at) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the publisher got no PLI/FIR within 5 s of a viewer joining (all requests: {requests:?})"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn viewers_get_ended_when_publisher_leaves() {
    let server = start_server();
    run_test("viewers_get_ended_when_publisher_leaves", async {
        // 1. The broadcaster sends `leave` (its peer keeps sending media).
        let mut publisher = Session::publish(&server, "leaving").await?;
        let mut viewers = vec![
            Session::watch(&server, "leaving").await?,
            Session::watch(&server, "leaving").await?,
        ];
        for viewer in &viewers {
            viewer
                .peer
                .wait_packets(MediaKind::Video, 5, Duration::from_secs(5))
                .await?;
        }
        publisher.signal.send(&ClientMessage::Leave).await?;
        for (i, viewer) in viewers.iter_mut().enumerate() {
            expect_ended(&mut viewer.signal)
                .await
                .with_context(|| format!("viewer {i} after leave"))?;
        }
        expect_stream_not_found(&server, "leaving")
            .await
            .context("watch after leave")?;

        // Media of an ended broadcast is no longer forwarded, though the publisher still sends.
        tokio::time::sleep(Duration::from_millis(500)).await;
        let before: Vec<usize> = viewers
            .iter()
            .map(|v| v.peer.snapshot().received.len())
            .collect();
        tokio::time::sleep(Duration::from_secs(1)).await;
        let after: Vec<usize> = viewers
            .iter()
            .map(|v| v.peer.snapshot().received.len())
            .collect();
        assert_eq!(before, after, "viewers still receive media after `ended`");

        // `leave` keeps the socket: the same broadcaster can go live again on the name.
        let again = TestPeer::publisher().await?;
        publisher
            .signal
            .send(&publish_message("leaving", again.sdp()))
            .await?;
        let answer = publisher
            .signal
            .expect_answer()
            .await
            .context("publish again after leave")?;
        let again = again.connect(&answer)?;
        again.wait_connected(golive_e2e::CONNECT_TIMEOUT).await?;

        // 2. The broadcaster's socket closes.
        let publisher = Session::publish(&server, "closing").await?;
        let mut viewer = Session::watch(&server, "closing").await?;
        viewer
            .peer
            .wait_packets(MediaKind::Video, 5, Duration::from_secs(5))
            .await?;
        publisher.signal.close().await;
        expect_ended(&mut viewer.signal)
            .await
            .context("viewer after the broadcaster's socket closed")?;
        expect_stream_not_found(&server, "closing")
            .await
            .context("watch after close")?;
        Ok(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_error_code_is_provoked_and_other_stream_is_undisturbed() {
    let server = start_server();
    run_test("every_error_code_is_provoked_and_other_stream_is_undisturbed", async {
        let publisher = Session::publish(&server, "B").await?;
        let bystander = Session::watch(&server, "B").await?;
        bystander.peer.wait_packets(MediaKind::Video, 10, Duration::from_secs(5)).await?;
        let received_before = bystander.peer.snapshot().received.len();

        // Offers reused where only something else is wrong.
        let viewer_offer = TestPeer::viewer(VideoCodec::Vp8).await?;
        let viewer_sdp = viewer_offer.sdp().to_owned();
        let publisher_offer = TestPeer::publisher().await?;
        let h264_offer = TestPeer::viewer(VideoCodec::H264).await?;
        assert!(
            h264_offer.sdp().contains("H264/90000") && !h264_offer.sdp().contains("VP8"),
            "the H.264 viewer's offer must offer H.264 only:\n{}",
            h264_offer.sdp()
        );

        let mut socket = SignalClient::connect(server.http_addr()).await?;
        let cases: Vec<(&str, Frame, ErrorCode)> = vec![
            ("not JSON", Frame::Text("this is not json".into()), ErrorCode::BadRequest),
            ("JSON but not an object", Frame::Text("[1,2,3]".into()), ErrorCode::BadRequest),
            (
                "unknown type",
                Frame::Text(r#"{"type":"dance","stream":"B"}"#.into()),
                ErrorCode::BadRequest,
            ),
            ("missing sdp", Frame::Text(r#"{"type":"watch","stream":"B"}"#.into()), ErrorCode::BadRequest),
            ("missing stream", Frame::Text(r#"{"type":"publish","sdp":"v=0"}"#.into()), ErrorCode::BadRequest),
            ("name with a space", Frame::Msg(watch_message("bad name", &viewer_sdp)), ErrorCode::BadStreamName),
            ("empty name", Frame::Msg(watch_message("", &viewer_sdp)), ErrorCode::BadStreamName),
            (
                "65-character name",
                Frame::Msg(publish_message(&"x".repeat(65), publisher_offer.sdp())),
                ErrorCode::BadStreamName,
            ),
            ("garbage publish SDP", Frame::Msg(publish_message("C", "garbage, not SDP")), ErrorCode::BadSdp),
            ("garbage watch SDP", Frame::Msg(watch_message("B", "v=0\r\nthis is not sdp\r\n")), ErrorCode::BadSdp),
            ("watch of a stream not live", Frame::Msg(watch_message("nobody-here", &viewer_sdp)), ErrorCode::StreamNotFound),
            ("publish to a live stream", Frame::Msg(publish_message("B", publisher_offer.sdp())), ErrorCode::StreamBusy),
            ("H.264-only viewer of VP8", Frame::Msg(watch_message("B", h264_offer.sdp())), ErrorCode::CodecUnsupported),
        ];
        for (what, frame, want) in cases {
            frame.send(&mut socket).await?;
            let (code, message) = socket.expect_error().await.with_context(|| format!("after sending {what}"))?;
            assert_eq!(code, want, "{what}: got {code} ({message})");
            assert!(!message.is_empty(), "{what}: the error has no message");
            // The socket still works: a valid message gets its proper reply.
            socket.send(&watch_message("still-nobody", &viewer_sdp)).await?;
            let (code, message) = socket.expect_error().await.with_context(|| format!("probe after {what}"))?;
            assert_eq!(code, ErrorCode::StreamNotFound, "probe after {what}: got {code} ({message})");
        }

        // After all that, the same socket can still watch B, and gets B's media.
        socket.send(&watch_message("B", &viewer_sdp)).await?;
        let answer = socket.expect_answer().await.context("watching B on the provoked socket")?;
        let late = viewer_offer.connect(&answer)?;
        late.wait_connected(golive_e2e::CONNECT_TIMEOUT).await?;
        late.wait_packets(MediaKind::Video, 10, Duration::from_secs(5)).await?;
        let run = forwarded_faithfully(&publisher.peer.snapshot(), &late.snapshot(), MediaKind::Video, 10);
        assert!(run.is_ok(), "viewer on the provoked socket: {:#}", run.unwrap_err());
        socket.send(&ClientMessage::Leave).await?;

        // A frame over the limit closes that socket with 1009 ("message too big").
        let mut big = SignalClient::connect(server.http_addr()).await?;
        let padding = "a".repeat(MAX_FRAME_BYTES + 4096);
        big.send_text(format!(r#"{{"type":"watch","stream":"B","sdp":"{padding}"}}"#)).await?;
        let closed = big.wait_closed(Duration::from_secs(5)).await?;
        assert_eq!(
            closed.code(),
            Some(CLOSE_MESSAGE_TOO_BIG),
            "an over-{MAX_FRAME_BYTES}-byte frame must close the socket with {CLOSE_MESSAGE_TOO_BIG}; got {closed:?}"
        );

        // Through all of it, B's viewer kept receiving, without a gap.
        let now_received = bystander.peer.snapshot().received.len();
        bystander
            .peer
            .wait_packets(MediaKind::Video, bystander.peer.snapshot().received_of(MediaKind::Video).len() + 10, Duration::from_secs(5))
            .await
            .context("B's viewer stopped receiving")?;
        assert!(now_received > received_before, "B's viewer received nothing while errors were provoked");
        let sent = publisher.peer.snapshot();
        let got = bystander.peer.snapshot();
        for (kind, min) in [(MediaKind::Video, MIN_VIDEO_PACKETS), (MediaKind::Audio, MIN_AUDIO_PACKETS)] {
            let run = forwarded_faithfully(&sent, &got, kind, min);
            assert!(run.is_ok(), "B's viewer: {:#}", run.unwrap_err());
        }
        Ok(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn viewer_count_reaches_broadcaster() {
    let server = start_server();
    run_test("viewer_count_reaches_broadcaster", async {
        let mut publisher = Session::publish(&server, "counted").await?;
        let mut first = Session::watch(&server, "counted").await?;
        let _second = Session::watch(&server, "counted").await?;

        publisher
            .signal
            .recv_until(NOTICE_TIMEOUT, |m| {
                matches!(m, ServerMessage::Viewers { count: 2 })
            })
            .await
            .context("the broadcaster never heard of 2 viewers")?;

        first.signal.send(&ClientMessage::Leave).await?;
        publisher
            .signal
            .recv_until(NOTICE_TIMEOUT, |m| {
                matches!(m, ServerMessage::Viewers { count: 1 })
            })
            .await
            .context("the broadcaster never heard the count drop to 1")?;
        Ok(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthz_answers_ok() {
    let server = start_server();
    run_test("healthz_answers_ok", async {
        let status = server.http_get_status("/healthz").await?;
        ensure!(status == 200, "GET /healthz answered {status}");
        Ok(())
    })
    .await;
}

/// A frame to send: a protocol message or raw text.
enum Frame {
    Msg(ClientMessage),
    Text(String),
}

impl Frame {
    async fn send(&self, socket: &mut SignalClient) -> Result<()> {
        match self {
            Frame::Msg(msg) => socket.send(msg).await,
            Frame::Text(text) => socket.send_text(text.clone()).await,
        }
    }
}

/// Waits for `ended` with reason `broadcaster_left`, skipping viewer counts.
async fn expect_ended(signal: &mut SignalClient) -> Result<()> {
    let msg = signal
        .recv_until(NOTICE_TIMEOUT, |m| {
            !matches!(m, ServerMessage::Viewers { .. })
        })
        .await?;
    ensure!(
        msg == ServerMessage::Ended {
            reason: EndReason::BroadcasterLeft
        },
        "expected ended/broadcaster_left, got {msg:?}"
    );
    Ok(())
}

/// A fresh socket watching `stream` gets `stream_not_found`.
async fn expect_stream_not_found(server: &GoliveServer, stream: &str) -> Result<()> {
    let mut socket = SignalClient::connect(server.http_addr()).await?;
    let offer = TestPeer::viewer(VideoCodec::Vp8).await?;
    socket.send(&watch_message(stream, offer.sdp())).await?;
    let (code, message) = socket.expect_error().await?;
    ensure!(
        code == ErrorCode::StreamNotFound,
        "watch of ended {stream}: got {code} ({message})"
    );
    Ok(())
}
