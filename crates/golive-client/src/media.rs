//! The synthetic broadcast: what a publisher puts in each RTP payload, and how a viewer checks
//! what it got without decoding anything.
//!
//! Every payload starts like the real codec (a VP8 payload descriptor and, on a frame's first
//! packet, the VP8 frame tag; an Opus TOC byte), so the server's keyframe detection sees real
//! keyframes. Then comes filler, and every payload ends with a [`Stamp`]: which source made it,
//! what kind of packet it is, its number among the source's packets and its send time. The
//! filler is a function of the stamp and the byte's position, so a viewer can prove a payload is
//! byte for byte what the publisher made ([`Stamp::matches`]) without either side keeping the
//! bytes, or check it cheaply on a hot path ([`Stamp::matches_quickly`]).
//!
//! With VP8 temporal layers ([`MediaPlan::temporal_layers`] 2 or 3), every video packet carries
//! the extended descriptor ([`Vp8Temporal`]: picture id, TL0PICIDX, TID, layer sync) as
//! libwebrtc sends it. A server that drops temporal layers rewrites the picture id and
//! TL0PICIDX for each viewer, so the checks skip those bytes; the stamp records the TID and the
//! sync bit, which no server may change.
//!
//! Nothing here reads a clock: a [`SyntheticSource`] is told the time, and its [`Clock`] maps
//! that time to the send time written into stamps.

use bytes::{BufMut, Bytes, BytesMut};
use rtc::rtp::codec::vp8::Vp8Packet;
use rtc::rtp::packetizer::Depacketizer;
use std::time::{Duration, Instant, SystemTime};

/// VP8 RTP clock rate (RFC 7741).
pub const VIDEO_CLOCK_RATE: u32 = 90_000;
/// Opus RTP clock rate (RFC 7587), always 48 kHz.
pub const AUDIO_CLOCK_RATE: u32 = 48_000;
/// One Opus packet every 20 ms.
pub const AUDIO_PACKET_INTERVAL: Duration = Duration::from_millis(20);
pub const AUDIO_PACKETS_PER_S: u32 = 50;
/// RTP timestamp ticks of one audio packet.
const AUDIO_TICKS_PER_PACKET: u64 = AUDIO_CLOCK_RATE as u64 / AUDIO_PACKETS_PER_S as u64;
/// Largest RTP payload: with the RTP header, the SRTP tag and UDP/IP it stays well under a
/// 1500-byte MTU, as a browser's packets do.
pub const MAX_PAYLOAD_BYTES: usize = 1_200;
/// A keyframe is this many times the size of a delta frame (a calm camera scene).
pub const KEYFRAME_SIZE_RATIO: u64 = 4;
/// The picture size written into keyframes.
pub const VIDEO_WIDTH: u16 = 640;
pub const VIDEO_HEIGHT: u16 = 360;

/// Identifies a payload a [`SyntheticSource`] made ("GLV2").
pub const STAMP_MAGIC: u32 = 0x474c_5632;
/// magic (4) + source (4) + kind (1) + counter (8) + send time (8).
pub const STAMP_BYTES: usize = 25;

/// VP8 frame tag (RFC 6386 §9.1): bit 0 the *inverse* keyframe flag, bit 4 show_frame, then the
/// first partition size; a keyframe adds the start code and the picture size.
const VP8_KEYFRAME_TAG: [u8; 3] = [0x10, 0x02, 0x00];
const VP8_DELTA_TAG: [u8; 3] = [0x11, 0x02, 0x00];
const VP8_START_CODE: [u8; 3] = [0x9d, 0x01, 0x2a];
/// Opus TOC byte: config 31 (CELT fullband 20 ms), stereo, one frame.
const OPUS_TOC: u8 = 0xfc;
/// VP8 payload descriptor (RFC 7741 §4.2). Without temporal layers it is one byte: S=1 on a
/// frame's first packet, PID=0. With them, every packet carries the extended descriptor, as
/// libwebrtc sends it: byte 0 X=1 (and S), byte 1 I, L and T set (K clear), a 15-bit picture id
/// (M=1), TL0PICIDX, then TID and Y.
const VP8_START: u8 = 0x10;
const VP8_EXTENDED: u8 = 0x80;
const VP8_HAS_PICTURE_ID_TL0_TID: u8 = 0xe0;
const VP8_PICTURE_ID_LONG: u8 = 0x80;
const VP8_EXTENDED_DESCRIPTOR_BYTES: usize = 6;
/// Where the bytes a forwarder may rewrite sit in the extended descriptor: from the picture id
/// (two bytes, of which the M bit must stay) through TL0PICIDX, up to the TID and Y byte.
const VP8_PICTURE_ID_AT: usize = 2;
const VP8_TID_Y_AT: usize = 5;
/// Picture ids are 15 bits (RFC 7741 §4.2, M=1).
pub const PICTURE_ID_MODULUS: u16 = 1 << 15;
/// The first picture id and TL0PICIDX of a source with temporal layers: near their wraps (2^15
/// and 2^8), so a forwarder that mishandles either shows up within seconds.
pub const FIRST_PICTURE_ID: u16 = 32_700;
pub const FIRST_TL0_PIC_IDX: u8 = 250;
/// The most temporal layers a [`MediaPlan`] may ask for (L1T3, as browsers send).
pub const MAX_TEMPORAL_LAYERS: u8 = 3;
/// The longest codec header: extended descriptor, frame tag, start code, width, height.
const MAX_HEADER_BYTES: usize = VP8_EXTENDED_DESCRIPTOR_BYTES + 10;

/// Audio or video.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MediaKind {
    Audio,
    Video,
}

/// What kind of packet a payload is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PayloadKind {
    Audio,
    /// The first packet of a VP8 frame.
    VideoFrameStart {
        keyframe: bool,
    },
    /// Any later packet of a VP8 frame.
    VideoContinuation,
}

impl PayloadKind {
    pub fn media(self) -> MediaKind {
        match self {
            PayloadKind::Audio => MediaKind::Audio,
            _ => MediaKind::Video,
        }
    }

    fn code(self) -> u8 {
        match self {
            PayloadKind::Audio => 0,
            PayloadKind::VideoContinuation => 1,
            PayloadKind::VideoFrameStart { keyframe: false } => 2,
            PayloadKind::VideoFrameStart { keyframe: true } => 3,
        }
    }

    fn from_code(code: u8) -> Option<Self> {
        Some(match code {
            0 => PayloadKind::Audio,
            1 => PayloadKind::VideoContinuation,
            2 => PayloadKind::VideoFrameStart { keyframe: false },
            3 => PayloadKind::VideoFrameStart { keyframe: true },
            _ => return None,
        })
    }
}

