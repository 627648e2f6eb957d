//! The wire types of golive's signalling protocol: one JSON object per WebSocket text frame,
//! each tagged by its `type`. This crate is the single source of truth for the names on the
//! wire; the server, the load tester and the tests all speak through these types, and
//! `docs/protocol.md` documents them for everyone else.
//!
//! Parsing is deliberately split in two steps ([`ClientMessage::parse`]): first the frame must be a
//! JSON object with a known `type`, then its fields must fit. That is what lets the server answer a
//! bad frame with the precise error code (`bad_request` for shape, `bad_stream_name` for a name)
//! and keep the socket open.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::sync::Arc;

/// Longest stream name, in bytes (names are ASCII).
pub const MAX_STREAM_NAME_LEN: usize = 64;
/// Largest WebSocket frame the server accepts; a bigger one closes the socket with 1009.
pub const MAX_FRAME_BYTES: usize = 64 * 1024;
/// WebSocket close code for a frame over [`MAX_FRAME_BYTES`] (RFC 6455 "message too big").
pub const CLOSE_MESSAGE_TOO_BIG: u16 = 1009;

/// A validated stream name: 1 to 64 of `A-Z a-z 0-9 _ -`. Cheap to clone (it travels with
/// every forwarded packet).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StreamName(Arc<str>);

/// Why a string is not a [`StreamName`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadStreamName;

impl fmt::Display for BadStreamName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "a stream name is 1 to {MAX_STREAM_NAME_LEN} characters of A-Z a-z 0-9 _ -"
        )
    }
}

impl std::error::Error for BadStreamName {}

impl StreamName {
    /// Checks `name` against the naming rule.
    pub fn new(name: &str) -> Result<Self, BadStreamName> {
        let ok = !name.is_empty()
            && name.len() <= MAX_STREAM_NAME_LEN
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
        if ok {
            Ok(Self(Arc::from(name)))
        } else {
            Err(BadStreamName)
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for StreamName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl Serialize for StreamName {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for StreamName {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        StreamName::new(&s).map_err(serde::de::Error::custom)
    }
}

/// A message from a client (broadcaster or viewer) to the server.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ClientMessage {
    /// Go live on `stream` with the SDP offer `sdp`.
    Publish {
        /// Not a [`StreamName`] here, so a bad name is told apart from a bad frame.
        stream: String,
        sdp: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        key: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        title: Option<String>,
        /// The broadcaster's name in chat (a label, not an account).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        name: Option<String>,
        /// `false`: do not record this broadcast (on a server that records, every broadcast is
        /// recorded unless it says so).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        record: Option<bool>,
    },
    /// Watch `stream` with the SDP offer `sdp`.
    Watch {
        stream: String,
        sdp: String,
        /// The viewer's name in chat; a default such as `viewer-7f3a` otherwise.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        name: Option<String>,
    },
    /// A trickled ICE candidate; an empty `candidate` ends trickling.
    Candidate {
        candidate: String,
        #[serde(rename = "sdpMid", default, skip_serializing_if = "Option::is_none")]
        sdp_mid: Option<String>,
        #[serde(
            rename = "sdpMLineIndex",
            default,
            skip_serializing_if = "Option::is_none"
        )]
        sdp_mline_index: Option<u16>,
        /// Sent by browsers' `RTCIceCandidate.toJSON()`; accepted and not needed.
        #[serde(
            rename = "usernameFragment",
            default,
            skip_serializing_if = "Option::is_none"
        )]
        username_fragment: Option<String>,
    },
    /// End this session (the socket stays open for another publish or watch).
    Leave,
    /// A chat message to everyone on the stream (1 to [`MAX_CHAT_CHARS`] characters).
    Chat { text: String },
    /// A heart for the stream.
    Heart,
    /// The broadcaster removes chat message `id`.
    Remove { id: u64 },
    /// The broadcaster mutes the viewer(s) named `name` for the rest of the broadcast.
    Mute { name: String },
    /// The broadcaster's snapshot of its picture for the directory: a JPEG of at most
    /// [`MAX_THUMBNAIL_BYTES`], in standard base64 (RFC 4648, with padding).
    Thumbnail { jpeg: String },
    /// A viewer's ceiling on its video quality; the server answers nothing, and tells the
    /// viewer with a server `quality` message once its video has moved to another layer.
    Quality { prefer: QualityPreference },
}

