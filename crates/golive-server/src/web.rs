//! The browser pages and the SDK, embedded in the binary so it serves them from any directory.
//!
//! This module serves the live directory (`/`), the Go Live page (`/live`), the player
//! (`/watch/{stream}`), the embeddable player (`/embed/{stream}`), the SDK (`/sdk/golive.js`) and
//! the pages' assets under `/static/`, and routes the oEmbed endpoint and the thumbnails.
//!
//! Caching: the asset names carry no version, so a browser that kept an old `live.js` next to a
//! new `live.html` would break after an upgrade. Every response is therefore `no-cache` with a
//! strong `ETag` (a hash of the bytes sent): browsers keep their copy and revalidate it, and an
//! unchanged file costs a `304 Not Modified` without a body.
//!
//! Framing: only the embed may be framed, by any site (`frame-ancestors *`). Every other page
//! refuses it (`X-Frame-Options: DENY` for old browsers, `frame-ancestors 'none'` for the rest):
//! a framed Go Live page could be dressed up to make someone broadcast their camera. The SDK is
//! loadable from any origin (a module script from another origin needs CORS).

use axum::Router;
use axum::extract::{FromRef, Path, Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use std::sync::{Arc, LazyLock};

use crate::directory::Directory;
use crate::embed::PublicUrl;

const HTML: &str = "text/html; charset=utf-8";
const CSS: &str = "text/css; charset=utf-8";
const JS: &str = "text/javascript; charset=utf-8";
const SVG: &str = "image/svg+xml";

/// Revalidate every time (see the module docs).
const CACHE_CONTROL: &str = "no-cache";
/// Where the watch page's template takes its stream's meta tags.
const META_PLACEHOLDER: &str = "<!--golive:meta-->";

/// Who may show a response in a frame, and who may load it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Policy {
    /// A page no other site may frame.
    Page,
    /// The embeddable player: any site may frame it.
    Embed,
    /// A script, style or image of our own pages.
    Asset,
    /// Loadable by pages of any origin (CORS).
    Public,
}

/// One embedded file.
struct Asset {
    name: &'static str,
    content_type: &'static str,
    body: &'static [u8],
    policy: Policy,
}