/// A VP8 frame's place among temporal layers, as its payload descriptor carries it (RFC 7741
/// §4.2): the picture id (15 bits), TL0PICIDX (the running index of the base-layer frames, which
/// a frame of a higher layer shares with the base frame it follows), the temporal layer (TID)
/// and the layer-sync bit Y (the frame depends on base-layer frames only).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Vp8Temporal {
    pub picture_id: u16,
    pub tl0_pic_idx: u8,
    pub tid: u8,
    pub layer_sync: bool,
}

impl Vp8Temporal {
    /// What a stamp keeps of it: the fields no forwarder may change.
    pub fn tag(self) -> TemporalTag {
        TemporalTag {
            tid: self.tid,
            layer_sync: self.layer_sync,
        }
    }

    /// Reads the descriptor of a VP8 RTP payload; `None` unless it carries a picture id,
    /// TL0PICIDX and TID (I, L and T set), as a stream with temporal layers does.
    pub fn read(payload: &[u8]) -> Option<Self> {
        let &b0 = payload.first()?;
        if b0 & VP8_EXTENDED == 0 {
            return None;
        }
        let &b1 = payload.get(1)?;
        // I, L and T; K (a key index, sharing T's byte) alone makes no temporal layer.
        if b1 & VP8_HAS_PICTURE_ID_TL0_TID != VP8_HAS_PICTURE_ID_TL0_TID {
            return None;
        }
        let mut at = 2;
        let &p0 = payload.get(at)?;
        let picture_id = if p0 & VP8_PICTURE_ID_LONG != 0 {
            at += 2;
            u16::from_be_bytes([p0 & 0x7f, *payload.get(at - 1)?])
        } else {
            at += 1;
            u16::from(p0)
        };
        let &tl0_pic_idx = payload.get(at)?;
        let &tk = payload.get(at + 1)?;
        Some(Self {
            picture_id,
            tl0_pic_idx,
            tid: tk >> 6,
            layer_sync: tk & 0x20 != 0,
        })
    }
}

/// The part of a packet's [`Vp8Temporal`] that its stamp records: a forwarder that drops
/// temporal layers rewrites picture ids and TL0PICIDX, never the layer or the sync bit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TemporalTag {
    pub tid: u8,
    pub layer_sync: bool,
}

/// The codec header of a payload of `kind`: its bytes, and how many of them count. With a
/// temporal tag (video only), the extended descriptor carries `picture_id` and `tl0_pic_idx`.
fn header(
    kind: PayloadKind,
    temporal: Option<TemporalTag>,
    picture_id: u16,
    tl0_pic_idx: u8,
) -> ([u8; MAX_HEADER_BYTES], usize) {
    let mut h = [0u8; MAX_HEADER_BYTES];
    let mut put = |at: usize, bytes: &[u8]| {
        h[at..at + bytes.len()].copy_from_slice(bytes);
        at + bytes.len()
    };
    let descriptor = |start: bool| -> ([u8; VP8_EXTENDED_DESCRIPTOR_BYTES], usize) {
        let s = if start { VP8_START } else { 0 };
        match temporal {
            None => ([s, 0, 0, 0, 0, 0], 1),
            Some(t) => {
                let pid = (picture_id % PICTURE_ID_MODULUS).to_be_bytes();
                (
                    [
                        VP8_EXTENDED | s,
                        VP8_HAS_PICTURE_ID_TL0_TID,
                        VP8_PICTURE_ID_LONG | pid[0],
                        pid[1],
                        tl0_pic_idx,
                        (t.tid & 0x03) << 6 | u8::from(t.layer_sync) << 5,
                    ],
                    VP8_EXTENDED_DESCRIPTOR_BYTES,
                )
            }
        }
    };
    let len = match kind {
        PayloadKind::Audio => put(0, &[OPUS_TOC]),
        PayloadKind::VideoContinuation => {
            let (d, n) = descriptor(false);
            put(0, &d[..n])
        }
        PayloadKind::VideoFrameStart { keyframe: false } => {
            let (d, n) = descriptor(true);
            let at = put(0, &d[..n]);
            put(at, &VP8_DELTA_TAG)
        }
        PayloadKind::VideoFrameStart { keyframe: true } => {
            let (d, n) = descriptor(true);
            let at = put(0, &d[..n]);
            let at = put(at, &VP8_KEYFRAME_TAG);
            let at = put(at, &VP8_START_CODE);
            // 14 bits of size, 2 bits of scale (0), little-endian.
            let at = put(at, &VIDEO_WIDTH.to_le_bytes());
            put(at, &VIDEO_HEIGHT.to_le_bytes())
        }
    };
    (h, len)
}

/// Send times on the wire: nanoseconds since the Unix epoch, taken once from the wall clock and
/// advanced by the monotonic clock, so a wall-clock step during a run changes nothing, and
/// processes on one host agree (receive time minus send time is the one-way latency).
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    epoch: Instant,
    epoch_wall_ns: u64,
}

impl Clock {
    /// A clock on which `epoch` is `epoch_wall_ns` (a simulation passes its own start and 0).
    pub fn new(epoch: Instant, epoch_wall_ns: u64) -> Self {
        Self {
            epoch,
            epoch_wall_ns,
        }
    }

    /// The system's wall clock, now: for drivers that run in real time.
    pub fn system() -> Self {
        let wall = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default();
        Self::new(Instant::now(), wall.as_nanos() as u64)
    }

    /// The stamp for a packet sent at `at`.
    pub fn stamp_ns(&self, at: Instant) -> u64 {
        self.epoch_wall_ns + at.saturating_duration_since(self.epoch).as_nanos() as u64
    }

    /// When a stamp says its packet was sent, on this clock; `None` when that is out of reach
    /// of `Instant` (a stamp from long before this process).
    pub fn instant_of(&self, stamp_ns: u64) -> Option<Instant> {
        if stamp_ns >= self.epoch_wall_ns {
            self.epoch
                .checked_add(Duration::from_nanos(stamp_ns - self.epoch_wall_ns))
        } else {
            self.epoch
                .checked_sub(Duration::from_nanos(self.epoch_wall_ns - stamp_ns))
        }
    }
}

/// What ends every synthetic payload. Two packets have the same stamp only if they are the same
/// packet of the same source.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Stamp {
    /// The source that made it (one per publisher).
    pub source_id: u32,
    pub kind: PayloadKind,
    /// A video packet's temporal layer and sync bit, when its source sends temporal layers
    /// (then its payload has the extended VP8 descriptor).
    pub temporal: Option<TemporalTag>,
    /// Its number among the source's packets, audio and video together, from 0.
    pub counter: u64,
    /// The send time ([`Clock::stamp_ns`]).
    pub sent_ns: u64,
}

