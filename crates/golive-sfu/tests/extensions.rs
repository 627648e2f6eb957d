//! Header extensions on the lean viewer leg: each kind's packets carry exactly the extensions
//! its m-section negotiated (transport-wide sequence numbers, absolute send time, playout
//! delay), with the values the answer promises.

mod sim;

use bytes::Bytes;
use golive_sfu::{AbsCaptureTime, Layer, MediaKind, PeerId, SourcePacket};
use sim::{Kind, Sim};
use std::time::Duration;

const PUBLISHER: PeerId = PeerId(1);
const TRANSPORT_CC: &str =
    "http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01";
const ABS_SEND_TIME: &str = "http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time";
const PLAYOUT_DELAY: &str = "http://www.webrtc.org/experiments/rtp-hdrext/playout-delay";
const ABS_SEND_TIME_ID: u8 = 12;
const PLAYOUT_DELAY_ID: u8 = 13;
const ABS_CAPTURE_TIME: &str = "http://www.webrtc.org/experiments/rtp-hdrext/abs-capture-time";
const ABS_CAPTURE_TIME_ID: u8 = 11;

/// The SDP's m-sections, each with its lines (the session part first).
fn sections(sdp: &str) -> Vec<String> {
    let mut out = vec![String::new()];
    for line in sdp.split_inclusive("\r\n") {
        if line.starts_with("m=") {
            out.push(String::new());
        }
        out.last_mut().expect("one").push_str(line);
    }
    out
}

fn section_of<'a>(sections: &'a [String], media: &str) -> &'a str {
    sections
        .iter()
        .find(|s| s.starts_with(&format!("m={media} ")))
        .unwrap_or_else(|| panic!("no {media} section"))
}

/// The id a section gives `uri`.
fn ext_id(section: &str, uri: &str) -> Option<u8> {
    section
        .lines()
        .filter_map(|l| l.strip_prefix("a=extmap:"))
        .find(|l| l.split_whitespace().nth(1) == Some(uri))
        .and_then(|l| l.split(['/', ' ']).next()?.parse().ok())
}

/// The offer with transport-cc taken out of its audio section, abs-send-time added to both and
/// playout-delay to video (as Chromium offers them).
fn edited(offer: &str) -> String {
    sections(offer)
        .into_iter()
        .map(|s| {
            let extra = format!("a=extmap:{ABS_SEND_TIME_ID} {ABS_SEND_TIME}\r\n");
            if s.starts_with("m=audio ") {
                let kept: String = s
                    .split_inclusive("\r\n")
                    .filter(|l| !l.contains(TRANSPORT_CC) && !l.contains("transport-cc"))
                    .collect();
                format!("{kept}{extra}")
            } else if s.starts_with("m=video ") {
                format!("{s}{extra}a=extmap:{PLAYOUT_DELAY_ID} {PLAYOUT_DELAY}\r\n")
            } else {
                s
            }
        })
        .collect()
}

