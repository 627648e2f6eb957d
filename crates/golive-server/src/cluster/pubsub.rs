//! Live together across nodes: chat, hearts and moderation of a stream reach its audience on
//! every node through Redis pub/sub, one channel per stream (`golive:live:<stream>`).
//!
//! How it flows. A member's chat message, removal or mute is applied on its own node at once
//! (its audience there sees it without a round trip), then handed to this module by the
//! directory ([`Shared`]) and published, by one task per node, so each node's messages keep
//! their order. Every node listens to the channels and applies what other nodes published to
//! the members it holds of that stream; a node's own messages coming back are skipped.
//!
//! Hearts are batched per node (the directory's heart batch, 200 ms by default). A batch is
//! counted into the stream's total in Redis (`INCRBY`) and published with the total it made
//! in one script, so every node shows the same, exact total, whatever the order batches arrive
//! in (the total shown only grows).
//!
//! Chat ids are the cluster's (`INCR` per stream), so a removal names one message on every
//! node. The last [`CHAT_HISTORY`] messages are kept in a capped list per stream (`LPUSH` +
//! `LTRIM`), so a viewer joining on any node gets them; a removal takes the message out of the
//! list too. Mutes are kept in a set per stream, checked when a viewer on any node chats.
//!
//! Everything that comes from Redis is validated as if it came from a client: a malformed
//! message is counted (`golive_cluster_malformed_messages_total`), logged once, and skipped; it
//! never ends a task or reaches a member. Redis out of reach: chat and moderation still reach
//! the node's own audience, hearts add to the node's own total, and the listener subscribes
//! again as soon as Redis is back.

use axum::extract::ws::Utf8Bytes;
use futures_util::StreamExt;
use golive_proto::{
    CHAT_HISTORY, ErrorCode, ProtocolError, ServerMessage, StreamName, chat_text, display_name,
};
use redis::Value;
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tokio::sync::mpsc;

use super::Cluster;
use super::store::{REDIS_TIMEOUT, Store, StoreError, unexpected};
use crate::directory::{Directory, MemberId, Shared};

/// Version of [`LiveMessage`]; a message of another version is malformed to this node.
pub const LIVE_VERSION: u32 = 1;
const CHANNEL_PREFIX: &str = "golive:live:";
const CHAT_PREFIX: &str = "golive:chat:";
const CHAT_ID_PREFIX: &str = "golive:chatid:";
const HEARTS_PREFIX: &str = "golive:hearts:";
const MUTED_PREFIX: &str = "golive:muted:";
/// A stream's shared audience state outlives its last write by this long when its origin
/// could not delete it (the origin died, or Redis was out of reach as the broadcast ended).
const SHARED_TTL: Duration = Duration::from_secs(3600);
/// After the subscription fails, it is opened again this often.
const RESUBSCRIBE: Duration = Duration::from_secs(1);
/// Chat ids stay below 2^53, the largest integer a JavaScript number holds exactly.
const MAX_CHAT_ID: u64 = (1 << 53) - 1;
/// A batch says at most this many hearts (a node's batch of 200 ms is far below it).
const MAX_HEARTS_PER_BATCH: u64 = 1_000_000;

/// Takes a chat id for a member whose lower-cased name is ARGV[1] (`-1` when the broadcaster
/// muted that name). ARGV[3] is the next id this node would give: a counter that Redis lost
/// (a restart) starts again from there, so an id never names two messages.
const CHAT_ID_SCRIPT: &str = r"
if ARGV[1] ~= '' and redis.call('SISMEMBER', KEYS[1], ARGV[1]) == 1 then
  return -1
end
local id = redis.call('INCR', KEYS[2])
if id < tonumber(ARGV[3]) then
  id = tonumber(ARGV[3])
  redis.call('SET', KEYS[2], id)
end
redis.call('PEXPIRE', KEYS[2], ARGV[2])
return id";

