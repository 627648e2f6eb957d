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

/// VP8 payload descriptor (RFC 7741 §4.2), one byte: S=1, PID=0 (a frame's first packet), and
/// S=0 (a packet that continues a frame).
const VP8_DESCRIPTOR_START: u8 = 0x10;
const VP8_DESCRIPTOR_CONTINUATION: u8 = 0x00;
/// VP8 frame tag (RFC 6386 §9.1): bit 0 the *inverse* keyframe flag, bit 4 show_frame, then the
/// first partition size; a keyframe adds the start code and the picture size.
const VP8_KEYFRAME_TAG: [u8; 3] = [0x10, 0x02, 0x00];
const VP8_DELTA_TAG: [u8; 3] = [0x11, 0x02, 0x00];
const VP8_START_CODE: [u8; 3] = [0x9d, 0x01, 0x2a];
/// Opus TOC byte: config 31 (CELT fullband 20 ms), stereo, one frame.
const OPUS_TOC: u8 = 0xfc;
/// The longest codec header: descriptor, frame tag, start code, width, height.
const MAX_HEADER_BYTES: usize = 11;

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

    /// The codec header of a payload of this kind: its bytes, and how many of them count.
    fn header(self) -> ([u8; MAX_HEADER_BYTES], usize) {
        let mut h = [0u8; MAX_HEADER_BYTES];
        let mut put = |at: usize, bytes: &[u8]| {
            h[at..at + bytes.len()].copy_from_slice(bytes);
            at + bytes.len()
        };
        let len = match self {
            PayloadKind::Audio => put(0, &[OPUS_TOC]),
            PayloadKind::VideoContinuation => put(0, &[VP8_DESCRIPTOR_CONTINUATION]),
            PayloadKind::VideoFrameStart { keyframe: false } => {
                let at = put(0, &[VP8_DESCRIPTOR_START]);
                put(at, &VP8_DELTA_TAG)
            }
            PayloadKind::VideoFrameStart { keyframe: true } => {
                let at = put(0, &[VP8_DESCRIPTOR_START]);
                let at = put(at, &VP8_KEYFRAME_TAG);
                let at = put(at, &VP8_START_CODE);
                // 14 bits of size, 2 bits of scale (0), little-endian.
                let at = put(at, &VIDEO_WIDTH.to_le_bytes());
                put(at, &VIDEO_HEIGHT.to_le_bytes())
            }
        };
        (h, len)
    }
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
    /// Its number among the source's packets, audio and video together, from 0.
    pub counter: u64,
    /// The send time ([`Clock::stamp_ns`]).
    pub sent_ns: u64,
}

impl Stamp {
    /// Reads the stamp at the end of `payload`; `None` if the payload is not ours.
    pub fn read(payload: &[u8]) -> Option<Self> {
        let at = payload.len().checked_sub(STAMP_BYTES)?;
        let s = &payload[at..];
        if u32::from_be_bytes(s[0..4].try_into().ok()?) != STAMP_MAGIC {
            return None;
        }
        Some(Self {
            source_id: u32::from_be_bytes(s[4..8].try_into().ok()?),
            kind: PayloadKind::from_code(s[8])?,
            counter: u64::from_be_bytes(s[9..17].try_into().ok()?),
            sent_ns: u64::from_be_bytes(s[17..25].try_into().ok()?),
        })
    }

    fn put(&self, b: &mut BytesMut) {
        b.put_u32(STAMP_MAGIC);
        b.put_u32(self.source_id);
        b.put_u8(self.kind.code());
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

    /// Whether `payload` is, byte for byte, the payload of this stamp's packet.
    pub fn matches(&self, payload: &[u8]) -> bool {
        let (header, header_len) = self.kind.header();
        let Some(body_end) = payload.len().checked_sub(STAMP_BYTES) else {
            return false;
        };
        if body_end < header_len || payload[..header_len] != header[..header_len] {
            return false;
        }
        let seed = self.filler_seed();
        let filler_ok = (header_len..body_end).all(|i| payload[i] == filler(seed, i));
        filler_ok && Stamp::read(payload) == Some(*self)
    }

    /// A cheap check for hot paths: the stamp, the first byte and the last filler byte. SRTP
    /// authentication already vouches for the bytes on the wire; this catches a server that
    /// cuts or mixes up payloads.
    pub fn matches_quickly(&self, payload: &[u8]) -> bool {
        let Some(body_end) = payload.len().checked_sub(STAMP_BYTES) else {
            return false;
        };
        let (header, header_len) = self.kind.header();
        if body_end < header_len || payload.first() != header.first() {
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

/// The payload of `stamp`'s packet, `len` bytes long (at least its header and the stamp).
pub fn payload(len: usize, stamp: Stamp) -> Bytes {
    let mut b = BytesMut::with_capacity(len.max(MAX_HEADER_BYTES + STAMP_BYTES));
    let (header, header_len) = stamp.kind.header();
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
        }
    }

    /// The bits per second of audio and video together.
    pub fn bitrate_bps(&self) -> u64 {
        let gop_bytes =
            self.keyframe_bytes as u64 + self.delta_frame_bytes as u64 * (self.gop_frames - 1);
        let video = gop_bytes * 8 * u64::from(self.video_fps) / self.gop_frames;
        video + self.audio_payload_bytes as u64 * 8 * u64::from(AUDIO_PACKETS_PER_S)
    }

    /// The payload sizes of one frame's packets.
    pub fn packet_sizes(&self, keyframe: bool) -> impl Iterator<Item = usize> + use<> {
        let frame_bytes = if keyframe {
            self.keyframe_bytes
        } else {
            self.delta_frame_bytes
        };
        let n = frame_bytes.div_ceil(self.max_payload_bytes.max(1)).max(1);
        let base = frame_bytes / n;
        let extra = frame_bytes % n;
        (0..n).map(move |i| base + usize::from(i < extra))
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
            out.push(self.packet(now, sent_ns, PayloadKind::Audio, seq, ts as u32, false, len));
        }
        while self.next_frame(start) <= now {
            let keyframe =
                self.frames.is_multiple_of(self.plan.gop_frames.max(1)) || self.keyframe_requested;
            self.keyframe_requested = false;
            self.keyframes += u64::from(keyframe);
            let ts = u64::from(self.numbering.video_ts)
                + self.frames * u64::from(VIDEO_CLOCK_RATE) / u64::from(self.plan.video_fps.max(1));
            self.frames += 1;
            let sizes: Vec<usize> = self.plan.packet_sizes(keyframe).collect();
            let n = sizes.len();
            for (i, len) in sizes.into_iter().enumerate() {
                let kind = if i == 0 {
                    PayloadKind::VideoFrameStart { keyframe }
                } else {
                    PayloadKind::VideoContinuation
                };
                let seq = self.video_seq;
                self.video_seq = seq.wrapping_add(1);
                out.push(self.packet(now, sent_ns, kind, seq, ts as u32, i + 1 == n, len));
            }
        }
    }

    /// Stamps `packet` with `now` as its send time (its payload rebuilt to match), for a
    /// packet a pacer held back: latency then measures the network and the server, not the
    /// pacer's queue.
    pub fn restamp(&self, packet: &mut SyntheticPacket, now: Instant) {
        if packet.at >= now {
            return;
        }
        packet.stamp.sent_ns = self.clock.stamp_ns(now);
        packet.payload = payload(packet.payload.len(), packet.stamp);
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
    ) -> SyntheticPacket {
        let stamp = Stamp {
            source_id: self.id,
            kind,
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
            payload: payload(len, stamp),
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
}