/// The stamp's kind byte: the [`PayloadKind`] code in bits 0-1; with a temporal tag, bit 7 set,
/// the TID in bits 5-6 and Y in bit 4. Without one the byte is the bare code, as it always was.
const KIND_TEMPORAL: u8 = 0x80;
const KIND_CODE_MASK: u8 = 0x03;
const KIND_TID_SHIFT: u8 = 5;
const KIND_SYNC: u8 = 0x10;

impl Stamp {
    /// Reads the stamp at the end of `payload`; `None` if the payload is not ours.
    pub fn read(payload: &[u8]) -> Option<Self> {
        let at = payload.len().checked_sub(STAMP_BYTES)?;
        let s = &payload[at..];
        if u32::from_be_bytes(s[0..4].try_into().ok()?) != STAMP_MAGIC {
            return None;
        }
        let (kind, temporal) = Self::decode_kind(s[8])?;
        Some(Self {
            source_id: u32::from_be_bytes(s[4..8].try_into().ok()?),
            kind,
            temporal,
            counter: u64::from_be_bytes(s[9..17].try_into().ok()?),
            sent_ns: u64::from_be_bytes(s[17..25].try_into().ok()?),
        })
    }

    fn kind_byte(&self) -> u8 {
        match self.temporal {
            None => self.kind.code(),
            Some(t) => {
                KIND_TEMPORAL
                    | (t.tid & 0x03) << KIND_TID_SHIFT
                    | if t.layer_sync { KIND_SYNC } else { 0 }
                    | self.kind.code()
            }
        }
    }

    fn decode_kind(b: u8) -> Option<(PayloadKind, Option<TemporalTag>)> {
        if b & KIND_TEMPORAL == 0 {
            return Some((PayloadKind::from_code(b)?, None));
        }
        let kind = PayloadKind::from_code(b & KIND_CODE_MASK)?;
        let unused = !(KIND_TEMPORAL | 0x03 << KIND_TID_SHIFT | KIND_SYNC | KIND_CODE_MASK);
        if kind == PayloadKind::Audio || b & unused != 0 {
            return None;
        }
        let tag = TemporalTag {
            tid: (b >> KIND_TID_SHIFT) & 0x03,
            layer_sync: b & KIND_SYNC != 0,
        };
        Some((kind, Some(tag)))
    }

    fn put(&self, b: &mut BytesMut) {
        b.put_u32(STAMP_MAGIC);
        b.put_u32(self.source_id);
        b.put_u8(self.kind_byte());
        b.put_u64(self.counter);
        b.put_u64(self.sent_ns);
    }

    /// The filler of this packet's payload depends on the source and the counter, so no two
    /// packets share it.
    fn filler_seed(&self) -> u32 {
        self.source_id.rotate_left(16)
            ^ (self.counter as u32).wrapping_mul(0x85eb_ca6b)
            ^ (self.counter >> 32) as u32
    }

    /// Whether the codec header at the start of `payload` is this stamp's. With the extended
    /// descriptor, the picture id and TL0PICIDX are a forwarder's to rewrite (it renumbers
    /// them for each viewer when it drops temporal layers): only their width (the M bit) must
    /// stay. Every other byte must be the publisher's.
    fn header_matches(&self, payload: &[u8], header: &[u8]) -> bool {
        if self.temporal.is_none() {
            return payload[..header.len()] == *header;
        }
        payload[..VP8_PICTURE_ID_AT] == header[..VP8_PICTURE_ID_AT]
            && payload[VP8_PICTURE_ID_AT] & VP8_PICTURE_ID_LONG != 0
            && payload[VP8_TID_Y_AT..header.len()] == header[VP8_TID_Y_AT..]
    }

    /// Whether `payload` is, byte for byte, the payload of this stamp's packet (but for the
    /// picture id and TL0PICIDX of an extended VP8 descriptor, which forwarders may rewrite).
    pub fn matches(&self, payload: &[u8]) -> bool {
        let (header, header_len) = header(self.kind, self.temporal, 0, 0);
        let Some(body_end) = payload.len().checked_sub(STAMP_BYTES) else {
            return false;
        };
        if body_end < header_len || !self.header_matches(payload, &header[..header_len]) {
            return false;
        }
        let seed = self.filler_seed();
        let filler_ok = (header_len..body_end).all(|i| payload[i] == filler(seed, i));
        filler_ok && Stamp::read(payload) == Some(*self)
    }

    /// A cheap check for hot paths: the stamp, the first byte (and with the extended VP8
    /// descriptor, the TID and Y byte) and the last filler byte. SRTP authentication already
    /// vouches for the bytes on the wire; this catches a server that cuts or mixes up
    /// payloads.
    pub fn matches_quickly(&self, payload: &[u8]) -> bool {
        let Some(body_end) = payload.len().checked_sub(STAMP_BYTES) else {
            return false;
        };
        let (header, header_len) = header(self.kind, self.temporal, 0, 0);
        if body_end < header_len || payload.first() != header.first() {
            return false;
        }
        if self.temporal.is_some() && payload[VP8_TID_Y_AT] != header[VP8_TID_Y_AT] {
            return false;
        }
        let filler_ok = body_end == header_len
            || payload[body_end - 1] == filler(self.filler_seed(), body_end - 1);
        filler_ok && Stamp::read(payload) == Some(*self)
    }
}

/// The filler byte at position `i` of a payload: cheap to make and to check, different at every
/// position and for every seed.
fn filler(seed: u32, i: usize) -> u8 {
    ((i as u32).wrapping_mul(0x9e37_79b1).wrapping_add(seed) >> 24) as u8
}

/// The payload of `stamp`'s packet, `len` bytes long (at least its header and the stamp). A
/// stamp with a temporal tag gets picture id 0 and TL0PICIDX 0: see [`payload_with_ids`].
pub fn payload(len: usize, stamp: Stamp) -> Bytes {
    payload_with_ids(len, stamp, 0, 0)
}

/// The payload of `stamp`'s packet, `len` bytes long; with a temporal tag in the stamp, its
/// extended VP8 descriptor carries `picture_id` (15 bits) and `tl0_pic_idx`.
pub fn payload_with_ids(len: usize, stamp: Stamp, picture_id: u16, tl0_pic_idx: u8) -> Bytes {
    let mut b = BytesMut::with_capacity(len.max(MAX_HEADER_BYTES + STAMP_BYTES));
    let (header, header_len) = header(stamp.kind, stamp.temporal, picture_id, tl0_pic_idx);
    b.put_slice(&header[..header_len]);
    let body_end = len.max(b.len() + STAMP_BYTES) - STAMP_BYTES;
    let seed = stamp.filler_seed();
    for i in b.len()..body_end {
        b.put_u8(filler(seed, i));
    }
    stamp.put(&mut b);
    b.freeze()
}

