//! An H.264 + Opus broadcast becomes a fragmented MP4 that ffmpeg reads and decodes: real
//! H.264 (ffmpeg's libx264, baseline, as browsers send) packetized per RFC 6184 (single NAL
//! unit and FU-A packets), real Opus (libopus, 20 ms packets), through the server's recorder
//! (depacketizer, timing, MP4 writer).
//!
//! Needs `ffmpeg` with libx264 and libopus (Debian: `apt-get install -y ffmpeg`).

mod media_tools;

use bytes::Bytes;
use golive_proto::StreamName;
use golive_server::recording::ReplayId;
use golive_server::recording::recorder::Recorder;
use golive_sfu::{Codec, MediaKind, SourcePacket, StreamMedia, VideoCodec};
use media_tools::{decode_errors, ffmpeg, ffprobe, require_ffmpeg, test_dir};
use std::path::Path;
use std::time::{Duration, Instant};

const FPS: u64 = 30;
const SECONDS: u64 = 20;
/// Largest RTP payload, as browsers packetize (about 1,200 bytes).
const MAX_PAYLOAD: usize = 1000;
const OPUS_FRAME_MS: u64 = 20;

/// The test pattern in H.264 baseline, a keyframe every second, as Annex B access units (one
/// slice per picture, as x264 writes by default).
fn h264_access_units(dir: &Path) -> Vec<Vec<u8>> {
    h264_access_units_of(dir, "320x240", SECONDS)
}

fn h264_access_units_of(dir: &Path, size: &str, seconds: u64) -> Vec<Vec<u8>> {
    let file = dir.join(format!("src-{size}.h264"));
    let src = format!("testsrc=size={size}:rate={FPS}");
    ffmpeg(&[
        "-v",
        "error",
        "-f",
        "lavfi",
        "-i",
        &src,
        "-t",
        &seconds.to_string(),
        "-pix_fmt",
        "yuv420p",
        "-c:v",
        "libx264",
        "-profile:v",
        "baseline",
        "-g",
        "30",
        "-b:v",
        "500k",
        "-bsf:v",
        "h264_mp4toannexb",
        "-f",
        "h264",
        "-y",
        file.to_str().unwrap(),
    ]);
    let data = std::fs::read(&file).unwrap();
    let mut units = Vec::new();
    let mut unit = Vec::new();
    for nal in nals(&data) {
        unit.extend_from_slice(&[0, 0, 0, 1]);
        unit.extend_from_slice(nal);
        // A coded slice ends the picture (parameter sets and SEI come before it).
        if matches!(nal[0] & 0x1f, 1 | 5) {
            units.push(std::mem::take(&mut unit));
        }
    }
    units
}

fn nals(data: &[u8]) -> Vec<&[u8]> {
    let mut starts = Vec::new();
    let mut i = 0;
    while i + 3 <= data.len() {
        if data[i..i + 3] == [0, 0, 1] {
            starts.push(i + 3);
            i += 3;
        } else {
            i += 1;
        }
    }
    starts
        .iter()
        .enumerate()
        .map(|(k, &s)| {
            let mut end = starts.get(k + 1).map_or(data.len(), |&n| n - 3);
            while end > s && data[end - 1] == 0 {
                end -= 1;
            }
            &data[s..end]
        })
        .filter(|n| !n.is_empty())
        .collect()
}

/// Opus packets of a 440 Hz tone, 20 ms each, from an Ogg file (RFC 3533 pages, RFC 7845
/// mapping: the first two packets are headers).
fn opus_packets(dir: &Path) -> Vec<Vec<u8>> {
    let file = dir.join("src.opus");
    ffmpeg(&[
        "-v",
        "error",
        "-f",
        "lavfi",
        "-i",
        "sine=frequency=440:sample_rate=48000",
        "-t",
        &SECONDS.to_string(),
        "-c:a",
        "libopus",
        "-frame_duration",
        "20",
        "-b:a",
        "48k",
        "-f",
        "ogg",
        "-y",
        file.to_str().unwrap(),
    ]);
    let data = std::fs::read(&file).unwrap();
    let mut packets = Vec::new();
    let mut packet = Vec::new();
    let mut at = 0;
    while at + 27 <= data.len() && &data[at..at + 4] == b"OggS" {
        let segments = usize::from(data[at + 26]);
        let table = &data[at + 27..at + 27 + segments];
        let mut body = at + 27 + segments;
        for &len in table {
            packet.extend_from_slice(&data[body..body + usize::from(len)]);
            body += usize::from(len);
            if len < 255 {
                packets.push(std::mem::take(&mut packet));
            }
        }
        at = body;
    }
    packets.split_off(2)
}

/// One RTP packet as the worker hands it over: (arrival from the start, packet).
type Timed = (Duration, SourcePacket);

fn packet(kind: MediaKind, seq: u16, ts: u32, marker: bool, payload: Vec<u8>) -> SourcePacket {
    SourcePacket {
        stream: StreamName::new("h264").unwrap(),
        epoch: 1,
        layer: golive_sfu::Layer::LOWEST,
        kind,
        keyframe_start: false,
        seq,
        timestamp: ts,
        marker,
        payload: Bytes::from(payload),
        capture_time: None,
        vp8: None,
    }
}

