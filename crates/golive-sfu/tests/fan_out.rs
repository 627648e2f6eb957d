//! One broadcaster, a thousand viewers, every packet to everyone: the core's fan-out driven
//! through in-process WebRTC clients on a simulated clock.
//!
//! Run alone (it is its own test binary, so the peak RSS it prints is its own):
//! `cargo test -p golive-sfu --test fan_out -- --nocapture` (add `--release` for the
//! optimised figures).

mod sim;

use golive_sfu::PeerId;
use sim::{Kind, Sim, check_track, ms, peak_rss_kb};
use std::time::Instant;

const VIEWERS: u64 = 1000;
/// Long enough that every viewer gets several sender reports and a second keyframe.
const MEDIA_MS: u64 = 2_000;

#[test]
fn one_publisher_fans_out_to_1000_viewers() {
    let wall = Instant::now(); // reported only, never asserted on
    let mut s = Sim::new();
    let publisher = s.add_publisher(PeerId(1), "live", 30);
    // Media starts only once every viewer is connected, so each gets the stream from its
    // first packet (a keyframe) on.
    s.set_sending(publisher, false);
    let viewers: Vec<PeerId> = (0..VIEWERS)
        .map(|i| s.add_viewer(PeerId(1000 + i), "live"))
        .collect();
    let setup_wall = wall.elapsed();
    let mut all = viewers.clone();
    all.push(publisher);
    s.run_until_connected(&all, ms(10_000));
    let connect_sim = s.elapsed();
    let connect_wall = wall.elapsed();
    assert!(s.sfu_failed.is_empty(), "failed: {:?}", s.sfu_failed);

    s.set_sending(publisher, true);
    let forwarded_before = s.sfu.stats().rtp_forwarded;
    s.run_for(ms(MEDIA_MS));
    s.set_sending(publisher, false);
    s.run_for(ms(100)); // nothing is in flight on this network, but let timers settle
    let forwarded = s.sfu.stats().rtp_forwarded - forwarded_before;
    let media_wall = wall.elapsed() - connect_wall;

    let p = s.client(publisher);
    let sent_video = p.sent.iter().filter(|x| x.kind == Kind::Video).count();
    let sent_audio = p.sent.iter().filter(|x| x.kind == Kind::Audio).count();
    assert_eq!(p.write_errors, 0);
    assert!(
        sent_video >= (MEDIA_MS as usize * 30 / 1000),
        "sent {sent_video} video packets"
    );
    assert!(
        sent_audio >= (MEDIA_MS as usize * 50 / 1000),
        "sent {sent_audio} audio packets"
    );
    for &v in &viewers {
        let c = s.client(v);
        let k = check_track(p, c, Kind::Video, None);
        assert_eq!(
            k, 0,
            "{v}: video did not start at the publisher's first keyframe"
        );
        assert!(c.received_of(Kind::Video)[0].keyframe_start);
        assert_eq!(
            check_track(p, c, Kind::Audio, None),
            0,
            "{v}: audio did not start at the first packet"
        );
        assert_ne!(
            c.received_of(Kind::Video)[0].ssrc,
            c.received_of(Kind::Audio)[0].ssrc
        );
        assert!(c.rtcp_datagrams > 0, "{v} got no RTCP (sender reports)");
        assert!(!c.failed);
    }
    assert_eq!(forwarded, (sent_video + sent_audio) as u64 * VIEWERS);

    eprintln!(
        "one_publisher_fans_out_to_{VIEWERS}_viewers ({}): wall {:.2} s (answering {:.2} s, \
         connecting {:.2} s for {:.2} s simulated, media {:.2} s for {MEDIA_MS} ms simulated); \
         {sent_video} video + {sent_audio} audio packets sent, {forwarded} forwarded; \
         peak RSS {} MB",
        if cfg!(debug_assertions) {
            "debug"
        } else {
            "release"
        },
        wall.elapsed().as_secs_f64(),
        setup_wall.as_secs_f64(),
        (connect_wall - setup_wall).as_secs_f64(),
        connect_sim.as_secs_f64(),
        media_wall.as_secs_f64(),
        peak_rss_kb().map_or("?".to_owned(), |kb| format!("{:.0}", kb as f64 / 1024.0)),
    );
}
