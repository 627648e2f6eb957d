//! The synthetic broadcast: what the publisher puts in each RTP payload, and how a viewer reads
//! it back without decoding anything.
//!
//! Every payload starts like the real codec (a VP8 payload descriptor and, on a frame's first
//! packet, the VP8 frame tag; an Opus TOC byte), so the server's keyframe detection sees real
//! keyframes. Every payload ends with a [`Stamp`]: a magic number, the send time ([`Clock`]:
//! the wall clock at start plus the monotonic clock since, so publisher and viewers agree within
//! one process and across processes on one host, and receive time minus send time is the
//! one-way latency), and the packet's index in its track.

use bytes::{BufMut, Bytes, BytesMut};
use std::time::{Duration, Instant, SystemTime};

pub const VIDEO_CLOCK_RATE: u32 = 90_000;
pub const AUDIO_CLOCK_RATE: u32 = 48_000;
pub const VIDEO_FPS: u32 = 30;
pub const AUDIO_PACKETS_PER_S: u32 = 50;
pub const AUDIO_PACKET_INTERVAL: Duration = Duration::from_millis(20);
/// 64 kbit/s Opus at 50 packets per second.
pub const AUDIO_PAYLOAD_BYTES: usize = 160;
pub const AUDIO_BPS: u64 = AUDIO_PAYLOAD_BYTES as u64 * 8 * AUDIO_PACKETS_PER_S as u64;
/// Largest RTP payload: with the RTP header, the SRTP tag and UDP/IP it stays well under a
/// 1500-byte MTU, as a browser's packets do.
pub const MAX_PAYLOAD_BYTES: usize = 1_200;
/// A keyframe is this many times the size of a delta frame (a calm camera scene).
pub const KEYFRAME_SIZE_RATIO: u64 = 4;

/// Identifies a payload this load tester made.
pub const STAMP_MAGIC: u32 = 0x474c_5631; // "GLV1"
/// magic (4) + send time (8) + packet index (4).
pub const STAMP_BYTES: usize = 16;

/// Send times on the wire: nanoseconds since the Unix epoch, read once from the wall clock and
/// advanced by the monotonic clock, so a wall-clock step during a run changes nothing.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    epoch: Instant,
    epoch_wall_ns: u64,
}

impl Clock {
    pub fn new() -> Self {
        let wall = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default();
        Self {
            epoch: Instant::now(),
            epoch_wall_ns: wall.as_nanos() as u64,
        }
    }

    /// The stamp for a packet sent at `at`.
    pub fn stamp_ns(&self, at: Instant) -> u64 {
        self.epoch_wall_ns + at.saturating_duration_since(self.epoch).as_nanos() as u64
    }

    /// When a stamp says its packet was sent, on this process's clock; `None` when that is
    /// before this process could tell.
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

impl Default for Clock {
    fn default() -> Self {
        Self::new()
    }
}

/// What ends every synthetic payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    /// The send time ([`Clock::stamp_ns`]).
    pub sent_ns: u64,
    /// The packet's index in its track (for a reader of a packet capture).
    pub index: u32,
}

impl Stamp {
    /// Reads the stamp at the end of `payload`; `None` if the payload is not ours.
    pub fn read(payload: &[u8]) -> Option<Self> {
        let at = payload.len().checked_sub(STAMP_BYTES)?;
        let s = &payload[at..];
        let magic = u32::from_be_bytes(s[0..4].try_into().ok()?);
        if magic != STAMP_MAGIC {
            return None;
        }
        Some(Self {
            sent_ns: u64::from_be_bytes(s[4..12].try_into().ok()?),
            index: u32::from_be_bytes(s[12..16].try_into().ok()?),
        })
    }
}

/// The filler byte at position `i` of a payload: cheap to make and to check.
fn filler(i: usize, index: u32) -> u8 {
    (i as u32).wrapping_mul(31).wrapping_add(index) as u8
}

/// What kind of packet a payload is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PayloadKind {
    Audio,
    /// The first packet of a VP8 frame.
    VideoFrameStart {
        keyframe: bool,
    },
    /// Any later packet of a VP8 frame.
    VideoContinuation,
}