#[test]
fn each_kind_carries_only_the_extensions_its_section_negotiated() {
    let mut sim = Sim::lean();
    sim.add_publisher(PUBLISHER, "live", 30);
    sim.run_until_connected(&[PUBLISHER], Duration::from_secs(5));
    let (viewer, answer) = sim.add_browser_viewer_with_offer(PeerId(2), "live", edited);
    let plain = sim.add_browser_viewer(PeerId(3), "live");
    sim.run_until_connected(&[viewer, plain], Duration::from_secs(5));
    sim.run_for(Duration::from_secs(2));

    let answer = sections(&answer);
    let (audio, video) = (section_of(&answer, "audio"), section_of(&answer, "video"));
    let twcc = ext_id(video, TRANSPORT_CC).expect("video negotiated transport-cc");
    assert_eq!(ext_id(audio, TRANSPORT_CC), None, "{audio}");
    assert_eq!(ext_id(audio, ABS_SEND_TIME), Some(ABS_SEND_TIME_ID));
    assert_eq!(ext_id(video, ABS_SEND_TIME), Some(ABS_SEND_TIME_ID));
    assert_eq!(ext_id(video, PLAYOUT_DELAY), Some(PLAYOUT_DELAY_ID));
    assert_eq!(
        ext_id(audio, PLAYOUT_DELAY),
        None,
        "playout delay is for video"
    );

    let v = sim.client(viewer);
    assert!(v.received_of(Kind::Audio).len() > 50 && v.received_of(Kind::Video).len() > 50);
    let ids = |kind: Kind| -> Vec<u8> {
        let mut ids: Vec<u8> = v
            .extensions_seen
            .iter()
            .filter(|(k, _, _)| *k == kind)
            .map(|(_, id, _)| *id)
            .collect();
        ids.sort_unstable();
        ids.dedup();
        ids
    };
    assert_eq!(ids(Kind::Audio), [ABS_SEND_TIME_ID], "audio is not stamped");
    let mut want = vec![twcc, ABS_SEND_TIME_ID, PLAYOUT_DELAY_ID];
    want.sort_unstable();
    assert_eq!(ids(Kind::Video), want);
    assert_eq!(
        v.without_extensions,
        (0, 0),
        "every packet carries its extensions"
    );
    // Playout delay: min 0, max 200 ms, in 10 ms units.
    let delays: Vec<&Vec<u8>> = v
        .extensions_seen
        .iter()
        .filter(|(_, id, _)| *id == PLAYOUT_DELAY_ID)
        .map(|(_, _, data)| data)
        .collect();
    assert_eq!(delays, [&vec![0x00, 0x00, 0x14]]);
    // The send time moves with the clock: two seconds of packets carry many values.
    let send_times = v
        .extensions_seen
        .iter()
        .filter(|(_, id, data)| *id == ABS_SEND_TIME_ID && data.len() == 3)
        .count();
    assert!(send_times > 50, "{send_times} send times");
    // The estimate runs on video's numbers alone.
    assert!(
        sim.sfu.stats().twcc_feedback_in > 5,
        "{:?}",
        sim.sfu.stats()
    );
    assert_eq!(sim.sfu.stats().twcc_feedback_refused, 0);

    // A viewer that offered neither gets neither; audio and video both carry transport-cc.
    let p = sim.client(plain);
    assert!(
        p.extensions_seen
            .iter()
            .all(|(_, id, data)| data.len() == 2 && *id != ABS_SEND_TIME_ID),
        "only sequence numbers"
    );
    assert!(p.extensions_seen.iter().any(|(k, _, _)| *k == Kind::Audio));
}

#[test]
fn a_broadcasters_capture_time_reaches_viewers_that_offered_it_untouched() {
    let mut sim = Sim::lean();
    sim.add_publisher(PUBLISHER, "live", 30);
    sim.run_until_connected(&[PUBLISHER], Duration::from_secs(5));
    let (viewer, answer) = sim.add_browser_viewer_with_offer(PeerId(2), "live", |offer| {
        sections(offer)
            .into_iter()
            .map(|s| {
                if s.starts_with("m=video ") {
                    format!("{s}a=extmap:{ABS_CAPTURE_TIME_ID} {ABS_CAPTURE_TIME}\r\n")
                } else {
                    s
                }
            })
            .collect()
    });
    let plain = sim.add_browser_viewer(PeerId(3), "live");
    sim.run_until_connected(&[viewer, plain], Duration::from_secs(5));
    let answer = sections(&answer);
    assert_eq!(
        ext_id(section_of(&answer, "video"), ABS_CAPTURE_TIME),
        Some(ABS_CAPTURE_TIME_ID)
    );
    assert_eq!(ext_id(section_of(&answer, "audio"), ABS_CAPTURE_TIME), None);
    // The broadcaster's packets as its worker shares them, each with its capture time (8
    // bytes: the instant alone; 16: with the clock offset estimate).
    sim.set_sending(PUBLISHER, false);
    let captures: Vec<Vec<u8>> = (0..20u8)
        .map(|i| {
            let len = if i % 2 == 0 { 8 } else { 16 };
            (0..len).map(|b| b ^ i.wrapping_mul(37)).collect()
        })
        .collect();
    for (i, capture) in captures.iter().enumerate() {
        let packet = SourcePacket {
            stream: sim::stream("live"),
            epoch: 99,
            layer: Layer::LOWEST,
            kind: MediaKind::Video,
            keyframe_start: true,
            seq: i as u16,
            timestamp: i as u32 * 3_000,
            marker: true,
            payload: Bytes::from(vec![0x10; 300]),
            capture_time: AbsCaptureTime::new(capture),
            vp8: None,
        };
        let now = sim.now;
        sim.sfu.handle_media(now, &packet);
        sim.run_for(Duration::from_millis(33));
    }
    let seen: Vec<Vec<u8>> = sim
        .client(viewer)
        .extensions_seen
        .iter()
        .filter(|(k, id, _)| *k == Kind::Video && *id == ABS_CAPTURE_TIME_ID)
        .map(|(_, _, data)| data.clone())
        .collect();
    for capture in &captures {
        assert!(seen.contains(capture), "{capture:?} not among {seen:?}");
    }
    assert_eq!(seen.len(), captures.len());
    // A viewer that did not offer it gets none.
    assert!(
        sim.client(plain)
            .extensions_seen
            .iter()
            .all(|(_, _, data)| data.len() == 2)
    );
}
