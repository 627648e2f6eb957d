//! WHIP (RFC 9725) and WHEP (draft-ietf-wish-whep) against the real `golive` binary, with a
//! WebRTC implementation that is not webrtc-rs: aiortc (Python) as WHIP broadcaster and WHEP
//! player, mixed with the `rtc`-based WebSocket peers, plus every status code provoked on purpose.
//!
//! Needs a Python with `aiortc`: `./test.sh` installs it into a virtual environment under
//! `target/test-deps/venv`, which these tests use when it exists (else `$GOLIVE_TEST_PYTHON`, else
//! `python3`).

use anyhow::{Context, Result, bail, ensure};
use golive_e2e::http::{HttpResponse, request};
use golive_e2e::media::MediaKind;
use golive_e2e::verify::{
    first_video_starts_keyframe, forwarded_faithfully, last_layer_forwarded_faithfully,
    wait_on_layer,
};
use golive_e2e::{CONNECT_TIMEOUT, GoliveServer, Session, TestPeer, VideoCodec, run_test};
use golive_proto::{
    ClientMessage, EndReason, QualityLayer, QualityPreference, QualityReason, ServerMessage,
};
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

const SDP: &str = "application/sdp";
const SDPFRAG: &str = "application/trickle-ice-sdpfrag";

fn aiortc_client() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("whip/aiortc_client.py")
}

/// The Python that has aiortc: `$GOLIVE_TEST_PYTHON`, else the virtual environment that
/// `./test.sh` makes, else `python3` from the PATH.
fn python() -> PathBuf {
    if let Some(p) = std::env::var_os("GOLIVE_TEST_PYTHON") {
        return PathBuf::from(p);
    }
    let venv =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/test-deps/venv/bin/python3");
    if venv.exists() {
        return venv;
    }
    PathBuf::from("python3")
}

fn require_aiortc() {
    let python = python();
    let ok = std::process::Command::new(&python)
        .args(["-c", "import aiortc"])
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        ok,
        "these tests need a Python with aiortc ({} has none): run `./test.sh`, which installs it \
         into target/test-deps/venv, or `python3 -m pip install aiortc==1.16.0`",
        python.display()
    );
}

/// Runs the aiortc client (`publish` or `watch`) and returns its JSON report and exit status.
fn spawn_aiortc(mode: &str, url: &str, seconds: f32) -> tokio::process::Child {
    tokio::process::Command::new(python())
        .arg(aiortc_client())
        .args([mode, url, &seconds.to_string()])
        // A publisher streams until its stdin gets a line (or `seconds` pass): see `stop`.
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("the test Python runs")
}

/// Tells an aiortc publisher to end its broadcast now.
async fn stop(child: &mut tokio::process::Child) -> Result<()> {
    use tokio::io::AsyncWriteExt;
    let mut stdin = child.stdin.take().context("the publisher's stdin")?;
    stdin.write_all(b"stop\n").await?;
    Ok(())
}

async fn finish(child: tokio::process::Child, what: &str) -> Result<serde_json::Value> {
    let out = tokio::time::timeout(Duration::from_secs(40), child.wait_with_output())
        .await
        .with_context(|| format!("{what} did not finish"))??;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let report: serde_json::Value = stdout
        .lines()
        .last()
        .and_then(|l| serde_json::from_str(l).ok())
        .with_context(|| {
            format!(
                "{what}: no JSON report; stdout {stdout:?}, stderr {}",
                String::from_utf8_lossy(&out.stderr)
            )
        })?;
    ensure!(out.status.success(), "{what} failed: {report}");
    Ok(report)
}

