//! The directory of live streams, shared by every signalling session: who broadcasts each
//! stream, its media (which viewers on any worker need), who watches it, and its audience
//! life: chat (with history and moderation), hearts (batched) and viewer counts (coalesced).
//!
//! Messages that go to a whole audience (chat, hearts, counts) are serialized once and shared
//! by every member as one reference-counted frame. The directory delivers them, and the end of
//! a broadcast, as [`AudienceEvent`]s into each member's [`AudienceSink`]: it knows nothing of
//! sessions or sockets.

use axum::extract::ws::Utf8Bytes;
use golive_proto::{CHAT_HISTORY, EndReason, ErrorCode, ProtocolError, ServerMessage, StreamName};
use golive_sfu::StreamMedia;
use serde::Serialize;
use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use crate::ranking::{self, HeartRate};
use crate::thumbnails::{THUMBNAIL_MIN_INTERVAL, Thumbnail};

/// Viewer counts go out at most this often per stream.
pub const VIEWER_COUNT_INTERVAL: Duration = Duration::from_secs(1);
/// Hearts of one batch from another node counted into the ranking's rate at most (a batch is
/// validated far below this; the bound keeps the loop short whatever comes).
const MAX_RATE_RECORDS: u64 = 10_000;

/// One member of a stream: its broadcaster or one of its viewers (a signalling session).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct MemberId(pub u64);

/// What the directory tells a member of a stream.
#[derive(Debug, Clone)]
pub enum AudienceEvent {
    /// A frame for the whole audience (chat, hearts, viewer counts, the broadcaster's
    /// reconnection), serialized once and shared.
    Frame(Utf8Bytes),
    /// The broadcast this viewer watches is over; the viewer is no longer on the stream.
    Ended(EndReason),
}

/// Where the directory delivers one member's events. It is called with the directory locked,
/// once per member for every audience frame: it must never wait, and never call back into the
/// directory.
pub trait AudienceSink: Send + Sync {
    fn deliver(&self, event: AudienceEvent);
}

/// A member's sink, as [`Directory::claim`] and [`Directory::watch`] take it.
pub type Sink = Arc<dyn AudienceSink>;

struct Member {
    sink: Sink,
    name: String,
}

struct StreamEntry {
    publisher: MemberId,
    publisher_member: Member,
    media: Arc<StreamMedia>,
    title: Option<String>,
    live_since: SystemTime,
    viewers: HashMap<MemberId, Member>,
    last_count_sent: Option<(usize, Instant)>,
    chat: VecDeque<(u64, Utf8Bytes)>,
    next_chat_id: u64,
    /// Lower-cased names the broadcaster muted.
    muted: HashSet<String>,
    hearts_pending: u64,
    hearts_total: u64,
    /// Set while the broadcaster's connection is lost and its grace period runs: the number of
    /// that loss, so a late expiry of an earlier one does nothing.
    orphaned: Option<u64>,
    losses: u64,
    /// The broadcaster's latest snapshot of its picture.
    thumbnail: Option<Arc<Thumbnail>>,
    /// Hearts over the last minute, for the ranking.
    heart_rate: HeartRate,
}

impl StreamEntry {
    fn members(&self) -> impl Iterator<Item = &Member> {
        std::iter::once(&self.publisher_member).chain(self.viewers.values())
    }

    fn send_all(&self, frame: &Utf8Bytes) {
        for m in self.members() {
            m.sink.deliver(AudienceEvent::Frame(frame.clone()));
        }
    }

    fn send_viewers(&self, event: &AudienceEvent) {
        for m in self.viewers.values() {
            m.sink.deliver(event.clone());
        }
    }
}

fn frame(msg: &ServerMessage) -> Utf8Bytes {
    Utf8Bytes::from(msg.to_json())
}

/// One row of `GET /api/streams`.
#[derive(Debug, Serialize)]
pub struct StreamSummary {
    pub stream: String,
    pub title: Option<String>,
    pub viewers: usize,
    pub live_since: String,
    /// The rank's inputs (see `ranking`): hearts over the last minute, the score they make with
    /// the viewers, and the place (1 = top of the directory).
    pub hearts_per_minute: u64,
    pub score: f64,
    pub rank: usize,
    /// The path of the latest thumbnail (with its version), when the broadcaster sent one.
    pub thumbnail: Option<String>,
}

