//! What lets a broadcast travel: link previews and embedding on other sites.
//!
//! - `/watch/<stream>` carries Open Graph and Twitter-card tags (title, picture, the embeddable
//!   player), so a link pasted into a chat or a social site unfurls into the broadcast.
//! - `GET /oembed?url=<watch URL>` answers with the oEmbed 1.0 JSON of a `video`: the `<iframe>`
//!   of `/embed/<stream>` that sites paste in (<https://oembed.com>).
//!
//! Both need absolute URLs of this server, as the browser reaches it: the scheme and the `Host`
//! of the request (behind a reverse proxy listed in `--trusted-proxies`, its
//! `X-Forwarded-Proto` and `X-Forwarded-Host`).

use axum::extract::{ConnectInfo, Query, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use golive_proto::StreamName;
use serde::Serialize;
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use crate::directory::Directory;
use crate::thumbnails::{Thumbnail, url_path};

/// The embed's size when the consumer gives no bounds: 16:9, as the player.
pub const DEFAULT_WIDTH: u32 = 640;
pub const DEFAULT_HEIGHT: u32 = 360;
const PROVIDER_NAME: &str = "golive";

/// What tells this server's public URL: the proxies whose forwarded headers are believed.
#[derive(Debug, Clone, Default)]
pub struct PublicUrl {
    trusted_proxies: Arc<[IpAddr]>,
}

impl PublicUrl {
    pub fn new(trusted_proxies: Vec<IpAddr>) -> Self {
        Self {
            trusted_proxies: trusted_proxies.into(),
        }
    }
}

/// `scheme://host[:port]` of this server as the client reached it; `None` without a usable
/// `Host` (an HTTP/1.0 client, or a value that is not a host name).
pub fn public_base(public: &PublicUrl, request: &Request) -> Option<String> {
    let headers = request.headers();
    let trusted = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .is_some_and(|ConnectInfo(peer)| public.trusted_proxies.contains(&peer.ip()));
    let forwarded = |name: &str| {
        trusted
            .then(|| first_value(headers, name))
            .flatten()
            .filter(|v| !v.is_empty())
    };
    let scheme = match forwarded("x-forwarded-proto") {
        Some(p) if p.eq_ignore_ascii_case("https") => "https",
        _ => "http",
    };
    let host = forwarded("x-forwarded-host")
        .or_else(|| first_value(headers, header::HOST.as_str()))
        .or_else(|| request.uri().authority().map(|a| a.as_str().to_owned()))?;
    valid_host(&host).then(|| format!("{scheme}://{host}"))
}

fn first_value(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(',').next())
        .map(|v| v.trim().to_owned())
}

/// A host, an IPv4 address or a bracketed IPv6 address, with an optional port; nothing that
/// could break out of an HTML attribute or a URL.
fn valid_host(host: &str) -> bool {
    !host.is_empty()
        && host.len() <= 255
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':' | b'[' | b']'))
}

