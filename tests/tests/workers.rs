//! Supervised media workers: a worker that panics (made to, through the debug-only
//! `--test-worker-panic` hook, by a datagram as a crafted one would) costs its own peers only.
//! They are told, the worker starts again empty on the same port, `/metrics` counts the restart,
//! and everyone on the other worker keeps receiving media throughout.

use anyhow::{Context, Result, bail, ensure};
use golive_e2e::http::request;
use golive_e2e::media::MediaKind;
use golive_e2e::verify::first_video_starts_keyframe;
use golive_e2e::{
    CONNECT_TIMEOUT, GoliveServer, OfferedPeer, SignalClient, TestPeer, VideoCodec,
    publish_message, run_test, watch_message,
};
use golive_proto::{ClientMessage, EndReason, ErrorCode, ServerMessage};
use std::net::SocketAddr;
use std::time::Duration;

/// The payload that makes a worker panic (the server is started with it).
const PANIC_TOKEN: &str = "golive-e2e-make-this-worker-panic";
/// How long a notice (error, ended, reconnecting) or fresh media may take to arrive.
const NOTICE_TIMEOUT: Duration = Duration::from_secs(8);
/// Peers to try before giving up on landing one on a given worker (they are spread in turn).
const MAX_PLACEMENT_TRIES: usize = 6;

/// The hook is compiled into debug builds only, and a test built in release runs the release
/// server next to it, which refuses the flag.
fn hook_available() -> bool {
    if !cfg!(debug_assertions) {
        eprintln!("skipped: --test-worker-panic exists only in debug builds of golive");
    }
    cfg!(debug_assertions)
}

fn start_server(extra: &[&str]) -> GoliveServer {
    let mut args = vec!["--test-worker-panic", PANIC_TOKEN];
    args.extend_from_slice(extra);
    GoliveServer::start_with_args(&args).expect("starting golive")
}

/// A signalling socket, its connected peer, and the UDP port of the worker serving it.
struct Joined {
    signal: SignalClient,
    peer: TestPeer,
    worker_port: u16,
}

/// The port of the host candidate in an answer: the media port of the worker that answered.
fn worker_port(answer: &str) -> Result<u16> {
    answer
        .lines()
        .filter_map(|l| l.trim().strip_prefix("a=candidate:"))
        .find_map(|c| {
            let f: Vec<&str> = c.split_whitespace().collect();
            (f.get(2)?.eq_ignore_ascii_case("udp")).then(|| f.get(5)?.parse().ok())?
        })
        .with_context(|| format!("no UDP candidate in the answer:\n{answer}"))
}

async fn join(server: &GoliveServer, offered: OfferedPeer, msg: ClientMessage) -> Result<Joined> {
    let mut signal = SignalClient::connect(&server.ws_url()).await?;
    signal.send(&msg).await?;
    let answer = signal.expect_answer().await?;
    let worker_port = worker_port(&answer)?;
    let peer = offered.connect(&answer)?;
    peer.wait_connected(CONNECT_TIMEOUT).await?;
    Ok(Joined {
        signal,
        peer,
        worker_port,
    })
}

async fn publish(server: &GoliveServer, stream: &str) -> Result<Joined> {
    let offered = TestPeer::publisher().await?;
    let msg = publish_message(stream, offered.sdp());
    join(server, offered, msg).await
}

async fn watch(server: &GoliveServer, stream: &str) -> Result<Joined> {
    let offered = TestPeer::viewer(VideoCodec::Vp8).await?;
    let msg = watch_message(stream, offered.sdp());
    join(server, offered, msg).await
}

/// Viewers join until one lands on a worker `wanted` accepts; the others stay joined.
async fn watch_on(
    server: &GoliveServer,
    stream: &str,
    wanted: impl Fn(u16) -> bool,
    others: &mut Vec<Joined>,
) -> Result<Joined> {
    for _ in 0..MAX_PLACEMENT_TRIES {
        let v = watch(server, stream).await?;
        if wanted(v.worker_port) {
            return Ok(v);
        }
        others.push(v);
    }
    bail!("no viewer landed on the wanted worker in {MAX_PLACEMENT_TRIES} tries")
}