/// Keeps a chat message in the stream's capped history and publishes it.
const CHAT_SCRIPT: &str = r"
redis.call('LPUSH', KEYS[1], ARGV[1])
redis.call('LTRIM', KEYS[1], 0, tonumber(ARGV[5]) - 1)
redis.call('PEXPIRE', KEYS[1], ARGV[4])
return redis.call('PUBLISH', ARGV[2], ARGV[3])";

/// Takes message ARGV[1] out of the history and publishes its removal.
const REMOVE_SCRIPT: &str = r"
local id = tonumber(ARGV[1])
for _, item in ipairs(redis.call('LRANGE', KEYS[1], 0, -1)) do
  local ok, m = pcall(cjson.decode, item)
  if ok and type(m) == 'table' and m.id == id then
    redis.call('LREM', KEYS[1], 0, item)
  end
end
return redis.call('PUBLISH', ARGV[2], ARGV[3])";

/// Adds a name to the stream's muted set and publishes it.
const MUTE_SCRIPT: &str = r"
redis.call('SADD', KEYS[1], ARGV[1])
redis.call('PEXPIRE', KEYS[1], ARGV[4])
return redis.call('PUBLISH', ARGV[2], ARGV[3])";

/// Counts a node's batch of hearts into the stream's total and publishes the batch with the
/// total it made, in one step, so no node can see a total that misses a published batch.
/// ARGV[4] is the node id (hex digits: nothing to escape in the JSON).
const HEARTS_SCRIPT: &str = r#"
local total = redis.call('INCRBY', KEYS[1], ARGV[1])
redis.call('PEXPIRE', KEYS[1], ARGV[2])
redis.call('PUBLISH', ARGV[3], '{"v":1,"node":"' .. ARGV[4] .. '","kind":"hearts","count":' .. ARGV[1] .. ',"total":' .. total .. '}')
return total"#;

/// Forgets a stream's audience state, unless its lease (KEYS[1]) is held again: a new
/// broadcast of the name that started meanwhile keeps its first messages.
const FORGET_SCRIPT: &str = r"
if redis.call('EXISTS', KEYS[1]) == 1 then
  return 0
end
return redis.call('DEL', KEYS[2], KEYS[3], KEYS[4], KEYS[5])";

/// The last messages (newest first) and the hearts so far.
const HISTORY_SCRIPT: &str = r"
return {redis.call('LRANGE', KEYS[1], 0, tonumber(ARGV[1]) - 1), redis.call('GET', KEYS[2]) or '0'}";

/// What one node tells the others about a stream's audience, on the stream's channel.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LiveMessage {
    pub v: u32,
    /// The node that published it.
    pub node: String,
    #[serde(flatten)]
    pub event: LiveEvent,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum LiveEvent {
    Chat {
        id: u64,
        from: String,
        text: String,
        at: String,
    },
    Removed {
        id: u64,
    },
    Muted {
        name: String,
    },
    Hearts {
        count: u64,
        total: u64,
    },
}

/// Why a message from Redis was not used.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum LiveError {
    #[error("not on a stream's channel: {0:?}")]
    Channel(String),
    #[error("not a JSON live message: {0}")]
    Json(String),
    #[error("message version {0}, this node reads version {LIVE_VERSION}")]
    Version(u32),
    #[error("bad field: {0}")]
    Field(String),
}

fn field(what: impl Into<String>) -> LiveError {
    LiveError::Field(what.into())
}

/// The stream a channel is of.
pub fn channel_stream(channel: &str) -> Result<StreamName, LiveError> {
    channel
        .strip_prefix(CHANNEL_PREFIX)
        .and_then(|s| StreamName::new(s).ok())
        .ok_or_else(|| LiveError::Channel(channel.chars().take(100).collect()))
}

fn channel(stream: &StreamName) -> String {
    format!("{CHANNEL_PREFIX}{stream}")
}

/// An RFC 3339 UTC time as the directory writes it (`2026-01-01T00:00:00Z`).
fn is_rfc3339_utc(at: &str) -> bool {
    let b = at.as_bytes();
    b.len() == 20
        && b.iter().enumerate().all(|(i, c)| match i {
            4 | 7 => *c == b'-',
            10 => *c == b'T',
            13 | 16 => *c == b':',
            19 => *c == b'Z',
            _ => c.is_ascii_digit(),
        })
}

