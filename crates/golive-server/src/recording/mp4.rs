//! A fragmented MP4 (ISO-BMFF) writer for recordings: H.264 video, Opus audio, frames as they
//! come.
//!
//! Written here rather than with `muxide` or `mp4-atom`, though both build: `muxide` 0.5 brings
//! its command-line tool's dependencies (clap, indicatif, serde_json: 38 crates) into the
//! library and owns the timing and fragmenting this module must control (fragments cut at
//! keyframes, written whole, times from the recorder's shared clock); `mp4-atom` 0.17 only
//! encodes boxes (27 crates with derive_more and num), leaving the fragmenting, the sample
//! durations and the `avcC` from the stream to us anyway. The subset a recording needs (an init
//! segment with empty sample tables, then `moof`+`mdat` fragments) is a few hundred lines of
//! box writing with no dependency, as the WebM writer beside it.
//!
//! The file is playable at every moment: `ftyp`+`moov` first, then one fragment per video
//! keyframe or at most every [`MAX_FRAGMENT_MS`], each built in memory and written whole. A
//! process killed mid-broadcast leaves a file that plays up to its last fragment.
//!
//! A sample's duration is the time to the next sample of its track, so each track keeps one
//! sample pending until the next one arrives; a fragment holds only samples with a known
//! duration.

use std::io::{self, Write};

use super::webm::Track;

/// A fragment closes at the latest this long after its first sample (a keyframe closes one
/// sooner).
pub const MAX_FRAGMENT_MS: i64 = 1000;
const VIDEO_TIMESCALE: u32 = 90_000;
const AUDIO_TIMESCALE: u32 = 48_000;
/// One Opus frame (20 ms), the duration of the last audio sample.
const LAST_AUDIO_MS: i64 = 20;
/// The duration of the last video sample when there was only one.
const LAST_VIDEO_MS: i64 = 33;
/// Opus decoder delay of libopus at 48 kHz, as `dOps` PreSkip (RFC 7845 §4.2 recommends
/// signalling it; WebRTC senders use libopus).
const OPUS_PRE_SKIP: u16 = 312;

/// `sample_depends_on` = 2 (does not depend on others): a sync sample.
const SAMPLE_FLAGS_SYNC: u32 = 0x0200_0000;
/// `sample_depends_on` = 1 and `sample_is_non_sync_sample`.
const SAMPLE_FLAGS_NON_SYNC: u32 = 0x0101_0000;
const TFHD_DEFAULT_BASE_IS_MOOF: u32 = 0x02_0000;
const TRUN_DATA_OFFSET: u32 = 0x1;
const TRUN_SAMPLE_DURATION: u32 = 0x100;
const TRUN_SAMPLE_SIZE: u32 = 0x200;
const TRUN_SAMPLE_FLAGS: u32 = 0x400;
const MATRIX: [u32; 9] = [0x0001_0000, 0, 0, 0, 0x0001_0000, 0, 0, 0, 0x4000_0000];

const NAL_SPS: u8 = 7;
const NAL_PPS: u8 = 8;
const NAL_ACCESS_UNIT_DELIMITER: u8 = 9;

/// The H.264 parameter sets the `avcC` box carries, and the picture size the SPS declares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AvcConfig {
    pub sps: Vec<u8>,
    pub pps: Vec<u8>,
    pub width: u16,
    pub height: u16,
}

impl AvcConfig {
    /// The first SPS and PPS of an Annex B access unit, when it has both.
    pub fn from_annex_b(access_unit: &[u8]) -> Option<Self> {
        let mut sps = None;
        let mut pps = None;
        for nal in annex_b_nals(access_unit) {
            match nal.first().map(|b| b & 0x1f) {
                Some(NAL_SPS) if sps.is_none() => sps = Some(nal.to_vec()),
                Some(NAL_PPS) if pps.is_none() => pps = Some(nal.to_vec()),
                _ => {}
            }
        }
        let sps = sps?;
        let (width, height) = sps_size(&sps).unwrap_or((0, 0));
        Some(Self {
            sps,
            pps: pps?,
            width,
            height,
        })
    }
}

