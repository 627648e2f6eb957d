//! Attacks on the HTTP front door, each against the real binary, each with a healthy client
//! that keeps being served meanwhile: a slowloris from one address (held to the per-address
//! connection cap, then cut by the header timeout), a flood from many addresses over the global
//! cap under a low open-files limit, and a reader of the server's log looking for capabilities.
//!
//! Attackers connect from 127.0.0.2 and up (all of 127.0.0.0/8 is loopback on Linux), the
//! healthy client from 127.0.0.1, so the per-address caps can tell them apart.

mod common;

use common::*;
use golive_proto::ErrorCode;
use std::net::{IpAddr, SocketAddr};
use std::process::Command;
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpSocket, TcpStream};

/// A request head that is never finished.
const PARTIAL_HEAD: &[u8] = b"GET /healthz HTTP/1.1\r\nHost: x\r\n";
/// Slow clients send one byte of a header this often.
const DRIP: Duration = Duration::from_millis(300);

/// A TCP connection to the server from `from` (a loopback address other than 127.0.0.1).
async fn connect_from(from: IpAddr, server: &Server) -> TcpStream {
    let server: SocketAddr = server.addr;
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(SocketAddr::new(from, 0)).unwrap();
    socket.connect(server).await.expect("TCP connect")
}

/// Opens `n` connections from `from`, each starting a request head it never finishes.
async fn slow_clients(from: IpAddr, server: &Server, n: usize) -> Vec<TcpStream> {
    let mut all = Vec::with_capacity(n);
    for _ in 0..n {
        let mut c = connect_from(from, server).await;
        // A connection the server already closed may refuse the write: that is what we test.
        let _ = c.write_all(PARTIAL_HEAD).await;
        all.push(c);
    }
    all
}

/// Whether the server has closed `c` (everything it sent, a 503 or a 408, is read and dropped).
fn closed_by_server(c: &TcpStream) -> bool {
    let mut buf = [0u8; 512];
    loop {
        match c.try_read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return false,
            Err(_) => return true,
        }
    }
}

