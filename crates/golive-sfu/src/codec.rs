//! Codecs as the SFU sees them: what a broadcaster sends, and whether a viewer can receive it.
//!
//! The SFU never transcodes, so a stream has exactly one video codec and one audio codec, chosen
//! from the broadcaster's offer (the first the SFU can forward, in the offer's order of
//! preference), and every viewer must be able to receive exactly that codec.

use rtc::sdp::description::session::SessionDescription;
use std::collections::HashMap;
use std::fmt;
use std::io::Cursor;

use crate::SfuError;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MediaKind {
    Audio,
    Video,
}

impl fmt::Display for MediaKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            MediaKind::Audio => "audio",
            MediaKind::Video => "video",
        })
    }
}

/// The video codecs the SFU can forward (it must find keyframes in their payloads).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum VideoCodec {
    Vp8,
    Vp9,
    H264,
    Av1,
}

impl VideoCodec {
    fn from_name(name: &str) -> Option<Self> {
        match name.to_ascii_uppercase().as_str() {
            "VP8" => Some(Self::Vp8),
            "VP9" => Some(Self::Vp9),
            "H264" => Some(Self::H264),
            "AV1" => Some(Self::Av1),
            _ => None,
        }
    }
}

/// One negotiated codec of a stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Codec {
    pub kind: MediaKind,
    /// The encoding name as in `a=rtpmap`, e.g. `VP8`, `H264`, `opus`.
    pub name: String,
    pub clock_rate: u32,
    /// Audio channels (`0` where the rtpmap gives none).
    pub channels: u16,
    /// The `a=fmtp` parameters, verbatim.
    pub fmtp: String,
    /// The payload type in the offer this codec was read from.
    pub payload_type: u8,
    /// Set for video.
    pub video: Option<VideoCodec>,
}

impl Codec {
    /// `video/VP8`, `audio/opus`: the form `rtc` registers codecs by.
    pub fn mime_type(&self) -> String {
        format!("{}/{}", self.kind, self.name)
    }

    fn fmtp_param(&self, key: &str) -> Option<String> {
        fmtp_param(&self.fmtp, key)
    }

    /// Whether `other` (a codec a viewer offers) can decode what this codec carries.
    pub fn receivable_as(&self, other: &Codec) -> bool {
        if self.kind != other.kind
            || !self.name.eq_ignore_ascii_case(&other.name)
            || self.clock_rate != other.clock_rate
        {
            return false;
        }
        match self.video {
            Some(VideoCodec::H264) => {
                let mode = |c: &Codec| c.fmtp_param("packetization-mode").unwrap_or("0".into());
                // The profile (first byte of profile-level-id) must match; levels may differ,
                // since a decoder handles lower levels and Chromium negotiates asymmetric ones.
                let profile = |c: &Codec| {
                    c.fmtp_param("profile-level-id")
                        .unwrap_or("42001f".into())
                        .get(..2)
                        .map(str::to_ascii_lowercase)
                };
                mode(self) == mode(other) && profile(self) == profile(other)
            }
            Some(VideoCodec::Vp9) => {
                let p = |c: &Codec| c.fmtp_param("profile-id").unwrap_or("0".into());
                p(self) == p(other)
            }
            Some(VideoCodec::Av1) => {
                let p = |c: &Codec| c.fmtp_param("profile").unwrap_or("0".into());
                p(self) == p(other)
            }
            Some(VideoCodec::Vp8) => true,
            None => self.channels.max(1) == other.channels.max(1),
        }
    }
}

fn fmtp_param(fmtp: &str, key: &str) -> Option<String> {
    fmtp.split(';').find_map(|kv| {
        let (k, v) = kv.split_once('=')?;
        k.trim()
            .eq_ignore_ascii_case(key)
            .then(|| v.trim().to_owned())
    })
}

/// The media of one stream: what viewers will receive. Shared by the server with every worker
/// that serves a viewer of the stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamMedia {
    pub audio: Option<Codec>,
    pub video: Option<Codec>,
}

impl StreamMedia {
    pub fn codec(&self, kind: MediaKind) -> Option<&Codec> {
        match kind {
            MediaKind::Audio => self.audio.as_ref(),
            MediaKind::Video => self.video.as_ref(),
        }
    }
}

