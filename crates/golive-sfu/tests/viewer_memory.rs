//! What one connected lean viewer costs the SFU in memory: 2,000 of them join one broadcast
//! (ICE check, DTLS handshake, the keyframe cache's replay, a second of media), and the live heap
//! (a counting allocator) and the resident set grow by what they hold; the figures are printed
//! per viewer, by phase of its life. A benchmark that reports, never a limit: the target is
//! 50 KB per viewer (issue "the fast viewer leg").
//!
//! `cargo test -p golive-sfu --release --test viewer_memory -- --nocapture`

mod heap;
mod sim;

use golive_sfu::PeerId;
use heap::{live_heap, rss_kb};
use sim::raw::{RawKit, RawViewer};
use sim::{Sim, ms};

const VIEWERS: u64 = 2_000;

#[test]
fn memory_per_connected_lean_viewer() {
    let kit = RawKit::new();
    let mut s = Sim::lean();
    let publisher = s.add_publisher(PeerId(1), "live", 30);
    s.run_until_connected(&[publisher], ms(5_000));
    s.run_for(ms(1_000));
    s.forget_history();
    // The hand-driven viewers are dropped once connected (their DTLS client state is the
    // test's, not the SFU's); what they leave in the simulation is small and counted apart.
    let (heap0, rss0) = (live_heap(), rss_kb());
    let (mut answered, mut checked, mut keyed) = (0i128, 0i128, 0i128);
    for i in 0..VIEWERS {
        let h = live_heap();
        let mut v = RawViewer::join(
            &mut s,
            &kit,
            PeerId(100 + i),
            &sim::stream("live"),
            20_000 + i as u16,
        );
        let h1 = live_heap();
        v.check(&mut s);
        let h2 = live_heap();
        assert!(v.connect(&mut s, ms(2_000)), "viewer {i} connects");
        // As a browser's first receiver report does: the SFU then knows the handshake is done
        // on the viewer's side too.
        let rr = v.receiver_report().expect("keyed");
        s.inject(v.addr, &rr);
        let h3 = live_heap();
        s.forget_stray(v.addr);
        drop(v);
        answered += h1 - h;
        checked += h2 - h1;
        keyed += h3 - h2;
    }
    s.forget_history();
    let (heap1, rss1) = (live_heap(), rss_kb());
    s.run_for(ms(1_000));
    s.forget_history();
    let (heap2, rss2) = (live_heap(), rss_kb());
    assert_eq!(s.sfu.peer_count() as u64, VIEWERS + 1);
    let n = i128::from(VIEWERS);
    eprintln!(
        "{VIEWERS} connected lean viewers: live heap {} B per viewer after the handshake, {} B \
         after a second of media; RSS {} kB -> {} kB -> {} kB ({} B per viewer)",
        (heap1 - heap0) / n,
        (heap2 - heap0) / n,
        rss0,
        rss1,
        rss2,
        (rss2 - rss0) * 1024 / VIEWERS as i64
    );
    eprintln!(
        "by phase, as the heap grew during it (the raw viewer's own state included until it is \
         dropped): answer {} B, ICE check {} B, DTLS handshake {} B",
        answered / n,
        checked / n,
        keyed / n
    );
}
