//! A simulcast publisher's layers (RFC 8853), as a browser sends them: one video section in the
//! offer with `a=rid:<id> send` lines and `a=simulcast:send`, and one RTP stream per layer,
//! each with its own SSRC, sequence numbers, timestamps and encoder (here a
//! [`SyntheticSource`]), every packet carrying the MID and RID header extensions (RFC 8852) so
//! the receiver can tell the layers apart before it knows their SSRCs.
//!
//! `rtc`'s sender knows one SSRC per track, so a [`ClientPeer`](crate::ClientPeer) with
//! simulcast offers its usual single video stream, has the offer rewritten here (its SSRC lines
//! out; extmap, rid and simulcast lines in), and sends the layers' packets through its SRTP
//! directly. Audio goes out once, from the lowest layer's source, through the audio sender.
//! Drivers get all this by calling [`ClientPeer::set_simulcast`](crate::ClientPeer::set_simulcast)
//! before they send the offer, over WebSocket or WHIP alike.

use bytes::Bytes;
use std::time::{Duration, Instant};

use crate::media::{
    Clock, FIRST_PICTURE_ID, FIRST_TL0_PIC_IDX, MediaKind, MediaPlan, Numbering,
    PICTURE_ID_MODULUS, SyntheticPacket, SyntheticSource,
};

/// The rids of a three-layer simulcast publisher, lowest layer first, as browsers name them
/// (quarter, half and full resolution).
pub const SIMULCAST_RIDS: [&str; 3] = ["q", "h", "f"];

/// Each layer's bitrate is the top layer's divided by this, lowest layer first. A browser
/// sending 2.5 Mbit/s at full resolution sends about 500 kbit/s at half and 150 kbit/s at a
/// quarter (Chromium's defaults for 720p simulcast): ratios 1/16, 1/5 and 1.
pub const LAYER_BITRATE_DIVISORS: [u64; 3] = [16, 5, 1];

/// The header extension ids a simulcast offer adds for MID and RID: ids the client's own offer
/// does not use.
pub const MID_EXT_ID: u8 = 9;
pub const RID_EXT_ID: u8 = 10;

const MID_URI: &str = "urn:ietf:params:rtp-hdrext:sdes:mid";
const RID_URI: &str = "urn:ietf:params:rtp-hdrext:sdes:rtp-stream-id";

/// Why an offer could not be made a simulcast one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SimulcastError {
    #[error("the offer has no video section with a mid")]
    NoVideo,
    #[error("a simulcast publisher needs at least one layer")]
    NoLayers,
    #[error("the offer already uses header extension id {0}")]
    ExtensionIdTaken(u8),
}

/// Rewrites an offer into a simulcast one sending `rids` (lowest layer first): in the video
/// section the SSRC lines go, and the MID/RID extmaps, one `a=rid:<id> send` line per layer and
/// `a=simulcast:send` come. Returns the offer and the video section's mid.
pub fn simulcast_offer(offer: &str, rids: &[&str]) -> Result<(String, String), SimulcastError> {
    if rids.is_empty() {
        return Err(SimulcastError::NoLayers);
    }
    let mut out = String::with_capacity(offer.len() + 256);
    let mut in_video = false;
    let mut mid = None;
    for line in offer.lines() {
        if line.starts_with("m=") {
            if in_video {
                out += &simulcast_lines(rids);
            }
            in_video = line.starts_with("m=video");
        }
        if in_video {
            if line.starts_with("a=ssrc:") || line.starts_with("a=ssrc-group:") {
                continue;
            }
            if let Some(m) = line.strip_prefix("a=mid:") {
                mid = Some(m.to_owned());
            }
            for id in [MID_EXT_ID, RID_EXT_ID] {
                if line.starts_with(&format!("a=extmap:{id} ")) {
                    return Err(SimulcastError::ExtensionIdTaken(id));
                }
            }
        }
        out += line;
        out += "\r\n";
    }
    if in_video {
        out += &simulcast_lines(rids);
    }
    Ok((out, mid.ok_or(SimulcastError::NoVideo)?))
}

fn simulcast_lines(rids: &[&str]) -> String {
    let mut s = format!(
        "a=extmap:{MID_EXT_ID} {MID_URI}\r\n\
         a=extmap:{RID_EXT_ID} {RID_URI}\r\n"
    );
    for rid in rids {
        s += &format!("a=rid:{rid} send\r\n");
    }
    s += &format!("a=simulcast:send {}\r\n", rids.join(";"));
    s
}

