//! Keyframes and keyframe requests: a viewer's picture starts at a keyframe, a late viewer
//! makes the SFU ask the broadcaster for one, and many requests reach the broadcaster as few.

mod sim;

use golive_sfu::pli::KEYFRAME_REQUEST_INTERVAL;
use golive_sfu::{MediaOptions, PeerId};
use sim::{Kind, Link, Sim, check_track, ms};
use std::time::{Duration, Instant};

/// Natural keyframes so rare that, within a test, every keyframe after the first is one the
/// SFU asked for.
const LONG_GOP_FRAMES: u64 = 100_000;

fn gaps(times: &[Instant]) -> Vec<Duration> {
    times.windows(2).map(|w| w[1] - w[0]).collect()
}

fn no_cache() -> MediaOptions {
    MediaOptions {
        keyframe_cache: false,
        ..MediaOptions::default()
    }
}

#[test]
fn late_viewer_first_video_packet_is_a_cached_keyframe() {
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
    assert_eq!(
        p.plis.len(),
        plis_before,
        "a join served from the cache asks the broadcaster for nothing"
    );
    let v = s.client(late);
    let video = v.received_of(Kind::Video);
    assert!(
        video[0].keyframe_start,
        "first video packet: {:?}",
        video[0]
    );
    assert_eq!(
        video[0].at, connected,
        "the cached keyframe goes out the moment the viewer connects"
    );
    // It is the broadcaster's first keyframe, sent long before the viewer came, and from there
    // on the viewer has every packet, in order, gap-free.
    let k = check_track(p, v, Kind::Video, None);
    assert_eq!(k, 0, "starts at the only keyframe the broadcaster sent");
    check_track(p, v, Kind::Audio, None);
    assert_eq!(check_track(p, s.client(early), Kind::Video, None), 0);
    let st = s.sfu.stats();
    // The early viewer connected before any media, so it started at the first keyframe live.
    assert_eq!(st.viewers_started_from_cache, 1, "{st:?}");
    assert!(st.cache_packets_sent > 40, "{st:?}");
}

#[test]
fn cache_overflow_shows_the_keyframe_then_waits_for_the_next() {
    let mut s = Sim::new();
    // 30 fps, one packet a frame: 512 packets are past after about 17 s.
    let publisher = s.add_publisher(PeerId(1), "live", LONG_GOP_FRAMES);
    s.run_until_connected(&[publisher], ms(5_000));
    s.client_mut(publisher)
        .source_mut()
        .set_answer_keyframe_requests(false);
    s.run_for(ms(18_000));
    assert_eq!(s.sfu.stats().cache_overflows, 1);
    assert!(
        !s.client(publisher).plis.is_empty(),
        "the overflow asked for a new keyframe"
    );
    let (packets, _) = s.sfu.keyframe_cache_size(&sim::stream("live"));
    assert_eq!(packets, sim::KEYFRAME_PACKETS, "only the keyframe is kept");
    s.client_mut(publisher)
        .source_mut()
        .set_answer_keyframe_requests(true);
    let late = s.add_viewer(PeerId(3), "live");
    s.run_until_connected(&[late], ms(5_000));
    s.run_for(ms(1_000));
    let v = s.client(late);
    let video = v.received_of(Kind::Video);
    assert!(video[0].keyframe_start);
    assert_eq!(
        video[0].stamp,
        s.client(publisher)
            .sent
            .iter()
            .find(|x| x.kind == Kind::Video)
            .map(|x| x.stamp)
    );
    // The picture, then a gap-free jump to the next keyframe.
    let second = &video[sim::KEYFRAME_PACKETS];
    assert!(
        second.keyframe_start,
        "after the cached keyframe comes a new one"
    );
    for w in video.windows(2) {
        assert_eq!(w[1].seq, w[0].seq.wrapping_add(1), "no sequence gap");
    }
}

