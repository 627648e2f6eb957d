//! Simulcast: a broadcaster's three layers are each received and kept apart, and each viewer
//! gets exactly one layer at a time, moving between them only at a keyframe of the new layer,
//! on one continuous line of SSRC, sequence numbers and timestamps.

mod sim;

use golive_sfu::bwe::{Preference, SwitchReason};
use golive_sfu::{Layer, PeerId};
use sim::{Kind, Received, Sim, ms};
use std::time::{Duration, Instant};

const PUBLISHER: PeerId = PeerId(1);
const GOP_FRAMES: u64 = 30;

fn started() -> Sim {
    started_on(Sim::new())
}

/// The estimate runs on the lean viewer leg (the default), whatever GOLIVE_VIEWER_LEG says.
fn started_on(mut sim: Sim) -> Sim {
    sim.add_simulcast_publisher(PUBLISHER, "live", GOP_FRAMES);
    sim.run_until_connected(&[PUBLISHER], Duration::from_secs(5));
    sim.run_for(ms(500));
    sim
}

fn layer_sources(sim: &Sim) -> Vec<u32> {
    let sc = sim.client(PUBLISHER).peer.simulcast().expect("simulcast");
    sc.layers().iter().map(|l| l.source.id()).collect()
}

/// A viewer's video, cut into runs of one layer each: (layer, packets).
fn runs<'a>(sim: &Sim, viewer: &'a sim::Client) -> Vec<(usize, Vec<&'a Received>)> {
    let sources = layer_sources(sim);
    let mut runs: Vec<(usize, Vec<&Received>)> = Vec::new();
    for r in viewer.received_of(Kind::Video) {
        let source = r.stamp.expect("a stamped payload").source_id;
        let layer = sources
            .iter()
            .position(|s| *s == source)
            .unwrap_or_else(|| panic!("{}: a packet of no layer: {r:?}", viewer.id));
        match runs.last_mut() {
            Some((l, packets)) if *l == layer => packets.push(r),
            _ => runs.push((layer, vec![r])),
        }
    }
    runs
}

/// The whole video line a viewer saw: one SSRC, sequence numbers without a gap, timestamps
/// that never go back.
fn assert_one_line(viewer: &sim::Client) {
    let video = viewer.received_of(Kind::Video);
    assert!(!video.is_empty(), "{}: no video", viewer.id);
    let ssrc = video[0].ssrc;
    assert!(
        video.iter().all(|r| r.ssrc == ssrc),
        "{}: more than one SSRC",
        viewer.id
    );
    let seqs: Vec<u16> = video.iter().map(|r| r.seq).collect();
    golive_client::verify::gap_free(&seqs).unwrap_or_else(|e| panic!("{}: {e}", viewer.id));
    for pair in video.windows(2) {
        let step = pair[1].ts.wrapping_sub(pair[0].ts) as i32;
        assert!(
            step >= 0,
            "{}: timestamp {} after {} (seq {})",
            viewer.id,
            pair[1].ts,
            pair[0].ts,
            pair[1].seq
        );
    }
}

/// Checks one run of a layer against what that layer sent: byte for byte, in order, with the
/// layer's timestamp steps and markers, from a keyframe start on.
fn assert_run_is_the_layer(sim: &Sim, viewer: PeerId, layer: usize, run: &[&Received]) {
    let sent: Vec<&sim::Sent> = sim.client(PUBLISHER).layer_sent[layer].iter().collect();
    assert!(
        run[0].keyframe_start,
        "{viewer}: its run of layer {layer} does not start at a keyframe"
    );
    golive_client::check_track(&sent, run, sim::VIEWER_VP8_PT, false)
        .unwrap_or_else(|e| panic!("{viewer} layer {layer}: {e}"));
}

/// A viewer's video checked whole ([`assert_one_line`]) and run by run
/// ([`assert_run_is_the_layer`]); returns its runs.
fn checked_runs(sim: &Sim, viewer: PeerId) -> Vec<(usize, Vec<&Received>)> {
    let v = sim.client(viewer);
    assert_one_line(v);
    let runs = runs(sim, v);
    for (l, run) in &runs {
        assert_run_is_the_layer(sim, viewer, *l, run);
    }
    runs
}

