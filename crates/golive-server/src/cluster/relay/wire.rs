//! What a node tells a node that relays a stream from it: the stream's media, so the relay can
//! offer its codecs (`GET /cluster/relay/<stream>`).

use golive_sfu::{Codec, MediaKind, StreamMedia, VideoCodec};
use serde::{Deserialize, Serialize};

/// One codec as nodes tell each other (the fields of [`Codec`]).
#[derive(Debug, Serialize, Deserialize)]
pub struct CodecJson {
    name: String,
    clock_rate: u32,
    channels: u16,
    fmtp: String,
    payload_type: u8,
}

/// `GET /cluster/relay/<stream>`: what a relay of the stream will receive.
#[derive(Debug, Serialize, Deserialize)]
pub struct MediaJson {
    pub audio: Option<CodecJson>,
    pub video: Option<CodecJson>,
    pub title: Option<String>,
}

impl CodecJson {
    fn from_codec(c: &Codec) -> Self {
        Self {
            name: c.name.clone(),
            clock_rate: c.clock_rate,
            channels: c.channels,
            fmtp: c.fmtp.clone(),
            payload_type: c.payload_type,
        }
    }

    fn to_codec(&self, kind: MediaKind) -> Codec {
        let video = match (kind, self.name.to_ascii_uppercase().as_str()) {
            (MediaKind::Audio, _) => None,
            (_, "VP8") => Some(VideoCodec::Vp8),
            (_, "VP9") => Some(VideoCodec::Vp9),
            (_, "H264") => Some(VideoCodec::H264),
            (_, "AV1") => Some(VideoCodec::Av1),
            _ => None,
        };
        Codec {
            kind,
            name: self.name.clone(),
            clock_rate: self.clock_rate,
            channels: self.channels,
            fmtp: self.fmtp.clone(),
            payload_type: self.payload_type,
            video,
        }
    }
}

impl MediaJson {
    pub fn new(media: &StreamMedia, title: Option<String>) -> Self {
        Self {
            audio: media.audio.as_ref().map(CodecJson::from_codec),
            video: media.video.as_ref().map(CodecJson::from_codec),
            title,
        }
    }

    pub fn media(&self) -> StreamMedia {
        StreamMedia {
            audio: self.audio.as_ref().map(|c| c.to_codec(MediaKind::Audio)),
            video: self.video.as_ref().map(|c| c.to_codec(MediaKind::Video)),
        }
    }
}