/// A viewer's ceiling on quality, for a broadcaster that sends simulcast layers. `high`,
/// `medium` and `low` cap the layer (a stream with fewer layers rounds down to the nearest it
/// has); the viewer's bandwidth estimate may still hold it lower. `auto`, the default, leaves
/// the choice to the estimate alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum QualityPreference {
    #[default]
    Auto,
    High,
    Medium,
    Low,
}

/// A simulcast layer by name. The top layer a broadcaster sends (its full picture) is always
/// `high`; with two or more the bottom one is `low`; with three, the one between is `medium`.
/// So a broadcaster without simulcast has one layer, `high`, and one with two has `low` and
/// `high`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum QualityLayer {
    Low,
    Medium,
    High,
    /// No video: the viewer's link carries less than the lowest layer, so it gets the audio
    /// alone until its estimate carries video again (then a message names the layer).
    Audio,
}

impl QualityLayer {
    /// The name of layer `index` (counted from the lowest, 0) of a broadcaster that sends
    /// `count` layers. An index at or past the top counts as the top: a layer the server has
    /// seen is one the broadcaster sends, whatever the count says.
    pub fn from_index(index: usize, count: usize) -> Self {
        if index + 1 >= count {
            QualityLayer::High
        } else if index == 0 {
            QualityLayer::Low
        } else {
            QualityLayer::Medium
        }
    }
}

/// Why a viewer's video moved to another layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum QualityReason {
    /// The viewer's bandwidth estimate fell below its layer, or rose to carry a higher one.
    Bandwidth,
    /// The viewer's `quality` preference asked for it.
    Preference,
    /// The broadcaster stopped or started sending a layer.
    Publisher,
}

/// The `type` values a client may send.
pub const CLIENT_TYPES: &[&str] = &[
    "publish",
    "watch",
    "candidate",
    "leave",
    "chat",
    "heart",
    "remove",
    "mute",
    "thumbnail",
    "quality",
];

/// Largest thumbnail JPEG, in bytes (before base64): its base64 (43,692 characters) and the
/// message around it fit in the default frame limit, [`MAX_FRAME_BYTES`].
pub const MAX_THUMBNAIL_BYTES: usize = 32 * 1024;

/// Longest chat message, in characters.
pub const MAX_CHAT_CHARS: usize = 280;
/// Longest name, in characters (after trimming).
pub const MAX_NAME_CHARS: usize = 32;
/// Chat messages a stream keeps for viewers who join.
pub const CHAT_HISTORY: usize = 50;

/// Checks a chat name: 1 to [`MAX_NAME_CHARS`] printable characters after trimming.
pub fn display_name(raw: &str) -> Result<String, ProtocolError> {
    let name = raw.trim();
    let count = name.chars().count();
    if count == 0 || count > MAX_NAME_CHARS || name.chars().any(char::is_control) {
        return Err(ProtocolError::bad_request(format!(
            "a name is 1 to {MAX_NAME_CHARS} printable characters"
        )));
    }
    Ok(name.to_owned())
}

/// Checks a chat text: 1 to [`MAX_CHAT_CHARS`] characters, not blank, no control characters
/// other than line breaks and tabs.
pub fn chat_text(raw: &str) -> Result<String, ProtocolError> {
    let count = raw.chars().count();
    if raw.trim().is_empty()
        || count > MAX_CHAT_CHARS
        || raw
            .chars()
            .any(|c| c.is_control() && !matches!(c, '\n' | '\r' | '\t'))
    {
        return Err(ProtocolError::bad_request(format!(
            "a chat message is 1 to {MAX_CHAT_CHARS} characters of text"
        )));
    }
    Ok(raw.to_owned())
}

