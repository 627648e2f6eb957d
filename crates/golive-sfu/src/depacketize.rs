//! RTP packets back into whole frames, for recording without decoding.
//!
//! One [`Depacketizer`] per track and source epoch (a broadcaster that reconnects starts a new
//! one). Packets go in as they come (late and reordered ones included); frames come out in
//! order, each with its RTP timestamp and whether a decoder can start at it.
//!
//! A recording must never hold a corrupt frame: a decoder that is fed one shows garbage until
//! the next keyframe, and some players stop. So the depacketizer orders packets by sequence
//! number, waits a bounded number of packets for a missing one (the publisher leg NACKs it and
//! the retransmission comes late), and when it gives a packet up as lost, video drops the frame
//! it belonged to and every frame after it until the next keyframe, and asks for one
//! ([`Depacketizer::poll_keyframe_request`]). Audio frames are one packet each and decode on
//! their own, so audio just goes on.
//!
//! Payload formats: VP8 (RFC 7741), VP9 (RFC 9628), H.264 (RFC 6184, as Annex B with start
//! codes), Opus (RFC 7587) and any other audio codec whose packet is one frame. AV1 is not
//! supported ([`Depacketizer::new`] refuses it).

use bytes::Bytes;
use std::collections::{BTreeMap, VecDeque};

use crate::codec::VideoCodec;
use crate::keyframe::is_keyframe_start;

/// Packets a video track may hold back waiting for a missing one before it is given up as lost.
/// At 150 packets a second (about 1.5 Mbit/s) that is two thirds of a second, longer than a NACK
/// round trip on any link a broadcaster can stream over.
pub const VIDEO_REORDER_PACKETS: usize = 100;
/// The same for audio: one packet per 20 ms, so one second.
pub const AUDIO_REORDER_PACKETS: usize = 50;
/// A frame larger than this is refused as broken (a 4K keyframe is well under 2 MB).
pub const MAX_FRAME_BYTES: usize = 8 * 1024 * 1024;

const H264_START_CODE: [u8; 4] = [0, 0, 0, 1];
const H264_STAP_A: u8 = 24;
const H264_FU_A: u8 = 28;

/// What a track carries, as far as framing goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TrackFormat {
    Video(VideoCodec),
    /// One packet is one frame (Opus, G.711).
    Audio,
}

/// One whole frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// The RTP timestamp of its packets.
    pub timestamp: u32,
    /// A decoder can start here (always true for audio).
    pub keyframe: bool,
    /// The codec's own bitstream: VP8/VP9 frames, H.264 Annex B access units, Opus packets.
    pub data: Vec<u8>,
}

/// What happened to the packets, for logs and metrics.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct DepacketizerStats {
    pub packets: u64,
    /// Packets that came after their place was given up (too late) or twice.
    pub packets_late_or_duplicate: u64,
    /// Packets given up as lost.
    pub packets_lost: u64,
    pub frames: u64,
    /// Frames not emitted: incomplete, or after a loss before the next keyframe.
    pub frames_dropped: u64,
}

#[derive(Debug)]
struct Pending {
    timestamp: u32,
    marker: bool,
    payload: Bytes,
}

/// The frame being put together.
#[derive(Debug)]
struct Assembly {
    timestamp: u32,
    keyframe: bool,
    data: Vec<u8>,
    /// A packet of it is missing, or its payload did not parse: never emitted.
    broken: bool,
}

#[derive(Debug)]
pub struct Depacketizer {
    format: TrackFormat,
    reorder_packets: usize,
    /// Packets not consumed yet, by extended sequence number.
    pending: BTreeMap<i64, Pending>,
    /// Highest extended sequence number seen and its 16-bit form.
    highest: Option<(i64, u16)>,
    /// The extended sequence number to consume next.
    next: Option<i64>,
    assembly: Option<Assembly>,
    /// Video: drop frames until a keyframe (at the start and after a loss).
    waiting_keyframe: bool,
    keyframe_wanted: bool,
    frames: VecDeque<Frame>,
    stats: DepacketizerStats,
}

