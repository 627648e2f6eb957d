//! Whatever arrives on the socket, the SFU neither panics nor lets it disturb anyone's media.

mod sim;

use golive_sfu::PeerId;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use sim::{Kind, Sim, check_track, ms};
use std::net::SocketAddr;

const STUN_MAGIC_COOKIE: [u8; 4] = [0x21, 0x12, 0xa4, 0x42];

/// A STUN binding request whose USERNAME names `ufrag`, with a MESSAGE-INTEGRITY of zeros.
fn stun_request(ufrag: &str, rng: &mut StdRng) -> Vec<u8> {
    let username = format!("{ufrag}:attacker");
    let mut attrs = Vec::new();
    attrs.extend_from_slice(&0x0006u16.to_be_bytes());
    attrs.extend_from_slice(&(username.len() as u16).to_be_bytes());
    attrs.extend_from_slice(username.as_bytes());
    while attrs.len() % 4 != 0 {
        attrs.push(0);
    }
    attrs.extend_from_slice(&[0x00, 0x24, 0x00, 0x04, 0x6e, 0x00, 0x01, 0xff]); // PRIORITY
    attrs.extend_from_slice(&[0x00, 0x08, 0x00, 0x14]); // MESSAGE-INTEGRITY
    attrs.extend_from_slice(&[0; 20]);
    let mut m = vec![0x00, 0x01];
    m.extend_from_slice(&(attrs.len() as u16).to_be_bytes());
    m.extend_from_slice(&STUN_MAGIC_COOKIE);
    let txid: [u8; 12] = rng.random();
    m.extend_from_slice(&txid);
    m.extend_from_slice(&attrs);
    m
}

/// Something that looks like RTP (or RTCP) at a glance, and is not valid SRTP.
fn rtp_like(rng: &mut StdRng, rtcp: bool) -> Vec<u8> {
    let len = rng.random_range(12..1300);
    let mut b = vec![0u8; len];
    rng.fill(&mut b[..]);
    b[0] = 0x80 | (b[0] & 0x3f);
    b[1] = if rtcp {
        rng.random_range(200..=206)
    } else {
        *[96u8, 111, 120, 109, 0]
            .get(rng.random_range(0..5))
            .expect("pt")
    };
    b
}

/// DTLS-looking records: a random content type 20..=23, DTLS 1.2, epoch 0 or 1. Among them a
/// plaintext fatal alert (close_notify and others), which must not tear down a session.
fn dtls_like(rng: &mut StdRng) -> Vec<u8> {
    let content_type = rng.random_range(20..=23u8);
    let epoch: u16 = rng.random_range(0..=1);
    let mut b = vec![content_type, 0xfe, 0xfd];
    b.extend_from_slice(&epoch.to_be_bytes());
    b.extend_from_slice(&[0, 0, 0, 0, 0, rng.random_range(0..200)]); // sequence number
    let body: Vec<u8> = if content_type == 21 {
        vec![
            2,
            *[0u8, 10, 20, 40, 80]
                .get(rng.random_range(0..5))
                .expect("alert"),
        ]
    } else {
        (0..rng.random_range(0..300))
            .map(|_| rng.random())
            .collect()
    };
    b.extend_from_slice(&(body.len() as u16).to_be_bytes());
    b.extend_from_slice(&body);
    b
}

fn random_bytes(rng: &mut StdRng) -> Vec<u8> {
    let len = rng.random_range(0..1500);
    let mut b = vec![0u8; len];
    rng.fill(&mut b[..]);
    b
}