/// The layer of each run, in order.
fn layers_of(runs: &[(usize, Vec<&Received>)]) -> Vec<usize> {
    runs.iter().map(|(l, _)| *l).collect()
}

fn changes_of(sim: &Sim, viewer: PeerId) -> Vec<(Layer, SwitchReason)> {
    sim.layer_changes
        .iter()
        .filter(|(_, c)| c.peer == viewer)
        .filter_map(|(_, c)| Some((c.layer?, c.reason)))
        .collect()
}

#[test]
fn every_layer_is_received_and_each_viewer_gets_the_layer_its_preference_allows() {
    let mut sim = started();
    let viewers = [
        (PeerId(10), Preference::Low, 0),
        (PeerId(11), Preference::Medium, 1),
        (PeerId(12), Preference::High, 2),
        (PeerId(13), Preference::Auto, 2),
    ];
    for (id, preference, _) in viewers {
        sim.add_viewer(id, "live");
        let now = sim.now;
        sim.sfu
            .set_viewer_preference(now, id, preference)
            .expect("a viewer");
    }
    let ids: Vec<PeerId> = viewers.iter().map(|v| v.0).collect();
    sim.run_until_connected(&ids, Duration::from_secs(5));
    sim.run_for(Duration::from_secs(3));

    let p = sim.client(PUBLISHER);
    for (l, sent) in p
        .peer
        .simulcast()
        .unwrap()
        .layers()
        .iter()
        .zip(&p.layer_sent)
    {
        assert!(sent.len() > 90, "layer {} sent {}", l.rid, sent.len());
    }
    assert_eq!(sim.sfu.stats().rtp_dropped_unknown_layer, 0);
    for (id, _, layer) in viewers {
        let runs = checked_runs(&sim, id);
        let (last_layer, last_run) = runs.last().expect("video");
        assert_eq!(*last_layer, layer, "{id} ends on layer {last_layer}");
        assert!(last_run.len() > 60, "{id}: {} packets", last_run.len());
        // Every viewer starts on the lowest layer; the others move up once, for their
        // preference.
        assert_eq!(runs[0].0, 0, "{id} starts on layer {}", runs[0].0);
        let expected: Vec<(Layer, SwitchReason)> = if layer == 0 {
            vec![]
        } else {
            vec![(Layer(layer as u8), SwitchReason::Preference)]
        };
        assert_eq!(changes_of(&sim, id), expected, "{id}");
        assert_eq!(
            sim.sfu.viewer_layers(id),
            Some((Layer(layer as u8), Layer(layer as u8)))
        );
        // Audio is untouched by simulcast.
        sim::check_track(sim.client(PUBLISHER), sim.client(id), Kind::Audio, None);
    }
}

#[test]
fn a_viewer_moved_between_layers_sees_one_line_and_each_move_starts_at_a_keyframe() {
    let mut sim = started();
    let viewer = PeerId(20);
    sim.add_viewer(viewer, "live");
    sim.run_until_connected(&[viewer], Duration::from_secs(5));
    sim.run_for(Duration::from_secs(1));
    for preference in [
        Preference::Low,
        Preference::Medium,
        Preference::High,
        Preference::Medium,
    ] {
        let now = sim.now;
        sim.sfu
            .set_viewer_preference(now, viewer, preference)
            .unwrap();
        sim.run_for(Duration::from_secs(1));
    }
    let layers = layers_of(&checked_runs(&sim, viewer));
    assert_eq!(layers, [0, 2, 0, 1, 2, 1]);
    let reasons: Vec<(Layer, SwitchReason)> = changes_of(&sim, viewer);
    assert_eq!(
        reasons,
        [2, 0, 1, 2, 1].map(|l| (Layer(l), SwitchReason::Preference))
    );
    // Each move waited for a keyframe the SFU asked of that layer, not for the next regular
    // one (a GOP is a second): the new layer's first packet came well within 100 ms.
    let changed_at: Vec<Instant> = sim
        .layer_changes
        .iter()
        .filter(|(_, c)| c.peer == viewer)
        .map(|(t, _)| *t)
        .collect();
    for pair in changed_at.windows(2) {
        assert!(pair[1] > pair[0]);
    }
    let join = sim.sfu_connected[&viewer];
    for (i, at) in changed_at.iter().enumerate().skip(1) {
        let set_at = join + Duration::from_secs(1) * i as u32;
        assert!(
            *at >= set_at && *at - set_at < ms(100),
            "move {i} came {:?} after it was asked",
            at.saturating_duration_since(set_at)
        );
    }
}

