//! The answer to a viewer's offer, written from the offer itself.
//!
//! A viewer receives one audio and one video track at most, so the answer is small: the first
//! audio and the first video section of the offer carry our tracks (sendonly, the viewer's own
//! payload types, our SSRCs), every other section is rejected (port 0, left out of BUNDLE). A
//! relay (another node pulling the stream) takes one video track per simulcast layer: the
//! n-th video section it offers carries layer n.
//! Every accepted section carries our ICE-lite credentials, our certificate fingerprint, and our
//! one host candidate: some clients (aiortc with max-bundle) read candidates only from the
//! section they use.

use rtc::sdp::description::session::SessionDescription;
use std::fmt::Write as _;
use std::io::Cursor;
use std::net::SocketAddr;

use crate::SfuError;
use crate::codec::{ABS_CAPTURE_TIME_URI, Codec, MediaKind, StreamMedia};

/// The stream id and track ids the viewer sees (`a=msid`).
const MSID_STREAM: &str = "golive";
const CNAME: &str = "golive";

/// What the answer needs to know about the offer.
#[derive(Debug)]
pub(crate) struct OfferFacts {
    sections: Vec<Section>,
    /// The SHA-256 fingerprints of the certificate the viewer will present, lowercase hex with
    /// colons, as in `a=fingerprint`.
    pub fingerprints: Vec<String>,
    /// The id the viewer gave the transport-wide sequence number extension, where it offered
    /// one we can write (a one-byte header id, 1 to 14).
    pub twcc_ext: Option<u8>,
    /// The viewer offered REMB feedback (`a=rtcp-fb:... goog-remb`) for video.
    pub remb: bool,
}

/// The transport-wide congestion control header extension (draft-holmer-rmcat-transport-wide-
/// cc-extensions-01): a 16-bit sequence number over every packet of the transport, which the
/// viewer's TWCC feedback reports arrival times for.
pub(crate) const TRANSPORT_CC_URI: &str =
    "http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01";

/// The absolute send time extension: a 24-bit 6.18 fixed-point send time in seconds, which
/// receivers' delay-based estimators (and Chromium's REMB) read.
pub(crate) const ABS_SEND_TIME_URI: &str =
    "http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time";
/// The playout delay extension: the minimum and maximum delay the receiver should add before
/// rendering, in 10 ms units, 12 bits each.
pub(crate) const PLAYOUT_DELAY_URI: &str =
    "http://www.webrtc.org/experiments/rtp-hdrext/playout-delay";

/// The header extensions a kind's packets carry, by the ids the viewer gave them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct ExtensionIds {
    pub twcc: Option<u8>,
    pub abs_send_time: Option<u8>,
    pub playout_delay: Option<u8>,
    pub abs_capture_time: Option<u8>,
}

#[derive(Debug)]
struct Section {
    media: String,
    proto: String,
    formats: Vec<String>,
    mid: Option<String>,
    kind: Option<MediaKind>,
    rejected: bool,
    /// The viewer is willing to receive here (sendrecv or recvonly).
    receives: bool,
    rtcp_rsize: bool,
    /// Its `a=extmap` id for [`TRANSPORT_CC_URI`].
    twcc_ext: Option<u8>,
    /// Its ids for [`ABS_SEND_TIME_URI`] and [`PLAYOUT_DELAY_URI`].
    abs_send_time_ext: Option<u8>,
    playout_delay_ext: Option<u8>,
    /// Its id for the absolute capture time, passed on from the broadcaster.
    abs_capture_time_ext: Option<u8>,
    /// It offers `transport-cc` and `goog-remb` feedback.
    twcc_fb: bool,
    remb_fb: bool,
}