/// An offer, parsed once, with the checks every offer must pass.
#[derive(Debug)]
pub(crate) struct Offer {
    /// Per m-section: its kind (None for data channels and others) and its codecs in order.
    pub sections: Vec<(Option<MediaKind>, Vec<Codec>)>,
    /// The first video section's `a=rid:<id> send` ids and its `a=simulcast:` value.
    video_send_rids: Vec<String>,
    video_simulcast: Option<String>,
}

impl Offer {
    pub fn parse(sdp: &str) -> Result<Self, SfuError> {
        let desc = SessionDescription::unmarshal(&mut Cursor::new(sdp.as_bytes()))
            .map_err(|e| SfuError::BadSdp(format!("the offer does not parse: {e}")))?;
        let bundled = desc
            .attribute("group")
            .is_some_and(|g| g.split_whitespace().next() == Some("BUNDLE"));
        if !bundled {
            return Err(SfuError::BadSdp(
                "the offer has no a=group:BUNDLE; golive needs BUNDLE (every browser offers it)"
                    .into(),
            ));
        }
        let mut sections = Vec::new();
        let mut video_send_rids = Vec::new();
        let mut video_simulcast = None;
        for m in &desc.media_descriptions {
            let kind = match m.media_name.media.as_str() {
                "audio" => Some(MediaKind::Audio),
                "video" => Some(MediaKind::Video),
                _ => None,
            };
            let rejected = m.media_name.port.value == 0 && !m.has_attribute("bundle-only");
            if kind.is_some() && !rejected {
                let setup = m
                    .attribute("setup")
                    .flatten()
                    .or(desc.attribute("setup").map(String::as_str));
                if setup == Some("passive") {
                    return Err(SfuError::BadSdp(
                        "the offer says a=setup:passive; golive is the DTLS server, so offer \
                         actpass or active"
                            .into(),
                    ));
                }
                if !m.has_attribute("rtcp-mux") {
                    return Err(SfuError::BadSdp(
                        "an audio or video section lacks a=rtcp-mux, which golive requires".into(),
                    ));
                }
            }
            let first_video = kind == Some(MediaKind::Video)
                && !sections.iter().any(|(k, _)| *k == Some(MediaKind::Video));
            if first_video {
                for a in &m.attributes {
                    let value = a.value.as_deref().unwrap_or_default();
                    match a.key.as_str() {
                        "rid" => {
                            let mut words = value.split_whitespace();
                            if let (Some(id), Some("send")) = (words.next(), words.next()) {
                                video_send_rids.push(id.to_owned());
                            }
                        }
                        "simulcast" => video_simulcast = Some(value.to_owned()),
                        _ => {}
                    }
                }
            }
            let mut codecs = Vec::new();
            if let Some(kind) = kind {
                let by_pt: HashMap<u8, _> = m.codecs();
                for pt in &m.media_name.formats {
                    let Ok(pt) = pt.parse::<u8>() else { continue };
                    let Some(c) = by_pt.get(&pt) else { continue };
                    if c.name.is_empty() || c.clock_rate == 0 {
                        continue;
                    }
                    codecs.push(Codec {
                        kind,
                        name: c.name.clone(),
                        clock_rate: c.clock_rate,
                        channels: c.encoding_parameters.parse().unwrap_or(0),
                        fmtp: c.fmtp.clone(),
                        payload_type: pt,
                        video: if kind == MediaKind::Video {
                            VideoCodec::from_name(&c.name)
                        } else {
                            None
                        },
                    });
                }
            }
            sections.push((kind, codecs));
        }
        Ok(Self {
            sections,
            video_send_rids,
            video_simulcast,
        })
    }

    /// The rids of the simulcast layers the offer sends, lowest first; empty without simulcast.
    pub fn simulcast_rids(&self) -> Result<Vec<String>, SfuError> {
        crate::simulcast::layer_rids(&self.video_send_rids, self.video_simulcast.as_deref())
    }

    /// The codecs of the first section of `kind`.
    fn first_section(&self, kind: MediaKind) -> Option<&[Codec]> {
        self.sections
            .iter()
            .find(|(k, _)| *k == Some(kind))
            .map(|(_, c)| c.as_slice())
    }

