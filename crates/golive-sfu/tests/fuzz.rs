//! Every parser that reads the network in the core, fed hostile input: STUN USERNAME parsing,
//! keyframe detection, SDP offers, RTP/RTCP as `rtc` parses them after SRTP, and RTP with hostile
//! headers and payloads through a real publisher leg into the SFU. No input may panic or allocate
//! without bound; bad packets are dropped and counted.
//!
//! `cargo test` runs a short fuzz (proptest's default 256 cases per property). A long run:
//! `PROPTEST_CASES=200000 cargo test -p golive-sfu --release --test fuzz -- --nocapture`
//! (and `GOLIVE_FUZZ_PACKETS=200000` for the packets through the SFU).

mod sim;

use bytes::Bytes;
use golive_sfu::demux::{is_stun, stun_local_ufrag};
use golive_sfu::keyframe::is_keyframe_start;
use golive_sfu::{PeerId, Sfu, VideoCodec};
use proptest::prelude::*;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rtc::shared::marshal::Unmarshal;
use sim::{Kind, Sim, check_track, ms};

const CODECS: [VideoCodec; 4] = [
    VideoCodec::Vp8,
    VideoCodec::Vp9,
    VideoCodec::H264,
    VideoCodec::Av1,
];

/// A browser-like offer to mutate.
const OFFER: &str = "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\na=group:BUNDLE 0 1\r\n\
m=audio 9 UDP/TLS/RTP/SAVPF 111\r\nc=IN IP4 0.0.0.0\r\na=mid:0\r\na=rtpmap:111 opus/48000/2\r\n\
a=fmtp:111 minptime=10;useinbandfec=1\r\nm=video 9 UDP/TLS/RTP/SAVPF 96 97 102\r\n\
c=IN IP4 0.0.0.0\r\na=mid:1\r\na=rtpmap:96 VP8/90000\r\na=rtpmap:97 rtx/90000\r\n\
a=fmtp:97 apt=96\r\na=rtpmap:102 H264/90000\r\n\
a=fmtp:102 packetization-mode=1;profile-level-id=42e01f\r\n";

/// A STUN request with `username`, and mutations of it.
fn stun(username: &[u8], declared_body: Option<u16>, declared_attr: Option<u16>) -> Vec<u8> {
    let mut attr = vec![0x00, 0x06];
    attr.extend_from_slice(&declared_attr.unwrap_or(username.len() as u16).to_be_bytes());
    attr.extend_from_slice(username);
    while attr.len() % 4 != 0 {
        attr.push(0);
    }
    let mut m = vec![0x00, 0x01];
    m.extend_from_slice(&declared_body.unwrap_or(attr.len() as u16).to_be_bytes());
    m.extend_from_slice(&[0x21, 0x12, 0xa4, 0x42]);
    m.extend_from_slice(&[7; 12]);
    m.extend_from_slice(&attr);
    m
}

fn mutate(base: &[u8], edits: &[(usize, u8)], cut: usize) -> Vec<u8> {
    let mut v = base.to_vec();
    for &(at, b) in edits {
        if !v.is_empty() {
            let i = at % v.len();
            v[i] = b;
        }
    }
    v.truncate(cut.min(v.len()));
    v
}

proptest! {
    // Cases from PROPTEST_CASES (default 256); no failure files in the source tree.
    #![proptest_config(ProptestConfig {
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn stun_username_parsing_never_panics(data in proptest::collection::vec(any::<u8>(), 0..1600)) {
        let _ = is_stun(&data);
        if let Some(u) = stun_local_ufrag(&data) {
            prop_assert!(!u.is_empty() && u.len() <= data.len());
        }
    }

    #[test]
    fn stun_with_lying_lengths_never_panics(
        username in proptest::collection::vec(any::<u8>(), 0..700),
        body in proptest::option::of(any::<u16>()),
        attr in proptest::option::of(any::<u16>()),
        edits in proptest::collection::vec((any::<usize>(), any::<u8>()), 0..4),
        cut in any::<usize>(),
    ) {
        let m = mutate(&stun(&username, body, attr), &edits, cut);
        if let Some(u) = stun_local_ufrag(&m) {
            prop_assert!(u.len() <= 513);
        }
    }

    #[test]
    fn keyframe_detection_never_panics(
        codec in 0usize..4,
        data in proptest::collection::vec(any::<u8>(), 0..64),
    ) {
        let _ = is_keyframe_start(CODECS[codec], &data);
    }

    #[test]
    fn sdp_parsing_never_panics_on_any_text(text in ".{0,400}") {
        let _ = Sfu::publisher_media(&text);
    }

    #[test]
    fn sdp_parsing_never_panics_on_mutated_offers(
        edits in proptest::collection::vec((any::<usize>(), any::<u8>()), 0..8),
        cut in any::<usize>(),
        dup in any::<usize>(),
    ) {
        let mut bytes = mutate(OFFER.as_bytes(), &edits, cut);
        // Repeat a slice: oversized and repeated lines.
        if !bytes.is_empty() {
            let at = dup % bytes.len();
            let chunk = bytes[at..].to_vec();
            for _ in 0..(dup % 5) {
                bytes.extend_from_slice(&chunk);
            }
        }
        let text = String::from_utf8_lossy(&bytes);
        let _ = Sfu::publisher_media(&text);
    }

    /// What `rtc`'s SRTP handler does with a decrypted packet, on anything.
    #[test]
    fn rtp_and_rtcp_parsing_never_panics(data in proptest::collection::vec(any::<u8>(), 0..1500)) {
        let _ = rtc::rtp::Packet::unmarshal(&mut Bytes::from(data.clone()));
        let _ = rtc::rtcp::packet::unmarshal(&mut Bytes::from(data));
    }

    /// RTCP that looks right in its first bytes (version 2, a feedback type, a length).
    #[test]
    fn rtcp_feedback_shapes_never_panic(
        pt in 192u8..=207,
        fmt in 0u8..32,
        len in any::<u16>(),
        body in proptest::collection::vec(any::<u8>(), 0..300),
    ) {
        let mut d = vec![0x80 | fmt, pt];
        d.extend_from_slice(&len.to_be_bytes());
        d.extend_from_slice(&body);
        let _ = rtc::rtcp::packet::unmarshal(&mut Bytes::from(d));
    }
}

