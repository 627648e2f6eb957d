//! The viewer side of the media plane: a down track per kind a viewer receives, which turns
//! source packets into the viewer's own stream (its SSRC, payload type, gap-free sequence
//! numbers and timestamps, RTX for repairs), and the viewer's send state around its tracks.
//! Which packets a viewer gets is the forwarder's call; how each one is dressed is decided
//! here.

use bytes::{BufMut, Bytes, BytesMut};
use std::time::Instant;

use crate::adapt::ViewerBwe;
use crate::cache::Media;
use crate::codec::MediaKind;
use crate::rewrite::{HeaderRewriter, SourceEpoch};
use crate::simulcast::{Layer, ViewerLayers};
use crate::temporal::{DescriptorPatch, PictureMunger, TemporalFilter};
use crate::types::slot;

/// The RTP header a down track writes: version 2, no extension (the leg adds its own) or CSRC.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RtpHeader {
    /// The payload is padding only (RFC 3550 §5.1: its last byte counts the padding).
    pub(crate) padding: bool,
    pub(crate) marker: bool,
    pub(crate) payload_type: u8,
    pub(crate) sequence_number: u16,
    pub(crate) timestamp: u32,
    pub(crate) ssrc: u32,
}

/// What a down track made of one source packet.
#[derive(Debug, Default)]
pub(crate) struct Rewritten {
    /// The header to send the payload with; `None` when the packet is not for this viewer (it
    /// waits for a keyframe, or the packet is older than its sync point).
    pub(crate) header: Option<RtpHeader>,
    /// This packet starts the viewer's video for the first time (its time to first frame).
    pub(crate) video_started: bool,
    /// The viewer's picture id and TL0PICIDX, where they differ from the source's.
    pub(crate) patch: Option<DescriptorPatch>,
}

pub(crate) struct DownTrack {
    kind: MediaKind,
    payload_type: u8,
    ssrc: u32,
    /// RTX SSRC and payload type, if the viewer negotiated RTX.
    rtx: Option<(u32, u8)>,
    rtx_seq: u16,
    rewriter: HeaderRewriter,
    /// Video waits for a keyframe start before its first packet, after a skip, and when the
    /// source changes (a reconnected broadcaster).
    waiting_keyframe: bool,
    /// Its first keyframe went out (reported once, as [`crate::Output::VideoStarted`]).
    started: bool,
    /// The source epoch and simulcast layer last forwarded.
    epoch: Option<SourceEpoch>,
    layer: Layer,
    /// VP8 picture ids and TL0PICIDX in the viewer's terms (video with picture ids only).
    munger: Option<Box<PictureMunger>>,
}

impl DownTrack {
    pub(crate) fn new(
        kind: MediaKind,
        payload_type: u8,
        ssrc: u32,
        rtx: Option<(u32, u8)>,
        clock_rate: u32,
    ) -> Self {
        // Random starting points (RFC 3550 §5.1), one per track.
        let rtx_seq = rand::random();
        Self {
            kind,
            payload_type,
            ssrc,
            rtx,
            rtx_seq,
            rewriter: HeaderRewriter::new(clock_rate, rand::random(), rand::random()),
            waiting_keyframe: kind == MediaKind::Video,
            started: false,
            epoch: None,
            layer: Layer::LOWEST,
            munger: None,
        }
    }

    pub(crate) fn kind(&self) -> MediaKind {
        self.kind
    }

    pub(crate) fn ssrc(&self) -> u32 {
        self.ssrc
    }

    /// The simulcast layer this track's packets come from now.
    pub(crate) fn layer(&self) -> Layer {
        self.layer
    }

    /// The viewer misses packets on purpose: video restarts at a keyframe, audio at the next
    /// packet; neither shows a sequence gap.
    pub(crate) fn skip(&mut self) {
        match self.kind {
            MediaKind::Video => self.waiting_keyframe = true,
            MediaKind::Audio => self.rewriter.resync(),
        }
    }

    /// Video starts over at the next keyframe start (a cache that kept only its keyframe, a
    /// replay that lost its packets or skips ahead to a newer keyframe).
    pub(crate) fn wait_for_keyframe(&mut self) {
        self.waiting_keyframe = true;
    }

