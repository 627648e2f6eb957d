//! Chat, hearts, moderation and stream keys over the WebSocket protocol, against the real
//! binary. Offers are fixed Chromium-shaped SDP: the answers come, no media flows.

mod common;

use common::*;
use golive_proto::{ErrorCode, ServerMessage};
use std::time::{Duration, Instant};

fn publish(stream: &str, extra: serde_json::Value) -> String {
    let mut m = serde_json::json!({"type":"publish","stream":stream,"sdp":vp8_offer()});
    m.as_object_mut()
        .unwrap()
        .extend(extra.as_object().unwrap().clone());
    m.to_string()
}

fn watch(stream: &str, name: Option<&str>) -> String {
    let mut m = serde_json::json!({"type":"watch","stream":stream,"sdp":vp8_offer()});
    if let Some(n) = name {
        m["name"] = n.into();
    }
    m.to_string()
}

async fn join(s: &Server, text: &str) -> Ws {
    let mut ws = connect(s).await;
    send(&mut ws, text).await;
    match recv_reply(&mut ws).await {
        ServerMessage::Answer { .. } => ws,
        other => panic!("expected an answer to {text:.60}, got {other:?}"),
    }
}

/// The next chat-ish message (skipping viewer counts and hearts).
async fn next_chat(ws: &mut Ws) -> ServerMessage {
    loop {
        match recv(ws).await {
            ServerMessage::Viewers { .. } | ServerMessage::Hearts { .. } => continue,
            m => return m,
        }
    }
}

