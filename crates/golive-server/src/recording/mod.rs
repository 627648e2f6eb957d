//! Replays: every broadcast recorded as it comes, without decoding, with its chat and hearts.
//!
//! # How a packet becomes a replay
//!
//! The worker that hosts a broadcaster hands each of its packets (the `Arc<SourcePacket>` it
//! already shares with other workers) to [`RecordingTaps::tap`]: one map lookup and a
//! `try_send` into the broadcast's bounded queue. The media path never waits for the disk: when
//! the queue is full the packet is dropped and counted, and the depacketizer, seeing the gap,
//! skips to the next keyframe and asks for one. A thread per recording drains the queue into a
//! [`recorder::Recorder`] (depacketize, then WebM or MP4), and writes the chat and hearts the
//! directory reports into a timeline beside the file.
//!
//! # Files
//!
//! In `--record-dir`, per replay `<id>`: `<id>.webm` or `<id>.mp4` (the media: VP8/VP9 in WebM,
//! H.264 in fragmented MP4), `<id>.timeline.jsonl` (one `{"t_ms":…,"event":{…}}` per chat
//! message, removal or heart batch, `t_ms` from the start of the media) and `<id>.json` (the [`ReplayMeta`]). Replays older than the retention are
//! deleted, all three files at once.
//!
//! # Life of a recording
//!
//! It starts with the broadcast ([`Recordings::publish`]); a broadcaster whose connection was
//! lost and who publishes again within the grace period continues it ([`Recordings::end`] with
//! `lost`); it ends with the broadcast, or earlier when the free disk space falls under the
//! floor or the disk refuses a write (the broadcaster is told with `recording_stopped`, and the
//! broadcast goes on).

pub mod ebml;
pub mod mp4;
pub mod recorder;
pub mod webm;

use golive_proto::{RecordingStopReason, ServerMessage, StreamName};
use golive_sfu::{SourcePacket, StreamMedia};
use prometheus::{Encoder, IntCounter, IntGauge, Registry, TextEncoder};
use serde::{Deserialize, Serialize};
use std::collections::{HashMap, HashSet};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime};

use crate::outbox::{Outbox, Outgoing};
use crate::worker::{Command, WorkerHandle};
use recorder::{Recorder, Unrecordable};

/// Packets a recording may have queued; beyond, they are dropped (about 10 s of a 1.5 Mbit/s
/// broadcast: far more than a disk hiccup).
pub const RECORDER_QUEUE_PACKETS: usize = 4096;
/// How often a recording looks at the free disk space and rewrites its metadata.
pub const DISK_CHECK_INTERVAL: Duration = Duration::from_secs(2);
/// How often expired replays are looked for.
pub const RETENTION_SWEEP_INTERVAL: Duration = Duration::from_secs(600);
/// A recording thread wakes at least this often (control messages, deadlines).
const RECORDER_WAKE: Duration = Duration::from_millis(50);
/// At shutdown, how long recordings get to complete their files.
pub const FINISH_TIMEOUT: Duration = Duration::from_secs(3);
/// Replays `/api/replays` lists at most.
pub const MAX_LISTED: usize = 100;

/// Identifies a replay: `<stream>-<start in unix milliseconds>`. Only `A-Z a-z 0-9 _ -`, so it is
/// safe as a file name and in a URL.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ReplayId(String);

impl ReplayId {
    fn new(stream: &StreamName, at: SystemTime) -> Self {
        Self(format!("{stream}-{}", unix_ms(at)))
    }

