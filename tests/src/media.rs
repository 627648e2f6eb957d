//! Synthetic media: payloads that look enough like VP8 and Opus for an SFU to handle them (keyframe
//! detection reads the VP8 payload descriptor and frame tag), and that carry a unique, ordered
//! mark inside, so a viewer can prove that what it got is exactly what the publisher sent.
//!
//! This module is pure: no sockets, no clock (the caller passes the send time), so its framing is
//! unit-tested below.

use bytes::{BufMut, Bytes, BytesMut};
use std::time::Duration;

/// VP8 RTP clock rate (RFC 7741).
pub const VIDEO_CLOCK_RATE: u32 = 90_000;
/// Opus RTP clock rate (RFC 7587), always 48 kHz.
pub const AUDIO_CLOCK_RATE: u32 = 48_000;
/// Frames per second of the synthetic video.
pub const VIDEO_FPS: u32 = 15;
/// Packets in a key frame and in a delta frame: 15 fps × ~2 packets ≈ 30 packets/s.
pub const KEYFRAME_PACKETS: usize = 3;
pub const DELTA_FRAME_PACKETS: usize = 2;
/// A key frame every this many frames (about once a second), besides those asked for by PLI/FIR.
pub const KEYFRAME_EVERY_FRAMES: u32 = VIDEO_FPS;
/// Opus packet duration: 20 ms, 50 packets/s.
pub const AUDIO_PACKET_DURATION: Duration = Duration::from_millis(20);
pub const VIDEO_FRAME_INTERVAL: Duration = Duration::from_nanos(1_000_000_000 / VIDEO_FPS as u64);
/// Picture size written into key frames.
pub const VIDEO_WIDTH: u16 = 320;
pub const VIDEO_HEIGHT: u16 = 240;

/// Marks the start of our own record inside a payload.
const MARK_MAGIC: &[u8; 4] = b"GLV1";
/// VP8 payload descriptor (RFC 7741 §4.2), one byte, no extensions: S=1, PID=0.
const VP8_DESCRIPTOR_START: u8 = 0x10;
/// The same for a packet that continues a frame: S=0, PID=0.
const VP8_DESCRIPTOR_CONTINUATION: u8 = 0x00;
/// VP8 key frame start code (RFC 6386 §9.1).
const VP8_START_CODE: [u8; 3] = [0x9d, 0x01, 0x2a];
/// Opus TOC byte: config 31 (CELT fullband 20 ms), stereo, one frame.
const OPUS_TOC: u8 = 0xfc;

/// Audio or video.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MediaKind {
    Audio,
    Video,
}

impl MediaKind {
    fn tag(self) -> u8 {
        match self {
            MediaKind::Audio => b'a',
            MediaKind::Video => b'v',
        }
    }
}

/// One RTP packet's worth of synthetic media, before it gets its SSRC and payload type.
#[derive(Debug, Clone)]
pub struct SyntheticPacket {
    pub kind: MediaKind,
    pub sequence_number: u16,
    pub timestamp: u32,
    pub marker: bool,
    /// True on the first packet of a VP8 key frame.
    pub keyframe_start: bool,
    pub payload: Bytes,
}

/// The record every synthetic payload carries after its codec headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PayloadMark {
    pub source_id: u32,
    pub kind_tag: u8,
    /// Counts every packet of the source, audio and video together, from 0.
    pub counter: u64,
    /// Microseconds since the source started, at packetization.
    pub sent_at_micros: u64,
}

/// Produces the synthetic VP8 and Opus streams of one publisher.
#[derive(Debug)]
pub struct SyntheticSource {
    source_id: u32,
    counter: u64,
    video_seq: u16,
    audio_seq: u16,
    video_ts: u32,
    audio_ts: u32,
    frames_since_keyframe: u32,
    keyframe_wanted: bool,
}

impl SyntheticSource {
    /// `source_id` goes into every payload, so two publishers never produce the same bytes.
    /// The first video frame is a key frame.
    pub fn new(source_id: u32) -> Self {
        Self {
            source_id,
            counter: 0,
            // Start near the wrap so a forwarder that mishandles it shows up.
            video_seq: 65_500,
            audio_seq: 65_530,
            video_ts: u32::MAX - 3 * (VIDEO_CLOCK_RATE / VIDEO_FPS),
            audio_ts: 0x1234_5678,
            frames_since_keyframe: 0,
            keyframe_wanted: true,
        }
    }

