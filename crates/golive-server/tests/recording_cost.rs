//! What recording costs, per broadcast: CPU per packet and per second of a 1.5 Mbit/s VP8 + Opus
//! broadcast through the recorder (depacketize, WebM, write), and the file's size against the
//! bytes sent. A benchmark, not a test: it prints figures and asserts nothing about speed.
//!
//! cargo test --release -p golive-server --test recording_cost -- --ignored --nocapture

use bytes::Bytes;
use golive_proto::StreamName;
use golive_server::recording::ReplayId;
use golive_server::recording::recorder::Recorder;
use golive_sfu::{Codec, MediaKind, SourcePacket, StreamMedia, VideoCodec};
use std::time::{Duration, Instant};

const SECONDS: u64 = 60;
const VIDEO_BPS: u64 = 1_500_000;
const FPS: u64 = 30;
const PAYLOAD: usize = 1100;
const OPUS_BYTES: usize = 120;

fn codec(kind: MediaKind, name: &str, rate: u32, video: Option<VideoCodec>) -> Codec {
    Codec {
        kind,
        name: name.into(),
        clock_rate: rate,
        channels: if video.is_some() { 0 } else { 2 },
        fmtp: String::new(),
        payload_type: 96,
        video,
    }
}

/// The broadcast's packets in arrival order, with their arrival offsets.
fn broadcast(stream: &StreamName) -> (Vec<(SourcePacket, Duration)>, u64) {
    let mut out = Vec::new();
    let mut payload_bytes = 0u64;
    let (mut vseq, mut aseq) = (0u16, 0u16);
    let frame_bytes = (VIDEO_BPS / 8 / FPS) as usize;
    let mut packet = |kind, seq: &mut u16, ts, marker, payload: Vec<u8>, at| {
        payload_bytes += payload.len() as u64;
        out.push((
            SourcePacket {
                stream: stream.clone(),
                epoch: 1,
                layer: golive_sfu::Layer::LOWEST,
                kind,
                keyframe_start: false,
                seq: *seq,
                timestamp: ts,
                marker,
                payload: Bytes::from(payload),
                capture_time: None,
                vp8: None,
            },
            at,
        ));
        *seq = seq.wrapping_add(1);
    };
    for ms in 0..SECONDS * 1000 {
        let at = Duration::from_millis(ms);
        if ms % 20 == 0 {
            let mut p = vec![0xfc];
            p.resize(OPUS_BYTES, (ms / 20) as u8);
            packet(MediaKind::Audio, &mut aseq, (ms * 48) as u32, false, p, at);
        }
        // A frame whenever the frame count (ms × FPS / 1000) moves on.
        if ms == 0 || ms * FPS / 1000 != (ms - 1) * FPS / 1000 {
            let key = ms % 2000 == 0;
            let size = if key { frame_bytes * 4 } else { frame_bytes };
            let chunks = size.div_ceil(PAYLOAD);
            for c in 0..chunks {
                let mut p = vec![if c == 0 { 0x10 } else { 0x00 }];
                if c == 0 {
                    p.extend_from_slice(&[
                        u8::from(!key),
                        0,
                        0,
                        0x9d,
                        0x01,
                        0x2a,
                        0x80,
                        0x02,
                        0xe0,
                        0x01,
                    ]);
                }
                p.resize(PAYLOAD.min(size - c * PAYLOAD) + 1, c as u8);
                packet(
                    MediaKind::Video,
                    &mut vseq,
                    (ms * 90) as u32,
                    c + 1 == chunks,
                    p,
                    at,
                );
            }
        }
    }
    (out, payload_bytes)
}

#[test]
#[ignore = "a benchmark: run with --release --ignored --nocapture"]
fn recording_cost_per_broadcast() {
    let stream = StreamName::new("cost").unwrap();
    let media = StreamMedia {
        video: Some(codec(
            MediaKind::Video,
            "VP8",
            90_000,
            Some(VideoCodec::Vp8),
        )),
        audio: Some(codec(MediaKind::Audio, "opus", 48_000, None)),
    };
    let (packets, payload_bytes) = broadcast(&stream);
    let dir = std::env::temp_dir().join(format!("golive-cost-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut best = Duration::MAX;
    let mut file_bytes = 0;
    for run in 0..5 {
        let id = ReplayId::parse(&format!("cost-{run}")).unwrap();
        let mut r = Recorder::create(&dir, id.clone(), &stream, None, &media).unwrap();
        let t0 = Instant::now();
        let started = Instant::now();
        for (p, at) in &packets {
            r.handle_packet(p, t0 + *at).unwrap();
        }
        let meta = r.finish(t0 + Duration::from_secs(SECONDS), None).unwrap();
        best = best.min(started.elapsed());
        file_bytes = meta.bytes;
        assert!(
            (meta.duration_ms as i64 - (SECONDS * 1000) as i64).abs() < 100,
            "{meta:?}"
        );
    }
    let per_packet_us = best.as_secs_f64() * 1e6 / packets.len() as f64;
    let core_share = best.as_secs_f64() / SECONDS as f64 * 100.0;
    println!(
        "recording {SECONDS} s of {} kbit/s VP8 + Opus: {} packets in {:.1} ms (best of 5): \
         {per_packet_us:.2} µs per packet, {core_share:.3} % of a core per broadcast",
        VIDEO_BPS / 1000,
        packets.len(),
        best.as_secs_f64() * 1e3
    );
    println!(
        "file {file_bytes} bytes for {payload_bytes} payload bytes sent: {:+.2} % (the RTP \
         payload descriptors out, the WebM framing in)",
        (file_bytes as f64 / payload_bytes as f64 - 1.0) * 100.0
    );
    let _ = std::fs::remove_dir_all(&dir);
}
