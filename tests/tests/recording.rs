//! Recordings end to end: the real `golive` with `--record-dir`, a synthetic VP8 + Opus
//! broadcaster over WebRTC, and `ffprobe` reading what the server wrote.
//!
//! Needs `ffprobe` (Debian: `apt-get install -y ffmpeg`); each test says so when it is missing.

use anyhow::{Context, Result, bail, ensure};
use golive_e2e::http::request;
use golive_e2e::{GoliveServer, MediaKind, Session, init_logging};
use golive_proto::{ClientMessage, RecordingStopReason, ServerMessage};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// A recording test runs a 20-second broadcast, so it gets longer than the usual limit.
const RECORDING_TEST_TIMEOUT: Duration = Duration::from_secs(90);
const BROADCAST: Duration = Duration::from_secs(20);

async fn run<F: std::future::Future<Output = Result<()>>>(name: &str, body: F) {
    init_logging();
    require_ffprobe();
    match tokio::time::timeout(RECORDING_TEST_TIMEOUT, body).await {
        Err(_) => panic!("{name}: did not finish within {RECORDING_TEST_TIMEOUT:?}"),
        Ok(Err(e)) => panic!("{name}: {e:?}"),
        Ok(Ok(())) => {}
    }
}

fn require_ffprobe() {
    if Command::new("ffprobe").arg("-version").output().is_err() {
        panic!(
            "these tests read recordings with ffprobe: install it with `apt-get install -y ffmpeg`"
        );
    }
}