    /// Makes the next video frame a key frame (after a PLI or FIR).
    pub fn request_keyframe(&mut self) {
        self.keyframe_wanted = true;
    }

    /// The packets of the next video frame, `elapsed` being the time since the source started.
    pub fn next_video_frame(&mut self, elapsed: Duration) -> Vec<SyntheticPacket> {
        let keyframe = self.keyframe_wanted || self.frames_since_keyframe >= KEYFRAME_EVERY_FRAMES;
        self.keyframe_wanted = false;
        self.frames_since_keyframe = if keyframe {
            1
        } else {
            self.frames_since_keyframe + 1
        };

        let count = if keyframe {
            KEYFRAME_PACKETS
        } else {
            DELTA_FRAME_PACKETS
        };
        let timestamp = self.video_ts;
        self.video_ts = self.video_ts.wrapping_add(VIDEO_CLOCK_RATE / VIDEO_FPS);

        (0..count)
            .map(|i| {
                let first = i == 0;
                let mut payload = BytesMut::with_capacity(1200);
                if first {
                    payload.put_u8(VP8_DESCRIPTOR_START);
                    put_vp8_frame_header(&mut payload, keyframe);
                } else {
                    payload.put_u8(VP8_DESCRIPTOR_CONTINUATION);
                }
                let counter = self.next_counter();
                self.put_mark(&mut payload, MediaKind::Video, counter, elapsed);
                // Sizes vary so a forwarder that mixes up lengths shows up too.
                let body_len = if keyframe { 900 } else { 300 } + (counter % 200) as usize;
                put_filler(&mut payload, counter, body_len);

                let sequence_number = self.video_seq;
                self.video_seq = self.video_seq.wrapping_add(1);
                SyntheticPacket {
                    kind: MediaKind::Video,
                    sequence_number,
                    timestamp,
                    marker: i + 1 == count,
                    keyframe_start: keyframe && first,
                    payload: payload.freeze(),
                }
            })
            .collect()
    }

    /// The next 20 ms Opus packet.
    pub fn next_audio_packet(&mut self, elapsed: Duration) -> SyntheticPacket {
        let mut payload = BytesMut::with_capacity(200);
        payload.put_u8(OPUS_TOC);
        let counter = self.next_counter();
        self.put_mark(&mut payload, MediaKind::Audio, counter, elapsed);
        put_filler(&mut payload, counter, 60 + (counter % 80) as usize);

        let packet = SyntheticPacket {
            kind: MediaKind::Audio,
            sequence_number: self.audio_seq,
            timestamp: self.audio_ts,
            marker: false,
            keyframe_start: false,
            payload: payload.freeze(),
        };
        self.audio_seq = self.audio_seq.wrapping_add(1);
        self.audio_ts = self
            .audio_ts
            .wrapping_add(AUDIO_CLOCK_RATE / 1000 * AUDIO_PACKET_DURATION.as_millis() as u32);
        packet
    }

    fn next_counter(&mut self) -> u64 {
        let counter = self.counter;
        self.counter += 1;
        counter
    }

    fn put_mark(&self, buf: &mut BytesMut, kind: MediaKind, counter: u64, elapsed: Duration) {
        buf.put_slice(MARK_MAGIC);
        buf.put_u32(self.source_id);
        buf.put_u8(kind.tag());
        buf.put_u64(counter);
        buf.put_u64(elapsed.as_micros() as u64);
    }
}

/// The 3-byte VP8 frame tag (RFC 6386 §9.1), plus start code and size for a key frame.
fn put_vp8_frame_header(buf: &mut BytesMut, keyframe: bool) {
    // Bit 0: P, the *inverse* key frame flag; bits 1-3 version 0; bit 4 show_frame;
    // bits 5-23 first partition size (a small made-up value).
    let first_partition_size: u32 = 64;
    let tag: u32 = u32::from(!keyframe) | (1 << 4) | (first_partition_size << 5);
    buf.put_u8(tag as u8);
    buf.put_u8((tag >> 8) as u8);
    buf.put_u8((tag >> 16) as u8);
    if keyframe {
        buf.put_slice(&VP8_START_CODE);
        // 14 bits of size, 2 bits of scale (0), little-endian.
        buf.put_u16_le(VIDEO_WIDTH);
        buf.put_u16_le(VIDEO_HEIGHT);
    }
}

