//! golive-sfu: the sans-IO core of the golive SFU.
//!
//! # The model
//!
//! A media worker owns one UDP socket and one [`Sfu`]. The [`Sfu`] owns every peer of that
//! worker: broadcasters (publishers) whose RTP comes in, and viewers to whom it goes out. It
//! never touches a socket, a thread or the clock: the shell feeds it datagrams
//! ([`Sfu::handle_datagram`]), deadlines ([`Sfu::handle_timeout`]) and media from other workers
//! ([`Sfu::handle_media`]), every call with the current `Instant`, and after each input drains
//! [`Sfu::poll_transmit`] (datagrams to send) and [`Sfu::poll_output`] (what the shell must act
//! on).
//!
//! # The media path
//!
//! 1. [`demux`] routes a datagram to its peer: by remote address, or for a new address by the
//!    STUN USERNAME's ufrag (ours, chosen per peer).
//! 2. The peer's leg decrypts it. A broadcaster's leg is `rtc`'s peer connection (the `peer`
//!    module wraps it); its RTP goes to the broadcaster's receiver (the `receiver` module):
//!    duplicates and padding out (`source`), classified by payload type, checked for a
//!    keyframe start ([`keyframe`]), and becomes one [`SourcePacket`] whose payload is shared
//!    (`Bytes`) with every viewer, on this worker and (as [`Output::Media`]) on the others.
//! 3. The forwarder (the `forwarder` module) remembers it (NACK history, keyframe cache) and
//!    offers it to each viewer: a joining viewer is started from the cache, a congested one
//!    skips to the next keyframe. Each viewer's down track (`down_track`) rewrites SSRC,
//!    payload type, sequence number and timestamp ([`rewrite`]), starting video at a keyframe,
//!    and the viewer's leg encrypts and sends it. What leaves for the shell collects in the
//!    outbox (`outbox`).
//! 4. Viewers' PLI/FIR and new viewers become keyframe requests, coalesced per source ([`pli`]).
//!    A broadcaster that sends simulcast ([`simulcast`]) has up to three video layers, each a
//!    source of its own (duplicate filter, keyframe requests, keyframe cache, history); each
//!    viewer is sent one layer, starting on the lowest, and moves at a keyframe of the layer its
//!    preference ([`Sfu::set_viewer_preference`]) and its bandwidth estimate ([`adapt`]: TWCC or
//!    REMB feedback on the lean leg) allow, on one continuous line of SSRC, sequence numbers and
//!    timestamps. Each move is reported by [`Sfu::poll_layer_change`]. A relay (another node
//!    that pulls the stream to serve its own viewers, [`Sfu::add_relay`]) is sent every layer
//!    at once instead, each on a video track of its own, and chooses for its viewers itself.
//! 5. Every peer's next deadline sits in one heap per worker (`timers`): a wake-up touches the
//!    peers that are due, whatever the number of peers.
//!

pub mod adapt;
pub mod bwe;
pub mod cache;
pub mod codec;
pub mod demux;
pub mod depacketize;
mod down_track;
mod entry;
mod forwarder;
pub mod keyframe;
mod leg;
mod outbox;
mod peer;
pub mod pli;
mod receiver;
pub mod rewrite;
mod sfu;
pub mod simulcast;
mod source;
mod stream;
pub mod temporal;
mod timers;
mod types;
mod viewer_leg;

pub use codec::{Codec, MediaKind, StreamMedia, VideoCodec};
pub use leg::ViewerLeg;
pub use peer::SrtpPolicy;
pub use sfu::{
    AbsCaptureTime, Answer, Batch, CONNECT_TIMEOUT, DEFAULT_MAX_VIEWER_BACKLOG_BYTES,
    GARBAGE_LIMIT, GARBAGE_WINDOW, MediaOptions, Output, PeerId, REMOTE_STREAM_IDLE, REPLAY_BURST,
    REPLAY_INTERVAL, SEND_FAILURE_BACKOFF, SEND_FAILURE_WINDOW, SEND_FAILURES_BEFORE_SKIP, Sfu,
    SfuConfig, SfuStats, SourcePacket, Transmit,
};
pub use simulcast::{Layer, LayerChange};

/// Why the SFU refused an input. Every one is the input's fault except `Internal`.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum SfuError {
    #[error("bad SDP: {0}")]
    BadSdp(String),
    #[error("codec not supported: {0}")]
    CodecUnsupported(String),
    #[error("bad ICE candidate: {0}")]
    BadCandidate(String),
    #[error("no such peer")]
    UnknownPeer,
    #[error("internal error: {0}")]
    Internal(String),
}
