//! The recording of a simulcast broadcast keeps the highest layer the broadcaster sends, and
//! follows it when that layer stops and when it comes back, moving at keyframes: real VP8 at
//! three sizes (encoded by ffmpeg's libvpx), packetized as a browser does, through the
//! server's recorder, then read back frame by frame with ffprobe.
//!
//! Needs `ffmpeg` with libvpx (Debian: `apt-get install -y ffmpeg`).

mod media_tools;

use bytes::Bytes;
use golive_proto::StreamName;
use golive_server::recording::ReplayId;
use golive_server::recording::recorder::Recorder;
use golive_sfu::{Layer, MediaKind, SourcePacket};
use media_tools::{ffprobe, require_ffmpeg, test_dir, vp8_only, vp8_test_pattern};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

const FPS: u64 = 15;
const SECONDS: u64 = 10;
const MAX_PAYLOAD: usize = 1000;
/// The layers' sizes, lowest first, as a 640x480 camera's q/h/f.
const SIZES: [(u32, u32); 3] = [(160, 120), (320, 240), (640, 480)];
/// The top layer is not sent from 4 s to 7 s.
const TOP_STOPS_S: f64 = 4.0;
const TOP_RETURNS_S: f64 = 7.0;

/// `SECONDS` of ffmpeg's test pattern in VP8 at one size, a keyframe every second.
fn vp8_frames(dir: &Path, (w, h): (u32, u32)) -> Vec<Vec<u8>> {
    let ivf = dir.join(format!("src{w}.ivf"));
    vp8_test_pattern(&ivf, (w, h), FPS, SECONDS, FPS, "300k")
}

/// One frame's RTP packets (RFC 7741, one-byte descriptor): (seq, marker, keyframe start,
/// payload).
fn packetize(frame: &[u8], seq: &mut u16) -> Vec<(u16, bool, bool, Bytes)> {
    // The VP8 frame tag's lowest bit is 0 on a keyframe (RFC 6386 §9.1).
    let keyframe = frame.first().is_some_and(|b| b & 1 == 0);
    let chunks: Vec<&[u8]> = frame.chunks(MAX_PAYLOAD).collect();
    chunks
        .iter()
        .enumerate()
        .map(|(j, c)| {
            let mut p = vec![if j == 0 { 0x10 } else { 0x00 }];
            p.extend_from_slice(c);
            let s = *seq;
            *seq = seq.wrapping_add(1);
            (s, j + 1 == chunks.len(), j == 0 && keyframe, Bytes::from(p))
        })
        .collect()
}

/// (time in seconds, width) of every decoded video frame of the file.
fn frame_widths(file: &Path) -> Vec<(f64, u32)> {
    ffprobe(
        &[
            "-select_streams",
            "v",
            "-show_entries",
            "frame=pts_time,width",
            "-of",
            "csv=p=0",
        ],
        file,
    )
    .lines()
    .filter_map(|l| {
        let fields: Vec<&str> = l.split(',').filter(|f| !f.is_empty()).collect();
        let t = fields.iter().find(|f| f.contains('.'))?.parse().ok()?;
        let w = fields.iter().find(|f| !f.contains('.'))?.parse().ok()?;
        Some((t, w))
    })
    .collect()
}

/// What decoding every frame of the file prints (empty: all decoded). Frames keep their own
/// times: where the recording moves to another layer, the new layer's keyframe follows the
/// old layer's frame of the same instant a millisecond later, which a constant-rate output
/// would count as a duplicate.
fn decode_all(file: &Path) -> String {
    let out = Command::new("ffmpeg")
        .args(["-v", "error", "-i"])
        .arg(file)
        .args(["-fps_mode", "passthrough", "-enc_time_base", "1:1000"])
        .args(["-f", "null", "-"])
        .output()
        .expect("ffmpeg runs");
    String::from_utf8_lossy(&out.stderr).trim().to_owned()
}

