//! Replay routes: the page (`/replay/{id}`), the list (`/api/replays`), one replay's metadata
//! and timeline, and its media file with HTTP range requests (RFC 9110 §14), which a `<video>`
//! element needs to seek.

use axum::Router;
use axum::body::Body;
use axum::extract::{FromRef, Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use bytes::Bytes;
use serde::Deserialize;
use std::io::SeekFrom;
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncSeekExt};

use crate::recording::{Recordings, ReplayId, ReplayMeta};

const REPLAY_PAGE: &[u8] = include_bytes!("../../../web/replay.html");
/// Media is sent in reads of this size.
const CHUNK_BYTES: usize = 64 * 1024;

pub fn routes<S>() -> Router<S>
where
    S: Clone + Send + Sync + 'static,
    Arc<Recordings>: FromRef<S>,
{
    Router::new()
        .route("/replay/{id}", get(page))
        .route("/api/replays", get(list))
        .route("/api/replays/{id}", get(meta))
        .route("/api/replays/{id}/timeline", get(timeline))
        .route("/api/replays/{id}/media", get(media))
}

/// The page reads the replay id from its own URL and says itself when there is no such replay.
/// Like every page but the embed, it refuses to be framed (clickjacking).
async fn page() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
            (header::X_FRAME_OPTIONS, "DENY"),
            (header::CONTENT_SECURITY_POLICY, "frame-ancestors 'none'"),
        ],
        REPLAY_PAGE,
    )
        .into_response()
}

#[derive(Debug, Deserialize)]
struct ListQuery {
    stream: Option<String>,
}

/// One row of `/api/replays`: the metadata, and where to watch it.
fn row(m: ReplayMeta) -> serde_json::Value {
    let url = format!("/replay/{}", m.id);
    let mut v = serde_json::to_value(m).unwrap_or_default();
    v["url"] = url.into();
    v
}

async fn list(State(recordings): State<Arc<Recordings>>, Query(q): Query<ListQuery>) -> Response {
    let rows = tokio::task::spawn_blocking(move || recordings.list(q.stream.as_deref()))
        .await
        .unwrap_or_default();
    axum::Json(rows.into_iter().map(row).collect::<Vec<_>>()).into_response()
}

fn not_found() -> Response {
    (StatusCode::NOT_FOUND, "no such replay\n").into_response()
}

async fn meta(State(recordings): State<Arc<Recordings>>, Path(id): Path<String>) -> Response {
    let Some(id) = ReplayId::parse(&id) else {
        return not_found();
    };
    match recordings.get(&id) {
        Some(m) => axum::Json(row(m)).into_response(),
        None => not_found(),
    }
}

async fn timeline(State(recordings): State<Arc<Recordings>>, Path(id): Path<String>) -> Response {
    let Some(id) = ReplayId::parse(&id) else {
        return not_found();
    };
    match tokio::task::spawn_blocking(move || recordings.timeline_of(&id))
        .await
        .ok()
        .flatten()
    {
        Some(events) => axum::Json(events).into_response(),
        None => not_found(),
    }
}

/// A byte range of a `len`-byte file: `bytes=a-b`, `bytes=a-`, `bytes=-n` (one range only; a
/// request for several gets the whole file, which RFC 9110 allows).
#[derive(Debug, PartialEq, Eq)]
enum Range {
    Whole,
    Part(u64, u64),
    Unsatisfiable,
}

fn parse_range(h: Option<&str>, len: u64) -> Range {
    let Some(spec) = h.and_then(|h| h.trim().strip_prefix("bytes=")) else {
        return Range::Whole;
    };
    if spec.contains(',') {
        return Range::Whole;
    }
    let Some((a, b)) = spec.split_once('-') else {
        return Range::Whole;
    };
    let (a, b) = (a.trim(), b.trim());
    let (start, end) = match (a.parse::<u64>(), b.parse::<u64>()) {
        (Ok(s), Ok(e)) if s <= e => (s, e.min(len.saturating_sub(1))),
        (Ok(s), Err(_)) if b.is_empty() => (s, len.saturating_sub(1)),
        (Err(_), Ok(n)) if a.is_empty() && n > 0 => (len.saturating_sub(n), len.saturating_sub(1)),
        _ => return Range::Whole,
    };
    if start >= len {
        return Range::Unsatisfiable;
    }
    Range::Part(start, end)
}

async fn media(
    State(recordings): State<Arc<Recordings>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    let Some((path, container)) = ReplayId::parse(&id).and_then(|id| recordings.media_path(&id))
    else {
        return not_found();
    };
    let Ok(mut file) = tokio::fs::File::open(&path).await else {
        return not_found();
    };
    let Ok(len) = file.metadata().await.map(|m| m.len()) else {
        return not_found();
    };
    recordings.count_served();
    let range = parse_range(
        headers.get(header::RANGE).and_then(|v| v.to_str().ok()),
        len,
    );
    let (status, start, end) = match range {
        Range::Whole => (StatusCode::OK, 0, len.saturating_sub(1)),
        Range::Part(s, e) => (StatusCode::PARTIAL_CONTENT, s, e),
        Range::Unsatisfiable => {
            return (
                StatusCode::RANGE_NOT_SATISFIABLE,
                [(header::CONTENT_RANGE, format!("bytes */{len}"))],
            )
                .into_response();
        }
    };
    let count = if len == 0 { 0 } else { end - start + 1 };
    if file.seek(SeekFrom::Start(start)).await.is_err() {
        return (
            StatusCode::INTERNAL_SERVER_ERROR,
            "cannot read the replay\n",
        )
            .into_response();
    }
    // The file may still be growing (a broadcast being recorded): send the length found now.
    let body = futures_util::stream::unfold((file, count), |(mut f, left)| async move {
        if left == 0 {
            return None;
        }
        let mut buf = vec![0u8; CHUNK_BYTES.min(left as usize)];
        match f.read(&mut buf).await {
            Ok(0) => None,
            Ok(n) => {
                buf.truncate(n);
                Some((
                    Ok::<_, std::io::Error>(Bytes::from(buf)),
                    (f, left - n as u64),
                ))
            }
            Err(e) => Some((Err(e), (f, 0))),
        }
    });
    let mut r = Response::new(Body::from_stream(body));
    *r.status_mut() = status;
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(container.content_type()),
    );
    h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(count));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    if status == StatusCode::PARTIAL_CONTENT
        && let Ok(v) = HeaderValue::from_str(&format!("bytes {start}-{end}/{len}"))
    {
        h.insert(header::CONTENT_RANGE, v);
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_parse_as_rfc_9110_says() {
        assert_eq!(parse_range(None, 100), Range::Whole);
        assert_eq!(parse_range(Some("bytes=0-"), 100), Range::Part(0, 99));
        assert_eq!(parse_range(Some("bytes=10-19"), 100), Range::Part(10, 19));
        assert_eq!(parse_range(Some("bytes=90-200"), 100), Range::Part(90, 99));
        assert_eq!(parse_range(Some("bytes=-10"), 100), Range::Part(90, 99));
        assert_eq!(parse_range(Some("bytes=100-"), 100), Range::Unsatisfiable);
        assert_eq!(parse_range(Some("bytes=5-1"), 100), Range::Whole);
        assert_eq!(parse_range(Some("bytes=0-1,5-6"), 100), Range::Whole);
        assert_eq!(parse_range(Some("items=0-1"), 100), Range::Whole);
    }
}