    /// Checks an id from a URL.
    pub fn parse(s: &str) -> Option<Self> {
        let ok = !s.is_empty()
            && s.len() <= 96
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
        ok.then(|| Self(s.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ReplayId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// What `<id>.json` holds, and `/api/replays` lists.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ReplayMeta {
    pub id: String,
    pub stream: String,
    pub title: Option<String>,
    pub started_unix_ms: u64,
    /// Unset while the broadcast is being recorded (or when the server died recording it).
    pub ended_unix_ms: Option<u64>,
    pub duration_ms: u64,
    pub bytes: u64,
    pub video: Option<String>,
    pub audio: Option<String>,
    /// The file was ended cleanly (it has its Cues and duration).
    pub complete: bool,
    /// Why recording stopped before the broadcast ended, if it did.
    pub stopped: Option<String>,
    /// The media file's container (replays recorded before MP4 existed are WebM).
    #[serde(default)]
    pub container: Container,
}

/// A replay's media container: WebM for VP8/VP9 (or audio only), fragmented MP4 for H.264.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Container {
    #[default]
    Webm,
    Mp4,
}

impl Container {
    pub const ALL: [Container; 2] = [Container::Webm, Container::Mp4];

    pub fn extension(self) -> &'static str {
        match self {
            Container::Webm => "webm",
            Container::Mp4 => "mp4",
        }
    }

    pub fn content_type(self) -> &'static str {
        match self {
            Container::Webm => "video/webm",
            Container::Mp4 => "video/mp4",
        }
    }
}

pub fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// The recording settings (`--record-*`).
#[derive(Debug, Clone)]
pub struct RecordingConfig {
    pub dir: PathBuf,
    pub retention: Duration,
    pub min_free_bytes: u64,
}

/// The part of recording the media workers see: stream → the queue of its recording.
#[derive(Default)]
pub struct RecordingTaps {
    /// Per stream: the replay it records into, and that recording's queue.
    queues: RwLock<HashMap<StreamName, (ReplayId, SyncSender<Tapped>)>>,
    dropped: AtomicU64,
}

