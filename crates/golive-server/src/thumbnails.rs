//! Live thumbnails: a small JPEG of each broadcast's picture, sent by its broadcaster (the
//! `thumbnail` message, about every 20 s from the Go Live page) and served at
//! `GET /api/streams/<stream>/thumbnail.jpg` for the directory's grid and link previews.
//!
//! The directory keeps the latest one with its stream, so it goes when the broadcast ends. This
//! module checks what comes in (base64, the JPEG markers, the size) and serves what is kept.
//! The server never decodes the picture: a JPEG starts with the start-of-image marker
//! (`FF D8 FF`) and ends with end-of-image (`FF D9`), and that is all it checks.

use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use bytes::Bytes;
use golive_proto::{ErrorCode, MAX_THUMBNAIL_BYTES, ProtocolError, StreamName};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::directory::Directory;

/// Thumbnails closer together than this from one broadcast are dropped silently (as hearts past
/// their rate are): a page that sends one on every reconnect is not told off for it.
pub const THUMBNAIL_MIN_INTERVAL: Duration = Duration::from_secs(2);

const SOI: [u8; 3] = [0xFF, 0xD8, 0xFF];
const EOI: [u8; 2] = [0xFF, 0xD9];

/// One broadcast's latest picture.
#[derive(Debug)]
pub struct Thumbnail {
    pub jpeg: Bytes,
    /// Width and height from the JPEG's frame header, when it has a baseline or progressive one.
    pub size: Option<(u16, u16)>,
    /// A strong validator of the bytes, unquoted (it doubles as a cache-busting URL parameter).
    pub version: String,
    pub received: Instant,
}

impl Thumbnail {
    /// Checks a `thumbnail` message's payload: base64 of a JPEG of at most
    /// [`MAX_THUMBNAIL_BYTES`].
    pub fn from_base64(text: &str, now: Instant) -> Result<Self, ProtocolError> {
        // Refused by length before decoding anything.
        if text.len() > MAX_THUMBNAIL_BYTES.div_ceil(3) * 4 {
            return Err(too_large());
        }
        let jpeg = base64::engine::general_purpose::STANDARD
            .decode(text.trim())
            .map_err(|e| {
                ProtocolError::new(
                    ErrorCode::BadThumbnail,
                    format!("a thumbnail is standard base64: {e}"),
                )
            })?;
        if jpeg.len() > MAX_THUMBNAIL_BYTES {
            return Err(too_large());
        }
        if !jpeg.starts_with(&SOI) || !jpeg.ends_with(&EOI) {
            return Err(ProtocolError::new(
                ErrorCode::BadThumbnail,
                "a thumbnail is a JPEG: it starts with FF D8 FF and ends with FF D9",
            ));
        }
        Ok(Self {
            size: jpeg_size(&jpeg),
            version: format!("{:016x}", crate::web::fnv1a(&jpeg)),
            jpeg: Bytes::from(jpeg),
            received: now,
        })
    }
}

fn too_large() -> ProtocolError {
    ProtocolError::new(
        ErrorCode::ThumbnailTooLarge,
        format!("a thumbnail is at most {MAX_THUMBNAIL_BYTES} bytes of JPEG"),
    )
}

/// Width and height from the first start-of-frame segment (SOF0 to SOF15 but DHT, JPG and DAC),
/// walking the segments from the start; `None` when there is none before the scan.
pub fn jpeg_size(jpeg: &[u8]) -> Option<(u16, u16)> {
    let mut i = 2;
    while i + 4 <= jpeg.len() {
        if jpeg[i] != 0xFF {
            return None;
        }
        let marker = jpeg[i + 1];
        if marker == 0xFF {
            i += 1; // fill byte
            continue;
        }
        let len = usize::from(u16::from_be_bytes([jpeg[i + 2], jpeg[i + 3]]));
        let is_sof = (0xC0..=0xCF).contains(&marker) && !matches!(marker, 0xC4 | 0xC8 | 0xCC);
        if is_sof {
            let h = jpeg.get(i + 5..i + 7)?;
            let w = jpeg.get(i + 7..i + 9)?;
            let size = (
                u16::from_be_bytes([w[0], w[1]]),
                u16::from_be_bytes([h[0], h[1]]),
            );
            return (size.0 > 0 && size.1 > 0).then_some(size);
        }
        if marker == 0xDA || len < 2 {
            return None; // the scan, before any frame header
        }
        i += 2 + len;
    }
    None
}

/// The path a stream's thumbnail is served at, with its version so caches see each new one.
pub fn url_path(stream: &str, thumbnail: &Thumbnail) -> String {
    format!(
        "/api/streams/{stream}/thumbnail.jpg?v={}",
        thumbnail.version
    )
}