/// Viewer offers the SFU must parse and answer (each builds a peer connection, so fewer).
#[test]
fn mutated_viewer_offers_are_answered_or_refused_never_panic() {
    let cases: u64 = std::env::var("GOLIVE_FUZZ_OFFERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200);
    let mut rng = StdRng::seed_from_u64(0x0ffe);
    let mut s = Sim::new();
    let publisher = s.add_publisher(PeerId(1), "live", 30);
    let media = s.media[&sim::stream("live")].clone();
    let real = s.viewer_offer();
    let (mut ok, mut refused) = (0u64, 0u64);
    for i in 0..cases {
        let edits: Vec<(usize, u8)> = (0..rng.random_range(0..4))
            .map(|_| (rng.random::<u32>() as usize, rng.random_range(0x20..0x7f)))
            .collect();
        // Most offers whole (so the mutations land anywhere), some cut short.
        let cut = if rng.random_bool(0.7) {
            real.len()
        } else {
            rng.random_range(0..=real.len())
        };
        let text = String::from_utf8_lossy(&mutate(real.as_bytes(), &edits, cut)).into_owned();
        let now = s.now;
        match s
            .sfu
            .add_viewer(now, PeerId(10_000 + i), sim::stream("live"), &media, &text)
        {
            Ok(_) => {
                ok += 1;
                s.sfu.remove_peer(PeerId(10_000 + i));
            }
            Err(_) => refused += 1,
        }
    }
    eprintln!("{cases} mutated viewer offers: {ok} answered, {refused} refused");
    assert_eq!(s.sfu.peer_count(), 1);
    let _ = publisher;
}

/// RTP with hostile headers and payloads, sent through a publisher's real SRTP into the SFU
/// while a viewer watches: nothing panics, unknown payload types are counted, and the viewer's
/// stream stays well-formed.
#[test]
fn hostile_rtp_through_a_publisher_leg_is_dropped_or_forwarded_whole() {
    let packets: u64 = std::env::var("GOLIVE_FUZZ_PACKETS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3_000);
    let mut rng = StdRng::seed_from_u64(0xf022);
    let mut s = Sim::new();
    let publisher = s.add_publisher(PeerId(1), "live", 30);
    let viewer = s.add_viewer(PeerId(2), "live");
    s.run_until_connected(&[publisher, viewer], ms(5_000));
    s.set_sending(publisher, false);
    let video_ssrc = s.client(publisher).video_ssrc();
    let started = std::time::Instant::now();
    let mut unknown_pt = 0u64;
    let mut seq: u16 = rng.random();
    for i in 0..packets {
        // Mostly in order, with repeats, reordering and jumps (SRTP rejects numbers far
        // outside its replay window, which is garbage too).
        seq = seq.wrapping_add_signed(match rng.random_range(0..10) {
            0 => 0,
            1 => -2,
            2 => rng.random_range(2..200),
            _ => 1,
        });
        let pt = match rng.random_range(0..4) {
            0 => rng.random_range(0..128),
            _ => sim::PUB_VP8_PT,
        };
        if pt != sim::PUB_VP8_PT && pt != sim::PUB_OPUS_PT {
            unknown_pt += 1;
        }
        let len = match rng.random_range(0..5) {
            0 => 0,
            1 => rng.random_range(1..4),
            2 => rng.random_range(1_100..1_200),
            _ => rng.random_range(4..64),
        };
        let mut payload = vec![0u8; len];
        rng.fill(&mut payload[..]);
        let packet = rtc::rtp::Packet {
            header: rtc::rtp::Header {
                version: 2,
                marker: rng.random(),
                payload_type: pt,
                sequence_number: seq,
                timestamp: rng.random(),
                ssrc: if rng.random_bool(0.98) {
                    video_ssrc
                } else {
                    rng.random()
                },
                ..Default::default()
            },
            payload: Bytes::from(payload),
        };
        s.send_rtp_raw(publisher, packet);
        if i % 10 == 0 {
            s.step();
        }
    }
    let fuzz_wall = started.elapsed();
    // The real media resumes where the numbers left off and reaches the viewer intact.
    s.client_mut(publisher)
        .source_mut()
        .set_next_video_seq(seq.wrapping_add(300));
    s.set_sending(publisher, true);
    s.run_for(ms(2_000));
    let st = s.sfu.stats();
    eprintln!(
        "{packets} hostile RTP packets through SRTP in {fuzz_wall:?}: stats {st:?}; \
         {unknown_pt} with an unknown payload type sent"
    );
    assert!(st.rtp_dropped_unknown_payload_type > 0);
    assert!(st.rtp_dropped_duplicate_or_padding > 0);
    assert!(s.sfu_failed.is_empty(), "{:?}", s.sfu_failed);
    assert!(!s.client(viewer).failed);
    // Whatever the viewer got is one gap-free sequence, real payloads intact.
    let video = s.client(viewer).received_of(Kind::Video);
    assert!(video.iter().any(|r| r.exact), "the real media came through");
    let _ = check_track;
}