fn check_chat(id: u64, from: &str, text: &str, at: &str) -> Result<(), LiveError> {
    if id == 0 || id > MAX_CHAT_ID {
        return Err(field(format!("chat id {id}")));
    }
    // The same rules as a client's: what a node could not accept from a viewer, no node
    // passes on from Redis either.
    if display_name(from).ok().as_deref() != Some(from) {
        return Err(field("chat sender name"));
    }
    if chat_text(text).ok().as_deref() != Some(text) {
        return Err(field("chat text"));
    }
    if !is_rfc3339_utc(at) {
        return Err(field("chat time"));
    }
    Ok(())
}

impl LiveMessage {
    /// Reads and checks a message as Redis delivered it.
    pub fn parse(bytes: &[u8]) -> Result<Self, LiveError> {
        let m: LiveMessage =
            serde_json::from_slice(bytes).map_err(|e| LiveError::Json(e.to_string()))?;
        if m.v != LIVE_VERSION {
            return Err(LiveError::Version(m.v));
        }
        if m.node.is_empty() || m.node.len() > 64 || !m.node.bytes().all(|b| b.is_ascii_hexdigit())
        {
            return Err(field("node id"));
        }
        match &m.event {
            LiveEvent::Chat { id, from, text, at } => check_chat(*id, from, text, at)?,
            LiveEvent::Removed { id } => {
                if *id == 0 || *id > MAX_CHAT_ID {
                    return Err(field(format!("removed id {id}")));
                }
            }
            LiveEvent::Muted { name } => {
                if display_name(name).ok().map(|n| n.to_lowercase()).as_deref() != Some(name) {
                    return Err(field("muted name"));
                }
            }
            LiveEvent::Hearts { count, total } => {
                if *count == 0 || *count > MAX_HEARTS_PER_BATCH || total < count {
                    return Err(field(format!("hearts {count} of {total}")));
                }
            }
        }
        Ok(m)
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("a live message serializes")
    }
}

/// One history item as the cluster keeps it: the chat message as clients get it, checked
/// like a live message (it came from Redis).
fn history_item(bytes: &[u8]) -> Result<ServerMessage, LiveError> {
    let m = ServerMessage::parse(std::str::from_utf8(bytes).map_err(|_| field("not UTF-8"))?)
        .map_err(|e| LiveError::Json(e.to_string()))?;
    match &m {
        ServerMessage::Chat { id, from, text, at } => check_chat(*id, from, text, at)?,
        _ => return Err(field("a history item that is not a chat message")),
    }
    Ok(m)
}

/// The Redis commands of the audience's shared state (see the module docs).
impl Store {
    async fn eval(
        &self,
        what: &'static str,
        script: &str,
        keys: &[String],
        args: &[String],
    ) -> Result<Value, StoreError> {
        let mut cmd = redis::cmd("EVAL");
        cmd.arg(script).arg(keys.len()).arg(keys).arg(args);
        let v = self.query(&cmd).await?;
        if matches!(v, Value::Int(_) | Value::Array(_)) {
            Ok(v)
        } else {
            Err(unexpected(what, &v))
        }
    }

    /// A cluster-wide id for a chat message of `name` (lower-cased; empty for the broadcaster,
    /// who is never muted); `None` when the broadcaster muted that name.
    async fn chat_id(
        &self,
        stream: &StreamName,
        name: &str,
        next_local: u64,
    ) -> Result<Option<u64>, StoreError> {
        let v = self
            .eval(
                "EVAL chat id",
                CHAT_ID_SCRIPT,
                &[
                    format!("{MUTED_PREFIX}{stream}"),
                    format!("{CHAT_ID_PREFIX}{stream}"),
                ],
                &[name.to_owned(), ttl_ms(SHARED_TTL), next_local.to_string()],
            )
            .await?;
        match v {
            Value::Int(-1) => Ok(None),
            Value::Int(id) if id > 0 && (id as u64) <= MAX_CHAT_ID => Ok(Some(id as u64)),
            other => Err(unexpected("EVAL chat id", &other)),
        }
    }

