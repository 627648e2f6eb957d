//! A WebM (Matroska) writer for recordings: VP8 or VP9 video, Opus audio, frames as they come.
//!
//! The file is playable at every moment. The Segment starts with an unknown size (live WebM),
//! and each Cluster is built in memory and written whole when it closes: at each video
//! keyframe, and at most every [`MAX_CLUSTER_MS`]. A process killed mid-broadcast leaves a
//! file that plays up to its last closed cluster. When the broadcast ends cleanly,
//! [`WebmWriter::finish`] appends the Cues (a keyframe index, for seeking) and patches three
//! regions reserved at the start: the Segment size, the Duration, and a SeekHead pointing at the
//! Cues (players read it to find them without scanning).

use golive_sfu::VideoCodec;
use std::io::{self, Seek, SeekFrom, Write};

use super::ebml::{
    UNKNOWN_SIZE, put_bytes, put_float, put_id, put_master, put_size, put_size_len, put_str,
    put_uint, void,
};

/// A cluster closes at the latest this long after its first frame, so a killed process loses at
/// most this much (a keyframe closes one sooner).
pub const MAX_CLUSTER_MS: i64 = 1000;
/// Bytes reserved after the Segment's start for the SeekHead written at the end.
const SEEK_HEAD_RESERVED: usize = 96;
/// Bytes reserved after Info for its Duration (an 11-byte element) written at the end.
const DURATION_RESERVED: usize = 16;
/// One Opus frame (20 ms) past the last one, so the duration covers the last frame played.
const LAST_FRAME_MS: i64 = 20;

const EBML: u32 = 0x1a45_dfa3;
const EBML_VERSION: u32 = 0x4286;
const EBML_READ_VERSION: u32 = 0x42f7;
const EBML_MAX_ID_LENGTH: u32 = 0x42f2;
const EBML_MAX_SIZE_LENGTH: u32 = 0x42f3;
const DOC_TYPE: u32 = 0x4282;
const DOC_TYPE_VERSION: u32 = 0x4287;
const DOC_TYPE_READ_VERSION: u32 = 0x4285;
const SEGMENT: u32 = 0x1853_8067;
const SEEK_HEAD: u32 = 0x114d_9b74;
const SEEK: u32 = 0x4dbb;
const SEEK_ID: u32 = 0x53ab;
const SEEK_POSITION: u32 = 0x53ac;
const INFO: u32 = 0x1549_a966;
const TIMESTAMP_SCALE: u32 = 0x2a_d7b1;
const DURATION: u32 = 0x4489;
const MUXING_APP: u32 = 0x4d80;
const WRITING_APP: u32 = 0x5741;
const TRACKS: u32 = 0x1654_ae6b;
const TRACK_ENTRY: u32 = 0xae;
const TRACK_NUMBER: u32 = 0xd7;
const TRACK_UID: u32 = 0x73c5;
const TRACK_TYPE: u32 = 0x83;
const FLAG_LACING: u32 = 0x9c;
const CODEC_ID: u32 = 0x86;
const CODEC_PRIVATE: u32 = 0x63a2;
const CODEC_DELAY: u32 = 0x56aa;
const SEEK_PRE_ROLL: u32 = 0x56bb;
const VIDEO: u32 = 0xe0;
const PIXEL_WIDTH: u32 = 0xb0;
const PIXEL_HEIGHT: u32 = 0xba;
const AUDIO: u32 = 0xe1;
const SAMPLING_FREQUENCY: u32 = 0xb5;
const CHANNELS: u32 = 0x9f;
const CLUSTER: u32 = 0x1f43_b675;
const TIMESTAMP: u32 = 0xe7;
const SIMPLE_BLOCK: u32 = 0xa3;
const CUES: u32 = 0x1c53_bb6b;
const CUE_POINT: u32 = 0xbb;
const CUE_TIME: u32 = 0xb3;
const CUE_TRACK_POSITIONS: u32 = 0xb7;
const CUE_TRACK: u32 = 0xf7;
const CUE_CLUSTER_POSITION: u32 = 0xf1;

const TRACK_TYPE_VIDEO: u64 = 1;
const TRACK_TYPE_AUDIO: u64 = 2;
/// Matroska's Opus seek pre-roll: 80 ms, in nanoseconds.
const OPUS_SEEK_PRE_ROLL_NS: u64 = 80_000_000;
const SIMPLE_BLOCK_KEYFRAME: u8 = 0x80;

/// The video track: codec and picture size (from the first keyframe).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VideoTrack {
    pub codec: VideoCodec,
    pub width: u16,
    pub height: u16,
}

