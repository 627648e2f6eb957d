//! One broadcast's recording: the broadcaster's packets in, a media file (WebM for VP8/VP9,
//! fragmented MP4 for H.264) and a timeline out.
//!
//! Single-threaded and clock-free (every call takes the `Instant`), so a test drives it with
//! synthetic or real packets and reads the file it wrote. The thread around it lives in the
//! parent module.
//!
//! Timing: the file's time 0 is the arrival of the first frame written (the first video keyframe,
//! or the first audio frame of a stream without video). Each track of each source epoch is
//! anchored at the arrival of its first frame and runs on its RTP timestamps from there, so
//! audio and video stay in step, and a broadcaster who reconnects (a new epoch, new random
//! timestamps) continues the same file after the time it was away. This timing is the same
//! for both containers: the writers only receive milliseconds from the start.
//!
//! Simulcast: a broadcaster's layers are each their own stream of sequence numbers and
//! timestamps, and the recording keeps one: the highest the broadcaster is sending. A higher
//! layer that starts (or comes back) is taken at its next keyframe; when the recorded layer
//! stops (no packet for [`LAYER_IDLE`]), the highest one still sent is taken at its next
//! keyframe. Either way a keyframe is asked for, and the switch is written like a reconnect:
//! the new layer's video is anchored where the recording is, so the file runs on without a
//! gap or a jump. Until the switch, the layer being recorded goes on, so the picture never
//! stops. Layers differ in size: a decoder takes the new size from the keyframe (VP8/VP9 frame
//! headers, H.264 parameter sets, which the MP4 samples keep in band); the file's header
//! carries the size of its first keyframe.

use golive_proto::{ServerMessage, StreamName};
use golive_sfu::depacketize::{Depacketizer, Frame, TrackFormat};
use golive_sfu::simulcast::MAX_LAYERS;
use golive_sfu::{Layer, MediaKind, SourcePacket, StreamMedia, VideoCodec};
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::{Instant, SystemTime};

use super::mp4::{AvcConfig, Mp4Writer};
use super::webm::{self, AudioTrack, Track, VideoTrack, WebmWriter};
use super::{Container, ReplayId, ReplayMeta, unix_ms};

/// Audio channels written in the Opus header: WebRTC's Opus is always negotiated as stereo and
/// the decoder takes mono packets in a stereo stream.
const OPUS_CHANNELS: u8 = 2;
const OPUS_RATE: u32 = 48_000;
/// When a track's RTP time falls this far behind the arrival times, it is anchored again at the
/// arrival: a sender that paused, or whose timestamps run slow, would otherwise drift out of step
/// with the other track and with the wall clock the timeline uses. Network jitter stays well
/// under it.
pub const RESYNC_MS: i64 = 250;
/// A simulcast layer with no packet for this long is taken as stopped (a broadcaster drops its
/// top layer when its own uplink or CPU falls short). The SFU moves its viewers on the same
/// span.
pub const LAYER_IDLE: std::time::Duration = std::time::Duration::from_millis(500);

/// Why a broadcast cannot be recorded.
#[derive(Debug, PartialEq, Eq)]
pub enum Unrecordable {
    /// AV1 (not written yet), or audio other than Opus.
    Codec(String),
}

/// The container a stream's video codec is recorded in.
pub fn container_for(video: Option<VideoCodec>) -> Option<Container> {
    match video {
        None | Some(VideoCodec::Vp8 | VideoCodec::Vp9) => Some(Container::Webm),
        Some(VideoCodec::H264) => Some(Container::Mp4),
        Some(VideoCodec::Av1) => None,
    }
}

/// The file being written, in its container.
enum MediaWriter {
    Webm(WebmWriter<File>),
    Mp4(Mp4Writer<File>),
}

impl MediaWriter {
    fn bytes_written(&self) -> u64 {
        match self {
            Self::Webm(w) => w.bytes_written(),
            Self::Mp4(w) => w.bytes_written(),
        }
    }