/// The NAL units of an Annex B stream (start codes of 3 or 4 bytes).
pub fn annex_b_nals(data: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut starts = Vec::new();
    let mut i = 0;
    while i + 3 <= data.len() {
        if data[i] == 0 && data[i + 1] == 0 && data[i + 2] == 1 {
            starts.push(i + 3);
            i += 3;
        } else {
            i += 1;
        }
    }
    let mut nals = Vec::with_capacity(starts.len());
    for (k, &s) in starts.iter().enumerate() {
        let mut end = starts.get(k + 1).map_or(data.len(), |&n| n - 3);
        // Trailing zeros belong to the next start code (4-byte form) or are padding.
        while end > s && data[end - 1] == 0 {
            end -= 1;
        }
        if end > s {
            nals.push(&data[s..end]);
        }
    }
    nals.into_iter()
}

/// An Annex B access unit as an MP4 sample: each NAL unit prefixed with its 4-byte length.
/// Access unit delimiters are left out. Parameter sets stay in the samples as well as in the
/// `avcC`: a WebRTC sender changes its resolution as bandwidth or CPU varies (and a broadcaster
/// who reconnects may come back with another), each time with a new SPS that the decoder must
/// see in band.
fn length_prefixed(access_unit: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(access_unit.len() + 16);
    for nal in annex_b_nals(access_unit) {
        if nal[0] & 0x1f == NAL_ACCESS_UNIT_DELIMITER {
            continue;
        }
        out.extend_from_slice(&(nal.len() as u32).to_be_bytes());
        out.extend_from_slice(nal);
    }
    out
}

/// The picture size an SPS declares (H.264 §7.3.2.1.1), after cropping.
pub fn sps_size(sps: &[u8]) -> Option<(u16, u16)> {
    // Remove emulation prevention bytes (00 00 03).
    let mut rbsp = Vec::with_capacity(sps.len());
    let mut zeros = 0;
    for &b in sps.get(1..)? {
        if zeros >= 2 && b == 3 {
            zeros = 0;
            continue;
        }
        zeros = if b == 0 { zeros + 1 } else { 0 };
        rbsp.push(b);
    }
    let mut r = BitReader { data: &rbsp, at: 0 };
    let profile_idc = r.bits(8)?;
    r.bits(16)?; // constraint flags, level_idc
    r.ue()?; // seq_parameter_set_id
    let mut chroma_format_idc = 1;
    if matches!(
        profile_idc,
        100 | 110 | 122 | 244 | 44 | 83 | 86 | 118 | 128 | 138 | 139 | 134 | 135
    ) {
        chroma_format_idc = r.ue()?;
        if chroma_format_idc == 3 {
            r.bits(1)?; // separate_colour_plane_flag
        }
        r.ue()?; // bit_depth_luma_minus8
        r.ue()?; // bit_depth_chroma_minus8
        r.bits(1)?; // qpprime_y_zero_transform_bypass_flag
        if r.bits(1)? == 1 {
            let lists = if chroma_format_idc == 3 { 12 } else { 8 };
            for i in 0..lists {
                if r.bits(1)? == 1 {
                    let size = if i < 6 { 16 } else { 64 };
                    let (mut last, mut next) = (8i64, 8i64);
                    for _ in 0..size {
                        if next != 0 {
                            next = (last + r.se()? + 256) % 256;
                        }
                        last = if next == 0 { last } else { next };
                    }
                }
            }
        }
    }
    r.ue()?; // log2_max_frame_num_minus4
    match r.ue()? {
        0 => {
            r.ue()?; // log2_max_pic_order_cnt_lsb_minus4
        }
        1 => {
            r.bits(1)?;
            r.se()?;
            r.se()?;
            for _ in 0..r.ue()? {
                r.se()?;
            }
        }
        _ => {}
    }
    r.ue()?; // max_num_ref_frames
    r.bits(1)?; // gaps_in_frame_num_value_allowed_flag
    let width_mbs = r.ue()? + 1;
    let height_map_units = r.ue()? + 1;
    let frame_mbs_only = r.bits(1)?;
    if frame_mbs_only == 0 {
        r.bits(1)?; // mb_adaptive_frame_field_flag
    }
    r.bits(1)?; // direct_8x8_inference_flag
    let (mut crop_x, mut crop_y) = (0, 0);
    if r.bits(1)? == 1 {
        let (l, rt, t, b) = (r.ue()?, r.ue()?, r.ue()?, r.ue()?);
        let (unit_x, unit_y) = match chroma_format_idc {
            0 => (1, 2 - frame_mbs_only),
            1 => (2, 2 * (2 - frame_mbs_only)),
            2 => (2, 2 - frame_mbs_only),
            _ => (1, 2 - frame_mbs_only),
        };
        crop_x = (l + rt) * unit_x;
        crop_y = (t + b) * unit_y;
    }
    let width = (width_mbs * 16).checked_sub(crop_x)?;
    let height = ((2 - frame_mbs_only) * height_map_units * 16).checked_sub(crop_y)?;
    Some((u16::try_from(width).ok()?, u16::try_from(height).ok()?))
}

