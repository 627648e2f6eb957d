//! The words the SFU's parts share: peer ids, the packets a broadcaster's media becomes, what
//! the shell must send or act on, and the counters.

use bytes::{Bytes, BytesMut};
use golive_proto::StreamName;
use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;

use crate::cache::Media;
use crate::codec::MediaKind;
use crate::rewrite::SourceEpoch;
use crate::simulcast::Layer;

/// Identifies a peer across all workers (the shell hands them out).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PeerId(pub u64);

impl fmt::Display for PeerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "p{}", self.0)
    }
}

/// One packet of a broadcaster, parsed once and shared (never copied) with every viewer on
/// every worker.
#[derive(Debug, Clone)]
pub struct SourcePacket {
    /// The broadcaster's absolute capture time extension, passed on to viewers as it came.
    pub capture_time: Option<AbsCaptureTime>,
    pub stream: StreamName,
    /// The broadcaster's session: a new one restarts sequence numbers and timestamps.
    pub epoch: SourceEpoch,
    /// The simulcast layer of a video packet ([`Layer::LOWEST`] for audio and for a broadcaster
    /// without simulcast): every layer is its own run of sequence numbers and timestamps.
    pub layer: Layer,
    pub kind: MediaKind,
    /// A decoder can start here.
    pub keyframe_start: bool,
    pub seq: u16,
    pub timestamp: u32,
    pub marker: bool,
    pub payload: Bytes,
    /// The VP8 payload descriptor's picture id and temporal layer, where it carries them.
    pub vp8: Option<crate::temporal::Vp8Descriptor>,
}

impl SourcePacket {
    pub(crate) fn media(&self) -> Media {
        Media {
            epoch: self.epoch,
            layer: self.layer,
            keyframe_start: self.keyframe_start,
            seq: self.seq,
            timestamp: self.timestamp,
            marker: self.marker,
            payload: self.payload.clone(),
            capture_time: self.capture_time,
            vp8: self.vp8,
        }
    }
}

/// What the worker's shell must act on.
#[derive(Debug)]
pub enum Output {
    /// ICE and DTLS are up: media flows.
    Connected(PeerId),
    /// The peer failed, went silent, never connected or kept sending garbage; it is already
    /// removed.
    Failed(PeerId),
    /// A local broadcaster's packet, for the viewers on other workers.
    Media(Arc<SourcePacket>),
    /// A local viewer wants a keyframe of a stream whose broadcaster is on another worker (or,
    /// on a node that relays the stream, on another node): of one simulcast layer, or (`None`)
    /// of every layer.
    KeyframeRequest(StreamName, Option<Layer>),
    /// A viewer was sent its first video packet (a keyframe start): its time to first frame.
    VideoStarted(PeerId),
}

/// A datagram to send.
#[derive(Debug)]
pub struct Transmit {
    pub to: SocketAddr,
    pub data: BytesMut,
    /// The peer it is for: a shell that cannot send it reports so with
    /// [`crate::Sfu::handle_send_failed`] (or keeps it and reports
    /// [`crate::Sfu::handle_send_backlog`]).
    pub peer: PeerId,
}

/// Datagrams for one viewer, laid end to end: every one `segment_size` bytes long except
/// perhaps the last, which is shorter. One UDP GSO send (`UDP_SEGMENT`) carries them all; a
/// shell without GSO sends `data.chunks(segment_size)` one by one.
#[derive(Debug)]
pub struct Batch<'a> {
    pub to: SocketAddr,
    pub peer: PeerId,
    pub data: &'a [u8],
    pub segment_size: usize,
}

/// The absolute capture time header extension of a broadcaster's packet: the capture
/// instant (NTP 32.32 fixed point), optionally followed by the sender's estimate of its clock's
/// offset, 8 or 16 bytes as they came. An SFU forwards it untouched: it tells a receiver when
/// the picture or sound was captured, across any number of hops.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AbsCaptureTime {
    bytes: [u8; 16],
    len: u8,
}

impl AbsCaptureTime {
    /// The extension's data, if it has one of the two sizes it may have.
    pub fn new(data: &[u8]) -> Option<Self> {
        if data.len() != 8 && data.len() != 16 {
            return None;
        }
        let mut bytes = [0u8; 16];
        bytes[..data.len()].copy_from_slice(data);
        Some(Self {
            bytes,
            len: data.len() as u8,
        })
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..usize::from(self.len)]
    }
}

/// Counters, for tests, logs and (later) metrics.
#[derive(Debug, Default, Clone)]
pub struct SfuStats {
    pub datagrams_in: u64,
    pub datagrams_unroutable: u64,
    /// Datagrams from a peer's bound address that were no protocol of ours, or SRTP that did not
    /// decrypt.
    pub datagrams_garbage: u64,
    pub peers_closed_for_garbage: u64,
    pub rtp_in: u64,
    pub rtp_dropped_duplicate_or_padding: u64,
    pub rtp_dropped_unknown_payload_type: u64,
    pub rtp_forwarded: u64,
    pub pli_sent: u64,
    pub keyframe_requests_in: u64,
    /// Viewers whose video started from the keyframe cache, and packets sent so.
    pub viewers_started_from_cache: u64,
    pub cache_packets_sent: u64,
    /// Times a source ran past the cache's bounds since its last keyframe.
    pub cache_overflows: u64,
    /// Packets viewers NACKed, and what became of them.
    pub nacked: u64,
    pub retransmitted: u64,
    pub retransmitted_rtx: u64,
    pub nack_not_yet_received: u64,
    pub nack_unrepairable: u64,
    /// Packets not sent to a viewer because its send backlog was over the bound.
    pub rtp_dropped_slow_viewer: u64,
    pub slow_viewer_skips: u64,
    /// Peers whose own deadline had come when the shell woke the SFU, so their timeout handling
    /// ran. A wake-up touches these and no other peer.
    pub peer_timeouts: u64,
    /// Entries the timer heap gave up at wake-ups: each one peer looked at, due or not (an
    /// entry whose deadline moved, or of a removed peer, is looked at and dropped).
    pub timer_entries_popped: u64,
    /// Video packets of a simulcast broadcaster whose SSRC no rid named (dropped).
    pub rtp_dropped_unknown_layer: u64,
    /// Viewers' moves from one simulcast layer to another.
    pub layer_switches: u64,
    /// Viewers' TWCC feedback packets taken, and refused as malformed.
    pub twcc_feedback_in: u64,
    pub twcc_feedback_refused: u64,
    /// Bandwidth probes started, and how the judged ones went.
    pub probes_started: u64,
    pub probes_succeeded: u64,
    pub probes_failed: u64,
    /// Padding-only packets sent for probes.
    pub padding_sent: u64,
    /// Video packets not sent to a viewer because their temporal layer is above the one its
    /// estimate allows (its frame rate lowered), and the viewers' changes of temporal layer.
    pub rtp_dropped_temporal: u64,
    pub temporal_switches: u64,
}

/// The index of a kind in per-kind arrays (tracks, histories).
pub(crate) fn slot(kind: MediaKind) -> usize {
    match kind {
        MediaKind::Audio => 0,
        MediaKind::Video => 1,
    }
}