/// Makes the worker on `port` panic, as a datagram that hit a bug would.
async fn make_worker_panic(port: u16) -> Result<()> {
    let s = tokio::net::UdpSocket::bind("127.0.0.1:0").await?;
    s.send_to(PANIC_TOKEN.as_bytes(), ("127.0.0.1", port))
        .await?;
    Ok(())
}

async fn get(addr: SocketAddr, path: &str) -> Result<(u16, String)> {
    let r = request(addr, "GET", path, &[], b"").await?;
    Ok((r.status, r.body))
}

/// The value of an unlabelled metric.
async fn metric(addr: SocketAddr, name: &str) -> Result<f64> {
    let (_, body) = get(addr, "/metrics").await?;
    body.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .with_context(|| format!("no {name} in /metrics"))
}

/// Waits until `/healthz` answers 200 again (the worker is back) and returns its JSON.
async fn wait_healthy(addr: SocketAddr) -> Result<serde_json::Value> {
    let deadline = tokio::time::Instant::now() + NOTICE_TIMEOUT;
    loop {
        let (status, body) = get(addr, "/healthz").await?;
        if status == 200 {
            return Ok(serde_json::from_str(&body)?);
        }
        ensure!(
            tokio::time::Instant::now() < deadline,
            "/healthz still answers {status}: {body}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits for `error` `internal` and then `ended` `connection_lost`, in that order.
async fn expect_worker_failure_notice(signal: &mut SignalClient) -> Result<()> {
    let is_notice =
        |m: &ServerMessage| matches!(m, ServerMessage::Error { .. } | ServerMessage::Ended { .. });
    match signal.recv_until(NOTICE_TIMEOUT, is_notice).await? {
        ServerMessage::Error {
            code: ErrorCode::Internal,
            ..
        } => {}
        other => bail!("expected error internal first, got {other:?}"),
    }
    match signal.recv_until(NOTICE_TIMEOUT, is_notice).await? {
        ServerMessage::Ended {
            reason: EndReason::ConnectionLost,
        } => Ok(()),
        other => bail!("expected ended connection_lost after the error, got {other:?}"),
    }
}

fn video_received(j: &Joined) -> usize {
    j.peer.snapshot().received_of(MediaKind::Video).len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_panicking_worker_tells_its_peers_restarts_empty_and_spares_the_other_worker() {
    if !hook_available() {
        return;
    }
    let server = start_server(&[]);
    let addr = server.http_addr();
    run_test(
        "a_panicking_worker_tells_its_peers_restarts_empty_and_spares_the_other_worker",
        async {
            let publisher = publish(&server, "show").await?;
            let home = publisher.worker_port;
            let mut extra = Vec::new();
            // One viewer beside the broadcaster, one on the worker that will panic.
            let spared = watch_on(&server, "show", |p| p == home, &mut extra).await?;
            let mut victim = watch_on(&server, "show", |p| p != home, &mut extra).await?;
            let doomed = victim.worker_port;
            // A WHEP player on the same worker: its resource must go with it.
            let mut whep = None;
            for _ in 0..MAX_PLACEMENT_TRIES {
                let offered = TestPeer::viewer(VideoCodec::Vp8).await?;
                let r = request(
                    addr,
                    "POST",
                    "/whep/show",
                    &[("Content-Type", "application/sdp")],
                    offered.sdp().as_bytes(),
                )
                .await?;
                ensure!(r.status == 201, "WHEP POST: {} {}", r.status, r.body);
                if worker_port(&r.body)? == doomed {
                    whep = Some(r.header("location").context("Location")?.to_owned());
                    break;
                }
            }
            let whep = whep.context("no WHEP player landed on the worker to fail")?;
            spared
                .peer
                .wait_packets(MediaKind::Video, 10, NOTICE_TIMEOUT)
                .await?;
            victim
                .peer
                .wait_packets(MediaKind::Video, 10, NOTICE_TIMEOUT)
                .await?;
            ensure!(metric(addr, "golive_worker_restarts_total").await? == 0.0);

            make_worker_panic(doomed).await?;

            // The viewer on the failed worker is told, and its WHEP neighbour's resource goes.
            expect_worker_failure_notice(&mut victim.signal).await?;
            let deadline = tokio::time::Instant::now() + NOTICE_TIMEOUT;
            loop {
                // A stale ETag: 412 while the resource exists, 404 once it is gone.
                let r = request(
                    addr,
                    "PATCH",
                    &whep,
                    &[
                        ("Content-Type", "application/trickle-ice-sdpfrag"),
                        ("If-Match", "\"stale\""),
                    ],
                    b"",
                )
                .await?;
                if r.status == 404 {
                    break;
                }
                ensure!(r.status == 412, "PATCH {whep}: {} {}", r.status, r.body);
                ensure!(
                    tokio::time::Instant::now() < deadline,
                    "the WHEP resource outlived its worker"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }

            // The broadcaster and the viewer on the other worker never noticed.
            let before = video_received(&spared);
            spared
                .peer
                .wait_packets(MediaKind::Video, before + 30, NOTICE_TIMEOUT)
                .await
                .context("the viewer on the other worker stopped receiving")?;
            ensure!(publisher.peer.snapshot().errors.is_empty());

            // Restarted, counted, reported; and a new viewer on it plays from a keyframe.
            let health = wait_healthy(addr).await?;
            let workers = health["workers"].as_array().context("workers")?;
            ensure!(workers.iter().all(|w| w["state"] == "alive"), "{health}");
            ensure!(
                workers
                    .iter()
                    .map(|w| w["restarts"].as_u64().unwrap_or(0))
                    .sum::<u64>()
                    == 1,
                "{health}"
            );
            ensure!(metric(addr, "golive_worker_restarts_total").await? == 1.0);
            let fresh = watch_on(&server, "show", |p| p == doomed, &mut extra).await?;
            fresh
                .peer
                .wait_packets(MediaKind::Video, 10, NOTICE_TIMEOUT)
                .await
                .context("a new viewer on the restarted worker")?;
            first_video_starts_keyframe(&fresh.peer.snapshot())?;
            ensure!(
                server.logs().contains("media worker panicked"),
                "the panic is not in the log"
            );
            spared.signal.close().await;
            Ok(())
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_broadcaster_whose_worker_panics_is_told_and_its_viewers_wait_for_its_return() {
    if !hook_available() {
        return;
    }
    let server = start_server(&["--reconnect-grace-secs", "20"]);
    run_test(
        "a_broadcaster_whose_worker_panics_is_told_and_its_viewers_wait_for_its_return",
        async {
            let mut publisher = publish(&server, "show").await?;
            let home = publisher.worker_port;
            let mut extra = Vec::new();
            let mut viewer = watch_on(&server, "show", |p| p != home, &mut extra).await?;
            viewer
                .peer
                .wait_packets(MediaKind::Video, 10, NOTICE_TIMEOUT)
                .await?;

            make_worker_panic(home).await?;

            expect_worker_failure_notice(&mut publisher.signal).await?;
            // As for any lost broadcaster: its viewers wait, and resume when it is back.
            viewer
                .signal
                .recv_until(NOTICE_TIMEOUT, |m| {
                    matches!(m, ServerMessage::Reconnecting { .. })
                })
                .await?;
            let back = publish(&server, "show").await?;
            viewer
                .signal
                .recv_until(NOTICE_TIMEOUT, |m| matches!(m, ServerMessage::Resumed))
                .await?;
            let before = video_received(&viewer);
            viewer
                .peer
                .wait_packets(MediaKind::Video, before + 30, NOTICE_TIMEOUT)
                .await
                .context("media after the broadcaster came back")?;
            drop(back);
            Ok(())
        },
    )
    .await;
}