/// The audio track (Opus).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AudioTrack {
    pub channels: u8,
    pub sample_rate: u32,
}

/// Which track a frame belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Track {
    Video,
    Audio,
}

/// The WebM codec id of a video codec, when WebM carries it.
pub fn codec_id(codec: VideoCodec) -> Option<&'static str> {
    match codec {
        VideoCodec::Vp8 => Some("V_VP8"),
        VideoCodec::Vp9 => Some("V_VP9"),
        VideoCodec::H264 | VideoCodec::Av1 => None,
    }
}

/// The picture size a VP8 or VP9 keyframe declares.
pub fn keyframe_size(codec: VideoCodec, frame: &[u8]) -> Option<(u16, u16)> {
    match codec {
        // RFC 6386 §9.1: 3-byte tag, start code 9d 01 2a, then 14-bit width and height (LE).
        VideoCodec::Vp8 => {
            if frame.get(3..6)? != [0x9d, 0x01, 0x2a] {
                return None;
            }
            let w = u16::from_le_bytes([*frame.get(6)?, *frame.get(7)?]) & 0x3fff;
            let h = u16::from_le_bytes([*frame.get(8)?, *frame.get(9)?]) & 0x3fff;
            Some((w, h))
        }
        VideoCodec::Vp9 => vp9_keyframe_size(frame),
        VideoCodec::H264 | VideoCodec::Av1 => None,
    }
}

/// VP9 uncompressed header (VP9 bitstream spec §6.2), up to frame_size() of a keyframe.
fn vp9_keyframe_size(frame: &[u8]) -> Option<(u16, u16)> {
    let mut bits = Bits { data: frame, at: 0 };
    if bits.read(2)? != 2 {
        return None; // frame_marker
    }
    let profile = bits.read(1)? | (bits.read(1)? << 1);
    if profile == 3 {
        bits.read(1)?;
    }
    if bits.read(1)? == 1 {
        return None; // show_existing_frame
    }
    if bits.read(1)? != 0 {
        return None; // frame_type: not a keyframe
    }
    bits.read(2)?; // show_frame, error_resilient_mode
    if bits.read(24)? != 0x49_8342 {
        return None;
    }
    if profile >= 2 {
        bits.read(1)?; // ten_or_twelve_bit
    }
    let color_space = bits.read(3)?;
    const CS_RGB: u32 = 7;
    if color_space != CS_RGB {
        bits.read(1)?; // color_range
        if profile == 1 || profile == 3 {
            bits.read(3)?; // subsampling_x, subsampling_y, reserved_zero
        }
    } else if profile == 1 || profile == 3 {
        bits.read(1)?;
    }
    let w = bits.read(16)? + 1;
    let h = bits.read(16)? + 1;
    Some((u16::try_from(w).ok()?, u16::try_from(h).ok()?))
}

struct Bits<'a> {
    data: &'a [u8],
    at: usize,
}

impl Bits<'_> {
    fn read(&mut self, n: usize) -> Option<u32> {
        let mut v = 0u32;
        for _ in 0..n {
            let byte = *self.data.get(self.at / 8)?;
            v = (v << 1) | u32::from((byte >> (7 - self.at % 8)) & 1);
            self.at += 1;
        }
        Some(v)
    }
}

/// The cluster being filled.
struct Cluster {
    timestamp_ms: i64,
    /// Its first frame is a video keyframe (or the file has no video): a seek target.
    seekable: bool,
    blocks: Vec<u8>,
}

/// One Cues entry.
struct Cue {
    time_ms: i64,
    track: u64,
    /// The cluster's offset from the start of the Segment's data.
    position: u64,
}

pub struct WebmWriter<W: Write + Seek> {
    out: W,
    /// Bytes written so far (the file's length: the writer only appends, except in `finish`).
    len: u64,
    segment_size_at: u64,
    segment_data_start: u64,
    seek_head_at: u64,
    info_at: u64,
    info: Vec<u8>,
    tracks_at: u64,
    video_track: Option<u64>,
    audio_track: Option<u64>,
    cluster: Option<Cluster>,
    cues: Vec<Cue>,
    end_ms: i64,
}