/// What one layer sent.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LayerStats {
    pub packets_sent: u64,
    pub payload_bytes_sent: u64,
    /// Keyframe requests (PLI, FIR) that named this layer's SSRC.
    pub keyframe_requests: u64,
}

/// One layer: its rid, SSRC and source.
#[derive(Debug)]
pub struct SimulcastLayer {
    pub rid: String,
    pub ssrc: u32,
    pub source: SyntheticSource,
    pub stats: LayerStats,
    /// Stopped (as a browser stops an upper layer its uplink cannot carry), with the sequence
    /// number to resume at: what the source makes meanwhile is never sent.
    paused: Option<u16>,
}

impl SimulcastLayer {
    pub fn new(rid: impl Into<String>, ssrc: u32, source: SyntheticSource) -> Self {
        Self {
            rid: rid.into(),
            ssrc,
            source,
            stats: LayerStats::default(),
            paused: None,
        }
    }

    pub fn is_paused(&self) -> bool {
        self.paused.is_some()
    }
}

/// A simulcast publisher's layers, lowest first. Audio comes from the first layer's source.
#[derive(Debug)]
pub struct Simulcast {
    layers: Vec<SimulcastLayer>,
    /// The video section's mid, once the offer was rewritten.
    mid: Bytes,
}

impl Simulcast {
    pub fn new(layers: Vec<SimulcastLayer>) -> Result<Self, SimulcastError> {
        if layers.is_empty() {
            return Err(SimulcastError::NoLayers);
        }
        Ok(Self {
            layers,
            mid: Bytes::new(),
        })
    }

    /// Three layers (rids q, h, f) with the top one at `top_bps` of audio and video and the
    /// others at [`LAYER_BITRATE_DIVISORS`] of it (each plan a standalone stream of that
    /// bitrate with audio, so a viewer on a layer receives about its bitrate: its video and the
    /// lowest layer's audio). Each layer has its own SSRC (`ssrc_base + i`), source id
    /// (`source_base + i`) and unrelated numbering, as an encoder's streams have.
    pub fn three_layers(
        top_bps: u64,
        gop: Duration,
        clock: Clock,
        ssrc_base: u32,
        source_base: u32,
    ) -> Self {
        let plans = LAYER_BITRATE_DIVISORS.map(|div| MediaPlan::for_bitrate(top_bps / div, gop));
        Self::with_plans(plans, clock, ssrc_base, source_base)
    }

    /// Three layers (rids q, h, f) sending `plans`, lowest first. Each layer has its own SSRC
    /// (`ssrc_base + i`), source id (`source_base + i`), [`layer_numbering`] and
    /// [`layer_picture_numbering`].
    pub fn with_plans(
        plans: [MediaPlan; 3],
        clock: Clock,
        ssrc_base: u32,
        source_base: u32,
    ) -> Self {
        let layers = SIMULCAST_RIDS
            .iter()
            .zip(plans)
            .enumerate()
            .map(|(i, (rid, plan))| {
                let mut source = SyntheticSource::with_numbering(
                    source_base.wrapping_add(i as u32),
                    plan,
                    clock,
                    layer_numbering(i),
                );
                let (picture_id, tl0_pic_idx) = layer_picture_numbering(i);
                source.set_next_picture_id(picture_id, tl0_pic_idx);
                SimulcastLayer::new(*rid, ssrc_base.wrapping_add(i as u32), source)
            })
            .collect();
        Self {
            layers,
            mid: Bytes::new(),
        }
    }

    pub fn layers(&self) -> &[SimulcastLayer] {
        &self.layers
    }

    pub fn layer_mut(&mut self, layer: usize) -> Option<&mut SimulcastLayer> {
        self.layers.get_mut(layer)
    }

    pub fn rids(&self) -> Vec<&str> {
        self.layers.iter().map(|l| l.rid.as_str()).collect()
    }

    pub fn layer_of_ssrc(&self, ssrc: u32) -> Option<usize> {
        self.layers.iter().position(|l| l.ssrc == ssrc)
    }

    /// The layer whose source stamped a payload (see [`crate::Stamp::source_id`]).
    pub fn layer_of_source(&self, source_id: u32) -> Option<usize> {
        self.layers.iter().position(|l| l.source.id() == source_id)
    }

    /// The bits per second of every layer's video and the lowest layer's audio.
    pub fn bitrate_bps(&self) -> u64 {
        self.layers
            .iter()
            .enumerate()
            .map(|(i, l)| {
                let plan = l.source.plan();
                let audio = if i == 0 {
                    0
                } else {
                    plan.audio_payload_bytes as u64
                        * 8
                        * u64::from(crate::media::AUDIO_PACKETS_PER_S)
                };
                plan.bitrate_bps() - audio
            })
            .sum()
    }

