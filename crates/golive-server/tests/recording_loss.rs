//! A recording made from lossy RTP decodes without a single error: real VP8 (encoded by
//! ffmpeg's libvpx), packetized as a browser does, 5 % of its packets lost for good, through the
//! server's recorder (depacketizer and WebM writer), then decoded by ffmpeg.
//!
//! Needs `ffmpeg` with libvpx (Debian: `apt-get install -y ffmpeg`).

mod media_tools;

use bytes::Bytes;
use golive_proto::StreamName;
use golive_server::recording::ReplayId;
use golive_server::recording::recorder::Recorder;
use golive_sfu::{MediaKind, SourcePacket};
use media_tools::{decode_errors, ffprobe, require_ffmpeg, test_dir, vp8_only, vp8_test_pattern};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const FPS: u64 = 15;
const SECONDS: u64 = 10;
/// Largest RTP payload, as browsers packetize (about 1,200 bytes).
const MAX_PAYLOAD: usize = 1000;

/// Ten seconds of ffmpeg's test pattern in VP8 at 320x240, a keyframe every two seconds.
fn vp8_frames(dir: &Path) -> Vec<Vec<u8>> {
    vp8_test_pattern(&dir.join("src.ivf"), (320, 240), FPS, SECONDS, 30, "400k")
}

/// RFC 7741 packetization with the one-byte descriptor: S on the first packet of a frame.
fn packetize(frames: &[Vec<u8>]) -> Vec<(u16, u32, bool, Bytes)> {
    let mut out = Vec::new();
    let mut seq: u16 = 65_000;
    for (i, f) in frames.iter().enumerate() {
        let ts = (i as u64 * 90_000 / FPS) as u32;
        let chunks: Vec<&[u8]> = f.chunks(MAX_PAYLOAD).collect();
        for (j, c) in chunks.iter().enumerate() {
            let mut p = vec![if j == 0 { 0x10 } else { 0x00 }];
            p.extend_from_slice(c);
            out.push((seq, ts, j + 1 == chunks.len(), Bytes::from(p)));
            seq = seq.wrapping_add(1);
        }
    }
    out
}

/// Records the packets (those `keep` lets through) as replay `id`, video only, as the worker
/// would hand them over; returns the file.
fn record(
    dir: &Path,
    id: &str,
    packets: &[(u16, u32, bool, Bytes)],
    keep: impl Fn(usize) -> bool,
) -> PathBuf {
    let stream = StreamName::new("loss").unwrap();
    let media = vp8_only();
    let mut r = Recorder::create(dir, ReplayId::parse(id).unwrap(), &stream, None, &media).unwrap();
    let t0 = Instant::now();
    for (i, (seq, ts, marker, payload)) in packets.iter().enumerate() {
        if !keep(i) {
            continue;
        }
        let p = SourcePacket {
            stream: stream.clone(),
            epoch: 1,
            layer: golive_sfu::Layer::LOWEST,
            kind: MediaKind::Video,
            keyframe_start: false,
            seq: *seq,
            timestamp: *ts,
            marker: *marker,
            payload: payload.clone(),
            capture_time: None,
            vp8: None,
        };
        let at = t0 + Duration::from_micros(u64::from(*ts) * 1_000_000 / 90_000);
        r.handle_packet(&p, at).unwrap();
    }
    r.finish(t0 + Duration::from_secs(SECONDS), None).unwrap();
    dir.join(format!("{id}.webm"))
}

/// What `ffmpeg -v error -i f -f null -` says (empty: every frame decoded), and how many video
/// frames the file holds.
fn decode(file: &Path) -> (String, usize) {
    let frames = ffprobe(
        &["-show_entries", "packet=pts_time", "-of", "csv=p=0"],
        file,
    )
    .lines()
    .count();
    (decode_errors(file), frames)
}

#[test]
fn five_percent_unrepaired_loss_leaves_no_undecodable_frame() {
    require_ffmpeg();
    let d = test_dir("loss", "five");
    let frames = vp8_frames(&d);
    assert_eq!(frames.len() as u64, FPS * SECONDS);
    let packets = packetize(&frames);

    // Without loss: every frame is there, and decodes.
    let clean = record(&d, "clean-1", &packets, |_| true);
    let (errors, n) = decode(&clean);
    assert_eq!(errors, "", "the clean recording decodes");
    assert_eq!(n, frames.len(), "every frame recorded");

    // 5 % lost (a fixed pseudo-random pattern): frames go, but none that cannot decode.
    let mut x: u32 = 0x9e37_79b9;
    let lost: Vec<bool> = (0..packets.len())
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x % 100 < 5
        })
        .collect();
    let lossy = record(&d, "lossy-1", &packets, |i| !lost[i]);
    let (errors, n) = decode(&lossy);
    assert_eq!(errors, "", "the lossy recording decodes without an error");
    assert!(n < frames.len(), "frames after a loss are left out ({n})");
    assert!(n > 0, "frames from each keyframe on are kept ({n})");

    // The same packets with frames glued together regardless of loss do not decode: the test
    // can tell a corrupt file from a clean one.
    let naive = d.join("naive.ivf");
    let mut ivf = std::fs::read(d.join("src.ivf")).unwrap()[..32].to_vec();
    let mut frame: Vec<u8> = Vec::new();
    let mut count = 0u32;
    for (i, (_, ts, marker, p)) in packets.iter().enumerate() {
        if !lost[i] {
            frame.extend_from_slice(&p[1..]);
        }
        if *marker {
            if !frame.is_empty() {
                ivf.extend_from_slice(&(frame.len() as u32).to_le_bytes());
                ivf.extend_from_slice(&u64::from(*ts / 6000).to_le_bytes());
                ivf.extend_from_slice(&frame);
                count += 1;
            }
            frame.clear();
        }
    }
    ivf[24..28].copy_from_slice(&count.to_le_bytes());
    std::fs::write(&naive, ivf).unwrap();
    let (errors, _) = decode(&naive);
    assert!(
        !errors.is_empty(),
        "gluing lossy packets gives corrupt frames"
    );
    let _ = std::fs::remove_dir_all(&d);
}