impl RecordingTaps {
    /// Called by the broadcaster's worker for each of its packets; never blocks.
    pub fn tap(&self, p: &Arc<SourcePacket>) {
        let queues = self.queues.read().unwrap_or_else(|e| e.into_inner());
        let Some((_, q)) = queues.get(&p.stream) else {
            return;
        };
        // Stamped here: the recorder times frames by their arrival, not by when it got to them.
        if let Err(TrySendError::Full(_)) = q.try_send((p.clone(), Instant::now())) {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn set(&self, stream: &StreamName, id: &ReplayId, q: SyncSender<Tapped>) {
        let mut queues = self.queues.write().unwrap_or_else(|e| e.into_inner());
        queues.insert(stream.clone(), (id.clone(), q));
    }

    /// Stops tapping `stream` for replay `id` (a newer recording of the stream keeps its tap).
    fn clear(&self, stream: &StreamName, id: &ReplayId) {
        let mut queues = self.queues.write().unwrap_or_else(|e| e.into_inner());
        if queues.get(stream).is_some_and(|(i, _)| i == id) {
            queues.remove(stream);
        }
    }
}

/// A broadcaster's packet and when its worker got it.
type Tapped = (Arc<SourcePacket>, Instant);

/// What a recording thread is told besides packets.
enum Control {
    Timeline(ServerMessage, Instant),
    /// The broadcaster (back) on this session.
    Publisher(Outbox),
    /// The broadcaster's connection was lost: end unless it is back within `grace`.
    Lost(Duration),
    End,
}

struct Active {
    id: ReplayId,
    control: std::sync::mpsc::Sender<Control>,
}

struct Counters {
    registry: Registry,
    active: IntGauge,
    bytes: IntCounter,
    write_errors: IntCounter,
    served: IntCounter,
    dropped: IntCounter,
    stopped_disk: IntCounter,
}

impl Counters {
    fn new() -> Self {
        let registry = Registry::new();
        let counter = |name: &str, help: &str| {
            let c = IntCounter::new(name, help).expect("valid metric");
            registry.register(Box::new(c.clone())).expect("unique");
            c
        };
        let active = IntGauge::new("golive_recordings_active", "Broadcasts being recorded")
            .expect("valid metric");
        registry.register(Box::new(active.clone())).expect("unique");
        Self {
            active,
            bytes: counter(
                "golive_recording_bytes_written_total",
                "Bytes of media written to recordings",
            ),
            write_errors: counter(
                "golive_recording_write_errors_total",
                "Recordings stopped because a write to the disk failed",
            ),
            served: counter(
                "golive_replays_served_total",
                "Replay media requests served (each HTTP range request counts)",
            ),
            dropped: counter(
                "golive_recording_packets_dropped_total",
                "Packets not recorded because the recorder fell behind",
            ),
            stopped_disk: counter(
                "golive_recordings_stopped_disk_full_total",
                "Recordings stopped because free disk space fell under --record-min-free-mb",
            ),
            registry,
        }
    }
}

/// Every recording of this server, and the replays on disk.
pub struct Recordings {
    config: Option<RecordingConfig>,
    taps: Arc<RecordingTaps>,
    active: Mutex<HashMap<StreamName, Active>>,
    workers: Mutex<Vec<WorkerHandle>>,
    counters: Arc<Counters>,
    dropped_seen: AtomicU64,
}

/// How a publish went for its recording.
#[derive(Debug, PartialEq, Eq)]
pub enum Started {
    /// Recording (a new replay, or the same one continued after a reconnection).
    Recording(ReplayId),
    /// Recording is off (no `--record-dir`, or the broadcaster said `"record": false`).
    Off,
    /// It should have been recorded, and is not; the broadcaster is told why.
    Refused(RecordingStopReason, String),
}

impl Recordings {
    pub fn new(config: Option<RecordingConfig>, taps: Arc<RecordingTaps>) -> Self {
        if let Some(c) = &config
            && let Err(e) = std::fs::create_dir_all(&c.dir)
        {
            tracing::error!(
                "cannot create the record directory {}: {e}",
                c.dir.display()
            );
        }
        let r = Self {
            config,
            taps,
            active: Mutex::default(),
            workers: Mutex::default(),
            counters: Arc::new(Counters::new()),
            dropped_seen: AtomicU64::new(0),
        };
        r.close_interrupted();
        r
    }

    /// Off: records nothing, lists nothing.
    pub fn disabled() -> Self {
        Self::new(None, Arc::default())
    }

    /// The workers to ask for keyframes (known once they run).
    pub fn set_workers(&self, workers: Vec<WorkerHandle>) {
        *self.workers.lock().unwrap_or_else(|e| e.into_inner()) = workers;
    }

    /// How long replays are kept, when recording is on.
    pub fn retention(&self) -> Option<Duration> {
        self.config.as_ref().map(|c| c.retention)
    }

    /// Recordings still running (their threads have not completed their files).
    pub fn active(&self) -> i64 {
        self.counters.active.get()
    }

    pub fn dir(&self) -> Option<&Path> {
        self.config.as_ref().map(|c| c.dir.as_path())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<StreamName, Active>> {
        self.active.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A broadcaster went live on `stream` (or came back to it). `events` is its client's outbox.
    pub fn publish(
        &self,
        stream: &StreamName,
        wanted: bool,
        title: Option<String>,
        media: &StreamMedia,
        events: Outbox,
    ) -> Started {
        let Some(config) = &self.config else {
            return Started::Off;
        };
        let mut active = self.lock();
        if let Some(a) = active.get(stream) {
            if a.control.send(Control::Publisher(events.clone())).is_ok() {
                return Started::Recording(a.id.clone());
            }
            active.remove(stream);
        }
        if !wanted {
            return Started::Off;
        }
        if let Err(Unrecordable::Codec(m)) = Recorder::check(media) {
            return Started::Refused(RecordingStopReason::CodecUnsupported, m);
        }
        if let Some(free) = free_bytes(&config.dir)
            && free < config.min_free_bytes
        {
            self.counters.stopped_disk.inc();
            return Started::Refused(
                RecordingStopReason::DiskFull,
                format!(
                    "{} MB free in the record directory, under the floor of {} MB",
                    free / 1_000_000,
                    config.min_free_bytes / 1_000_000
                ),
            );
        }
        let id = ReplayId::new(stream, SystemTime::now());
        let recorder = match Recorder::create(&config.dir, id.clone(), stream, title, media) {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(%stream, "cannot start recording: {e}");
                self.counters.write_errors.inc();
                return Started::Refused(RecordingStopReason::WriteError, e.to_string());
            }
        };
        let (packets_tx, packets_rx) = std::sync::mpsc::sync_channel(RECORDER_QUEUE_PACKETS);
        let (control_tx, control_rx) = std::sync::mpsc::channel();
        let job = Job {
            stream: stream.clone(),
            recorder,
            packets: packets_rx,
            control: control_rx,
            events,
            workers: self
                .workers
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone(),
            counters: self.counters.clone(),
            taps: self.taps.clone(),
            min_free_bytes: config.min_free_bytes,
            dir: config.dir.clone(),
        };
        let spawned = std::thread::Builder::new()
            .name(format!("golive-rec-{stream}"))
            .spawn(move || job.run());
        if let Err(e) = spawned {
            tracing::error!(%stream, "cannot start a recording thread: {e}");
            return Started::Refused(RecordingStopReason::WriteError, e.to_string());
        }
        self.taps.set(stream, &id, packets_tx);
        self.counters.active.inc();
        tracing::info!(%stream, replay = %id, "recording");
        active.insert(
            stream.clone(),
            Active {
                id: id.clone(),
                control: control_tx,
            },
        );
        Started::Recording(id)
    }

    /// The broadcast on `stream` ended; with `lost`, its broadcaster may come back within
    /// `grace` and continue the same recording.
    pub fn end(&self, stream: &StreamName, lost: bool, grace: Duration) {
        let mut active = self.lock();
        let Some(a) = active.get(stream) else { return };
        if lost && !grace.is_zero() {
            if a.control.send(Control::Lost(grace)).is_ok() {
                return;
            }
        } else {
            let _ = a.control.send(Control::End);
        }
        self.taps.clear(stream, &a.id);
        active.remove(stream);
    }

    /// A chat message, removal or heart batch on `stream`, for its timeline.
    pub fn timeline(&self, stream: &StreamName, event: &ServerMessage) {
        if self.config.is_none() {
            return;
        }
        if let Some(a) = self.lock().get(stream) {
            let _ = a
                .control
                .send(Control::Timeline(event.clone(), Instant::now()));
        }
    }

    /// Ends every recording (at shutdown), so their files are complete.
    pub fn end_all(&self) {
        for (stream, a) in self.lock().drain() {
            self.taps.clear(&stream, &a.id);
            let _ = a.control.send(Control::End);
        }
    }

    pub fn count_served(&self) {
        self.counters.served.inc();
    }

    /// Recording metrics in the Prometheus text format.
    pub fn render_metrics(&self) -> String {
        let dropped = self.taps.dropped.load(Ordering::Relaxed);
        let before = self.dropped_seen.swap(dropped, Ordering::Relaxed);
        self.counters.dropped.inc_by(dropped.saturating_sub(before));
        let mut out = Vec::new();
        let _ = TextEncoder::new().encode(&self.counters.registry.gather(), &mut out);
        String::from_utf8(out).unwrap_or_default()
    }

    /// The replays on disk, newest first (at most [`MAX_LISTED`]), optionally of one stream.
    pub fn list(&self, stream: Option<&str>) -> Vec<ReplayMeta> {
        let Some(dir) = self.dir() else {
            return Vec::new();
        };
        let mut all: Vec<ReplayMeta> = read_metas(dir)
            .into_iter()
            .filter(|m| stream.is_none_or(|s| m.stream == s))
            .collect();
        all.sort_by_key(|m| std::cmp::Reverse(m.started_unix_ms));
        all.truncate(MAX_LISTED);
        all
    }

    /// One replay's metadata.
    pub fn get(&self, id: &ReplayId) -> Option<ReplayMeta> {
        let path = self.dir()?.join(format!("{id}.json"));
        serde_json::from_slice(&std::fs::read(path).ok()?).ok()
    }

    /// Where a replay's media file is, and its container (the file that exists).
    pub fn media_path(&self, id: &ReplayId) -> Option<(PathBuf, Container)> {
        let dir = self.dir()?;
        Container::ALL.into_iter().find_map(|c| {
            let path = dir.join(format!("{id}.{}", c.extension()));
            path.exists().then_some((path, c))
        })
    }

    /// A replay's timeline, without removed chat messages (nor the removals themselves): what
    /// the moderation took down never replays.
    pub fn timeline_of(&self, id: &ReplayId) -> Option<Vec<serde_json::Value>> {
        let path = self.dir()?.join(format!("{id}.timeline.jsonl"));
        let text = std::fs::read_to_string(path).ok()?;
        let lines: Vec<serde_json::Value> = text
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect();
        let removed: HashSet<u64> = lines
            .iter()
            .filter(|l| l["event"]["type"] == "removed")
            .filter_map(|l| l["event"]["id"].as_u64())
            .collect();
        Some(
            lines
                .into_iter()
                .filter(|l| match l["event"]["type"].as_str() {
                    Some("removed") => false,
                    Some("chat") => !l["event"]["id"]
                        .as_u64()
                        .is_some_and(|id| removed.contains(&id)),
                    _ => true,
                })
                .collect(),
        )
    }

    /// Deletes replays that ended longer ago than the retention; returns how many.
    pub fn sweep(&self, now: SystemTime) -> usize {
        let Some(config) = &self.config else { return 0 };
        let recording: HashSet<String> = self.lock().values().map(|a| a.id.0.clone()).collect();
        let cutoff = unix_ms(now).saturating_sub(config.retention.as_millis() as u64);
        let mut deleted = 0;
        for m in read_metas(&config.dir) {
            let ended = m.ended_unix_ms.unwrap_or(m.started_unix_ms);
            if recording.contains(&m.id) || ended >= cutoff {
                continue;
            }
            for ext in ["webm", "mp4", "timeline.jsonl", "json"] {
                let _ = std::fs::remove_file(config.dir.join(format!("{}.{ext}", m.id)));
            }
            tracing::info!(replay = %m.id, "replay expired; deleted");
            deleted += 1;
        }
        deleted
    }

    /// Replays a killed server left without an end: they end when their file was last
    /// written, and are listed as incomplete (they play, without seeking index).
    fn close_interrupted(&self) {
        let Some(dir) = self.dir() else { return };
        for mut m in read_metas(dir) {
            if m.ended_unix_ms.is_some() {
                continue;
            }
            let media =
                std::fs::metadata(dir.join(format!("{}.{}", m.id, m.container.extension()))).ok();
            m.bytes = media.as_ref().map_or(0, |f| f.len());
            m.ended_unix_ms = Some(
                media
                    .and_then(|f| f.modified().ok())
                    .map_or(m.started_unix_ms, unix_ms),
            );
            m.duration_ms = m
                .ended_unix_ms
                .unwrap_or_default()
                .saturating_sub(m.started_unix_ms);
            m.stopped = Some("interrupted".into());
            if let Ok(bytes) = serde_json::to_vec_pretty(&m) {
                let _ = std::fs::write(dir.join(format!("{}.json", m.id)), bytes);
            }
        }
    }
}

fn read_metas(dir: &Path) -> Vec<ReplayMeta> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    entries
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().ends_with(".json"))
        .filter_map(|e| serde_json::from_slice(&std::fs::read(e.path()).ok()?).ok())
        .collect()
}

/// Free bytes for unprivileged users on the file system holding `dir`.
pub fn free_bytes(dir: &Path) -> Option<u64> {
    let s = nix::sys::statvfs::statvfs(dir).ok()?;
    Some(s.blocks_available() as u64 * s.fragment_size() as u64)
}

/// One recording's thread.
struct Job {
    stream: StreamName,
    recorder: Recorder,
    packets: Receiver<Tapped>,
    control: Receiver<Control>,
    events: Outbox,
    workers: Vec<WorkerHandle>,
    counters: Arc<Counters>,
    taps: Arc<RecordingTaps>,
    min_free_bytes: u64,
    dir: PathBuf,
}

impl Job {
    fn run(mut self) {
        let mut lost_until: Option<Instant> = None;
        let mut next_check = Instant::now() + DISK_CHECK_INTERVAL;
        let mut written = 0u64;
        let stopped = loop {
            let mut end = false;
            while let Ok(c) = self.control.try_recv() {
                match c {
                    Control::Timeline(ev, at) => {
                        if let Err(e) = self.recorder.handle_timeline(&ev, at) {
                            break_on_error(&self.stream, &e);
                        }
                    }
                    Control::Publisher(tx) => {
                        self.events = tx;
                        lost_until = None;
                    }
                    Control::Lost(grace) => lost_until = Some(Instant::now() + grace),
                    Control::End => end = true,
                }
            }
            if end {
                // What was tapped before the end is part of the broadcast.
                let mut r = Ok(());
                while r.is_ok()
                    && let Ok((p, at)) = self.packets.try_recv()
                {
                    r = self.recorder.handle_packet(&p, at);
                }
                match r {
                    Ok(()) => break None,
                    Err(e) => {
                        break_on_error(&self.stream, &e);
                        self.counters.write_errors.inc();
                        break Some((RecordingStopReason::WriteError, e.to_string()));
                    }
                }
            }
            let now = Instant::now();
            if lost_until.is_some_and(|t| now >= t) {
                break None;
            }
            let r = match self.packets.recv_timeout(RECORDER_WAKE) {
                Ok((p, at)) => {
                    let mut r = self.recorder.handle_packet(&p, at);
                    // Whatever else is queued, before looking at control messages again.
                    while r.is_ok()
                        && let Ok((p, at)) = self.packets.try_recv()
                    {
                        r = self.recorder.handle_packet(&p, at);
                    }
                    r
                }
                Err(RecvTimeoutError::Timeout) => Ok(()),
                Err(RecvTimeoutError::Disconnected) => break None,
            };
            if let Err(e) = r {
                break_on_error(&self.stream, &e);
                self.counters.write_errors.inc();
                break Some((RecordingStopReason::WriteError, e.to_string()));
            }
            if self.recorder.poll_keyframe_request() {
                for w in &self.workers {
                    w.try_send(Command::KeyframeRequest {
                        stream: self.stream.clone(),
                    });
                }
            }
            let bytes = self.recorder.bytes();
            self.counters.bytes.inc_by(bytes.saturating_sub(written));
            written = bytes.max(written);
            if now >= next_check {
                next_check = now + DISK_CHECK_INTERVAL;
                if let Some(free) = free_bytes(&self.dir)
                    && free < self.min_free_bytes
                {
                    self.counters.stopped_disk.inc();
                    break Some((
                        RecordingStopReason::DiskFull,
                        format!(
                            "free disk space fell under {} MB",
                            self.min_free_bytes / 1_000_000
                        ),
                    ));
                }
                let _ = self.recorder.write_meta();
            }
        };
        let id = ReplayId(self.recorder.meta.id.clone());
        self.taps.clear(&self.stream, &id);
        self.counters.active.dec();
        if let Some((reason, message)) = &stopped {
            tracing::warn!(stream = %self.stream, %reason, "recording stopped: {message}");
            self.events
                .push(Outgoing::Message(ServerMessage::RecordingStopped {
                    reason: *reason,
                    message: message.clone(),
                }));
        }
        let stream = self.stream.clone();
        match self
            .recorder
            .finish(Instant::now(), stopped.map(|(r, _)| r.to_string()))
        {
            Ok(m) => {
                tracing::info!(%stream, replay = %m.id, duration_ms = m.duration_ms, bytes = m.bytes, "recording ended")
            }
            Err(e) => {
                self.counters.write_errors.inc();
                tracing::error!(%stream, "cannot complete the recording: {e}");
            }
        }
    }
}

fn break_on_error(stream: &StreamName, e: &std::io::Error) {
    tracing::error!(%stream, "recording write failed: {e}");
}