/// Whether a VP8 RTP payload (RFC 7741) begins a keyframe: the descriptor (read by `rtc`'s
/// depacketizer, extensions and all, as browsers send them) starts partition 0, and the frame
/// tag's inverse keyframe bit is clear.
pub fn vp8_keyframe_start(payload: &Bytes) -> bool {
    let mut vp8 = Vp8Packet::default();
    match vp8.depacketize(payload) {
        Ok(frame) => vp8.s == 1 && vp8.pid == 0 && frame.first().is_some_and(|tag| tag & 0x01 == 0),
        Err(_) => false,
    }
}

/// How a source paces and sizes its media.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MediaPlan {
    pub video_fps: u32,
    /// A natural keyframe every this many frames (the first frame is always one).
    pub gop_frames: u64,
    pub keyframe_bytes: usize,
    pub delta_frame_bytes: usize,
    /// A frame is cut into packets of at most this many payload bytes, as even as possible.
    pub max_payload_bytes: usize,
    pub audio_payload_bytes: usize,
    /// VP8 temporal layers, 1 to [`MAX_TEMPORAL_LAYERS`] (L1T1, L1T2, L1T3; a value out of
    /// range counts as the nearest). With more than one, every video packet carries the
    /// extended descriptor ([`Vp8Temporal`]), frames follow libwebrtc's layer pattern from
    /// each keyframe ([`temporal_layer_of_frame`]), and base-layer frames are larger than
    /// the others ([`MediaPlan::frame_bytes`]).
    pub temporal_layers: u8,
}

impl MediaPlan {
    /// 30 fps, a keyframe every `gop`, frame sizes for `total_bps` of audio (64 kbit/s Opus) and
    /// video together.
    pub fn for_bitrate(total_bps: u64, gop: Duration) -> Self {
        const FPS: u32 = 30;
        const AUDIO_PAYLOAD_BYTES: usize = 160;
        let audio_bps = AUDIO_PAYLOAD_BYTES as u64 * 8 * u64::from(AUDIO_PACKETS_PER_S);
        let video_bps = total_bps.saturating_sub(audio_bps).max(8_000);
        let gop_frames = ((gop.as_secs_f64() * f64::from(FPS)).round() as u64).max(1);
        let gop_bytes = video_bps as f64 / 8.0 * gop_frames as f64 / f64::from(FPS);
        let units = (gop_frames - 1 + KEYFRAME_SIZE_RATIO) as f64;
        let delta = (gop_bytes / units).max(64.0) as usize;
        Self {
            video_fps: FPS,
            gop_frames,
            keyframe_bytes: delta * KEYFRAME_SIZE_RATIO as usize,
            delta_frame_bytes: delta,
            max_payload_bytes: MAX_PAYLOAD_BYTES,
            audio_payload_bytes: AUDIO_PAYLOAD_BYTES,
            temporal_layers: 1,
        }
    }

    /// This plan with `layers` temporal layers (1 to [`MAX_TEMPORAL_LAYERS`]).
    pub fn with_temporal_layers(self, layers: u8) -> Self {
        Self {
            temporal_layers: layers,
            ..self
        }
    }

    /// The temporal layers, within 1..=[`MAX_TEMPORAL_LAYERS`].
    pub fn temporal_layer_count(&self) -> u8 {
        self.temporal_layers.clamp(1, MAX_TEMPORAL_LAYERS)
    }

    /// The size of a frame of temporal layer `tid`. Base-layer frames carry more, as an
    /// encoder spends more bits on the frames others refer to, while one pattern's frames
    /// average `delta_frame_bytes`: L1T2 1.2 and 0.8 times it, L1T3 1.6, 0.8 and 0.8 times
    /// it (the pattern 0, 2, 1, 2). A keyframe is `keyframe_bytes` whatever its layer.
    pub fn frame_bytes(&self, keyframe: bool, tid: u8) -> usize {
        if keyframe {
            return self.keyframe_bytes;
        }
        let d = self.delta_frame_bytes;
        match (self.temporal_layer_count(), tid) {
            (1, _) => d,
            (2, 0) => d * 6 / 5,
            (3, 0) => d * 8 / 5,
            _ => d * 4 / 5,
        }
    }

    /// The bits per second of audio and video together.
    pub fn bitrate_bps(&self) -> u64 {
        let gop_bytes: u64 = (0..self.gop_frames.max(1))
            .map(|i| {
                let tid = temporal_layer_of_frame(self.temporal_layer_count(), i);
                self.frame_bytes(i == 0, tid) as u64
            })
            .sum();
        let video = gop_bytes * 8 * u64::from(self.video_fps) / self.gop_frames;
        video + self.audio_payload_bytes as u64 * 8 * u64::from(AUDIO_PACKETS_PER_S)
    }

    /// The payload sizes of one frame's packets (a delta frame: of the base layer).
    pub fn packet_sizes(&self, keyframe: bool) -> impl Iterator<Item = usize> + use<> {
        self.frame_packet_sizes(self.frame_bytes(keyframe, 0))
    }

    /// The payload sizes of the packets of a frame of `frame_bytes`.
    pub fn frame_packet_sizes(&self, frame_bytes: usize) -> impl Iterator<Item = usize> + use<> {
        let n = frame_bytes.div_ceil(self.max_payload_bytes.max(1)).max(1);
        let base = frame_bytes / n;
        let extra = frame_bytes % n;
        (0..n).map(move |i| base + usize::from(i < extra))
    }
}

/// The temporal layer of the frame `since_keyframe` frames after the last keyframe (which is
/// frame 0, of layer 0), with `layers` temporal layers: libwebrtc's patterns, L1T2 0, 1, 0, 1…
/// and L1T3 0, 2, 1, 2, 0, 2, 1, 2…
pub fn temporal_layer_of_frame(layers: u8, since_keyframe: u64) -> u8 {
    const L1T3: [u8; 4] = [0, 2, 1, 2];
    match layers {
        0 | 1 => 0,
        2 => (since_keyframe % 2) as u8,
        _ => L1T3[(since_keyframe % 4) as usize],
    }
}

/// The first sequence numbers and timestamps of a source.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Numbering {
    pub video_seq: u16,
    pub audio_seq: u16,
    pub video_ts: u32,
    pub audio_ts: u32,
}

impl Default for Numbering {
    /// Near the wrap, so a forwarder that mishandles it shows up within seconds.
    fn default() -> Self {
        Self {
            video_seq: 65_500,
            audio_seq: 65_530,
            video_ts: u32::MAX - 3 * 3_000,
            audio_ts: 0x1234_5678,
        }
    }
}