/// Sets each row's score and rank from its viewers and hearts (see `ranking`).
pub fn rank(rows: &mut [StreamSummary]) {
    let inputs: Vec<ranking::Inputs<'_>> = rows
        .iter()
        .map(|r| ranking::Inputs {
            stream: &r.stream,
            viewers: r.viewers,
            hearts_per_minute: r.hearts_per_minute,
        })
        .collect();
    let ranks = ranking::ranks(&inputs);
    for (row, rank) in rows.iter_mut().zip(ranks) {
        row.score = ranking::score(row.viewers, row.hearts_per_minute);
        row.rank = rank;
    }
}

/// What a viewer gets when it joins.
pub struct Joined {
    pub media: Arc<StreamMedia>,
    /// The stream's recent chat, oldest first, then its hearts so far (when it has any).
    pub chat_history: Vec<Utf8Bytes>,
}

/// How much the directory admits.
#[derive(Debug, Clone, Copy)]
pub struct DirectoryLimits {
    pub max_streams: usize,
    pub max_viewers_per_stream: usize,
    pub max_viewers: usize,
}

impl Default for DirectoryLimits {
    fn default() -> Self {
        Self {
            max_streams: usize::MAX,
            max_viewers_per_stream: usize::MAX,
            max_viewers: usize::MAX,
        }
    }
}

/// Which limit refused a publish or a watch (the metric label).
pub fn limit_label(code: ErrorCode, publishing: bool) -> Option<&'static str> {
    match code {
        ErrorCode::ServerFull if publishing => Some("max_streams"),
        ErrorCode::ServerFull => Some("max_viewers"),
        ErrorCode::StreamFull => Some("max_viewers_per_stream"),
        _ => None,
    }
}

/// Told of every chat message, removal and heart batch (the recordings' timelines).
pub type AudienceObserver = Box<dyn Fn(&StreamName, &ServerMessage) + Send + Sync>;

/// Cluster mode: what this node's members did that the audience on the other nodes must see.
/// Handed on (never waiting, the directory is locked) to the cluster, which publishes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Shared {
    /// A chat message, already delivered here.
    Chat {
        id: u64,
        from: String,
        text: String,
        at: String,
    },
    /// The broadcaster removed a chat message, here already.
    Removed { id: u64 },
    /// The broadcaster muted a name, here already.
    Muted { name: String },
    /// Hearts given here since the last batch: not delivered here yet, since only the cluster
    /// knows the total they make.
    Hearts { count: u64 },
}

/// Cluster mode: a member about to chat, as [`Directory::chat_ticket`] finds it.
#[derive(Debug, Clone)]
pub struct ChatTicket {
    pub name: String,
    pub broadcaster: bool,
    /// The id this node would give the next message.
    pub next_id: u64,
}

/// Cluster mode: where the directory hands [`Shared`] events on.
pub type SharedHook = Box<dyn Fn(&StreamName, Shared) + Send + Sync>;

#[derive(Default)]
pub struct Directory {
    streams: Mutex<HashMap<StreamName, StreamEntry>>,
    limits: DirectoryLimits,
    observer: std::sync::OnceLock<AudienceObserver>,
    /// Cluster mode: chat, moderation and hearts go to the other nodes through it.
    shared: std::sync::OnceLock<SharedHook>,
    /// Cluster mode: each stream's viewers on the other nodes, added to the counts it sends.
    remote_viewers: Mutex<HashMap<StreamName, usize>>,
}

fn not_live(stream: &StreamName) -> ProtocolError {
    ProtocolError::new(
        ErrorCode::StreamNotFound,
        format!("stream \"{stream}\" is not live"),
    )
}

impl Directory {
    pub fn new(limits: DirectoryLimits) -> Self {
        Self {
            streams: Mutex::default(),
            limits,
            observer: std::sync::OnceLock::new(),
            shared: std::sync::OnceLock::new(),
            remote_viewers: Mutex::default(),
        }
    }

    /// Sets the one observer of chat, removals and hearts (once; later calls are ignored).
    pub fn set_observer(&self, observer: AudienceObserver) {
        let _ = self.observer.set(observer);
    }

