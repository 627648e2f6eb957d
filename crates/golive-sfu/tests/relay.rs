//! A relay (another node pulling a stream to serve its own viewers) is sent every simulcast
//! layer at once, each on a video section and SSRC of its own, byte for byte and never switched;
//! a keyframe request on one of its sections reaches the broadcaster for that layer alone.

mod sim;

use golive_sfu::{MediaOptions, PeerId};
use sim::{Kind, Link, Received, Sim, ms};
use std::time::Duration;

const PUBLISHER: PeerId = PeerId(1);
const RELAY: PeerId = PeerId(20);
const VIEWER: PeerId = PeerId(21);
const GOP_FRAMES: u64 = 30;
const LAYERS: usize = 3;

/// The video `id` received on its video section `section`.
fn section_video(sim: &Sim, id: PeerId, section: usize) -> Vec<&Received> {
    let c = sim.client(id);
    c.received
        .iter()
        .zip(&c.received_sections)
        .filter(|(r, s)| r.kind == Kind::Video && **s == section)
        .map(|(r, _)| r)
        .collect()
}

fn simulcast_with_relay() -> Sim {
    let mut sim = Sim::new();
    sim.add_simulcast_publisher(PUBLISHER, "live", GOP_FRAMES);
    sim.run_until_connected(&[PUBLISHER], Duration::from_secs(5));
    sim.run_for(ms(500));
    sim.add_relay(RELAY, "live", LAYERS);
    sim.run_until_connected(&[RELAY], Duration::from_secs(5));
    sim
}

#[test]
fn a_relay_gets_every_layer_byte_for_byte_each_on_its_own_section() {
    let mut sim = simulcast_with_relay();
    // A viewer beside it still gets one layer at a time.
    sim.add_viewer(VIEWER, "live");
    sim.run_until_connected(&[VIEWER], Duration::from_secs(5));
    sim.run_for(Duration::from_secs(3));

    let sc = sim.client(PUBLISHER).peer.simulcast().expect("simulcast");
    let mut ssrcs = Vec::new();
    for (layer, l) in sc.layers().iter().enumerate() {
        let run = section_video(&sim, RELAY, layer);
        assert!(
            run.len() > 60,
            "layer {layer}: {} packets on the relay",
            run.len()
        );
        let source = l.source.id();
        assert!(
            run.iter()
                .all(|r| r.stamp.is_some_and(|s| s.source_id == source)),
            "section {layer} carries another layer's packets"
        );
        assert!(run[0].keyframe_start, "layer {layer} starts mid-picture");
        let sent: Vec<&sim::Sent> = sim.client(PUBLISHER).layer_sent[layer].iter().collect();
        golive_client::check_track(&sent, &run, sim::VIEWER_VP8_PT, false)
            .unwrap_or_else(|e| panic!("relay layer {layer}: {e}"));
        ssrcs.push(run[0].ssrc);
    }
    ssrcs.sort_unstable();
    ssrcs.dedup();
    assert_eq!(ssrcs.len(), LAYERS, "one SSRC per layer");
    assert!(
        !sim.client(RELAY).received_of(Kind::Audio).is_empty(),
        "the relay gets audio too"
    );
    assert!(
        sim.layer_changes.iter().all(|(_, c)| c.peer != RELAY),
        "a relay never switches"
    );
    let viewer = sim.client(VIEWER);
    assert!(
        viewer.received_sections.iter().all(|s| *s == 0),
        "a viewer has one video section"
    );
    let video = viewer.received_of(Kind::Video);
    assert!(!video.is_empty());
    assert!(video.iter().all(|r| r.ssrc == video[0].ssrc));
}

#[test]
fn a_keyframe_request_of_a_relay_reaches_the_layer_it_names_only() {
    let mut sim = simulcast_with_relay();
    sim.run_for(Duration::from_secs(2));
    for layer in [2, 0, 1] {
        // Past the coalescing interval of every layer's last request.
        sim.run_for(Duration::from_secs(1));
        let before = sim.layer_keyframe_requests(PUBLISHER);
        assert!(sim.send_pli_for(RELAY, layer), "section {layer} has video");
        sim.run_for(ms(50));
        let after = sim.layer_keyframe_requests(PUBLISHER);
        for l in 0..LAYERS {
            let expected = before[l] + u64::from(l == layer);
            assert_eq!(
                after[l],
                expected,
                "a PLI on section {layer}: layer {l} was asked {} times",
                after[l] - before[l]
            );
        }
    }
}