/// A synthetic payload of `len` bytes (at least the header plus the stamp).
pub fn payload(kind: PayloadKind, len: usize, stamp: Stamp) -> Bytes {
    let mut b = BytesMut::with_capacity(len.max(STAMP_BYTES + 11));
    match kind {
        PayloadKind::Audio => b.put_u8(0xfc), // Opus TOC: CELT FB 20 ms, one frame
        PayloadKind::VideoContinuation => b.put_u8(0x00), // descriptor: not a partition start
        PayloadKind::VideoFrameStart { keyframe } => {
            b.put_u8(0x10); // descriptor: S=1, PID=0
            // Frame tag (RFC 6386 §9.1): bit 0 inverse keyframe flag, bit 4 show_frame, then
            // the first partition size; a keyframe adds the start code and the dimensions.
            if keyframe {
                b.put_slice(&[0x10, 0x02, 0x00, 0x9d, 0x01, 0x2a]);
                b.put_u16_le(640);
                b.put_u16_le(360);
            } else {
                b.put_slice(&[0x11, 0x02, 0x00]);
            }
        }
    }
    let start = b.len();
    let body = len.max(start + STAMP_BYTES) - STAMP_BYTES;
    for i in start..body {
        b.put_u8(filler(i, stamp.index));
    }
    b.put_u32(STAMP_MAGIC);
    b.put_u64(stamp.sent_ns);
    b.put_u32(stamp.index);
    b.freeze()
}

/// Whether a payload that carries a stamp still has the filler it was made with, checked on
/// the last filler byte (SRTP authentication already vouches for the rest on the wire; this
/// catches a server that cuts or mixes up payloads).
pub fn filler_intact(payload: &[u8], stamp: Stamp) -> bool {
    let end = payload.len() - STAMP_BYTES;
    if end == 0 {
        return true;
    }
    let last = end - 1;
    payload[last] == filler(last, stamp.index)
}

/// Whether a VP8 RTP payload (RFC 7741) begins a keyframe: the descriptor's S bit with
/// partition 0, then a frame tag whose inverse keyframe bit is clear. Handles the extended
/// descriptor browsers send (PictureID, TL0PICIDX, TID/KEYIDX).
pub fn vp8_keyframe_start(p: &[u8]) -> bool {
    let Some(&first) = p.first() else {
        return false;
    };
    if first & 0x10 == 0 || first & 0x07 != 0 {
        return false;
    }
    let mut at = 1;
    if first & 0x80 != 0 {
        let Some(&x) = p.get(at) else { return false };
        at += 1;
        if x & 0x80 != 0 {
            let Some(&pid) = p.get(at) else { return false };
            at += if pid & 0x80 != 0 { 2 } else { 1 };
        }
        if x & 0x40 != 0 {
            at += 1;
        }
        if x & 0x30 != 0 {
            at += 1;
        }
    }
    p.get(at).is_some_and(|tag| tag & 0x01 == 0)
}

/// How the publisher sizes its frames to hit a bitrate.
#[derive(Debug, Clone, Copy)]
pub struct VideoPlan {
    pub delta_frame_bytes: usize,
    pub keyframe_bytes: usize,
    pub gop_frames: u64,
}

impl VideoPlan {
    /// Frame sizes for `total_bps` of audio plus video with a keyframe every `gop`.
    pub fn new(total_bps: u64, gop: Duration) -> Self {
        let video_bps = total_bps.saturating_sub(AUDIO_BPS).max(8_000);
        let gop_frames = ((gop.as_secs_f64() * f64::from(VIDEO_FPS)).round() as u64).max(1);
        let gop_bytes = video_bps as f64 / 8.0 * gop_frames as f64 / f64::from(VIDEO_FPS);
        let units = (gop_frames - 1 + KEYFRAME_SIZE_RATIO) as f64;
        let delta = (gop_bytes / units).max(64.0) as usize;
        Self {
            delta_frame_bytes: delta,
            keyframe_bytes: delta * KEYFRAME_SIZE_RATIO as usize,
            gop_frames,
        }
    }

    /// The payload sizes of one frame's packets, as even as possible.
    pub fn packet_sizes(frame_bytes: usize) -> impl Iterator<Item = usize> {
        let n = frame_bytes.div_ceil(MAX_PAYLOAD_BYTES).max(1);
        let base = frame_bytes / n;
        let extra = frame_bytes % n;
        (0..n).map(move |i| base + usize::from(i < extra))
    }
}