#[test]
fn late_viewer_without_cache_starts_at_a_requested_keyframe() {
    let mut s = Sim::with_options(no_cache());
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
    let pli_after: Vec<Duration> = p.plis[plis_before..]
        .iter()
        .map(|t| *t - connected)
        .collect();
    assert!(
        p.plis[plis_before..]
            .iter()
            .any(|t| *t >= connected && *t <= connected + ms(20)),
        "the publisher got no PLI right after the late viewer connected (PLIs after: {pli_after:?})"
    );

    let v = s.client(late);
    let video = v.received_of(Kind::Video);
    assert!(!video.is_empty(), "the late viewer got no video");
    assert!(
        video[0].keyframe_start,
        "the late viewer's first video packet is not a keyframe start: {:?}",
        video[0]
    );
    assert!(
        video[0].at <= connected + ms(100),
        "the late viewer waited {:?} for its keyframe: the PLI did not produce it",
        video[0].at - connected
    );
    let k = check_track(p, v, Kind::Video, None);
    let first = &p
        .sent
        .iter()
        .filter(|x| x.kind == Kind::Video)
        .nth(k)
        .expect("sent");
    assert!(
        first.keyframe_start && first.at >= connected,
        "started from a keyframe sent before it connected"
    );
    check_track(p, v, Kind::Audio, None);
    // The early viewer saw the whole stream, the requested keyframe included, without a gap.
    assert_eq!(check_track(p, s.client(early), Kind::Video, None), 0);
    assert_eq!(check_track(p, s.client(early), Kind::Audio, None), 0);
}

/// A publisher with media flowing and `n` connected viewers that joined within 100 ms, each
/// connection a keyframe request; returns the viewers.
fn fifty_viewers_joining_at_once(s: &mut Sim, publisher: PeerId, n: u64) -> Vec<PeerId> {
    s.run_until_connected(&[publisher], ms(5_000));
    s.run_for(ms(500)); // the SFU has seen the video SSRC, so it can send PLIs at once
    let mut viewers = Vec::new();
    let join_at = s.now;
    for i in 0..n {
        viewers.push(s.add_viewer(PeerId(100 + i), "live"));
        s.run_for(ms(2));
    }
    assert!(s.now - join_at <= ms(100));
    s.run_until_connected(&viewers, ms(5_000));
    viewers
}

/// Every PLI the publisher got is at least the interval after the one before.
fn assert_coalesced(s: &Sim, publisher: PeerId) {
    let plis = &s.client(publisher).plis;
    let rel: Vec<Duration> = plis.iter().map(|t| *t - s.t0).collect();
    for (i, g) in gaps(plis).into_iter().enumerate() {
        assert!(
            g >= KEYFRAME_REQUEST_INTERVAL,
            "PLIs {i} and {} only {g:?} apart (all, since start: {rel:?})",
            i + 1
        );
    }
}

#[test]
fn keyframe_requests_of_many_joining_viewers_are_coalesced() {
    let mut s = Sim::with_options(no_cache());
    let publisher = s.add_publisher(PeerId(1), "live", LONG_GOP_FRAMES);
    let viewers = fifty_viewers_joining_at_once(&mut s, publisher, 50);
    let first_connect = viewers
        .iter()
        .map(|v| s.sfu_connected[v])
        .min()
        .expect("viewers");
    let last_connect = viewers
        .iter()
        .map(|v| s.sfu_connected[v])
        .max()
        .expect("viewers");
    s.run_for(ms(1_500));

    assert_coalesced(&s, publisher);
    let plis = &s.client(publisher).plis;
    let window = plis
        .iter()
        .filter(|t| **t >= first_connect && **t <= last_connect + KEYFRAME_REQUEST_INTERVAL)
        .count();
    assert!(window >= 1, "fifty joining viewers produced no PLI");
    assert!(
        s.sfu.stats().pli_sent <= 1 + ((last_connect - first_connect).as_millis() / 500) as u64 + 1,
        "{} PLIs for viewers that connected within {:?}",
        s.sfu.stats().pli_sent,
        last_connect - first_connect
    );
    for &v in &viewers {
        let first = *s.client(v).received_of(Kind::Video)[0];
        assert!(
            first.keyframe_start,
            "{v}: first video packet is not a keyframe start"
        );
        check_track(s.client(publisher), s.client(v), Kind::Video, None);
        check_track(s.client(publisher), s.client(v), Kind::Audio, None);
    }
}