    async fn publish_shared(
        &self,
        node: &str,
        stream: &StreamName,
        event: Shared,
    ) -> Result<Option<u64>, StoreError> {
        let ch = channel(stream);
        let message = |event: LiveEvent| {
            LiveMessage {
                v: LIVE_VERSION,
                node: node.to_owned(),
                event,
            }
            .to_json()
        };
        let ttl = ttl_ms(SHARED_TTL);
        match event {
            Shared::Chat { id, from, text, at } => {
                let history = ServerMessage::Chat {
                    id,
                    from: from.clone(),
                    text: text.clone(),
                    at: at.clone(),
                }
                .to_json();
                let msg = message(LiveEvent::Chat { id, from, text, at });
                self.eval(
                    "EVAL chat",
                    CHAT_SCRIPT,
                    &[format!("{CHAT_PREFIX}{stream}")],
                    &[history, ch, msg, ttl, CHAT_HISTORY.to_string()],
                )
                .await?;
                Ok(None)
            }
            Shared::Removed { id } => {
                let msg = message(LiveEvent::Removed { id });
                self.eval(
                    "EVAL remove",
                    REMOVE_SCRIPT,
                    &[format!("{CHAT_PREFIX}{stream}")],
                    &[id.to_string(), ch, msg],
                )
                .await?;
                Ok(None)
            }
            Shared::Muted { name } => {
                let msg = message(LiveEvent::Muted { name: name.clone() });
                self.eval(
                    "EVAL mute",
                    MUTE_SCRIPT,
                    &[format!("{MUTED_PREFIX}{stream}")],
                    &[name, ch, msg, ttl],
                )
                .await?;
                Ok(None)
            }
            Shared::Hearts { count } => {
                let v = self
                    .eval(
                        "EVAL hearts",
                        HEARTS_SCRIPT,
                        &[format!("{HEARTS_PREFIX}{stream}")],
                        &[count.to_string(), ttl, ch, node.to_owned()],
                    )
                    .await?;
                match v {
                    Value::Int(total) if total >= count as i64 => Ok(Some(total as u64)),
                    other => Err(unexpected("EVAL hearts", &other)),
                }
            }
        }
    }

    /// The stream's last chat messages (oldest first, each checked) and its hearts so far.
    async fn history(
        &self,
        stream: &StreamName,
    ) -> Result<(Vec<Result<ServerMessage, LiveError>>, u64), StoreError> {
        let v = self
            .eval(
                "EVAL history",
                HISTORY_SCRIPT,
                &[
                    format!("{CHAT_PREFIX}{stream}"),
                    format!("{HEARTS_PREFIX}{stream}"),
                ],
                &[CHAT_HISTORY.to_string()],
            )
            .await?;
        let Value::Array(parts) = &v else {
            return Err(unexpected("EVAL history", &v));
        };
        let [Value::Array(items), Value::BulkString(hearts)] = parts.as_slice() else {
            return Err(unexpected("EVAL history", &v));
        };
        let hearts = std::str::from_utf8(hearts)
            .ok()
            .and_then(|h| h.parse::<u64>().ok())
            .ok_or_else(|| unexpected("EVAL history", &v))?;
        let mut chat = Vec::with_capacity(items.len());
        for item in items.iter().rev() {
            chat.push(match item {
                Value::BulkString(b) => history_item(b),
                other => Err(field(format!("history item {other:?}"))),
            });
        }
        Ok((chat, hearts))
    }