    /// Stops or resumes one layer, as a browser does: it resumes where its sequence numbers
    /// stopped, with a keyframe. Returns false for a layer that does not exist.
    pub fn set_layer_sending(&mut self, layer: usize, on: bool) -> bool {
        let Some(l) = self.layers.get_mut(layer) else {
            return false;
        };
        match (on, l.paused) {
            (false, None) => l.paused = Some(l.source.next_video_seq()),
            (true, Some(seq)) => {
                l.paused = None;
                l.source.set_next_video_seq(seq);
                l.source.request_keyframe();
            }
            _ => {}
        }
        true
    }

    /// Pauses or resumes every layer (and so the audio).
    pub fn set_sending(&mut self, on: bool) {
        for l in &mut self.layers {
            l.source.set_sending(on);
        }
    }

    pub(crate) fn set_mid(&mut self, mid: String) {
        self.mid = Bytes::from(mid);
    }

    pub(crate) fn start(&mut self, now: Instant) {
        for l in &mut self.layers {
            l.source.start(now);
        }
    }

    pub(crate) fn poll_timeout(&self) -> Option<Instant> {
        self.layers
            .iter()
            .filter_map(|l| l.source.poll_timeout())
            .min()
    }

    /// Every packet due by `now`: each running layer's video and the lowest layer's audio.
    pub(crate) fn produce(&mut self, now: Instant, out: &mut Vec<SyntheticPacket>) {
        for (i, l) in self.layers.iter_mut().enumerate() {
            if l.source.poll_timeout().is_none_or(|t| t > now) {
                continue;
            }
            let from = out.len();
            l.source.produce(now, out);
            let paused = l.paused.is_some();
            let mut k = from;
            while k < out.len() {
                let keep = match out[k].kind {
                    MediaKind::Audio => i == 0,
                    MediaKind::Video => !paused,
                };
                if keep {
                    k += 1;
                } else {
                    out.remove(k);
                }
            }
        }
    }

    /// Restamps a packet a pacer held back with its own layer's clock.
    pub(crate) fn restamp(&self, packet: &mut SyntheticPacket, now: Instant) {
        if let Some(l) = self.layer_of_source(packet.stamp.source_id) {
            self.layers[l].source.restamp(packet, now);
        }
    }

    /// The RTP packet of one video packet of a layer: the layer's SSRC, MID and RID.
    pub(crate) fn video_rtp(
        &mut self,
        packet: &SyntheticPacket,
        payload_type: u8,
    ) -> Option<rtc::rtp::Packet> {
        let l = self.layer_of_source(packet.stamp.source_id)?;
        let layer = &mut self.layers[l];
        let mut header = rtc::rtp::Header {
            version: 2,
            marker: packet.marker,
            payload_type,
            sequence_number: packet.seq,
            timestamp: packet.ts,
            ssrc: layer.ssrc,
            ..Default::default()
        };
        // One-byte extensions (RFC 8285) take ids 1-14 and values up to 16 bytes: a mid or
        // rid longer than that is refused here rather than sent malformed.
        header.set_extension(MID_EXT_ID, self.mid.clone()).ok()?;
        header
            .set_extension(RID_EXT_ID, Bytes::copy_from_slice(layer.rid.as_bytes()))
            .ok()?;
        Some(rtc::rtp::Packet {
            header,
            payload: packet.payload.clone(),
        })
    }

    pub(crate) fn count_sent(&mut self, packet: &SyntheticPacket) {
        if let Some(l) = self.layer_of_source(packet.stamp.source_id) {
            let s = &mut self.layers[l].stats;
            s.packets_sent += 1;
            s.payload_bytes_sent += packet.payload.len() as u64;
        }
    }

    /// A keyframe request named `ssrc`: the layer it names makes its next frame a keyframe.
    /// Returns that layer, if any.
    pub(crate) fn request_keyframe(&mut self, ssrc: u32) -> Option<usize> {
        let l = self.layer_of_ssrc(ssrc)?;
        let layer = &mut self.layers[l];
        layer.stats.keyframe_requests += 1;
        layer.source.request_keyframe();
        Some(l)
    }

    pub(crate) fn keyframes(&self) -> u64 {
        self.layers.iter().map(|l| l.source.keyframes()).sum()
    }
}