    /// One source packet in the viewer's terms: the epoch rule (a new source starts at its own
    /// keyframe), the wait for a keyframe start, then the rewritten header.
    pub(crate) fn rewrite(&mut self, now: Instant, m: &Media) -> Rewritten {
        let mut out = Rewritten::default();
        if self.epoch != Some(m.epoch) || self.layer != m.layer {
            // A new source (the broadcaster reconnected, or the viewer moved to another
            // simulcast layer, whose numbers and clock are its own): its video starts at its
            // own keyframe, on from where the viewer's line is.
            if self.epoch == Some(m.epoch) {
                self.rewriter.restart();
            }
            self.epoch = Some(m.epoch);
            self.layer = m.layer;
            if self.kind == MediaKind::Video {
                self.waiting_keyframe = true;
            }
        }
        if self.waiting_keyframe {
            if !m.keyframe_start {
                return out;
            }
            self.waiting_keyframe = false;
            self.rewriter.resync();
            if let Some(munger) = self.munger.as_mut() {
                munger.restart();
            }
            if !self.started {
                self.started = true;
                out.video_started = true;
            }
        }
        let Some((seq, ts)) = self.rewriter.rewrite(now, m.epoch, m.seq, m.timestamp) else {
            return out;
        };
        if let Some(d) = m.vp8.as_ref().filter(|d| d.picture_id.is_some()) {
            out.patch = self
                .munger
                .get_or_insert_with(|| Box::new(PictureMunger::new()))
                .forward(d);
        }
        out.header = Some(RtpHeader {
            padding: false,
            marker: m.marker,
            payload_type: self.payload_type,
            sequence_number: seq,
            timestamp: ts,
            ssrc: self.ssrc,
        });
        out
    }

    /// A packet of the viewer's layer is dropped on purpose (its temporal layer is above the
    /// viewer's): the numbers after it close over it.
    pub(crate) fn drop_packet(&mut self, m: &Media) {
        if self.waiting_keyframe || self.epoch != Some(m.epoch) || self.layer != m.layer {
            return;
        }
        self.rewriter.drop_packet(m.epoch, m.seq);
        if let (Some(munger), Some(d)) = (self.munger.as_mut(), m.vp8.as_ref()) {
            munger.drop_picture(d);
        }
    }

    /// The source packet behind one of the viewer's sequence numbers; `None` before the
    /// viewer's sync point (not part of its stream).
    pub(crate) fn source_of(&self, seq: u16) -> Option<(SourceEpoch, u16)> {
        self.rewriter.source_of(seq)
    }

    /// A lost packet again, found in the stream's history: under its original header, or
    /// wrapped as RTX where the viewer negotiated it. The flag says it went as RTX.
    pub(crate) fn retransmission(
        &mut self,
        now: Instant,
        found: &Media,
    ) -> Option<(RtpHeader, Bytes, bool)> {
        // The picture's numbers as the viewer had them; a picture too old to know them for is
        // not resent.
        let patch = match (self.munger.as_ref(), found.vp8.as_ref()) {
            (Some(munger), Some(d)) => munger.retransmission(d).ok()?,
            _ => None,
        };
        let (out_seq, out_ts) =
            self.rewriter
                .rewrite(now, found.epoch, found.seq, found.timestamp)?;
        Some(match self.rtx {
            Some((rtx_ssrc, rtx_pt)) => {
                // RFC 4588: the original sequence number, then the original payload. The one
                // copy of the payload on the whole path, and only for a loss.
                let mut p = BytesMut::with_capacity(2 + found.payload.len());
                p.put_u16(out_seq);
                p.put_slice(&found.payload);
                if let Some(patch) = patch {
                    patch.apply(&mut p[2..]);
                }
                let rtx_seq = self.rtx_seq;
                self.rtx_seq = self.rtx_seq.wrapping_add(1);
                (
                    RtpHeader {
                        padding: false,
                        marker: found.marker,
                        payload_type: rtx_pt,
                        sequence_number: rtx_seq,
                        timestamp: out_ts,
                        ssrc: rtx_ssrc,
                    },
                    p.freeze(),
                    true,
                )
            }
            None => (
                RtpHeader {
                    padding: false,
                    marker: found.marker,
                    payload_type: self.payload_type,
                    sequence_number: out_seq,
                    timestamp: out_ts,
                    ssrc: self.ssrc,
                },
                match patch {
                    Some(patch) => patched(&found.payload, &patch),
                    None => found.payload.clone(),
                },
                false,
            ),
        })
    }
}

impl DownTrack {
    /// The header of one padding-only packet on this track's RTX stream (RFC 4588 §4: no
    /// original sequence number, so the receiver recovers nothing from it and drops it), at
    /// the timestamp of the last packet sent. `None` without RTX, or before any packet went.
    pub(crate) fn padding_header(&mut self) -> Option<RtpHeader> {
        let (rtx_ssrc, rtx_pt) = self.rtx?;
        let timestamp = self.rewriter.last_timestamp()?;
        let sequence_number = self.rtx_seq;
        self.rtx_seq = self.rtx_seq.wrapping_add(1);
        Some(RtpHeader {
            padding: true,
            marker: false,
            payload_type: rtx_pt,
            sequence_number,
            timestamp,
            ssrc: rtx_ssrc,
        })
    }

    /// This track has an RTX stream (padding for probes can go there).
    pub(crate) fn has_rtx(&self) -> bool {
        self.rtx.is_some()
    }
}