    /// What the SFU takes from a broadcaster's offer: the first forwardable video codec and Opus.
    pub fn publisher_media(&self) -> Result<StreamMedia, SfuError> {
        let video_section = self.first_section(MediaKind::Video);
        let video = video_section.and_then(|cs| cs.iter().find(|c| c.video.is_some()).cloned());
        let audio_section = self.first_section(MediaKind::Audio);
        let audio = audio_section.and_then(|cs| {
            cs.iter()
                .find(|c| c.name.eq_ignore_ascii_case("opus") && c.clock_rate == 48_000)
                .cloned()
        });
        if video_section.is_some() && video.is_none() {
            return Err(SfuError::CodecUnsupported(
                "the offer's video has none of VP8, VP9, H264, AV1".into(),
            ));
        }
        if audio_section.is_some() && audio.is_none() {
            return Err(SfuError::CodecUnsupported(
                "the offer's audio is not Opus 48 kHz".into(),
            ));
        }
        if video.is_none() && audio.is_none() {
            return Err(SfuError::BadSdp(
                "the offer has neither an audio nor a video section".into(),
            ));
        }
        Ok(StreamMedia { audio, video })
    }

    /// The payload type of the RTX codec (RFC 4588) that repairs `apt` in the first section of
    /// `kind`, if the offer has one.
    pub fn rtx_payload_type(&self, kind: MediaKind, apt: u8) -> Option<u8> {
        self.first_section(kind)?.iter().find_map(|c| {
            let is_rtx = c.name.eq_ignore_ascii_case("rtx");
            let apt_matches =
                fmtp_param(&c.fmtp, "apt").and_then(|a| a.parse::<u8>().ok()) == Some(apt);
            (is_rtx && apt_matches).then_some(c.payload_type)
        })
    }