impl ClientMessage {
    /// Parses one text frame. Every failure is a [`ErrorCode::BadRequest`] with a message
    /// a person can act on.
    pub fn parse(text: &str) -> Result<Self, ProtocolError> {
        // The common case, a good message, is one pass straight into the type (hearts and chat
        // come by the thousand); only a bad one is parsed again to say precisely what is wrong.
        if let Ok(msg) = serde_json::from_str(text) {
            return Ok(msg);
        }
        let value: serde_json::Value = serde_json::from_str(text)
            .map_err(|e| ProtocolError::bad_request(format!("not JSON: {e}")))?;
        let Some(obj) = value.as_object() else {
            return Err(ProtocolError::bad_request("a message is a JSON object"));
        };
        let Some(ty) = obj.get("type").and_then(|t| t.as_str()).map(str::to_owned) else {
            return Err(ProtocolError::bad_request(
                "a message needs a string field \"type\"",
            ));
        };
        if !CLIENT_TYPES.contains(&ty.as_str()) {
            return Err(ProtocolError::bad_request(format!(
                "unknown type {ty:?}; expected one of {}",
                CLIENT_TYPES.join(", ")
            )));
        }
        serde_json::from_value(value)
            .map_err(|e| ProtocolError::bad_request(format!("bad {ty:?} message: {e}")))
    }
}

/// Why a broadcast ended, as told to its viewers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EndReason {
    BroadcasterLeft,
    /// The server's media connection to this peer failed or went silent.
    ConnectionLost,
    ServerShutdown,
}

/// A message from the server to a client.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerMessage {
    /// The answer to a `publish` or `watch`; it holds the server's candidates.
    Answer {
        sdp: String,
        peer: String,
    },
    /// How many viewers the stream has; coalesced to about once a second.
    Viewers {
        count: u64,
    },
    /// The session's broadcast is over.
    Ended {
        reason: EndReason,
    },
    Error {
        code: ErrorCode,
        message: String,
    },
    /// A chat message; `at` is RFC 3339.
    Chat {
        id: u64,
        from: String,
        text: String,
        at: String,
    },
    /// The broadcaster removed chat message `id`.
    Removed {
        id: u64,
    },
    /// Hearts since the last batch, and since the broadcast went live.
    Hearts {
        count: u64,
        total: u64,
    },
    /// To viewers: the broadcaster's connection was lost; the broadcast waits up to
    /// `grace_secs` for it to come back (their video pauses, their connection stays).
    Reconnecting {
        grace_secs: u64,
    },
    /// To viewers: the broadcaster is back; video resumes at its next keyframe.
    Resumed,
    /// To a broadcaster, after its answer: the broadcast is being recorded as replay `replay`
    /// (watchable at `/replay/<replay>`).
    Recording {
        replay: String,
    },
    /// To a broadcaster: its broadcast is not recorded (any more), for `reason`; the broadcast
    /// itself goes on.
    RecordingStopped {
        reason: RecordingStopReason,
        message: String,
    },
    /// Instead of an answer to `watch`: this node is past its capacity; watch at `url` (the
    /// WebSocket URL of a node with room, `ws://host:port/ws`) instead. Clients follow a few
    /// redirects at most, so a misconfigured cluster cannot bounce them forever.
    Redirect {
        url: String,
    },
    /// To a viewer: its video moved to simulcast layer `layer`, for `reason` (sent at the
    /// switch, that is at the new layer's first keyframe). A viewer starts on the lowest layer
    /// without this message; a broadcaster without simulcast never causes one.
    Quality {
        layer: QualityLayer,
        reason: QualityReason,
    },
}

/// Why a broadcast is not recorded (any more).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RecordingStopReason {
    /// The free disk space is under the server's floor.
    DiskFull,
    /// The disk refused a write.
    WriteError,
    /// The server does not record this codec (yet).
    CodecUnsupported,
}