#[test]
fn keyframe_requests_reach_the_layer_they_are_for_coalesced() {
    let mut sim = started();
    let (high, low_a, low_b) = (PeerId(30), PeerId(31), PeerId(32));
    for (id, preference) in [
        (high, Preference::High),
        (low_a, Preference::Low),
        (low_b, Preference::Low),
    ] {
        sim.add_viewer(id, "live");
        let now = sim.now;
        sim.sfu.set_viewer_preference(now, id, preference).unwrap();
    }
    sim.run_until_connected(&[high, low_a, low_b], Duration::from_secs(5));
    sim.run_for(Duration::from_secs(2));
    // The keyframe requests each layer got while `viewers` sent one PLI each.
    let asked = |sim: &mut Sim, viewers: &[PeerId]| -> Vec<u64> {
        let before = sim.layer_keyframe_requests(PUBLISHER);
        for v in viewers {
            assert!(sim.send_pli(*v));
        }
        sim.run_for(ms(50));
        let after = sim.layer_keyframe_requests(PUBLISHER);
        after.iter().zip(&before).map(|(a, b)| a - b).collect()
    };
    assert_eq!(
        asked(&mut sim, &[high]),
        [0, 0, 1],
        "the high viewer's PLI names only the top layer"
    );
    // Two viewers of the lowest layer at once: one PLI for them both.
    sim.run_for(Duration::from_secs(1));
    assert_eq!(asked(&mut sim, &[low_a, low_b]), [1, 0, 0]);
}

#[test]
fn a_simulcast_offer_with_more_layers_than_golive_takes_is_refused() {
    let mut sim = Sim::new();
    let offer = sim.viewer_offer();
    let offer = offer.replace("a=recvonly", "a=sendonly")
        + "a=rid:a send\r\na=rid:b send\r\na=rid:c send\r\na=rid:d send\r\na=simulcast:send a;b;c;d\r\n";
    let err = golive_sfu::Sfu::publisher_media(&offer).expect_err("four layers");
    assert!(
        matches!(&err, golive_sfu::SfuError::BadSdp(m) if m.contains("at most 3")),
        "{err}"
    );
}

#[test]
fn a_viewer_on_a_top_layer_follows_a_new_broadcaster_without_simulcast() {
    let mut sim = started();
    let viewer = PeerId(40);
    sim.add_viewer(viewer, "live");
    sim.run_until_connected(&[viewer], Duration::from_secs(5));
    sim.run_for(Duration::from_secs(2));
    assert_eq!(sim.sfu.viewer_layers(viewer), Some((Layer(2), Layer(2))));
    assert_eq!(sim.sfu.viewer_stream_layers(viewer), Some(3));
    assert_eq!(sim.sfu.viewer_stream_layers(PUBLISHER), None);
    sim.remove(PUBLISHER);
    sim.drop_client(PUBLISHER);
    let replacement = PeerId(2);
    sim.add_publisher(replacement, "live", GOP_FRAMES);
    sim.run_until_connected(&[replacement], Duration::from_secs(5));
    let switched_from = sim.now;
    sim.run_for(Duration::from_secs(2));

    let v = sim.client(viewer);
    assert_one_line(v);
    let source = sim
        .client(replacement)
        .peer
        .source()
        .expect("a publisher")
        .id();
    let tail: Vec<&Received> = v
        .received_of(Kind::Video)
        .into_iter()
        .filter(|r| r.at >= switched_from && r.stamp.is_some_and(|s| s.source_id == source))
        .collect();
    assert!(
        tail.len() > 50,
        "{} packets of the new broadcaster",
        tail.len()
    );
    assert!(tail[0].keyframe_start);
    let sent = sim.client(replacement).sent_of(Kind::Video);
    golive_client::check_track(&sent, &tail, sim::VIEWER_VP8_PT, false)
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(sim.sfu.viewer_layers(viewer), Some((Layer(0), Layer(0))));
    // The new broadcaster's one layer is counted afresh, so the shell names it as the top.
    assert_eq!(sim.sfu.viewer_stream_layers(viewer), Some(1));
    assert_eq!(
        changes_of(&sim, viewer).last(),
        Some(&(Layer(0), SwitchReason::Publisher))
    );
}

