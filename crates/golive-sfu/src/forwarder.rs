//! The forwarder: the policy between a stream's source and its viewers. Every source packet is
//! remembered (NACK history, keyframe cache) and fanned out to each local viewer's down track;
//! a joining viewer is started from the keyframe cache, replayed in paced bursts; a congested
//! viewer skips to the next keyframe without slowing anyone else; a viewer's NACKs are answered
//! from the shared history.

use golive_proto::StreamName;
use std::collections::HashMap;
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::adapt::PADDING_PACKET_BYTES;
use crate::bwe::SwitchReason;
use crate::cache::{
    AUDIO_HISTORY_PACKETS, CacheState, History, Lookup, Media, VIDEO_HISTORY_PACKETS,
};
use crate::codec::MediaKind;
use crate::down_track::{DownTrack, Replay, Viewer};
use crate::entry::PeerEntry;
use crate::outbox::Outbox;
use crate::receiver;
use crate::simulcast::{Layer, LayerChange, LayerVerdict, MAX_LAYERS};
use crate::stream::LocalStream;
use crate::types::{Output, PeerId};

/// A joining viewer gets this many packets of the keyframe cache at once, then as many again
/// every [`REPLAY_INTERVAL`] until it has caught up with the live stream. A whole cache (up to
/// 512 packets) sent at once overflowed receivers' socket buffers (a browser's holds about 220
/// such packets): paced this way a full cache takes about 80 ms, about 7,700 packets a second.
pub const REPLAY_BURST: usize = 64;
pub const REPLAY_INTERVAL: Duration = Duration::from_millis(8);

/// The parts of the SFU the forwarder works on, borrowed apart from its configuration.
pub(crate) struct Forwarder<'a> {
    pub(crate) peers: &'a mut HashMap<PeerId, PeerEntry>,
    pub(crate) streams: &'a mut HashMap<StreamName, LocalStream>,
    pub(crate) out: &'a mut Outbox,
    /// Start joining viewers from the cached keyframe.
    pub(crate) keyframe_cache: bool,
    /// Keyframe requests for a broadcaster on another worker go out as outputs.
    pub(crate) share_media: bool,
}

/// What forwarding one packet to one viewer asks of the caller.
#[derive(Debug, Default, Clone, Copy)]
struct After {
    /// The viewer restarts after a skip: ask the broadcaster for a keyframe of these layers
    /// (bit i: layer i; a viewer's target layer, or every layer for a relay).
    wants_keyframe: u8,
}

/// Every layer, as a mask of [`After::wants_keyframe`].
const ALL_LAYERS: u8 = (1 << MAX_LAYERS) - 1;

/// Sends one source packet to one viewer: the slow-viewer rule, then the viewer's down track.
/// The payload is shared, never copied.
/// `max_tid`: the highest temporal layer the packet's simulcast layer has shown.
fn forward(
    now: Instant,
    id: PeerId,
    e: &mut PeerEntry,
    kind: MediaKind,
    m: &Media,
    max_tid: u8,
    out: &mut Outbox,
) -> After {
    let mut after = After::default();
    if !e.leg.is_connected() {
        return after;
    }
    let Some(v) = e.role.viewer_mut() else {
        return after;
    };
    if v.congested(now) {
        if !v.skipping {
            v.skipping = true;
            out.stats.slow_viewer_skips += 1;
            v.all_tracks_mut().for_each(DownTrack::skip);
        }
        out.stats.rtp_dropped_slow_viewer += 1;
        return after;
    }
    let relay = v.is_relay();
    if v.skipping {
        v.skipping = false;
        after.wants_keyframe = if relay {
            ALL_LAYERS
        } else {
            1 << v.layers.target().index()
        };
    }
    // A relay takes every layer, each on its own track: no choice to make.
    if kind == MediaKind::Video && !relay {
        if v.layers.video_paused() {
            return after;
        }
        match v.layers.offer(m.layer, m.keyframe_start) {
            LayerVerdict::Skip => return after,
            LayerVerdict::Send => {}
            LayerVerdict::Switch(reason) => {
                out.stats.layer_switches += 1;
                out.layer_changes.push_back(LayerChange {
                    peer: id,
                    layer: Some(m.layer),
                    reason,
                });
            }
        }
        let cap = v.layers.temporal_cap();
        let t = v.temporal.offer(
            now,
            m.layer.0,
            m.timestamp,
            m.keyframe_start,
            m.vp8.as_ref(),
            cap,
            max_tid,
        );
        out.stats.temporal_switches += u64::from(t.switched);
        if t.wants_keyframe {
            after.wants_keyframe |= 1 << m.layer.index();
        }
        if t.drop {
            out.stats.rtp_dropped_temporal += 1;
            if let Some(track) = v.track_for(kind, m.layer) {
                track.drop_packet(m);
            }
            return after;
        }
    }
    let Some(t) = v.track_for(kind, m.layer) else {
        return after;
    };
    let rewritten = t.rewrite(now, m);
    // A relay's first video is its lowest layer's; its other layers start later, unreported.
    if rewritten.video_started && (!relay || m.layer == Layer::LOWEST) {
        out.outputs.push_back(Output::VideoStarted(id));
    }
    let Some(header) = rewritten.header else {
        return after;
    };
    let twcc_seq = stamp(now, e, kind, m.payload.len());
    if e.leg.send_rtp(
        now,
        &header,
        m.payload.clone(),
        twcc_seq,
        m.capture_time.as_ref(),
        rewritten.patch.as_ref(),
    ) {
        out.batches.push_back(id);
    }
    out.stats.rtp_forwarded += 1;
    e.settle(id, out);
    after
}