    fn duration_ms(&self) -> i64 {
        match self {
            Self::Webm(w) => w.duration_ms(),
            Self::Mp4(w) => w.duration_ms(),
        }
    }

    fn write_frame(
        &mut self,
        track: Track,
        ms: i64,
        keyframe: bool,
        data: &[u8],
    ) -> io::Result<()> {
        match self {
            Self::Webm(w) => w.write_frame(track, ms, keyframe, data),
            Self::Mp4(w) => w.write_frame(track, ms, keyframe, data),
        }
    }

    fn finish(self) -> io::Result<File> {
        match self {
            Self::Webm(w) => w.finish(),
            Self::Mp4(w) => w.finish(),
        }
    }
}

/// A track's timing within one source epoch.
#[derive(Debug, Clone, Copy)]
struct TrackClock {
    epoch: u64,
    clock_rate: u32,
    base_ms: i64,
    base_ext: i64,
    last_ts: u32,
    last_ext: i64,
}

impl TrackClock {
    /// The time of RTP timestamp `ts` that arrived at `arrival_ms`.
    fn ms(&mut self, ts: u32, arrival_ms: i64) -> i64 {
        let ext = self.last_ext + i64::from(ts.wrapping_sub(self.last_ts) as i32);
        self.last_ts = ts;
        self.last_ext = ext;
        let ms = self.base_ms + (ext - self.base_ext) * 1000 / i64::from(self.clock_rate);
        if arrival_ms - ms > RESYNC_MS {
            self.base_ms = arrival_ms;
            self.base_ext = ext;
            return arrival_ms;
        }
        ms
    }
}

pub struct Recorder {
    pub meta: ReplayMeta,
    media_path: PathBuf,
    meta_path: PathBuf,
    timeline: File,
    video_codec: Option<VideoCodec>,
    video_clock_rate: u32,
    has_audio: bool,
    writer: Option<MediaWriter>,
    container: Container,
    /// H.264 parameter sets seen before the file starts (they may precede the keyframe's
    /// access unit).
    avc: Option<AvcConfig>,
    /// Arrival of the file's time 0.
    t0: Option<Instant>,
    epoch: Option<u64>,
    video: Option<Depacketizer>,
    audio: Option<Depacketizer>,
    clocks: [Option<TrackClock>; 2],
    last_ms: [i64; 2],
    /// Frames written per track: a track's new clock (a reconnect, a layer move) starts after
    /// its last frame, never on it.
    frames_written: [u64; 2],
    /// The simulcast layer whose video is recorded (`None` until the first video packet), and
    /// when each layer's video last arrived.
    video_layer: Option<Layer>,
    layer_seen_at: [Option<Instant>; MAX_LAYERS],
    /// The layer a keyframe was last asked for (one request per move).
    asked_layer: Option<Layer>,
    /// Times the recording moved to another layer.
    pub layer_switches: u64,
    keyframe_wanted: bool,
    /// Frames dropped by the depacketizers of earlier epochs.
    pub frames_dropped: u64,
}

fn slot(kind: MediaKind) -> usize {
    match kind {
        MediaKind::Audio => 0,
        MediaKind::Video => 1,
    }
}

impl Recorder {
    /// Whether the stream's codecs can be recorded.
    pub fn check(media: &StreamMedia) -> Result<(), Unrecordable> {
        if let Some(c) = media.video.as_ref().and_then(|c| c.video)
            && container_for(Some(c)).is_none()
        {
            return Err(Unrecordable::Codec(format!(
                "{c:?} video is not recorded yet (WebM carries VP8 and VP9, MP4 H.264)"
            )));
        }
        if let Some(a) = &media.audio
            && !a.name.eq_ignore_ascii_case("opus")
        {
            return Err(Unrecordable::Codec(format!(
                "{} audio is not recorded (recordings carry Opus)",
                a.name
            )));
        }
        Ok(())
    }