struct BitReader<'a> {
    data: &'a [u8],
    at: usize,
}

impl BitReader<'_> {
    fn bits(&mut self, n: usize) -> Option<u32> {
        let mut v = 0u32;
        for _ in 0..n {
            let byte = *self.data.get(self.at / 8)?;
            v = (v << 1) | u32::from((byte >> (7 - self.at % 8)) & 1);
            self.at += 1;
        }
        Some(v)
    }

    /// Exp-Golomb, unsigned.
    fn ue(&mut self) -> Option<u32> {
        let mut zeros = 0;
        while self.bits(1)? == 0 {
            zeros += 1;
            if zeros > 31 {
                return None;
            }
        }
        Some((1u32 << zeros) - 1 + self.bits(zeros)?)
    }

    /// Exp-Golomb, signed.
    fn se(&mut self) -> Option<i64> {
        let k = i64::from(self.ue()?);
        Some(if k % 2 == 1 { (k + 1) / 2 } else { -(k / 2) })
    }
}

/// A box: its size, type and body.
fn put_box(out: &mut Vec<u8>, kind: &[u8; 4], body: impl FnOnce(&mut Vec<u8>)) {
    let at = out.len();
    out.extend_from_slice(&[0; 4]);
    out.extend_from_slice(kind);
    body(out);
    let size = (out.len() - at) as u32;
    out[at..at + 4].copy_from_slice(&size.to_be_bytes());
}

/// A full box: a box whose body starts with a version and 24 bits of flags.
fn put_full_box(
    out: &mut Vec<u8>,
    kind: &[u8; 4],
    version: u8,
    flags: u32,
    body: impl FnOnce(&mut Vec<u8>),
) {
    put_box(out, kind, |b| {
        b.extend_from_slice(&((u32::from(version) << 24) | (flags & 0xff_ffff)).to_be_bytes());
        body(b);
    });
}

fn u16be(out: &mut Vec<u8>, v: u16) {
    out.extend_from_slice(&v.to_be_bytes());
}

fn u32be(out: &mut Vec<u8>, v: u32) {
    out.extend_from_slice(&v.to_be_bytes());
}

/// One sample waiting for its duration, or in a fragment.
struct Sample {
    /// In the track's timescale.
    time: u64,
    duration: u32,
    sync: bool,
    data: Vec<u8>,
}

struct TrackState {
    id: u32,
    timescale: u32,
    pending: Option<Sample>,
    /// Samples with known durations, for the open fragment.
    ready: Vec<Sample>,
    last_duration: u32,
}

impl TrackState {
    fn new(id: u32, timescale: u32) -> Self {
        Self {
            id,
            timescale,
            pending: None,
            ready: Vec::new(),
            last_duration: 0,
        }
    }

    fn ticks(&self, ms: i64) -> u64 {
        ms.max(0) as u64 * u64::from(self.timescale) / 1000
    }

