//! The browser pages, embedded in the binary so it serves them from any directory.
//!
//! This module serves the live directory (`/`), the Go Live page (`/live`), the player
//! (`/watch/{stream}`) and their assets under `/static/`.
//!
//! Caching: the asset names carry no version, so a browser that kept an old `live.js` next to a
//! new `live.html` would break after an upgrade. Every response is therefore `no-cache` with a
//! strong `ETag` (a hash of the embedded bytes): browsers keep their copy and revalidate it, and
//! an unchanged file costs a `304 Not Modified` without a body.

use axum::Router;
use axum::extract::Path;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use std::sync::LazyLock;

const HTML: &str = "text/html; charset=utf-8";
const CSS: &str = "text/css; charset=utf-8";
const JS: &str = "text/javascript; charset=utf-8";
const SVG: &str = "image/svg+xml";

/// Revalidate every time (see the module docs).
const CACHE_CONTROL: &str = "no-cache";

/// One embedded file.
struct Asset {
    name: &'static str,
    content_type: &'static str,
    body: &'static [u8],
}

macro_rules! asset {
    ($name:literal, $content_type:expr) => {
        Asset {
            name: $name,
            content_type: $content_type,
            body: include_bytes!(concat!("../../../web/static/", $name)),
        }
    };
}

/// Everything under `/static/`.
const STATIC_ASSETS: &[Asset] = &[
    asset!("style.css", CSS),
    asset!("common.js", JS),
    asset!("directory.js", JS),
    asset!("live.js", JS),
    asset!("watch.js", JS),
    asset!("chat.js", JS),
    asset!("probe.js", JS),
    asset!("icon.svg", SVG),
];

const INDEX_PAGE: Asset = Asset {
    name: "index.html",
    content_type: HTML,
    body: include_bytes!("../../../web/index.html"),
};

const LIVE_PAGE: Asset = Asset {
    name: "live.html",
    content_type: HTML,
    body: include_bytes!("../../../web/live.html"),
};

const WATCH_PAGE: Asset = Asset {
    name: "watch.html",
    content_type: HTML,
    body: include_bytes!("../../../web/watch.html"),
};

/// Strong ETags, computed once: 64-bit FNV-1a of the bytes, quoted.
static ETAGS: LazyLock<Vec<(&'static str, HeaderValue)>> = LazyLock::new(|| {
    STATIC_ASSETS
        .iter()
        .chain([&INDEX_PAGE, &LIVE_PAGE, &WATCH_PAGE])
        .map(|a| {
            let tag = format!("\"{:016x}\"", fnv1a(a.body));
            (
                a.name,
                HeaderValue::from_str(&tag).expect("hex is a valid header value"),
            )
        })
        .collect()
});

fn fnv1a(bytes: &[u8]) -> u64 {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    bytes
        .iter()
        .fold(OFFSET, |h, &b| (h ^ u64::from(b)).wrapping_mul(PRIME))
}

/// Routes of the pages and their assets.
pub fn routes<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route(
            "/",
            get(|h: HeaderMap| async move { serve(&INDEX_PAGE, &h) }),
        )
        .route(
            "/live",
            get(|h: HeaderMap| async move { serve(&LIVE_PAGE, &h) }),
        )
        // The page reads the stream name from its own URL; an invalid name is the page's to
        // explain, in words, so every name gets the page.
        .route(
            "/watch/{stream}",
            get(|h: HeaderMap| async move { serve(&WATCH_PAGE, &h) }),
        )
        .route("/static/{file}", get(static_asset))
}

async fn static_asset(Path(file): Path<String>, headers: HeaderMap) -> Response {
    match STATIC_ASSETS.iter().find(|a| a.name == file) {
        Some(asset) => serve(asset, &headers),
        None => (StatusCode::NOT_FOUND, "no such file\n").into_response(),
    }
}

fn serve(asset: &Asset, request: &HeaderMap) -> Response {
    let etag = ETAGS
        .iter()
        .find(|(name, _)| *name == asset.name)
        .map(|(_, tag)| tag.clone())
        .expect("every asset has an ETag");
    let cache = [
        (
            header::CACHE_CONTROL,
            HeaderValue::from_static(CACHE_CONTROL),
        ),
        (header::ETAG, etag.clone()),
    ];
    if if_none_match(request, &etag) {
        return (StatusCode::NOT_MODIFIED, cache).into_response();
    }
    (
        cache,
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static(asset.content_type),
            ),
            (
                header::X_CONTENT_TYPE_OPTIONS,
                HeaderValue::from_static("nosniff"),
            ),
        ],
        asset.body,
    )
        .into_response()
}

/// Whether the request's `If-None-Match` lists `etag` (or `*`).
fn if_none_match(request: &HeaderMap, etag: &HeaderValue) -> bool {
    let Some(tags) = request
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let etag = etag.to_str().unwrap_or_default();
    tags.split(',')
        .map(|t| t.trim().trim_start_matches("W/"))
        .any(|t| t == "*" || t == etag)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_asset_has_a_distinct_name_and_a_body() {
        let mut names: Vec<_> = STATIC_ASSETS.iter().map(|a| a.name).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), STATIC_ASSETS.len());
        assert!(STATIC_ASSETS.iter().all(|a| !a.body.is_empty()));
    }

    #[test]
    fn matching_etag_is_not_modified() {
        let mut h = HeaderMap::new();
        let response = serve(&LIVE_PAGE, &h);
        assert_eq!(response.status(), StatusCode::OK);
        let tag = response.headers()[header::ETAG].clone();
        assert_eq!(response.headers()[header::CONTENT_TYPE], HTML);
        h.insert(
            header::IF_NONE_MATCH,
            HeaderValue::from_str(&format!("\"x\", {}", tag.to_str().unwrap())).unwrap(),
        );
        assert_eq!(serve(&LIVE_PAGE, &h).status(), StatusCode::NOT_MODIFIED);
        h.insert(header::IF_NONE_MATCH, HeaderValue::from_static("\"other\""));
        assert_eq!(serve(&LIVE_PAGE, &h).status(), StatusCode::OK);
    }
}