    /// Starts the recording `id` in `dir`: its metadata and an empty timeline at once, the media
    /// file with its first frame.
    pub fn create(
        dir: &Path,
        id: ReplayId,
        stream: &StreamName,
        title: Option<String>,
        media: &StreamMedia,
    ) -> io::Result<Self> {
        Self::check(media).map_err(|Unrecordable::Codec(m)| io::Error::other(m))?;
        let video_codec = media.video.as_ref().and_then(|c| c.video);
        let container = container_for(video_codec).unwrap_or_default();
        let meta = ReplayMeta {
            id: id.as_str().to_owned(),
            stream: stream.to_string(),
            title,
            started_unix_ms: unix_ms(SystemTime::now()),
            ended_unix_ms: None,
            duration_ms: 0,
            bytes: 0,
            video: media.video.as_ref().map(|c| c.name.clone()),
            audio: media.audio.as_ref().map(|c| c.name.clone()),
            complete: false,
            stopped: None,
            container,
        };
        let meta_path = dir.join(format!("{id}.json"));
        let timeline = OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join(format!("{id}.timeline.jsonl")))?;
        let r = Self {
            media_path: dir.join(format!("{id}.{}", container.extension())),
            meta_path,
            meta,
            timeline,
            video_codec,
            video_clock_rate: media.video.as_ref().map_or(90_000, |c| c.clock_rate.max(1)),
            has_audio: media.audio.is_some(),
            writer: None,
            container,
            avc: None,
            t0: None,
            epoch: None,
            video: None,
            audio: None,
            clocks: [None, None],
            last_ms: [0, 0],
            frames_written: [0, 0],
            video_layer: None,
            layer_seen_at: [None; MAX_LAYERS],
            asked_layer: None,
            layer_switches: 0,
            keyframe_wanted: false,
            frames_dropped: 0,
        };
        r.write_meta()?;
        Ok(r)
    }

    /// Bytes of media written so far.
    pub fn bytes(&self) -> u64 {
        self.writer.as_ref().map_or(0, MediaWriter::bytes_written)
    }

    /// Whether a keyframe should be asked of the broadcaster (after a loss or at the start).
    pub fn poll_keyframe_request(&mut self) -> bool {
        std::mem::take(&mut self.keyframe_wanted)
    }

    /// One packet of the broadcaster.
    pub fn handle_packet(&mut self, p: &SourcePacket, now: Instant) -> io::Result<()> {
        if usize::from(p.layer.0) >= MAX_LAYERS {
            return Ok(());
        }
        if self.epoch != Some(p.epoch) {
            // The broadcaster reconnected: what the old source completed goes in, then the new
            // source starts at its own keyframe.
            self.finish_epoch(now)?;
            self.epoch = Some(p.epoch);
            self.video = self
                .video_codec
                .and_then(|c| Depacketizer::new(TrackFormat::Video(c)));
            self.audio = self
                .has_audio
                .then(|| Depacketizer::new(TrackFormat::Audio))
                .flatten();
            // A new broadcaster session counts its layers afresh.
            self.video_layer = None;
            self.layer_seen_at = [None; MAX_LAYERS];
            self.asked_layer = None;
        }
        if p.kind == MediaKind::Video && !self.follow_layer(p, now)? {
            return Ok(());
        }
        let d = match p.kind {
            MediaKind::Video => self.video.as_mut(),
            MediaKind::Audio => self.audio.as_mut(),
        };
        let Some(d) = d else { return Ok(()) };
        d.handle_packet(p.seq, p.timestamp, p.marker, p.payload.clone());
        self.keyframe_wanted |= d.poll_keyframe_request();
        self.drain(p.kind, now)
    }

    /// Whether a video packet is of the layer recorded, after moving to its layer when it is
    /// the highest being sent and starts a keyframe (see the module docs).
    fn follow_layer(&mut self, p: &SourcePacket, now: Instant) -> io::Result<bool> {
        self.layer_seen_at[usize::from(p.layer.0)] = Some(now);
        let active = |at: &Option<Instant>| {
            at.is_some_and(|at| now.saturating_duration_since(at) < LAYER_IDLE)
        };
        let highest = (0..MAX_LAYERS)
            .rev()
            .find(|&l| active(&self.layer_seen_at[l]))
            .map_or(p.layer, |l| Layer(l as u8));
        let Some(current) = self.video_layer else {
            // The first video: whatever layer it is, the highest seen so far.
            self.video_layer = Some(highest);
            return Ok(p.layer == highest);
        };
        if p.layer == current {
            return Ok(true);
        }
        if highest == current || p.layer != highest {
            return Ok(false);
        }
        if !p.keyframe_start {
            if self.asked_layer != Some(highest) {
                self.asked_layer = Some(highest);
                self.keyframe_wanted = true;
            }
            return Ok(false);
        }
        // The move: what the old layer completed goes in, then this layer's video starts at
        // this keyframe, anchored where the file is (a new timestamp line, like a reconnect).
        if let Some(d) = self.video.as_mut() {
            d.finish();
            self.drain(MediaKind::Video, now)?;
        }
        if let Some(d) = self.video.take() {
            self.frames_dropped += d.stats().frames_dropped;
        }
        self.video = self
            .video_codec
            .and_then(|c| Depacketizer::new(TrackFormat::Video(c)));
        self.clocks[slot(MediaKind::Video)] = None;
        self.video_layer = Some(highest);
        self.asked_layer = None;
        self.layer_switches += 1;
        Ok(true)
    }

    /// A timeline event (chat, removal, hearts) at `now`.
    pub fn handle_timeline(&mut self, event: &ServerMessage, now: Instant) -> io::Result<()> {
        let t_ms = self
            .t0
            .map_or(0, |t0| now.saturating_duration_since(t0).as_millis() as u64);
        let line = serde_json::json!({ "t_ms": t_ms, "event": event });
        // One write per line, straight to the file: a killed process loses no event it logged.
        let mut text = line.to_string();
        text.push('\n');
        self.timeline.write_all(text.as_bytes())
    }

    /// Ends the recording: the file is completed (Cues, duration) and the metadata says so.
    pub fn finish(mut self, now: Instant, stopped: Option<String>) -> io::Result<ReplayMeta> {
        self.finish_epoch(now)?;
        if let Some(w) = self.writer.take() {
            self.meta.duration_ms = w.duration_ms().max(0) as u64;
            // The size once the end is written (Cues, or the last fragment).
            let file = w.finish()?;
            file.sync_all()?;
            self.meta.bytes = file.metadata()?.len();
        }
        self.meta.ended_unix_ms = Some(unix_ms(SystemTime::now()));
        self.meta.complete = true;
        self.meta.stopped = stopped;
        self.write_meta()?;
        Ok(self.meta)
    }

    fn finish_epoch(&mut self, now: Instant) -> io::Result<()> {
        for kind in [MediaKind::Video, MediaKind::Audio] {
            let d = match kind {
                MediaKind::Video => self.video.as_mut(),
                MediaKind::Audio => self.audio.as_mut(),
            };
            if let Some(d) = d {
                d.finish();
                self.drain(kind, now)?;
            }
        }
        for d in [self.video.take(), self.audio.take()].into_iter().flatten() {
            self.frames_dropped += d.stats().frames_dropped;
        }
        Ok(())
    }

    fn drain(&mut self, kind: MediaKind, now: Instant) -> io::Result<()> {
        loop {
            let d = match kind {
                MediaKind::Video => self.video.as_mut(),
                MediaKind::Audio => self.audio.as_mut(),
            };
            let Some(frame) = d.and_then(Depacketizer::poll_frame) else {
                return Ok(());
            };
            self.write(kind, frame, now)?;
        }
    }

    fn write(&mut self, kind: MediaKind, frame: Frame, now: Instant) -> io::Result<()> {
        if self.writer.is_none() && !self.open(kind, &frame, now)? {
            return Ok(());
        }
        let Some(t0) = self.t0 else { return Ok(()) };
        let epoch = self.epoch.unwrap_or_default();
        let clock_rate = match kind {
            MediaKind::Video => self.video_clock_rate,
            MediaKind::Audio => OPUS_RATE,
        };
        let last = self.last_ms[slot(kind)];
        let arrival = now.saturating_duration_since(t0).as_millis() as i64;
        let clock = match &mut self.clocks[slot(kind)] {
            Some(c) if c.epoch == epoch => c,
            c => {
                let ext = i64::from(frame.timestamp);
                // Two frames of one track at the same time is a muxing error: the layer moved
                // to (or the source come back) starts a millisecond after the last frame at
                // least.
                let after_last = last + i64::from(self.frames_written[slot(kind)] > 0);
                c.insert(TrackClock {
                    epoch,
                    clock_rate,
                    base_ms: arrival.max(after_last),
                    base_ext: ext,
                    last_ts: frame.timestamp,
                    last_ext: ext,
                })
            }
        };
        // Never backwards within a track (a sender's timestamp jump, a reconnect).
        let ms = clock.ms(frame.timestamp, arrival).max(last);
        self.last_ms[slot(kind)] = ms;
        let track = match kind {
            MediaKind::Video => Track::Video,
            MediaKind::Audio => Track::Audio,
        };
        if let Some(w) = self.writer.as_mut() {
            w.write_frame(track, ms, frame.keyframe, &frame.data)?;
            self.frames_written[slot(kind)] += 1;
        }
        Ok(())
    }

    /// Creates the media file at the first frame that can start it; returns whether it exists.
    fn open(&mut self, kind: MediaKind, frame: &Frame, now: Instant) -> io::Result<bool> {
        let audio = self.has_audio.then_some(AudioTrack {
            channels: OPUS_CHANNELS,
            sample_rate: OPUS_RATE,
        });
        if self.container == Container::Mp4 {
            if kind != MediaKind::Video {
                return Ok(false);
            }
            if let Some(avc) = AvcConfig::from_annex_b(&frame.data) {
                self.avc = Some(avc);
            }
            // The file starts at a keyframe whose parameter sets are known.
            let (true, Some(avc)) = (frame.keyframe, &self.avc) else {
                return Ok(false);
            };
            let file = File::create(&self.media_path)?;
            self.writer = Some(MediaWriter::Mp4(Mp4Writer::new(file, avc, audio)?));
            self.t0 = Some(now);
            return Ok(true);
        }
        let video = match (self.video_codec, kind) {
            (Some(codec), MediaKind::Video) => {
                let (width, height) = webm::keyframe_size(codec, &frame.data).unwrap_or((0, 0));
                Some(VideoTrack {
                    codec,
                    width,
                    height,
                })
            }
            // A stream with video starts at its first keyframe; audio before it is dropped.
            (Some(_), MediaKind::Audio) => return Ok(false),
            (None, _) => None,
        };
        let file = File::create(&self.media_path)?;
        self.writer = Some(MediaWriter::Webm(WebmWriter::new(file, video, audio)?));
        self.t0 = Some(now);
        Ok(true)
    }

    /// Rewrites the metadata (write to a temporary file, then rename: never half a file).
    pub fn write_meta(&self) -> io::Result<()> {
        let mut meta = self.meta.clone();
        if !meta.complete {
            meta.bytes = self.bytes();
            meta.duration_ms = self
                .writer
                .as_ref()
                .map_or(0, |w| w.duration_ms().max(0) as u64);
        }
        let tmp = self.meta_path.with_extension("json.tmp");
        std::fs::write(
            &tmp,
            serde_json::to_vec_pretty(&meta).map_err(io::Error::other)?,
        )?;
        std::fs::rename(&tmp, &self.meta_path)
    }
}