/// Parses a bitrate such as `2500k`, `2.5M` or `2500000` into bits per second.
pub fn parse_bitrate(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let (num, mult) = match s.char_indices().last() {
        Some((i, 'k' | 'K')) => (&s[..i], 1e3),
        Some((i, 'm' | 'M')) => (&s[..i], 1e6),
        Some((i, 'g' | 'G')) => (&s[..i], 1e9),
        _ => (s, 1.0),
    };
    let v: f64 = num
        .parse()
        .map_err(|_| format!("not a bitrate: {s:?} (try 2500k or 2.5M)"))?;
    if v.is_nan() || v <= 0.0 {
        return Err(format!("bitrate must be positive: {s:?}"));
    }
    Ok((v * mult) as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamp_round_trips_through_every_payload_kind() {
        let stamp = Stamp {
            sent_ns: 123_456_789_012,
            index: 77,
        };
        for kind in [
            PayloadKind::Audio,
            PayloadKind::VideoFrameStart { keyframe: true },
            PayloadKind::VideoFrameStart { keyframe: false },
            PayloadKind::VideoContinuation,
        ] {
            let p = payload(kind, 1000, stamp);
            assert_eq!(p.len(), 1000);
            assert_eq!(Stamp::read(&p), Some(stamp));
            assert!(filler_intact(&p, stamp));
        }
        assert_eq!(Stamp::read(b"too short"), None);
        assert_eq!(Stamp::read(&[0u8; 40]), None);
    }

    #[test]
    fn the_clock_maps_stamps_back_to_instants() {
        let clock = Clock::new();
        let later = Instant::now() + Duration::from_millis(5);
        let ns = clock.stamp_ns(later);
        let back = clock.instant_of(ns).unwrap();
        let diff = if back > later {
            back - later
        } else {
            later - back
        };
        assert!(diff < Duration::from_micros(1), "{diff:?}");
        // A stamp from another process that started earlier is before our epoch.
        assert!(clock.instant_of(ns - 3_000_000).is_some_and(|t| t < later));
    }

    #[test]
    fn only_keyframe_starts_are_keyframe_starts() {
        let s = Stamp {
            sent_ns: 0,
            index: 0,
        };
        let key = payload(PayloadKind::VideoFrameStart { keyframe: true }, 100, s);
        let delta = payload(PayloadKind::VideoFrameStart { keyframe: false }, 100, s);
        let cont = payload(PayloadKind::VideoContinuation, 100, s);
        assert!(vp8_keyframe_start(&key));
        assert!(!vp8_keyframe_start(&delta));
        assert!(!vp8_keyframe_start(&cont));
        // A browser's extended descriptor: X, I with a 15-bit PictureID, then a key frame tag.
        assert!(vp8_keyframe_start(&[0x90, 0x80, 0x81, 0x23, 0x50]));
        assert!(!vp8_keyframe_start(&[0x90, 0x80, 0x81, 0x23, 0x51]));
        assert!(!vp8_keyframe_start(&[0x90, 0x80]));
    }

    #[test]
    fn frame_sizes_add_up_to_the_bitrate() {
        let plan = VideoPlan::new(2_500_000, Duration::from_secs(2));
        assert_eq!(plan.gop_frames, 60);
        let gop_bytes =
            plan.keyframe_bytes + plan.delta_frame_bytes * (plan.gop_frames as usize - 1);
        let bps = gop_bytes as f64 * 8.0 / 2.0 + AUDIO_BPS as f64;
        assert!((bps - 2_500_000.0).abs() < 2_500.0, "{bps}");
        let sizes: Vec<usize> = VideoPlan::packet_sizes(2_401).collect();
        assert_eq!(sizes, vec![801, 800, 800]);
        assert!(sizes.iter().all(|&s| s <= MAX_PAYLOAD_BYTES));
    }

    #[test]
    fn bitrates_parse_with_suffixes() {
        assert_eq!(parse_bitrate("2500k"), Ok(2_500_000));
        assert_eq!(parse_bitrate("2.5M"), Ok(2_500_000));
        assert_eq!(parse_bitrate("800000"), Ok(800_000));
        assert!(parse_bitrate("fast").is_err());
        assert!(parse_bitrate("0").is_err());
    }
}