impl OfferFacts {
    pub(crate) fn parse(sdp: &str) -> Result<Self, SfuError> {
        let desc = SessionDescription::unmarshal(&mut Cursor::new(sdp.as_bytes()))
            .map_err(|e| SfuError::BadSdp(format!("the offer does not parse: {e}")))?;
        let mut fingerprints = Vec::new();
        let mut add_fingerprint = |v: &str| {
            if let Some((alg, value)) = v.split_once(' ')
                && alg.eq_ignore_ascii_case("sha-256")
            {
                let value = value.trim().to_ascii_lowercase();
                if !fingerprints.contains(&value) {
                    fingerprints.push(value);
                }
            }
        };
        for a in &desc.attributes {
            if a.key == "fingerprint"
                && let Some(v) = &a.value
            {
                add_fingerprint(v);
            }
        }
        let session_direction = ["sendrecv", "recvonly", "sendonly", "inactive"]
            .into_iter()
            .find(|d| desc.has_attribute(d));
        let mut sections = Vec::new();
        for m in &desc.media_descriptions {
            for a in &m.attributes {
                if a.key == "fingerprint"
                    && let Some(v) = &a.value
                {
                    add_fingerprint(v);
                }
            }
            let kind = match m.media_name.media.as_str() {
                "audio" => Some(MediaKind::Audio),
                "video" => Some(MediaKind::Video),
                _ => None,
            };
            let direction = ["sendrecv", "recvonly", "sendonly", "inactive"]
                .into_iter()
                .find(|d| m.has_attribute(d))
                .or(session_direction)
                .unwrap_or("sendrecv");
            let mut twcc_ext = None;
            let (mut abs_send_time_ext, mut playout_delay_ext) = (None, None);
            let mut abs_capture_time_ext = None;
            let (mut twcc_fb, mut remb_fb) = (false, false);
            for a in &m.attributes {
                let value = a.value.as_deref().unwrap_or_default();
                match a.key.as_str() {
                    "extmap" => {
                        let mut words = value.split_whitespace();
                        // Only ids a one-byte header can carry (RFC 8285 §4.2) are taken.
                        let id = words
                            .next()
                            .and_then(|id| id.split('/').next())
                            .and_then(|id| id.parse::<u8>().ok())
                            .filter(|id| (1..=14).contains(id));
                        match words.next() {
                            Some(TRANSPORT_CC_URI) => twcc_ext = id,
                            Some(ABS_SEND_TIME_URI) => abs_send_time_ext = id,
                            Some(PLAYOUT_DELAY_URI) => playout_delay_ext = id,
                            Some(ABS_CAPTURE_TIME_URI) => abs_capture_time_ext = id,
                            _ => {}
                        }
                    }
                    "rtcp-fb" => {
                        let fb = value.split_whitespace().nth(1);
                        twcc_fb |= fb == Some("transport-cc");
                        remb_fb |= fb == Some("goog-remb");
                    }
                    _ => {}
                }
            }
            sections.push(Section {
                twcc_ext,
                abs_send_time_ext,
                playout_delay_ext,
                abs_capture_time_ext,
                twcc_fb,
                remb_fb,
                media: m.media_name.media.clone(),
                proto: m.media_name.protos.join("/"),
                formats: m.media_name.formats.clone(),
                mid: m.attribute("mid").flatten().map(str::to_owned),
                kind,
                rejected: m.media_name.port.value == 0 && !m.has_attribute("bundle-only"),
                receives: matches!(direction, "sendrecv" | "recvonly"),
                rtcp_rsize: m.has_attribute("rtcp-rsize"),
            });
        }
        if fingerprints.is_empty() {
            return Err(SfuError::BadSdp(
                "the offer has no a=fingerprint:sha-256 (DTLS-SRTP needs one)".into(),
            ));
        }
        let usable = || sections.iter().filter(|s| s.kind.is_some() && !s.rejected);
        let twcc_ext = usable().find(|s| s.twcc_fb).and_then(|s| s.twcc_ext);
        let remb = usable().any(|s| s.kind == Some(MediaKind::Video) && s.remb_fb);
        Ok(Self {
            sections,
            fingerprints,
            twcc_ext,
            remb,
        })
    }

    /// How many sections of `kind` can carry a track (not rejected, with a mid).
    pub(crate) fn usable_sections(&self, kind: MediaKind) -> usize {
        self.sections
            .iter()
            .filter(|s| s.kind == Some(kind) && !s.rejected && s.mid.is_some())
            .count()
    }
}

impl OfferFacts {
    /// The section of the offer that carries our track of `kind`: the first one of that kind
    /// not rejected and with a mid.
    fn carrying(&self, kind: MediaKind) -> Option<&Section> {
        self.sections
            .iter()
            .find(|s| s.kind == Some(kind) && !s.rejected && s.mid.is_some())
    }