/// `GET /api/streams/{stream}/thumbnail.jpg`: the latest thumbnail, `404` when the stream is not
/// live or has sent none yet. Readable from any origin (link previews, other sites' grids).
pub async fn serve(
    State(directory): State<Arc<Directory>>,
    Path(stream): Path<String>,
    request: HeaderMap,
) -> Response {
    let cors = [
        (header::ACCESS_CONTROL_ALLOW_ORIGIN, "*"),
        (
            header::HeaderName::from_static("cross-origin-resource-policy"),
            "cross-origin",
        ),
        (header::CACHE_CONTROL, "no-cache"),
    ];
    let Ok(name) = StreamName::new(&stream) else {
        return (
            StatusCode::BAD_REQUEST,
            cors,
            "bad_stream_name: a stream name is 1 to 64 characters of A-Z a-z 0-9 _ -\n",
        )
            .into_response();
    };
    let Some(thumb) = directory.thumbnail(&name) else {
        return (
            StatusCode::NOT_FOUND,
            cors,
            format!("no thumbnail: stream \"{name}\" is not live or has sent none yet\n"),
        )
            .into_response();
    };
    let etag = HeaderValue::from_str(&format!("\"{}\"", thumb.version))
        .expect("hex is a valid header value");
    if crate::web::if_none_match(&request, &etag) {
        return (StatusCode::NOT_MODIFIED, cors, [(header::ETAG, etag)]).into_response();
    }
    (
        cors,
        [
            (header::ETAG, etag),
            (header::CONTENT_TYPE, HeaderValue::from_static("image/jpeg")),
            (
                header::X_CONTENT_TYPE_OPTIONS,
                HeaderValue::from_static("nosniff"),
            ),
        ],
        thumb.jpeg.clone(),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::engine::general_purpose::STANDARD;

    /// The smallest shape of a baseline JPEG that matters here: SOI, a JFIF APP0, an SOF0 of
    /// 320×180, a scan marker and EOI.
    fn tiny_jpeg() -> Vec<u8> {
        let mut j = vec![0xFF, 0xD8];
        j.extend([0xFF, 0xE0, 0x00, 0x10]);
        j.extend(b"JFIF\0");
        j.extend([1, 1, 0, 0, 1, 0, 1, 0, 0]);
        j.extend([0xFF, 0xC0, 0x00, 0x11, 8, 0, 180, 1, 64, 3]);
        j.extend([1, 0x22, 0, 2, 0x11, 1, 3, 0x11, 1]);
        j.extend([0xFF, 0xDA, 0x00, 0x02, 0x12, 0x34]);
        j.extend(EOI);
        j
    }

    #[test]
    fn a_jpeg_is_taken_with_its_size() {
        let t = Thumbnail::from_base64(&STANDARD.encode(tiny_jpeg()), Instant::now()).unwrap();
        assert_eq!(t.size, Some((320, 180)));
        assert_eq!(t.jpeg.len(), tiny_jpeg().len());
        assert_eq!(t.version.len(), 16);
    }

    #[test]
    fn what_is_not_a_jpeg_is_refused_as_bad_thumbnail() {
        let png = [0x89, b'P', b'N', b'G', 0x0D, 0x0A, 0x1A, 0x0A];
        let mut cut = tiny_jpeg();
        cut.truncate(cut.len() - 2);
        for text in [
            STANDARD.encode(png),
            STANDARD.encode(cut),
            "not base64!".to_owned(),
            String::new(),
        ] {
            let e = Thumbnail::from_base64(&text, Instant::now()).unwrap_err();
            assert_eq!(e.code, ErrorCode::BadThumbnail, "{text}: {e}");
        }
    }

    #[test]
    fn a_thumbnail_over_the_limit_is_refused_as_too_large() {
        let mut big = tiny_jpeg();
        big.splice(4..4, vec![0u8; MAX_THUMBNAIL_BYTES]);
        let e = Thumbnail::from_base64(&STANDARD.encode(&big), Instant::now()).unwrap_err();
        assert_eq!(e.code, ErrorCode::ThumbnailTooLarge);
        // Exactly at the limit is fine.
        let mut max = tiny_jpeg();
        let pad = MAX_THUMBNAIL_BYTES - max.len();
        max.splice(4..4, vec![0u8; pad]);
        assert!(Thumbnail::from_base64(&STANDARD.encode(&max), Instant::now()).is_ok());
    }

    #[test]
    fn size_is_none_without_a_frame_header() {
        assert_eq!(jpeg_size(&[0xFF, 0xD8, 0xFF, 0xD9]), None);
        assert_eq!(jpeg_size(&[0xFF, 0xD8, 0xFF, 0xDA, 0, 2, 0xFF, 0xD9]), None);
        assert_eq!(jpeg_size(&[0xFF, 0xD8, 0x00, 0x00, 0xFF, 0xD9]), None);
    }
}