/// Connects a browser viewer just added and runs five seconds on a free link: its TWCC
/// feedback is taken, it reads every packet, it ends on the top layer, and its video checks out
/// whole and run by run. Returns the layer of each run.
fn climbs_to_the_top(sim: &mut Sim, viewer: PeerId) -> Vec<usize> {
    sim.run_until_connected(&[viewer], Duration::from_secs(5));
    sim.run_for(Duration::from_secs(5));
    let stats = sim.sfu.stats();
    assert!(stats.twcc_feedback_in > 20, "{stats:?}");
    assert_eq!(stats.twcc_feedback_refused, 0);
    assert_eq!(sim.sfu.viewer_layers(viewer), Some((Layer(2), Layer(2))));
    assert_eq!(sim.client(viewer).read_errors, 0);
    layers_of(&checked_runs(sim, viewer))
}

#[test]
fn a_browser_viewer_on_a_free_link_climbs_to_the_top_layer_by_its_estimate() {
    let mut sim = started_on(Sim::lean());
    let viewer = PeerId(50);
    sim.add_browser_viewer_with_rtx(viewer, "live");
    let layers = climbs_to_the_top(&mut sim, viewer);
    let estimate = sim.sfu.viewer_estimate_bps(viewer).expect("an estimate");
    assert_eq!(layers, [0, 1, 2], "estimate {estimate}");
    assert!(
        changes_of(&sim, viewer)
            .iter()
            .all(|(_, r)| *r == SwitchReason::Bandwidth)
    );
}

#[test]
fn a_browser_viewer_whose_feedback_shows_a_constrained_link_moves_down_to_the_lowest_layer() {
    let mut sim = started_on(Sim::lean());
    let (constrained, free) = (PeerId(60), PeerId(61));
    sim.add_browser_viewer_with_rtx(constrained, "live");
    sim.add_browser_viewer_with_rtx(free, "live");
    sim.run_until_connected(&[constrained, free], Duration::from_secs(5));
    sim.run_for(Duration::from_secs(4));
    assert_eq!(
        sim.sfu.viewer_layers(constrained),
        Some((Layer(2), Layer(2)))
    );
    // With audio and packet overheads the top layer takes about 310 kbit/s, the middle one
    // about 190, the lowest about 120; the link now carries 160.
    sim.set_link(
        constrained,
        sim::Link {
            down_rate_bps: Some(160_000),
            ..sim::Link::default()
        },
    );
    let constrained_at = sim.now;
    sim.run_for(Duration::from_secs(6));
    let estimate = sim
        .sfu
        .viewer_estimate_bps(constrained)
        .expect("an estimate");
    // Below what the middle layer takes (on the lowest layer it may grow to one and a half
    // times what arrives, the most an estimate runs ahead of a path unprobed).
    assert!(estimate < 190_000.0, "estimate {estimate}");
    assert_eq!(
        sim.sfu.viewer_layers(constrained),
        Some((Layer(0), Layer(0))),
        "estimate {estimate}"
    );
    let moves: Vec<(Layer, SwitchReason)> = sim
        .layer_changes
        .iter()
        .filter(|(t, c)| c.peer == constrained && *t > constrained_at)
        .filter_map(|(_, c)| Some((c.layer?, c.reason)))
        .collect();
    assert_eq!(
        moves.last(),
        Some(&(Layer(0), SwitchReason::Bandwidth)),
        "{moves:?}"
    );
    // One SSRC throughout (the link lost packets, so the line has holes the viewer NACKed);
    // once settled on the lowest layer, it gets that layer whole, byte for byte.
    let v = sim.client(constrained);
    let video = v.received_of(Kind::Video);
    assert!(video.iter().all(|r| r.ssrc == video[0].ssrc));
    let moved_at = sim
        .layer_changes
        .iter()
        .rev()
        .find(|(_, c)| c.peer == constrained)
        .map(|(t, _)| *t)
        .unwrap();
    // Packets the publisher sent a second after the move (repairs of older losses aside).
    let since_ns = (moved_at + Duration::from_secs(1) - sim.t0).as_nanos() as u64;
    let settled: Vec<&Received> = video
        .into_iter()
        .filter(|r| r.stamp.is_some_and(|s| s.sent_ns >= since_ns))
        .collect();
    assert!(settled.len() > 60, "{} packets once settled", settled.len());
    let sent: Vec<&sim::Sent> = sim.client(PUBLISHER).layer_sent[0].iter().collect();
    golive_client::check_track(&sent, &settled, sim::VIEWER_VP8_PT, false)
        .unwrap_or_else(|e| panic!("once settled: {e}"));
    // The other viewer is untouched.
    assert_eq!(sim.sfu.viewer_layers(free), Some((Layer(2), Layer(2))));

    // The link frees up: the estimate grows with what the viewer receives, and the viewer
    // climbs back one layer per hold.
    sim.set_link(constrained, sim::Link::default());
    sim.run_for(Duration::from_secs(25));
    assert_eq!(
        sim.sfu.viewer_layers(constrained),
        Some((Layer(2), Layer(2))),
        "estimate {:?}",
        sim.sfu.viewer_estimate_bps(constrained)
    );
}