    /// Forgets a stream's shared audience state (its broadcast ended), unless a new broadcast
    /// of the name holds its lease already.
    async fn forget_audience(&self, stream: &StreamName) -> Result<(), StoreError> {
        let mut keys = vec![format!("{}{stream}", super::store::ORIGIN_PREFIX)];
        for prefix in [CHAT_PREFIX, CHAT_ID_PREFIX, HEARTS_PREFIX, MUTED_PREFIX] {
            keys.push(format!("{prefix}{stream}"));
        }
        match self.eval("EVAL forget", FORGET_SCRIPT, &keys, &[]).await? {
            Value::Int(_) => Ok(()),
            other => Err(unexpected("EVAL forget", &other)),
        }
    }
}

fn ttl_ms(d: Duration) -> String {
    d.as_millis().to_string()
}

/// Messages from Redis that could not be used: counted, and the first one logged.
pub(super) struct Malformed {
    logged: AtomicBool,
}

impl Malformed {
    pub(super) fn new() -> Self {
        Self {
            logged: AtomicBool::new(false),
        }
    }
}

impl Cluster {
    /// Starts sharing the audience of this node's streams with the other nodes: from now on
    /// the directory hands chat, moderation and hearts to the cluster.
    pub fn start_live(self: &Arc<Self>, directory: &Arc<Directory>) {
        // Unbounded, and yet bounded: chat is rate-limited per member and hearts come in one
        // batch per stream per heart interval. A bounded queue would have to drop hearts (and
        // lose the totals' exactness) or make the directory wait, which it never may.
        let (tx, rx) = mpsc::unbounded_channel::<(StreamName, Shared)>();
        directory.set_shared_hook(Box::new(move |stream, event| {
            let _ = tx.send((stream.clone(), event));
        }));
        tokio::spawn(self.clone().publish_loop(directory.clone(), rx));
        tokio::spawn(self.clone().listen_loop(directory.clone()));
    }

    /// Publishes this node's events in the order they happened.
    async fn publish_loop(
        self: Arc<Self>,
        directory: Arc<Directory>,
        mut rx: mpsc::UnboundedReceiver<(StreamName, Shared)>,
    ) {
        while let Some((stream, event)) = rx.recv().await {
            let hearts = match &event {
                Shared::Hearts { count } => Some(*count),
                _ => None,
            };
            if !self.is_up() {
                // Redis is out of reach: no command waits for its timeout meanwhile (the
                // heartbeat finds out when it is back). Hearts count here.
                if let Some(count) = hearts {
                    directory.apply_hearts(&stream, count, None, true);
                }
                continue;
            }
            match self.store.publish_shared(&self.id, &stream, event).await {
                Ok(total) => {
                    if let Some(count) = hearts {
                        directory.apply_hearts(&stream, count, total, true);
                    }
                }
                Err(e) => {
                    // Already delivered here; the other nodes miss it. Hearts still count here.
                    self.store_failed(&e);
                    if let Some(count) = hearts {
                        directory.apply_hearts(&stream, count, None, true);
                    }
                }
            }
        }
    }

    /// Listens to every stream's channel (`PSUBSCRIBE`), subscribing again after any failure.
    async fn listen_loop(self: Arc<Self>, directory: Arc<Directory>) {
        loop {
            match self.listen(&directory).await {
                Ok(()) => {
                    tracing::warn!("cluster: the pub/sub connection closed; subscribing again")
                }
                Err(e) => self.store_failed(&e),
            }
            tokio::time::sleep(RESUBSCRIBE).await;
        }
    }

    async fn listen(&self, directory: &Directory) -> Result<(), StoreError> {
        let mut pubsub = tokio::time::timeout(REDIS_TIMEOUT, self.store.client.get_async_pubsub())
            .await
            .map_err(|_| StoreError::Timeout)??;
        tokio::time::timeout(
            REDIS_TIMEOUT,
            pubsub.psubscribe(format!("{CHANNEL_PREFIX}*")),
        )
        .await
        .map_err(|_| StoreError::Timeout)??;
        tracing::debug!("cluster: listening to the streams' channels");
        let outages = self.outages();
        let mut messages = pubsub.on_message();
        let mut check = tokio::time::interval(RESUBSCRIBE);
        loop {
            tokio::select! {
                m = messages.next() => {
                    let Some(m) = m else { return Ok(()) };
                    self.on_live(directory, m.get_channel_name(), m.get_payload_bytes());
                }
                _ = check.tick() => {
                    // Redis was out of reach since this subscription began: a connection that
                    // never saw its end (a cut network) may be dead; open a fresh one.
                    if self.outages() != outages {
                        return Ok(());
                    }
                }
            }
        }
    }