impl Depacketizer {
    /// `None` for a format it cannot frame (AV1).
    pub fn new(format: TrackFormat) -> Option<Self> {
        let reorder_packets = match format {
            TrackFormat::Video(VideoCodec::Av1) => return None,
            TrackFormat::Video(_) => VIDEO_REORDER_PACKETS,
            TrackFormat::Audio => AUDIO_REORDER_PACKETS,
        };
        Some(Self {
            format,
            reorder_packets,
            pending: BTreeMap::new(),
            highest: None,
            next: None,
            assembly: None,
            waiting_keyframe: matches!(format, TrackFormat::Video(_)),
            keyframe_wanted: false,
            frames: VecDeque::new(),
            stats: DepacketizerStats::default(),
        })
    }

    pub fn stats(&self) -> &DepacketizerStats {
        &self.stats
    }

    /// One RTP packet of the track (the payload without the RTP header, padding removed).
    pub fn handle_packet(&mut self, seq: u16, timestamp: u32, marker: bool, payload: Bytes) {
        self.stats.packets += 1;
        let ext = match self.highest {
            None => i64::from(seq),
            Some((hext, hseq)) => hext + i64::from(seq.wrapping_sub(hseq) as i16),
        };
        if self.highest.is_none_or(|(h, _)| ext > h) {
            self.highest = Some((ext, seq));
        }
        let next = *self.next.get_or_insert(ext);
        if ext < next || self.pending.contains_key(&ext) {
            self.stats.packets_late_or_duplicate += 1;
            return;
        }
        self.pending.insert(
            ext,
            Pending {
                timestamp,
                marker,
                payload,
            },
        );
        self.drain(false);
    }

    /// The track ended: what is complete goes out, the rest is dropped.
    pub fn finish(&mut self) {
        self.drain(true);
        if let Some(a) = self.assembly.take() {
            // The last frame's marker packet never came (or it had none): complete only if
            // the packets before it were all there, which `broken` says.
            self.complete(a);
        }
    }

    /// The next whole frame, in order.
    pub fn poll_frame(&mut self) -> Option<Frame> {
        self.frames.pop_front()
    }

    /// Whether a keyframe should be asked of the broadcaster (once per loss or start).
    pub fn poll_keyframe_request(&mut self) -> bool {
        std::mem::take(&mut self.keyframe_wanted)
    }

    /// Consumes packets in order; gives the missing one up when too many wait behind it (or
    /// when `flush`ing).
    fn drain(&mut self, flush: bool) {
        loop {
            let Some(next) = self.next else { return };
            if let Some(p) = self.pending.remove(&next) {
                self.next = Some(next + 1);
                self.consume(p);
                continue;
            }
            let Some((&first, _)) = self.pending.first_key_value() else {
                return;
            };
            if !flush && self.pending.len() <= self.reorder_packets {
                return;
            }
            self.stats.packets_lost += (first - next) as u64;
            self.next = Some(first);
            self.on_loss();
        }
    }

    fn on_loss(&mut self) {
        if let Some(a) = self.assembly.as_mut() {
            a.broken = true;
        }
        if matches!(self.format, TrackFormat::Video(_)) {
            self.waiting_keyframe = true;
            self.keyframe_wanted = true;
        }
    }

