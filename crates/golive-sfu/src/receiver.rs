//! The receiver: a broadcaster's side of the media plane. Its RTP comes in through `rtc`'s
//! peer connection (the one leg that keeps it: its receive side earns its keep), is sorted
//! into source tracks by payload type, loses duplicates and padding, is checked for keyframe
//! starts and becomes the one [`Media`] every viewer shares. Keyframe requests from every
//! viewer of the stream, on any worker, reach the broadcaster here, coalesced.

use golive_proto::StreamName;
use std::collections::HashMap;
use std::time::Instant;

use crate::cache::Media;
use crate::codec::{MediaKind, StreamMedia, VideoCodec};
use crate::entry::PeerEntry;
use crate::keyframe::is_keyframe_start;
use crate::outbox::Outbox;
use crate::pli::KeyframeRequests;
use crate::source::{SourceTrack, Verdict};
use crate::stream::LocalStream;
use crate::types::{Output, PeerId};

pub(crate) struct Receiver {
    media: StreamMedia,
    video_ssrc: Option<u32>,
    keyframes: KeyframeRequests,
    audio: SourceTrack,
    video: SourceTrack,
}

/// A broadcaster's packet the receiver accepted.
pub(crate) struct Accepted {
    pub(crate) stream: StreamName,
    pub(crate) kind: MediaKind,
    pub(crate) media: Media,
    /// The source's first video is no keyframe: ask for one at once.
    pub(crate) ask_keyframe: bool,
}

impl Receiver {
    pub(crate) fn new(media: StreamMedia) -> Self {
        Self {
            media,
            video_ssrc: None,
            keyframes: KeyframeRequests::default(),
            audio: SourceTrack::default(),
            video: SourceTrack::default(),
        }
    }

    /// A viewer wants a keyframe: the SSRC to send a PLI for now, if one must go (requests are
    /// coalesced). Before the first video packet there is no SSRC to ask; that first packet of
    /// a new encoder is a keyframe anyway.
    pub(crate) fn request_keyframe(&mut self, now: Instant) -> Option<u32> {
        let ssrc = self.video_ssrc?;
        self.keyframes.request(now).then_some(ssrc)
    }

    /// A held keyframe request fell due: the SSRC to send a PLI for.
    pub(crate) fn handle_timeout(&mut self, now: Instant) -> Option<u32> {
        if self.keyframes.handle_timeout(now) {
            self.video_ssrc
        } else {
            None
        }
    }

    /// When a held keyframe request falls due.
    pub(crate) fn poll_timeout(&self) -> Option<Instant> {
        self.keyframes.poll_timeout()
    }
}

/// One RTP packet of broadcaster `id`: classified, filtered and marked, or dropped (and
/// counted).
pub(crate) fn accept_rtp(
    now: Instant,
    id: PeerId,
    packet: rtc::rtp::Packet,
    peers: &mut HashMap<PeerId, PeerEntry>,
    out: &mut Outbox,
) -> Option<Accepted> {
    out.stats.rtp_in += 1;
    let e = peers.get_mut(&id)?;
    let stream = e.stream.clone();
    let p = e.role.receiver_mut()?;
    let pt = packet.header.payload_type;
    let kind = if p.media.video.as_ref().is_some_and(|c| c.payload_type == pt) {
        MediaKind::Video
    } else if p.media.audio.as_ref().is_some_and(|c| c.payload_type == pt) {
        MediaKind::Audio
    } else {
        out.stats.rtp_dropped_unknown_payload_type += 1;
        return None;
    };
    let track = match kind {
        MediaKind::Audio => &mut p.audio,
        MediaKind::Video => &mut p.video,
    };
    let seq = match track.accept(packet.header.sequence_number, packet.payload.is_empty()) {
        Verdict::Forward(seq) => seq,
        Verdict::Drop => {
            out.stats.rtp_dropped_duplicate_or_padding += 1;
            return None;
        }
    };
    let video_codec: Option<VideoCodec> = p.media.video.as_ref().and_then(|c| c.video);
    let keyframe_start = kind == MediaKind::Video
        && video_codec.is_some_and(|c| is_keyframe_start(c, &packet.payload));
    let mut ask_keyframe = false;
    if kind == MediaKind::Video {
        // A source whose first video is no keyframe (it started before we listened, or
        // reconnected mid-GOP) is asked for one at once: viewers wait for it.
        ask_keyframe = p.video_ssrc.is_none() && !keyframe_start;
        p.video_ssrc = Some(packet.header.ssrc);
        if keyframe_start {
            p.keyframes.keyframe_received(now);
        }
    }
    Some(Accepted {
        stream,
        kind,
        media: Media {
            epoch: id.0,
            keyframe_start,
            seq,
            timestamp: packet.header.timestamp,
            marker: packet.header.marker,
            payload: packet.payload,
        },
        ask_keyframe,
    })
}

/// A viewer of `stream` wants a keyframe: ask the broadcaster (coalesced), here or, as
/// [`Output::KeyframeRequest`], on the worker that has it.
pub(crate) fn request_keyframe(
    now: Instant,
    stream: &StreamName,
    streams: &HashMap<StreamName, LocalStream>,
    peers: &mut HashMap<PeerId, PeerEntry>,
    out: &mut Outbox,
    share_media: bool,
) {
    let publisher = streams.get(stream).and_then(|s| s.publisher);
    let Some(pid) = publisher else {
        if share_media {
            out.outputs
                .push_back(Output::KeyframeRequest(stream.clone()));
        }
        return;
    };
    let Some(e) = peers.get_mut(&pid) else {
        return;
    };
    let Some(p) = e.role.receiver_mut() else {
        return;
    };
    match p.request_keyframe(now) {
        Some(ssrc) => {
            e.leg.send_pli(now, ssrc);
            out.stats.pli_sent += 1;
            e.settle(pid, out);
        }
        // A held request is a deadline of its own.
        None => e.reschedule(pid, &mut out.timers),
    }
}