#[test]
fn a_relay_of_a_broadcast_without_simulcast_gets_its_one_layer_on_the_first_section() {
    let mut sim = Sim::new();
    sim.add_publisher(PUBLISHER, "live", GOP_FRAMES);
    sim.run_until_connected(&[PUBLISHER], Duration::from_secs(5));
    sim.run_for(ms(500));
    sim.add_relay(RELAY, "live", LAYERS);
    sim.run_until_connected(&[RELAY], Duration::from_secs(5));
    sim.run_for(Duration::from_secs(2));

    let run = section_video(&sim, RELAY, 0);
    assert!(run.len() > 40, "{} packets", run.len());
    let publisher = sim.client(PUBLISHER);
    let sent = publisher.sent_of(Kind::Video);
    golive_client::check_track(&sent, &run, sim::VIEWER_VP8_PT, false)
        .unwrap_or_else(|e| panic!("relay: {e}"));
    for section in 1..LAYERS {
        assert!(
            section_video(&sim, RELAY, section).is_empty(),
            "section {section} carries video of a broadcast with one layer"
        );
    }
}

#[test]
fn a_layer_the_broadcaster_stops_stops_on_the_relay_while_the_others_go_on() {
    let mut sim = simulcast_with_relay();
    sim.run_for(Duration::from_secs(1));
    sim.set_layer_sending(PUBLISHER, 2, false);
    sim.run_for(ms(100));
    let counts = |sim: &Sim| -> Vec<usize> {
        (0..LAYERS)
            .map(|l| section_video(sim, RELAY, l).len())
            .collect()
    };
    let before = counts(&sim);
    sim.run_for(Duration::from_secs(1));
    let after = counts(&sim);
    assert_eq!(after[2], before[2], "the stopped layer still arrives");
    assert!(after[0] > before[0] + 20 && after[1] > before[1] + 20);
    // It comes back, from a keyframe, on the same section and SSRC.
    sim.set_layer_sending(PUBLISHER, 2, true);
    sim.run_for(Duration::from_secs(1));
    let top = section_video(&sim, RELAY, 2);
    assert!(top.len() > before[2] + 20, "the layer did not come back");
    assert!(top[before[2]].keyframe_start);
    assert!(top.iter().all(|r| r.ssrc == top[0].ssrc));
}

#[test]
fn a_relay_that_stops_reading_restarts_every_layer_at_a_keyframe_and_nobody_else_notices() {
    let mut sim = Sim::with_options(MediaOptions {
        max_viewer_backlog_bytes: 64 * 1024,
        ..MediaOptions::default()
    });
    sim.add_simulcast_publisher(PUBLISHER, "live", GOP_FRAMES);
    sim.run_until_connected(&[PUBLISHER], Duration::from_secs(5));
    sim.add_relay(RELAY, "live", LAYERS);
    sim.add_viewer(VIEWER, "live");
    sim.run_until_connected(&[RELAY, VIEWER], Duration::from_secs(5));
    sim.run_for(Duration::from_secs(1));

    let stalled = Link {
        stalled: true,
        ..Link::default()
    };
    let requests_before = sim.layer_keyframe_requests(PUBLISHER);
    sim.set_link(RELAY, stalled);
    sim.run_for(Duration::from_secs(3));
    let st = sim.sfu.stats().clone();
    assert!(st.slow_viewer_skips >= 1, "{st:?}");
    sim.set_link(RELAY, Link::default());
    let resumed_at = sim.now;
    sim.run_for(Duration::from_secs(2));

    let requests_after = sim.layer_keyframe_requests(PUBLISHER);
    for layer in 0..LAYERS {
        let video = section_video(&sim, RELAY, layer);
        let seqs: Vec<u16> = video.iter().map(|r| r.seq).collect();
        golive_client::verify::gap_free(&seqs)
            .unwrap_or_else(|e| panic!("relay layer {layer}: {e}"));
        let after: Vec<_> = video.iter().filter(|r| r.at > resumed_at).collect();
        assert!(
            after.iter().any(|r| r.keyframe_start),
            "layer {layer} did not restart at a keyframe"
        );
    }
    // Layers whose keyframe the SFU still holds restart from it; the others are asked for one
    // (the requests may go out while the relay is still stalled).
    assert!(
        requests_after
            .iter()
            .zip(&requests_before)
            .any(|(after, before)| after > before),
        "the restart asked for no keyframe: {requests_before:?} before, {requests_after:?} after"
    );
    // The viewer beside it: one line, without a gap.
    let video = sim.client(VIEWER).received_of(Kind::Video);
    let seqs: Vec<u16> = video.iter().map(|r| r.seq).collect();
    golive_client::verify::gap_free(&seqs).unwrap_or_else(|e| panic!("viewer: {e}"));
    assert!(video.iter().any(|r| r.at > resumed_at));
}