    fn consume(&mut self, p: Pending) {
        let codec = match self.format {
            TrackFormat::Audio => {
                self.stats.frames += 1;
                self.frames.push_back(Frame {
                    timestamp: p.timestamp,
                    keyframe: true,
                    data: p.payload.to_vec(),
                });
                return;
            }
            TrackFormat::Video(c) => c,
        };
        // Without a marker on the last packet (some senders omit it), a new timestamp closes the
        // frame before.
        if self
            .assembly
            .as_ref()
            .is_some_and(|a| a.timestamp != p.timestamp)
            && let Some(a) = self.assembly.take()
        {
            self.complete(a);
        }
        let a = self.assembly.get_or_insert_with(|| Assembly {
            timestamp: p.timestamp,
            keyframe: is_keyframe_start(codec, &p.payload),
            data: Vec::new(),
            // The first packet must begin the frame, or its beginning was lost.
            broken: !begins_frame(codec, &p.payload),
        });
        if !a.broken
            && (append(codec, &p.payload, &mut a.data).is_none() || a.data.len() > MAX_FRAME_BYTES)
        {
            a.broken = true;
        }
        if p.marker
            && let Some(a) = self.assembly.take()
        {
            self.complete(a);
        }
    }

    fn complete(&mut self, a: Assembly) {
        if a.broken || a.data.is_empty() {
            // An incomplete frame breaks the frames that reference it.
            self.stats.frames_dropped += 1;
            self.waiting_keyframe = true;
            self.keyframe_wanted = true;
            return;
        }
        if self.waiting_keyframe && !a.keyframe {
            self.stats.frames_dropped += 1;
            // A track that starts mid-GOP asks once; after a loss, `on_loss` asked already.
            if self.stats.frames == 0 && self.stats.frames_dropped == 1 {
                self.keyframe_wanted = true;
            }
            return;
        }
        self.waiting_keyframe = false;
        self.stats.frames += 1;
        self.frames.push_back(Frame {
            timestamp: a.timestamp,
            keyframe: a.keyframe,
            data: a.data,
        });
    }
}

/// Whether a packet's payload begins a frame.
fn begins_frame(codec: VideoCodec, p: &[u8]) -> bool {
    let Some(&first) = p.first() else {
        return false;
    };
    match codec {
        // S set, partition 0.
        VideoCodec::Vp8 => first & 0x10 != 0 && first & 0x07 == 0,
        // B set.
        VideoCodec::Vp9 => first & 0x08 != 0,
        VideoCodec::H264 => match first & 0x1f {
            H264_FU_A => p.get(1).is_some_and(|fu| fu & 0x80 != 0),
            1..=H264_STAP_A => true,
            _ => false,
        },
        VideoCodec::Av1 => false,
    }
}

/// Appends a packet's share of the frame to `out`; `None` when the payload does not parse.
fn append(codec: VideoCodec, p: &[u8], out: &mut Vec<u8>) -> Option<()> {
    match codec {
        VideoCodec::Vp8 => out.extend_from_slice(p.get(vp8_descriptor_len(p)?..)?),
        VideoCodec::Vp9 => out.extend_from_slice(p.get(vp9_descriptor_len(p)?..)?),
        VideoCodec::H264 => h264(p, out)?,
        VideoCodec::Av1 => return None,
    }
    Some(())
}

/// RFC 7741 §4.2: X|R|N|S|R|PID, then I|L|T|K, PictureID (7 or 15 bits), TL0PICIDX, TID|Y|KEYIDX.
fn vp8_descriptor_len(p: &[u8]) -> Option<usize> {
    let first = *p.first()?;
    let mut at = 1;
    if first & 0x80 != 0 {
        let x = *p.get(at)?;
        at += 1;
        if x & 0x80 != 0 {
            at += if *p.get(at)? & 0x80 != 0 { 2 } else { 1 };
        }
        if x & 0x40 != 0 {
            at += 1;
        }
        if x & 0x30 != 0 {
            at += 1;
        }
    }
    (at <= p.len()).then_some(at)
}