#[tokio::test]
async fn chat_reaches_everyone_with_names_and_history_reaches_late_joiners() {
    let s = start();
    let mut host = join(&s, &publish("talk", serde_json::json!({"name":"Host"}))).await;
    let mut ann = join(&s, &watch("talk", Some("  Ann "))).await;
    let mut anon = join(&s, &watch("talk", None)).await;

    send(
        &mut ann,
        r#"{"type":"chat","text":"hello <b>everyone</b>"}"#,
    )
    .await;
    for ws in [&mut host, &mut ann, &mut anon] {
        let ServerMessage::Chat { id, from, text, at } = next_chat(ws).await else {
            panic!("expected chat");
        };
        assert_eq!(
            (id, from.as_str(), text.as_str()),
            (1, "Ann", "hello <b>everyone</b>")
        );
        assert!(at.ends_with('Z') && at.len() == 20, "{at}");
    }
    send(&mut anon, r#"{"type":"chat","text":"hi"}"#).await;
    let ServerMessage::Chat { from, .. } = next_chat(&mut host).await else {
        panic!("expected chat");
    };
    assert!(
        from.starts_with("viewer-") && from.len() == 11,
        "default name {from}"
    );
    send(&mut host, r#"{"type":"chat","text":"welcome"}"#).await;
    loop {
        if let ServerMessage::Chat { from, text, .. } = next_chat(&mut ann).await
            && text == "welcome"
        {
            assert_eq!(from, "Host");
            break;
        }
    }

    // History: at most 50 of the latest, oldest first, right after the answer. Twelve
    // senders of five messages each stay inside everyone's rate limit.
    let mut senders = Vec::new();
    for j in 0..12 {
        let mut v = join(&s, &watch("talk", Some(&format!("s{j}")))).await;
        for i in 0..5 {
            send(&mut v, &format!(r#"{{"type":"chat","text":"s{j} m{i}"}}"#)).await;
        }
        senders.push(v);
    }
    // The host sees them all: 3 earlier + 60 = ids up to 63.
    let mut last_id = 0;
    while last_id < 63 {
        if let ServerMessage::Chat { id, .. } = next_chat(&mut host).await {
            last_id = id;
        }
    }
    let mut late = join(&s, &watch("talk", Some("Late"))).await;
    let mut ids = Vec::new();
    while ids.len() < 50 {
        if let ServerMessage::Chat { id, .. } = next_chat(&mut late).await {
            ids.push(id);
        }
    }
    assert_eq!(ids, (14..=63).collect::<Vec<u64>>());

    // Bad texts and names are bad requests; the socket stays usable.
    expect_error(
        &mut ann,
        r#"{"type":"chat","text":"   "}"#,
        ErrorCode::BadRequest,
    )
    .await;
    expect_error(
        &mut ann,
        &format!(r#"{{"type":"chat","text":"{}"}}"#, "x".repeat(281)),
        ErrorCode::BadRequest,
    )
    .await;
    let mut bad = connect(&s).await;
    expect_error(
        &mut bad,
        &watch("talk", Some(&"n".repeat(33))),
        ErrorCode::BadRequest,
    )
    .await;
    expect_error(
        &mut bad,
        r#"{"type":"chat","text":"not on a stream"}"#,
        ErrorCode::BadRequest,
    )
    .await;
}

#[tokio::test]
async fn chat_is_rate_limited_per_sender() {
    let s = start();
    let _host = join(&s, &publish("fast", serde_json::json!({}))).await;
    let mut v = join(&s, &watch("fast", Some("Speedy"))).await;
    let mut other = join(&s, &watch("fast", Some("Calm"))).await;
    for i in 0..5 {
        send(&mut v, &format!(r#"{{"type":"chat","text":"burst {i}"}}"#)).await;
    }
    let m = expect_error(
        &mut v,
        r#"{"type":"chat","text":"one too many"}"#,
        ErrorCode::RateLimited,
    )
    .await;
    assert!(m.contains("wait"), "{m}");
    // Another sender is not limited by the first.
    send(&mut other, r#"{"type":"chat","text":"me too"}"#).await;
    let mut seen = 0;
    while seen < 6 {
        if let ServerMessage::Chat { .. } = next_chat(&mut other).await {
            seen += 1;
        }
    }
    // A second later the limit has refilled by one.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    send(&mut v, r#"{"type":"chat","text":"again"}"#).await;
    loop {
        if let ServerMessage::Chat { text, .. } = next_chat(&mut v).await
            && text == "again"
        {
            break;
        }
    }
}

#[tokio::test]
async fn broadcaster_removes_messages_and_mutes_viewers() {
    let s = start();
    let mut host = join(&s, &publish("mod", serde_json::json!({}))).await;
    let mut troll = join(&s, &watch("mod", Some("Troll"))).await;
    let mut fan = join(&s, &watch("mod", Some("Fan"))).await;
    send(&mut troll, r#"{"type":"chat","text":"spam"}"#).await;
    let ServerMessage::Chat { id, .. } = next_chat(&mut fan).await else {
        panic!("expected chat");
    };
    // Only the broadcaster moderates.
    expect_error(
        &mut fan,
        &format!(r#"{{"type":"remove","id":{id}}}"#),
        ErrorCode::Forbidden,
    )
    .await;
    expect_error(
        &mut fan,
        r#"{"type":"mute","name":"Troll"}"#,
        ErrorCode::Forbidden,
    )
    .await;

    send(&mut host, &format!(r#"{{"type":"remove","id":{id}}}"#)).await;
    for ws in [&mut host, &mut troll, &mut fan] {
        loop {
            match next_chat(ws).await {
                ServerMessage::Removed { id: r } => {
                    assert_eq!(r, id);
                    break;
                }
                ServerMessage::Chat { .. } => continue,
                other => panic!("unexpected {other:?}"),
            }
        }
    }
    expect_error(
        &mut host,
        r#"{"type":"remove","id":999}"#,
        ErrorCode::BadRequest,
    )
    .await;
    // A removed message is not in the history a new viewer gets.
    send(&mut fan, r#"{"type":"chat","text":"kept"}"#).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut late = join(&s, &watch("mod", None)).await;
    let ServerMessage::Chat { text, .. } = next_chat(&mut late).await else {
        panic!("expected the history");
    };
    assert_eq!(text, "kept");

    // Muted by name (any case), for the rest of the broadcast.
    send(&mut host, r#"{"type":"mute","name":"troll"}"#).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    expect_error(
        &mut troll,
        r#"{"type":"chat","text":"still here"}"#,
        ErrorCode::Muted,
    )
    .await;
    let mut again = join(&s, &watch("mod", Some("TROLL"))).await;
    expect_error(
        &mut again,
        r#"{"type":"chat","text":"new socket"}"#,
        ErrorCode::Muted,
    )
    .await;
    send(&mut fan, r#"{"type":"chat","text":"fan speaks"}"#).await;
    loop {
        if let ServerMessage::Chat { text, .. } = next_chat(&mut host).await
            && text == "fan speaks"
        {
            break;
        }
    }
}

#[tokio::test]
async fn hearts_are_batched_with_exact_totals() {
    let s = start();
    let mut host = join(&s, &publish("love", serde_json::json!({}))).await;
    let mut viewers = Vec::new();
    for i in 0..8 {
        viewers.push(join(&s, &watch("love", Some(&format!("v{i}")))).await);
    }
    // 8 viewers tap 5 hearts each, as fast as they can; one taps 30 (only 10 a second count).
    let taps_began = Instant::now();
    for v in viewers.iter_mut() {
        for _ in 0..5 {
            send(v, r#"{"type":"heart"}"#).await;
        }
    }
    for _ in 0..30 {
        send(&mut viewers[0], r#"{"type":"heart"}"#).await;
    }
    // Viewer 0 had 5 of its 10 tokens left after its first 5; on a slow machine its bucket
    // also refilled (10 a second) while the taps were being sent, so a few more may count.
    let least = 8 * 5 + 5;
    let refilled = (taps_began.elapsed().as_secs_f64() * 10.0).ceil() as u64;
    let mut batches: Vec<(Instant, u64, u64)> = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(5);
    while batches.last().is_none_or(|b| b.2 < least) {
        assert!(Instant::now() < deadline, "hearts so far: {batches:?}");
        if let ServerMessage::Hearts { count, total } = recv(&mut host).await {
            batches.push((Instant::now(), count, total));
        }
    }
    // Hearts counted after a refill may come one batch later.
    let drain_until = Instant::now() + Duration::from_secs(2);
    while Instant::now() < drain_until
        && let Ok(m) = tokio::time::timeout(Duration::from_millis(600), recv(&mut host)).await
    {
        if let ServerMessage::Hearts { count, total } = m {
            batches.push((Instant::now(), count, total));
        }
    }
    let expected_total = batches.last().unwrap().2;
    assert!(
        (least..=least + refilled).contains(&expected_total),
        "{expected_total} hearts counted, {least} to {} expected",
        least + refilled
    );
    let counted: u64 = batches.iter().map(|b| b.1).sum();
    assert_eq!(counted, expected_total, "{batches:?}");
    assert_eq!(batches.last().unwrap().2, expected_total);
    // Fewer batches than hearts, and no more batches than 250 ms intervals elapsed (counted
    // over the whole span, so one late delivery cannot fail it).
    assert!(batches.len() < 10, "{batches:?}");
    let span = batches.last().unwrap().0 - batches[0].0;
    let intervals = (span.as_millis() / 250) as usize;
    assert!(
        batches.len() <= intervals + 2,
        "{} batches in {span:?}: {batches:?}",
        batches.len()
    );
    // No more hearts beyond the total arrive later.
    tokio::time::sleep(Duration::from_millis(600)).await;
    send(&mut host, r#"{"type":"heart"}"#).await;
    loop {
        if let ServerMessage::Hearts { count, total } = recv(&mut host).await {
            assert_eq!((count, total), (1, expected_total + 1));
            break;
        }
    }
}

#[tokio::test]
async fn stream_keys_are_required_and_live_streams_cannot_be_taken_over() {
    let dir = std::env::temp_dir().join(format!("golive-keys-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let keys = dir.join("keys");
    std::fs::write(&keys, "show=right-key\n").unwrap();
    let s = start_with(&["--keys-file", keys.to_str().unwrap()]);

    let mut ws = connect(&s).await;
    for extra in [
        serde_json::json!({}),
        serde_json::json!({"key":"wrong-key"}),
        serde_json::json!({"key":""}),
    ] {
        let m = expect_error(&mut ws, &publish("show", extra), ErrorCode::Unauthorized).await;
        assert!(!m.contains("right-key"), "the key is never echoed: {m}");
    }
    // A stream without a key line cannot be published at all.
    expect_error(
        &mut ws,
        &publish("unlisted", serde_json::json!({"key":"right-key"})),
        ErrorCode::Unauthorized,
    )
    .await;
    send(
        &mut ws,
        &publish("show", serde_json::json!({"key":"right-key"})),
    )
    .await;
    assert!(matches!(
        recv_reply(&mut ws).await,
        ServerMessage::Answer { .. }
    ));

    // Someone else with the right key still cannot take the live stream over.
    let mut thief = connect(&s).await;
    expect_error(
        &mut thief,
        &publish("show", serde_json::json!({"key":"right-key"})),
        ErrorCode::StreamBusy,
    )
    .await;
    // Viewers need no key.
    let _viewer = join(&s, &watch("show", None)).await;
    // WHIP follows the same rules: 401 with a Bearer challenge for a wrong or missing key.
    let sdp = vp8_offer();
    for auth in [None, Some("Bearer wrong-key")] {
        let mut h = vec![("Content-Type", "application/sdp")];
        h.extend(auth.map(|a| ("Authorization", a)));
        let (code, text) = http(&s, "POST", "/whip/other", &h, &sdp).await;
        assert_eq!(code, 401, "{text}");
        assert!(
            text.to_ascii_lowercase()
                .contains("www-authenticate: bearer"),
            "{text}"
        );
    }
    let (code, text) = http(
        &s,
        "POST",
        "/whip/show",
        &[
            ("Content-Type", "application/sdp"),
            ("Authorization", "Bearer right-key"),
        ],
        &sdp,
    )
    .await;
    assert_eq!(
        code, 409,
        "live stream, right key, still no takeover: {text}"
    );
    // The key is in no log line.
    drop(ws);
    std::fs::remove_dir_all(&dir).unwrap();
}