/// Escapes text for an HTML attribute value or element content.
pub fn escape_html(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Percent-encodes everything but the unreserved characters (RFC 3986), for a query value.
fn encode_query_value(text: &str) -> String {
    text.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// What a preview shows of a stream: its title when it is live and has one, else its name.
fn display_title(directory: &Directory, stream: &StreamName) -> (String, bool) {
    match directory.title(stream) {
        Some(Some(title)) if !title.trim().is_empty() => (title, true),
        Some(_) => (stream.to_string(), true),
        None => (stream.to_string(), false),
    }
}

/// The `<meta>` and `<link>` tags of `/watch/<raw>` (nothing stream-specific for a name that is
/// not valid, or without a usable `Host`).
pub fn watch_meta(directory: &Directory, base: Option<&str>, raw: &str) -> String {
    let mut tags = vec![
        format!(r#"<meta property="og:site_name" content="{PROVIDER_NAME}">"#),
        r#"<meta property="og:type" content="video.other">"#.to_owned(),
    ];
    let (Some(base), Ok(stream)) = (base, StreamName::new(raw)) else {
        return tags.join("\n");
    };
    let (title, live) = display_title(directory, &stream);
    let description = if live {
        format!("Live now on {PROVIDER_NAME}: tap to watch.")
    } else {
        format!("A live broadcast on {PROVIDER_NAME}.")
    };
    let watch_url = format!("{base}/watch/{stream}");
    let embed_url = format!("{base}/embed/{stream}");
    let thumbnail = directory.thumbnail(&stream);
    let e = escape_html;
    tags.extend([
        format!(r#"<meta property="og:title" content="{}">"#, e(&title)),
        format!(
            r#"<meta property="og:description" content="{}">"#,
            e(&description)
        ),
        format!(r#"<meta property="og:url" content="{}">"#, e(&watch_url)),
        format!(r#"<meta property="og:video" content="{}">"#, e(&embed_url)),
        format!(
            r#"<meta property="og:video:secure_url" content="{}">"#,
            e(&embed_url)
        ),
        r#"<meta property="og:video:type" content="text/html">"#.to_owned(),
        format!(r#"<meta property="og:video:width" content="{DEFAULT_WIDTH}">"#),
        format!(r#"<meta property="og:video:height" content="{DEFAULT_HEIGHT}">"#),
        format!(r#"<meta name="twitter:title" content="{}">"#, e(&title)),
        format!(
            r#"<meta name="twitter:description" content="{}">"#,
            e(&description)
        ),
    ]);
    // A player card needs a picture; without a thumbnail yet, a plain summary.
    match &thumbnail {
        Some(t) => {
            let image = format!("{base}{}", url_path(stream.as_str(), t));
            tags.push(format!(
                r#"<meta property="og:image" content="{}">"#,
                e(&image)
            ));
            if let Some((w, h)) = t.size {
                tags.push(format!(r#"<meta property="og:image:width" content="{w}">"#));
                tags.push(format!(
                    r#"<meta property="og:image:height" content="{h}">"#
                ));
            }
            tags.extend([
                r#"<meta name="twitter:card" content="player">"#.to_owned(),
                format!(r#"<meta name="twitter:image" content="{}">"#, e(&image)),
                format!(
                    r#"<meta name="twitter:player" content="{}">"#,
                    e(&embed_url)
                ),
                format!(r#"<meta name="twitter:player:width" content="{DEFAULT_WIDTH}">"#),
                format!(r#"<meta name="twitter:player:height" content="{DEFAULT_HEIGHT}">"#),
            ]);
        }
        None => tags.push(r#"<meta name="twitter:card" content="summary">"#.to_owned()),
    }
    tags.push(format!(
        r#"<link rel="alternate" type="application/json+oembed" href="{}" title="{}">"#,
        e(&format!(
            "{base}/oembed?url={}&format=json",
            encode_query_value(&watch_url)
        )),
        e(&title)
    ));
    tags.join("\n")
}

/// The oEmbed response of a `video` (oEmbed 1.0, sections 2.3.4 and 2.3.4.3).
#[derive(Debug, Serialize)]
pub struct OEmbed {
    pub version: &'static str,
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub title: String,
    pub provider_name: &'static str,
    pub provider_url: String,
    pub html: String,
    pub width: u32,
    pub height: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub thumbnail_url: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub thumbnail_width: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub thumbnail_height: Option<u16>,
}

/// Why an oEmbed request gets no embed.
#[derive(Debug, PartialEq, Eq)]
pub enum OEmbedError {
    /// The request itself is wrong (`400`).
    BadRequest(String),
    /// A format other than JSON (`501`, as the oEmbed spec says).
    FormatNotImplemented(String),
}

impl IntoResponse for OEmbedError {
    fn into_response(self) -> Response {
        let (status, message) = match self {
            OEmbedError::BadRequest(m) => (StatusCode::BAD_REQUEST, m),
            OEmbedError::FormatNotImplemented(m) => (StatusCode::NOT_IMPLEMENTED, m),
        };
        (
            status,
            [(header::ACCESS_CONTROL_ALLOW_ORIGIN, "*")],
            format!("{message}\n"),
        )
            .into_response()
    }
}

/// The checked parameters of an oEmbed request.
#[derive(Debug, PartialEq, Eq)]
pub struct OEmbedRequest {
    pub stream: StreamName,
    pub width: u32,
    pub height: u32,
}

/// Checks the query of `/oembed` against this server's `base` (`scheme://host`): `url` must be
/// one of its `/watch/<stream>` or `/embed/<stream>` pages, `format` json (or absent), and
/// `maxwidth`/`maxheight` positive integers.
pub fn parse_oembed(
    query: &HashMap<String, String>,
    base: &str,
) -> Result<OEmbedRequest, OEmbedError> {
    if let Some(format) = query.get("format")
        && format != "json"
    {
        return Err(OEmbedError::FormatNotImplemented(format!(
            "format {format:?} is not implemented: this provider answers format=json only"
        )));
    }
    let bad = |m: String| OEmbedError::BadRequest(m);
    let raw = query
        .get("url")
        .filter(|u| !u.trim().is_empty())
        .ok_or_else(|| {
            bad(
                "the url parameter is missing: /oembed?url=<a /watch/<stream> URL of this server>"
                    .into(),
            )
        })?;
    let url = url::Url::parse(raw.trim())
        .map_err(|e| bad(format!("url {raw:?} is not an absolute URL: {e}")))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(bad(format!("url {raw:?} is not an http or https URL")));
    }
    let ours = url::Url::parse(base).map_err(|e| bad(format!("this server's address: {e}")))?;
    let same_host = url.host_str().map(str::to_ascii_lowercase)
        == ours.host_str().map(str::to_ascii_lowercase)
        && url.port_or_known_default() == ours.port_or_known_default();
    if !same_host {
        return Err(bad(format!(
            "url {raw:?} is not on this server ({})",
            ours.host_str().unwrap_or_default()
        )));
    }
    let segments: Vec<&str> = url
        .path_segments()
        .map(|s| s.filter(|p| !p.is_empty()).collect())
        .unwrap_or_default();
    let name = match segments.as_slice() {
        ["watch" | "embed", name] => *name,
        _ => {
            return Err(bad(format!(
                "url {raw:?} is not a player: its path must be /watch/<stream>"
            )));
        }
    };
    let stream = StreamName::new(name).map_err(|e| bad(format!("url {raw:?}: {e}")))?;
    let max = |key: &str| -> Result<Option<u32>, OEmbedError> {
        match query.get(key) {
            None => Ok(None),
            Some(v) => match v.trim().parse::<u32>() {
                Ok(n) if n > 0 => Ok(Some(n)),
                _ => Err(bad(format!("{key} {v:?} is not a positive integer"))),
            },
        }
    };
    let (width, height) = fit(max("maxwidth")?, max("maxheight")?);
    Ok(OEmbedRequest {
        stream,
        width,
        height,
    })
}

/// The largest 16:9 size within the bounds, no larger than the default.
fn fit(max_width: Option<u32>, max_height: Option<u32>) -> (u32, u32) {
    let mut w = DEFAULT_WIDTH.min(max_width.unwrap_or(u32::MAX));
    let mut h = w * 9 / 16;
    if let Some(mh) = max_height
        && h > mh
    {
        h = mh;
        w = h * 16 / 9;
    }
    (w.max(1), h.max(1))
}

/// The `<iframe>` a consumer pastes in.
pub fn iframe(base: &str, stream: &StreamName, title: &str, width: u32, height: u32) -> String {
    format!(
        r#"<iframe src="{}" width="{width}" height="{height}" frameborder="0" allow="autoplay; fullscreen; picture-in-picture" allowfullscreen title="{}"></iframe>"#,
        escape_html(&format!("{base}/embed/{stream}")),
        escape_html(&format!("{title} (live on {PROVIDER_NAME})")),
    )
}

/// `GET /oembed?url=…[&format=json][&maxwidth=…][&maxheight=…]`.
pub async fn oembed(
    State(directory): State<Arc<Directory>>,
    State(public): State<PublicUrl>,
    Query(query): Query<HashMap<String, String>>,
    request: Request,
) -> Response {
    let Some(base) = public_base(&public, &request) else {
        return OEmbedError::BadRequest("the request has no usable Host header".into())
            .into_response();
    };
    let req = match parse_oembed(&query, &base) {
        Ok(r) => r,
        Err(e) => return e.into_response(),
    };
    let (title, _) = display_title(&directory, &req.stream);
    let thumbnail: Option<Arc<Thumbnail>> = directory.thumbnail(&req.stream);
    let (thumbnail_url, size) = match &thumbnail {
        // oEmbed wants the thumbnail's width and height with its URL: both or none.
        Some(t) if t.size.is_some() => (
            Some(format!("{base}{}", url_path(req.stream.as_str(), t))),
            t.size,
        ),
        _ => (None, None),
    };
    let body = OEmbed {
        version: "1.0",
        kind: "video",
        html: iframe(&base, &req.stream, &title, req.width, req.height),
        title,
        provider_name: PROVIDER_NAME,
        provider_url: format!("{base}/"),
        width: req.width,
        height: req.height,
        thumbnail_url,
        thumbnail_width: size.map(|s| s.0),
        thumbnail_height: size.map(|s| s.1),
    };
    (
        [(header::ACCESS_CONTROL_ALLOW_ORIGIN, "*")],
        axum::Json(body),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str = "http://127.0.0.1:8080";

    fn query(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn a_watch_url_of_this_server_is_embedded_at_16_by_9() {
        let r = parse_oembed(&query(&[("url", "http://127.0.0.1:8080/watch/demo")]), BASE).unwrap();
        assert_eq!(
            (r.stream.as_str(), r.width, r.height),
            ("demo", DEFAULT_WIDTH, DEFAULT_HEIGHT)
        );
        let r = parse_oembed(
            &query(&[
                ("url", "http://127.0.0.1:8080/embed/demo/?x=1"),
                ("format", "json"),
                ("maxwidth", "320"),
            ]),
            BASE,
        )
        .unwrap();
        assert_eq!((r.width, r.height), (320, 180));
        let r = parse_oembed(
            &query(&[
                ("url", "http://127.0.0.1:8080/watch/demo"),
                ("maxwidth", "1000"),
                ("maxheight", "90"),
            ]),
            BASE,
        )
        .unwrap();
        assert_eq!((r.width, r.height), (160, 90));
    }

    #[test]
    fn bad_urls_are_bad_requests_that_say_why() {
        for (url, why) in [
            ("", "missing"),
            ("watch/demo", "not an absolute URL"),
            (
                "ftp://127.0.0.1:8080/watch/demo",
                "not an http or https URL",
            ),
            ("http://example.com/watch/demo", "not on this server"),
            ("http://127.0.0.1:9999/watch/demo", "not on this server"),
            ("http://127.0.0.1:8080/live", "not a player"),
            ("http://127.0.0.1:8080/watch/a/b", "not a player"),
            ("http://127.0.0.1:8080/watch/no%20spaces", "stream name"),
        ] {
            match parse_oembed(&query(&[("url", url)]), BASE) {
                Err(OEmbedError::BadRequest(m)) => assert!(m.contains(why), "{url}: {m}"),
                other => panic!("{url}: {other:?}"),
            }
        }
        assert!(matches!(
            parse_oembed(&query(&[]), BASE),
            Err(OEmbedError::BadRequest(m)) if m.contains("missing")
        ));
        for size in ["0", "-5", "wide"] {
            assert!(matches!(
                parse_oembed(&query(&[("url", "http://127.0.0.1:8080/watch/d"), ("maxwidth", size)]), BASE),
                Err(OEmbedError::BadRequest(m)) if m.contains("maxwidth")
            ));
        }
    }

    #[test]
    fn a_format_other_than_json_is_not_implemented() {
        let e = parse_oembed(
            &query(&[
                ("url", "http://127.0.0.1:8080/watch/demo"),
                ("format", "xml"),
            ]),
            BASE,
        )
        .unwrap_err();
        assert!(matches!(e, OEmbedError::FormatNotImplemented(m) if m.contains("json")));
    }

    #[test]
    fn markup_in_a_title_stays_text_in_the_iframe() {
        let html = iframe(
            BASE,
            &StreamName::new("demo").unwrap(),
            r#""><script>alert(1)</script>"#,
            640,
            360,
        );
        assert!(!html.contains("<script>"), "{html}");
        assert!(html.contains("&quot;&gt;&lt;script&gt;"), "{html}");
        assert!(html.starts_with(
            r#"<iframe src="http://127.0.0.1:8080/embed/demo" width="640" height="360""#
        ));
    }

    #[test]
    fn hosts_that_could_break_out_of_markup_are_not_used() {
        assert!(valid_host("127.0.0.1:8080"));
        assert!(valid_host("[::1]:8080"));
        assert!(valid_host("live.example.com"));
        assert!(!valid_host("evil.com\"><script>"));
        assert!(!valid_host("a b"));
        assert!(!valid_host(""));
    }
}
