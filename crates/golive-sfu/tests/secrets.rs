//! Keying material never reaches the logs: a lean viewer's whole life (ICE, the DTLS handshake,
//! media, RTCP, junk after the handshake, a handshake refused for a wrong certificate, close)
//! runs with every log at TRACE, ours and `rtc`'s (its `log` records come through the same
//! subscriber, as in the server), and the SRTP keys and salts the handshake exported appear
//! nowhere in the output, in any of the forms a format string would give them.

mod sim;

use golive_sfu::PeerId;
use sim::raw::{RawKit, RawViewer};
use sim::{Sim, ms};
use std::io::Write;
use std::sync::{Arc, Mutex};

/// Everything the subscriber writes.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("not poisoned").extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Captured {
    type Writer = Captured;
    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

/// The ways a byte string is written by `{:x}`-style hex (either case, with or without
/// separators) and by `{:?}` (decimal or hex list).
fn written_forms(bytes: &[u8]) -> Vec<String> {
    let lower: Vec<String> = bytes.iter().map(|b| format!("{b:02x}")).collect();
    let upper: Vec<String> = bytes.iter().map(|b| format!("{b:02X}")).collect();
    vec![
        lower.concat(),
        upper.concat(),
        lower.join(":"),
        upper.join(":"),
        lower.join(" "),
        format!("{bytes:?}"),
        format!("{bytes:02x?}"),
        format!("{bytes:#04x?}"),
    ]
}

/// RFC 5764 §4.2: the pieces of the exported material, for a 16-byte key and 12-byte salt.
fn pieces(material: &[u8]) -> Vec<&[u8]> {
    let (k, s) = (16, 12);
    assert_eq!(material.len(), 2 * (k + s), "AES-128-GCM keying material");
    vec![
        &material[..k],
        &material[k..2 * k],
        &material[2 * k..2 * k + s],
        &material[2 * k + s..],
    ]
}

#[test]
fn keys_and_salts_never_appear_in_the_logs_at_trace() {
    let captured = Captured::default();
    tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(captured.clone())
        .with_ansi(false)
        .try_init()
        .expect("this test binary's only subscriber");

    let kit = RawKit::new();
    let stranger = RawKit::new();
    let mut s = Sim::lean();
    let publisher = s.add_publisher(PeerId(1), "live", 30);
    s.run_until_connected(&[publisher], ms(5_000));
    s.run_for(ms(300));

    // A viewer that connects, receives media, sends RTCP and junk, and leaves.
    let mut good = RawViewer::join(&mut s, &kit, PeerId(2), &sim::stream("live"), 50_000);
    good.check(&mut s);
    good.handshake(&mut s, ms(1_000), Some);
    assert!(good.connected, "the viewer connects");
    let rr = [0x80, 201, 0, 1, 0, 0, 0, 7];
    let pli = [0x81, 206, 0, 2, 0, 0, 0, 7, 0, 0, 0, 0];
    for plain in [&rr[..], &pli[..]] {
        let sealed = good.srtcp(plain).expect("keyed");
        s.inject(good.addr, &sealed);
        // A replay, and a forgery.
        s.inject(good.addr, &sealed);
        let mut forged = sealed.clone();
        let last = forged.len() - 1;
        forged[last] ^= 1;
        s.inject(good.addr, &forged);
    }
    s.inject(
        good.addr,
        &[23, 0xfe, 0xfd, 0, 1, 0, 0, 0, 0, 0, 9, 0, 3, 1, 2, 3],
    );
    s.run_for(ms(1_500));
    let delivered = s.take_stray(good.addr).len();
    assert!(
        delivered > 10,
        "media reached the viewer ({delivered} datagrams)"
    );
    s.remove(good.id);

    // A viewer whose certificate is not the one its offer announced: the handshake completes,
    // and the SFU refuses it after exporting the keys.
    let mut wrong = RawViewer::join(&mut s, &kit, PeerId(3), &sim::stream("live"), 50_001);
    wrong.use_certificate_of(&stranger);
    wrong.check(&mut s);
    wrong.handshake(&mut s, ms(1_000), Some);
    assert!(
        s.sfu_failed.iter().any(|(_, id)| *id == wrong.id),
        "the SFU refused the wrong certificate"
    );

    let out = String::from_utf8_lossy(&captured.0.lock().expect("not poisoned")).into_owned();
    assert!(
        out.contains("peer_certificates"),
        "rtc's own log records reach the subscriber too"
    );
    let mut checked = 0;
    for material in [&good.exported, &wrong.exported] {
        let material = material.as_ref().expect("the handshake exported keys");
        for piece in pieces(material) {
            for form in written_forms(piece) {
                assert!(!out.contains(&form), "a key or salt was logged as {form}");
                checked += 1;
            }
        }
    }
    eprintln!(
        "{} lines of TRACE output, {checked} forms of 8 keys and salts: none found",
        out.lines().count()
    );
}
