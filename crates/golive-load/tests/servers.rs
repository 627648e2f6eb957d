//! `golive-load --server A --server B`: the publisher goes to the first server, viewers go
//! round-robin to both, and the report splits its figures per server. Two standalone servers
//! (no cluster), so the second has no broadcast: its viewers are refused, which shows which
//! viewers went where.

// This file uses only part of what the tests share.
#[allow(dead_code)]
mod common;

use common::{run_load, start_server};

#[test]
fn viewers_go_round_robin_to_every_server_and_the_report_splits_them() {
    let origin = start_server();
    let other = start_server();
    let r = run_load(
        &origin,
        &[
            "--server",
            &other.http_url(),
            "--stream",
            "ci-servers",
            "--viewers",
            "6",
            "--ramp",
            "20",
            "--duration",
            "2",
            "--bitrate",
            "300k",
            "--threads",
            "1",
        ],
    );
    let nodes = r["nodes"].as_array().expect("per-server figures");
    assert_eq!(nodes.len(), 2, "{r:#}");
    assert_eq!(r["config"]["servers"].as_array().map(Vec::len), Some(2));
    assert_eq!(nodes[0]["server"], origin.http_url().as_str());
    assert_eq!(nodes[1]["server"], other.http_url().as_str());
    for n in nodes {
        assert_eq!(n["viewers_requested"], 3, "{n}");
    }
    assert_eq!(nodes[0]["viewers_connected"], 3, "{r:#}");
    assert_eq!(nodes[0]["viewers_with_keyframe"], 3, "{r:#}");
    assert_eq!(nodes[0]["packets_lost"], 0, "{r:#}");
    assert_eq!(
        nodes[1]["viewers_connected"], 0,
        "no broadcast there: {r:#}"
    );
    assert_eq!(r["viewers_connected"], 3);
    assert_eq!(r["join_failures"], 3);
}