/// A copy of `payload` with `patch` written into it.
pub(crate) fn patched(payload: &Bytes, patch: &DescriptorPatch) -> Bytes {
    let mut p = BytesMut::from(&payload[..]);
    patch.apply(&mut p);
    p.freeze()
}

/// Where a viewer's paced replay of the keyframe cache stands.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Replay {
    pub(crate) epoch: SourceEpoch,
    /// The layer whose cache is replayed.
    pub(crate) layer: Layer,
    /// Source sequence number of the last packet replayed.
    pub(crate) last_seq: u16,
    pub(crate) due: Instant,
}

/// A viewer: its down tracks and the state of its sending.
pub(crate) struct Viewer {
    pub(crate) tracks: [Option<DownTrack>; 2],
    /// Over the backlog bound (set and cleared by the shell's reports).
    pub(crate) backlog_over: bool,
    /// Failed sends in the current window, and when it started.
    pub(crate) send_failures: u32,
    pub(crate) failures_since: Option<Instant>,
    pub(crate) backoff_until: Option<Instant>,
    /// Packets were skipped for congestion; the next one sent is a restart.
    pub(crate) skipping: bool,
    /// The keyframe cache is being replayed to this viewer: its live video waits until the
    /// replay has caught up (the cache holds the live packets too, in order).
    pub(crate) replay: Option<Replay>,
    /// The simulcast layer its video is on, and the one it is moving to.
    pub(crate) layers: ViewerLayers,
    /// Which temporal layers of that simulcast layer it gets.
    pub(crate) temporal: TemporalFilter,
    /// Its bandwidth estimate, where it negotiated feedback for one.
    pub(crate) bwe: Option<Box<ViewerBwe>>,
    /// A relay (another node pulling the stream) is sent every simulcast layer at once, each on
    /// a video track of its own, and never switches: layer 0 goes on the video track of
    /// `tracks`, layer n on `relay_layers[n - 1]`. `None` for a member of the audience.
    pub(crate) relay_layers: Option<Vec<DownTrack>>,
}

impl Viewer {
    pub(crate) fn new(tracks: [Option<DownTrack>; 2]) -> Self {
        let layers = if tracks[slot(MediaKind::Video)].is_some() {
            ViewerLayers::default()
        } else {
            ViewerLayers::audio_only()
        };
        Self {
            tracks,
            backlog_over: false,
            send_failures: 0,
            failures_since: None,
            backoff_until: None,
            skipping: false,
            replay: None,
            layers,
            temporal: TemporalFilter::default(),
            bwe: None,
            relay_layers: None,
        }
    }

    /// A relay's viewer: `tracks` as a viewer's, plus `upper`, the video tracks of layers 1
    /// and up. Its layer choice never moves: every layer is sent on its own track.
    pub(crate) fn relay(tracks: [Option<DownTrack>; 2], upper: Vec<DownTrack>) -> Self {
        Self {
            layers: ViewerLayers::fixed(),
            relay_layers: Some(upper),
            ..Self::new(tracks)
        }
    }

    pub(crate) fn is_relay(&self) -> bool {
        self.relay_layers.is_some()
    }

    /// The track a packet of `kind` and `layer` goes out on: for a relay, its layer's own video
    /// track; for a viewer, its one track of the kind (the layer choice is made before).
    pub(crate) fn track_for(&mut self, kind: MediaKind, layer: Layer) -> Option<&mut DownTrack> {
        match (&mut self.relay_layers, kind) {
            (Some(upper), MediaKind::Video) if layer.index() > 0 => {
                upper.get_mut(layer.index() - 1)
            }
            _ => self.tracks[slot(kind)].as_mut(),
        }
    }

    /// Every down track of the viewer (a relay's per-layer video tracks included).
    pub(crate) fn all_tracks_mut(&mut self) -> impl Iterator<Item = &mut DownTrack> {
        self.tracks
            .iter_mut()
            .flatten()
            .chain(self.relay_layers.iter_mut().flatten())
    }

    /// The simulcast layer a relay's video track with `ssrc` carries; `None` for a viewer or an
    /// SSRC that is not one of its video tracks.
    pub(crate) fn relay_layer_of(&self, ssrc: u32) -> Option<Layer> {
        let upper = self.relay_layers.as_ref()?;
        if self.tracks[slot(MediaKind::Video)]
            .as_ref()
            .is_some_and(|t| t.ssrc == ssrc)
        {
            return Some(Layer::LOWEST);
        }
        let i = upper.iter().position(|t| t.ssrc == ssrc)?;
        Some(Layer(i as u8 + 1))
    }

    pub(crate) fn congested(&self, now: Instant) -> bool {
        self.backlog_over || self.backoff_until.is_some_and(|t| now < t)
    }

    pub(crate) fn track_mut(&mut self, kind: MediaKind) -> Option<&mut DownTrack> {
        self.tracks[slot(kind)].as_mut()
    }
}