/// RFC 6184 packetization mode 1: a NAL unit that fits goes alone, a larger one in FU-A
/// fragments; the marker is on the access unit's last packet.
fn packetize_video(units: &[Vec<u8>]) -> Vec<Timed> {
    let mut out = Vec::new();
    let mut seq: u16 = 65_000;
    for (i, au) in units.iter().enumerate() {
        let ts = (i as u64 * 90_000 / FPS) as u32;
        let at = Duration::from_micros(i as u64 * 1_000_000 / FPS);
        let nals = nals(au);
        let mut payloads = Vec::new();
        for nal in &nals {
            if nal.len() <= MAX_PAYLOAD {
                payloads.push(nal.to_vec());
                continue;
            }
            let chunks: Vec<&[u8]> = nal[1..].chunks(MAX_PAYLOAD).collect();
            for (j, c) in chunks.iter().enumerate() {
                let start = if j == 0 { 0x80 } else { 0 };
                let end = if j + 1 == chunks.len() { 0x40 } else { 0 };
                let mut p = vec![(nal[0] & 0xe0) | 28, start | end | (nal[0] & 0x1f)];
                p.extend_from_slice(c);
                payloads.push(p);
            }
        }
        let n = payloads.len();
        for (j, p) in payloads.into_iter().enumerate() {
            out.push((at, packet(MediaKind::Video, seq, ts, j + 1 == n, p)));
            seq = seq.wrapping_add(1);
        }
    }
    out
}

fn packetize_audio(packets: &[Vec<u8>]) -> Vec<Timed> {
    packets
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let at = Duration::from_millis(i as u64 * OPUS_FRAME_MS);
            let ts = (i as u64 * 48 * OPUS_FRAME_MS) as u32;
            (
                at,
                packet(MediaKind::Audio, 1000 + i as u16, ts, true, p.clone()),
            )
        })
        .collect()
}

fn h264_opus() -> StreamMedia {
    StreamMedia {
        video: Some(Codec {
            kind: MediaKind::Video,
            name: "H264".into(),
            clock_rate: 90_000,
            channels: 0,
            fmtp: "packetization-mode=1;profile-level-id=42e01f".into(),
            payload_type: 102,
            video: Some(VideoCodec::H264),
        }),
        audio: Some(Codec {
            kind: MediaKind::Audio,
            name: "opus".into(),
            clock_rate: 48_000,
            channels: 2,
            fmtp: String::new(),
            payload_type: 111,
            video: None,
        }),
    }
}

fn duration_s(file: &Path) -> f64 {
    ffprobe(
        &["-show_entries", "format=duration", "-of", "csv=p=0"],
        file,
    )
    .parse()
    .unwrap()
}