/// One RTP packet's worth of synthetic media, before it gets its SSRC and payload type.
#[derive(Debug, Clone)]
pub struct SyntheticPacket {
    pub kind: MediaKind,
    /// When the source made it.
    pub at: Instant,
    pub seq: u16,
    pub ts: u32,
    pub marker: bool,
    /// The first packet of a VP8 keyframe.
    pub keyframe_start: bool,
    pub stamp: Stamp,
    /// The VP8 frame's temporal layer and numbering, when the plan has more than one temporal
    /// layer (the same for every packet of a frame).
    pub temporal: Option<Vp8Temporal>,
    pub payload: Bytes,
}

/// Makes the synthetic VP8 and Opus streams of one publisher, paced by the time it is told.
#[derive(Debug, Clone)]
pub struct SyntheticSource {
    id: u32,
    plan: MediaPlan,
    clock: Clock,
    numbering: Numbering,
    /// Since when the source may send (its peer connected).
    ready: Option<Instant>,
    /// When the schedule began: the first time it was due while sending.
    started: Option<Instant>,
    sending: bool,
    answer_keyframe_requests: bool,
    keyframe_requested: bool,
    frames: u64,
    audio_packets: u64,
    video_seq: u16,
    audio_seq: u16,
    counter: u64,
    keyframes: u64,
    /// Frames since the last keyframe (for the temporal layer pattern).
    since_keyframe: u64,
    /// The next frame's picture id, and the next base-layer frame's TL0PICIDX.
    picture_id: u16,
    tl0_pic_idx: u8,
    /// Temporal layers (bit per TID) that have had a frame since the last keyframe: the first
    /// frame of each layer after a keyframe is its layer-sync frame.
    layers_seen: u8,
}

impl SyntheticSource {
    /// `source_id` goes into every stamp, so two sources never make the same bytes.
    pub fn new(source_id: u32, plan: MediaPlan, clock: Clock) -> Self {
        Self::with_numbering(source_id, plan, clock, Numbering::default())
    }

    pub fn with_numbering(
        source_id: u32,
        plan: MediaPlan,
        clock: Clock,
        numbering: Numbering,
    ) -> Self {
        Self {
            id: source_id,
            plan,
            clock,
            numbering,
            ready: None,
            started: None,
            sending: true,
            answer_keyframe_requests: true,
            keyframe_requested: false,
            frames: 0,
            audio_packets: 0,
            video_seq: numbering.video_seq,
            audio_seq: numbering.audio_seq,
            counter: 0,
            keyframes: 0,
            since_keyframe: 0,
            picture_id: FIRST_PICTURE_ID,
            tl0_pic_idx: FIRST_TL0_PIC_IDX,
            layers_seen: 0,
        }
    }

    pub fn id(&self) -> u32 {
        self.id
    }

    pub fn plan(&self) -> &MediaPlan {
        &self.plan
    }

    /// The source may send from `now` on. Its schedule begins the first time it produces
    /// while sending.
    pub fn start(&mut self, now: Instant) {
        self.ready.get_or_insert(now);
    }

    /// Pauses or resumes. A source paused before it ever sent begins its schedule when
    /// resumed; one paused later catches up on its schedule at once.
    pub fn set_sending(&mut self, on: bool) {
        self.sending = on;
    }

    pub fn is_sending(&self) -> bool {
        self.sending
    }

    /// Whether a keyframe request (PLI, FIR) makes the next frame a keyframe (as an encoder
    /// does); when off, only the natural keyframes come.
    pub fn set_answer_keyframe_requests(&mut self, on: bool) {
        self.answer_keyframe_requests = on;
    }

    /// A keyframe request came: the next frame is a keyframe, if this source answers them.
    pub fn request_keyframe(&mut self) {
        if self.answer_keyframe_requests {
            self.keyframe_requested = true;
        }
    }

    /// The next frame gets this picture id (15 bits) and the next base-layer frame this
    /// TL0PICIDX (with more than one temporal layer; by default [`FIRST_PICTURE_ID`] and
    /// [`FIRST_TL0_PIC_IDX`]).
    pub fn set_next_picture_id(&mut self, picture_id: u16, tl0_pic_idx: u8) {
        self.picture_id = picture_id % PICTURE_ID_MODULUS;
        self.tl0_pic_idx = tl0_pic_idx;
    }

    /// The next video packet gets this sequence number (for tests that fake a gap).
    pub fn set_next_video_seq(&mut self, seq: u16) {
        self.video_seq = seq;
    }

    pub fn next_video_seq(&self) -> u16 {
        self.video_seq
    }

    /// Keyframes made so far.
    pub fn keyframes(&self) -> u64 {
        self.keyframes
    }

    /// When the next packet is due; `None` before [`start`](Self::start) and while paused.
    pub fn poll_timeout(&self) -> Option<Instant> {
        if !self.sending {
            return None;
        }
        match self.started {
            Some(start) => Some(self.next_audio(start).min(self.next_frame(start))),
            None => self.ready,
        }
    }

    fn next_audio(&self, start: Instant) -> Instant {
        start + AUDIO_PACKET_INTERVAL * self.audio_packets as u32
    }

    fn next_frame(&self, start: Instant) -> Instant {
        let fps = u64::from(self.plan.video_fps.max(1));
        start + Duration::from_nanos(self.frames * 1_000_000_000 / fps)
    }

    /// Every packet due by `now`, audio first, appended to `out`.
    pub fn produce(&mut self, now: Instant, out: &mut Vec<SyntheticPacket>) {
        if !self.sending || self.ready.is_none_or(|t| t > now) {
            return;
        }
        let start = *self.started.get_or_insert(now);
        let sent_ns = self.clock.stamp_ns(now);
        while self.next_audio(start) <= now {
            let ts = self.numbering.audio_ts as u64 + self.audio_packets * AUDIO_TICKS_PER_PACKET;
            self.audio_packets += 1;
            let seq = self.audio_seq;
            self.audio_seq = seq.wrapping_add(1);
            let len = self.plan.audio_payload_bytes;
            let kind = PayloadKind::Audio;
            out.push(self.packet(now, sent_ns, kind, seq, ts as u32, false, len, None));
        }
        while self.next_frame(start) <= now {
            let keyframe =
                self.frames.is_multiple_of(self.plan.gop_frames.max(1)) || self.keyframe_requested;
            self.keyframe_requested = false;
            self.keyframes += u64::from(keyframe);
            let ts = u64::from(self.numbering.video_ts)
                + self.frames * u64::from(VIDEO_CLOCK_RATE) / u64::from(self.plan.video_fps.max(1));
            self.frames += 1;
            let temporal = self.next_temporal(keyframe);
            let tid = temporal.map_or(0, |t| t.tid);
            let frame_bytes = self.plan.frame_bytes(keyframe, tid);
            let sizes: Vec<usize> = self.plan.frame_packet_sizes(frame_bytes).collect();
            let n = sizes.len();
            for (i, len) in sizes.into_iter().enumerate() {
                let kind = if i == 0 {
                    PayloadKind::VideoFrameStart { keyframe }
                } else {
                    PayloadKind::VideoContinuation
                };
                let seq = self.video_seq;
                self.video_seq = seq.wrapping_add(1);
                let marker = i + 1 == n;
                out.push(self.packet(now, sent_ns, kind, seq, ts as u32, marker, len, temporal));
            }
        }
    }

