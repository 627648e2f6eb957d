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
use crate::simulcast::{Layer, MAX_LAYERS};
use crate::source::{SourceTrack, Verdict};
use crate::stream::LocalStream;
use crate::temporal::Vp8Descriptor;
use crate::types::{Output, PeerId};

pub(crate) struct Receiver {
    media: StreamMedia,
    audio: SourceTrack,
    /// One per simulcast layer, lowest first; one for a broadcaster without simulcast.
    video: Vec<VideoLayer>,
    /// The id the broadcaster's offer gave the absolute capture time extension.
    capture_ext: Option<u8>,
}

/// What the receiver keeps of one video layer.
#[derive(Default)]
struct VideoLayer {
    /// The SSRC it arrives on, once it did (PLIs for this layer name it).
    ssrc: Option<u32>,
    track: SourceTrack,
    keyframes: KeyframeRequests,
}

/// A broadcaster's packet the receiver accepted.
pub(crate) struct Accepted {
    pub(crate) stream: StreamName,
    pub(crate) kind: MediaKind,
    pub(crate) media: Media,
    /// The layer's first video is no keyframe: ask for one at once.
    pub(crate) ask_keyframe: bool,
}

impl Receiver {
    /// `layers`: how many simulcast layers the offer sends (0 or 1 without simulcast).
    pub(crate) fn new(media: StreamMedia, layers: usize, capture_ext: Option<u8>) -> Self {
        let layers = layers.clamp(1, MAX_LAYERS);
        Self {
            media,
            audio: SourceTrack::default(),
            video: (0..layers).map(|_| VideoLayer::default()).collect(),
            capture_ext,
        }
    }

    /// A viewer wants a keyframe of `layer`: the SSRC to send a PLI for now, if one must go
    /// (requests are coalesced per layer). Before the layer's first packet there is no SSRC to
    /// ask; that first packet of a new encoder is a keyframe anyway.
    pub(crate) fn request_keyframe(&mut self, now: Instant, layer: Layer) -> Option<u32> {
        let l = self.video.get_mut(layer.index())?;
        let ssrc = l.ssrc?;
        l.keyframes.request(now).then_some(ssrc)
    }

    /// Held keyframe requests that fell due: the SSRCs to send a PLI for.
    pub(crate) fn handle_timeout(&mut self, now: Instant) -> [Option<u32>; MAX_LAYERS] {
        let mut due = [None; MAX_LAYERS];
        for (d, l) in due.iter_mut().zip(&mut self.video) {
            if l.keyframes.handle_timeout(now) {
                *d = l.ssrc;
            }
        }
        due
    }

    /// When the first held keyframe request falls due.
    pub(crate) fn poll_timeout(&self) -> Option<Instant> {
        self.video
            .iter()
            .filter_map(|l| l.keyframes.poll_timeout())
            .min()
    }

    /// How many layers the broadcaster sends.
    pub(crate) fn layers(&self) -> usize {
        self.video.len()
    }
}

/// One RTP packet of broadcaster `id`: classified, filtered and marked, or dropped (and
/// counted).
pub(crate) fn accept_rtp(
    now: Instant,
    id: PeerId,
    packet: rtc::rtp::Packet,
    layer: Option<Layer>,
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
    let layer = match kind {
        MediaKind::Audio => Layer::LOWEST,
        // A simulcast broadcaster's video on an SSRC no rid named cannot be placed.
        MediaKind::Video => match layer.filter(|l| l.index() < p.video.len()) {
            Some(l) => l,
            None => {
                out.stats.rtp_dropped_unknown_layer += 1;
                return None;
            }
        },
    };
    let track = match kind {
        MediaKind::Audio => &mut p.audio,
        MediaKind::Video => &mut p.video[layer.index()].track,
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
        // A layer whose first video is no keyframe (it started before we listened, or
        // reconnected mid-GOP) is asked for one at once: viewers wait for it.
        let l = &mut p.video[layer.index()];
        ask_keyframe = l.ssrc.is_none() && !keyframe_start;
        l.ssrc = Some(packet.header.ssrc);
        if keyframe_start {
            l.keyframes.keyframe_received(now);
        }
    }
    let vp8 = (kind == MediaKind::Video && video_codec == Some(VideoCodec::Vp8))
        .then(|| Vp8Descriptor::parse(&packet.payload))
        .flatten();
    Some(Accepted {
        stream,
        kind,
        media: Media {
            vp8,
            epoch: id.0,
            layer,
            keyframe_start,
            seq,
            timestamp: packet.header.timestamp,
            marker: packet.header.marker,
            capture_time: p
                .capture_ext
                .and_then(|id| packet.header.get_extension(id))
                .and_then(|data| crate::types::AbsCaptureTime::new(&data)),
            payload: packet.payload,
        },
        ask_keyframe,
    })
}

/// A viewer of `stream` wants a keyframe of `layer` (`None`: of every layer): ask the
/// broadcaster (coalesced per layer), here or, as [`Output::KeyframeRequest`], on the worker
/// that has it.
pub(crate) fn request_keyframe(
    now: Instant,
    stream: &StreamName,
    layer: Option<Layer>,
    streams: &HashMap<StreamName, LocalStream>,
    peers: &mut HashMap<PeerId, PeerEntry>,
    out: &mut Outbox,
    share_media: bool,
) {
    let publisher = streams.get(stream).and_then(|s| s.publisher);
    let Some(pid) = publisher else {
        if share_media {
            out.outputs
                .push_back(Output::KeyframeRequest(stream.clone(), layer));
        }
        return;
    };
    let Some(e) = peers.get_mut(&pid) else {
        return;
    };
    let Some(p) = e.role.receiver_mut() else {
        return;
    };
    let layers = match layer {
        Some(l) => l.index()..l.index() + 1,
        None => 0..p.layers(),
    };
    let mut sent = false;
    for l in layers {
        if let Some(ssrc) = p.request_keyframe(now, Layer(l as u8)) {
            e.leg.send_pli(now, ssrc);
            out.stats.pli_sent += 1;
            sent = true;
        }
    }
    if sent {
        e.settle(pid, out);
    } else {
        // A held request is a deadline of its own.
        e.reschedule(pid, &mut out.timers);
    }
}
