//! A peer's transport, whichever leg carries it: `rtc`'s full peer connection (broadcasters,
//! and viewers on the `rtc` viewer leg) or the lean viewer transport.

use bytes::{Bytes, BytesMut};
use std::net::SocketAddr;
use std::time::Instant;

use crate::SfuError;
use crate::codec::MediaKind;
use crate::down_track::RtpHeader;
use crate::peer::{DatagramVerdict, Inbound, Peer, PeerEvent};
use crate::temporal::DescriptorPatch;
use crate::viewer_leg::LeanViewer;

/// Which transport serves viewers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ViewerLeg {
    /// A full `rtc` peer connection per viewer (kept to compare against, and as a fallback).
    Rtc,
    /// The lean viewer transport (ICE-lite STUN, DTLS, SRTP, RTCP of our own): the default.
    #[default]
    Lean,
}

impl std::str::FromStr for ViewerLeg {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "rtc" => Ok(Self::Rtc),
            "lean" => Ok(Self::Lean),
            other => Err(format!("unknown viewer leg {other:?}: rtc or lean")),
        }
    }
}

impl std::fmt::Display for ViewerLeg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Rtc => "rtc",
            Self::Lean => "lean",
        })
    }
}

pub(crate) enum Leg {
    Rtc(Box<Peer>),
    Lean(Box<LeanViewer>),
}

impl Leg {
    pub(crate) fn ufrag(&self) -> &str {
        match self {
            Leg::Rtc(p) => &p.ufrag,
            Leg::Lean(v) => &v.ufrag,
        }
    }

    pub(crate) fn remote_addrs(&self) -> &Vec<SocketAddr> {
        match self {
            Leg::Rtc(p) => &p.remote_addrs,
            Leg::Lean(v) => &v.remote_addrs,
        }
    }

    pub(crate) fn remote_addrs_mut(&mut self) -> &mut Vec<SocketAddr> {
        match self {
            Leg::Rtc(p) => &mut p.remote_addrs,
            Leg::Lean(v) => &mut v.remote_addrs,
        }
    }

    pub(crate) fn send_ssrc(&self) -> [Option<u32>; 2] {
        match self {
            Leg::Rtc(p) => p.send_ssrc,
            Leg::Lean(v) => v.send_ssrc,
        }
    }

    pub(crate) fn rtx(&self) -> [Option<(u32, u8)>; 2] {
        match self {
            Leg::Rtc(p) => p.rtx,
            Leg::Lean(v) => v.rtx,
        }
    }

    /// A relay's video tracks for simulcast layers 1 and up (SSRC, RTX); none on `rtc`.
    pub(crate) fn layer_tracks(&self) -> &[(u32, Option<(u32, u8)>)] {
        match self {
            Leg::Rtc(_) => &[],
            Leg::Lean(v) => &v.layer_tracks,
        }
    }

    pub(crate) fn add_remote_candidate(
        &mut self,
        candidate: String,
        sdp_mid: Option<String>,
        sdp_mline_index: Option<u16>,
    ) -> Result<(), SfuError> {
        match self {
            Leg::Rtc(p) => p.add_remote_candidate(candidate, sdp_mid, sdp_mline_index),
            Leg::Lean(v) => v.add_remote_candidate(&candidate),
        }
    }

    pub(crate) fn handle_datagram(
        &mut self,
        now: Instant,
        from: SocketAddr,
        data: &[u8],
    ) -> DatagramVerdict {
        match self {
            Leg::Rtc(p) => p.handle_datagram(now, from, data),
            Leg::Lean(v) => v.handle_datagram(now, from, data),
        }
    }

    pub(crate) fn handle_timeout(&mut self, now: Instant) {
        match self {
            Leg::Rtc(p) => p.handle_timeout(now),
            Leg::Lean(v) => v.handle_timeout(now),
        }
    }

    pub(crate) fn poll_timeout(&mut self) -> Option<Instant> {
        match self {
            Leg::Rtc(p) => p.poll_timeout(),
            Leg::Lean(v) => v.poll_timeout(),
        }
    }

    pub(crate) fn poll_transmit(&mut self) -> Option<(SocketAddr, BytesMut)> {
        match self {
            Leg::Rtc(p) => p.poll_transmit(),
            Leg::Lean(v) => v.poll_transmit(),
        }
    }

    pub(crate) fn poll_event(&mut self) -> Option<PeerEvent> {
        match self {
            Leg::Rtc(p) => p.poll_event(),
            Leg::Lean(v) => v.poll_event(),
        }
    }

    pub(crate) fn poll_inbound(&mut self) -> Option<Inbound> {
        match self {
            Leg::Rtc(p) => p.poll_inbound(),
            Leg::Lean(v) => v.poll_inbound(),
        }
    }

    /// Which feedback the viewer negotiated for a bandwidth estimate: TWCC, REMB (lean leg only).
    pub(crate) fn estimate_feedback(&self) -> (bool, bool) {
        match self {
            Leg::Rtc(_) => (false, false),
            Leg::Lean(v) => (v.has_twcc(), v.has_remb()),
        }
    }

    /// Where packets of `kind` carry the transport-wide sequence number (only on a lean leg,
    /// and only where the viewer negotiated the extension for that kind's m-section): what
    /// each such datagram carries besides its payload, for the estimate's byte counts.
    pub(crate) fn stamped_overhead(&self, kind: MediaKind) -> Option<usize> {
        match self {
            Leg::Rtc(_) => None,
            Leg::Lean(v) => v.stamped_overhead(kind),
        }
    }

    pub(crate) fn is_connected(&self) -> bool {
        match self {
            Leg::Rtc(p) => p.is_connected(),
            Leg::Lean(v) => v.is_connected(),
        }
    }

    /// Sends one RTP packet. Returns true when a lean viewer's send buffer got its first
    /// packet: the SFU then lists the viewer for [`crate::Sfu::poll_batch`].
    /// `twcc_seq`: the transport-wide sequence number, for a lean viewer that negotiated it.
    /// `patch`: bytes of the payload that differ for this viewer (written into its copy).
    pub(crate) fn send_rtp(
        &mut self,
        now: Instant,
        header: &RtpHeader,
        payload: Bytes,
        twcc_seq: Option<u16>,
        capture_time: Option<&crate::types::AbsCaptureTime>,
        patch: Option<&DescriptorPatch>,
    ) -> bool {
        let header = rtc::rtp::Header {
            version: 2,
            padding: header.padding,
            marker: header.marker,
            payload_type: header.payload_type,
            sequence_number: header.sequence_number,
            timestamp: header.timestamp,
            ssrc: header.ssrc,
            ..Default::default()
        };
        match self {
            Leg::Rtc(p) => {
                let payload = match patch {
                    Some(patch) => crate::down_track::patched(&payload, patch),
                    None => payload,
                };
                p.send_rtp(now, header, payload);
                false
            }
            Leg::Lean(v) => v.send_rtp(now, &header, &payload, twcc_seq, capture_time, patch),
        }
    }

    /// Asks a broadcaster for a keyframe (broadcasters are always on `rtc`).
    pub(crate) fn send_pli(&mut self, now: Instant, media_ssrc: u32) {
        if let Leg::Rtc(p) = self {
            p.send_pli(now, media_ssrc);
        }
    }

    pub(crate) fn close(&mut self) {
        match self {
            Leg::Rtc(p) => p.close(),
            Leg::Lean(v) => v.close(),
        }
    }
}