fn put_filler(buf: &mut BytesMut, counter: u64, len: usize) {
    for i in 0..len {
        buf.put_u8((counter.wrapping_mul(31).wrapping_add(i as u64)) as u8);
    }
}

/// Reads the record a synthetic payload carries, wherever it sits after the codec headers.
pub fn parse_mark(payload: &[u8]) -> Option<PayloadMark> {
    let at = payload
        .windows(MARK_MAGIC.len())
        .position(|w| w == MARK_MAGIC)?;
    let rest = payload.get(at + MARK_MAGIC.len()..)?;
    if rest.len() < 4 + 1 + 8 + 8 {
        return None;
    }
    Some(PayloadMark {
        source_id: u32::from_be_bytes(rest[0..4].try_into().ok()?),
        kind_tag: rest[4],
        counter: u64::from_be_bytes(rest[5..13].try_into().ok()?),
        sent_at_micros: u64::from_be_bytes(rest[13..21].try_into().ok()?),
    })
}

/// What the VP8 payload descriptor and, on a frame's first packet, the frame tag say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Vp8Info {
    /// S: this packet starts a VP8 partition.
    pub start_of_partition: bool,
    /// PID: the partition index.
    pub partition_id: u8,
    /// From the frame tag (only when S=1 and PID=0): P bit 0, a key frame.
    pub keyframe: Option<bool>,
}

impl Vp8Info {
    /// True when the packet is the first of a key frame: S=1, PID=0, P=0.
    pub fn starts_keyframe(&self) -> bool {
        self.start_of_partition && self.partition_id == 0 && self.keyframe == Some(true)
    }
}

/// Parses an RTP VP8 payload (RFC 7741 §4.2), including the optional descriptor extensions.
pub fn parse_vp8(payload: &[u8]) -> Option<Vp8Info> {
    let first = *payload.first()?;
    let extended = first & 0x80 != 0;
    let start_of_partition = first & 0x10 != 0;
    let partition_id = first & 0x07;
    let mut at = 1;
    if extended {
        let ext = *payload.get(at)?;
        at += 1;
        let (has_picture_id, has_tl0, has_tid, has_key_idx) = (
            ext & 0x80 != 0,
            ext & 0x40 != 0,
            ext & 0x20 != 0,
            ext & 0x10 != 0,
        );
        if has_picture_id {
            let m = *payload.get(at)? & 0x80 != 0;
            at += if m { 2 } else { 1 };
        }
        if has_tl0 {
            at += 1;
        }
        if has_tid || has_key_idx {
            at += 1;
        }
    }
    let keyframe = if start_of_partition && partition_id == 0 {
        payload.get(at).map(|tag| tag & 0x01 == 0)
    } else {
        None
    };
    Some(Vp8Info {
        start_of_partition,
        partition_id,
        keyframe,
    })
}

/// Checks that `received` is a contiguous run of `sent`, in order, byte for byte, and returns the
/// index in `sent` where it starts. An empty `received` is an error: nothing to compare.
pub fn contiguous_run_of(sent: &[Bytes], received: &[Bytes]) -> Result<usize, String> {
    let first = received.first().ok_or("nothing received")?;
    let start = sent.iter().position(|s| s == first).ok_or_else(|| {
        format!(
            "the first received payload ({} bytes, mark {:?}) is not one the publisher sent",
            first.len(),
            parse_mark(first)
        )
    })?;
    for (i, got) in received.iter().enumerate() {
        let Some(want) = sent.get(start + i) else {
            return Err(format!(
                "received payload #{i} (mark {:?}) is past the end of what was sent ({} payloads from #{start})",
                parse_mark(got),
                sent.len() - start
            ));
        };
        if got != want {
            return Err(format!(
                "received payload #{i} differs from sent payload #{}: got {} bytes mark {:?}, want {} bytes mark {:?}",
                start + i,
                got.len(),
                parse_mark(got),
                want.len(),
                parse_mark(want)
            ));
        }
    }
    Ok(start)
}