impl<W: Write + Seek> WebmWriter<W> {
    /// Writes the header: EBML, the Segment's start, reserved space, Info and Tracks.
    pub fn new(out: W, video: Option<VideoTrack>, audio: Option<AudioTrack>) -> io::Result<Self> {
        let video_codec = match video {
            Some(v) => Some(codec_id(v.codec).ok_or_else(|| {
                io::Error::new(io::ErrorKind::Unsupported, "WebM carries VP8 or VP9 video")
            })?),
            None => None,
        };
        let mut head = Vec::new();
        put_master(&mut head, EBML, |b| {
            put_uint(b, EBML_VERSION, 1);
            put_uint(b, EBML_READ_VERSION, 1);
            put_uint(b, EBML_MAX_ID_LENGTH, 4);
            put_uint(b, EBML_MAX_SIZE_LENGTH, 8);
            put_str(b, DOC_TYPE, "webm");
            put_uint(b, DOC_TYPE_VERSION, 4);
            put_uint(b, DOC_TYPE_READ_VERSION, 2);
        });
        put_id(&mut head, SEGMENT);
        let segment_size_at = head.len() as u64;
        head.extend_from_slice(&UNKNOWN_SIZE);
        let segment_data_start = head.len() as u64;
        let seek_head_at = head.len() as u64;
        head.extend_from_slice(&void(SEEK_HEAD_RESERVED));
        let info_at = head.len() as u64;
        let info = info_element(None);
        head.extend_from_slice(&info);
        head.extend_from_slice(&void(DURATION_RESERVED));
        let tracks_at = head.len() as u64;
        let mut number = 0;
        let mut next_number = || {
            number += 1;
            number
        };
        let video_track = video.map(|_| next_number());
        let audio_track = audio.map(|_| next_number());
        put_master(&mut head, TRACKS, |b| {
            if let (Some(v), Some(n), Some(id)) = (video, video_track, video_codec) {
                put_master(b, TRACK_ENTRY, |t| {
                    put_uint(t, TRACK_NUMBER, n);
                    put_uint(t, TRACK_UID, n);
                    put_uint(t, TRACK_TYPE, TRACK_TYPE_VIDEO);
                    put_uint(t, FLAG_LACING, 0);
                    put_str(t, CODEC_ID, id);
                    put_master(t, VIDEO, |v2| {
                        put_uint(v2, PIXEL_WIDTH, u64::from(v.width));
                        put_uint(v2, PIXEL_HEIGHT, u64::from(v.height));
                    });
                });
            }
            if let (Some(a), Some(n)) = (audio, audio_track) {
                put_master(b, TRACK_ENTRY, |t| {
                    put_uint(t, TRACK_NUMBER, n);
                    put_uint(t, TRACK_UID, n);
                    put_uint(t, TRACK_TYPE, TRACK_TYPE_AUDIO);
                    put_uint(t, FLAG_LACING, 0);
                    put_str(t, CODEC_ID, "A_OPUS");
                    put_bytes(t, CODEC_PRIVATE, &opus_head(a));
                    put_uint(t, CODEC_DELAY, 0);
                    put_uint(t, SEEK_PRE_ROLL, OPUS_SEEK_PRE_ROLL_NS);
                    put_master(t, AUDIO, |a2| {
                        put_float(a2, SAMPLING_FREQUENCY, f64::from(a.sample_rate));
                        put_uint(a2, CHANNELS, u64::from(a.channels));
                    });
                });
            }
        });
        let mut w = Self {
            out,
            len: 0,
            segment_size_at,
            segment_data_start,
            seek_head_at,
            info_at,
            info,
            tracks_at,
            video_track,
            audio_track,
            cluster: None,
            cues: Vec::new(),
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

    /// Adds one frame at `timestamp_ms` from the start. Frames of one track must come in
    /// timestamp order; tracks may interleave loosely (a block may sit a little before its
    /// cluster's start).
    pub fn write_frame(
        &mut self,
        track: Track,
        timestamp_ms: i64,
        keyframe: bool,
        data: &[u8],
    ) -> io::Result<()> {
        let number = match track {
            Track::Video => self.video_track,
            Track::Audio => self.audio_track,
        };
        let Some(number) = number else {
            return Ok(());
        };
        let video_keyframe = track == Track::Video && keyframe;
        if let Some(c) = &self.cluster {
            let age = timestamp_ms - c.timestamp_ms;
            let close = (video_keyframe && !c.blocks.is_empty())
                || age >= MAX_CLUSTER_MS
                || age < i64::from(i16::MIN);
            if close {
                self.close_cluster()?;
            }
        }
        let seekable = video_keyframe || self.video_track.is_none();
        let c = self.cluster.get_or_insert_with(|| Cluster {
            timestamp_ms,
            seekable,
            blocks: Vec::new(),
        });
        let relative = (timestamp_ms - c.timestamp_ms).clamp(i64::from(i16::MIN), 0x7fff) as i16;
        put_id(&mut c.blocks, SIMPLE_BLOCK);
        put_size(&mut c.blocks, 4 + data.len() as u64);
        put_size_len(&mut c.blocks, number, 1);
        c.blocks.extend_from_slice(&relative.to_be_bytes());
        c.blocks
            .push(if keyframe { SIMPLE_BLOCK_KEYFRAME } else { 0 });
        c.blocks.extend_from_slice(data);
        let frame_end = match track {
            Track::Audio => timestamp_ms + LAST_FRAME_MS,
            Track::Video => timestamp_ms,
        };
        self.end_ms = self.end_ms.max(frame_end);
        Ok(())
    }

    /// Writes the open cluster, if any (it is written whole, so a reader never sees half of it).
    pub fn close_cluster(&mut self) -> io::Result<()> {
        let Some(c) = self.cluster.take() else {
            return Ok(());
        };
        let position = self.len - self.segment_data_start;
        if c.seekable {
            self.cues.push(Cue {
                time_ms: c.timestamp_ms,
                track: self.video_track.or(self.audio_track).unwrap_or(1),
                position,
            });
        }
        let mut body = Vec::with_capacity(c.blocks.len() + 12);
        put_uint(&mut body, TIMESTAMP, c.timestamp_ms.max(0) as u64);
        body.extend_from_slice(&c.blocks);
        let mut el = Vec::with_capacity(body.len() + 12);
        put_bytes(&mut el, CLUSTER, &body);
        self.append(&el)
    }

    /// Ends the file: the last cluster, the Cues, then the Segment size, Duration and SeekHead
    /// patched in.
    pub fn finish(mut self) -> io::Result<W> {
        self.close_cluster()?;
        let cues_at = self.len;
        let mut cues = Vec::new();
        put_master(&mut cues, CUES, |b| {
            for cue in &self.cues {
                put_master(b, CUE_POINT, |p| {
                    put_uint(p, CUE_TIME, cue.time_ms.max(0) as u64);
                    put_master(p, CUE_TRACK_POSITIONS, |t| {
                        put_uint(t, CUE_TRACK, cue.track);
                        put_uint(t, CUE_CLUSTER_POSITION, cue.position);
                    });
                });
            }
        });
        if !self.cues.is_empty() {
            self.append(&cues)?;
        }
        let data_start = self.segment_data_start;
        let mut seek_head = Vec::new();
        put_master(&mut seek_head, SEEK_HEAD, |b| {
            let mut entry = |id: u32, at: u64| {
                put_master(b, SEEK, |s| {
                    let mut id_bytes = Vec::new();
                    put_id(&mut id_bytes, id);
                    put_bytes(s, SEEK_ID, &id_bytes);
                    put_uint(s, SEEK_POSITION, at - data_start);
                });
            };
            entry(INFO, self.info_at);
            entry(TRACKS, self.tracks_at);
            if !self.cues.is_empty() {
                entry(CUES, cues_at);
            }
        });
        self.patch(self.seek_head_at, SEEK_HEAD_RESERVED, &seek_head)?;
        let info = info_element(Some(self.end_ms as f64));
        let info_at = self.info_at;
        self.patch(info_at, self.info.len() + DURATION_RESERVED, &info)?;
        let mut size = Vec::new();
        put_size_len(&mut size, self.len - self.segment_data_start, 8);
        self.out.seek(SeekFrom::Start(self.segment_size_at))?;
        self.out.write_all(&size)?;
        self.out.seek(SeekFrom::Start(self.len))?;
        self.out.flush()?;
        Ok(self.out)
    }

    /// Writes `content` over a reserved region of `region` bytes, the rest a Void.
    fn patch(&mut self, at: u64, region: usize, content: &[u8]) -> io::Result<()> {
        let rest = region
            .checked_sub(content.len())
            .filter(|r| *r != 1)
            .ok_or_else(|| io::Error::other("reserved WebM region too small"))?;
        self.out.seek(SeekFrom::Start(at))?;
        self.out.write_all(content)?;
        if rest > 0 {
            self.out.write_all(&void(rest))?;
        }
        Ok(())
    }

    fn append(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.out.write_all(bytes)?;
        self.len += bytes.len() as u64;
        Ok(())
    }
}

fn info_element(duration_ms: Option<f64>) -> Vec<u8> {
    let mut info = Vec::new();
    put_master(&mut info, INFO, |b| {
        put_uint(b, TIMESTAMP_SCALE, 1_000_000);
        if let Some(d) = duration_ms {
            put_float(b, DURATION, d);
        }
        put_str(b, MUXING_APP, "golive");
        put_str(b, WRITING_APP, "golive");
    });
    info
}

/// RFC 7845 §5.1 identification header, which Matroska's Opus mapping puts in CodecPrivate.
fn opus_head(a: AudioTrack) -> Vec<u8> {
    let mut h = b"OpusHead".to_vec();
    h.push(1); // version
    h.push(a.channels);
    h.extend_from_slice(&0u16.to_le_bytes()); // pre-skip: RTP carries none
    h.extend_from_slice(&a.sample_rate.to_le_bytes());
    h.extend_from_slice(&0i16.to_le_bytes()); // output gain
    h.push(0); // channel mapping family 0: mono or stereo
    h
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    #[test]
    fn vp8_and_vp9_keyframes_give_their_size() {
        let vp8 = [0x50, 0x02, 0x00, 0x9d, 0x01, 0x2a, 0x40, 0x01, 0xf0, 0x00];
        assert_eq!(keyframe_size(VideoCodec::Vp8, &vp8), Some((320, 240)));
        assert_eq!(keyframe_size(VideoCodec::Vp8, &vp8[..8]), None);
        // VP9 profile 0 keyframe: marker 10, profile 00, show_existing 0, frame_type 0,
        // show_frame 1, error_res 0, sync code, color_space 001 (BT.601), color_range 0, then
        // width-1 = 639 and height-1 = 479.
        let mut bits: Vec<u8> = Vec::new();
        let mut push = |v: u32, n: usize| {
            for i in (0..n).rev() {
                bits.push(((v >> i) & 1) as u8);
            }
        };
        push(0b10, 2);
        push(0, 2);
        push(0, 1);
        push(0, 1);
        push(1, 1);
        push(0, 1);
        push(0x49_8342, 24);
        push(1, 3);
        push(0, 1);
        push(639, 16);
        push(479, 16);
        let bytes: Vec<u8> = bits
            .chunks(8)
            .map(|c| {
                c.iter()
                    .enumerate()
                    .fold(0u8, |b, (i, &x)| b | (x << (7 - i)))
            })
            .collect();
        assert_eq!(keyframe_size(VideoCodec::Vp9, &bytes), Some((640, 480)));
    }

    #[test]
    fn clusters_close_at_keyframes_and_with_age_and_cues_point_at_keyframe_clusters() {
        let video = VideoTrack {
            codec: VideoCodec::Vp8,
            width: 320,
            height: 240,
        };
        let audio = AudioTrack {
            channels: 2,
            sample_rate: 48_000,
        };
        let mut w = WebmWriter::new(Cursor::new(Vec::new()), Some(video), Some(audio)).unwrap();
        let header = w.bytes_written();
        w.write_frame(Track::Video, 0, true, b"key").unwrap();
        w.write_frame(Track::Audio, 5, true, b"opus").unwrap();
        assert_eq!(
            w.bytes_written(),
            header,
            "an open cluster is not written yet"
        );
        w.write_frame(Track::Video, 66, false, b"delta").unwrap();
        w.write_frame(Track::Video, 1000, true, b"key2").unwrap();
        let after_first = w.bytes_written();
        assert!(after_first > header, "a keyframe closed the first cluster");
        // No keyframe for a while: the cluster still closes after MAX_CLUSTER_MS.
        w.write_frame(Track::Video, 1000 + MAX_CLUSTER_MS, false, b"d")
            .unwrap();
        assert!(w.bytes_written() > after_first);
        assert_eq!(
            w.cues.len(),
            2,
            "only clusters starting at a keyframe are cues"
        );
        let bytes = w.finish().unwrap().into_inner();
        assert_eq!(&bytes[..4], &[0x1a, 0x45, 0xdf, 0xa3]);
        // The segment size was patched: no "unknown" size left.
        assert!(!bytes.windows(8).any(|w| w == UNKNOWN_SIZE));
        // The SeekHead (0x114d9b74) sits right after the Segment header.
        let seg = bytes
            .windows(4)
            .position(|w| w == [0x18, 0x53, 0x80, 0x67])
            .unwrap();
        assert_eq!(&bytes[seg + 12..seg + 16], &[0x11, 0x4d, 0x9b, 0x74]);
        // Cues (0x1c53bb6b) at the end.
        assert!(bytes.windows(4).any(|w| w == [0x1c, 0x53, 0xbb, 0x6b]));
    }

    #[test]
    fn h264_is_not_webm() {
        let video = VideoTrack {
            codec: VideoCodec::H264,
            width: 0,
            height: 0,
        };
        assert!(WebmWriter::new(Cursor::new(Vec::new()), Some(video), None).is_err());
    }
}