impl RecordingStopReason {
    pub fn as_str(self) -> &'static str {
        match self {
            RecordingStopReason::DiskFull => "disk_full",
            RecordingStopReason::WriteError => "write_error",
            RecordingStopReason::CodecUnsupported => "codec_unsupported",
        }
    }
}

impl fmt::Display for RecordingStopReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The error codes of the protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// Not JSON, unknown `type`, missing or ill-typed field, or a message out of place.
    BadRequest,
    BadStreamName,
    BadSdp,
    StreamNotFound,
    StreamBusy,
    CodecUnsupported,
    /// A broadcaster's stream key is missing or wrong.
    Unauthorized,
    /// Chat messages sent faster than the per-sender limit.
    RateLimited,
    /// Moderation (`remove`, `mute`) by someone who is not the stream's broadcaster.
    Forbidden,
    /// Chat from a sender the broadcaster muted.
    Muted,
    /// The server is at its limit of streams or viewers.
    ServerFull,
    /// The stream is at its limit of viewers.
    StreamFull,
    /// Too many sessions open from one address.
    TooManySessions,
    /// The server is shutting down and takes no new sessions.
    Draining,
    /// Cluster mode: the node cannot reach its cluster's coordination service, so it refuses
    /// what needs the other nodes (a new broadcast, a stream held elsewhere); try again later.
    ClusterUnavailable,
    Internal,
    /// A `thumbnail` that is not base64, or not a JPEG (no start-of-image or end-of-image marker).
    BadThumbnail,
    /// A `thumbnail` over [`MAX_THUMBNAIL_BYTES`].
    ThumbnailTooLarge,
}

impl ErrorCode {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::BadRequest => "bad_request",
            ErrorCode::BadStreamName => "bad_stream_name",
            ErrorCode::BadSdp => "bad_sdp",
            ErrorCode::StreamNotFound => "stream_not_found",
            ErrorCode::StreamBusy => "stream_busy",
            ErrorCode::CodecUnsupported => "codec_unsupported",
            ErrorCode::Unauthorized => "unauthorized",
            ErrorCode::RateLimited => "rate_limited",
            ErrorCode::Forbidden => "forbidden",
            ErrorCode::Muted => "muted",
            ErrorCode::ServerFull => "server_full",
            ErrorCode::StreamFull => "stream_full",
            ErrorCode::TooManySessions => "too_many_sessions",
            ErrorCode::Draining => "draining",
            ErrorCode::ClusterUnavailable => "cluster_unavailable",
            ErrorCode::Internal => "internal",
            ErrorCode::BadThumbnail => "bad_thumbnail",
            ErrorCode::ThumbnailTooLarge => "thumbnail_too_large",
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An error as it goes on the wire: a code for programs, a message for people.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProtocolError {
    pub code: ErrorCode,
    pub message: String,
}

impl ProtocolError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::BadRequest, message)
    }
}

impl fmt::Display for ProtocolError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

impl std::error::Error for ProtocolError {}

impl From<ProtocolError> for ServerMessage {
    fn from(e: ProtocolError) -> Self {
        ServerMessage::Error {
            code: e.code,
            message: e.message,
        }
    }
}

impl ServerMessage {
    /// The JSON text of this message.
    pub fn to_json(&self) -> String {
        // Serializing these plain enums cannot fail.
        serde_json::to_string(self).expect("server messages always serialize")
    }

    /// Parses a server frame (used by clients: the load tester and the tests).
    pub fn parse(text: &str) -> Result<Self, serde_json::Error> {
        serde_json::from_str(text)
    }
}