    /// Queues a sample; the pending one, now with its duration, becomes ready.
    fn push(&mut self, time: u64, sync: bool, data: Vec<u8>) {
        // Strictly increasing decode times: equal times (two frames within a millisecond)
        // would give a zero-length sample.
        let time = match &self.pending {
            Some(p) if time <= p.time => p.time + 1,
            _ => time,
        };
        if let Some(mut p) = self.pending.take() {
            p.duration = (time - p.time).min(u64::from(u32::MAX)) as u32;
            self.last_duration = p.duration;
            self.ready.push(p);
        }
        self.pending = Some(Sample {
            time,
            duration: 0,
            sync,
            data,
        });
    }

    /// Ends the track: the pending sample gets `default_ms` (or the previous duration).
    fn flush(&mut self, default_ms: i64) {
        if let Some(mut p) = self.pending.take() {
            p.duration = if self.last_duration > 0 {
                self.last_duration
            } else {
                self.ticks(default_ms) as u32
            };
            self.ready.push(p);
        }
    }
}

pub struct Mp4Writer<W: Write> {
    out: W,
    len: u64,
    video: TrackState,
    audio: Option<TrackState>,
    sequence: u32,
    /// Time (ms) of the open fragment's first video sample.
    fragment_start_ms: Option<i64>,
    end_ms: i64,
}

impl<W: Write> Mp4Writer<W> {
    /// Writes the init segment: `ftyp` and `moov` (H.264 track 1, Opus track 2 when there is
    /// audio).
    pub fn new(
        out: W,
        avc: &AvcConfig,
        audio: Option<super::webm::AudioTrack>,
    ) -> io::Result<Self> {
        let mut head = Vec::with_capacity(1024);
        put_box(&mut head, b"ftyp", |b| {
            b.extend_from_slice(b"isom");
            u32be(b, 0x200);
            for brand in [b"isom", b"iso6", b"iso2", b"avc1", b"mp41"] {
                b.extend_from_slice(brand);
            }
        });
        let track_count = 1 + u32::from(audio.is_some());
        put_box(&mut head, b"moov", |b| {
            put_full_box(b, b"mvhd", 0, 0, |b| {
                u32be(b, 0); // creation_time
                u32be(b, 0); // modification_time
                u32be(b, 1000); // timescale
                u32be(b, 0); // duration: unknown, the fragments say
                u32be(b, 0x0001_0000); // rate
                u16be(b, 0x0100); // volume
                b.extend_from_slice(&[0; 10]);
                MATRIX.iter().for_each(|&m| u32be(b, m));
                b.extend_from_slice(&[0; 24]);
                u32be(b, track_count + 1); // next_track_ID
            });
            trak(b, 1, VIDEO_TIMESCALE, |b| video_entry(b, avc), Some(avc));
            if let Some(a) = audio {
                trak(b, 2, AUDIO_TIMESCALE, |b| opus_entry(b, a), None);
            }
            put_box(b, b"mvex", |b| {
                for id in 1..=track_count {
                    put_full_box(b, b"trex", 0, 0, |b| {
                        u32be(b, id);
                        u32be(b, 1); // default_sample_description_index
                        u32be(b, 0);
                        u32be(b, 0);
                        u32be(b, 0);
                    });
                }
            });
        });
        let mut w = Self {
            out,
            len: 0,
            video: TrackState::new(1, VIDEO_TIMESCALE),
            audio: audio.map(|_| TrackState::new(2, AUDIO_TIMESCALE)),
            sequence: 0,
            fragment_start_ms: None,
            end_ms: 0,
        };
        w.append(&head)?;
        Ok(w)
    }

    /// Bytes in the file so far.
    pub fn bytes_written(&self) -> u64 {
        self.len
    }

    /// The recording's length so far (the end of its last frame).
    pub fn duration_ms(&self) -> i64 {
        self.end_ms
    }