    /// The viewer's own codec (its payload type and fmtp) for each codec of the stream.
    pub fn viewer_codecs(&self, media: &StreamMedia) -> Result<StreamMedia, SfuError> {
        let pick = |kind: MediaKind| -> Result<Option<Codec>, SfuError> {
            let Some(wanted) = media.codec(kind) else {
                return Ok(None);
            };
            let Some(section) = self.first_section(kind) else {
                return Err(SfuError::CodecUnsupported(format!(
                    "the broadcast has {kind} ({}) but the offer has no {kind} section",
                    wanted.name
                )));
            };
            section
                .iter()
                .find(|c| wanted.receivable_as(c))
                .cloned()
                .map(Some)
                .ok_or_else(|| {
                    SfuError::CodecUnsupported(format!(
                        "the broadcast's {kind} is {}{}, which the offer does not include",
                        wanted.name,
                        if wanted.fmtp.is_empty() {
                            String::new()
                        } else {
                            format!(" ({})", wanted.fmtp)
                        }
                    ))
                })
        };
        Ok(StreamMedia {
            audio: pick(MediaKind::Audio)?,
            video: pick(MediaKind::Video)?,
        })
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A Chromium-like offer: audio then video, several video codecs, BUNDLE.
    pub fn offer(video_codecs: &[(u8, &str, &str)]) -> String {
        let pts: Vec<String> = video_codecs.iter().map(|c| c.0.to_string()).collect();
        let mut s = String::from(
            "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\na=group:BUNDLE 0 1\r\n\
             m=audio 9 UDP/TLS/RTP/SAVPF 111\r\nc=IN IP4 0.0.0.0\r\na=mid:0\r\na=rtcp-mux\r\n\
             a=rtpmap:111 opus/48000/2\r\na=fmtp:111 minptime=10;useinbandfec=1\r\n",
        );
        s += &format!(
            "m=video 9 UDP/TLS/RTP/SAVPF {}\r\nc=IN IP4 0.0.0.0\r\na=mid:1\r\na=rtcp-mux\r\n",
            pts.join(" ")
        );
        for (pt, name, fmtp) in video_codecs {
            s += &format!("a=rtpmap:{pt} {name}/90000\r\n");
            if !fmtp.is_empty() {
                s += &format!("a=fmtp:{pt} {fmtp}\r\n");
            }
        }
        s
    }

    #[test]
    fn publisher_gets_the_first_forwardable_codec_in_offer_order() {
        let o = Offer::parse(&offer(&[
            (35, "red", ""),
            (102, "H264", "packetization-mode=1;profile-level-id=42e01f"),
            (96, "VP8", ""),
        ]))
        .unwrap();
        let m = o.publisher_media().unwrap();
        let v = m.video.unwrap();
        assert_eq!(
            (v.name.as_str(), v.payload_type, v.video),
            ("H264", 102, Some(VideoCodec::H264))
        );
        let a = m.audio.unwrap();
        assert_eq!(
            (a.name.as_str(), a.payload_type, a.channels),
            ("opus", 111, 2)
        );
    }

    #[test]
    fn offers_golive_cannot_answer_are_bad_sdp() {
        let good = offer(&[(96, "VP8", "")]);
        let passive = good.replace("a=mid:1\r\n", "a=mid:1\r\na=setup:passive\r\n");
        assert!(
            matches!(Offer::parse(&passive), Err(SfuError::BadSdp(m)) if m.contains("passive"))
        );
        let no_mux = good.replace("a=rtcp-mux\r\n", "");
        assert!(
            matches!(Offer::parse(&no_mux), Err(SfuError::BadSdp(m)) if m.contains("rtcp-mux"))
        );
        assert!(Offer::parse(&good).is_ok());
    }

    #[test]
    fn offers_without_bundle_or_garbage_are_bad_sdp() {
        let no_bundle = offer(&[(96, "VP8", "")]).replace("a=group:BUNDLE 0 1\r\n", "");
        assert!(matches!(Offer::parse(&no_bundle), Err(SfuError::BadSdp(_))));
        assert!(matches!(Offer::parse("hello"), Err(SfuError::BadSdp(_))));
        assert!(matches!(Offer::parse(""), Err(SfuError::BadSdp(_))));
    }

    #[test]
    fn viewer_must_offer_the_broadcast_codec() {
        let publisher = Offer::parse(&offer(&[(96, "VP8", "")]))
            .unwrap()
            .publisher_media()
            .unwrap();
        let h264_only = Offer::parse(&offer(&[(
            102,
            "H264",
            "packetization-mode=1;profile-level-id=42e01f",
        )]))
        .unwrap();
        assert!(matches!(
            h264_only.viewer_codecs(&publisher),
            Err(SfuError::CodecUnsupported(_))
        ));
        let vp8_elsewhere = Offer::parse(&offer(&[(102, "H264", ""), (120, "VP8", "")])).unwrap();
        let v = vp8_elsewhere.viewer_codecs(&publisher).unwrap();
        assert_eq!(v.video.unwrap().payload_type, 120);
        assert_eq!(v.audio.unwrap().payload_type, 111);
    }

    #[test]
    fn h264_needs_the_same_profile_and_packetization_mode() {
        let publisher = Offer::parse(&offer(&[(
            102,
            "H264",
            "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f",
        )]))
        .unwrap()
        .publisher_media()
        .unwrap();
        let viewer = Offer::parse(&offer(&[
            (100, "H264", "packetization-mode=0;profile-level-id=42e01f"),
            (101, "H264", "packetization-mode=1;profile-level-id=64001f"),
            (103, "H264", "packetization-mode=1;profile-level-id=42e034"),
        ]))
        .unwrap();
        assert_eq!(
            viewer
                .viewer_codecs(&publisher)
                .unwrap()
                .video
                .unwrap()
                .payload_type,
            103
        );
    }
}

/// The absolute capture time header extension: when a frame or sound was captured, on the
/// capturing system's NTP clock.
pub(crate) const ABS_CAPTURE_TIME_URI: &str =
    "http://www.webrtc.org/experiments/rtp-hdrext/abs-capture-time";

/// The id an SDP gives the header extension `uri` (`a=extmap:<id>[/<direction>] <uri>`), where
/// a one-byte header can carry it (1 to 14). Within a bundle an extension has one id.
pub(crate) fn extmap_id(sdp: &str, uri: &str) -> Option<u8> {
    sdp.lines()
        .filter_map(|l| l.trim_end().strip_prefix("a=extmap:"))
        .find(|l| l.split_whitespace().nth(1) == Some(uri))
        .and_then(|l| l.split(['/', ' ']).next()?.parse::<u8>().ok())
        .filter(|id| (1..=14).contains(id))
}

#[cfg(test)]
mod extmap_tests {
    use super::*;

    #[test]
    fn an_extmap_id_is_read_with_or_without_a_direction() {
        let sdp = format!(
            "m=video 9 UDP/TLS/RTP/SAVPF 96\r\na=extmap:4/sendonly {ABS_CAPTURE_TIME_URI}\r\n"
        );
        assert_eq!(extmap_id(&sdp, ABS_CAPTURE_TIME_URI), Some(4));
        let wide = sdp.replace("extmap:4/sendonly", "extmap:15");
        assert_eq!(extmap_id(&wide, ABS_CAPTURE_TIME_URI), None);
        assert_eq!(extmap_id("v=0\r\n", ABS_CAPTURE_TIME_URI), None);
    }
}