/// RFC 9628 §4.2: I|P|L|F|B|E|V|Z, PictureID, layer indices (+ TL0PICIDX in non-flexible mode),
/// reference indices (flexible mode, inter-predicted), then the scalability structure.
fn vp9_descriptor_len(p: &[u8]) -> Option<usize> {
    let first = *p.first()?;
    let (i, pbit, l, f, v) = (
        first & 0x80 != 0,
        first & 0x40 != 0,
        first & 0x20 != 0,
        first & 0x10 != 0,
        first & 0x02 != 0,
    );
    let mut at = 1;
    if i {
        at += if *p.get(at)? & 0x80 != 0 { 2 } else { 1 };
    }
    if l {
        at += if f { 1 } else { 2 };
    }
    if f && pbit {
        // Up to three P_DIFF bytes, each with N set when another follows.
        for _ in 0..3 {
            let d = *p.get(at)?;
            at += 1;
            if d & 0x01 == 0 {
                break;
            }
        }
    }
    if v {
        let ss = *p.get(at)?;
        at += 1;
        let spatial_layers = usize::from(ss >> 5) + 1;
        if ss & 0x10 != 0 {
            at += 4 * spatial_layers;
        }
        if ss & 0x08 != 0 {
            let groups = *p.get(at)?;
            at += 1;
            for _ in 0..groups {
                let g = *p.get(at)?;
                at += 1 + usize::from((g >> 2) & 0x03);
            }
        }
    }
    (at <= p.len()).then_some(at)
}

