//! Temporal layers through the whole SFU: a simulcast broadcaster whose three layers each carry
//! three VP8 temporal layers (L1T3, as browsers send them), and viewers whose links carry less
//! than the top layer. A viewer's frame rate is lowered before its picture size: frames of the
//! upper temporal layers are dropped whole, and what the viewer gets is one stream a decoder
//! takes as it is: gap-free sequence numbers, consecutive picture ids, TL0PICIDX stepping at
//! each base-layer frame, every frame decodable from what came before it
//! (`golive_client::verify::check_vp8_pictures`), each payload byte for byte the publisher's
//! apart from the rewritten picture id and TL0PICIDX.

mod sim;

use golive_client::verify::{PictureRun, check_vp8_pictures, gap_free};
use golive_sfu::{Layer, PeerId};
use sim::{Kind, Received, Sim, ms};
use std::time::{Duration, Instant};

const PUBLISHER: PeerId = PeerId(1);
const GOP_FRAMES: u64 = 60;

fn started() -> Sim {
    let mut sim = Sim::lean_probing(true);
    sim.add_temporal_simulcast_publisher(PUBLISHER, "live", GOP_FRAMES, 3);
    sim.run_until_connected(&[PUBLISHER], Duration::from_secs(5));
    sim.run_for(ms(500));
    sim
}

/// A viewer's video from its first keyframe at or after `since` on, checked as one decodable
/// VP8 stream.
fn pictures_since(sim: &Sim, viewer: PeerId, since: Instant) -> (PictureRun, Vec<Received>) {
    let v = sim.client(viewer);
    let all = v.received_of(Kind::Video);
    let start = all
        .iter()
        .find(|r| r.at >= since && r.keyframe_start)
        .unwrap_or_else(|| panic!("{viewer}: no keyframe after {since:?}"))
        .seq;
    // By sequence number from that keyframe on (a repair of an earlier packet may come later).
    let video: Vec<Received> = all
        .into_iter()
        .filter(|r| r.seq.wrapping_sub(start) < 0x8000)
        .cloned()
        .collect();
    assert!(
        video.iter().all(|r| r.exact),
        "{viewer}: a payload differs from its source beyond picture id and TL0PICIDX"
    );
    let run = check_vp8_pictures(&video).unwrap_or_else(|e| {
        let mut sorted: Vec<&Received> = video.iter().collect();
        sorted.sort_by_key(|r| r.seq.wrapping_sub(start));
        for r in &sorted {
            eprintln!("DBG {:?} seq {} {:?}", r.at, r.seq, r.vp8);
        }
        panic!("{viewer}: {e}")
    });
    (run, video)
}

/// The sequence numbers of `video` (from one keyframe on) in order, each once: repairs come
/// late and some twice.
/// Packets sent in the last half second are left out: a loss there may not be repaired yet.
fn numbers(video: &[Received], end: Instant) -> Vec<u16> {
    let first = video[0].seq;
    let sent_by = end - ms(500);
    let last = video
        .iter()
        .filter(|r| r.at <= sent_by)
        .map(|r| r.seq.wrapping_sub(first))
        .max()
        .unwrap_or(0);
    let mut seqs: Vec<u16> = video
        .iter()
        .map(|r| r.seq)
        .filter(|s| s.wrapping_sub(first) <= last)
        .collect();
    seqs.sort_by_key(|s| s.wrapping_sub(first));
    seqs.dedup();
    seqs
}

/// The moments a viewer's video went from frames of TID 2 to none, or back, by arrival.
fn last_tid2_at(sim: &Sim, viewer: PeerId) -> Option<Instant> {
    sim.client(viewer)
        .received_of(Kind::Video)
        .iter()
        .filter(|r| r.vp8.is_some_and(|d| d.tid == 2))
        .map(|r| r.at)
        .max()
}

