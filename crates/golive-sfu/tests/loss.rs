//! Loss: a viewer's NACKs are answered from the SFU's history of the source, without asking the
//! broadcaster; the broadcaster's own losses are NACKed upstream on its leg.
//!
//! Figures: `cargo test -p golive-sfu --release --test loss -- --nocapture`.

mod sim;

use golive_sfu::PeerId;
use sim::{Kind, Link, Sim, check_complete, check_track, ms};

#[test]
fn five_percent_loss_to_one_viewer_is_repaired_and_its_frames_stay_complete() {
    let mut s = Sim::new();
    let publisher = s.add_publisher(PeerId(1), "live", 60);
    let lossy = s.add_viewer(PeerId(2), "live");
    let clean = s.add_viewer(PeerId(3), "live");
    s.run_until_connected(&[publisher, lossy, clean], ms(5_000));
    s.set_link(
        lossy,
        Link {
            down_loss: 0.05,
            delay: ms(10),
            ..Link::default()
        },
    );
    s.run_for(ms(20_000));
    let sent_until = s.now;
    s.set_sending(publisher, false);
    // Time for the last repairs.
    s.run_for(ms(1_000));

    let st = s.sfu.stats().clone();
    let p = s.client(publisher);
    let sent_video = p.sent.iter().filter(|x| x.kind == Kind::Video).count();
    let duplicates = check_complete(p, s.client(lossy), Kind::Video, sent_until);
    eprintln!(
        "5% loss to one viewer: {} video packets sent, {} datagrams lost on its link, {} NACKed, \
         {} retransmitted, {} not yet received, {} unrepairable, {duplicates} duplicates; PLIs at \
         the publisher {}",
        sent_video,
        s.lost_down,
        st.nacked,
        st.retransmitted,
        st.nack_not_yet_received,
        st.nack_unrepairable,
        s.client(publisher).plis.len()
    );
    assert!(s.lost_down > 40, "the link lost too little to tell");
    assert!(st.retransmitted > 15);
    assert!(st.retransmitted > 0);
    assert_eq!(st.nack_unrepairable, 0);
    // The broadcaster was not asked: not for a packet, not for a keyframe.
    assert_eq!(s.client(publisher).plis.len(), 0);
    // Every frame complete: every packet arrived (check_complete) with its marker.
    // The clean viewer saw nothing of it.
    assert_eq!(check_track(p, s.client(clean), Kind::Video, None), 0);
    assert_eq!(check_track(p, s.client(clean), Kind::Audio, None), 0);
}

#[test]
fn broadcaster_uplink_loss_is_nacked_upstream() {
    let mut s = Sim::new();
    let publisher = s.add_publisher(PeerId(1), "live", 60);
    let viewer = s.add_viewer(PeerId(2), "live");
    s.run_until_connected(&[publisher, viewer], ms(5_000));
    s.set_link(
        publisher,
        Link {
            up_loss: 0.03,
            delay: ms(10),
            ..Link::default()
        },
    );
    s.run_for(ms(20_000));
    let sent_until = s.now;
    s.set_sending(publisher, false);
    s.run_for(ms(1_000));
    let lost = s.lost_up;
    let duplicates = check_complete(
        s.client(publisher),
        s.client(viewer),
        Kind::Video,
        sent_until,
    );
    eprintln!(
        "3% loss on the broadcaster's uplink: {lost} datagrams lost, viewer complete, \
         {duplicates} duplicates at the viewer; stats {:?}",
        s.sfu.stats()
    );
    assert!(lost > 30);
    assert!(
        s.sfu.stats().nack_not_yet_received > 0,
        "the viewer saw the gaps the SFU had too"
    );
    assert_eq!(duplicates, 0, "the SFU forwards each packet once");
}