/// Waits until at least `want` of `conns` are closed by the server; returns how many are.
async fn wait_closed(conns: &[TcpStream], want: usize) -> usize {
    let deadline = tokio::time::Instant::now() + 3 * STEP;
    loop {
        let closed = conns.iter().filter(|c| closed_by_server(c)).count();
        if closed >= want || tokio::time::Instant::now() >= deadline {
            return closed;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until `golive_http_connections` satisfies `ok` (a refused or reset request is retried).
async fn wait_until(s: &Server, ok: impl Fn(f64) -> bool) {
    use tokio::io::AsyncReadExt;
    let deadline = tokio::time::Instant::now() + STEP;
    loop {
        let mut body = String::new();
        if let Ok(mut c) = TcpStream::connect(&s.addr).await {
            let req = b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
            if c.write_all(req).await.is_ok() {
                let _ = c.read_to_string(&mut body).await;
            }
        }
        let open = body
            .lines()
            .find_map(|l| l.strip_prefix("golive_http_connections "))
            .and_then(|v| v.trim().parse().ok());
        if open.is_some_and(&ok) {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "golive_http_connections stayed at {open:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A session opened before the attack still answers.
async fn session_still_answers(ws: &mut Ws) {
    expect_error(
        ws,
        &msg("watch", "still-nothing", "v=0"),
        ErrorCode::StreamNotFound,
    )
    .await;
}

#[tokio::test]
async fn a_slowloris_from_one_address_is_held_to_its_cap_while_others_are_served() {
    // A header timeout far beyond the test: only the cap closes anything here.
    let s = start_with(&[
        "--ip-limits-loopback",
        "enforce",
        "--max-connections-per-ip",
        "50",
        "--http-header-timeout-secs",
        "600",
    ]);
    let mut session = connect(&s).await;
    let attacker: IpAddr = "127.0.0.2".parse().unwrap();
    let conns = slow_clients(attacker, &s, 300).await;

    assert_eq!(
        wait_closed(&conns, 250).await,
        250,
        "every connection over the cap of 50 is closed, and no other"
    );
    // The 50 admitted ones are still open, waiting for their heads.
    assert_eq!(conns.iter().filter(|c| !closed_by_server(c)).count(), 50);
    assert_eq!(
        metric(
            &s,
            "golive_limit_refusals_total{limit=\"max_connections_per_ip\"}"
        )
        .await,
        250.0
    );
    still_serving(&s).await;
    session_still_answers(&mut session).await;

    // Its places come back when its connections close. Connections are judged in the order
    // they arrive, so the metrics request after the ten new ones sees their verdicts.
    drop(conns);
    wait_until(&s, |open| open <= 2.0).await;
    let _again = slow_clients(attacker, &s, 10).await;
    assert_eq!(
        metric(
            &s,
            "golive_limit_refusals_total{limit=\"max_connections_per_ip\"}"
        )
        .await,
        250.0
    );
}

#[tokio::test]
async fn slow_request_heads_are_cut_by_the_header_timeout_while_others_are_served() {
    let s = start_with(&["--http-header-timeout-secs", "1"]);
    let mut session = connect(&s).await;
    let attacker: IpAddr = "127.0.0.2".parse().unwrap();
    let mut conns = slow_clients(attacker, &s, 200).await;

    // Each keeps sending a header byte now and then, never finishing its head, until the
    // server closes it.
    let mut closed = vec![false; conns.len()];
    let deadline = tokio::time::Instant::now() + 3 * STEP;
    while closed.iter().any(|c| !c) && tokio::time::Instant::now() < deadline {
        for (c, done) in conns.iter_mut().zip(closed.iter_mut()) {
            if !*done {
                *done = closed_by_server(c) || c.write_all(b"x").await.is_err();
            }
        }
        // The healthy client is served all along, and its WebSocket outlives the header
        // timeout: an upgraded connection is not a request head.
        still_serving(&s).await;
        session_still_answers(&mut session).await;
        tokio::time::sleep(DRIP).await;
    }
    assert!(
        closed.iter().all(|c| *c),
        "{} slow connections were never closed",
        closed.iter().filter(|c| !**c).count()
    );
    assert!(
        metric(
            &s,
            "golive_limit_refusals_total{limit=\"http_header_timeout\"}"
        )
        .await
            >= 200.0
    );
    still_serving(&s).await;
}

#[tokio::test]
async fn a_flood_over_the_global_cap_under_a_low_open_files_limit_is_refused_at_once() {
    // 256 descriptors: the cap becomes 192 connections, so accept never runs out of them. The
    // header timeout is far beyond the test: only the cap closes anything here.
    let mut cmd = Command::new("sh");
    cmd.args([
        "-c",
        "ulimit -n 256 && exec \"$0\" \"$@\"",
        env!("CARGO_BIN_EXE_golive"),
        "--listen",
        "127.0.0.1:0",
        "--workers",
        "2",
        "--http-header-timeout-secs",
        "600",
    ]);
    let s = start_command(cmd);
    let mut session = connect(&s).await;
    // Many addresses, so only the global cap binds (loopback is exempt from the per-address
    // one on a server that listens on loopback).
    let mut conns = Vec::new();
    for i in 2..10 {
        let from: IpAddr = format!("127.0.0.{i}").parse().unwrap();
        conns.extend(slow_clients(from, &s, 50).await);
    }
    // The session holds one place, 191 attackers the rest; the other 209 are closed at once.
    assert_eq!(wait_closed(&conns, 209).await, 209);
    // A session that was open before the flood is served through it.
    session_still_answers(&mut session).await;
    // When the flood goes, everyone is answered again.
    drop(conns);
    wait_until(&s, |open| open <= 3.0).await;
    still_serving(&s).await;
    assert_eq!(
        metric(&s, "golive_limit_refusals_total{limit=\"max_connections\"}").await,
        209.0
    );
    assert_eq!(metric(&s, "golive_http_accept_errors_total").await, 0.0);
}

#[tokio::test]
async fn capability_urls_are_never_logged() {
    // At debug level, with everything else: whatever the server logs, the capability is not in it.
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_golive"));
    cmd.args(["--listen", "127.0.0.1:0", "--workers", "1"])
        .env("RUST_LOG", "debug");
    let s = Server::start_command(cmd).unwrap_or_else(|e| panic!("{e}"));

    let offer = vp8_offer();
    let (code, created) = http(
        &s,
        "POST",
        "/whip/show",
        &[("Content-Type", "application/sdp")],
        &offer,
    )
    .await;
    assert_eq!(code, 201, "{created}");
    let location = created
        .lines()
        .find_map(|l| l.strip_prefix("location: "))
        .expect("a Location")
        .trim()
        .to_owned();
    let id = location.rsplit('/').next().unwrap().to_owned();
    let (code, _) = http(&s, "DELETE", &location, &[], "").await;
    assert_eq!(code, 200);
    // The session's end is logged (at debug, with everything else) after the DELETE returns.
    let deadline = std::time::Instant::now() + STEP;
    while !s.logs().contains("session deleted") {
        assert!(std::time::Instant::now() < deadline, "no deletion logged");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let log = s.logs();
    assert!(log.contains("whip session created"), "{log}");
    assert!(
        !log.contains(&id),
        "the resource id (the capability to DELETE) is in the log:\n{log}"
    );
}
