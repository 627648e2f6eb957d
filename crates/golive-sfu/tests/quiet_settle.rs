//! A lean viewer that never sends RTCP (some players and load testers do not) still has its DTLS
//! association shrunk to its session once the handshake has been quiet for a while, as a
//! viewer's first SRTCP does at once: the endpoint and its handshake state are freed, and the
//! worker stops polling its timers.

mod heap;
mod sim;

use golive_sfu::PeerId;
use heap::live_heap;
use sim::raw::{RawKit, RawViewer};
use sim::{Sim, ms};

const VIEWERS: u64 = 100;

#[test]
fn a_viewer_that_sends_no_rtcp_has_its_dtls_association_settled_after_a_quiet_spell() {
    let kit = RawKit::new();
    let mut s = Sim::lean();
    let publisher = s.add_publisher(PeerId(1), "live", 30);
    s.run_until_connected(&[publisher], ms(5_000));
    s.run_for(ms(1_000));
    let mut addrs = Vec::new();
    for i in 0..VIEWERS {
        let mut v = RawViewer::join(
            &mut s,
            &kit,
            PeerId(100 + i),
            &sim::stream("live"),
            20_000 + i as u16,
        );
        v.check(&mut s);
        assert!(v.connect(&mut s, ms(2_000)), "viewer {i} connects");
        addrs.push(v.addr);
        // No receiver report: the SFU never hears from this viewer over SRTCP.
    }
    let forget = |s: &mut Sim| {
        for a in &addrs {
            s.forget_stray(*a);
        }
        s.forget_history();
    };
    s.run_for(ms(2_000));
    forget(&mut s);
    let before = live_heap();
    s.run_for(ms(10_000));
    forget(&mut s);
    let after = live_heap();
    assert_eq!(s.sfu.peer_count() as u64, VIEWERS + 1, "every viewer stays");
    let freed = (before - after) / i128::from(VIEWERS);
    eprintln!("a quiet viewer's settling freed {freed} B of heap");
    // Without settling, the heap grows by about 6 kB per viewer over these ten seconds (its
    // send buffer finds its size); settling frees the endpoint's 10 kB and more.
    assert!(
        freed > 2_000,
        "a quiet viewer's DTLS endpoint is freed once its handshake has been quiet: {freed} B per viewer"
    );
}