    /// One message from a stream's channel.
    fn on_live(&self, directory: &Directory, channel: &str, payload: &[u8]) {
        let parsed = channel_stream(channel)
            .and_then(|stream| LiveMessage::parse(payload).map(|m| (stream, m)));
        let (stream, m) = match parsed {
            Ok(p) => p,
            Err(e) => {
                self.malformed_message(&e);
                return;
            }
        };
        // This node applied its own events as they happened.
        if m.node == self.id {
            return;
        }
        match m.event {
            LiveEvent::Chat { id, from, text, at } => {
                directory.apply_chat(&stream, id, from, text, at);
            }
            LiveEvent::Removed { id } => directory.apply_removed(&stream, id),
            LiveEvent::Muted { name } => directory.apply_muted(&stream, &name),
            LiveEvent::Hearts { count, total } => {
                directory.apply_hearts(&stream, count, Some(total), false);
            }
        }
    }

    fn malformed_message(&self, e: &LiveError) {
        self.metrics.malformed_messages.inc();
        if !self.malformed.logged.swap(true, Ordering::Relaxed) {
            tracing::error!(
                "cluster: skipping a malformed message from Redis (further ones are only counted): {e}"
            );
        } else {
            tracing::debug!("cluster: skipping a malformed message from Redis: {e}");
        }
    }

    /// The id a chat message of `member` takes: the cluster's next (`None`: this node's next,
    /// when Redis is out of reach), or `muted` when the broadcaster muted the member's name
    /// on any node.
    pub async fn chat_id(
        &self,
        directory: &Directory,
        stream: &StreamName,
        member: MemberId,
    ) -> Result<Option<u64>, ProtocolError> {
        let Some(ticket) = directory.chat_ticket(stream, member) else {
            // Not a member: the directory says so.
            return Ok(None);
        };
        if !self.is_up() {
            return Ok(None);
        }
        let name = if ticket.broadcaster {
            String::new()
        } else {
            ticket.name.to_lowercase()
        };
        match self.store.chat_id(stream, &name, ticket.next_id).await {
            Ok(Some(id)) => Ok(Some(id)),
            Ok(None) => Err(ProtocolError::new(
                ErrorCode::Muted,
                "the broadcaster muted you for this broadcast",
            )),
            Err(e) => {
                self.store_failed(&e);
                Ok(None)
            }
        }
    }

    /// The chat history and hearts a viewer joining `stream` gets (the cluster's, whichever
    /// node it joins); `None` when Redis is out of reach (the node's own is used).
    pub async fn audience_history(&self, stream: &StreamName) -> Option<Vec<Utf8Bytes>> {
        if !self.is_up() {
            return None;
        }
        let (chat, hearts) = match self.store.history(stream).await {
            Ok(h) => h,
            Err(e) => {
                self.store_failed(&e);
                return None;
            }
        };
        let mut out = Vec::with_capacity(chat.len() + 1);
        for item in chat {
            match item {
                Ok(m) => out.push(Utf8Bytes::from(m.to_json())),
                Err(e) => self.malformed_message(&e),
            }
        }
        if hearts > 0 {
            out.push(Utf8Bytes::from(
                ServerMessage::Hearts {
                    count: 0,
                    total: hearts,
                }
                .to_json(),
            ));
        }
        Some(out)
    }