/// A fresh directory for one test's recordings.
fn record_dir(test: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("golive-rec-{test}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("a temporary directory");
    dir
}

fn start(dir: &Path, extra: &[&str]) -> Result<GoliveServer> {
    let mut args = vec!["--record-dir", dir.to_str().expect("UTF-8 path")];
    args.extend_from_slice(extra);
    GoliveServer::start_with_args(&args)
}

/// Reads the broadcaster's socket until the server says which replay it records.
async fn replay_id(publisher: &mut Session) -> Result<String> {
    match publisher
        .signal
        .recv_until(Duration::from_secs(5), |m| {
            matches!(
                m,
                ServerMessage::Recording { .. } | ServerMessage::RecordingStopped { .. }
            )
        })
        .await?
    {
        ServerMessage::Recording { replay } => Ok(replay),
        other => bail!("expected a recording notice, got {other:?}"),
    }
}

async fn get_json(server: &GoliveServer, path: &str) -> Result<serde_json::Value> {
    let r = request(server.http_addr(), "GET", path, &[], b"").await?;
    ensure!(r.status == 200, "GET {path}: {} {}", r.status, r.body);
    serde_json::from_str(&r.body).with_context(|| format!("GET {path}: {}", r.body))
}

/// Waits until the replay's metadata says it ended.
async fn wait_ended(server: &GoliveServer, id: &str) -> Result<serde_json::Value> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let m = get_json(server, &format!("/api/replays/{id}")).await?;
        if m["ended_unix_ms"].is_u64() {
            return Ok(m);
        }
        ensure!(Instant::now() < deadline, "replay {id} never ended: {m}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn ffprobe(args: &[&str], file: &Path) -> Result<String> {
    let out = Command::new("ffprobe")
        .args(["-v", "error"])
        .args(args)
        .arg(file)
        .output()
        .context("running ffprobe")?;
    ensure!(
        out.status.success() && out.stderr.is_empty(),
        "ffprobe {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Per stream index, the packets' presentation times in file order.
fn packet_times(file: &Path) -> Result<Vec<Vec<f64>>> {
    let csv = ffprobe(
        &[
            "-show_entries",
            "packet=stream_index,pts_time",
            "-of",
            "csv=p=0",
        ],
        file,
    )?;
    let mut streams: Vec<Vec<f64>> = Vec::new();
    for line in csv.lines() {
        let mut parts = line.split(',');
        let (Some(i), Some(t)) = (parts.next(), parts.next()) else {
            continue;
        };
        let i: usize = i.trim().parse()?;
        let t: f64 = t.trim().parse()?;
        if streams.len() <= i {
            streams.resize(i + 1, Vec::new());
        }
        streams[i].push(t);
    }
    Ok(streams)
}

/// Reads an EBML variable-size integer at `at`: (value without the length marker, length).
fn vint(b: &[u8], at: usize) -> Option<(u64, usize)> {
    let first = *b.get(at)?;
    let len = first.leading_zeros() as usize + 1;
    if len > 8 {
        return None;
    }
    let mut v = u64::from(first) & (0xff >> len);
    for i in 1..len {
        v = (v << 8) | u64::from(*b.get(at + i)?);
    }
    Some((v, len))
}

/// Reads an element id at `at` (ids keep their marker bits): (id, length).
fn element_id(b: &[u8], at: usize) -> Option<(u32, usize)> {
    let len = b.get(at)?.leading_zeros() as usize + 1;
    let id = b
        .get(at..at + len)?
        .iter()
        .fold(0u32, |v, &x| (v << 8) | u32::from(x));
    Some((id, len))
}

/// The number of CuePoints in the file's Cues (the keyframe index), walking the Segment's
/// top-level elements as a player does.
fn cue_points(b: &[u8]) -> Option<usize> {
    const SEGMENT: u32 = 0x1853_8067;
    const CUES: u32 = 0x1c53_bb6b;
    const CUE_POINT: u32 = 0xbb;
    let (_, l) = element_id(b, 0)?;
    let (size, sl) = vint(b, l)?;
    let mut at = l + sl + size as usize;
    let (id, l) = element_id(b, at)?;
    if id != SEGMENT {
        return None;
    }
    let (_, sl) = vint(b, at + l)?;
    at += l + sl;
    while at < b.len() {
        let (id, l) = element_id(b, at)?;
        let (size, sl) = vint(b, at + l)?;
        let body = at + l + sl;
        if id == CUES {
            let mut n = 0;
            let mut c = body;
            while c < body + size as usize {
                let (cid, cl) = element_id(b, c)?;
                let (csize, csl) = vint(b, c + cl)?;
                n += usize::from(cid == CUE_POINT);
                c += cl + csl + csize as usize;
            }
            return Some(n);
        }
        at = body + size as usize;
    }
    Some(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_20_second_vp8_opus_broadcast_becomes_a_webm_with_its_chat() {
    run(
        "a_20_second_vp8_opus_broadcast_becomes_a_webm_with_its_chat",
        async {
            let dir = record_dir("20s");
            let server = start(&dir, &[])?;
            let mut publisher = Session::publish(&server, "rec20").await?;
            let id = replay_id(&mut publisher).await?;
            let started = Instant::now();
            // Halfway: a chat message that stays, and one the broadcaster takes down.
            tokio::time::sleep(BROADCAST / 2).await;
            let chat_at = started.elapsed();
            for text in ["halfway there", "remove me"] {
                publisher
                    .signal
                    .send(&ClientMessage::Chat { text: text.into() })
                    .await?;
            }
            let removed = match publisher
                .signal
                .recv_until(
                    Duration::from_secs(5),
                    |m| matches!(m, ServerMessage::Chat { text, .. } if text == "remove me"),
                )
                .await?
            {
                ServerMessage::Chat { id, .. } => id,
                _ => unreachable!(),
            };
            publisher
                .signal
                .send(&ClientMessage::Remove { id: removed })
                .await?;
            publisher.signal.send(&ClientMessage::Heart).await?;
            tokio::time::sleep(BROADCAST.saturating_sub(started.elapsed())).await;
            let sent = publisher.peer.snapshot().sent;
            let span = sent.last().context("sent")?.at - sent.first().context("sent")?.at;
            publisher.signal.send(&ClientMessage::Leave).await?;
            let meta = wait_ended(&server, &id).await?;
            ensure!(meta["complete"] == true, "ended cleanly: {meta}");
            let file = dir.join(format!("{id}.webm"));

            let codecs = ffprobe(
                &["-show_entries", "stream=codec_name", "-of", "csv=p=0"],
                &file,
            )?;
            let codecs: Vec<&str> = codecs.lines().map(str::trim).collect();
            ensure!(codecs == ["vp8", "opus"], "codecs as sent: {codecs:?}");

            let duration: f64 = ffprobe(
                &["-show_entries", "format=duration", "-of", "csv=p=0"],
                &file,
            )?
            .trim()
            .parse()?;
            let want = BROADCAST.as_secs_f64();
            eprintln!("recorded {duration:.3} s of a {want} s broadcast (media sent for {span:?})");
            ensure!(
                (duration - want).abs() <= want * 0.02,
                "duration {duration:.3} s, want {want} s ± 2 % (media sent for {span:?})"
            );

            let times = packet_times(&file)?;
            ensure!(times.len() == 2, "two streams of packets");
            for (i, t) in times.iter().enumerate() {
                ensure!(
                    t.windows(2).all(|w| w[1] >= w[0]),
                    "stream {i}: timestamps go backwards"
                );
            }
            // 15 fps video, 50 Opus packets a second: nearly all of them are in the file.
            let secs = span.as_secs_f64();
            ensure!(
                times[0].len() as f64 >= secs * 15.0 * 0.95,
                "{} video frames for {secs:.1} s",
                times[0].len()
            );
            ensure!(
                times[1].len() as f64 >= secs * 50.0 * 0.95,
                "{} audio frames for {secs:.1} s",
                times[1].len()
            );

            // A keyframe every second: a cue for each.
            let bytes = std::fs::read(&file)?;
            let cues = cue_points(&bytes).context("the file parses as EBML")?;
            ensure!(cues >= 15, "{cues} cue points");

            // The timeline: the chat that stayed, at its moment; never the removed one.
            let timeline = get_json(&server, &format!("/api/replays/{id}/timeline")).await?;
            let events = timeline.as_array().context("an array")?;
            let chats: Vec<_> = events
                .iter()
                .filter(|e| e["event"]["type"] == "chat")
                .collect();
            ensure!(chats.len() == 1, "one chat message replays: {timeline}");
            ensure!(chats[0]["event"]["text"] == "halfway there");
            let t_ms = chats[0]["t_ms"].as_u64().context("t_ms")? as f64;
            ensure!(
                (t_ms - chat_at.as_millis() as f64).abs() < 1500.0,
                "the chat sits at {t_ms} ms, sent at {chat_at:?}"
            );
            ensure!(
                events.iter().any(|e| e["event"]["type"] == "hearts"),
                "the heart is on the timeline: {timeline}"
            );

            // Listed, and the media served with ranges.
            let list = get_json(&server, "/api/replays?stream=rec20").await?;
            ensure!(list[0]["id"] == id.as_str(), "listed: {list}");
            ensure!(list[0]["url"] == format!("/replay/{id}"));
            let r = request(
                server.http_addr(),
                "GET",
                &format!("/api/replays/{id}/media"),
                &[("Range", "bytes=100-199")],
                b"",
            )
            .await?;
            ensure!(r.status == 206, "range request: {}", r.status);
            ensure!(r.header("content-length") == Some("100"));
            ensure!(
                r.header("content-range")
                    == Some(&format!("bytes 100-199/{}", bytes.len()) as &str),
                "{:?}",
                r.header("content-range")
            );
            let metrics = request(server.http_addr(), "GET", "/metrics", &[], b"").await?;
            ensure!(
                metrics.body.contains("golive_replays_served_total 1"),
                "{}",
                metrics.body
            );
            ensure!(metrics.body.contains("golive_recordings_active 0"));
            let _ = std::fs::remove_dir_all(&dir);
            Ok(())
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_killed_mid_broadcast_leaves_a_file_that_plays_to_near_the_kill() {
    run("killed", async {
        let dir = record_dir("killed");
        let server = start(&dir, &[])?;
        let mut publisher = Session::publish(&server, "killed").await?;
        let id = replay_id(&mut publisher).await?;
        publisher
            .peer
            .wait_packets(MediaKind::Video, 1, Duration::from_secs(5))
            .await?;
        let started = Instant::now();
        tokio::time::sleep(Duration::from_secs(10)).await;
        // Dropping the server SIGKILLs it: no drain, no chance to finish the file.
        let lived = started.elapsed();
        drop(server);
        let file = dir.join(format!("{id}.webm"));
        let times = packet_times(&file)?;
        let last = times.iter().flatten().fold(0.0f64, |a, &b| a.max(b));
        ensure!(
            last >= lived.as_secs_f64() - 5.0,
            "the file plays to {last:.1} s; the server was killed {lived:?} in"
        );
        // Started again, the server lists it as ended (interrupted).
        let server = start(&dir, &[])?;
        let meta = get_json(&server, &format!("/api/replays/{id}")).await?;
        ensure!(meta["ended_unix_ms"].is_u64(), "{meta}");
        ensure!(meta["stopped"] == "interrupted", "{meta}");
        let _ = std::fs::remove_dir_all(&dir);
        Ok(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replays_past_the_retention_are_deleted_and_newer_ones_kept() {
    run("retention", async {
        let dir = record_dir("retention");
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .as_millis() as u64;
        let hour_ms = 3_600_000;
        for (id, ended_ago_h) in [("old-1", 25), ("fresh-1", 1)] {
            let ended = now_ms - ended_ago_h * hour_ms;
            let meta = serde_json::json!({
                "id": id, "stream": id, "title": null, "started_unix_ms": ended - 60_000,
                "ended_unix_ms": ended, "duration_ms": 60_000, "bytes": 3, "video": "VP8",
                "audio": "opus", "complete": true, "stopped": null,
            });
            std::fs::write(dir.join(format!("{id}.json")), meta.to_string())?;
            std::fs::write(dir.join(format!("{id}.webm")), b"abc")?;
            std::fs::write(dir.join(format!("{id}.timeline.jsonl")), b"")?;
        }
        let server = start(&dir, &["--record-retention-hours", "24"])?;
        let deadline = Instant::now() + Duration::from_secs(10);
        while dir.join("old-1.webm").exists() {
            ensure!(
                Instant::now() < deadline,
                "the expired replay is still there"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        ensure!(!dir.join("old-1.json").exists() && !dir.join("old-1.timeline.jsonl").exists());
        ensure!(
            dir.join("fresh-1.webm").exists(),
            "the fresh replay is kept"
        );
        let list = get_json(&server, "/api/replays").await?;
        let ids: Vec<&str> = list
            .as_array()
            .context("array")?
            .iter()
            .filter_map(|m| m["id"].as_str())
            .collect();
        ensure!(ids == ["fresh-1"], "{ids:?}");
        let _ = std::fs::remove_dir_all(&dir);
        Ok(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_the_disk_floor_the_broadcast_goes_on_unrecorded_and_the_broadcaster_is_told() {
    run("disk_floor", async {
        let dir = record_dir("floor");
        // A floor of a petabyte: no disk here has that much free.
        let server = start(&dir, &["--record-min-free-mb", "1000000000"])?;
        let mut publisher = Session::publish(&server, "floor").await?;
        match publisher
            .signal
            .recv_until(Duration::from_secs(5), |m| {
                matches!(m, ServerMessage::RecordingStopped { .. })
            })
            .await?
        {
            ServerMessage::RecordingStopped { reason, .. } => {
                ensure!(reason == RecordingStopReason::DiskFull, "{reason:?}")
            }
            _ => unreachable!(),
        }
        let viewer = Session::watch(&server, "floor").await?;
        viewer
            .peer
            .wait_packets(MediaKind::Video, 20, Duration::from_secs(10))
            .await
            .context("the broadcast goes on")?;
        let files = std::fs::read_dir(&dir)?.count();
        ensure!(files == 0, "{files} files written under the floor");
        let metrics = request(server.http_addr(), "GET", "/metrics", &[], b"").await?;
        ensure!(
            metrics
                .body
                .contains("golive_recordings_stopped_disk_full_total 1")
        );
        let _ = std::fs::remove_dir_all(&dir);
        Ok(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broadcast_that_says_record_false_is_not_recorded() {
    run("record_false", async {
        let dir = record_dir("optout");
        let server = start(&dir, &[])?;
        let mut signal = golive_e2e::SignalClient::connect(&server.ws_url()).await?;
        let offered = golive_e2e::TestPeer::publisher().await?;
        signal
            .send(&ClientMessage::Publish {
                stream: "optout".into(),
                sdp: offered.sdp().to_owned(),
                key: None,
                title: None,
                name: None,
                record: Some(false),
            })
            .await?;
        let answer = signal.expect_answer().await?;
        let peer = offered.connect(&answer)?;
        peer.wait_connected(golive_e2e::CONNECT_TIMEOUT).await?;
        peer.wait_packets(MediaKind::Video, 30, Duration::from_secs(10))
            .await?;
        // Nothing about recording is said, and nothing is written.
        if let Ok(m) = signal.recv_timeout(Duration::from_millis(500)).await {
            ensure!(
                !matches!(m, ServerMessage::Recording { .. }),
                "recorded anyway: {m:?}"
            );
        }
        ensure!(std::fs::read_dir(&dir)?.count() == 0);
        let _ = std::fs::remove_dir_all(&dir);
        Ok(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_mp4_replay_is_served_as_video_mp4_with_ranges_and_listed_with_its_container() {
    run("mp4_served", async {
        let dir = record_dir("mp4served");
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .as_millis() as u64;
        // One replay per container, as the recorder leaves them (an H.264 one says "mp4").
        for (id, video, container, media) in [
            ("h264-1", "H264", Some("mp4"), b"0123456789".as_slice()),
            ("vp8-1", "VP8", None, b"abcdefghij".as_slice()),
        ] {
            let mut meta = serde_json::json!({
                "id": id, "stream": id, "title": null, "started_unix_ms": now_ms - 60_000,
                "ended_unix_ms": now_ms, "duration_ms": 60_000, "bytes": 10, "video": video,
                "audio": "opus", "complete": true, "stopped": null,
            });
            if let Some(c) = container {
                meta["container"] = c.into();
            }
            let ext = container.unwrap_or("webm");
            std::fs::write(dir.join(format!("{id}.json")), meta.to_string())?;
            std::fs::write(dir.join(format!("{id}.{ext}")), media)?;
            std::fs::write(dir.join(format!("{id}.timeline.jsonl")), b"")?;
        }
        let server = start(&dir, &[])?;
        let addr = server.http_addr();
        let r = request(addr, "GET", "/api/replays/h264-1/media", &[], b"").await?;
        ensure!(r.status == 200 && r.body == "0123456789", "{r:?}");
        ensure!(r.header("content-type") == Some("video/mp4"), "{r:?}");
        let r = request(
            addr,
            "GET",
            "/api/replays/h264-1/media",
            &[("Range", "bytes=4-")],
            b"",
        )
        .await?;
        ensure!(r.status == 206 && r.body == "456789", "{r:?}");
        ensure!(r.header("content-range") == Some("bytes 4-9/10"), "{r:?}");
        let r = request(addr, "GET", "/api/replays/vp8-1/media", &[], b"").await?;
        ensure!(r.header("content-type") == Some("video/webm"), "{r:?}");

        let list = get_json(&server, "/api/replays").await?;
        let mut containers: Vec<(String, String)> = list
            .as_array()
            .context("array")?
            .iter()
            .map(|m| (m["id"].to_string(), m["container"].to_string()))
            .collect();
        containers.sort();
        ensure!(
            containers
                == [
                    ("\"h264-1\"".into(), "\"mp4\"".into()),
                    ("\"vp8-1\"".into(), "\"webm\"".into())
                ],
            "{containers:?}"
        );
        let _ = std::fs::remove_dir_all(&dir);
        Ok(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_whip_broadcast_with_record_false_is_not_recorded_and_one_without_is() {
    run("whip_record_false", async {
        let dir = record_dir("whipoptout");
        let server = start(&dir, &[])?;
        let addr = server.http_addr();
        let headers = [("Content-Type", "application/sdp")];
        let offered = golive_e2e::TestPeer::publisher().await?;
        let r = request(
            addr,
            "POST",
            "/whip/optout?record=false",
            &headers,
            offered.sdp().as_bytes(),
        )
        .await?;
        ensure!(r.status == 201, "{r:?}");
        let peer = offered.connect(&r.body)?;
        peer.wait_connected(golive_e2e::CONNECT_TIMEOUT).await?;
        peer.wait_packets(MediaKind::Video, 30, Duration::from_secs(10))
            .await?;
        ensure!(
            std::fs::read_dir(&dir)?.count() == 0,
            "nothing is written for ?record=false"
        );
        // The same broadcaster without the parameter is recorded: the test can tell.
        let offered = golive_e2e::TestPeer::publisher().await?;
        let r = request(
            addr,
            "POST",
            "/whip/optin",
            &headers,
            offered.sdp().as_bytes(),
        )
        .await?;
        ensure!(r.status == 201, "{r:?}");
        let peer2 = offered.connect(&r.body)?;
        peer2.wait_connected(golive_e2e::CONNECT_TIMEOUT).await?;
        peer2
            .wait_packets(MediaKind::Video, 30, Duration::from_secs(10))
            .await?;
        let list = get_json(&server, "/api/replays").await?;
        let streams: Vec<&str> = list
            .as_array()
            .context("array")?
            .iter()
            .filter_map(|m| m["stream"].as_str())
            .collect();
        ensure!(streams == ["optin"], "{streams:?}");
        drop((peer, peer2));
        let _ = std::fs::remove_dir_all(&dir);
        Ok(())
    })
    .await;
}