#[test]
fn many_viewers_joining_from_the_cache_send_no_pli() {
    let mut s = Sim::new();
    let publisher = s.add_publisher(PeerId(1), "live", LONG_GOP_FRAMES);
    let viewers = fifty_viewers_joining_at_once(&mut s, publisher, 50);
    s.run_for(ms(1_500));
    assert_eq!(s.client(publisher).plis.len(), 0);
    for &v in &viewers {
        assert!(s.client(v).received_of(Kind::Video)[0].keyframe_start);
        check_track(s.client(publisher), s.client(v), Kind::Video, None);
    }
}

/// Time to first frame: from the viewer's offer to the last packet of its first keyframe,
/// with 50 ms one way to the broadcaster and 20 ms to the viewer, with and without the cache.
/// Prints the figures: `cargo test -p golive-sfu --release --test keyframes time_to_first
/// -- --nocapture`.
#[test]
fn time_to_first_frame_with_and_without_the_cache() {
    let mut figures = Vec::new();
    for cache in [true, false] {
        let options = MediaOptions {
            keyframe_cache: cache,
            ..MediaOptions::default()
        };
        let mut s = Sim::with_options(options);
        let publisher = s.add_publisher(PeerId(1), "live", 60);
        s.set_link(
            publisher,
            Link {
                delay: ms(50),
                ..Link::default()
            },
        );
        s.run_until_connected(&[publisher], ms(5_000));
        s.run_for(ms(1_000));
        let mut ttff = Vec::new();
        for i in 0..20u64 {
            // Joins spread over the GOP, 1 s apart.
            let joined = s.now;
            let v = s.add_viewer(PeerId(100 + i), "live");
            s.set_link(
                v,
                Link {
                    delay: ms(20),
                    ..Link::default()
                },
            );
            s.run_until_connected(&[v], ms(5_000));
            s.run_for(ms(1_000) + ms(37 * i % 500));
            let c = s.client(v);
            let video = c.received_of(Kind::Video);
            assert!(video[0].keyframe_start);
            let frame_done = video.iter().find(|r| r.marker).expect("a whole frame").at;
            ttff.push(frame_done - joined);
        }
        ttff.sort();
        let mean = ttff.iter().sum::<Duration>() / ttff.len() as u32;
        eprintln!(
            "TTFF cache={cache}: mean {mean:?}, median {:?}, max {:?} (20 joins; PLIs {})",
            ttff[ttff.len() / 2],
            ttff[ttff.len() - 1],
            s.client(publisher).plis.len()
        );
        figures.push(mean);
    }
    assert!(
        figures[0] < figures[1],
        "the cache makes the first frame come sooner: {figures:?}"
    );
}