#[test]
fn a_simulcast_recording_keeps_the_top_layer_and_follows_it_down_and_back_up() {
    require_ffmpeg();
    let dir = test_dir("recording-simulcast", "follow");
    let layers: Vec<Vec<Vec<u8>>> = SIZES.iter().map(|s| vp8_frames(&dir, *s)).collect();
    let frames = layers.iter().map(Vec::len).min().unwrap();
    assert_eq!(frames as u64, FPS * SECONDS);

    let stream = StreamName::new("simulcast").unwrap();
    let media = vp8_only();
    let id = "sim0000000000001";
    let mut r = Recorder::create(&dir, ReplayId::parse(id).unwrap(), &stream, None, &media)
        .expect("recorder");
    let t0 = Instant::now();
    // Each layer its own sequence numbers and timestamp offset, as a browser's SSRCs have.
    let mut seqs: [u16; 3] = [100, 30_000, 65_000];
    let ts_offsets: [u32; 3] = [1_000, 2_000_000_000, 4_000_000_000];
    for i in 0..frames {
        let t = i as f64 / FPS as f64;
        let at = t0 + Duration::from_secs_f64(t);
        for (l, frames_of_layer) in layers.iter().enumerate() {
            if l == 2 && (TOP_STOPS_S..TOP_RETURNS_S).contains(&t) {
                continue;
            }
            let ts = ts_offsets[l].wrapping_add((i as u64 * 90_000 / FPS) as u32);
            for (seq, marker, keyframe_start, payload) in
                packetize(&frames_of_layer[i], &mut seqs[l])
            {
                let p = SourcePacket {
                    stream: stream.clone(),
                    epoch: 1,
                    layer: Layer(l as u8),
                    kind: MediaKind::Video,
                    keyframe_start,
                    seq,
                    timestamp: ts,
                    marker,
                    payload,
                    capture_time: None,
                    vp8: None,
                };
                r.handle_packet(&p, at).unwrap();
            }
        }
    }
    let switches = r.layer_switches;
    let meta = r
        .finish(t0 + Duration::from_secs(SECONDS), None)
        .expect("finish");
    let file = dir.join(format!("{id}.webm"));
    let widths = frame_widths(&file);
    eprintln!(
        "{} frames, {switches} layer switches, {} ms; widths by second: {:?}",
        widths.len(),
        meta.duration_ms,
        (0..SECONDS)
            .map(|s| widths
                .iter()
                .filter(|(t, _)| *t as u64 == s)
                .map(|(_, w)| *w)
                .max())
            .collect::<Vec<_>>()
    );
    assert_eq!(decode_all(&file), "", "every frame decodes");
    let width_at = |from: f64, to: f64| -> Vec<u32> {
        let mut w: Vec<u32> = widths
            .iter()
            .filter(|(t, _)| (from..to).contains(t))
            .map(|(_, w)| *w)
            .collect();
        w.dedup();
        w
    };
    // The layers start together: the top one is recorded from its first keyframe, the same
    // instant as the others'.
    assert_eq!(width_at(0.05, TOP_STOPS_S), [640]);
    // The top layer stops: once it has been idle, the middle one is taken at its next
    // keyframe (the next second here: nobody answers the recorder's keyframe request).
    assert_eq!(width_at(5.0, TOP_RETURNS_S), [320]);
    // It comes back with a keyframe, and is taken at once (after the middle layer's frame of
    // that same instant, which was in already).
    assert_eq!(
        width_at(TOP_RETURNS_S - 0.01, TOP_RETURNS_S + 0.01),
        [320, 640]
    );
    assert_eq!(width_at(TOP_RETURNS_S + 0.01, SECONDS as f64), [640]);
    assert_eq!(switches, 4, "up twice at the start, down, up");
    // About the whole broadcast, with its frames in order: the moves cost no time.
    let times: Vec<f64> = widths.iter().map(|(t, _)| *t).collect();
    assert!(times.windows(2).all(|w| w[1] >= w[0]));
    assert!(*times.last().unwrap() > SECONDS as f64 - 0.5, "{times:?}");
}
