//! The lean viewer leg (`--viewer-leg lean`: golive's own ICE-lite, DTLS and SRTP for viewers)
//! against the real `golive` binary and `rtc`-based peers: what viewers get is what the
//! publisher sent, byte for byte, on the publisher's worker and on another one; a late viewer
//! starts at a keyframe; a viewer's PLI reaches the publisher through the lean leg's RTCP.

use golive_e2e::media::MediaKind;
use golive_e2e::verify::{
    every_viewer_got_the_broadcast, first_video_starts_keyframe, forwarded_faithfully,
};
use golive_e2e::{GoliveServer, Session, run_test};
use std::time::{Duration, Instant};

/// How long to wait for packets that should be flowing already.
const SHORT_WAIT: Duration = Duration::from_secs(5);

fn start_lean_server() -> GoliveServer {
    GoliveServer::start_with_args(&["--viewer-leg", "lean"]).expect("starting golive")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn lean_viewers_on_two_workers_receive_publisher_payloads_byte_for_byte() {
    // The test servers run two workers: peers are spread over them in turn, so some viewers
    // are served by the publisher's worker and some get the media handed over from it.
    let server = start_lean_server();
    run_test(
        "lean_viewers_receive_publisher_payloads_byte_for_byte",
        async {
            let publisher = Session::publish(&server, "lean").await?;
            let mut viewers = Vec::new();
            for _ in 0..4 {
                viewers.push(Session::watch(&server, "lean").await?);
            }
            tokio::time::sleep(Duration::from_secs(3)).await;
            let got: Vec<_> = viewers.iter().map(|v| v.peer.snapshot()).collect();
            every_viewer_got_the_broadcast(&publisher.peer.snapshot(), &got)?;
            Ok(())
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn lean_late_viewer_starts_at_a_keyframe_and_its_pli_reaches_the_publisher() {
    let server = start_lean_server();
    run_test("lean_late_viewer_and_pli", async {
        let publisher = Session::publish(&server, "late").await?;
        tokio::time::sleep(Duration::from_millis(2500)).await;

        // Joins mid-GOP: the keyframe cache is replayed to it through the lean leg.
        let viewer = Session::watch(&server, "late").await?;
        viewer
            .peer
            .wait_packets(MediaKind::Video, 10, SHORT_WAIT)
            .await?;
        let got = viewer.peer.snapshot();
        let key = first_video_starts_keyframe(&got);
        assert!(key.is_ok(), "late viewer: {:#}", key.unwrap_err());
        let run = forwarded_faithfully(&publisher.peer.snapshot(), &got, MediaKind::Video, 10);
        assert!(run.is_ok(), "late viewer: {:#}", run.unwrap_err());

        // Past the keyframe request of the join (and any coalescing interval after it).
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let asked_at = Instant::now();
        viewer.peer.send_pli()?;
        let request = publisher
            .peer
            .wait_keyframe_request_since(asked_at, Duration::from_secs(5))
            .await;
        assert!(
            request.is_ok(),
            "the lean viewer's PLI did not reach the publisher: {:#} (viewer errors: {:?})",
            request.unwrap_err(),
            viewer.peer.snapshot().errors
        );
        Ok(())
    })
    .await;
}

/// Where UDP GSO is refused, a lean viewer's batch goes in one `sendmmsg`: `--no-udp-gso`
/// takes that path from the start on a kernel that would take GSO, and every viewer still gets
/// the broadcast byte for byte.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn lean_viewers_receive_the_broadcast_by_sendmmsg_when_gso_is_off() {
    let server = GoliveServer::start_with_args(&["--viewer-leg", "lean", "--no-udp-gso"])
        .expect("starting golive");
    run_test("lean_viewers_by_sendmmsg", async {
        let publisher = Session::publish(&server, "mmsg").await?;
        // Joining mid-GOP: the keyframe cache's replay leaves in batches of many datagrams.
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let mut viewers = Vec::new();
        for _ in 0..4 {
            viewers.push(Session::watch(&server, "mmsg").await?);
        }
        tokio::time::sleep(Duration::from_secs(3)).await;
        let got: Vec<_> = viewers.iter().map(|v| v.peer.snapshot()).collect();
        every_viewer_got_the_broadcast(&publisher.peer.snapshot(), &got)?;
        Ok(())
    })
    .await;
    let logs = server.logs();
    assert!(
        logs.contains("batch sent by sendmmsg"),
        "no batch went by sendmmsg:\n{logs}"
    );
    assert!(
        !logs.contains("UDP GSO refused"),
        "GSO was never tried, so never refused"
    );
}
