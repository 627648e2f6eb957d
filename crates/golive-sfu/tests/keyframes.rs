//! Keyframes and keyframe requests: a viewer's picture starts at a keyframe, a late viewer
//! makes the SFU ask the broadcaster for one, and many requests reach the broadcaster as few.

mod sim;

use golive_sfu::PeerId;
use golive_sfu::pli::KEYFRAME_REQUEST_INTERVAL;
use sim::{Kind, Sim, check_track, ms};
use std::time::{Duration, Instant};

/// Natural keyframes so rare that, within a test, every keyframe after the first is one the
/// SFU asked for.
const LONG_GOP_FRAMES: u64 = 100_000;

fn gaps(times: &[Instant]) -> Vec<Duration> {
    times.windows(2).map(|w| w[1] - w[0]).collect()
}

#[test]
fn late_viewer_starts_at_a_keyframe_and_triggers_a_pli() {
    let mut s = Sim::new();
    let publisher = s.add_publisher(PeerId(1), "live", LONG_GOP_FRAMES);
    let early = s.add_viewer(PeerId(2), "live");
    s.run_until_connected(&[publisher, early], ms(5_000));
    s.run_for(ms(1_500));
    let plis_before = s.client(publisher).plis.len();

    let late = s.add_viewer(PeerId(3), "live");
    s.run_until_connected(&[late], ms(5_000));
    let connected = s.sfu_connected[&late];
    s.run_for(ms(1_000));

    let p = s.client(publisher);
    let pli_after: Vec<Duration> = p.plis[plis_before..].iter().map(|t| *t - connected).collect();
    assert!(
        p.plis[plis_before..].iter().any(|t| *t >= connected && *t <= connected + ms(20)),
        "the publisher got no PLI right after the late viewer connected (PLIs after: {pli_after:?})"
    );

    let v = s.client(late);
    let video = v.received_of(Kind::Video);
    assert!(!video.is_empty(), "the late viewer got no video");
    assert!(video[0].keyframe_start, "the late viewer's first video packet is not a keyframe start: {:?}", video[0]);
    assert!(
        video[0].at <= connected + ms(100),
        "the late viewer waited {:?} for its keyframe: the PLI did not produce it",
        video[0].at - connected
    );
    let k = check_track(p, v, Kind::Video, None);
    let first = &p.plan().sent.iter().filter(|x| x.kind == Kind::Video).nth(k).expect("sent");
    assert!(first.keyframe_start && first.at >= connected, "started from a keyframe sent before it connected");
    check_track(p, v, Kind::Audio, None);
    // The early viewer saw the whole stream, the requested keyframe included, without a gap.
    assert_eq!(check_track(p, s.client(early), Kind::Video, None), 0);
    assert_eq!(check_track(p, s.client(early), Kind::Audio, None), 0);
}

#[test]
fn pli_from_many_viewers_is_coalesced() {
    const VIEWERS: u64 = 50;
    let mut s = Sim::new();
    let publisher = s.add_publisher(PeerId(1), "live", LONG_GOP_FRAMES);
    s.run_until_connected(&[publisher], ms(5_000));
    s.run_for(ms(500)); // the SFU has seen the video SSRC, so it can send PLIs at once

    // Phase 1: fifty viewers join within 100 ms; each connection asks for a keyframe.
    let mut viewers = Vec::new();
    for i in 0..VIEWERS {
        viewers.push(s.add_viewer(PeerId(100 + i), "live"));
        s.run_for(ms(2));
    }
    s.run_until_connected(&viewers, ms(5_000));
    s.run_for(ms(1_500));
    for &v in &viewers {
        let first = s.client(v).received_of(Kind::Video)[0].clone();
        assert!(first.keyframe_start, "{v}: first video packet is not a keyframe start");
        check_track(s.client(publisher), s.client(v), Kind::Video, None);
    }

    // Phase 2: every viewer sends a PLI of its own, all within 100 ms.
    let requests_before = s.sfu.stats().keyframe_requests_in;
    let burst_at = s.now;
    for &v in &viewers {
        assert!(s.send_pli(v), "{v} has no video to ask a keyframe of");
        s.run_for(ms(2));
    }
    assert!(s.now - burst_at <= ms(100));
    s.run_for(ms(2_000));
    assert_eq!(
        s.sfu.stats().keyframe_requests_in - requests_before,
        VIEWERS,
        "not every viewer's PLI reached the SFU"
    );

    let plis = &s.client(publisher).plis;
    let rel: Vec<Duration> = plis.iter().map(|t| *t - s.t0).collect();
    eprintln!("PLIs at the publisher (since start): {rel:?}; pli_sent {}", s.sfu.stats().pli_sent);
    assert!(!plis.is_empty(), "the publisher never got a PLI");
    for (i, g) in gaps(plis).into_iter().enumerate() {
        assert!(
            g >= KEYFRAME_REQUEST_INTERVAL,
            "PLIs {i} and {} only {g:?} apart (all: {rel:?})",
            i + 1
        );
    }
    let in_burst = plis.iter().filter(|t| **t >= burst_at && **t < burst_at + ms(600)).count();
    assert!(in_burst >= 1, "the burst of PLIs produced none at the publisher (all: {rel:?})");
    assert!(in_burst <= 2, "{in_burst} PLIs within 600 ms of the burst (all: {rel:?})");
    // And each viewer still sees one continuous stream.
    for &v in &viewers {
        check_track(s.client(publisher), s.client(v), Kind::Video, None);
        check_track(s.client(publisher), s.client(v), Kind::Audio, None);
    }
}
