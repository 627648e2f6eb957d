//! A broadcaster that drops and publishes the same stream again: the viewers keep their peer
//! connections and go on with the new source, sequence numbers and timestamps continuous, video
//! from the new source's first keyframe.

mod sim;

use golive_sfu::PeerId;
use sim::{Kind, Sim, VIDEO_CLOCK, check_track, ms};

#[test]
fn broadcaster_reconnect_keeps_viewers_streams_continuous() {
    let mut s = Sim::new();
    let first = s.add_publisher(PeerId(1), "live", 30);
    let viewers: Vec<PeerId> = (0..3)
        .map(|i| s.add_viewer(PeerId(100 + i), "live"))
        .collect();
    let mut all = viewers.clone();
    all.push(first);
    s.run_until_connected(&all, ms(5_000));
    s.run_for(ms(2_000));

    // The broadcaster's connection drops mid-GOP; the stream is published again 1.5 s later.
    s.run_for(ms(170));
    s.remove(first);
    s.set_sending(first, false);
    let dropped_at = s.now;
    assert_eq!(s.sfu.peer_count(), 3, "the viewers stay");
    s.run_for(ms(1_500));
    let second = s.add_publisher(PeerId(2), "live", 30);
    s.run_until_connected(&[second], ms(5_000));
    let reconnected_at = s.now;
    s.run_for(ms(2_000));

    assert!(s.sfu_failed.is_empty(), "failed: {:?}", s.sfu_failed);
    for &v in &viewers {
        let c = s.client(v);
        assert!(!c.failed, "{v} lost its connection");
        for kind in [Kind::Audio, Kind::Video] {
            let got = c.received_of(kind);
            let before: Vec<_> = got.iter().filter(|r| r.at <= dropped_at).collect();
            let after: Vec<_> = got.iter().filter(|r| r.at > dropped_at).collect();
            assert!(!before.is_empty() && after.len() > 20, "{v} {kind:?}");
            // One stream to the viewer: one SSRC, sequence numbers without a gap or a repeat
            // across the change of source, timestamps forward by about the time that passed.
            for w in got.windows(2) {
                assert_eq!(w[1].ssrc, w[0].ssrc, "{v} {kind:?}: SSRC changed");
                assert_eq!(
                    w[1].seq,
                    w[0].seq.wrapping_add(1),
                    "{v} {kind:?}: sequence gap"
                );
            }
            let last_old = before.last().expect("before");
            let first_new = after[0];
            let ts_step = first_new.ts.wrapping_sub(last_old.ts);
            let clock = match kind {
                Kind::Video => VIDEO_CLOCK,
                Kind::Audio => sim::AUDIO_CLOCK,
            };
            let elapsed = (first_new.at - last_old.at).as_secs_f64() * f64::from(clock);
            assert!(
                (i64::from(ts_step) - elapsed as i64).abs() < i64::from(clock / 10),
                "{v} {kind:?}: timestamp moved {ts_step} for {elapsed} ticks of wall time"
            );
            if kind == Kind::Video {
                assert!(
                    first_new.keyframe_start,
                    "{v}: new source starts at a keyframe"
                );
            }
        }
        // Each part is the publisher's packets, intact and complete.
        check_track(s.client(first), c, Kind::Video, Some(dropped_at));
        let new_video: Vec<_> = c
            .received_of(Kind::Video)
            .into_iter()
            .filter(|r| r.at > reconnected_at)
            .collect();
        assert!(
            new_video.iter().all(|r| s
                .client(second)
                .sent
                .iter()
                .any(|x| Some(x.stamp) == r.stamp)),
            "{v}: after the reconnect, only the new broadcaster's packets"
        );
    }
    // A viewer that joins after the reconnect starts from the new source's keyframe, at once.
    let late = s.add_viewer(PeerId(200), "live");
    s.run_until_connected(&[late], ms(5_000));
    s.run_for(ms(500));
    let c = s.client(late);
    assert!(c.received_of(Kind::Video)[0].keyframe_start);
    check_track(s.client(second), c, Kind::Video, None);
}