    /// Cluster mode: hands every chat message, moderation and heart batch of this node's
    /// members to `hook` (once; later calls are ignored). Hearts then wait for the cluster's
    /// total: they reach this node's audience through [`Directory::apply_hearts`].
    pub fn set_shared_hook(&self, hook: SharedHook) {
        let _ = self.shared.set(hook);
    }

    fn share(&self, stream: &StreamName, event: Shared) {
        if let Some(h) = self.shared.get() {
            h(stream, event);
        }
    }

    fn observe(&self, stream: &StreamName, msg: &ServerMessage) {
        if let Some(o) = self.observer.get() {
            o(stream, msg);
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<StreamName, StreamEntry>> {
        // A panic while holding the lock is a bug elsewhere; the map itself stays consistent
        // (every update is a single insert or remove), so keep serving.
        self.streams.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Claims `stream` for a broadcaster; `stream_busy` if someone broadcasts it already.
    pub fn claim(
        &self,
        stream: &StreamName,
        publisher: MemberId,
        publisher_sink: Sink,
        name: String,
        media: StreamMedia,
        title: Option<String>,
    ) -> Result<(), ProtocolError> {
        let mut streams = self.lock();
        if let Some(e) = streams.get_mut(stream) {
            if e.orphaned.is_none() {
                return Err(ProtocolError::new(
                    ErrorCode::StreamBusy,
                    format!("stream \"{stream}\" is already live"),
                ));
            }
            // The broadcaster is back within its grace period: its viewers stay, and their
            // media continues from the new source, if they can decode it.
            let same_media = [
                (&media.video, &e.media.video),
                (&media.audio, &e.media.audio),
            ]
            .iter()
            .all(|(new, old)| match (new, old) {
                (Some(n), Some(o)) => n.receivable_as(o),
                (None, None) => true,
                _ => false,
            });
            if same_media {
                e.orphaned = None;
                e.publisher = publisher;
                e.publisher_member = Member {
                    sink: publisher_sink,
                    name,
                };
                if title.is_some() {
                    e.title = title;
                }
                // The new connection has seen no count yet.
                e.last_count_sent = None;
                e.send_viewers(&AudienceEvent::Frame(frame(&ServerMessage::Resumed)));
                tracing::info!(%stream, "broadcaster reconnected within the grace period");
                return Ok(());
            }
            tracing::info!(%stream, "broadcaster came back with other codecs; viewers start over");
            if let Some(old) = streams.remove(stream) {
                old.send_viewers(&AudienceEvent::Ended(EndReason::BroadcasterLeft));
            }
        }
        if streams.len() >= self.limits.max_streams {
            return Err(ProtocolError::new(
                ErrorCode::ServerFull,
                "the server carries as many streams as it may; try again later",
            ));
        }
        streams.insert(
            stream.clone(),
            StreamEntry {
                publisher,
                publisher_member: Member {
                    sink: publisher_sink,
                    name,
                },
                media: Arc::new(media),
                title,
                live_since: SystemTime::now(),
                viewers: HashMap::new(),
                last_count_sent: None,
                chat: VecDeque::new(),
                next_chat_id: 1,
                muted: HashSet::new(),
                hearts_pending: 0,
                hearts_total: 0,
                orphaned: None,
                losses: 0,
                thumbnail: None,
                heart_rate: HeartRate::default(),
            },
        );
        Ok(())
    }

    /// The broadcaster's connection is lost (not ended on purpose). With viewers (or when
    /// `relayed`: other nodes relay it, and their viewers wait), the stream waits for it:
    /// returns the loss number to pass to [`Directory::expire`] when the grace period is over.
    /// Without them it simply ends.
    pub fn orphan(
        &self,
        stream: &StreamName,
        publisher: MemberId,
        grace: Duration,
        relayed: bool,
    ) -> Option<u64> {
        let mut streams = self.lock();
        let e = streams
            .get_mut(stream)
            .filter(|e| e.publisher == publisher)?;
        if e.viewers.is_empty() && !relayed {
            streams.remove(stream);
            return None;
        }
        e.losses += 1;
        e.orphaned = Some(e.losses);
        e.send_viewers(&AudienceEvent::Frame(frame(&ServerMessage::Reconnecting {
            grace_secs: grace.as_secs(),
        })));
        Some(e.losses)
    }

    /// Ends a stream whose broadcaster did not come back after loss number `loss`.
    pub fn expire(&self, stream: &StreamName, loss: u64) {
        let entry = {
            let mut streams = self.lock();
            match streams.get(stream) {
                Some(e) if e.orphaned == Some(loss) => streams.remove(stream),
                _ => None,
            }
        };
        if let Some(e) = entry {
            tracing::info!(%stream, "broadcaster did not come back; broadcast ended");
            e.send_viewers(&AudienceEvent::Ended(EndReason::BroadcasterLeft));
        }
    }

    /// Ends a broadcast: every viewer is told and dropped from the stream.
    pub fn release(&self, stream: &StreamName, publisher: MemberId, reason: EndReason) {
        let entry = {
            let mut streams = self.lock();
            match streams.get(stream) {
                Some(e) if e.publisher == publisher && e.orphaned.is_none() => {
                    streams.remove(stream)
                }
                _ => None,
            }
        };
        if let Some(e) = entry {
            e.send_viewers(&AudienceEvent::Ended(reason));
        }
    }

    /// Adds a viewer; `stream_not_found` when the stream is not live.
    pub fn watch(
        &self,
        stream: &StreamName,
        viewer: MemberId,
        sink: Sink,
        name: String,
    ) -> Result<Joined, ProtocolError> {
        let mut streams = self.lock();
        let total: usize = streams.values().map(|e| e.viewers.len()).sum();
        let e = streams.get_mut(stream).ok_or_else(|| not_live(stream))?;
        if e.viewers.len() >= self.limits.max_viewers_per_stream {
            return Err(ProtocolError::new(
                ErrorCode::StreamFull,
                format!("stream \"{stream}\" has as many viewers as it may"),
            ));
        }
        if total >= self.limits.max_viewers {
            return Err(ProtocolError::new(
                ErrorCode::ServerFull,
                "the server carries as many viewers as it may; try again later",
            ));
        }
        e.viewers.insert(viewer, Member { sink, name });
        let mut chat_history: Vec<Utf8Bytes> = e.chat.iter().map(|(_, f)| f.clone()).collect();
        if e.hearts_total > 0 {
            chat_history.push(frame(&ServerMessage::Hearts {
                count: 0,
                total: e.hearts_total,
            }));
        }
        Ok(Joined {
            media: e.media.clone(),
            chat_history,
        })
    }

    pub fn unwatch(&self, stream: &StreamName, viewer: MemberId) {
        if let Some(e) = self.lock().get_mut(stream) {
            e.viewers.remove(&viewer);
        }
    }

    /// Posts a chat message from `from` (the broadcaster or a viewer of the stream).
    pub fn chat(
        &self,
        stream: &StreamName,
        session: MemberId,
        text: String,
    ) -> Result<(), ProtocolError> {
        self.chat_as(stream, session, text, None)
    }

    /// Cluster mode: who `session` is on `stream` before it chats, when it is a member.
    pub fn chat_ticket(&self, stream: &StreamName, session: MemberId) -> Option<ChatTicket> {
        let streams = self.lock();
        let e = streams.get(stream)?;
        let (name, broadcaster) = if e.publisher == session {
            (e.publisher_member.name.clone(), true)
        } else {
            (e.viewers.get(&session)?.name.clone(), false)
        };
        Some(ChatTicket {
            name,
            broadcaster,
            next_id: e.next_chat_id,
        })
    }

    /// [`Directory::chat`] with the message's id given (cluster mode: ids are the cluster's,
    /// so a removal names one message on every node); `None` takes this node's next.
    pub fn chat_as(
        &self,
        stream: &StreamName,
        session: MemberId,
        text: String,
        id: Option<u64>,
    ) -> Result<(), ProtocolError> {
        let mut streams = self.lock();
        let e = streams.get_mut(stream).ok_or_else(|| not_live(stream))?;
        let from = if e.publisher == session {
            e.publisher_member.name.clone()
        } else {
            let m = e
                .viewers
                .get(&session)
                .ok_or_else(|| ProtocolError::bad_request("not on this stream"))?;
            if e.muted.contains(&m.name.to_lowercase()) {
                return Err(ProtocolError::new(
                    ErrorCode::Muted,
                    "the broadcaster muted you for this broadcast",
                ));
            }
            m.name.clone()
        };
        let id = id.unwrap_or(e.next_chat_id);
        e.next_chat_id = e.next_chat_id.max(id + 1);
        let at = rfc3339(SystemTime::now());
        let msg = ServerMessage::Chat {
            id,
            from: from.clone(),
            text: text.clone(),
            at: at.clone(),
        };
        self.observe(stream, &msg);
        let f = frame(&msg);
        e.chat.push_back((id, f.clone()));
        while e.chat.len() > CHAT_HISTORY {
            e.chat.pop_front();
        }
        e.send_all(&f);
        self.share(stream, Shared::Chat { id, from, text, at });
        Ok(())
    }

    /// Cluster mode: a chat message posted on another node. Does nothing when this node does
    /// not hold the stream, or has the message already.
    pub fn apply_chat(&self, stream: &StreamName, id: u64, from: String, text: String, at: String) {
        let mut streams = self.lock();
        let Some(e) = streams.get_mut(stream) else {
            return;
        };
        if e.chat.iter().any(|(i, _)| *i == id) {
            return;
        }
        e.next_chat_id = e.next_chat_id.max(id.saturating_add(1));
        let msg = ServerMessage::Chat { id, from, text, at };
        self.observe(stream, &msg);
        let f = frame(&msg);
        e.chat.push_back((id, f.clone()));
        while e.chat.len() > CHAT_HISTORY {
            e.chat.pop_front();
        }
        e.send_all(&f);
    }

    /// Cluster mode: the broadcaster (on another node) removed chat message `id`.
    pub fn apply_removed(&self, stream: &StreamName, id: u64) {
        let mut streams = self.lock();
        let Some(e) = streams.get_mut(stream) else {
            return;
        };
        e.chat.retain(|(i, _)| *i != id);
        let msg = ServerMessage::Removed { id };
        self.observe(stream, &msg);
        e.send_all(&frame(&msg));
    }

    /// Cluster mode: the broadcaster (on another node) muted `name`.
    pub fn apply_muted(&self, stream: &StreamName, name: &str) {
        if let Some(e) = self.lock().get_mut(stream) {
            e.muted.insert(name.trim().to_lowercase());
        }
    }

    /// Cluster mode: `count` hearts given somewhere in the cluster (`local`: on this node),
    /// which make `total` over the whole cluster (`None` when the cluster could not count
    /// them: they add to this node's total).
    pub fn apply_hearts(&self, stream: &StreamName, count: u64, total: Option<u64>, local: bool) {
        let mut streams = self.lock();
        let Some(e) = streams.get_mut(stream) else {
            return;
        };
        // Batches from several nodes may arrive out of order: the total only grows.
        let total = total.unwrap_or(e.hearts_total.saturating_add(count));
        e.hearts_total = e.hearts_total.max(total);
        if !local {
            // This node's own hearts were counted as they came.
            let now = Instant::now();
            for _ in 0..count.min(MAX_RATE_RECORDS) {
                e.heart_rate.record(now);
            }
        }
        let msg = ServerMessage::Hearts {
            count,
            total: e.hearts_total,
        };
        self.observe(stream, &msg);
        e.send_all(&frame(&msg));
    }

    fn moderated(
        &self,
        stream: &StreamName,
        session: MemberId,
        act: impl FnOnce(&mut StreamEntry) -> Result<(), ProtocolError>,
    ) -> Result<(), ProtocolError> {
        let mut streams = self.lock();
        let e = streams.get_mut(stream).ok_or_else(|| not_live(stream))?;
        if e.publisher != session {
            return Err(ProtocolError::new(
                ErrorCode::Forbidden,
                "only the broadcaster can moderate the chat",
            ));
        }
        act(e)
    }

    /// The broadcaster removes chat message `id`: from the history and from every screen.
    pub fn remove_chat(
        &self,
        stream: &StreamName,
        session: MemberId,
        id: u64,
    ) -> Result<(), ProtocolError> {
        self.moderated(stream, session, |e| {
            let before = e.chat.len();
            e.chat.retain(|(i, _)| *i != id);
            if e.chat.len() == before && id >= e.next_chat_id {
                return Err(ProtocolError::bad_request(format!("no chat message {id}")));
            }
            let msg = ServerMessage::Removed { id };
            self.observe(stream, &msg);
            e.send_all(&frame(&msg));
            Ok(())
        })?;
        self.share(stream, Shared::Removed { id });
        Ok(())
    }

    /// The broadcaster mutes everyone called `name` for the rest of the broadcast.
    pub fn mute(
        &self,
        stream: &StreamName,
        session: MemberId,
        name: &str,
    ) -> Result<(), ProtocolError> {
        let name = name.trim().to_lowercase();
        self.moderated(stream, session, |e| {
            e.muted.insert(name.clone());
            Ok(())
        })?;
        self.share(stream, Shared::Muted { name });
        Ok(())
    }

    /// Counts a heart; `immediate` sends it on at once instead of in the next batch.
    pub fn heart(&self, stream: &StreamName, immediate: bool) {
        let mut streams = self.lock();
        let Some(e) = streams.get_mut(stream) else {
            return;
        };
        e.heart_rate.record(Instant::now());
        if self.shared.get().is_some() {
            // Cluster mode: the total is the cluster's; the heart comes back with it.
            if immediate {
                drop(streams);
                self.share(stream, Shared::Hearts { count: 1 });
            } else {
                e.hearts_pending += 1;
            }
            return;
        }
        e.hearts_total += 1;
        if immediate {
            let msg = ServerMessage::Hearts {
                count: 1,
                total: e.hearts_total,
            };
            self.observe(stream, &msg);
            e.send_all(&frame(&msg));
        } else {
            e.hearts_pending += 1;
        }
    }

    /// Sends each stream's hearts gathered since the last batch.
    pub fn send_heart_batches(&self) {
        let mut streams = self.lock();
        for (stream, e) in streams.iter_mut() {
            if e.hearts_pending == 0 {
                continue;
            }
            if self.shared.get().is_some() {
                let count = std::mem::take(&mut e.hearts_pending);
                self.share(stream, Shared::Hearts { count });
                continue;
            }
            let msg = ServerMessage::Hearts {
                count: e.hearts_pending,
                total: e.hearts_total,
            };
            self.observe(stream, &msg);
            let f = frame(&msg);
            e.hearts_pending = 0;
            e.send_all(&f);
        }
    }

    pub fn list(&self) -> Vec<StreamSummary> {
        self.list_at(Instant::now())
    }

    /// The rows of `GET /api/streams` at `now`, sorted by name, each with its rank.
    pub fn list_at(&self, now: Instant) -> Vec<StreamSummary> {
        let streams = self.lock();
        let mut out: Vec<StreamSummary> = streams
            .iter()
            .map(|(name, e)| {
                let viewers = e.viewers.len();
                let hearts_per_minute = e.heart_rate.per_minute(now);
                StreamSummary {
                    stream: name.to_string(),
                    title: e.title.clone(),
                    viewers,
                    live_since: rfc3339(e.live_since),
                    hearts_per_minute,
                    // Both set by `rank` once every row is in.
                    score: 0.0,
                    rank: 0,
                    thumbnail: e
                        .thumbnail
                        .as_ref()
                        .map(|t| crate::thumbnails::url_path(name.as_str(), t)),
                }
            })
            .collect();
        out.sort_by(|a, b| a.stream.cmp(&b.stream));
        rank(&mut out);
        out
    }

    /// Keeps `thumbnail` as the stream's latest; only its broadcaster may send one. Returns
    /// false when it was dropped for coming within [`THUMBNAIL_MIN_INTERVAL`] of the last.
    pub fn set_thumbnail(
        &self,
        stream: &StreamName,
        session: MemberId,
        thumbnail: Thumbnail,
    ) -> Result<bool, ProtocolError> {
        let mut streams = self.lock();
        let e = streams.get_mut(stream).ok_or_else(|| not_live(stream))?;
        if e.publisher != session {
            return Err(ProtocolError::new(
                ErrorCode::Forbidden,
                "only the broadcaster sends the stream's thumbnail",
            ));
        }
        if let Some(last) = &e.thumbnail
            && thumbnail.received.saturating_duration_since(last.received) < THUMBNAIL_MIN_INTERVAL
        {
            return Ok(false);
        }
        e.thumbnail = Some(Arc::new(thumbnail));
        Ok(true)
    }

    /// The stream's latest thumbnail, while it is live.
    pub fn thumbnail(&self, stream: &StreamName) -> Option<Arc<Thumbnail>> {
        self.lock().get(stream)?.thumbnail.clone()
    }

    /// The stream's title (`Some(None)` when it has none) while it is live.
    pub fn title(&self, stream: &StreamName) -> Option<Option<String>> {
        self.lock().get(stream).map(|e| e.title.clone())
    }

    /// A live stream's title and media, for its recording.
    pub fn recording_info(
        &self,
        stream: &StreamName,
    ) -> Option<(Option<String>, Arc<StreamMedia>)> {
        let streams = self.lock();
        let e = streams.get(stream)?;
        Some((e.title.clone(), e.media.clone()))
    }

    pub fn stream_count(&self) -> usize {
        self.lock().len()
    }

    pub fn viewer_count(&self) -> usize {
        self.lock().values().map(|e| e.viewers.len()).sum()
    }

    /// Viewers per stream for the first `n` streams by name (bounded metric labels).
    pub fn viewers_per_stream(&self, n: usize) -> Vec<(String, usize)> {
        let streams = self.lock();
        let mut v: Vec<(String, usize)> = streams
            .iter()
            .map(|(name, e)| (name.to_string(), e.viewers.len()))
            .collect();
        v.sort();
        v.truncate(n);
        v
    }

    /// Cluster mode: the media of `stream` when this node holds it, for a relay to another node.
    pub fn media_of(&self, stream: &StreamName) -> Option<Arc<StreamMedia>> {
        self.lock().get(stream).map(|e| e.media.clone())
    }

    /// Cluster mode: the viewers `stream` has on this node, when this node holds it.
    pub fn viewers_of(&self, stream: &StreamName) -> Option<usize> {
        self.lock().get(stream).map(|e| e.viewers.len())
    }

    /// Whether this node holds `stream` (live, or waiting for its broadcaster).
    pub fn holds(&self, stream: &StreamName) -> bool {
        self.lock().contains_key(stream)
    }

    /// Cluster mode: each stream's viewers on the other nodes, for the counts sent from now on.
    pub fn set_remote_viewers(&self, remote: HashMap<StreamName, usize>) {
        *self
            .remote_viewers
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = remote;
    }

    /// Ends `stream` whoever broadcasts it (cluster mode: another node holds its lease). The
    /// broadcaster is told as its viewers are.
    pub fn end_stream(&self, stream: &StreamName, reason: EndReason) {
        let entry = self.lock().remove(stream);
        if let Some(e) = entry {
            e.send_viewers(&AudienceEvent::Ended(reason));
            e.publisher_member
                .sink
                .deliver(AudienceEvent::Ended(reason));
        }
    }

    /// Sends each stream's viewer count to its broadcaster and viewers, when it changed and
    /// the last count went out at least [`VIEWER_COUNT_INTERVAL`] ago.
    pub fn send_viewer_counts(&self, now: Instant) {
        let remote = self
            .remote_viewers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let mut streams = self.lock();
        for (name, e) in streams.iter_mut() {
            let count = e.viewers.len() + remote.get(name).copied().unwrap_or(0);
            let due = match e.last_count_sent {
                None => true,
                Some((last, at)) => last != count && now >= at + VIEWER_COUNT_INTERVAL,
            };
            if !due {
                continue;
            }
            e.last_count_sent = Some((count, now));
            e.send_all(&frame(&ServerMessage::Viewers {
                count: count as u64,
            }));
        }
    }
}

/// RFC 3339 in UTC with second precision, without pulling in a date crate.
pub fn rfc3339(t: SystemTime) -> String {
    let secs = t
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let (h, m, s) = (rem / 3600, (rem % 3600) / 60, rem % 60);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let mo = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(mo <= 2);
    format!("{y:04}-{mo:02}-{d:02}T{h:02}:{m:02}:{s:02}Z")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_formats_known_instants() {
        assert_eq!(rfc3339(SystemTime::UNIX_EPOCH), "1970-01-01T00:00:00Z");
        let t = SystemTime::UNIX_EPOCH + Duration::from_secs(1_795_315_845);
        assert_eq!(rfc3339(t), "2026-11-22T02:50:45Z");
        let leap = SystemTime::UNIX_EPOCH + Duration::from_secs(951_782_400);
        assert_eq!(rfc3339(leap), "2000-02-29T00:00:00Z");
    }
}