async fn wait_live(server: &GoliveServer, stream: &str) -> Result<()> {
    for _ in 0..100 {
        let r = request(server.http_addr(), "GET", "/api/streams", &[], b"").await?;
        if r.body.contains(&format!("\"stream\":\"{stream}\"")) {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    bail!("{stream} never went live")
}

async fn post_offer(
    server: &GoliveServer,
    path: &str,
    sdp: &str,
    extra: &[(&str, &str)],
) -> Result<HttpResponse> {
    let mut headers = vec![("Content-Type", SDP)];
    headers.extend_from_slice(extra);
    request(server.http_addr(), "POST", path, &headers, sdp.as_bytes()).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn aiortc_whip_broadcast_plays_in_aiortc_whep_and_websocket_viewers() {
    require_aiortc();
    let server = GoliveServer::start().expect("starting golive");
    run_test("aiortc_whip_broadcast", async {
        let base = format!("http://{}", server.http_addr());
        // The broadcaster streams until told to stop, so a player that gets going late on a busy
        // machine still ends its own session (DELETE 200) before the broadcast ends.
        let mut publisher = spawn_aiortc("publish", &format!("{base}/whip/obs"), 60.0);
        wait_live(&server, "obs").await?;
        // Join late: both viewers start from the keyframe cache (or a keyframe the server asked
        // aiortc for).
        tokio::time::sleep(Duration::from_secs(1)).await;
        let whep_player = spawn_aiortc("watch", &format!("{base}/whep/obs"), 4.0);
        let mut ws_viewer = Session::watch(&server, "obs").await?;
        ws_viewer
            .peer
            .wait_packets(MediaKind::Video, 30, Duration::from_secs(8))
            .await?;
        // The cached video arrives at once; audio (not cached) at its own pace.
        ws_viewer
            .peer
            .wait_packets(MediaKind::Audio, 10, Duration::from_secs(8))
            .await
            .context("the WebSocket viewer got no audio from the WHIP broadcaster")?;
        let played = finish(whep_player, "the WHEP player").await?;
        eprintln!("aiortc WHEP player: {played}");
        ensure!(played["video_frames"].as_u64() > Some(30), "{played}");
        ensure!(
            played["width"] == 320 && played["height"] == 240,
            "{played}"
        );
        ensure!(played["delete_status"] == 200, "{played}");

        // The broadcaster stops (DELETE): the WebSocket viewer is told it ended.
        stop(&mut publisher).await?;
        let published = finish(publisher, "the WHIP broadcaster").await?;
        eprintln!("aiortc WHIP broadcaster: {published}");
        let ended = ws_viewer
            .signal
            .recv_until(Duration::from_secs(10), |m| {
                matches!(m, ServerMessage::Ended { .. })
            })
            .await?;
        ensure!(
            ended
                == ServerMessage::Ended {
                    reason: EndReason::BroadcasterLeft
                },
            "{ended:?}"
        );
        Ok(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn websocket_broadcast_reaches_whep_viewers_byte_for_byte() {
    let server = GoliveServer::start().expect("starting golive");
    run_test("websocket_broadcast_reaches_whep_viewers", async {
        let publisher = Session::publish(&server, "mixed").await?;
        let offered = TestPeer::viewer(VideoCodec::Vp8).await?;
        let r = post_offer(&server, "/whep/mixed", offered.sdp(), &[]).await?;
        ensure!(r.status == 201, "{} {}", r.status, r.body);
        let viewer = offered.connect(&r.body)?;
        viewer.wait_connected(CONNECT_TIMEOUT).await?;
        viewer
            .wait_packets(MediaKind::Video, 30, Duration::from_secs(8))
            .await?;
        viewer
            .wait_packets(MediaKind::Audio, 10, Duration::from_secs(8))
            .await?;
        let got = viewer.snapshot();
        let sent = publisher.peer.snapshot();
        for kind in [MediaKind::Video, MediaKind::Audio] {
            let run = forwarded_faithfully(&sent, &got, kind, 10);
            ensure!(run.is_ok(), "WHEP viewer {kind:?}: {:#}", run.unwrap_err());
        }
        first_video_starts_keyframe(&got)?;
        Ok(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn whip_and_whep_answer_every_case_with_the_right_status() {
    let server = GoliveServer::start_with_args(&[
        "--ice-server",
        "stun:stun.example.net:3478,turn:turn.example.net:3478?transport=udp",
        "--ice-username",
        "golive",
        "--ice-credential",
        "s3cret",
    ])
    .expect("starting golive");
    run_test("whip_and_whep_status_codes", async {
        let addr = server.http_addr();
        let offer = TestPeer::publisher().await?;
        let offer_sdp = offer.sdp().to_owned();

        // Content type, SDP and name are checked before anything is created.
        let r = request(addr, "POST", "/whip/codes", &[("Content-Type", "text/plain")], offer_sdp.as_bytes()).await?;
        ensure!(r.status == 415, "wrong content type: {r:?}");
        let r = post_offer(&server, "/whip/codes", "this is not sdp", &[]).await?;
        ensure!(r.status == 400 && r.body.contains("bad_sdp"), "garbage SDP: {r:?}");
        let no_bundle = offer_sdp
            .lines()
            .filter(|l| !l.starts_with("a=group:BUNDLE"))
            .collect::<Vec<_>>()
            .join("\r\n");
        let r = post_offer(&server, "/whip/codes", &no_bundle, &[]).await?;
        ensure!(r.status == 400 && r.body.contains("BUNDLE"), "no BUNDLE: {r:?}");
        let r = post_offer(&server, "/whip/bad%20name", &offer_sdp, &[]).await?;
        ensure!(r.status == 400 && r.body.contains("bad_stream_name"), "bad name: {r:?}");
        let big = "a".repeat(70 * 1024);
        let r = post_offer(&server, "/whip/codes", &big, &[]).await?;
        ensure!(r.status == 413, "oversized offer: {r:?}");
        let r = request(addr, "PUT", "/whip/codes", &[], b"").await?;
        ensure!(r.status == 405, "PUT: {r:?}");
        let r = request(addr, "GET", "/whip/codes", &[], b"").await?;
        ensure!(r.status == 200 && r.body.is_empty(), "GET endpoint: {r:?}");

        // WHEP of a stream that is not live: 409 with Retry-After.
        let viewer_offer = TestPeer::viewer(VideoCodec::Vp8).await?;
        let r = post_offer(&server, "/whep/codes", viewer_offer.sdp(), &[]).await?;
        ensure!(r.status == 409 && r.header("retry-after").is_some(), "not live: {r:?}");

        // OPTIONS: Accept-Post and CORS, so a page on another origin can publish.
        let r = request(addr, "OPTIONS", "/whip/codes", &[("Origin", "http://elsewhere.example"), ("Access-Control-Request-Method", "POST")], b"").await?;
        ensure!(r.status == 200, "OPTIONS: {r:?}");
        ensure!(r.header("accept-post") == Some(SDP), "{r:?}");
        ensure!(r.header("access-control-allow-origin") == Some("*"), "{r:?}");
        ensure!(r.header("access-control-allow-methods").is_some_and(|m| m.contains("POST") && m.contains("PATCH") && m.contains("DELETE")), "{r:?}");
        ensure!(r.header("access-control-allow-headers").is_some_and(|h| h.contains("Authorization") && h.contains("If-Match")), "{r:?}");

        // A good offer: 201, the answer, an absolute-path Location, an ETag, ICE servers.
        let r = post_offer(&server, "/whip/codes", &offer_sdp, &[("Authorization", "Bearer anything")]).await?;
        ensure!(r.status == 201, "publish: {r:?}");
        ensure!(r.header("content-type") == Some(SDP), "{r:?}");
        ensure!(r.body.contains("a=ice-lite") && r.body.contains("a=candidate:"), "{}", r.body);
        let location = r.header("location").context("Location")?.to_owned();
        ensure!(location.starts_with("/whip/codes/") && location.len() > "/whip/codes/".len() + 16, "{location}");
        let etag = r.header("etag").context("ETag")?.to_owned();
        ensure!(etag.starts_with('"') && etag.ends_with('"'), "{etag}");
        ensure!(r.header("access-control-expose-headers").is_some_and(|h| h.contains("Location") && h.contains("ETag")), "{r:?}");
        let links = r.all("link");
        ensure!(links.len() == 2, "one Link per ICE server: {links:?}");
        ensure!(links.contains(&"<stun:stun.example.net:3478>; rel=\"ice-server\""), "{links:?}");
        ensure!(links.iter().any(|l| l.starts_with("<turn:turn.example.net:3478?transport=udp>; rel=\"ice-server\"") && l.contains("username=\"golive\"") && l.contains("credential=\"s3cret\"") && l.contains("credential-type=\"password\"")), "{links:?}");
        let publisher = offer.connect(&r.body)?;
        publisher.wait_connected(CONNECT_TIMEOUT).await?;

        // The name is taken now.
        let again = TestPeer::publisher().await?;
        let r = post_offer(&server, "/whip/codes", again.sdp(), &[]).await?;
        ensure!(r.status == 409 && r.body.contains("stream_busy"), "busy: {r:?}");
        // A player that cannot take the broadcast's codec.
        let h264 = TestPeer::viewer(VideoCodec::H264).await?;
        let r = post_offer(&server, "/whep/codes", h264.sdp(), &[]).await?;
        ensure!(r.status == 422 && r.body.contains("codec_unsupported"), "codec: {r:?}");

        // PATCH: trickle with conditional requests.
        let frag = "a=ice-ufrag:{U}\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:0\r\na=candidate:1467250027123456789 1 udp 2122260223 127.0.0.1 46154 typ host generation 0\r\na=end-of-candidates\r\n";
        let ufrag = offer_sdp.lines().find_map(|l| l.strip_prefix("a=ice-ufrag:")).context("offer ufrag")?.trim().to_owned();
        let trickle = frag.replace("{U}", &ufrag);
        let patch = |headers: Vec<(&'static str, String)>, body: String, path: String| async move {
            let h: Vec<(&str, &str)> = headers.iter().map(|(n, v)| (*n, v.as_str())).collect();
            request(addr, "PATCH", &path, &h, body.as_bytes()).await
        };
        let r = patch(vec![("Content-Type", "text/plain".into()), ("If-Match", etag.clone())], trickle.clone(), location.clone()).await?;
        ensure!(r.status == 415, "PATCH content type: {r:?}");
        let r = patch(vec![("Content-Type", SDPFRAG.into())], trickle.clone(), location.clone()).await?;
        ensure!(r.status == 428, "PATCH without If-Match: {r:?}");
        let r = patch(vec![("Content-Type", SDPFRAG.into()), ("If-Match", "\"stale\"".into())], trickle.clone(), location.clone()).await?;
        ensure!(r.status == 412, "PATCH stale ETag: {r:?}");
        let r = patch(vec![("Content-Type", SDPFRAG.into()), ("If-Match", etag.clone())], trickle.clone(), location.clone()).await?;
        ensure!(r.status == 204 && r.header("etag").is_none() && r.body.is_empty(), "trickle: {r:?}");
        let r = patch(vec![("Content-Type", SDPFRAG.into()), ("If-Match", etag.clone())], "garbage\r\n".into(), location.clone()).await?;
        ensure!(r.status == 400, "PATCH garbage: {r:?}");
        let restart = frag.replace("{U}", "brandnew").replace("a=ice-ufrag", "a=ice-options:trickle ice2\r\na=ice-ufrag") + "a=ice-pwd:abcdefghijklmnopqrstuvwx\r\n";
        let r = patch(vec![("Content-Type", SDPFRAG.into()), ("If-Match", "*".into())], restart, location.clone()).await?;
        ensure!(r.status == 422 && r.body.contains("ICE restart"), "ICE restart: {r:?}");
        let r = patch(vec![("Content-Type", SDPFRAG.into()), ("If-Match", etag.clone())], trickle.clone(), "/whip/codes/nosuchsession".into()).await?;
        ensure!(r.status == 404, "PATCH unknown: {r:?}");
        let r = request(addr, "GET", &location, &[], b"").await?;
        ensure!(r.status == 204, "GET session: {r:?}");
        ensure!(publisher.state() == rtc::peer_connection::state::RTCPeerConnectionState::Connected, "the failed requests left the broadcast alone");

        // DELETE ends the broadcast; a second DELETE finds nothing.
        let r = request(addr, "DELETE", &location, &[], b"").await?;
        ensure!(r.status == 200, "DELETE: {r:?}");
        let r = request(addr, "DELETE", &location, &[], b"").await?;
        ensure!(r.status == 404, "second DELETE: {r:?}");
        let r = request(addr, "GET", "/api/streams", &[], b"").await?;
        ensure!(r.body.trim() == "[]", "the broadcast is gone: {}", r.body);
        Ok(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn aiortc_whep_player_decodes_an_aiortc_broadcast_on_the_lean_viewer_leg() {
    require_aiortc();
    let server = GoliveServer::start_with_args(&["--viewer-leg", "lean"]).expect("starting golive");
    run_test("aiortc_whep_on_lean", async {
        let base = format!("http://{}", server.http_addr());
        let mut publisher = spawn_aiortc("publish", &format!("{base}/whip/lean"), 60.0);
        wait_live(&server, "lean").await?;
        // aiortc's own ICE agent, DTLS and SRTP against the lean leg; it decodes real VP8.
        let played = finish(
            spawn_aiortc("watch", &format!("{base}/whep/lean"), 4.0),
            "the WHEP player",
        )
        .await?;
        eprintln!("aiortc WHEP player on the lean leg: {played}");
        ensure!(played["video_frames"].as_u64() > Some(30), "{played}");
        ensure!(
            played["width"] == 320 && played["height"] == 240,
            "{played}"
        );
        ensure!(played["delete_status"] == 200, "{played}");
        stop(&mut publisher).await?;
        finish(publisher, "the WHIP broadcaster").await?;
        Ok(())
    })
    .await;
}

/// werift (npm): `tests/browser/werift_viewer.mjs`, run by node from `tests/browser`, where
/// `npm ci` (run by `./test.sh`) installs it.
fn werift_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("browser")
}

/// The node major version, if node runs.
fn node_major() -> Option<u32> {
    let out = std::process::Command::new("node")
        .arg("--version")
        .output()
        .ok()?;
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .trim_start_matches('v')
        .split('.')
        .next()?
        .parse()
        .ok()
}

fn require_werift() -> u32 {
    let major = node_major();
    assert!(
        major.is_some_and(|m| m >= 20),
        "these tests need Node.js 20 or newer (found {major:?}): `sudo apt-get install -y nodejs npm`"
    );
    assert!(
        werift_dir()
            .join("node_modules/werift/package.json")
            .exists(),
        "the npm package werift is not installed: run `./test.sh`, or `npm ci` in {}",
        werift_dir().display()
    );
    major.unwrap_or_default()
}

/// Plays `stream` with a werift viewer (`whep` or `ws` signalling) for `seconds`; returns its
/// report once it has passed its own checks (connected, VP8 frames from a keyframe on, audio,
/// no sequence gap).
async fn werift_watch(
    server: &GoliveServer,
    node_major: u32,
    mode: &str,
    stream: &str,
    seconds: u32,
) -> Result<serde_json::Value> {
    let mut node = tokio::process::Command::new("node");
    // Node 20 has the WebSocket client behind a flag; 22 and later have it by default.
    if node_major < 22 && mode == "ws" {
        node.arg("--experimental-websocket");
    }
    let child = node
        .arg("werift_viewer.mjs")
        .args([
            mode,
            &format!("http://{}", server.http_addr()),
            stream,
            &seconds.to_string(),
        ])
        .current_dir(werift_dir())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .context("node starts")?;
    finish(child, &format!("the werift {mode} viewer")).await
}

/// One broadcast, played by werift over WHEP and over the WebSocket protocol on `leg`: werift's
/// own ICE agent, DTLS (it offers AES-GCM first, then AES-CM) and SRTP against the server.
async fn werift_plays_on(leg: &str) {
    let node_major = require_werift();
    let server = GoliveServer::start_with_args(&["--viewer-leg", leg]).expect("starting golive");
    run_test(&format!("werift_on_{leg}"), async {
        let _publisher = Session::publish(&server, "werift").await?;
        for mode in ["whep", "ws"] {
            let played = werift_watch(&server, node_major, mode, "werift", 3).await?;
            eprintln!("werift {mode} viewer on the {leg} leg: {played}");
            ensure!(played["video"]["frames"].as_u64() > Some(30), "{played}");
            ensure!(played["audio"]["packets"].as_u64() > Some(50), "{played}");
            ensure!(
                played["video"]["ssrcs"] == 1 && played["audio"]["ssrcs"] == 1,
                "one SSRC per track: {played}"
            );
            // 7: AEAD_AES_128_GCM (RFC 7714), golive's only profile without --srtp-legacy.
            ensure!(played["srtp_profile"] == 7, "{played}");
            if mode == "whep" {
                ensure!(played["delete_status"] == 200, "{played}");
            }
        }
        Ok(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn werift_viewers_play_over_whep_and_websocket_on_the_rtc_viewer_leg() {
    werift_plays_on("rtc").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn werift_viewers_play_over_whep_and_websocket_on_the_lean_viewer_leg() {
    werift_plays_on("lean").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn whip_simulcast_reaches_websocket_and_whep_viewers_each_on_its_layer_byte_for_byte() {
    let server = GoliveServer::start().expect("starting golive");
    run_test("whip_simulcast_reaches_websocket_and_whep_viewers", async {
        let offered = TestPeer::simulcast_publisher().await?;
        ensure!(
            offered.sdp().contains("a=simulcast:send q;h;f"),
            "not a simulcast offer:\n{}",
            offered.sdp()
        );
        let r = post_offer(&server, "/whip/layers", offered.sdp(), &[]).await?;
        ensure!(r.status == 201, "WHIP: {} {}", r.status, r.body);
        ensure!(
            r.body.contains("a=simulcast:recv q;h;f"),
            "the answer takes the layers:\n{}",
            r.body
        );
        let publisher = offered.connect(&r.body)?;
        publisher.wait_connected(CONNECT_TIMEOUT).await?;
        wait_live(&server, "layers").await?;

        let offered = TestPeer::viewer(VideoCodec::Vp8).await?;
        let r = post_offer(&server, "/whep/layers", offered.sdp(), &[]).await?;
        ensure!(r.status == 201, "WHEP: {} {}", r.status, r.body);
        let whep = offered.connect(&r.body)?;
        whep.wait_connected(CONNECT_TIMEOUT).await?;
        let mut ws = Session::watch(&server, "layers").await?;
        for viewer in [&whep, &ws.peer] {
            viewer
                .wait_packets(MediaKind::Video, 60, Duration::from_secs(10))
                .await?;
            viewer
                .wait_packets(MediaKind::Audio, 20, Duration::from_secs(10))
                .await?;
        }
        // Each viewer's video, on whichever layer its estimate has it now, is that layer's
        // packets byte for byte and in order; the audio is the broadcaster's one audio.
        // A viewer whose estimate has just moved it up has only begun its new layer's run:
        // the check is taken again until that run is long enough, for up to 5 s.
        for (name, viewer) in [("WHEP", &whep), ("WebSocket", &ws.peer)] {
            let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
            let (sent, got, layer) = loop {
                let got = viewer.snapshot();
                let sent = publisher.snapshot();
                ensure!(
                    sent.errors.is_empty(),
                    "publisher errors: {:?}",
                    sent.errors
                );
                match last_layer_forwarded_faithfully(&sent, &got, 10) {
                    Ok(layer) => break (sent, got, layer),
                    Err(e) if tokio::time::Instant::now() >= deadline => {
                        return Err(e.context(format!("the {name} viewer")));
                    }
                    Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
                }
            };
            forwarded_faithfully(&sent, &got, MediaKind::Audio, 10)
                .with_context(|| format!("the {name} viewer's audio"))?;
            eprintln!("{name} viewer: on layer {layer}");
        }

        // A preference moves the WebSocket viewer: down to low, then back up to high (its
        // estimate on loopback carries the top layer), each switch told with a `quality`
        // message (the first move's, to the estimate's layer, is read past) and each layer's
        // packets arriving byte for byte.
        for (prefer, layer, index) in [
            (QualityPreference::Low, QualityLayer::Low, 0),
            (QualityPreference::High, QualityLayer::High, 2),
        ] {
            ws.signal.send(&ClientMessage::Quality { prefer }).await?;
            let moved = ws
                .signal
                .recv_until(
                    Duration::from_secs(20),
                    |m| matches!(m, ServerMessage::Quality { layer: l, .. } if *l == layer),
                )
                .await
                .with_context(|| format!("no move to {layer:?} after prefer {prefer:?}"))?;
            if prefer == QualityPreference::Low {
                ensure!(
                    moved
                        == ServerMessage::Quality {
                            layer,
                            reason: QualityReason::Preference
                        },
                    "{moved:?}"
                );
            }
            wait_on_layer(&publisher, &ws.peer, index, 30, Duration::from_secs(10))
                .await
                .with_context(|| format!("the WebSocket viewer after prefer {prefer:?}"))?;
        }
        // The WHEP viewer was never moved by the other's preference and still gets its layer.
        let got = whep.snapshot();
        let sent = publisher.snapshot();
        last_layer_forwarded_faithfully(&sent, &got, 10).context("the WHEP viewer at the end")?;
        Ok(())
    })
    .await;
}