#[test]
fn a_legacy_srtp_browser_viewer_gets_stamped_packets_it_can_read_and_climbs() {
    let mut sim = started_on(Sim::lean_with_legacy_srtp());
    let viewer = PeerId(70);
    sim.add_legacy_browser_viewer(viewer, "live");
    climbs_to_the_top(&mut sim, viewer);
}

#[test]
fn a_layer_the_broadcaster_stops_sends_its_viewers_one_layer_down_and_back_when_it_returns() {
    let mut sim = started();
    let viewer = PeerId(80);
    sim.add_viewer(viewer, "live");
    sim.run_until_connected(&[viewer], Duration::from_secs(5));
    sim.run_for(Duration::from_secs(2));
    assert_eq!(sim.sfu.viewer_layers(viewer), Some((Layer(2), Layer(2))));
    sim.set_layer_sending(PUBLISHER, 2, false);
    sim.run_for(Duration::from_secs(2));
    assert_eq!(sim.sfu.viewer_layers(viewer), Some((Layer(1), Layer(1))));
    sim.set_layer_sending(PUBLISHER, 2, true);
    sim.run_for(Duration::from_secs(2));
    assert_eq!(sim.sfu.viewer_layers(viewer), Some((Layer(2), Layer(2))));

    let layers = layers_of(&checked_runs(&sim, viewer));
    assert_eq!(layers, [0, 2, 1, 2]);
    assert_eq!(
        changes_of(&sim, viewer),
        [
            (Layer(2), SwitchReason::Preference),
            (Layer(1), SwitchReason::Publisher),
            (Layer(2), SwitchReason::Publisher),
        ]
    );
    // The picture stopped for no longer than it takes to notice the layer stopped and to get
    // a keyframe of the next one.
    let video = sim.client(viewer).received_of(Kind::Video);
    let longest_gap = video.windows(2).map(|w| w[1].at - w[0].at).max().unwrap();
    assert!(longest_gap < ms(700), "video stopped for {longest_gap:?}");
}

/// With audio and overheads the top layer takes about 310 kbit/s, the middle one about 190, the
/// lowest about 120 (see the test above): a link of 130 holds a viewer on the lowest.
const NARROW_LINK_BPS: u64 = 130_000;