#[test]
fn a_20_second_h264_opus_broadcast_becomes_an_mp4_ffmpeg_decodes() {
    require_ffmpeg();
    let d = test_dir("h264", "20s");
    let units = h264_access_units(&d);
    assert_eq!(units.len() as u64, FPS * SECONDS);
    let mut audio = opus_packets(&d);
    // The encoder's last packet carries its padding past the end.
    assert!(audio.len() as u64 >= SECONDS * 1000 / OPUS_FRAME_MS);
    audio.truncate((SECONDS * 1000 / OPUS_FRAME_MS) as usize);
    let mut packets = packetize_video(&units);
    packets.extend(packetize_audio(&audio));
    packets.sort_by_key(|(at, _)| *at);
    assert!(
        packets
            .iter()
            .any(|(_, p)| p.kind == MediaKind::Video && p.payload[0] & 0x1f == 28),
        "large NAL units go in FU-A packets"
    );

    let stream = StreamName::new("h264").unwrap();
    let id = "h264-1";
    let mut r = Recorder::create(
        &d,
        ReplayId::parse(id).unwrap(),
        &stream,
        None,
        &h264_opus(),
    )
    .unwrap();
    let file = d.join(format!("{id}.mp4"));
    let t0 = Instant::now();
    let mut copied_at_half = None;
    for (at, p) in &packets {
        r.handle_packet(p, t0 + *at).unwrap();
        // Halfway, the file as a killed process would leave it.
        if copied_at_half.is_none() && *at >= Duration::from_secs(SECONDS / 2) {
            let half = d.join("half.mp4");
            std::fs::copy(&file, &half).unwrap();
            copied_at_half = Some(half);
        }
    }
    let meta = r.finish(t0 + Duration::from_secs(SECONDS), None).unwrap();
    assert_eq!(meta.container.extension(), "mp4");
    assert_eq!(meta.bytes, std::fs::metadata(&file).unwrap().len());

    let codecs = ffprobe(
        &["-show_entries", "stream=codec_name", "-of", "csv=p=0"],
        &file,
    );
    assert_eq!(codecs.lines().collect::<Vec<_>>(), ["h264", "opus"]);
    let size = ffprobe(
        &["-show_entries", "stream=width,height", "-of", "csv=p=0"],
        &file,
    );
    assert_eq!(size.lines().next(), Some("320,240"));
    let duration = duration_s(&file);
    assert!(
        (duration - SECONDS as f64).abs() <= SECONDS as f64 * 0.02,
        "duration {duration} s, sent {SECONDS} s"
    );
    for (stream, expected) in [("v", FPS * SECONDS), ("a", SECONDS * 1000 / OPUS_FRAME_MS)] {
        let csv = ffprobe(
            &[
                "-select_streams",
                stream,
                "-show_entries",
                "packet=dts_time,flags",
                "-of",
                "csv=p=0",
            ],
            &file,
        );
        let rows: Vec<(f64, bool)> = csv
            .lines()
            .map(|l| {
                let (t, flags) = l.split_once(',').unwrap();
                (t.parse().unwrap(), flags.starts_with('K'))
            })
            .collect();
        assert_eq!(
            rows.len() as u64,
            expected,
            "every {stream} frame is in the file"
        );
        assert!(
            rows.windows(2).all(|w| w[1].0 > w[0].0),
            "{stream} timestamps increase"
        );
        if stream == "v" {
            let keys = rows.iter().filter(|r| r.1).count() as u64;
            assert_eq!(keys, SECONDS, "a keyframe a second is marked as one");
            assert!(rows[0].1, "the file starts at a keyframe");
        }
    }
    assert_eq!(decode_errors(&file), "", "the recording decodes");

    let half = copied_at_half.unwrap();
    assert_eq!(decode_errors(&half), "", "the file mid-broadcast decodes");
    let half_s = duration_s(&half);
    assert!(
        (SECONDS as f64 / 2.0 - 1.5..=SECONDS as f64 / 2.0).contains(&half_s),
        "mid-broadcast the file plays to within its last fragment: {half_s} s"
    );
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn h264_with_five_percent_unrepaired_loss_leaves_no_undecodable_frame() {
    require_ffmpeg();
    let d = test_dir("h264", "loss");
    let units = h264_access_units(&d);
    let packets = packetize_video(&units);
    // 5 % of the packets lost for good (a fixed pseudo-random pattern).
    let mut x: u32 = 0x9e37_79b9;
    let kept: Vec<&Timed> = packets
        .iter()
        .filter(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x % 100 >= 5
        })
        .collect();
    assert!(kept.len() < packets.len());
    let media = StreamMedia {
        audio: None,
        ..h264_opus()
    };
    let stream = StreamName::new("h264").unwrap();
    let id = "h264lossy-1";
    let mut r = Recorder::create(&d, ReplayId::parse(id).unwrap(), &stream, None, &media).unwrap();
    let t0 = Instant::now();
    for (at, p) in kept {
        r.handle_packet(p, t0 + *at).unwrap();
    }
    r.finish(t0 + Duration::from_secs(SECONDS), None).unwrap();
    let file = d.join(format!("{id}.mp4"));
    assert_eq!(decode_errors(&file), "", "the lossy recording decodes");
    let frames = ffprobe(
        &["-show_entries", "packet=pts_time", "-of", "csv=p=0"],
        &file,
    )
    .lines()
    .count();
    assert!(
        frames > 0 && frames < units.len(),
        "frames after a loss are left out, those from each keyframe on kept ({frames})"
    );
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn a_resolution_change_mid_broadcast_decodes_at_both_sizes() {
    require_ffmpeg();
    let d = test_dir("h264", "resize");
    // As a WebRTC sender adapting to its bandwidth: a new SPS at a keyframe, same stream.
    let mut units = h264_access_units_of(&d, "320x240", SECONDS / 2);
    units.extend(h264_access_units_of(&d, "640x480", SECONDS / 2));
    let packets = packetize_video(&units);
    let media = StreamMedia {
        audio: None,
        ..h264_opus()
    };
    let stream = StreamName::new("h264").unwrap();
    let id = "h264resize-1";
    let mut r = Recorder::create(&d, ReplayId::parse(id).unwrap(), &stream, None, &media).unwrap();
    let t0 = Instant::now();
    for (at, p) in &packets {
        r.handle_packet(p, t0 + *at).unwrap();
    }
    r.finish(t0 + Duration::from_secs(SECONDS), None).unwrap();
    let file = d.join(format!("{id}.mp4"));
    assert_eq!(decode_errors(&file), "", "both parts decode");
    let sizes = ffprobe(
        &[
            "-select_streams",
            "v",
            "-show_entries",
            "frame=width,height",
            "-of",
            "csv=p=0",
        ],
        &file,
    );
    let count = |size: &str| {
        sizes
            .lines()
            .filter(|l| l.trim_end_matches(',') == size)
            .count() as u64
    };
    assert_eq!(count("320,240"), FPS * SECONDS / 2, "{sizes}");
    assert_eq!(count("640,480"), FPS * SECONDS / 2);
    let _ = std::fs::remove_dir_all(&d);
}