/// Pins a core bug (see the report): rtc 0.21 stops inbound RTCP at its interceptor chain's
/// terminus unless an interceptor marks it `DeliverToApplication`, and the SFU's viewer legs
/// have no such interceptor, so a viewer's PLI never reaches `Peer::poll_inbound`.
#[test]
fn pli_from_many_viewers_is_coalesced() {
    const VIEWERS: u64 = 50;
    let mut s = Sim::new();
    let publisher = s.add_publisher(PeerId(1), "live", LONG_GOP_FRAMES);
    let viewers = fifty_viewers_joining_at_once(&mut s, publisher, VIEWERS);
    // Well past the joins' requests and their held follow-up.
    s.run_for(ms(1_500));

    // Every viewer sends a PLI of its own, all within 100 ms.
    let requests_before = s.sfu.stats().keyframe_requests_in;
    let rtcp_before = s.rtcp_to_sfu;
    let plis_before = s.client(publisher).plis.len();
    let burst_at = s.now;
    for &v in &viewers {
        assert!(s.send_pli(v), "{v} has no video to ask a keyframe of");
        s.run_for(ms(2));
    }
    assert!(s.now - burst_at <= ms(100));
    s.run_for(ms(2_000));

    let plis = &s.client(publisher).plis;
    let rel: Vec<Duration> = plis.iter().map(|t| *t - s.t0).collect();
    eprintln!(
        "PLIs at the publisher (since start): {rel:?}; burst at {:?}; SFU pli_sent {}",
        burst_at - s.t0,
        s.sfu.stats().pli_sent
    );
    assert_eq!(
        s.sfu.stats().keyframe_requests_in - requests_before,
        VIEWERS,
        "the SFU took in none of the viewers' PLIs, though {} SRTCP datagrams from viewers \
         reached handle_datagram during the burst",
        s.rtcp_to_sfu - rtcp_before
    );
    assert_coalesced(&s, publisher);
    let in_burst = plis[plis_before..]
        .iter()
        .filter(|t| **t < burst_at + ms(600))
        .count();
    assert!(
        in_burst >= 1,
        "the burst of PLIs produced none at the publisher (all: {rel:?})"
    );
    assert!(
        in_burst <= 2,
        "{in_burst} PLIs within 600 ms of the burst (all: {rel:?})"
    );
    for &v in &viewers {
        let after = s
            .client(v)
            .received
            .iter()
            .filter(|r| r.at > burst_at && r.keyframe_start)
            .count();
        assert!(after >= 1, "{v} asked for a keyframe and got none");
        check_track(s.client(publisher), s.client(v), Kind::Video, None);
        check_track(s.client(publisher), s.client(v), Kind::Audio, None);
    }
}

#[test]
fn a_long_cache_is_replayed_in_paced_bursts_then_live_without_a_gap() {
    use golive_sfu::{REPLAY_BURST, REPLAY_INTERVAL};
    let mut s = Sim::new();
    let publisher = s.add_publisher(PeerId(1), "live", LONG_GOP_FRAMES);
    s.run_until_connected(&[publisher], ms(5_000));
    // About 10 s at 30 video packets a second: some 300 packets since the only keyframe.
    s.run_for(ms(10_000));
    let late = s.add_viewer(PeerId(2), "live");
    s.run_until_connected(&[late], ms(5_000));
    let connected = s.sfu_connected[&late];
    s.run_for(ms(2_000));

    let v = s.client(late);
    let video = v.received_of(Kind::Video);
    assert!(
        video[0].keyframe_start && video[0].at == connected,
        "{:?}",
        video[0]
    );
    assert!(
        video.len() > 300,
        "the whole cache and the live stream: {}",
        video.len()
    );
    // No moment saw more than one burst (plus a live packet or two) arrive.
    let mut per_instant: std::collections::BTreeMap<Instant, usize> = Default::default();
    for p in &video {
        *per_instant.entry(p.at).or_default() += 1;
    }
    let worst = per_instant.values().copied().max().unwrap_or(0);
    assert!(worst <= REPLAY_BURST + 2, "{worst} packets at one instant");
    // The replay took several intervals, then caught up with the live stream.
    let bursts = per_instant.values().filter(|n| **n >= REPLAY_BURST).count();
    assert!(bursts >= 4, "{bursts} full bursts");
    let replay_end = video[REPLAY_BURST * 4].at;
    assert!(
        replay_end >= connected + REPLAY_INTERVAL * 3,
        "paced, not all at once"
    );
    // Every packet from the keyframe on, in order, gap-free: the replay hands over to the live
    // stream without a hole or a duplicate.
    let p = s.client(publisher);
    assert_eq!(check_track(p, v, Kind::Video, None), 0);
    check_track(p, v, Kind::Audio, None);
}