macro_rules! asset {
    ($name:literal, $content_type:expr) => {
        Asset {
            name: $name,
            content_type: $content_type,
            body: include_bytes!(concat!("../../../web/static/", $name)),
            policy: Policy::Asset,
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
    asset!("embed.js", JS),
    asset!("chat.js", JS),
    asset!("probe.js", JS),
    asset!("replay.js", JS),
    asset!("icon.svg", SVG),
];

macro_rules! page {
    ($name:literal, $policy:expr) => {
        Asset {
            name: $name,
            content_type: HTML,
            body: include_bytes!(concat!("../../../web/", $name)),
            policy: $policy,
        }
    };
}

const INDEX_PAGE: Asset = page!("index.html", Policy::Page);
const LIVE_PAGE: Asset = page!("live.html", Policy::Page);
const WATCH_PAGE: Asset = page!("watch.html", Policy::Page);
const EMBED_PAGE: Asset = page!("embed.html", Policy::Embed);

/// The SDK, at `/sdk/golive.js`.
const SDK: Asset = Asset {
    name: "golive.js",
    content_type: JS,
    body: include_bytes!("../../../web/sdk/golive.js"),
    policy: Policy::Public,
};

/// Strong ETags, computed once: 64-bit FNV-1a of the bytes, quoted.
static ETAGS: LazyLock<Vec<(&'static str, HeaderValue)>> = LazyLock::new(|| {
    STATIC_ASSETS
        .iter()
        .chain([&INDEX_PAGE, &LIVE_PAGE, &WATCH_PAGE, &EMBED_PAGE, &SDK])
        .map(|a| (a.name, etag(a.body)))
        .collect()
});

fn etag(body: &[u8]) -> HeaderValue {
    HeaderValue::from_str(&format!("\"{:016x}\"", fnv1a(body)))
        .expect("hex is a valid header value")
}

pub(crate) fn fnv1a(bytes: &[u8]) -> u64 {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    bytes
        .iter()
        .fold(OFFSET, |h, &b| (h ^ u64::from(b)).wrapping_mul(PRIME))
}

/// Routes of the pages, the SDK, the assets, oEmbed and the thumbnails.
pub fn routes<S>() -> Router<S>
where
    S: Clone + Send + Sync + 'static,
    Arc<Directory>: FromRef<S>,
    PublicUrl: FromRef<S>,
{
    Router::new()
        .route(
            "/",
            get(|h: HeaderMap| async move { serve(&INDEX_PAGE, &h) }),
        )
        .route(
            "/live",
            get(|h: HeaderMap| async move { serve(&LIVE_PAGE, &h) }),
        )
        // The pages read the stream name from their own URL; an invalid name is the page's to
        // explain, in words, so every name gets the page.
        .route("/watch/{stream}", get(watch_page))
        .route(
            "/embed/{stream}",
            get(|h: HeaderMap| async move { serve(&EMBED_PAGE, &h) }),
        )
        .route(
            "/sdk/golive.js",
            get(|h: HeaderMap| async move { serve(&SDK, &h) }),
        )
        .route("/static/{file}", get(static_asset))
        .route("/oembed", get(crate::embed::oembed))
        .route(
            "/api/streams/{stream}/thumbnail.jpg",
            get(crate::thumbnails::serve),
        )
}

async fn static_asset(Path(file): Path<String>, headers: HeaderMap) -> Response {
    match STATIC_ASSETS.iter().find(|a| a.name == file) {
        Some(asset) => serve(asset, &headers),
        None => (StatusCode::NOT_FOUND, "no such file\n").into_response(),
    }
}

/// The player page, with its stream's Open Graph and Twitter-card tags for link previews.
async fn watch_page(
    State(directory): State<Arc<Directory>>,
    State(public): State<PublicUrl>,
    Path(stream): Path<String>,
    request: Request,
) -> Response {
    let base = crate::embed::public_base(&public, &request);
    let meta = crate::embed::watch_meta(&directory, base.as_deref(), &stream);
    let template = std::str::from_utf8(WATCH_PAGE.body).expect("the page is UTF-8");
    let body = template.replacen(META_PLACEHOLDER, &meta, 1);
    let tag = etag(body.as_bytes());
    respond(&WATCH_PAGE, body.into_bytes(), tag, request.headers())
}

fn serve(asset: &'static Asset, request: &HeaderMap) -> Response {
    let tag = ETAGS
        .iter()
        .find(|(name, _)| *name == asset.name)
        .map(|(_, tag)| tag.clone())
        .expect("every asset has an ETag");
    respond(asset, asset.body, tag, request)
}

fn respond(
    asset: &Asset,
    body: impl Into<axum::body::Body>,
    etag: HeaderValue,
    request: &HeaderMap,
) -> Response {
    let mut headers = HeaderMap::new();
    headers.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static(CACHE_CONTROL),
    );
    headers.insert(header::ETAG, etag.clone());
    match asset.policy {
        Policy::Page => {
            headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
            headers.insert(
                header::CONTENT_SECURITY_POLICY,
                HeaderValue::from_static("frame-ancestors 'none'"),
            );
        }
        Policy::Embed => {
            headers.insert(
                header::CONTENT_SECURITY_POLICY,
                HeaderValue::from_static("frame-ancestors *"),
            );
        }
        Policy::Public => {
            headers.insert(
                header::ACCESS_CONTROL_ALLOW_ORIGIN,
                HeaderValue::from_static("*"),
            );
            headers.insert(
                HeaderName::from_static("cross-origin-resource-policy"),
                HeaderValue::from_static("cross-origin"),
            );
        }
        Policy::Asset => {}
    }
    if if_none_match(request, &etag) {
        return (StatusCode::NOT_MODIFIED, headers).into_response();
    }
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(asset.content_type),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    (headers, body.into()).into_response()
}

/// Whether the request's `If-None-Match` lists `etag` (or `*`).
pub(crate) fn if_none_match(request: &HeaderMap, etag: &HeaderValue) -> bool {
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
        assert!(
            std::str::from_utf8(WATCH_PAGE.body)
                .unwrap()
                .contains(META_PLACEHOLDER),
            "the watch page has a place for its meta tags"
        );
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
