//! What an operator sees: `/metrics` moves when a broadcast runs.

use anyhow::{Result, ensure};
use golive_e2e::http::request;
use golive_e2e::media::MediaKind;
use golive_e2e::{GoliveServer, Session, run_test};
use std::collections::HashMap;
use std::time::Duration;

async fn scrape(server: &GoliveServer) -> Result<HashMap<String, f64>> {
    let r = request(server.http_addr(), "GET", "/metrics", &[], b"").await?;
    ensure!(r.status == 200, "{r:?}");
    ensure!(
        r.header("content-type")
            .is_some_and(|t| t.starts_with("text/plain")),
        "{r:?}"
    );
    Ok(r.body
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| {
            let (name, value) = l.rsplit_once(' ')?;
            Some((name.to_owned(), value.parse().ok()?))
        })
        .collect())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn metrics_move_when_a_broadcast_runs() {
    let server = GoliveServer::start().expect("starting golive");
    run_test("metrics_move_when_a_broadcast_runs", async {
        let before = scrape(&server).await?;
        let get = |m: &HashMap<String, f64>, k: &str| m.get(k).copied().unwrap_or(0.0);
        ensure!(get(&before, "golive_streams") == 0.0);

        let _publisher = Session::publish(&server, "metered").await?;
        let viewer = Session::watch(&server, "metered").await?;
        viewer
            .peer
            .wait_packets(MediaKind::Video, 30, Duration::from_secs(8))
            .await?;
        let after = scrape(&server).await?;
        for counter in [
            "golive_packets_in_total",
            "golive_packets_out_total",
            "golive_datagrams_in_total",
            "golive_datagrams_out_total",
            "golive_bytes_in_total",
            "golive_bytes_out_total",
            "golive_signalling_messages_total{type=\"publish\"}",
            "golive_signalling_messages_total{type=\"watch\"}",
            "golive_ttff_seconds_count",
        ] {
            ensure!(
                get(&after, counter) > get(&before, counter),
                "{counter} did not move: {} -> {}",
                get(&before, counter),
                get(&after, counter)
            );
        }
        ensure!(get(&after, "golive_streams") == 1.0, "streams gauge");
        ensure!(get(&after, "golive_viewers") == 1.0, "viewers gauge");
        ensure!(get(&after, "golive_stream_viewers{stream=\"metered\"}") == 1.0);
        ensure!(
            get(&after, "golive_peers{state=\"connected\"}") == 2.0,
            "two connected peers"
        );
        ensure!(
            get(&after, "process_resident_memory_bytes") > 1e6,
            "RSS reported"
        );
        let out = get(&after, "golive_packets_out_total");
        let sent_to_viewer = viewer.peer.snapshot().received.len() as f64;
        ensure!(
            out >= sent_to_viewer * 0.9,
            "packets out {out} vs viewer received {sent_to_viewer}"
        );
        let cache_or_pli = get(&after, "golive_keyframe_cache_hits_total")
            + get(&after, "golive_keyframe_requests_sent_total");
        ensure!(
            cache_or_pli >= 1.0,
            "the viewer started from the cache or a PLI"
        );
        Ok::<_, anyhow::Error>(())
    })
    .await;
}