    /// Adds one frame at `timestamp_ms` from the start: video as an Annex B access unit, audio
    /// as an Opus packet. Frames of one track come in timestamp order.
    pub fn write_frame(
        &mut self,
        track: Track,
        timestamp_ms: i64,
        keyframe: bool,
        data: &[u8],
    ) -> io::Result<()> {
        match track {
            Track::Video => {
                let started = self.fragment_start_ms;
                let age = started.map_or(0, |s| timestamp_ms - s);
                let time = self.video.ticks(timestamp_ms);
                self.video.push(time, keyframe, length_prefixed(data));
                // The samples before this one are complete: a keyframe or an old fragment
                // closes with them, and this frame opens the next.
                if started.is_some() && (keyframe || age >= MAX_FRAGMENT_MS) {
                    self.write_fragment()?;
                }
                if self.fragment_start_ms.is_none() {
                    self.fragment_start_ms = Some(timestamp_ms);
                }
                self.end_ms = self.end_ms.max(timestamp_ms);
            }
            Track::Audio => {
                let Some(a) = &mut self.audio else {
                    return Ok(());
                };
                let time = a.ticks(timestamp_ms);
                a.push(time, true, data.to_vec());
                self.end_ms = self.end_ms.max(timestamp_ms + LAST_AUDIO_MS);
                // Video that stalls (lost until its next keyframe) does not hold audio back.
                let started = *self.fragment_start_ms.get_or_insert(timestamp_ms);
                if timestamp_ms - started >= MAX_FRAGMENT_MS {
                    self.write_fragment()?;
                }
            }
        }
        Ok(())
    }

    /// Ends the file: the pending samples go in a last fragment.
    pub fn finish(mut self) -> io::Result<W> {
        self.video.flush(LAST_VIDEO_MS);
        if let Some(a) = &mut self.audio {
            a.flush(LAST_AUDIO_MS);
        }
        self.write_fragment()?;
        self.out.flush()?;
        Ok(self.out)
    }

    /// Writes the ready samples as one `moof`+`mdat`, whole.
    fn write_fragment(&mut self) -> io::Result<()> {
        self.fragment_start_ms = None;
        let mut tracks: Vec<&mut TrackState> = vec![&mut self.video];
        if let Some(a) = &mut self.audio {
            tracks.push(a);
        }
        tracks.retain(|t| !t.ready.is_empty());
        if tracks.is_empty() {
            return Ok(());
        }
        self.sequence += 1;
        // The moof's size does not depend on the data offsets, so build it once with zeros,
        // then patch each trun's offset.
        let mut moof = Vec::new();
        let mut offset_at = Vec::new();
        put_box(&mut moof, b"moof", |b| {
            put_full_box(b, b"mfhd", 0, 0, |b| u32be(b, self.sequence));
            for t in &tracks {
                put_box(b, b"traf", |b| {
                    put_full_box(b, b"tfhd", 0, TFHD_DEFAULT_BASE_IS_MOOF, |b| u32be(b, t.id));
                    put_full_box(b, b"tfdt", 1, 0, |b| {
                        b.extend_from_slice(&t.ready[0].time.to_be_bytes());
                    });
                    let flags = TRUN_DATA_OFFSET
                        | TRUN_SAMPLE_DURATION
                        | TRUN_SAMPLE_SIZE
                        | TRUN_SAMPLE_FLAGS;
                    put_full_box(b, b"trun", 0, flags, |b| {
                        u32be(b, t.ready.len() as u32);
                        offset_at.push(b.len());
                        u32be(b, 0);
                        for s in &t.ready {
                            u32be(b, s.duration);
                            u32be(b, s.data.len() as u32);
                            u32be(
                                b,
                                if s.sync {
                                    SAMPLE_FLAGS_SYNC
                                } else {
                                    SAMPLE_FLAGS_NON_SYNC
                                },
                            );
                        }
                    });
                });
            }
        });
        let data_len: usize = tracks
            .iter()
            .flat_map(|t| t.ready.iter())
            .map(|s| s.data.len())
            .sum();
        let mut data_offset = moof.len() + 8;
        for (t, &at) in tracks.iter().zip(&offset_at) {
            moof[at..at + 4].copy_from_slice(&(data_offset as u32).to_be_bytes());
            data_offset += t.ready.iter().map(|s| s.data.len()).sum::<usize>();
        }
        let mut fragment = moof;
        fragment.reserve(8 + data_len);
        u32be(&mut fragment, (8 + data_len) as u32);
        fragment.extend_from_slice(b"mdat");
        for t in &mut tracks {
            for s in t.ready.drain(..) {
                fragment.extend_from_slice(&s.data);
            }
        }
        self.append(&fragment)
    }

