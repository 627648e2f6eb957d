//! A slow viewer never hurts anyone else: its backlog is bounded, it skips to the next keyframe,
//! and the others see no change in latency or loss.

mod sim;

use golive_sfu::{MediaOptions, PeerId};
use sim::{Kind, Link, Sim, check_track, ms};
use std::time::Duration;

/// The worst delay from the broadcaster's send to a viewer's receipt, over packets sent in
/// `[from, to)`.
fn worst_latency(s: &Sim, publisher: PeerId, viewer: PeerId, kind: Kind) -> Duration {
    let sent: std::collections::HashMap<golive_client::Stamp, std::time::Instant> = s
        .client(publisher)
        .sent
        .iter()
        .map(|x| (x.stamp, x.at))
        .collect();
    s.client(viewer)
        .received_of(kind)
        .iter()
        .filter_map(|r| Some(r.at - *sent.get(&r.stamp?)?))
        .max()
        .unwrap_or_default()
}

#[test]
fn viewer_that_stops_reading_does_not_raise_any_other_viewers_latency() {
    let mut s = Sim::with_options(MediaOptions {
        max_viewer_backlog_bytes: 64 * 1024,
        ..MediaOptions::default()
    });
    let publisher = s.add_publisher(PeerId(1), "live", 60);
    let viewers: Vec<PeerId> = (0..4)
        .map(|i| s.add_viewer(PeerId(100 + i), "live"))
        .collect();
    let mut all = viewers.clone();
    all.push(publisher);
    s.run_until_connected(&all, ms(5_000));
    for &v in &viewers {
        s.set_link(
            v,
            Link {
                delay: ms(15),
                ..Link::default()
            },
        );
    }
    s.run_for(ms(1_000));

    let slow = viewers[0];
    s.set_link(
        slow,
        Link {
            delay: ms(15),
            stalled: true,
            ..Link::default()
        },
    );
    let stalled_at = s.now;
    s.run_for(ms(5_000));
    let st = s.sfu.stats().clone();
    // The SFU stopped producing for the stalled viewer once its backlog passed the bound: the
    // shell's queue holds a little more than the bound, never the five seconds of media.
    assert!(st.slow_viewer_skips >= 1, "{st:?}");
    assert!(st.rtp_dropped_slow_viewer > 200, "{st:?}");
    assert_eq!(s.stall_dropped, 0, "the shell's queue never filled");

    // It reads again: it drains the backlog, then restarts at a keyframe, gap-free.
    s.set_link(
        slow,
        Link {
            delay: ms(15),
            ..Link::default()
        },
    );
    let resumed_at = s.now;
    s.run_for(ms(2_000));
    let c = s.client(slow);
    let video = c.received_of(Kind::Video);
    for w in video.windows(2) {
        assert_eq!(
            w[1].seq,
            w[0].seq.wrapping_add(1),
            "no sequence gap for the slow viewer"
        );
    }
    let after: Vec<_> = video.iter().filter(|r| r.at > resumed_at).collect();
    assert!(!after.is_empty(), "the slow viewer gets video again");
    let restart = after
        .iter()
        .position(|r| r.keyframe_start)
        .expect("restarts at a keyframe");
    // What came before the restart is what the shell held (sent before the skip).
    let sent_at: std::collections::HashMap<golive_client::Stamp, std::time::Instant> = s
        .client(publisher)
        .sent
        .iter()
        .map(|x| (x.stamp, x.at))
        .collect();
    for r in &after[..restart] {
        assert!(sent_at[&r.stamp.expect("known")] < resumed_at);
    }
    assert!(
        s.client(publisher).plis.iter().any(|t| *t >= resumed_at),
        "the restart asked for a keyframe"
    );

    // The others: every packet, in order, no later than the link's delay.
    for &v in &viewers[1..] {
        for kind in [Kind::Audio, Kind::Video] {
            assert_eq!(check_track(s.client(publisher), s.client(v), kind, None), 0);
            let worst = worst_latency(&s, publisher, v, kind);
            assert!(
                worst <= ms(15),
                "{v} {kind:?}: worst latency {worst:?} while another viewer stalled"
            );
        }
    }
    eprintln!(
        "stalled {:?}: {} packets not produced for the slow viewer, {} skips; others' worst \
         latency {:?}",
        resumed_at - stalled_at,
        st.rtp_dropped_slow_viewer,
        st.slow_viewer_skips,
        worst_latency(&s, publisher, viewers[1], Kind::Video)
    );
}

#[test]
fn failed_sends_make_a_viewer_skip_to_the_next_keyframe() {
    let mut s = Sim::new();
    let publisher = s.add_publisher(PeerId(1), "live", 60);
    let viewer = s.add_viewer(PeerId(2), "live");
    s.run_until_connected(&[publisher, viewer], ms(5_000));
    s.run_for(ms(500));
    let now = s.now;
    for _ in 0..golive_sfu::SEND_FAILURES_BEFORE_SKIP {
        s.sfu.handle_send_failed(now, viewer);
    }
    let before = s.client(viewer).received.len();
    s.run_for(golive_sfu::SEND_FAILURE_BACKOFF - ms(10));
    assert_eq!(
        s.client(viewer).received.len(),
        before,
        "nothing is sent during the backoff"
    );
    s.run_for(ms(1_000));
    let video = s.client(viewer).received_of(Kind::Video);
    for w in video.windows(2) {
        assert_eq!(w[1].seq, w[0].seq.wrapping_add(1));
    }
    let resumed = &s.client(viewer).received[before..];
    assert!(
        resumed
            .iter()
            .find(|r| r.kind == Kind::Video)
            .is_some_and(|r| r.keyframe_start),
        "video resumes at a keyframe"
    );
}