    /// The transport-wide sequence number id our packets of `kind` carry: where the section
    /// that carries them offered the extension (with the id every stamped packet uses) and
    /// `transport-cc` feedback. Packets of a section that did not negotiate it go unstamped.
    pub(crate) fn twcc_ext_for(&self, kind: MediaKind) -> Option<u8> {
        let s = self.carrying(kind)?;
        self.twcc_ext.filter(|id| s.twcc_ext == Some(*id))
    }

    /// Every header extension our packets of `kind` carry: only those the section that
    /// carries them offered. Playout delay is for video only (receivers apply it to video
    /// frames).
    pub(crate) fn extensions_for(&self, kind: MediaKind) -> ExtensionIds {
        let Some(s) = self.carrying(kind) else {
            return ExtensionIds::default();
        };
        ExtensionIds {
            twcc: self.twcc_ext_for(kind),
            abs_send_time: s.abs_send_time_ext,
            playout_delay: s.playout_delay_ext.filter(|_| kind == MediaKind::Video),
            abs_capture_time: s.abs_capture_time_ext,
        }
    }
}

/// One track we send to the viewer.
#[derive(Debug, Clone)]
pub(crate) struct SendTrack {
    pub codec: Codec,
    pub ssrc: u32,
    /// RTX SSRC and payload type, where the viewer offered RTX for this codec.
    pub rtx: Option<(u32, u8)>,
}

/// What goes into our side of the answer.
#[derive(Debug)]
pub(crate) struct Local<'a> {
    pub ufrag: &'a str,
    pub pwd: &'a str,
    /// Our certificate's SHA-256 fingerprint, uppercase hex with colons.
    pub fingerprint: &'a str,
    pub candidate_addr: SocketAddr,
    /// Any number, fixed per answer (`o=` line).
    pub session_id: u64,
}

/// The `n`-th track of `kind`, and the id the viewer sees it under: `golive-video` for the
/// first, `golive-video-1` for the next (a relay's layers must not share a track id).
fn track_for(tracks: &[SendTrack], kind: MediaKind, n: usize) -> Option<(&SendTrack, String)> {
    let t = tracks.iter().filter(|t| t.codec.kind == kind).nth(n)?;
    let id = match n {
        0 => format!("{MSID_STREAM}-{kind}"),
        n => format!("{MSID_STREAM}-{kind}-{n}"),
    };
    Some((t, id))
}

