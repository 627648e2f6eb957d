//! Closing a lean viewer's DTLS association works both ways, before and after the SFU settled
//! it (shrank it to its session once the viewer's first SRTCP showed the handshake done): the
//! SFU's close_notify reaches the viewer, and the viewer's close_notify ends it in the SFU.

mod sim;

use golive_sfu::PeerId;
use sim::raw::{RawKit, RawViewer};
use sim::{Sim, ms};

fn connected_viewer(s: &mut Sim, kit: &RawKit, settle: bool) -> RawViewer {
    let publisher = s.add_publisher(PeerId(1), "live", 30);
    s.run_until_connected(&[publisher], ms(5_000));
    let mut v = RawViewer::join(s, kit, PeerId(2), &sim::stream("live"), 50_000);
    v.check(s);
    assert!(v.connect(s, ms(2_000)), "the viewer connects");
    if settle {
        let rr = v.receiver_report().expect("keyed");
        s.inject(v.addr, &rr);
    }
    s.run_for(ms(200));
    s.take_stray(v.addr);
    v
}

#[test]
fn a_removed_lean_viewer_gets_the_sfus_close_notify_before_and_after_settling() {
    let kit = RawKit::new();
    for settle in [false, true] {
        let mut s = Sim::lean();
        let mut v = connected_viewer(&mut s, &kit, settle);
        s.remove(v.id);
        let now = s.now;
        for d in s.take_stray(v.addr) {
            v.receive(now, &d);
        }
        assert!(
            v.closed_by_sfu,
            "settled {settle}: the viewer read a close_notify"
        );
    }
}

#[test]
fn a_lean_viewers_close_notify_ends_it_before_and_after_settling() {
    let kit = RawKit::new();
    for settle in [false, true] {
        let mut s = Sim::lean();
        let mut v = connected_viewer(&mut s, &kit, settle);
        let peers = s.sfu.peer_count();
        // Junk that looks like an alert first: it must not end the viewer.
        s.inject(
            v.addr,
            &[21, 0xfe, 0xfd, 0, 1, 0, 0, 0, 0, 0, 99, 0, 2, 1, 0],
        );
        assert!(
            s.sfu_failed.is_empty(),
            "settled {settle}: a forged alert ended the viewer"
        );
        let now = s.now;
        for d in v.close(now) {
            s.inject(v.addr, &d);
        }
        assert!(
            s.sfu_failed.iter().any(|(_, id)| *id == v.id),
            "settled {settle}: the SFU ended the viewer on its close_notify"
        );
        assert_eq!(s.sfu.peer_count(), peers - 1);
    }
}