/// A browser viewer (with RTX) whose link narrows until its estimate has fallen to the lowest
/// layer, then frees up: how long from then until it is on the top layer again (`None`: not
/// within `limit`), and the SFU's counters.
fn climb_after_a_narrow_link(probing: bool, limit: Duration) -> (Option<Duration>, Sim) {
    let mut sim = started_on(Sim::lean_probing(probing));
    let viewer = PeerId(90);
    sim.add_browser_viewer_with_rtx(viewer, "live");
    sim.run_until_connected(&[viewer], Duration::from_secs(5));
    sim.run_for(Duration::from_secs(4));
    sim.set_link(
        viewer,
        sim::Link {
            down_rate_bps: Some(NARROW_LINK_BPS),
            ..sim::Link::default()
        },
    );
    sim.run_for(Duration::from_secs(6));
    assert_eq!(
        sim.sfu.viewer_layers(viewer),
        Some((Layer(0), Layer(0))),
        "probing {probing}: estimate {:?}",
        sim.sfu.viewer_estimate_bps(viewer)
    );
    sim.set_link(viewer, sim::Link::default());
    let freed = sim.now;
    while sim.now - freed < limit {
        sim.run_for(ms(100));
        if sim.sfu.viewer_layers(viewer) == Some((Layer(2), Layer(2))) {
            // One SSRC throughout (the narrow link lost packets: the line has holes).
            let v = sim.client(viewer);
            assert_eq!(v.read_errors, 0);
            let video = v.received_of(Kind::Video);
            assert!(video.iter().all(|r| r.ssrc == video[0].ssrc));
            return (Some(sim.now - freed), sim);
        }
    }
    (None, sim)
}

#[test]
fn probing_brings_a_viewer_whose_link_freed_up_to_the_top_layer_sooner() {
    let limit = Duration::from_secs(40);
    let (probed, with) = climb_after_a_narrow_link(true, limit);
    let (unprobed, without) = climb_after_a_narrow_link(false, limit);
    let stats = with.sfu.stats();
    eprintln!(
        "to the top layer after the link freed: with probing {probed:?}, without {unprobed:?}; \
         probes started {}, succeeded {}, failed {}, padding packets {}",
        stats.probes_started, stats.probes_succeeded, stats.probes_failed, stats.padding_sent
    );
    let probed = probed.expect("with probing, the top layer within the limit");
    assert!(stats.probes_succeeded >= 1, "{stats:?}");
    assert!(stats.padding_sent > 0);
    assert_eq!(without.sfu.stats().padding_sent, 0);
    assert_eq!(without.sfu.stats().probes_started, 0);
    // Without probing the estimate climbs only with what the lower layers carry.
    let unprobed = unprobed.unwrap_or(limit);
    assert!(
        probed < unprobed,
        "with probing {probed:?}, without {unprobed:?}"
    );
}

/// Video packets a viewer never got (after repairs) among those numbered from its first to its
/// last received after `since`.
fn video_missing_since(viewer: &sim::Client, since: Instant) -> (usize, usize) {
    let mut seqs: Vec<u16> = viewer
        .received_of(Kind::Video)
        .into_iter()
        .filter(|r| r.at >= since)
        .map(|r| r.seq)
        .collect();
    let (Some(&first), Some(&last)) = (seqs.first(), seqs.last()) else {
        return (0, 0);
    };
    let span = usize::from(last.wrapping_sub(first)) + 1;
    seqs.sort_unstable();
    seqs.dedup();
    (span - seqs.len(), span)
}

#[test]
fn a_capped_viewers_probes_fail_and_back_off_without_costing_it_media() {
    // The link carries the middle layer, not the top one.
    const CAP_BPS: u64 = 250_000;
    const WATCHED: Duration = Duration::from_secs(40);
    let run = |probing: bool| {
        let mut sim = started_on(Sim::lean_probing(probing));
        let viewer = PeerId(95);
        sim.add_browser_viewer_with_rtx(viewer, "live");
        sim.set_link(
            viewer,
            sim::Link {
                down_rate_bps: Some(CAP_BPS),
                ..sim::Link::default()
            },
        );
        sim.run_until_connected(&[viewer], Duration::from_secs(5));
        sim.run_for(Duration::from_secs(10));
        let settled = sim.now;
        let stats_before = sim.sfu.stats().clone();
        sim.run_for(WATCHED);
        let layers = sim.sfu.viewer_layers(viewer);
        let missing = video_missing_since(sim.client(viewer), settled);
        let stats = sim.sfu.stats().clone();
        (layers, missing, stats_before, stats)
    };
    let (layers, missing, before, stats) = run(true);
    let (plain_layers, plain_missing, _, plain_stats) = run(false);
    let started = stats.probes_started - before.probes_started;
    let failed = stats.probes_failed - before.probes_failed;
    eprintln!(
        "capped at {CAP_BPS} bit/s, over {WATCHED:?}: with probing layer {layers:?}, video \
         missing {missing:?} (of span), probes started {started}, failed {failed}, \
         succeeded {}, padding packets {}; without probing layer {plain_layers:?}, missing \
         {plain_missing:?}",
        stats.probes_succeeded - before.probes_succeeded,
        stats.padding_sent - before.padding_sent
    );
    // Probes pad only up to their rate: on this link the viewer's own sending (retransmissions
    // after each failed climb to the top layer) often covers it already.
    assert!(stats.padding_sent > 0, "{stats:?}");
    assert_eq!(layers, Some((Layer(1), Layer(1))));
    assert_eq!(plain_layers, Some((Layer(1), Layer(1))));
    assert_eq!(plain_stats.probes_started, 0);
    assert!(failed >= 2, "{stats:?}");
    // Backing off: after two failures probes come at most every 8 s; at the first interval
    // (2 s) there would have been 20 in the window.
    let most = WATCHED.as_secs() / 8 + 2;
    assert!(started <= most, "{started} probes in {WATCHED:?}");
    // What the probes cost the media: at most a percent more of it lost than the cap alone.
    let loss = missing.0 as f64 / missing.1.max(1) as f64;
    let plain_loss = plain_missing.0 as f64 / plain_missing.1.max(1) as f64;
    assert!(
        loss <= plain_loss + 0.01,
        "with probing {loss:.4} lost, without {plain_loss:.4}"
    );
}