/// RFC 6184 §5.6-5.8 (packetization modes 0 and 1) into Annex B.
fn h264(p: &[u8], out: &mut Vec<u8>) -> Option<()> {
    let first = *p.first()?;
    match first & 0x1f {
        1..=23 => {
            out.extend_from_slice(&H264_START_CODE);
            out.extend_from_slice(p);
        }
        H264_STAP_A => {
            let mut at = 1;
            while at < p.len() {
                let size = usize::from(u16::from_be_bytes([*p.get(at)?, *p.get(at + 1)?]));
                let nal = p.get(at + 2..at + 2 + size)?;
                if nal.is_empty() {
                    return None;
                }
                out.extend_from_slice(&H264_START_CODE);
                out.extend_from_slice(nal);
                at += 2 + size;
            }
        }
        H264_FU_A => {
            let fu = *p.get(1)?;
            let body = p.get(2..)?;
            if fu & 0x80 != 0 {
                out.extend_from_slice(&H264_START_CODE);
                out.push((first & 0xe0) | (fu & 0x1f));
            } else if out.is_empty() {
                return None;
            }
            out.extend_from_slice(body);
        }
        _ => return None,
    }
    Some(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A VP8 frame of `n` packets: descriptor, then (first packet) the frame tag.
    fn vp8_frame(key: bool, n: usize, tag: u8) -> Vec<Bytes> {
        (0..n)
            .map(|i| {
                let mut p = vec![if i == 0 { 0x10 } else { 0x00 }];
                if i == 0 {
                    p.extend_from_slice(&[u8::from(!key), 0, 0]);
                }
                p.extend_from_slice(&[tag, i as u8]);
                Bytes::from(p)
            })
            .collect()
    }

    /// Feeds frames as packets (seq from `seq0`, 3000 ticks apart), skipping the packets whose
    /// index is in `lose`; returns the frames out, by their tag byte.
    fn run(frames: &[(bool, usize)], lose: &[usize], seq0: u16) -> (Vec<(u8, bool)>, Depacketizer) {
        let mut d = Depacketizer::new(TrackFormat::Video(VideoCodec::Vp8)).unwrap();
        let mut seq = seq0;
        let mut index = 0;
        for (f, &(key, n)) in frames.iter().enumerate() {
            let packets = vp8_frame(key, n, f as u8);
            for (i, p) in packets.iter().enumerate() {
                if !lose.contains(&index) {
                    d.handle_packet(seq, 1000 + 3000 * f as u32, i + 1 == n, p.clone());
                }
                index += 1;
                seq = seq.wrapping_add(1);
            }
        }
        d.finish();
        let mut out = Vec::new();
        while let Some(f) = d.poll_frame() {
            // The tag byte sits after the frame header (3 bytes) on the first packet.
            let tag = if f.data.len() > 3 { f.data[3] } else { 0xff };
            out.push((tag, f.keyframe));
        }
        (out, d)
    }

    #[test]
    fn whole_frames_come_out_without_payload_descriptors() {
        let mut d = Depacketizer::new(TrackFormat::Video(VideoCodec::Vp8)).unwrap();
        for (i, p) in vp8_frame(true, 3, 7).into_iter().enumerate() {
            d.handle_packet(100 + i as u16, 90, i == 2, p);
        }
        let f = d.poll_frame().unwrap();
        assert_eq!(f.timestamp, 90);
        assert!(f.keyframe);
        assert_eq!(f.data, vec![0, 0, 0, 7, 0, 7, 1, 7, 2]);
        assert!(d.poll_frame().is_none());
    }

    #[test]
    fn reordered_packets_still_make_whole_frames() {
        let mut d = Depacketizer::new(TrackFormat::Video(VideoCodec::Vp8)).unwrap();
        let p = vp8_frame(true, 3, 1);
        d.handle_packet(65535, 5, false, p[0].clone());
        d.handle_packet(1, 5, true, p[2].clone());
        assert!(d.poll_frame().is_none(), "waits for the missing packet");
        d.handle_packet(0, 5, false, p[1].clone());
        assert_eq!(
            d.poll_frame().unwrap().data,
            vec![0, 0, 0, 1, 0, 1, 1, 1, 2]
        );
        assert_eq!(d.stats().packets_lost, 0);
    }

    #[test]
    fn a_lost_packet_drops_frames_until_the_next_keyframe_and_asks_for_one() {
        // Frames: K D D K D; packet 4 (the second packet of frame 1) is lost.
        let frames = [(true, 2), (false, 2), (false, 2), (true, 2), (false, 2)];
        let (out, mut d) = run(&frames, &[3], 10);
        assert_eq!(out, vec![(0, true), (3, true), (4, false)]);
        assert_eq!(d.stats().packets_lost, 1);
        assert_eq!(d.stats().frames_dropped, 2);
        assert!(d.poll_keyframe_request());
        assert!(!d.poll_keyframe_request(), "asked once per loss");
    }

    #[test]
    fn a_lost_frame_start_is_never_emitted_as_a_frame() {
        // The first packet of frame 1 is lost: its rest must not pass for a frame.
        let frames = [(true, 2), (false, 3), (true, 1)];
        let (out, _) = run(&frames, &[2], 0);
        assert_eq!(out, vec![(0, true), (2, true)]);
    }

    #[test]
    fn a_stream_that_starts_mid_gop_waits_for_a_keyframe() {
        let frames = [(false, 1), (false, 1), (true, 1), (false, 1)];
        let (out, mut d) = run(&frames, &[], 0);
        assert_eq!(out, vec![(2, true), (3, false)]);
        assert!(d.poll_keyframe_request());
    }

    #[test]
    fn loss_is_declared_only_after_the_reorder_window() {
        let mut d = Depacketizer::new(TrackFormat::Audio).unwrap();
        d.handle_packet(0, 0, false, Bytes::from_static(b"a"));
        for s in 2..(2 + AUDIO_REORDER_PACKETS as u16) {
            d.handle_packet(s, u32::from(s) * 960, false, Bytes::from_static(b"b"));
        }
        assert_eq!(d.stats().packets_lost, 0);
        assert_eq!(d.poll_frame().unwrap().data, b"a");
        assert!(d.poll_frame().is_none());
        d.handle_packet(
            2 + AUDIO_REORDER_PACKETS as u16,
            0,
            false,
            Bytes::from_static(b"c"),
        );
        assert_eq!(d.stats().packets_lost, 1);
        let n = std::iter::from_fn(|| d.poll_frame()).count();
        assert_eq!(n, AUDIO_REORDER_PACKETS + 1);
        // Audio goes on after a loss; nothing to ask for.
        assert!(!d.poll_keyframe_request());
        // The packet given up on arrives after all: too late.
        d.handle_packet(1, 960, false, Bytes::from_static(b"z"));
        assert_eq!(d.stats().packets_late_or_duplicate, 1);
        assert!(d.poll_frame().is_none());
    }

    #[test]
    fn duplicates_are_ignored() {
        let mut d = Depacketizer::new(TrackFormat::Audio).unwrap();
        d.handle_packet(7, 0, false, Bytes::from_static(b"a"));
        d.handle_packet(7, 0, false, Bytes::from_static(b"a"));
        assert_eq!(std::iter::from_fn(|| d.poll_frame()).count(), 1);
        assert_eq!(d.stats().packets_late_or_duplicate, 1);
    }

    #[test]
    fn h264_single_stap_a_and_fu_a_become_annex_b() {
        let mut d = Depacketizer::new(TrackFormat::Video(VideoCodec::H264)).unwrap();
        // STAP-A: SPS (0x67 ..) and PPS (0x68 ..); then an IDR in two FU-A fragments.
        d.handle_packet(
            1,
            9,
            false,
            Bytes::from_static(&[0x78, 0, 2, 0x67, 0x42, 0, 2, 0x68, 0xce]),
        );
        d.handle_packet(2, 9, false, Bytes::from_static(&[0x7c, 0x85, 0xaa]));
        d.handle_packet(3, 9, true, Bytes::from_static(&[0x7c, 0x45, 0xbb]));
        let f = d.poll_frame().unwrap();
        assert!(f.keyframe);
        assert_eq!(
            f.data,
            vec![
                0, 0, 0, 1, 0x67, 0x42, 0, 0, 0, 1, 0x68, 0xce, 0, 0, 0, 1, 0x65, 0xaa, 0xbb
            ]
        );
        // A single-NAL delta frame.
        d.handle_packet(4, 18, true, Bytes::from_static(&[0x41, 0x9a]));
        assert_eq!(d.poll_frame().unwrap().data, vec![0, 0, 0, 1, 0x41, 0x9a]);
        // A bogus STAP-A size breaks the frame instead of running off the end.
        d.handle_packet(5, 27, true, Bytes::from_static(&[0x78, 0xff, 0xff, 0x41]));
        assert!(d.poll_frame().is_none());
        assert!(d.poll_keyframe_request());
    }

    #[test]
    fn vp9_descriptors_are_stripped() {
        let mut d = Depacketizer::new(TrackFormat::Video(VideoCodec::Vp9)).unwrap();
        // I, B, V with a 15-bit picture id and a scalability structure: one layer with its
        // size, no groups. Then the payload bytes 0xa1 0xa2.
        let first = [0x8a, 0x80, 0x01, 0x10, 0x01, 0x40, 0x00, 0xf0, 0xa1];
        d.handle_packet(1, 3, false, Bytes::copy_from_slice(&first));
        // E, with a 7-bit picture id.
        d.handle_packet(2, 3, true, Bytes::from_static(&[0x84, 0x01, 0xa2]));
        let f = d.poll_frame().unwrap();
        assert!(f.keyframe);
        assert_eq!(f.data, vec![0xa1, 0xa2]);
    }

    #[test]
    fn av1_is_refused() {
        assert!(Depacketizer::new(TrackFormat::Video(VideoCodec::Av1)).is_none());
    }

    #[test]
    fn garbage_never_panics() {
        for codec in [VideoCodec::Vp8, VideoCodec::Vp9, VideoCodec::H264] {
            let mut d = Depacketizer::new(TrackFormat::Video(codec)).unwrap();
            for i in 0..2000u32 {
                let len = (i * 7 % 13) as usize;
                let p: Vec<u8> = (0..len).map(|j| (i * 31 + j as u32 * 17) as u8).collect();
                d.handle_packet(
                    (i * 3 % 7) as u16 + i as u16,
                    i / 3,
                    i % 5 == 0,
                    Bytes::from(p),
                );
                while d.poll_frame().is_some() {}
            }
            d.finish();
        }
    }
}