/// Writes the answer. The n-th usable section of a kind carries the n-th track of that kind
/// in `tracks` (a viewer has one of each; a relay one video track per layer).
pub(crate) fn answer(offer: &OfferFacts, local: &Local<'_>, tracks: &[SendTrack]) -> String {
    // Which section carries which track: the non-rejected sections of each kind, in order.
    let mut used = [0usize; 2];
    let carries: Vec<Option<(&SendTrack, String)>> = offer
        .sections
        .iter()
        .map(|s| {
            let kind = s.kind?;
            let i = match kind {
                MediaKind::Audio => 0,
                MediaKind::Video => 1,
            };
            if s.rejected || s.mid.is_none() {
                return None;
            }
            let t = track_for(tracks, kind, used[i])?;
            used[i] += 1;
            Some(t)
        })
        .collect();

    let mut out = String::with_capacity(2048);
    let w = &mut out;
    let _ = write!(
        w,
        "v=0\r\no=- {} 2 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\n",
        local.session_id
    );
    let bundle: Vec<&str> = offer
        .sections
        .iter()
        .zip(&carries)
        .filter(|(_, c)| c.is_some())
        .filter_map(|(s, _)| s.mid.as_deref())
        .collect();
    if !bundle.is_empty() {
        let _ = write!(w, "a=group:BUNDLE {}\r\n", bundle.join(" "));
    }
    let _ = write!(w, "a=ice-lite\r\na=msid-semantic: WMS {MSID_STREAM}\r\n");
    let ip = local.candidate_addr.ip();
    let ip_kind = if ip.is_ipv4() { "IP4" } else { "IP6" };
    for (s, carried) in offer.sections.iter().zip(&carries) {
        let Some((t, track_id)) = carried else {
            // Rejected: the same formats, port 0, nothing else but its mid.
            let formats = if s.formats.is_empty() {
                "0".to_owned()
            } else {
                s.formats.join(" ")
            };
            let _ = write!(
                w,
                "m={} 0 {} {formats}\r\nc=IN IP4 0.0.0.0\r\n",
                s.media, s.proto
            );
            if let Some(mid) = &s.mid {
                let _ = write!(w, "a=mid:{mid}\r\n");
            }
            let _ = write!(w, "a=inactive\r\n");
            continue;
        };
        let c = &t.codec;
        let mut pts = c.payload_type.to_string();
        if let Some((_, rtx_pt)) = t.rtx {
            let _ = write!(pts, " {rtx_pt}");
        }
        let _ = write!(
            w,
            "m={} 9 UDP/TLS/RTP/SAVPF {pts}\r\nc=IN {ip_kind} {ip}\r\na=rtcp:9 IN IP4 0.0.0.0\r\n",
            s.media
        );
        let _ = write!(
            w,
            "a=candidate:1 1 udp 2130706431 {ip} {} typ host\r\na=end-of-candidates\r\n",
            local.candidate_addr.port()
        );
        let _ = write!(
            w,
            "a=ice-ufrag:{}\r\na=ice-pwd:{}\r\na=fingerprint:sha-256 {}\r\na=setup:passive\r\n",
            local.ufrag, local.pwd, local.fingerprint
        );
        let mid = s.mid.as_deref().unwrap_or_default();
        let direction = if s.receives { "sendonly" } else { "inactive" };
        let _ = write!(
            w,
            "a=mid:{mid}\r\na={direction}\r\na=msid:{MSID_STREAM} {track_id}\r\na=rtcp-mux\r\n"
        );
        if s.rtcp_rsize {
            let _ = write!(w, "a=rtcp-rsize\r\n");
        }
        let pt = c.payload_type;
        if c.channels > 0 {
            let _ = write!(
                w,
                "a=rtpmap:{pt} {}/{}/{}\r\n",
                c.name, c.clock_rate, c.channels
            );
        } else {
            let _ = write!(w, "a=rtpmap:{pt} {}/{}\r\n", c.name, c.clock_rate);
        }
        if c.kind == MediaKind::Video {
            let _ = write!(
                w,
                "a=rtcp-fb:{pt} nack\r\na=rtcp-fb:{pt} nack pli\r\na=rtcp-fb:{pt} ccm fir\r\n"
            );
        }
        // Transport-wide congestion control where the viewer offered it with the id every
        // stamped packet carries; REMB for video where it offered that and not TWCC.
        let twcc = offer.twcc_ext.filter(|id| s.twcc_ext == Some(*id));
        let exts = offer.extensions_for(c.kind);
        if let Some(id) = exts.abs_send_time {
            let _ = write!(w, "a=extmap:{id} {ABS_SEND_TIME_URI}\r\n");
        }
        if let Some(id) = exts.playout_delay {
            let _ = write!(w, "a=extmap:{id} {PLAYOUT_DELAY_URI}\r\n");
        }
        if let Some(id) = exts.abs_capture_time {
            let _ = write!(w, "a=extmap:{id} {ABS_CAPTURE_TIME_URI}\r\n");
        }
        if let Some(id) = twcc {
            let _ = write!(
                w,
                "a=extmap:{id} {TRANSPORT_CC_URI}\r\na=rtcp-fb:{pt} transport-cc\r\n"
            );
        } else if c.kind == MediaKind::Video && s.remb_fb && offer.twcc_ext.is_none() {
            let _ = write!(w, "a=rtcp-fb:{pt} goog-remb\r\n");
        }
        if !c.fmtp.is_empty() {
            let _ = write!(w, "a=fmtp:{pt} {}\r\n", c.fmtp);
        }
        if let Some((rtx_ssrc, rtx_pt)) = t.rtx {
            let _ = write!(
                w,
                "a=rtpmap:{rtx_pt} rtx/{}\r\na=fmtp:{rtx_pt} apt={pt}\r\n",
                c.clock_rate
            );
            let _ = write!(w, "a=ssrc-group:FID {} {rtx_ssrc}\r\n", t.ssrc);
        }
        for ssrc in std::iter::once(t.ssrc).chain(t.rtx.map(|(s, _)| s)) {
            let _ = write!(
                w,
                "a=ssrc:{ssrc} cname:{CNAME}\r\na=ssrc:{ssrc} msid:{MSID_STREAM} {track_id}\r\n"
            );
        }
    }
    out
}

