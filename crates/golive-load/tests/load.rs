//! `golive-load` against the real `golive` binary: 50 viewers for 5 seconds on loopback. The
//! test asserts behaviour only (every viewer connects, receives audio and video from a complete
//! keyframe on, and loses nothing); the figures it prints are for people, never asserted.

mod common;

use common::{assert_every_viewer_served, run_load, start_server};

const VIEWERS: usize = 50;

#[test]
fn fifty_viewers_all_connect_receive_and_lose_nothing() {
    let server = start_server();
    let r = run_load(
        &server,
        &[
            "--stream",
            "ci-load",
            "--viewers",
            &VIEWERS.to_string(),
            "--ramp",
            "50",
            "--duration",
            "5",
            // A light stream keeps a debug build of both ends far from saturation; this test
            // is about behaviour, the capacity benchmark (bench/capacity.sh) about figures.
            "--bitrate",
            "500k",
            "--gop",
            "1",
            "--threads",
            "1",
            // Hearts and a little chat on every viewer's socket: counted, never refused.
            "--heart-rate",
            "2",
            "--chat-rate",
            "0.2",
        ],
    );
    assert_every_viewer_served(&r, VIEWERS as u64);
    let n = |key: &str| r[key].as_u64().unwrap_or_else(|| panic!("{key} missing"));
    assert!(n("hearts_sent") > 0 && n("chat_sent") > 0);
    assert!(n("hearts_batches_in") > 0, "hearts come back in batches");
    assert!(n("chat_in") > 0, "chat reaches the audience");
    assert_eq!(n("rate_limited_errors"), 0, "within the server's limits");
    assert!(n("ws_messages_in") >= n("hearts_batches_in") + n("chat_in"));
}