/// Checks that every sequence number follows the one before it by exactly one (mod 2^16).
pub fn gap_free(sequence_numbers: &[u16]) -> Result<(), String> {
    for (i, pair) in sequence_numbers.windows(2).enumerate() {
        if pair[1] != pair[0].wrapping_add(1) {
            return Err(format!(
                "sequence number {} follows {} at packet #{} (of {})",
                pair[1],
                pair[0],
                i + 1,
                sequence_numbers.len()
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_frame_is_a_keyframe_and_later_ones_are_delta_frames() {
        let mut src = SyntheticSource::new(7);
        let key = src.next_video_frame(Duration::ZERO);
        assert_eq!(key.len(), KEYFRAME_PACKETS);
        let info = parse_vp8(&key[0].payload).unwrap();
        assert!(info.starts_keyframe());
        assert!(key[0].keyframe_start);
        assert_eq!(
            &key[0].payload[..7],
            &[0x10, 0x10, 0x08, 0x00, 0x9d, 0x01, 0x2a]
        );
        assert_eq!(key[1].payload[0], 0x00);
        assert!(!parse_vp8(&key[1].payload).unwrap().starts_keyframe());
        assert!(key.last().unwrap().marker && !key[0].marker);

        let delta = src.next_video_frame(Duration::from_millis(66));
        assert_eq!(delta.len(), DELTA_FRAME_PACKETS);
        let info = parse_vp8(&delta[0].payload).unwrap();
        assert_eq!(info.keyframe, Some(false));
        assert_eq!(delta[0].payload[1] & 1, 1);
        assert_eq!(
            delta[0].sequence_number,
            key[2].sequence_number.wrapping_add(1)
        );
        assert_eq!(delta[0].timestamp, key[0].timestamp.wrapping_add(6000));
    }

    #[test]
    fn keyframes_come_every_second_and_on_request() {
        let mut src = SyntheticSource::new(1);
        let keys: Vec<bool> = (0..31)
            .map(|_| src.next_video_frame(Duration::ZERO)[0].keyframe_start)
            .collect();
        assert!(keys[0] && keys[15] && keys[30]);
        assert_eq!(keys.iter().filter(|k| **k).count(), 3);
        src.request_keyframe();
        assert!(src.next_video_frame(Duration::ZERO)[0].keyframe_start);
    }

    #[test]
    fn payloads_are_unique_and_carry_their_mark() {
        let mut src = SyntheticSource::new(42);
        let mut all = Vec::new();
        for _ in 0..20 {
            all.extend(src.next_video_frame(Duration::from_millis(5)));
            all.push(src.next_audio_packet(Duration::from_millis(5)));
        }
        for (i, p) in all.iter().enumerate() {
            let mark = parse_mark(&p.payload).unwrap();
            assert_eq!(mark.counter, i as u64);
            assert_eq!(mark.source_id, 42);
            assert_eq!(mark.sent_at_micros, 5000);
        }
        let mut payloads: Vec<&Bytes> = all.iter().map(|p| &p.payload).collect();
        payloads.sort();
        payloads.dedup();
        assert_eq!(payloads.len(), all.len());
    }

    #[test]
    fn contiguous_run_detects_gaps_and_changes() {
        let sent: Vec<Bytes> = (0u8..10).map(|i| Bytes::from(vec![i; 3])).collect();
        assert_eq!(contiguous_run_of(&sent, &sent[3..7]), Ok(3));
        let mut gap = sent[3..7].to_vec();
        gap.remove(1);
        assert!(contiguous_run_of(&sent, &gap).is_err());
        let mut changed = sent[3..7].to_vec();
        changed[2] = Bytes::from_static(b"xyz");
        assert!(contiguous_run_of(&sent, &changed).is_err());
        assert!(contiguous_run_of(&sent, &[]).is_err());
    }

    #[test]
    fn gap_free_allows_wraparound_only() {
        assert!(gap_free(&[65534, 65535, 0, 1]).is_ok());
        assert!(gap_free(&[1, 2, 4]).is_err());
        assert!(gap_free(&[1, 1]).is_err());
    }

    #[test]
    fn vp8_descriptor_extensions_are_skipped() {
        // X=1, S=1, PID=0; I=1 with a 15-bit picture id; then a key frame tag.
        let payload = [0x90, 0x80, 0x81, 0x23, 0x10, 0x00, 0x00];
        assert!(parse_vp8(&payload).unwrap().starts_keyframe());
    }
}