/// A viewer that takes live packets (connected, not replaying the cache): a keyframe asked
/// for it now is one it can use.
fn v_idle(e: &PeerEntry) -> bool {
    e.leg.is_connected() && e.role.viewer().is_some_and(|v| v.replay.is_none())
}

/// The transport-wide sequence number of a datagram with `payload_len` bytes of payload
/// leaving for a viewer now, where its estimate needs one.
fn stamp(now: Instant, e: &mut PeerEntry, kind: MediaKind, payload_len: usize) -> Option<u16> {
    let overhead = e.leg.stamped_overhead(kind)?;
    let bwe = e.role.viewer_mut()?.bwe.as_mut()?;
    Some(bwe.stamp(now, payload_len + overhead))
}

/// The payload of every padding-only packet: zeros, the last byte their count (RFC 3550 §5.1).
static PADDING: [u8; PADDING_PACKET_BYTES] = {
    let mut p = [0u8; PADDING_PACKET_BYTES];
    p[PADDING_PACKET_BYTES - 1] = PADDING_PACKET_BYTES as u8;
    p
};

/// What a forwarded datagram carries besides its payload (or a padding datagram besides its
/// padding), as the viewer's feedback counts it: the RTP header, a browser's usual extensions
/// (sequence number, send time, playout delay) and the SRTP tag. Layer costs and probe pacing
/// both count it.
pub(crate) const DATAGRAM_OVERHEAD_BYTES: usize = 12 + 16 + 16;