    /// The next frame's temporal layer and numbering; `None` with one temporal layer.
    fn next_temporal(&mut self, keyframe: bool) -> Option<Vp8Temporal> {
        if keyframe {
            self.since_keyframe = 0;
            self.layers_seen = 0;
        }
        let layers = self.plan.temporal_layer_count();
        let tid = temporal_layer_of_frame(layers, self.since_keyframe);
        self.since_keyframe += 1;
        if layers == 1 {
            return None;
        }
        let picture_id = self.picture_id;
        self.picture_id = (picture_id + 1) % PICTURE_ID_MODULUS;
        let tl0_pic_idx = if tid == 0 {
            let idx = self.tl0_pic_idx;
            self.tl0_pic_idx = idx.wrapping_add(1);
            idx
        } else {
            self.tl0_pic_idx.wrapping_sub(1)
        };
        let layer_sync = tid > 0 && self.layers_seen & 1 << tid == 0;
        self.layers_seen |= 1 << tid;
        Some(Vp8Temporal {
            picture_id,
            tl0_pic_idx,
            tid,
            layer_sync,
        })
    }

    /// Stamps `packet` with `now` as its send time (its payload rebuilt to match), for a
    /// packet a pacer held back: latency then measures the network and the server, not the
    /// pacer's queue.
    pub fn restamp(&self, packet: &mut SyntheticPacket, now: Instant) {
        if packet.at >= now {
            return;
        }
        packet.stamp.sent_ns = self.clock.stamp_ns(now);
        let (picture_id, tl0_pic_idx) = packet
            .temporal
            .map_or((0, 0), |t| (t.picture_id, t.tl0_pic_idx));
        packet.payload =
            payload_with_ids(packet.payload.len(), packet.stamp, picture_id, tl0_pic_idx);
        packet.at = now;
    }