impl ClientMessage {
    /// The message's `type` on the wire.
    pub fn type_name(&self) -> &'static str {
        match self {
            ClientMessage::Publish { .. } => "publish",
            ClientMessage::Watch { .. } => "watch",
            ClientMessage::Candidate { .. } => "candidate",
            ClientMessage::Leave => "leave",
            ClientMessage::Chat { .. } => "chat",
            ClientMessage::Heart => "heart",
            ClientMessage::Remove { .. } => "remove",
            ClientMessage::Mute { .. } => "mute",
            ClientMessage::Thumbnail { .. } => "thumbnail",
            ClientMessage::Quality { .. } => "quality",
        }
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("client messages always serialize")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_chat_texts_are_checked() {
        assert_eq!(display_name("  Ann  ").unwrap(), "Ann");
        assert!(display_name("   ").is_err());
        assert!(display_name(&"é".repeat(33)).is_err());
        assert_eq!(display_name(&"é".repeat(32)).unwrap().chars().count(), 32);
        assert!(display_name("a\u{7}b").is_err());
        assert!(chat_text("hello <b>world</b>").is_ok());
        assert!(chat_text("two\nlines").is_ok());
        assert!(chat_text(" ").is_err());
        assert!(chat_text(&"x".repeat(281)).is_err());
        assert!(chat_text(&"😀".repeat(280)).is_ok());
        assert!(chat_text("bell\u{7}").is_err());
        assert!(chat_text("crlf\r\nand\ttab").is_ok());
    }