/// The first picture id and TL0PICIDX of each layer's VP8 (with temporal layers): apart, as an
/// encoder's streams number their pictures on their own, so a forwarder that switches a viewer
/// between layers without renumbering shows a jump, and all near their wraps (2^15 and 2^8).
pub fn layer_picture_numbering(layer: usize) -> (u16, u8) {
    let step = u16::try_from(layer).unwrap_or(0).wrapping_mul(23);
    let picture_id = (FIRST_PICTURE_ID + step) % PICTURE_ID_MODULUS;
    (picture_id, FIRST_TL0_PIC_IDX.wrapping_add(2 * layer as u8))
}

/// Unrelated numbers and clocks per layer, as an encoder's streams have.
pub fn layer_numbering(layer: usize) -> Numbering {
    Numbering {
        video_seq: 1000u16.wrapping_add(20_000u16.wrapping_mul(layer as u16)),
        audio_seq: 7,
        video_ts: 5_000_000u32.wrapping_mul(layer as u32),
        audio_ts: 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const OFFER: &str = "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\n\
        m=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:0\r\na=ssrc:5 cname:x\r\n\
        m=video 9 UDP/TLS/RTP/SAVPF 96\r\na=mid:1\r\na=extmap:3 urn:x\r\na=ssrc:7 cname:x\r\n";

    #[test]
    fn the_video_section_loses_its_ssrcs_and_gets_rids_and_the_simulcast_line() {
        let (offer, mid) = simulcast_offer(OFFER, &SIMULCAST_RIDS).unwrap();
        assert_eq!(mid, "1");
        assert!(offer.contains("a=ssrc:5 cname:x"), "audio keeps its ssrc");
        assert!(!offer.contains("a=ssrc:7"));
        let video = &offer[offer.find("m=video").unwrap()..];
        for line in [
            "a=rid:q send",
            "a=rid:h send",
            "a=rid:f send",
            "a=simulcast:send q;h;f",
            "a=extmap:9 urn:ietf:params:rtp-hdrext:sdes:mid",
            "a=extmap:10 urn:ietf:params:rtp-hdrext:sdes:rtp-stream-id",
        ] {
            assert!(video.contains(line), "{line} missing:\n{offer}");
        }
    }

    #[test]
    fn an_offer_without_video_or_with_a_taken_extension_id_is_refused() {
        let audio_only = &OFFER[..OFFER.find("m=video").unwrap()];
        assert_eq!(
            simulcast_offer(audio_only, &SIMULCAST_RIDS),
            Err(SimulcastError::NoVideo)
        );
        let taken = OFFER.replace("a=extmap:3 urn:x", "a=extmap:10 urn:x");
        assert_eq!(
            simulcast_offer(&taken, &SIMULCAST_RIDS),
            Err(SimulcastError::ExtensionIdTaken(10))
        );
        assert_eq!(simulcast_offer(OFFER, &[]), Err(SimulcastError::NoLayers));
    }

    #[test]
    fn three_layers_run_at_the_top_bitrate_a_fifth_and_a_sixteenth() {
        let sc = Simulcast::three_layers(
            2_500_000,
            Duration::from_secs(2),
            Clock::system(),
            0x100,
            40,
        );
        let rates: Vec<u64> = sc
            .layers()
            .iter()
            .map(|l| l.source.plan().bitrate_bps())
            .collect();
        for (rate, want) in rates.iter().zip([156_250, 500_000, 2_500_000]) {
            let err = (*rate as f64 - want as f64).abs() / want as f64;
            assert!(err < 0.02, "{rates:?}");
        }
        assert_eq!(sc.rids(), ["q", "h", "f"]);
        assert_eq!(sc.layer_of_ssrc(0x102), Some(2));
        assert_eq!(sc.layer_of_source(41), Some(1));
    }

    #[test]
    fn layers_number_their_pictures_apart() {
        let plans = LAYER_BITRATE_DIVISORS.map(|div| {
            MediaPlan::for_bitrate(2_500_000 / div, Duration::from_secs(1)).with_temporal_layers(3)
        });
        let mut sc = Simulcast::with_plans(plans, Clock::system(), 0x100, 40);
        let t0 = Instant::now();
        let firsts: Vec<(u16, u8)> = sc
            .layers
            .iter_mut()
            .map(|l| {
                l.source.start(t0);
                let mut out = Vec::new();
                l.source.produce(t0, &mut out);
                let v = out.iter().find_map(|p| p.temporal).expect("a video frame");
                (v.picture_id, v.tl0_pic_idx)
            })
            .collect();
        assert_eq!(firsts, [(32_700, 250), (32_723, 252), (32_746, 254)]);
    }
}