    fn append(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.out.write_all(bytes)?;
        self.out.flush()?;
        self.len += bytes.len() as u64;
        Ok(())
    }
}

/// A `trak` with empty sample tables (the samples are in the fragments).
fn trak(
    out: &mut Vec<u8>,
    id: u32,
    timescale: u32,
    entry: impl FnOnce(&mut Vec<u8>),
    video: Option<&AvcConfig>,
) {
    put_box(out, b"trak", |b| {
        put_full_box(b, b"tkhd", 0, 3, |b| {
            u32be(b, 0); // creation_time
            u32be(b, 0); // modification_time
            u32be(b, id);
            u32be(b, 0);
            u32be(b, 0); // duration
            b.extend_from_slice(&[0; 8]);
            u16be(b, 0); // layer
            u16be(b, 0); // alternate_group
            u16be(b, if video.is_some() { 0 } else { 0x0100 }); // volume
            u16be(b, 0);
            MATRIX.iter().for_each(|&m| u32be(b, m));
            let (w, h) = video.map_or((0, 0), |v| (v.width, v.height));
            u32be(b, u32::from(w) << 16);
            u32be(b, u32::from(h) << 16);
        });
        put_box(b, b"mdia", |b| {
            put_full_box(b, b"mdhd", 0, 0, |b| {
                u32be(b, 0);
                u32be(b, 0);
                u32be(b, timescale);
                u32be(b, 0);
                u16be(b, 0x55c4); // language "und"
                u16be(b, 0);
            });
            put_full_box(b, b"hdlr", 0, 0, |b| {
                u32be(b, 0);
                b.extend_from_slice(if video.is_some() { b"vide" } else { b"soun" });
                b.extend_from_slice(&[0; 12]);
                b.extend_from_slice(if video.is_some() {
                    b"VideoHandler\0"
                } else {
                    b"SoundHandler\0"
                });
            });
            put_box(b, b"minf", |b| {
                if video.is_some() {
                    put_full_box(b, b"vmhd", 0, 1, |b| b.extend_from_slice(&[0; 8]));
                } else {
                    put_full_box(b, b"smhd", 0, 0, |b| u32be(b, 0));
                }
                put_box(b, b"dinf", |b| {
                    put_full_box(b, b"dref", 0, 0, |b| {
                        u32be(b, 1);
                        put_full_box(b, b"url ", 0, 1, |_| {});
                    });
                });
                put_box(b, b"stbl", |b| {
                    put_full_box(b, b"stsd", 0, 0, |b| {
                        u32be(b, 1);
                        entry(b);
                    });
                    put_full_box(b, b"stts", 0, 0, |b| u32be(b, 0));
                    put_full_box(b, b"stsc", 0, 0, |b| u32be(b, 0));
                    put_full_box(b, b"stsz", 0, 0, |b| {
                        u32be(b, 0);
                        u32be(b, 0);
                    });
                    put_full_box(b, b"stco", 0, 0, |b| u32be(b, 0));
                });
            });
        });
    });
}

/// `avc1` with its `avcC` (ISO/IEC 14496-15 §5.3.3).
fn video_entry(out: &mut Vec<u8>, avc: &AvcConfig) {
    put_box(out, b"avc1", |b| {
        b.extend_from_slice(&[0; 6]);
        u16be(b, 1); // data_reference_index
        b.extend_from_slice(&[0; 16]);
        u16be(b, avc.width);
        u16be(b, avc.height);
        u32be(b, 0x0048_0000); // 72 dpi
        u32be(b, 0x0048_0000);
        u32be(b, 0);
        u16be(b, 1); // frame_count
        b.extend_from_slice(&[0; 32]); // compressorname
        u16be(b, 0x0018); // depth
        u16be(b, 0xffff); // pre_defined = -1
        put_box(b, b"avcC", |b| {
            b.push(1); // configurationVersion
            b.extend_from_slice(avc.sps.get(1..4).unwrap_or(&[66, 0, 30]));
            b.push(0xff); // 4-byte NAL lengths
            b.push(0xe1); // one SPS
            u16be(b, avc.sps.len() as u16);
            b.extend_from_slice(&avc.sps);
            b.push(1); // one PPS
            u16be(b, avc.pps.len() as u16);
            b.extend_from_slice(&avc.pps);
        });
    });
}