#[test]
fn a_link_below_the_lowest_layer_gets_audio_only_and_video_resumes_at_a_keyframe_when_it_can() {
    let mut sim = started_on(Sim::lean_probing(true));
    let viewer = PeerId(97);
    sim.add_browser_viewer_with_rtx(viewer, "live");
    sim.run_until_connected(&[viewer], Duration::from_secs(5));
    sim.run_for(Duration::from_secs(3));
    assert_eq!(sim.sfu.viewer_layers(viewer), Some((Layer(2), Layer(2))));
    // A link that carries the audio (about 45 kbit/s with its headers) and not the lowest
    // layer beside it (about 120).
    sim.set_link(
        viewer,
        sim::Link {
            down_rate_bps: Some(70_000),
            ..sim::Link::default()
        },
    );
    let narrowed = sim.now;
    let mut paused_at = None;
    while sim.now - narrowed < Duration::from_secs(10) && paused_at.is_none() {
        sim.run_for(ms(100));
        paused_at = sim
            .layer_changes
            .iter()
            .find(|(t, c)| c.peer == viewer && *t > narrowed && c.layer.is_none())
            .map(|(t, _)| *t);
    }
    let paused_at = paused_at.unwrap_or_else(|| {
        panic!(
            "no audio only within 10 s: estimate {:?}, layers {:?}",
            sim.sfu.viewer_estimate_bps(viewer),
            sim.sfu.viewer_layers(viewer)
        )
    });
    // Audio only: no video after the moment the queue drained, audio on.
    sim.run_for(Duration::from_secs(4));
    let settled = paused_at + Duration::from_secs(1);
    let v = sim.client(viewer);
    let video_after = v
        .received_of(Kind::Video)
        .iter()
        .filter(|r| r.at > settled)
        .count();
    let audio_after = v
        .received_of(Kind::Audio)
        .iter()
        .filter(|r| r.at > settled)
        .count();
    assert_eq!(video_after, 0, "video after the pause");
    assert!(audio_after > 100, "{audio_after} audio packets in 3 s");

    // The link frees up: probes find it, the video comes back at a keyframe on the same line.
    sim.set_link(viewer, sim::Link::default());
    let freed = sim.now;
    let mut resumed_at = None;
    while sim.now - freed < Duration::from_secs(30) && resumed_at.is_none() {
        sim.run_for(ms(100));
        resumed_at = sim
            .layer_changes
            .iter()
            .find(|(t, c)| c.peer == viewer && *t > freed && c.layer.is_some())
            .map(|(t, _)| *t);
    }
    let resumed_at = resumed_at.expect("video back within 30 s of the link freeing up");
    sim.run_for(Duration::from_secs(2));
    let v = sim.client(viewer);
    let back: Vec<&Received> = v
        .received_of(Kind::Video)
        .into_iter()
        .filter(|r| r.at >= resumed_at)
        .collect();
    assert!(
        back.len() > 30,
        "{} video packets after resuming",
        back.len()
    );
    assert!(back[0].keyframe_start, "video resumes at a keyframe");
    let video = v.received_of(Kind::Video);
    assert!(video.iter().all(|r| r.ssrc == video[0].ssrc), "one SSRC");
    eprintln!(
        "audio only {:?} after the link narrowed; video back {:?} after it freed",
        paused_at - narrowed,
        resumed_at - freed
    );
}

