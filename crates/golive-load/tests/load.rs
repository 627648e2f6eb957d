//! `golive-load` against the real `golive` binary: 50 viewers for 5 seconds on loopback. The
//! test asserts behaviour only (every viewer connects, receives audio and video from a complete
//! keyframe on, and loses nothing); the figures it prints are for people, never asserted.

mod common;

use common::{assert_every_viewer_served, light_run, start_server};

const VIEWERS: usize = 50;

#[test]
fn fifty_viewers_all_connect_receive_and_lose_nothing() {
    let server = start_server();
    // Hearts and a little chat on every viewer's socket: counted, never refused.
    let r = light_run(
        &server,
        "ci-load",
        VIEWERS as u64,
        50,
        5,
        &["--heart-rate", "2", "--chat-rate", "0.2"],
    );
    assert_every_viewer_served(&r, VIEWERS as u64);
    let n = |key: &str| r[key].as_u64().unwrap_or_else(|| panic!("{key} missing"));
    assert!(n("hearts_sent") > 0 && n("chat_sent") > 0);
    assert!(n("hearts_batches_in") > 0, "hearts come back in batches");
    assert!(n("chat_in") > 0, "chat reaches the audience");
    assert_eq!(n("rate_limited_errors"), 0, "within the server's limits");
    assert!(n("ws_messages_in") >= n("hearts_batches_in") + n("chat_in"));
}

/// A publisher with three VP8 temporal layers: every viewer is served as before (the checks of
/// each payload hold with the extended descriptor), and the viewers count the packets of each
/// layer.
#[test]
fn temporal_layers_reach_every_viewer_and_are_counted_per_tid() {
    const VIEWERS: u64 = 10;
    let server = start_server();
    let r = light_run(
        &server,
        "ci-temporal",
        VIEWERS,
        50,
        4,
        &["--temporal-layers", "3"],
    );
    assert_every_viewer_served(&r, VIEWERS);
    assert_eq!(r["config"]["temporal_layers"].as_u64(), Some(3), "{r:#}");
    let per_tid: Vec<u64> = r["temporal"]["viewer_packets_per_tid"]
        .as_array()
        .unwrap_or_else(|| panic!("no packets per TID in {r:#}"))
        .iter()
        .map(|n| n.as_u64().expect("a count"))
        .collect();
    assert_eq!(per_tid.len(), 3, "{per_tid:?}");
    assert!(per_tid.iter().all(|n| *n > 0), "{per_tid:?}");
    let video = r["packets_received"].as_u64().expect("packets_received");
    assert!(per_tid.iter().sum::<u64>() < video, "audio is no layer");
}

#[test]
fn a_temporal_layer_count_out_of_range_is_refused() {
    for bad in ["0", "4"] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_golive-load"))
            .args(["--temporal-layers", bad])
            .output()
            .expect("running golive-load");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{bad} accepted");
        assert!(
            err.contains("--temporal-layers") && err.contains("1..=3"),
            "{err}"
        );
    }
}