    /// Forgets the shared audience state of a broadcast that ended on this node (its origin),
    /// so the next broadcast of the name starts with an empty chat and no hearts.
    pub(super) async fn forget_audience(&self, stream: &StreamName) {
        if let Err(e) = self.store.forget_audience(stream).await {
            // It expires by itself.
            self.store_failed(&e);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(event: LiveEvent) -> LiveMessage {
        LiveMessage {
            v: LIVE_VERSION,
            node: "00ff00ff00ff00ff".into(),
            event,
        }
    }

    #[test]
    fn live_messages_round_trip_in_their_documented_shape() {
        let chat = msg(LiveEvent::Chat {
            id: 7,
            from: "ana".into(),
            text: "hello".into(),
            at: "2026-01-01T00:00:00Z".into(),
        });
        assert_eq!(
            chat.to_json(),
            r#"{"v":1,"node":"00ff00ff00ff00ff","kind":"chat","id":7,"from":"ana","text":"hello","at":"2026-01-01T00:00:00Z"}"#
        );
        for m in [
            chat,
            msg(LiveEvent::Removed { id: 7 }),
            msg(LiveEvent::Muted { name: "bob".into() }),
            msg(LiveEvent::Hearts {
                count: 3,
                total: 10,
            }),
        ] {
            assert_eq!(LiveMessage::parse(m.to_json().as_bytes()), Ok(m));
        }
        // The hearts script writes its message by hand: it must read as one.
        let scripted = br#"{"v":1,"node":"abc123","kind":"hearts","count":4,"total":12}"#;
        assert_eq!(
            LiveMessage::parse(scripted).map(|m| m.event),
            Ok(LiveEvent::Hearts {
                count: 4,
                total: 12
            })
        );
    }

    #[test]
    fn malformed_live_messages_are_errors_not_panics() {
        let bad: [&[u8]; 12] = [
            b"",
            b"\xff\xfe",
            b"null",
            b"{}",
            br#"{"v":2,"node":"ab","kind":"removed","id":1}"#,
            br#"{"v":1,"node":"","kind":"removed","id":1}"#,
            br#"{"v":1,"node":"not hex!","kind":"removed","id":1}"#,
            br#"{"v":1,"node":"ab","kind":"launch","id":1}"#,
            br#"{"v":1,"node":"ab","kind":"removed","id":0}"#,
            br#"{"v":1,"node":"ab","kind":"hearts","count":5,"total":2}"#,
            br#"{"v":1,"node":"ab","kind":"chat","id":1,"from":"a","text":"","at":"2026-01-01T00:00:00Z"}"#,
            br#"{"v":1,"node":"ab","kind":"chat","id":1,"from":"a","text":"x","at":"yesterday"}"#,
        ];
        for b in bad {
            assert!(
                LiveMessage::parse(b).is_err(),
                "{:?}",
                String::from_utf8_lossy(b)
            );
        }
        let control = msg(LiveEvent::Chat {
            id: 1,
            from: "a\u{7}".into(),
            text: "x".into(),
            at: "2026-01-01T00:00:00Z".into(),
        });
        assert!(LiveMessage::parse(control.to_json().as_bytes()).is_err());
        let shouting = msg(LiveEvent::Muted { name: "BOB".into() });
        assert!(
            LiveMessage::parse(shouting.to_json().as_bytes()).is_err(),
            "muted names travel lower-cased"
        );
        let huge = msg(LiveEvent::Removed { id: 1 << 60 });
        assert!(LiveMessage::parse(huge.to_json().as_bytes()).is_err());
    }

    #[test]
    fn only_stream_channels_name_a_stream() {
        assert_eq!(
            channel_stream("golive:live:demo"),
            Ok(StreamName::new("demo").unwrap())
        );
        assert!(channel_stream("golive:live:").is_err());
        assert!(channel_stream("golive:live:a b").is_err());
        assert!(channel_stream("other:demo").is_err());
    }

    #[test]
    fn history_items_are_chat_messages_checked_like_live_ones() {
        let ok = br#"{"type":"chat","id":3,"from":"ana","text":"hi","at":"2026-01-01T00:00:00Z"}"#;
        assert!(matches!(
            history_item(ok),
            Ok(ServerMessage::Chat { id: 3, .. })
        ));
        assert!(history_item(br#"{"type":"viewers","count":3}"#).is_err());
        assert!(history_item(b"{").is_err());
    }
}