#[test]
fn a_single_layer_broadcast_above_the_starting_estimate_keeps_its_video() {
    // The estimate starts at 300 kbit/s and grows with what arrives; a 2.5 Mbit/s broadcast
    // without simulcast is far above it, and yet nothing says the link cannot carry it: the
    // viewer's video must not stop for audio only.
    let mut sim = Sim::lean_probing(true);
    let plan = golive_client::MediaPlan::for_bitrate(2_500_000, Duration::from_secs(1));
    sim.add_publisher_with_plan(PUBLISHER, "live", plan);
    sim.run_until_connected(&[PUBLISHER], Duration::from_secs(5));
    let viewer = PeerId(98);
    sim.add_browser_viewer_with_rtx(viewer, "live");
    sim.run_until_connected(&[viewer], Duration::from_secs(5));
    let start = sim.now;
    sim.run_for(Duration::from_secs(12));
    assert!(
        !sim.layer_changes.iter().any(|(_, c)| c.peer == viewer),
        "{:?}",
        sim.layer_changes
    );
    let late = start + Duration::from_secs(6);
    let sent = sim
        .client(PUBLISHER)
        .sent_of(Kind::Video)
        .iter()
        .filter(|s| s.at >= late)
        .count();
    let got = sim
        .client(viewer)
        .received_of(Kind::Video)
        .iter()
        .filter(|r| r.at >= late)
        .count();
    assert!(sent > 1_000, "{sent} sent");
    assert!(
        got * 10 >= sent * 9,
        "{got} of {sent} video packets in the last 6 s"
    );
    eprintln!(
        "estimate {:?} after 12 s; {got} of {sent} video packets in the last 6 s",
        sim.sfu.viewer_estimate_bps(viewer)
    );
}

#[test]
fn a_link_whose_shaper_lets_bursts_through_is_not_taken_for_a_wider_one() {
    // Links that carry the middle layer and not the top (about 310 kbit/s with audio and
    // headers, 357 with headroom), shaped by a token bucket as `tc tbf` shapes them: after a
    // quiet spell its burst passes at once. A probe shorter than the time the bucket takes to
    // drain arrives whole at the probed rate; between probes the estimate grows to one and a
    // half times what arrives, probes' padding included. Neither may move the viewer up to a
    // layer its link cannot carry (each climb costs it a burst of loss and a fall).
    const WATCHED: Duration = Duration::from_secs(60);
    // A probe finds the burst only if it outlasts it: a 2,000-byte bucket at 280 kbit/s lasts
    // 108 ms against the top layer's probe (about 430 kbit/s); a 4,000-byte one would last
    // 216 ms, longer than a probe, and does carry one through.
    for (rate, burst) in [(250_000, 2_000), (280_000, 2_000)] {
        let mut sim = started_on(Sim::lean_probing(true));
        let viewer = PeerId(96);
        sim.add_browser_viewer_with_rtx(viewer, "live");
        sim.set_link(
            viewer,
            sim::Link {
                down_rate_bps: Some(rate),
                down_burst_bytes: burst,
                ..sim::Link::default()
            },
        );
        sim.run_until_connected(&[viewer], Duration::from_secs(5));
        sim.run_for(WATCHED);
        let stats = sim.sfu.stats();
        let moves = changes_of(&sim, viewer);
        eprintln!(
            "{rate} bit/s, {burst}-byte bucket: moves {moves:?}; probes started {}, succeeded {}, \
             failed {}",
            stats.probes_started, stats.probes_succeeded, stats.probes_failed
        );
        assert_eq!(
            moves,
            [(Layer(1), SwitchReason::Bandwidth)],
            "{rate} bit/s, {burst}-byte bucket"
        );
        assert!(stats.probes_failed >= 4, "{stats:?}");
    }
}