impl Forwarder<'_> {
    /// A viewer's estimate may allow another layer now (on its timer): the ceiling it sets,
    /// and a keyframe of the layer that ceiling makes the target.
    pub(crate) fn update_estimate(&mut self, now: Instant, id: PeerId) {
        let Some(e) = self.peers.get_mut(&id) else {
            return;
        };
        let stream = e.stream.clone();
        let Some(ls) = self.streams.get(&stream) else {
            return;
        };
        let Some(v) = e.role.viewer_mut() else {
            return;
        };
        let Some(bwe) = v.bwe.as_mut() else {
            return;
        };
        let allowed = v.layers.allowed(ls.availability());
        let Some(allowance) = bwe.update(now, &ls.ladder(), allowed) else {
            return;
        };
        if bwe.probe_started(now) {
            self.out.stats.probes_started += 1;
        }
        let was_audio_only = v.layers.video_paused();
        let target = v.layers.set_estimate(allowance, ls.availability());
        if was_audio_only != v.layers.video_paused() {
            // Video stops (its next packets are skipped) or resumes at a keyframe of its layer.
            if let Some(t) = v.track_mut(MediaKind::Video) {
                t.wait_for_keyframe();
            }
            self.out.stats.layer_switches += 1;
            self.out.layer_changes.push_back(LayerChange {
                peer: id,
                layer: was_audio_only.then(|| v.layers.current()),
                reason: SwitchReason::Bandwidth,
            });
        }
        e.reschedule(id, &mut self.out.timers);
        if let Some(target) = target
            && v_idle(e)
        {
            self.request_keyframe(now, &stream, Some(target));
        }
    }

    /// While a probe cluster runs for the viewer: the padding that tops its sending up to the
    /// probed rate, on its video track's RTX stream, each packet stamped like media.
    pub(crate) fn send_padding(&mut self, now: Instant, id: PeerId) {
        let Some(e) = self.peers.get_mut(&id) else {
            return;
        };
        if !e.leg.is_connected() {
            return;
        }
        let Some(v) = e.role.viewer_mut() else {
            return;
        };
        if v.congested(now) {
            return;
        }
        let Some(bwe) = v.bwe.as_mut() else {
            return;
        };
        let due = bwe.padding_due(now);
        if due == 0 {
            e.reschedule(id, &mut self.out.timers);
            return;
        }
        let Some(track) = v.tracks[crate::types::slot(MediaKind::Video)].as_mut() else {
            return;
        };
        let padding = Bytes::from_static(&PADDING);
        for _ in 0..due {
            let Some(header) = track.padding_header() else {
                break;
            };
            let twcc_seq = e
                .leg
                .stamped_overhead(MediaKind::Video)
                .map(|overhead| bwe.stamp(now, PADDING.len() + overhead));
            if e.leg
                .send_rtp(now, &header, padding.clone(), twcc_seq, None, None)
            {
                self.out.batches.push_back(id);
            }
            self.out.stats.padding_sent += 1;
        }
        e.settle(id, self.out);
    }

    /// A viewer of `stream` wants a keyframe of `layer`, or of every layer (see
    /// [`receiver::request_keyframe`]).
    pub(crate) fn request_keyframe(
        &mut self,
        now: Instant,
        stream: &StreamName,
        layer: Option<Layer>,
    ) {
        receiver::request_keyframe(
            now,
            stream,
            layer,
            self.streams,
            self.peers,
            self.out,
            self.share_media,
        );
    }

    /// One source packet, local or from another worker: remembered (history, keyframe cache
    /// of its layer), then sent to every local viewer of its stream that is on its layer.
    pub(crate) fn source_packet(
        &mut self,
        now: Instant,
        stream: &StreamName,
        kind: MediaKind,
        m: &Media,
        local: bool,
    ) {
        let Some(ls) = self.streams.get_mut(stream) else {
            return;
        };
        if m.layer.index() >= MAX_LAYERS {
            // Only media from another worker could name one; the receiver never makes it.
            return;
        }
        ls.last_media_at = Some(now);
        let capacity = match kind {
            MediaKind::Audio => AUDIO_HISTORY_PACKETS,
            MediaKind::Video => VIDEO_HISTORY_PACKETS,
        };
        ls.history_mut(kind, m.layer)
            .get_or_insert_with(|| History::new(capacity))
            .push(m);
        let mut wants_keyframe = [false; MAX_LAYERS];
        if kind == MediaKind::Video && self.keyframe_cache && ls.caches[m.layer.index()].push(m) {
            self.out.stats.cache_overflows += 1;
            // Every worker's cache overflows at the same packet; the broadcaster's asks.
            wants_keyframe[m.layer.index()] = local;
        }
        if ls.layers_epoch != Some(m.epoch) {
            // A new broadcaster (or the same one reconnected) may send fewer layers: count
            // again. A viewer on a layer it no longer sends moves to one it does.
            ls.layers_epoch = Some(m.epoch);
            ls.reset_layers();
        }
        let wire_bytes = m.payload.len() + DATAGRAM_OVERHEAD_BYTES;
        match kind {
            MediaKind::Video => {
                let tid = m.vp8.and_then(|d| d.tid);
                ls.record_video(now, m.layer, tid, wire_bytes);
            }
            MediaKind::Audio => ls.audio_rate.record(now, wire_bytes),
        }
        let max_tid = ls.max_tid(m.layer);
        // A layer seen for the first time or again, or one that stopped: viewers move to the
        // layer they should be on among those being sent.
        let new_layers = kind == MediaKind::Video && ls.layer_seen(now, m.layer);
        let availability = ls.availability();
        for id in &ls.viewers {
            let Some(e) = self.peers.get_mut(id) else {
                continue;
            };
            if new_layers
                && let Some(v) = e.role.viewer_mut()
                && let Some(target) = v.layers.retarget(availability, SwitchReason::Publisher)
                && v.replay.is_none()
                && e.leg.is_connected()
            {
                wants_keyframe[target.index()] = true;
            }
            // In the cache already: the replay sends it, in order. A relay's other layers go
            // on live meanwhile, each on its own track.
            let replaying = e.role.viewer().is_some_and(|v| {
                v.replay
                    .is_some_and(|r| !v.is_relay() || r.layer == m.layer)
            });
            if replaying && kind == MediaKind::Video {
                continue;
            }
            let wanted = forward(now, *id, e, kind, m, max_tid, self.out).wants_keyframe;
            for (layer, w) in wants_keyframe.iter_mut().enumerate() {
                *w |= wanted & (1 << layer) != 0;
            }
        }
        for (layer, wanted) in wants_keyframe.into_iter().enumerate() {
            if wanted {
                self.request_keyframe(now, stream, Some(Layer(layer as u8)));
            }
        }
    }

    /// A viewer just connected: its video starts on the lowest layer, from that layer's cached
    /// keyframe when there is one (its first picture after one round trip), otherwise at the
    /// keyframe it asks for. A higher layer its preference allows follows at that layer's next
    /// keyframe, asked for once the cache has been replayed.
    pub(crate) fn start_viewer(&mut self, now: Instant, id: PeerId) {
        let Some(e) = self.peers.get(&id) else {
            return;
        };
        let stream = e.stream.clone();
        // A relay starts on every layer at once: the lowest from its cache as a viewer does, the
        // others (those the source sends) at their next keyframe, asked for now.
        if e.role.viewer().is_some_and(Viewer::is_relay) {
            let seen = self
                .streams
                .get(&stream)
                .map_or(0, |ls| ls.availability().seen);
            for l in 1..seen.min(MAX_LAYERS) {
                self.request_keyframe(now, &stream, Some(Layer(l as u8)));
            }
        }
        let Some(e) = self.peers.get_mut(&id) else {
            return;
        };
        let Some(ls) = self.streams.get(&stream) else {
            return;
        };
        let Some(v) = e.role.viewer_mut() else {
            return;
        };
        v.layers
            .retarget(ls.availability(), SwitchReason::Preference);
        let layer = v.layers.current();
        let target = v.layers.target();
        let cache = ls.cache(layer);
        let max_tid = ls.max_tid(layer);
        let state = if self.keyframe_cache {
            cache.state()
        } else {
            CacheState::Empty
        };
        if state != CacheState::Empty {
            // A keyframe-only cache is one picture: it goes at once.
            let burst = match state {
                CacheState::Complete => REPLAY_BURST,
                _ => usize::MAX,
            };
            let mut sent = 0;
            let mut last = None;
            for m in cache.packets().take(burst) {
                forward(now, id, e, MediaKind::Video, m, max_tid, self.out);
                sent += 1;
                last = Some((m.epoch, m.seq));
            }
            self.out.stats.viewers_started_from_cache += 1;
            self.out.stats.cache_packets_sent += sent as u64;
            if state == CacheState::Complete {
                let mut replaying = false;
                if let (Some((epoch, last_seq)), Some(v)) = (last, e.role.viewer_mut())
                    && cache.len() > sent
                {
                    v.replay = Some(Replay {
                        epoch,
                        layer,
                        last_seq,
                        due: now + REPLAY_INTERVAL,
                    });
                    replaying = true;
                    e.reschedule(id, &mut self.out.timers);
                }
                if !replaying && target != layer {
                    self.request_keyframe(now, &stream, Some(target));
                }
                return;
            }
            // Only the keyframe was kept: show it, then wait for the next one.
            if let Some(t) = e
                .role
                .viewer_mut()
                .and_then(|v| v.track_mut(MediaKind::Video))
            {
                t.wait_for_keyframe();
            }
        }
        self.request_keyframe(now, &stream, Some(layer));
        if target != layer {
            self.request_keyframe(now, &stream, Some(target));
        }
    }

    /// The next step of a viewer's paced replay of the keyframe cache, when it is due: the next
    /// [`REPLAY_BURST`] packets after the last one replayed, until the replay has caught up with
    /// the cache (and so with the live stream). If the cache started over at a newer keyframe
    /// meanwhile, the replay goes on from that keyframe without a gap; if it lost its packets
    /// (overflow, a new source without a keyframe yet), the viewer waits for the next keyframe.
    pub(crate) fn continue_replay(&mut self, now: Instant, id: PeerId) {
        let Some(e) = self.peers.get_mut(&id) else {
            return;
        };
        let stream = e.stream.clone();
        let Some(v) = e.role.viewer_mut() else {
            return;
        };
        let Some(r) = v.replay.filter(|r| r.due <= now) else {
            return;
        };
        let Some(ls) = self.streams.get(&stream) else {
            v.replay = None;
            return;
        };
        let cache = ls.cache(r.layer);
        let max_tid = ls.max_tid(r.layer);
        if cache.state() != CacheState::Complete {
            v.replay = None;
            if let Some(t) = v.track_mut(MediaKind::Video) {
                t.wait_for_keyframe();
            }
            self.request_keyframe(now, &stream, Some(r.layer));
            return;
        }
        let same_run = cache
            .packets()
            .next()
            .is_some_and(|m| m.epoch == r.epoch && (m.seq.wrapping_sub(r.last_seq) as i16) <= 0);
        let next: Vec<Media> = cache
            .packets()
            .filter(|m| !same_run || (m.seq.wrapping_sub(r.last_seq) as i16) > 0)
            .take(REPLAY_BURST)
            .cloned()
            .collect();
        if !same_run
            && next.first().is_some_and(|m| m.keyframe_start)
            && let Some(t) = v.track_mut(MediaKind::Video)
        {
            // The cache started over at a newer keyframe: skip ahead to it without a gap.
            t.wait_for_keyframe();
        }
        v.replay = match next.last() {
            Some(m) if next.len() == REPLAY_BURST => Some(Replay {
                epoch: m.epoch,
                layer: r.layer,
                last_seq: m.seq,
                due: now + REPLAY_INTERVAL,
            }),
            // Caught up: live packets from here on.
            _ => None,
        };
        // Caught up with a move to another layer pending: that layer's keyframe is asked for
        // now (one that came during the replay was not the viewer's to take).
        let switch_to = (v.replay.is_none() && v.layers.target() != v.layers.current())
            .then_some(v.layers.target());
        for m in &next {
            forward(now, id, e, MediaKind::Video, m, max_tid, self.out);
        }
        self.out.stats.cache_packets_sent += next.len() as u64;
        e.reschedule(id, &mut self.out.timers);
        if let Some(target) = switch_to {
            self.request_keyframe(now, &stream, Some(target));
        }
    }

    /// A viewer lost packets: resend them from the stream's history (as RTX where the viewer
    /// negotiated it). What the SFU never got is the broadcaster leg's to repair; what is too
    /// old to resend takes a keyframe.
    pub(crate) fn nack(&mut self, now: Instant, id: PeerId, media_ssrc: u32, seqs: &[u16]) {
        let Some(e) = self.peers.get_mut(&id) else {
            return;
        };
        let stream = e.stream.clone();
        let Some(v) = e.role.viewer_mut() else {
            return;
        };
        let paused = v.layers.video_paused();
        let bwe = &mut v.bwe;
        let Some(t) = v
            .tracks
            .iter_mut()
            .flatten()
            .chain(v.relay_layers.iter_mut().flatten())
            .find(|t| t.ssrc() == media_ssrc)
        else {
            return;
        };
        if paused && t.kind() == MediaKind::Video {
            // Its video is stopped for a link that cannot carry it: no repairs either.
            return;
        }
        let layer = t.layer();
        let history = self
            .streams
            .get(&stream)
            .and_then(|s| s.history(t.kind(), layer));
        let mut unrepairable = false;
        for &seq in seqs {
            self.out.stats.nacked += 1;
            let Some((epoch, source_seq)) = t.source_of(seq) else {
                // Before the viewer's sync point: not part of its stream.
                continue;
            };
            let found = match history.map(|h| h.get(epoch, source_seq)) {
                Some(Lookup::Found(m)) => m,
                Some(Lookup::NotYetReceived) => {
                    self.out.stats.nack_not_yet_received += 1;
                    continue;
                }
                Some(Lookup::Gone) | None => {
                    self.out.stats.nack_unrepairable += 1;
                    unrepairable = true;
                    continue;
                }
            };
            let Some((header, payload, rtx)) = t.retransmission(now, found) else {
                continue;
            };
            if rtx {
                self.out.stats.retransmitted_rtx += 1;
            }
            let twcc_seq = bwe
                .as_mut()
                .zip(e.leg.stamped_overhead(t.kind()))
                .map(|(b, overhead)| b.stamp(now, payload.len() + overhead));
            if e.leg.send_rtp(
                now,
                &header,
                payload,
                twcc_seq,
                found.capture_time.as_ref(),
                None,
            ) {
                self.out.batches.push_back(id);
            }
            self.out.stats.retransmitted += 1;
        }
        e.settle(id, self.out);
        if unrepairable {
            self.request_keyframe(now, &stream, Some(layer));
        }
    }
}
