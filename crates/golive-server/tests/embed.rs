//! Embedding and previews against the real binary: oEmbed, the Open Graph tags of the player
//! page, which responses other sites may frame or load, and live thumbnails (sent over the
//! WebSocket, served over HTTP, listed with the rank's inputs in `/api/streams`).

mod common;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use common::*;
use golive_proto::{ErrorCode, MAX_THUMBNAIL_BYTES, ServerMessage};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A response: status, lower-cased headers, body.
struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Reply {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text()))
    }
}

/// `GET path` with `Host: <the server's address>` and `extra` header lines.
async fn get(s: &Server, path: &str, extra: &[(&str, &str)]) -> Reply {
    let mut c = tokio::net::TcpStream::connect(&s.addr).await.unwrap();
    let mut req = format!(
        "GET {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n",
        s.addr
    );
    for (n, v) in extra {
        req += &format!("{n}: {v}\r\n");
    }
    req += "\r\n";
    c.write_all(req.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    c.read_to_end(&mut raw).await.unwrap();
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a complete response");
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|c| c.parse().ok())
        .expect("a status line");
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    Reply {
        status,
        headers,
        body: raw[split + 4..].to_vec(),
    }
}

fn encode(text: &str) -> String {
    text.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// A JPEG's outline: start-of-image, a 320×180 baseline frame header, a scan, end-of-image,
/// grown to `len` bytes with padding inside an APP1 segment.
fn jpeg(len: usize) -> Vec<u8> {
    let mut j = vec![0xFF, 0xD8];
    j.extend([0xFF, 0xC0, 0x00, 0x11, 8, 0, 180, 1, 64, 3]);
    j.extend([1, 0x22, 0, 2, 0x11, 1, 3, 0x11, 1]);
    j.extend([0xFF, 0xDA, 0x00, 0x02]);
    let pad = len.saturating_sub(j.len() + 2);
    j.extend(std::iter::repeat_n(0x55, pad));
    j.extend([0xFF, 0xD9]);
    j
}

fn thumbnail_msg(bytes: &[u8]) -> String {
    serde_json::json!({"type": "thumbnail", "jpeg": STANDARD.encode(bytes)}).to_string()
}

async fn publish(s: &Server, stream: &str, title: &str) -> Ws {
    let mut ws = connect(s).await;
    let m = serde_json::json!({"type": "publish", "stream": stream, "sdp": vp8_offer(), "title": title});
    send(&mut ws, &m.to_string()).await;
    assert!(
        matches!(recv_reply(&mut ws).await, ServerMessage::Answer { .. }),
        "publish answered"
    );
    ws
}

async fn watch(s: &Server, stream: &str) -> Ws {
    let mut ws = connect(s).await;
    send(&mut ws, &msg("watch", stream, &vp8_offer())).await;
    assert!(
        matches!(recv_reply(&mut ws).await, ServerMessage::Answer { .. }),
        "watch answered"
    );
    ws
}

/// Polls `GET path` until its status is `status` (thumbnails are not acknowledged on the wire).
async fn until_status(s: &Server, path: &str, status: u16) -> Reply {
    let deadline = Instant::now() + STEP;
    loop {
        let r = get(s, path, &[]).await;
        if r.status == status || Instant::now() > deadline {
            assert_eq!(r.status, status, "GET {path}: {}", r.text());
            return r;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn oembed_describes_a_watch_url_as_an_iframe_video() {
    let s = start();
    let url = format!("http://{}/watch/demo", s.addr);
    let r = get(&s, &format!("/oembed?url={}", encode(&url)), &[]).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(
        r.header("content-type")
            .unwrap()
            .starts_with("application/json")
    );
    assert_eq!(r.header("access-control-allow-origin"), Some("*"));
    let j = r.json();
    // The fields oEmbed 1.0 requires of every response and of a `video` (sections 2.3.4, 2.3.4.3).
    assert_eq!(j["version"], "1.0");
    assert_eq!(j["type"], "video");
    assert_eq!(j["width"], 640);
    assert_eq!(j["height"], 360);
    assert_eq!(j["title"], "demo");
    assert_eq!(j["provider_name"], "golive");
    assert_eq!(j["provider_url"], format!("http://{}/", s.addr));
    let html = j["html"].as_str().unwrap();
    assert!(
        html.starts_with(&format!(
            r#"<iframe src="http://{}/embed/demo" width="640" height="360""#,
            s.addr
        )),
        "{html}"
    );
    assert!(html.ends_with("></iframe>"), "{html}");
    assert!(j.get("thumbnail_url").is_none(), "no thumbnail yet: {j}");

    // Bounds keep 16:9; an /embed/ URL and format=json are fine too.
    let embed = format!("http://{}/embed/demo", s.addr);
    let r = get(
        &s,
        &format!(
            "/oembed?url={}&format=json&maxwidth=400&maxheight=400",
            encode(&embed)
        ),
        &[],
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let j = r.json();
    assert_eq!(
        (j["width"].as_u64(), j["height"].as_u64()),
        (Some(400), Some(225))
    );
}

#[tokio::test]
async fn oembed_refuses_bad_urls_with_400_and_other_formats_with_501() {
    let s = start();
    let ours = |path: &str| encode(&format!("http://{}{path}", s.addr));
    for (query, status, why) in [
        (String::new(), 400, "url parameter is missing"),
        ("url=".to_owned(), 400, "url parameter is missing"),
        (
            format!("url={}", encode("not a url")),
            400,
            "not an absolute URL",
        ),
        (
            format!("url={}", encode("http://elsewhere.example/watch/demo")),
            400,
            "not on this server",
        ),
        (format!("url={}", ours("/live")), 400, "not a player"),
        (format!("url={}", ours("/watch/a%20b")), 400, "stream name"),
        (
            format!("url={}&maxwidth=wide", ours("/watch/demo")),
            400,
            "maxwidth",
        ),
        (
            format!("url={}&format=xml", ours("/watch/demo")),
            501,
            "format=json",
        ),
    ] {
        let r = get(&s, &format!("/oembed?{query}"), &[]).await;
        assert_eq!(r.status, status, "?{query}: {}", r.text());
        assert!(r.text().contains(why), "?{query}: {}", r.text());
        assert!(
            r.header("content-type").unwrap().starts_with("text/plain"),
            "?{query}"
        );
    }
}

#[tokio::test]
async fn only_the_embed_may_be_framed_and_the_sdk_loads_from_any_origin() {
    let s = start();
    for page in ["/", "/live", "/watch/demo", "/replay/some-id"] {
        let r = get(&s, page, &[]).await;
        assert_eq!(r.status, 200, "{page}");
        assert_eq!(r.header("x-frame-options"), Some("DENY"), "{page}");
        assert_eq!(
            r.header("content-security-policy"),
            Some("frame-ancestors 'none'"),
            "{page}"
        );
    }
    let r = get(&s, "/embed/demo", &[]).await;
    assert_eq!(r.status, 200);
    assert!(r.header("content-type").unwrap().starts_with("text/html"));
    assert_eq!(
        r.header("content-security-policy"),
        Some("frame-ancestors *")
    );
    assert_eq!(r.header("x-frame-options"), None);

    let r = get(&s, "/sdk/golive.js", &[("Origin", "https://other.example")]).await;
    assert_eq!(r.status, 200);
    assert!(
        r.header("content-type")
            .unwrap()
            .starts_with("text/javascript")
    );
    assert_eq!(r.header("access-control-allow-origin"), Some("*"));
    assert_eq!(
        r.header("cross-origin-resource-policy"),
        Some("cross-origin")
    );
    assert!(r.text().contains("export function watch("));
    let etag = r.header("etag").unwrap().to_owned();
    assert_eq!(
        get(&s, "/sdk/golive.js", &[("If-None-Match", &etag)])
            .await
            .status,
        304
    );
    let r = get(&s, "/api/streams", &[]).await;
    assert_eq!(r.header("access-control-allow-origin"), Some("*"));
}

#[tokio::test]
async fn watch_page_carries_the_open_graph_and_twitter_tags_of_its_stream() {
    let s = start();
    let r = get(&s, "/watch/demo", &[]).await;
    let html = r.text();
    let base = format!("http://{}", s.addr);
    assert!(
        html.contains(r#"<meta property="og:title" content="demo">"#),
        "{html}"
    );
    assert!(html.contains(&format!(
        r#"<meta property="og:url" content="{base}/watch/demo">"#
    )));
    assert!(html.contains(&format!(
        r#"<meta property="og:video" content="{base}/embed/demo">"#
    )));
    assert!(html.contains(r#"<meta name="twitter:card" content="summary">"#));
    assert!(html.contains(r#"type="application/json+oembed""#));
    assert!(!html.contains("<!--golive:meta-->"));

    // Live, with a title full of markup and then a thumbnail: the tags follow, escaped.
    let mut ws = publish(&s, "demo", r#"Morning "show" <live>"#).await;
    let html = get(&s, "/watch/demo", &[]).await.text();
    assert!(
        html.contains(
            r#"<meta property="og:title" content="Morning &quot;show&quot; &lt;live&gt;">"#
        ),
        "{html}"
    );
    send(&mut ws, &thumbnail_msg(&jpeg(2000))).await;
    until_status(&s, "/api/streams/demo/thumbnail.jpg", 200).await;
    let html = get(&s, "/watch/demo", &[]).await.text();
    assert!(
        html.contains(r#"<meta name="twitter:card" content="player">"#),
        "{html}"
    );
    assert!(html.contains(&format!(
        r#"<meta name="twitter:player" content="{base}/embed/demo">"#
    )));
    assert!(html.contains(&format!(
        r#"<meta property="og:image" content="{base}/api/streams/demo/thumbnail.jpg?v="#
    )));
    assert!(html.contains(r#"<meta property="og:image:width" content="320">"#));

    // A name that is not a stream name gets the page, without stream-specific tags.
    let html = get(&s, "/watch/no%20such", &[]).await.text();
    assert!(!html.contains("og:url"), "{html}");
}

#[tokio::test]
async fn thumbnail_is_served_from_the_broadcasters_latest_until_the_broadcast_ends() {
    let s = start();
    let path = "/api/streams/show/thumbnail.jpg";
    assert_eq!(get(&s, path, &[]).await.status, 404);
    assert_eq!(
        get(&s, "/api/streams/bad%20name/thumbnail.jpg", &[])
            .await
            .status,
        400
    );
    let mut ws = publish(&s, "show", "Show").await;
    let r = get(&s, path, &[]).await;
    assert_eq!(r.status, 404, "live, but no thumbnail yet");
    assert!(r.text().contains("has sent none yet"), "{}", r.text());
    let rows =
        serde_json::from_str::<serde_json::Value>(&reqwest_get(&s, "/api/streams").await).unwrap();
    assert_eq!(rows[0]["thumbnail"], serde_json::Value::Null);

    let picture = jpeg(3000);
    send(&mut ws, &thumbnail_msg(&picture)).await;
    let r = until_status(&s, path, 200).await;
    assert_eq!(r.header("content-type"), Some("image/jpeg"));
    assert_eq!(r.header("access-control-allow-origin"), Some("*"));
    assert_eq!(r.body, picture);
    let etag = r.header("etag").unwrap().to_owned();
    assert_eq!(get(&s, path, &[("If-None-Match", &etag)]).await.status, 304);

    // The directory lists it with its version, and the rank's inputs.
    let rows =
        serde_json::from_str::<serde_json::Value>(&reqwest_get(&s, "/api/streams").await).unwrap();
    let row = &rows[0];
    let listed = row["thumbnail"].as_str().unwrap();
    assert!(listed.starts_with(&format!("{path}?v=")), "{row}");
    assert_eq!(row["rank"], 1);
    assert_eq!(row["hearts_per_minute"], 0);
    assert_eq!(row["score"], 0.0);
    assert_eq!(get(&s, listed, &[]).await.body, picture);

    // Another within two seconds is dropped silently; after that it replaces the first.
    send(&mut ws, &thumbnail_msg(&jpeg(4000))).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(get(&s, path, &[]).await.body, picture);
    tokio::time::sleep(Duration::from_millis(1800)).await;
    send(&mut ws, &thumbnail_msg(&jpeg(4000))).await;
    let deadline = Instant::now() + STEP;
    while get(&s, path, &[]).await.body.len() != 4000 {
        assert!(
            Instant::now() < deadline,
            "the new thumbnail replaces the old"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // The broadcast ends: its thumbnail goes with it.
    send(&mut ws, r#"{"type":"leave"}"#).await;
    until_status(&s, path, 404).await;
}

#[tokio::test]
async fn thumbnails_that_are_not_jpeg_or_too_large_are_refused_with_their_codes() {
    let s = start();
    let mut idle = connect(&s).await;
    expect_error(&mut idle, &thumbnail_msg(&jpeg(100)), ErrorCode::BadRequest).await;

    let mut ws = publish(&s, "show", "Show").await;
    let png = b"\x89PNG\r\n\x1a\n0000IHDR";
    let m = expect_error(&mut ws, &thumbnail_msg(png), ErrorCode::BadThumbnail).await;
    assert!(m.contains("JPEG"), "{m}");
    let mut no_end = jpeg(500);
    no_end.truncate(498);
    expect_error(&mut ws, &thumbnail_msg(&no_end), ErrorCode::BadThumbnail).await;
    expect_error(
        &mut ws,
        r#"{"type":"thumbnail","jpeg":"*** not base64 ***"}"#,
        ErrorCode::BadThumbnail,
    )
    .await;
    let m = expect_error(
        &mut ws,
        &thumbnail_msg(&jpeg(MAX_THUMBNAIL_BYTES + 1)),
        ErrorCode::ThumbnailTooLarge,
    )
    .await;
    assert!(m.contains(&MAX_THUMBNAIL_BYTES.to_string()), "{m}");
    // A refused thumbnail leaves none behind, and the broadcast goes on.
    assert_eq!(
        get(&s, "/api/streams/show/thumbnail.jpg", &[]).await.status,
        404
    );

    // A viewer may not set the stream's picture.
    let mut viewer = watch(&s, "show").await;
    expect_error(
        &mut viewer,
        &thumbnail_msg(&jpeg(100)),
        ErrorCode::Forbidden,
    )
    .await;
}

#[tokio::test]
async fn hearts_per_minute_and_viewers_rank_the_directory() {
    let s = start_with(&["--hearts-batch-ms", "0"]);
    let _quiet = publish(&s, "quiet", "Quiet").await;
    let _loved = publish(&s, "loved", "Loved").await;
    let _v1 = watch(&s, "quiet").await;
    let mut v2 = watch(&s, "loved").await;
    for _ in 0..5 {
        send(&mut v2, r#"{"type":"heart"}"#).await;
    }
    // Hearts are echoed to the audience at once with --hearts-batch-ms 0: wait for the fifth.
    loop {
        if let ServerMessage::Hearts { total: 5, .. } = recv(&mut v2).await {
            break;
        }
    }
    let rows =
        serde_json::from_str::<serde_json::Value>(&reqwest_get(&s, "/api/streams").await).unwrap();
    let row = |name: &str| {
        rows.as_array()
            .unwrap()
            .iter()
            .find(|r| r["stream"] == name)
            .unwrap()
            .clone()
    };
    assert_eq!(row("loved")["hearts_per_minute"], 5);
    assert_eq!(row("loved")["score"], 1.5);
    assert_eq!(row("loved")["rank"], 1);
    assert_eq!(row("quiet")["hearts_per_minute"], 0);
    assert_eq!(row("quiet")["score"], 1.0);
    assert_eq!(row("quiet")["rank"], 2);
}

/// What the fast start relies on: an offer without a single candidate is answered (with the
/// server's own candidate), and candidates trickled after the answer are taken without a word.
#[tokio::test]
async fn an_offer_without_candidates_is_answered_and_candidates_trickled_after_are_taken() {
    let s = start();
    let offer = vp8_offer();
    assert!(
        !offer.contains("a=candidate"),
        "the offer holds no candidate"
    );
    let mut broadcaster = publish(&s, "fast", "Fast").await;
    let mut viewer = connect(&s).await;
    send(&mut viewer, &msg("watch", "fast", &offer)).await;
    let ServerMessage::Answer { sdp, .. } = recv_reply(&mut viewer).await else {
        panic!("watch answered");
    };
    assert!(
        sdp.contains("a=ice-lite") && sdp.contains("a=candidate:"),
        "{sdp}"
    );
    for ws in [&mut broadcaster, &mut viewer] {
        for c in [
            r#"{"type":"candidate","candidate":"candidate:1467250027 1 udp 2122260223 127.0.0.1 46154 typ host generation 0","sdpMid":"0","sdpMLineIndex":0,"usernameFragment":"abcd"}"#,
            r#"{"type":"candidate","candidate":"candidate:1467250028 1 udp 2122262783 ::1 46155 typ host generation 0","sdpMid":"0","sdpMLineIndex":0}"#,
            r#"{"type":"candidate","candidate":""}"#,
        ] {
            send(ws, c).await;
        }
        // The next reply answers this message, so none came for the candidates.
        let m = expect_error(
            ws,
            r#"{"type":"thumbnail","jpeg":"?"}"#,
            ErrorCode::BadThumbnail,
        )
        .await;
        assert!(m.contains("base64"), "{m}");
    }
}