/// The tracks a viewer gets for the codecs it can receive: one audio track, and
/// `video_tracks` video tracks (one for a viewer; one per simulcast layer for a relay).
pub(crate) fn send_tracks(
    codecs: &StreamMedia,
    video_rtx_pt: Option<u8>,
    video_tracks: usize,
) -> Vec<SendTrack> {
    let mut tracks: Vec<SendTrack> = Vec::with_capacity(1 + video_tracks);
    let video = std::iter::repeat_n(&codecs.video, video_tracks);
    for c in std::iter::once(&codecs.audio).chain(video).flatten() {
        let ssrc = loop {
            let s: u32 = rand::random();
            // Our RTCP is sent from 1; an RTX SSRC (one above its track's) must not collide
            // either.
            if s > 2
                && s < u32::MAX
                && tracks
                    .iter()
                    .all(|t| t.ssrc != s && t.ssrc != s - 1 && t.ssrc != s + 1)
            {
                break s;
            }
        };
        let rtx = match (c.kind, video_rtx_pt) {
            (MediaKind::Video, Some(pt)) => Some((ssrc.wrapping_add(1).max(2), pt)),
            _ => None,
        };
        tracks.push(SendTrack {
            codec: c.clone(),
            ssrc,
            rtx,
        });
    }
    tracks
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::VideoCodec;

    const OFFER: &str = "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n\
a=group:BUNDLE 0 1 2\r\n\
a=fingerprint:sha-256 AA:BB:CC\r\n\
m=audio 9 UDP/TLS/RTP/SAVPF 109\r\nc=IN IP4 0.0.0.0\r\na=mid:0\r\na=recvonly\r\na=rtcp-mux\r\na=rtpmap:109 opus/48000/2\r\n\
m=video 9 UDP/TLS/RTP/SAVPF 120 121\r\nc=IN IP4 0.0.0.0\r\na=mid:1\r\na=recvonly\r\na=rtcp-mux\r\na=rtcp-rsize\r\na=rtpmap:120 VP8/90000\r\na=rtpmap:121 rtx/90000\r\na=fmtp:121 apt=120\r\n\
m=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\nc=IN IP4 0.0.0.0\r\na=mid:2\r\n";

    fn tracks() -> Vec<SendTrack> {
        vec![
            SendTrack {
                codec: Codec {
                    kind: MediaKind::Audio,
                    name: "opus".into(),
                    clock_rate: 48_000,
                    channels: 2,
                    fmtp: "minptime=10".into(),
                    payload_type: 109,
                    video: None,
                },
                ssrc: 1111,
                rtx: None,
            },
            SendTrack {
                codec: Codec {
                    kind: MediaKind::Video,
                    name: "VP8".into(),
                    clock_rate: 90_000,
                    channels: 0,
                    fmtp: String::new(),
                    payload_type: 120,
                    video: Some(VideoCodec::Vp8),
                },
                ssrc: 2222,
                rtx: Some((2223, 121)),
            },
        ]
    }

    #[test]
    fn the_answer_carries_our_tracks_and_credentials_and_rejects_the_rest() {
        let facts = OfferFacts::parse(OFFER).expect("parses");
        assert_eq!(facts.fingerprints, vec!["aa:bb:cc".to_owned()]);
        let local = Local {
            ufrag: "uf",
            pwd: "pw",
            fingerprint: "11:22",
            candidate_addr: "127.0.0.1:5000".parse().expect("addr"),
            session_id: 7,
        };
        let sdp = answer(&facts, &local, &tracks());
        // It parses, and says what it must.
        let desc = SessionDescription::unmarshal(&mut Cursor::new(sdp.as_bytes()))
            .expect("the answer parses");
        assert_eq!(
            desc.attribute("group").map(String::as_str),
            Some("BUNDLE 0 1")
        );
        assert!(desc.has_attribute("ice-lite"));
        let m = &desc.media_descriptions;
        assert_eq!(m.len(), 3);
        assert_eq!(m[0].media_name.formats, vec!["109"]);
        assert_eq!(m[1].media_name.formats, vec!["120", "121"]);
        assert_eq!(
            m[2].media_name.port.value, 0,
            "the data channel is rejected"
        );
        for s in &m[..2] {
            assert!(s.has_attribute("sendonly"));
            assert!(s.has_attribute("candidate"));
            assert_eq!(s.attribute("setup"), Some(Some("passive")));
            assert_eq!(s.attribute("ice-ufrag"), Some(Some("uf")));
        }
        assert!(sdp.contains("a=ssrc-group:FID 2222 2223\r\n"));
        assert!(sdp.contains("a=fmtp:109 minptime=10\r\n"));
        assert!(sdp.contains("a=rtcp-rsize\r\n"));
    }

    #[test]
    fn each_video_section_of_a_relay_carries_a_layer_track_of_its_own() {
        // Three video sections, as a relay offers them; the data channel stays rejected.
        let video = |mid: u8| {
            format!(
                "m=video 9 UDP/TLS/RTP/SAVPF 120\r\nc=IN IP4 0.0.0.0\r\na=mid:{mid}\r\n\
                 a=recvonly\r\na=rtcp-mux\r\na=rtpmap:120 VP8/90000\r\n"
            )
        };
        let offer = OFFER
            .replace("a=group:BUNDLE 0 1 2\r\n", "a=group:BUNDLE 0 1 2 3 4\r\n")
            .replace(
                "m=application",
                &format!("{}{}m=application", video(3), video(4)),
            );
        let facts = OfferFacts::parse(&offer).expect("parses");
        assert_eq!(facts.usable_sections(MediaKind::Video), 3);
        let codecs = StreamMedia {
            audio: Some(tracks()[0].codec.clone()),
            video: Some(tracks()[1].codec.clone()),
        };
        let sent = send_tracks(&codecs, None, 3);
        assert_eq!(sent.len(), 4);
        let mut ssrcs: Vec<u32> = sent.iter().map(|t| t.ssrc).collect();
        ssrcs.sort_unstable();
        ssrcs.dedup();
        assert_eq!(ssrcs.len(), 4, "every track its own SSRC");
        let sdp = answer(&facts, &local(), &sent);
        let desc = SessionDescription::unmarshal(&mut Cursor::new(sdp.as_bytes()))
            .expect("the answer parses");
        let m = &desc.media_descriptions;
        assert_eq!(m.len(), 5);
        let track_ids = ["golive-video", "golive-video-1", "golive-video-2"];
        for (section, (t, id)) in m[1..4].iter().zip(sent[1..].iter().zip(track_ids)) {
            assert!(section.has_attribute("sendonly"));
            let msid = format!("a=ssrc:{} msid:golive {id}\r\n", t.ssrc);
            assert!(sdp.contains(&msid), "{msid} missing:\n{sdp}");
        }
        assert_eq!(
            m[4].media_name.port.value, 0,
            "the data channel is rejected"
        );
        assert_eq!(
            desc.attribute("group").map(String::as_str),
            Some("BUNDLE 0 1 3 4")
        );
    }

    #[test]
    fn an_offer_without_a_fingerprint_is_bad_sdp() {
        let offer = OFFER.replace("a=fingerprint:sha-256 AA:BB:CC\r\n", "");
        assert!(matches!(
            OfferFacts::parse(&offer),
            Err(SfuError::BadSdp(_))
        ));
    }

    fn local() -> Local<'static> {
        Local {
            ufrag: "u",
            pwd: "p",
            fingerprint: "AA",
            candidate_addr: "127.0.0.1:4000".parse().unwrap(),
            session_id: 1,
        }
    }

    #[test]
    fn transport_cc_is_answered_where_offered_and_remb_only_without_it() {
        let twcc = OFFER
            .replace(
                "a=rtpmap:109 opus/48000/2\r\n",
                "a=rtpmap:109 opus/48000/2\r\na=extmap:3 http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01\r\na=rtcp-fb:109 transport-cc\r\n",
            )
            .replace(
                "a=rtpmap:120 VP8/90000\r\n",
                "a=rtpmap:120 VP8/90000\r\na=extmap:3 http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01\r\na=rtcp-fb:120 transport-cc\r\na=rtcp-fb:120 goog-remb\r\n",
            );
        let facts = OfferFacts::parse(&twcc).unwrap();
        assert_eq!(facts.twcc_ext, Some(3));
        let a = answer(&facts, &local(), &tracks());
        assert_eq!(
            a.matches(&format!("a=extmap:3 {TRANSPORT_CC_URI}")).count(),
            2
        );
        assert!(a.contains("a=rtcp-fb:120 transport-cc"));
        assert!(!a.contains("goog-remb"));

        let remb = OFFER.replace(
            "a=rtpmap:120 VP8/90000\r\n",
            "a=rtpmap:120 VP8/90000\r\na=rtcp-fb:120 goog-remb\r\n",
        );
        let facts = OfferFacts::parse(&remb).unwrap();
        assert_eq!(facts.twcc_ext, None);
        assert!(facts.remb);
        let a = answer(&facts, &local(), &tracks());
        assert!(a.contains("a=rtcp-fb:120 goog-remb"));
        assert!(!a.contains("transport-cc"));

        // Neither: neither answered.
        let facts = OfferFacts::parse(OFFER).unwrap();
        let a = answer(&facts, &local(), &tracks());
        assert!(!a.contains("transport-cc") && !a.contains("goog-remb"));
        // An id a one-byte header cannot carry is not taken.
        let wide = twcc.replace("a=extmap:3 ", "a=extmap:15 ");
        assert_eq!(OfferFacts::parse(&wide).unwrap().twcc_ext, None);
    }

    #[test]
    fn send_time_and_playout_delay_are_answered_only_where_offered() {
        let offer = OFFER
            .replace(
                "a=rtpmap:109 opus/48000/2\r\n",
                &format!("a=rtpmap:109 opus/48000/2\r\na=extmap:4 {ABS_SEND_TIME_URI}\r\na=extmap:6 {PLAYOUT_DELAY_URI}\r\n"),
            )
            .replace(
                "a=rtpmap:120 VP8/90000\r\n",
                &format!("a=rtpmap:120 VP8/90000\r\na=extmap:6 {PLAYOUT_DELAY_URI}\r\na=extmap:15 {ABS_SEND_TIME_URI}\r\n"),
            );
        let facts = OfferFacts::parse(&offer).unwrap();
        let audio = facts.extensions_for(MediaKind::Audio);
        let video = facts.extensions_for(MediaKind::Video);
        // Playout delay applies to video only; an id a one-byte header cannot carry is not
        // taken.
        assert_eq!(
            (audio.abs_send_time, audio.playout_delay, audio.twcc),
            (Some(4), None, None)
        );
        assert_eq!((video.abs_send_time, video.playout_delay), (None, Some(6)));
        let a = answer(&facts, &local(), &tracks());
        assert_eq!(a.matches(ABS_SEND_TIME_URI).count(), 1);
        assert_eq!(a.matches(PLAYOUT_DELAY_URI).count(), 1);
        let video_section = &a[a.find("m=video").unwrap()..];
        assert!(video_section.contains(&format!("a=extmap:6 {PLAYOUT_DELAY_URI}")));
        // Nothing offered, nothing answered.
        let a = answer(&OfferFacts::parse(OFFER).unwrap(), &local(), &tracks());
        assert!(!a.contains("extmap"));
    }

    #[test]
    fn transport_cc_offered_for_video_only_stamps_video_only() {
        let offer = OFFER.replace(
            "a=rtpmap:120 VP8/90000\r\n",
            &format!("a=rtpmap:120 VP8/90000\r\na=extmap:3 {TRANSPORT_CC_URI}\r\na=rtcp-fb:120 transport-cc\r\n"),
        );
        let facts = OfferFacts::parse(&offer).unwrap();
        assert_eq!(facts.twcc_ext_for(MediaKind::Video), Some(3));
        assert_eq!(facts.twcc_ext_for(MediaKind::Audio), None);
        let a = answer(&facts, &local(), &tracks());
        assert_eq!(a.matches(TRANSPORT_CC_URI).count(), 1);
    }
}