#[test]
fn a_link_that_narrows_below_the_top_layer_lowers_the_frame_rate_before_the_picture_size() {
    let mut sim = started();
    let viewer = PeerId(10);
    let free = PeerId(11);
    sim.add_browser_viewer_with_rtx(viewer, "live");
    sim.add_browser_viewer_with_rtx(free, "live");
    sim.run_until_connected(&[viewer, free], Duration::from_secs(5));
    let joined = sim.now;
    sim.run_for(Duration::from_secs(8));
    assert_eq!(sim.sfu.viewer_layers(viewer), Some((Layer(2), Layer(2))));
    // The link narrows: with audio and headers the top layer takes about 316 kbit/s, about 216
    // without its temporal layer 2, and the middle layer about 196.
    sim.set_link(
        viewer,
        sim::Link {
            down_rate_bps: Some(290_000),
            ..sim::Link::default()
        },
    );
    let narrowed = sim.now;
    sim.run_for(Duration::from_secs(40));
    let stats = sim.sfu.stats();
    eprintln!(
        "estimate {:?}; temporal switches {}, packets dropped for temporal layers {}, \
         layer switches {}",
        sim.sfu.viewer_estimate_bps(viewer),
        stats.temporal_switches,
        stats.rtp_dropped_temporal,
        stats.layer_switches
    );
    // Still the whole picture, at half the frame rate: no frame of TID 2 for the last stretch.
    assert_eq!(sim.sfu.viewer_layers(viewer), Some((Layer(2), Layer(2))));
    let last_full = last_tid2_at(&sim, viewer).expect("frames of TID 2 before the link narrowed");
    let since = last_full + Duration::from_secs(1);
    assert!(
        sim.now - since >= Duration::from_secs(8),
        "the frame rate was lowered for less than 8 s at the end: last TID 2 frame {:?} after \
         the link narrowed",
        last_full - narrowed
    );
    let (run, video) = pictures_since(&sim, viewer, since);
    // The first stop of TID 2 after the link narrowed: a TID 2 frame more than 200 ms after
    // the one before it (they come every 67 ms).
    let tid2: Vec<Instant> = sim
        .client(viewer)
        .received_of(Kind::Video)
        .iter()
        .filter(|r| r.at >= narrowed && r.vp8.is_some_and(|d| d.tid == 2))
        .map(|r| r.at)
        .collect();
    let first_stop = tid2
        .windows(2)
        .find(|w| w[1] - w[0] > ms(200))
        .map(|w| w[0] - narrowed);
    eprintln!(
        "TID 2 first stopped {first_stop:?} after the link narrowed, last forwarded {:?} after; \
         then {run:?}",
        last_full - narrowed
    );
    assert_eq!(run.frames_per_tid[2], 0, "{run:?}");
    assert!(
        run.frames_per_tid[0] > 40 && run.frames_per_tid[1] > 40,
        "{run:?}"
    );
    gap_free(&numbers(&video, sim.now)).unwrap_or_else(|e| panic!("narrowed viewer: {e}"));
    // The free viewer got every frame, from its first on, as one decodable stream.
    let (all, _) = pictures_since(&sim, free, joined);
    assert!(all.frames_per_tid[2] > 500, "{all:?}");
    assert!(stats.rtp_dropped_temporal > 0 && stats.temporal_switches > 0);

    // The link frees up: the viewer takes TID 2 up again (at a layer sync frame or a keyframe)
    // without a break in its stream.
    sim.set_link(viewer, sim::Link::default());
    let freed = sim.now;
    sim.run_for(Duration::from_secs(15));
    let back = last_tid2_at(&sim, viewer).expect("TID 2 again");
    assert!(back > freed, "no TID 2 frame after the link freed up");
    let (run, video) = pictures_since(&sim, viewer, since);
    assert!(run.frames_per_tid[2] > 30, "{run:?}");
    gap_free(&numbers(&video, sim.now))
        .unwrap_or_else(|e| panic!("viewer after the link freed: {e}"));
}