#[test]
fn garbage_datagrams_are_dropped_without_harm() {
    let mut rng = StdRng::seed_from_u64(0x90_11_7e);
    let mut s = Sim::new();
    let publisher = s.add_publisher(PeerId(1), "live", 30);
    let viewers: Vec<PeerId> = (0..4)
        .map(|i| s.add_viewer(PeerId(100 + i), "live"))
        .collect();
    let mut all = viewers.clone();
    all.push(publisher);
    s.run_until_connected(&all, ms(5_000));
    s.run_for(ms(500));

    let bound: Vec<SocketAddr> = all.iter().map(|id| s.client(*id).addr).collect();
    let ufrags: Vec<String> = all
        .iter()
        .map(|id| s.client(*id).sfu_ufrag.clone())
        .collect();
    let unknown = |rng: &mut StdRng| {
        SocketAddr::from((
            [127, 0, 0, rng.random_range(2..=254)],
            rng.random_range(20_000..60_000),
        ))
    };
    let unroutable_before = s.sfu.stats().datagrams_unroutable;
    let mut injected = 0u64;

    // Two seconds of garbage, a few datagrams every millisecond, alongside the media.
    for _ in 0..2_000 {
        for _ in 0..3 {
            let (from, data) = match rng.random_range(0..9) {
                0 => (unknown(&mut rng), random_bytes(&mut rng)),
                1 => (unknown(&mut rng), Vec::new()),
                2 => {
                    // A real peer's ufrag, truncated anywhere, from an unknown address.
                    let full = stun_request(&ufrags[rng.random_range(0..ufrags.len())], &mut rng);
                    let cut = rng.random_range(0..full.len());
                    (unknown(&mut rng), full[..cut].to_vec())
                }
                3 => {
                    // Lying lengths: header or attribute longer than the datagram.
                    let mut m = stun_request(&ufrags[rng.random_range(0..ufrags.len())], &mut rng);
                    let at = if rng.random() { 2 } else { 22 };
                    m[at] = 0xff;
                    m[at + 1] = rng.random();
                    (unknown(&mut rng), m)
                }
                4 => {
                    let rtcp = rng.random();
                    (unknown(&mut rng), rtp_like(&mut rng, rtcp))
                }
                5 => (
                    bound[rng.random_range(0..bound.len())],
                    rtp_like(&mut rng, false),
                ),
                6 => (
                    bound[rng.random_range(0..bound.len())],
                    rtp_like(&mut rng, true),
                ),
                7 => (bound[rng.random_range(0..bound.len())], dtls_like(&mut rng)),
                _ => {
                    // STUN from a bound address: truncated, or a whole request with a bad
                    // MESSAGE-INTEGRITY and someone's ufrag.
                    let m = stun_request(&ufrags[rng.random_range(0..ufrags.len())], &mut rng);
                    let cut = if rng.random() {
                        m.len()
                    } else {
                        rng.random_range(0..m.len())
                    };
                    (bound[rng.random_range(0..bound.len())], m[..cut].to_vec())
                }
            };
            s.inject(from, &data);
            injected += 1;
        }
        s.step();
    }
    let garbage_end = s.now;
    s.run_for(ms(1_000));

    eprintln!(
        "injected {injected} garbage datagrams; stats {:?}",
        s.sfu.stats()
    );
    assert!(
        s.sfu.stats().datagrams_unroutable > unroutable_before,
        "garbage from unknown addresses was routed"
    );
    assert!(s.sfu_failed.is_empty(), "peers failed: {:?}", s.sfu_failed);
    assert_eq!(s.sfu.peer_count(), all.len());
    assert_eq!(
        s.sfu.stats().rtp_dropped_unknown_payload_type,
        0,
        "garbage RTP was taken for media"
    );
    let p = s.client(publisher);
    assert_eq!(p.write_errors, 0);
    for &v in &viewers {
        let c = s.client(v);
        assert!(!c.failed, "{v} failed");
        for kind in [Kind::Audio, Kind::Video] {
            // From its first packet to the end: everything, in order, intact.
            assert_eq!(check_track(p, c, kind, None), 0, "{v} {kind:?}");
            let after = c
                .received_of(kind)
                .iter()
                .filter(|r| r.at > garbage_end)
                .count();
            assert!(
                after >= 25,
                "{v} {kind:?}: only {after} packets after the garbage stopped"
            );
        }
    }
}

#[test]
fn garbage_from_one_peer_leaves_the_others_untouched() {
    let mut rng = StdRng::seed_from_u64(0xbad);
    let mut s = Sim::new();
    let publisher = s.add_publisher(PeerId(1), "live", 30);
    let viewers: Vec<PeerId> = (0..3)
        .map(|i| s.add_viewer(PeerId(100 + i), "live"))
        .collect();
    let mut all = viewers.clone();
    all.push(publisher);
    s.run_until_connected(&all, ms(5_000));
    s.run_for(ms(500));

    // One viewer's address sends a storm of garbage: SRTP-looking, DTLS-looking, random bytes,
    // truncated and oversized datagrams, a few every millisecond.
    let bad = viewers[0];
    let from = s.client(bad).addr;
    let start = s.now;
    let mut sent = 0u32;
    while !s.sfu_failed.iter().any(|(_, id)| *id == bad) {
        assert!(
            s.now - start < golive_sfu::GARBAGE_WINDOW * 3,
            "a peer sending {sent} garbage datagrams was never closed"
        );
        for _ in 0..3 {
            let data = match rng.random_range(0..5) {
                0 => rtp_like(&mut rng, false),
                1 => rtp_like(&mut rng, true),
                2 => random_bytes(&mut rng),
                3 => vec![0xff; 65_535],
                _ => {
                    let mut d = rtp_like(&mut rng, false);
                    d.truncate(rng.random_range(0..12));
                    d
                }
            };
            s.inject(from, &data);
            sent += 1;
        }
        s.step();
    }
    let closed_after = s.now - start;
    s.run_for(ms(1_000));
    let st = s.sfu.stats();
    eprintln!(
        "garbage peer closed after {sent} datagrams ({closed_after:?}); stats {:?}",
        st
    );
    assert_eq!(st.peers_closed_for_garbage, 1);
    assert_eq!(
        s.sfu_failed.len(),
        1,
        "only the garbage peer: {:?}",
        s.sfu_failed
    );
    assert_eq!(s.sfu.peer_count(), all.len() - 1);
    let p = s.client(publisher);
    for &v in &viewers[1..] {
        for kind in [Kind::Audio, Kind::Video] {
            assert_eq!(check_track(p, s.client(v), kind, None), 0, "{v} {kind:?}");
        }
    }
}
