//! Handshakes that stall are dropped at their timeout and leave nothing behind: 2,000 lean
//! viewers that never finish connecting (silent after the answer, after their STUN check, after
//! their ClientHello, or after the server's flight) come and go in rounds, and the process's
//! resident memory stays at the plateau the first round reached.
//!
//! Figures: `cargo test -p golive-sfu --test stalled -- --nocapture` (its own binary, so the
//! heap and RSS it reads are this test's alone).

mod heap;
mod sim;

use golive_sfu::{CONNECT_TIMEOUT, PeerId};
use heap::{live_heap, rss_kb};
use sim::raw::{RawKit, RawViewer};
use sim::{Sim, ms};

const ROUNDS: u64 = 8;
const PER_ROUND: u64 = 250;
/// The clock's tick while waiting out the timeout.
const TICK_MS: u64 = 50;
/// RSS may sit this far above the first round's plateau (allocator slack, page-granular
/// accounting): a leak of one stalled viewer's state (tens of kB each) would pass it within a
/// round or two.
const RSS_SLACK_KB: i64 = 4 * 1024;
/// The live heap after the last round may differ from after the first by this much.
const HEAP_SLACK_BYTES: i128 = 256 * 1024;

/// How far a stalled viewer gets before it goes silent.
#[derive(Debug, Clone, Copy)]
enum SilentAfter {
    /// Nothing at all after the answer.
    Answer,
    /// Its STUN check passes, then nothing.
    Check,
    /// Its first ClientHello, then nothing (the server answered with a HelloVerifyRequest).
    ClientHello,
    /// The ClientHello with the cookie too; the server sent its flight, and is left waiting.
    ServerFlight,
}

const STALLS: [SilentAfter; 4] = [
    SilentAfter::Answer,
    SilentAfter::Check,
    SilentAfter::ClientHello,
    SilentAfter::ServerFlight,
];

fn stall(s: &mut Sim, kit: &RawKit, id: PeerId, port: u16, how: SilentAfter) {
    let mut v = RawViewer::join(s, kit, id, &sim::stream("live"), port);
    if !matches!(how, SilentAfter::Answer) {
        v.check(s);
    }
    if matches!(how, SilentAfter::ClientHello | SilentAfter::ServerFlight) {
        for d in v.start_dtls(s.now) {
            s.inject(v.addr, &d);
        }
    }
    if matches!(how, SilentAfter::ServerFlight) {
        let now = s.now;
        let replies: Vec<_> = s
            .take_stray(v.addr)
            .iter()
            .flat_map(|d| v.receive(now, d))
            .collect();
        assert!(
            !replies.is_empty(),
            "the client answers the HelloVerifyRequest"
        );
        for d in replies {
            s.inject(v.addr, &d);
        }
        assert!(
            !s.take_stray(v.addr).is_empty(),
            "the server sent its flight"
        );
    }
    s.forget_stray(v.addr);
}

#[test]
fn stalled_handshakes_are_dropped_at_their_timeout_and_their_memory_freed() {
    let kit = RawKit::new();
    let mut s = Sim::lean();
    let publisher = s.add_publisher(PeerId(1), "live", 30);
    s.run_until_connected(&[publisher], ms(5_000));
    s.run_for(ms(500));
    s.forget_history();
    let (peers0, demux0) = (s.sfu.peer_count(), s.sfu.demux_entries());
    let mut after_first: Option<(i64, i128)> = None;
    let mut next_id = 100u64;
    for round in 1..=ROUNDS {
        let failed_before = s.sfu_failed.len();
        let heap_before = live_heap();
        for i in 0..PER_ROUND {
            let how = STALLS[(i % 4) as usize];
            stall(&mut s, &kit, PeerId(next_id), 20_000 + i as u16, how);
            next_id += 1;
        }
        assert_eq!(s.sfu.peer_count(), peers0 + PER_ROUND as usize);
        let stalled_bytes = (live_heap() - heap_before) / i128::from(PER_ROUND);
        let mut dropped_early = 0;
        let end = s.now + CONNECT_TIMEOUT + ms(1_000);
        while s.now < end {
            s.step_by(ms(TICK_MS));
            if s.now < end - ms(1_000) {
                dropped_early = s.sfu_failed.len() - failed_before;
            }
        }
        s.forget_history();
        s.sfu_failed.shrink_to_fit();
        assert_eq!(
            s.sfu_failed.len() - failed_before,
            PER_ROUND as usize,
            "every stalled viewer was reported failed"
        );
        s.sfu_failed.clear();
        assert!(
            dropped_early >= (PER_ROUND / 4) as usize,
            "viewers whose handshake ran out of retransmissions are dropped then, not at the \
             connect timeout ({dropped_early})"
        );
        assert_eq!(
            s.sfu.peer_count(),
            peers0,
            "round {round}: stalled peers remain"
        );
        assert_eq!(
            s.sfu.demux_entries(),
            demux0,
            "round {round}: demux entries remain"
        );
        assert!(!s.client(publisher).failed, "the broadcaster lives on");
        let (rss, heap) = (rss_kb(), live_heap());
        eprintln!(
            "round {round}: {PER_ROUND} stalled viewers ({stalled_bytes} B of heap each while \
             stalled; {dropped_early} dropped before the connect timeout, their DTLS \
             retransmissions spent) dropped; RSS {rss} kB, live heap {heap} B"
        );
        match after_first {
            None => after_first = Some((rss, heap)),
            Some((rss1, heap1)) => {
                assert!(
                    rss <= rss1 + RSS_SLACK_KB,
                    "round {round}: RSS {rss} kB against {rss1} kB after round 1"
                );
                assert!(
                    heap - heap1 <= HEAP_SLACK_BYTES,
                    "round {round}: live heap {heap} B against {heap1} B after round 1"
                );
            }
        }
    }
    assert_eq!(s.sfu.peer_count(), peers0);
}
