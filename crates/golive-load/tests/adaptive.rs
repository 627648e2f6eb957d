//! Adaptive quality against the real `golive` binary: a simulcast broadcast (`--simulcast`,
//! layers of 1.5 Mbit/s, 300 and about 94 kbit/s) watched by viewers whose downlink is capped
//! at 200 kbit/s (`--viewer-kbps`, a token bucket in golive-load's receive path) and by
//! uncapped viewers, both sending TWCC feedback. Two golive-load runs at once, one stream
//! each, on one server. Behaviour only; the limits are generous, for a real-time run on a
//! loaded machine.
//!
//! Every viewer starts on the lowest layer. The server's estimate starts at 300 kbit/s and only
//! grows to 1.5 times what a viewer receives (it sends no probes), so a free viewer climbs to
//! the middle layer (which that first estimate covers) and no further: the top layer, five
//! times the middle one, is out of its reach. A capped viewer climbs too, loses a large part
//! of the middle layer on its 200 kbit/s link, and is moved back down to the lowest, where it
//! stays. So the test asserts: capped viewers end on the lowest layer, free ones above it.

#[allow(dead_code)]
mod common;

use common::{scrape_metrics, start_server, viewers_run};

const VIEWERS: u64 = 3;

fn simulcast_run(
    server: &golive_client::ServerProcess,
    stream: &str,
    extra: &[&str],
) -> serde_json::Value {
    let mut args = vec!["--simulcast"];
    args.extend_from_slice(extra);
    // Long enough for an estimate to climb and, on a capped link, to come back down and
    // settle, on a busy machine.
    viewers_run(server, stream, VIEWERS, (5, 25), "1500k", &args)
}

#[test]
fn capped_viewers_end_on_the_lowest_layer_and_free_viewers_above_it() {
    let server = start_server();
    let (capped, free) = std::thread::scope(|s| {
        let capped = s.spawn(|| simulcast_run(&server, "capped", &["--viewer-kbps", "200"]));
        let free = s.spawn(|| simulcast_run(&server, "free", &[]));
        (
            capped.join().expect("capped run"),
            free.join().expect("free run"),
        )
    });
    for (name, r) in [("capped", &capped), ("free", &free)] {
        eprintln!("{name}: simulcast {}", r["simulcast"]);
        assert_eq!(r["viewers_connected"], VIEWERS, "{name}: {r:#}");
        assert_eq!(r["corrupt_packets"], 0, "{name}");
        let sent = &r["publisher"]["layers"];
        for l in 0..3 {
            assert!(
                sent[l]["packets_sent"].as_u64() > Some(100),
                "{name}: layer {l} was sent: {sent}"
            );
        }
    }
    let on = |r: &serde_json::Value| -> Vec<u64> {
        r["simulcast"]["viewers_on_layer"]
            .as_array()
            .expect("viewers_on_layer")
            .iter()
            .map(|v| v.as_u64().unwrap())
            .collect()
    };
    assert!(
        capped["viewer_shaper_dropped"].as_u64() > Some(0),
        "the cap never bit: {capped:#}"
    );
    assert_eq!(free["viewer_shaper_dropped"], 0);
    assert_eq!(
        on(&capped),
        [VIEWERS, 0, 0],
        "capped: {}",
        capped["simulcast"]
    );
    assert_eq!(
        on(&free)[0],
        0,
        "free viewers left the lowest layer: {}",
        free["simulcast"]
    );
    // The WebSocket viewers were told: every free one's last notice names a layer above low,
    // and no capped one was last told of a layer above low.
    let count = |r: &serde_json::Value, layer: &str| {
        r["simulcast"]["viewers_by_last_notice"][layer]
            .as_u64()
            .unwrap_or(0)
    };
    assert_eq!(
        count(&free, "medium") + count(&free, "high"),
        VIEWERS,
        "{}",
        free["simulcast"]
    );
    assert_eq!(
        count(&capped, "medium") + count(&capped, "high"),
        0,
        "{}",
        capped["simulcast"]
    );
    // An operator sees the same in /metrics: the moves, and the feedback behind them.
    let m = scrape_metrics(&server);
    let get = |k: &str| m.get(k).copied().unwrap_or(0.0);
    assert!(
        get("golive_layer_switches_total") >= (2 * VIEWERS) as f64,
        "{m:?}"
    );
    assert!(get("golive_twcc_feedback_total{result=\"taken\"}") > 0.0);
    assert_eq!(get("golive_twcc_feedback_total{result=\"refused\"}"), 0.0);
}