    #[allow(clippy::too_many_arguments)]
    fn packet(
        &mut self,
        at: Instant,
        sent_ns: u64,
        kind: PayloadKind,
        seq: u16,
        ts: u32,
        marker: bool,
        len: usize,
        temporal: Option<Vp8Temporal>,
    ) -> SyntheticPacket {
        let stamp = Stamp {
            source_id: self.id,
            kind,
            temporal: temporal.map(Vp8Temporal::tag),
            counter: self.counter,
            sent_ns,
        };
        self.counter += 1;
        SyntheticPacket {
            kind: kind.media(),
            at,
            seq,
            ts,
            marker,
            keyframe_start: kind == PayloadKind::VideoFrameStart { keyframe: true },
            stamp,
            temporal,
            payload: match temporal {
                Some(t) => payload_with_ids(len, stamp, t.picture_id, t.tl0_pic_idx),
                None => payload(len, stamp),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stamp(kind: PayloadKind) -> Stamp {
        Stamp {
            source_id: 7,
            kind,
            temporal: None,
            counter: 77,
            sent_ns: 123_456_789_012,
        }
    }

    const KINDS: [PayloadKind; 4] = [
        PayloadKind::Audio,
        PayloadKind::VideoFrameStart { keyframe: true },
        PayloadKind::VideoFrameStart { keyframe: false },
        PayloadKind::VideoContinuation,
    ];

    #[test]
    fn stamps_round_trip_through_every_payload_kind() {
        for kind in KINDS {
            let s = stamp(kind);
            let p = payload(1000, s);
            assert_eq!(p.len(), 1000);
            assert_eq!(Stamp::read(&p), Some(s));
            assert!(s.matches(&p) && s.matches_quickly(&p), "{kind:?}");
            // The shortest payload is its header and the stamp.
            let short = payload(0, s);
            assert!(s.matches(&short) && s.matches_quickly(&short), "{kind:?}");
        }
        assert_eq!(Stamp::read(b"too short"), None);
        assert_eq!(Stamp::read(&[0u8; 40]), None);
    }

    #[test]
    fn a_changed_cut_or_foreign_payload_does_not_match() {
        let s = stamp(PayloadKind::VideoContinuation);
        let p = payload(500, s);
        let mut changed = p.to_vec();
        changed[100] ^= 1;
        assert!(!s.matches(&changed));
        let mut cut = p.to_vec();
        cut.remove(200);
        assert!(!s.matches(&cut) && !s.matches_quickly(&cut));
        let other = Stamp { counter: 78, ..s };
        assert!(!other.matches(&p) && !other.matches_quickly(&p));
        // Another packet's payload differs everywhere but by chance.
        let q = payload(500, other);
        let same = p
            .iter()
            .zip(q.iter())
            .take(400)
            .filter(|(a, b)| a == b)
            .count();
        assert!(same < 20, "{same} equal bytes");
    }

    #[test]
    fn the_clock_maps_stamps_back_to_instants() {
        let t0 = Instant::now();
        let clock = Clock::new(t0, 1_000_000_000);
        let later = t0 + Duration::from_millis(5);
        let ns = clock.stamp_ns(later);
        assert_eq!(ns, 1_005_000_000);
        assert_eq!(clock.instant_of(ns), Some(later));
        // A stamp from another process that started earlier is before our epoch.
        assert!(clock.instant_of(ns - 6_000_000).is_some_and(|t| t < t0));
    }

    #[test]
    fn only_keyframe_starts_are_keyframe_starts() {
        let starts: Vec<bool> = KINDS
            .iter()
            .map(|k| vp8_keyframe_start(&payload(100, stamp(*k))))
            .collect();
        assert_eq!(starts, [false, true, false, false]);
        // A browser's extended descriptor: X, I with a 15-bit PictureID, then a key frame tag.
        let vp8 = |p: &'static [u8]| vp8_keyframe_start(&Bytes::from_static(p));
        assert!(vp8(&[0x90, 0x80, 0x81, 0x23, 0x50]));
        assert!(!vp8(&[0x90, 0x80, 0x81, 0x23, 0x51]));
        assert!(!vp8(&[0x90, 0x80]));
    }

    #[test]
    fn frame_sizes_add_up_to_the_bitrate() {
        let plan = MediaPlan::for_bitrate(2_500_000, Duration::from_secs(2));
        assert_eq!(plan.gop_frames, 60);
        let bps = plan.bitrate_bps() as f64;
        assert!((bps - 2_500_000.0).abs() < 2_500.0, "{bps}");
        let plan = MediaPlan {
            delta_frame_bytes: 2_401,
            ..plan
        };
        let sizes: Vec<usize> = plan.packet_sizes(false).collect();
        assert_eq!(sizes, vec![801, 800, 800]);
    }

    fn source(gop_frames: u64) -> (Instant, SyntheticSource) {
        let t0 = Instant::now();
        let plan = MediaPlan {
            video_fps: 10,
            gop_frames,
            keyframe_bytes: 3_000,
            delta_frame_bytes: 1_000,
            max_payload_bytes: 1_000,
            audio_payload_bytes: 100,
            temporal_layers: 1,
        };
        (t0, SyntheticSource::new(42, plan, Clock::new(t0, 0)))
    }

    #[test]
    fn a_source_paces_its_media_and_numbers_it_without_gaps() {
        let (t0, mut src) = source(5);
        let mut out = Vec::new();
        src.produce(t0, &mut out);
        assert!(
            out.is_empty() && src.poll_timeout().is_none(),
            "not started"
        );
        src.start(t0);
        assert_eq!(src.poll_timeout(), Some(t0));
        src.produce(t0, &mut out);
        src.produce(t0 + Duration::from_millis(999), &mut out);
        let audio: Vec<&SyntheticPacket> =
            out.iter().filter(|p| p.kind == MediaKind::Audio).collect();
        let video: Vec<&SyntheticPacket> =
            out.iter().filter(|p| p.kind == MediaKind::Video).collect();
        assert_eq!(audio.len(), 50);
        // Ten frames: two keyframes of three packets, eight delta frames of one.
        assert_eq!(video.len(), 2 * 3 + 8);
        assert_eq!(video.iter().filter(|p| p.keyframe_start).count(), 2);
        for w in video.windows(2) {
            assert_eq!(w[1].seq, w[0].seq.wrapping_add(1));
            let step = w[1].ts.wrapping_sub(w[0].ts);
            assert!(step == 0 || step == 9_000, "{step}");
        }
        for w in audio.windows(2) {
            assert_eq!(w[1].ts.wrapping_sub(w[0].ts), 960);
        }
        let markers: Vec<bool> = video[..3].iter().map(|p| p.marker).collect();
        assert_eq!(markers, [false, false, true]);
        for (i, p) in out.iter().enumerate() {
            assert_eq!(p.stamp.counter, i as u64);
            assert!(p.stamp.matches(&p.payload));
            assert_eq!(vp8_keyframe_start(&p.payload), p.keyframe_start);
        }
        assert_eq!(
            src.poll_timeout(),
            Some(t0 + Duration::from_millis(1000)),
            "the next audio packet and frame"
        );
    }

    #[test]
    fn keyframes_come_every_gop_and_on_request_when_answered() {
        let (t0, mut src) = source(1_000);
        src.start(t0);
        let frame = |src: &mut SyntheticSource, n: u64| {
            let mut out = Vec::new();
            src.produce(t0 + Duration::from_millis(100 * n), &mut out);
            out.iter().any(|p| p.keyframe_start)
        };
        assert!(frame(&mut src, 0), "the first frame is a keyframe");
        assert!(!frame(&mut src, 1));
        src.request_keyframe();
        assert!(frame(&mut src, 2));
        src.set_answer_keyframe_requests(false);
        src.request_keyframe();
        assert!(!frame(&mut src, 3));
        assert_eq!(src.keyframes(), 2);
    }

    #[test]
    fn a_source_paused_from_the_start_begins_when_resumed_and_later_catches_up() {
        let (t0, mut src) = source(5);
        let audio =
            |out: &[SyntheticPacket]| out.iter().filter(|p| p.kind == MediaKind::Audio).count();
        src.start(t0);
        src.set_sending(false);
        let mut out = Vec::new();
        src.produce(t0 + Duration::from_millis(200), &mut out);
        assert!(out.is_empty() && src.poll_timeout().is_none());
        src.set_sending(true);
        src.produce(t0 + Duration::from_millis(200), &mut out);
        assert_eq!(audio(&out), 1, "the schedule begins now, without a burst");
        src.set_sending(false);
        out.clear();
        src.produce(t0 + Duration::from_millis(400), &mut out);
        src.set_sending(true);
        src.produce(t0 + Duration::from_millis(400), &mut out);
        assert_eq!(audio(&out), 10, "the schedule catches up");
    }

    #[test]
    fn one_temporal_layer_keeps_the_one_byte_descriptor_and_the_old_stamp() {
        let p = payload(100, stamp(PayloadKind::VideoFrameStart { keyframe: false }));
        assert_eq!(p[..4], [0x10, 0x11, 0x02, 0x00]);
        assert_eq!(
            p[100 - STAMP_BYTES + 8],
            2,
            "the kind byte is the bare code"
        );
        let c = payload(100, stamp(PayloadKind::VideoContinuation));
        assert_eq!(c[0], 0x00);
        assert_eq!(Vp8Temporal::read(&p), None);
        let (t0, mut src) = source(3);
        src.start(t0);
        let mut out = Vec::new();
        src.produce(t0 + Duration::from_millis(900), &mut out);
        assert!(
            out.iter()
                .all(|p| p.temporal.is_none() && p.stamp.temporal.is_none())
        );
    }

    /// Ten seconds of a 10 fps source with `layers` temporal layers: its video frames (the
    /// packets of each), with a keyframe at frame 0, every `gop` and on request at frame 13.
    fn temporal_frames(layers: u8, gop: u64) -> Vec<Vec<SyntheticPacket>> {
        let (t0, src) = source(gop);
        let mut src = SyntheticSource::new(
            42,
            src.plan().with_temporal_layers(layers),
            Clock::new(t0, 0),
        );
        src.start(t0);
        let mut frames = Vec::new();
        for n in 0..100u64 {
            if n == 13 {
                src.request_keyframe();
            }
            let mut out = Vec::new();
            src.produce(t0 + Duration::from_millis(100 * n), &mut out);
            out.retain(|p| p.kind == MediaKind::Video);
            frames.push(out);
        }
        frames
    }

    #[test]
    fn temporal_layers_follow_the_pattern_from_each_keyframe_and_number_across_the_wraps() {
        let frames = temporal_frames(3, 40);
        let t: Vec<Vp8Temporal> = frames.iter().map(|f| f[0].temporal.unwrap()).collect();
        let tids: Vec<u8> = t.iter().map(|t| t.tid).collect();
        assert_eq!(tids[..13], [0, 2, 1, 2, 0, 2, 1, 2, 0, 2, 1, 2, 0][..]);
        // The requested keyframe (frame 13) restarts the pattern, and so does frame 40.
        assert_eq!(tids[12..18], [0, 0, 2, 1, 2, 0]);
        assert_eq!(tids[38..42], [2, 1, 0, 2]);
        let syncs: Vec<usize> = (0..t.len()).filter(|&i| t[i].layer_sync).collect();
        assert_eq!(syncs, [1, 2, 14, 15, 41, 42, 81, 82]);
        assert_eq!(t[0].picture_id, FIRST_PICTURE_ID);
        assert_eq!(t[0].tl0_pic_idx, FIRST_TL0_PIC_IDX);
        let mut wrapped = (false, false);
        for w in t.windows(2) {
            assert_eq!(w[1].picture_id, (w[0].picture_id + 1) % PICTURE_ID_MODULUS);
            let step = w[1].tl0_pic_idx.wrapping_sub(w[0].tl0_pic_idx);
            assert_eq!(step, u8::from(w[1].tid == 0), "{w:?}");
            wrapped.0 |= w[1].picture_id < w[0].picture_id;
            wrapped.1 |= w[1].tl0_pic_idx < w[0].tl0_pic_idx;
        }
        assert_eq!(wrapped, (true, true), "both wrapped within the run");
        for (i, frame) in frames.iter().enumerate() {
            let keyframe = frame[0].keyframe_start;
            assert_eq!(keyframe, [0, 13, 40, 80].contains(&i), "frame {i}");
            for p in frame {
                assert_eq!(p.temporal, Some(t[i]));
                assert_eq!(Vp8Temporal::read(&p.payload), Some(t[i]));
                assert_eq!(p.stamp.temporal, Some(t[i].tag()));
                assert_eq!(Stamp::read(&p.payload), Some(p.stamp));
                assert!(p.stamp.matches(&p.payload) && p.stamp.matches_quickly(&p.payload));
                assert_eq!(vp8_keyframe_start(&p.payload), p.keyframe_start);
                assert_eq!(p.payload[0] & 0xef, 0x80, "X set, PID 0");
                assert_eq!(p.payload[1], 0xe0);
            }
            let bytes: usize = frame.iter().map(|p| p.payload.len()).sum();
            let want = match (keyframe, t[i].tid) {
                (true, _) => 3_000,
                (false, 0) => 1_600,
                _ => 800,
            };
            assert_eq!(bytes, want, "frame {i}");
        }
    }

    #[test]
    fn two_temporal_layers_alternate_and_keep_the_average_frame_size() {
        let frames = temporal_frames(2, 1_000);
        let tids: Vec<u8> = frames.iter().map(|f| f[0].temporal.unwrap().tid).collect();
        assert_eq!(tids[..6], [0, 1, 0, 1, 0, 1]);
        assert_eq!(tids[12..16], [0, 0, 1, 0]);
        let sizes: Vec<usize> = frames[2..4]
            .iter()
            .map(|f| f.iter().map(|p| p.payload.len()).sum())
            .collect();
        assert_eq!(sizes, [1_200, 800]);
        for layers in [2, 3] {
            let plan = MediaPlan::for_bitrate(2_500_000, Duration::from_secs(2));
            let with = plan.with_temporal_layers(layers).bitrate_bps() as f64;
            let ratio = with / plan.bitrate_bps() as f64;
            assert!((ratio - 1.0).abs() < 0.01, "{layers} layers: {ratio}");
        }
    }

    #[test]
    fn rewritten_picture_ids_still_match_and_nothing_else_may_change() {
        let frames = temporal_frames(3, 40);
        let p = &frames[3][0];
        assert_eq!(p.temporal.map(|t| t.tid), Some(2));
        let s = p.stamp;
        let mut rewritten = p.payload.to_vec();
        rewritten[2] = 0x80 | 0x12;
        rewritten[3] = 0x34;
        rewritten[4] = 7;
        assert!(s.matches(&rewritten) && s.matches_quickly(&rewritten));
        let read = Vp8Temporal::read(&rewritten).unwrap();
        assert_eq!((read.picture_id, read.tl0_pic_idx), (0x1234, 7));
        for (at, flip) in [
            (0, 0x10),
            (1, 0x10),
            (2, 0x80),
            (5, 0x40),
            (5, 0x20),
            (6, 1),
        ] {
            let mut bad = p.payload.to_vec();
            bad[at] ^= flip;
            assert!(!s.matches(&bad), "byte {at} ^ {flip:#x}");
        }
        // The quick check sees the first byte and the layer byte.
        for (at, flip) in [(0, 0x10), (5, 0x40), (5, 0x20)] {
            let mut bad = p.payload.to_vec();
            bad[at] ^= flip;
            assert!(!s.matches_quickly(&bad), "byte {at} ^ {flip:#x}");
        }
        // A stamp claiming another layer, or none, does not match.
        let other = Stamp {
            temporal: Some(TemporalTag {
                tid: 1,
                layer_sync: false,
            }),
            ..s
        };
        assert!(!other.matches(&p.payload) && !other.matches_quickly(&p.payload));
        let none = Stamp {
            temporal: None,
            ..s
        };
        assert!(!none.matches(&p.payload) && !none.matches_quickly(&p.payload));
        // A restamped packet keeps its picture id and TL0PICIDX.
        let (_, src) = source(40);
        let mut held = p.clone();
        let later = held.at + Duration::from_millis(3);
        src.restamp(&mut held, later);
        assert_ne!(held.stamp.sent_ns, s.sent_ns);
        assert_eq!(Vp8Temporal::read(&held.payload), p.temporal);
        assert!(held.stamp.matches(&held.payload));
    }

    #[test]
    fn only_descriptors_with_picture_id_tl0_and_tid_read_as_temporal() {
        let t = |b: &[u8]| Vp8Temporal::read(b);
        assert_eq!(
            t(&[0x90, 0xe0, 0x81, 0x23, 9, 0xa0]),
            Some(Vp8Temporal {
                picture_id: 0x123,
                tl0_pic_idx: 9,
                tid: 2,
                layer_sync: true,
            })
        );
        // A 7-bit picture id.
        assert_eq!(
            t(&[0x80, 0xe0, 0x05, 9, 0x40]).map(|t| t.picture_id),
            Some(5)
        );
        assert_eq!(t(&[0x90, 0x80, 0x81, 0x23, 0x50]), None, "no L, no T");
        assert_eq!(t(&[0x90, 0xd0, 0x81, 0x23, 9, 0xa0]), None, "K without T");
        assert_eq!(t(&[0x10, 0xe0]), None, "no X");
        assert_eq!(t(&[0x90, 0xe0, 0x81, 0x23, 9]), None, "cut short");
    }
}