    #[test]
    fn interaction_messages_have_the_documented_shape() {
        for (text, msg) in [
            (
                r#"{"type":"chat","text":"hi"}"#,
                ClientMessage::Chat { text: "hi".into() },
            ),
            (r#"{"type":"heart"}"#, ClientMessage::Heart),
            (
                r#"{"type":"remove","id":7}"#,
                ClientMessage::Remove { id: 7 },
            ),
            (
                r#"{"type":"mute","name":"troll"}"#,
                ClientMessage::Mute {
                    name: "troll".into(),
                },
            ),
        ] {
            assert_eq!(ClientMessage::parse(text).unwrap(), msg);
        }
        let chat = ServerMessage::Chat {
            id: 3,
            from: "Ann".into(),
            text: "hi".into(),
            at: "2026-11-22T03:00:00Z".into(),
        };
        assert_eq!(
            chat.to_json(),
            r#"{"type":"chat","id":3,"from":"Ann","text":"hi","at":"2026-11-22T03:00:00Z"}"#
        );
        assert_eq!(
            ServerMessage::Hearts {
                count: 4,
                total: 10
            }
            .to_json(),
            r#"{"type":"hearts","count":4,"total":10}"#
        );
        assert_eq!(
            ServerMessage::Removed { id: 3 }.to_json(),
            r#"{"type":"removed","id":3}"#
        );
    }

    #[test]
    fn thumbnail_has_the_documented_shape() {
        let m = ClientMessage::parse(r#"{"type":"thumbnail","jpeg":"/9j/2Q=="}"#).unwrap();
        assert_eq!(
            m,
            ClientMessage::Thumbnail {
                jpeg: "/9j/2Q==".into()
            }
        );
        assert_eq!(m.type_name(), "thumbnail");
        assert!(CLIENT_TYPES.contains(&"thumbnail"));
        // The largest thumbnail, in base64 inside its message, fits in the default frame limit.
        let base64_len = MAX_THUMBNAIL_BYTES.div_ceil(3) * 4;
        assert!(base64_len + r#"{"type":"thumbnail","jpeg":""}"#.len() <= MAX_FRAME_BYTES);
    }

    #[test]
    fn quality_messages_round_trip_in_the_documented_shape() {
        for (text, prefer) in [
            (
                r#"{"type":"quality","prefer":"auto"}"#,
                QualityPreference::Auto,
            ),
            (
                r#"{"type":"quality","prefer":"high"}"#,
                QualityPreference::High,
            ),
            (
                r#"{"type":"quality","prefer":"medium"}"#,
                QualityPreference::Medium,
            ),
            (
                r#"{"type":"quality","prefer":"low"}"#,
                QualityPreference::Low,
            ),
        ] {
            let m = ClientMessage::parse(text).unwrap();
            assert_eq!(m, ClientMessage::Quality { prefer });
            assert_eq!(m.type_name(), "quality");
            assert_eq!(m.to_json(), text);
        }
        assert!(CLIENT_TYPES.contains(&"quality"));
        for (layer, reason, json) in [
            (
                QualityLayer::Low,
                QualityReason::Preference,
                r#"{"type":"quality","layer":"low","reason":"preference"}"#,
            ),
            (
                QualityLayer::Medium,
                QualityReason::Bandwidth,
                r#"{"type":"quality","layer":"medium","reason":"bandwidth"}"#,
            ),
            (
                QualityLayer::High,
                QualityReason::Publisher,
                r#"{"type":"quality","layer":"high","reason":"publisher"}"#,
            ),
        ] {
            let msg = ServerMessage::Quality { layer, reason };
            assert_eq!(msg.to_json(), json);
            assert_eq!(ServerMessage::parse(json).unwrap(), msg);
        }
    }

    #[test]
    fn bad_quality_values_are_bad_requests_that_name_the_choices() {
        for text in [
            r#"{"type":"quality","prefer":"ultra"}"#,
            r#"{"type":"quality","prefer":"HIGH"}"#,
            r#"{"type":"quality","prefer":2}"#,
            r#"{"type":"quality"}"#,
        ] {
            let e = ClientMessage::parse(text).unwrap_err();
            assert_eq!(e.code, ErrorCode::BadRequest, "{text}");
            assert!(
                e.message.contains("bad \"quality\""),
                "{text}: {}",
                e.message
            );
        }
        let e = ClientMessage::parse(r#"{"type":"quality","prefer":"ultra"}"#).unwrap_err();
        for choice in ["auto", "high", "medium", "low"] {
            assert!(e.message.contains(choice), "{}", e.message);
        }
        assert!(
            ServerMessage::parse(r#"{"type":"quality","layer":"top","reason":"bandwidth"}"#)
                .is_err()
        );
        assert!(
            ServerMessage::parse(r#"{"type":"quality","layer":"low","reason":"whim"}"#).is_err()
        );
    }

    #[test]
    fn layers_are_named_from_the_top_down() {
        assert_eq!(QualityLayer::from_index(0, 1), QualityLayer::High);
        assert_eq!(QualityLayer::from_index(0, 2), QualityLayer::Low);
        assert_eq!(QualityLayer::from_index(1, 2), QualityLayer::High);
        assert_eq!(QualityLayer::from_index(0, 3), QualityLayer::Low);
        assert_eq!(QualityLayer::from_index(1, 3), QualityLayer::Medium);
        assert_eq!(QualityLayer::from_index(2, 3), QualityLayer::High);
        // A count that lags behind the layers seen (or none yet) still names the top `high`.
        assert_eq!(QualityLayer::from_index(0, 0), QualityLayer::High);
        assert_eq!(QualityLayer::from_index(2, 2), QualityLayer::High);
    }

    #[test]
    fn stream_names_follow_the_rule() {
        assert!(StreamName::new("demo").is_ok());
        assert!(StreamName::new("A-z_09").is_ok());
        assert!(StreamName::new(&"a".repeat(64)).is_ok());
        assert!(StreamName::new("").is_err());
        assert!(StreamName::new(&"a".repeat(65)).is_err());
        assert!(StreamName::new("with space").is_err());
        assert!(StreamName::new("dé").is_err());
        assert!(StreamName::new("a/b").is_err());
    }

    #[test]
    fn publish_parses_with_optional_fields() {
        let m = ClientMessage::parse(r#"{"type":"publish","stream":"demo","sdp":"v=0"}"#).unwrap();
        assert_eq!(
            m,
            ClientMessage::Publish {
                stream: "demo".into(),
                sdp: "v=0".into(),
                key: None,
                title: None,
                name: None,
                record: None,
            }
        );
        let m = ClientMessage::parse(
            r#"{"type":"publish","stream":"demo","sdp":"v=0","record":false}"#,
        )
        .unwrap();
        assert!(matches!(
            m,
            ClientMessage::Publish {
                record: Some(false),
                ..
            }
        ));
        let m = ClientMessage::parse(
            r#"{"type":"publish","stream":"demo","sdp":"v=0","key":"k","title":"Hi"}"#,
        )
        .unwrap();
        assert!(matches!(
            m,
            ClientMessage::Publish {
                key: Some(_),
                title: Some(_),
                ..
            }
        ));
    }

    #[test]
    fn candidate_uses_browser_field_names() {
        let m = ClientMessage::parse(
            r#"{"type":"candidate","candidate":"candidate:1 1 udp 1 127.0.0.1 5000 typ host","sdpMid":"0","sdpMLineIndex":0}"#,
        )
        .unwrap();
        assert!(matches!(
            m,
            ClientMessage::Candidate { sdp_mid: Some(ref mid), sdp_mline_index: Some(0), .. } if mid == "0"
        ));
        let back = m.to_json();
        assert!(back.contains("\"sdpMid\":\"0\"") && back.contains("\"sdpMLineIndex\":0"));
    }

    #[test]
    fn bad_frames_are_bad_requests_with_reasons() {
        for (text, hint) in [
            ("not json", "not JSON"),
            ("[1,2]", "object"),
            (r#"{"stream":"x"}"#, "\"type\""),
            (r#"{"type":"dance"}"#, "unknown type"),
            (r#"{"type":"watch","stream":"x"}"#, "sdp"),
            (r#"{"type":"watch","stream":1,"sdp":"x"}"#, "bad \"watch\""),
        ] {
            let e = ClientMessage::parse(text).unwrap_err();
            assert_eq!(e.code, ErrorCode::BadRequest, "{text}");
            assert!(e.message.contains(hint), "{text}: {}", e.message);
        }
    }

    #[test]
    fn server_messages_have_the_documented_shape() {
        let cases = [
            (
                ServerMessage::Answer {
                    sdp: "v=0".into(),
                    peer: "p1".into(),
                },
                r#"{"type":"answer","sdp":"v=0","peer":"p1"}"#,
            ),
            (
                ServerMessage::Viewers { count: 3 },
                r#"{"type":"viewers","count":3}"#,
            ),
            (
                ServerMessage::Ended {
                    reason: EndReason::BroadcasterLeft,
                },
                r#"{"type":"ended","reason":"broadcaster_left"}"#,
            ),
            (
                ProtocolError::new(ErrorCode::StreamNotFound, "no").into(),
                r#"{"type":"error","code":"stream_not_found","message":"no"}"#,
            ),
            (
                ServerMessage::Redirect {
                    url: "ws://10.0.0.2:8080/ws".into(),
                },
                r#"{"type":"redirect","url":"ws://10.0.0.2:8080/ws"}"#,
            ),
            (
                ServerMessage::Recording {
                    replay: "demo-1".into(),
                },
                r#"{"type":"recording","replay":"demo-1"}"#,
            ),
            (
                ServerMessage::RecordingStopped {
                    reason: RecordingStopReason::DiskFull,
                    message: "low".into(),
                },
                r#"{"type":"recording_stopped","reason":"disk_full","message":"low"}"#,
            ),
        ];
        for (msg, json) in cases {
            assert_eq!(msg.to_json(), json);
            assert_eq!(ServerMessage::parse(json).unwrap(), msg);
        }
    }

    #[test]
    fn error_codes_serialize_as_their_names() {
        for code in [
            ErrorCode::BadRequest,
            ErrorCode::BadStreamName,
            ErrorCode::BadSdp,
            ErrorCode::StreamNotFound,
            ErrorCode::StreamBusy,
            ErrorCode::CodecUnsupported,
            ErrorCode::Unauthorized,
            ErrorCode::RateLimited,
            ErrorCode::Forbidden,
            ErrorCode::Muted,
            ErrorCode::ServerFull,
            ErrorCode::StreamFull,
            ErrorCode::TooManySessions,
            ErrorCode::Draining,
            ErrorCode::ClusterUnavailable,
            ErrorCode::Internal,
            ErrorCode::BadThumbnail,
            ErrorCode::ThumbnailTooLarge,
        ] {
            assert_eq!(
                serde_json::to_string(&code).unwrap(),
                format!("\"{}\"", code.as_str())
            );
        }
    }
}