/// `Opus` with its `dOps` (Opus in ISO-BMFF, §4.3).
fn opus_entry(out: &mut Vec<u8>, audio: super::webm::AudioTrack) {
    put_box(out, b"Opus", |b| {
        b.extend_from_slice(&[0; 6]);
        u16be(b, 1); // data_reference_index
        b.extend_from_slice(&[0; 8]);
        u16be(b, u16::from(audio.channels));
        u16be(b, 16); // samplesize
        u32be(b, 0);
        u32be(b, AUDIO_TIMESCALE << 16);
        put_box(b, b"dOps", |b| {
            b.push(0); // Version
            b.push(audio.channels);
            u16be(b, OPUS_PRE_SKIP);
            u32be(b, audio.sample_rate);
            u16be(b, 0); // OutputGain
            b.push(0); // ChannelMappingFamily
        });
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    /// x264's baseline SPS for 320x240 (`ffmpeg -f lavfi -i testsrc=size=320x240 -c:v libx264
    /// -profile:v baseline`).
    const SPS_320X240: [u8; 24] = [
        0x67, 0x42, 0xc0, 0x0d, 0xd9, 0x01, 0x41, 0xfb, 0x01, 0x10, 0x00, 0x00, 0x03, 0x00, 0x10,
        0x00, 0x00, 0x03, 0x03, 0xc0, 0xf1, 0x42, 0xa4, 0x80,
    ];

    #[test]
    fn the_sps_gives_the_picture_size() {
        assert_eq!(sps_size(&SPS_320X240), Some((320, 240)));
    }

    #[test]
    fn annex_b_becomes_length_prefixed_keeping_parameter_sets_and_dropping_delimiters() {
        let au = [
            0, 0, 0, 1, 0x09, 0xf0, 0, 0, 0, 1, 0x67, 1, 2, 0, 0, 1, 0x68, 3, 0, 0, 0, 1, 0x65, 4,
            5, 6,
        ];
        let cfg = AvcConfig::from_annex_b(&au).unwrap();
        assert_eq!(cfg.sps, [0x67, 1, 2]);
        assert_eq!(cfg.pps, [0x68, 3]);
        assert_eq!(
            length_prefixed(&au),
            [
                0, 0, 0, 3, 0x67, 1, 2, 0, 0, 0, 2, 0x68, 3, 0, 0, 0, 4, 0x65, 4, 5, 6
            ]
        );
    }

    #[test]
    fn a_fragment_is_written_at_each_keyframe() {
        let avc = AvcConfig {
            sps: SPS_320X240.to_vec(),
            pps: vec![0x68, 0xce],
            width: 320,
            height: 240,
        };
        let mut w = Mp4Writer::new(Vec::new(), &avc, None).unwrap();
        let head = w.bytes_written();
        w.write_frame(Track::Video, 0, true, &[0, 0, 1, 0x65, 1])
            .unwrap();
        w.write_frame(Track::Video, 33, false, &[0, 0, 1, 0x41, 2])
            .unwrap();
        assert_eq!(
            w.bytes_written(),
            head,
            "nothing before the fragment closes"
        );
        w.write_frame(Track::Video, 66, true, &[0, 0, 1, 0x65, 3])
            .unwrap();
        assert!(w.bytes_written() > head);
        let out = w.finish().unwrap();
        let moofs = out.windows(4).filter(|w| w == b"moof").count();
        assert_eq!(moofs, 2);
    }
}
