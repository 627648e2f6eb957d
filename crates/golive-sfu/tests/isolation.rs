//! Viewers get their own stream and nothing else: a removed viewer stops receiving while the
//! others go on, and a viewer of one stream never sees another stream's packets.

mod sim;

use golive_sfu::PeerId;
use sim::{Kind, Sim, check_track, ms};

#[test]
fn removed_viewer_stops_receiving_and_others_continue() {
    let mut s = Sim::new();
    let publisher = s.add_publisher(PeerId(1), "live", 30);
    let viewers: Vec<PeerId> = (0..3)
        .map(|i| s.add_viewer(PeerId(100 + i), "live"))
        .collect();
    let mut all = viewers.clone();
    all.push(publisher);
    s.run_until_connected(&all, ms(5_000));
    s.run_for(ms(1_000));

    let gone = viewers[1];
    let before = s.client(gone).received.len();
    assert!(before > 0, "the viewer got media before it was removed");
    s.remove(gone);
    let removed_at = s.now;
    s.run_for(ms(1_500));

    let late: Vec<_> = s
        .client(gone)
        .received
        .iter()
        .filter(|r| r.at > removed_at)
        .collect();
    assert!(
        late.is_empty(),
        "a removed viewer got {} packets after removal",
        late.len()
    );
    assert_eq!(s.sfu.peer_count(), 3);
    for &v in [viewers[0], viewers[2]].iter() {
        for kind in [Kind::Audio, Kind::Video] {
            check_track(s.client(publisher), s.client(v), kind, None);
            let after = s
                .client(v)
                .received_of(kind)
                .iter()
                .filter(|r| r.at > removed_at)
                .count();
            assert!(
                after > 20,
                "{v} {kind:?}: only {after} packets after the removal"
            );
        }
    }
}

#[test]
fn viewer_of_other_stream_gets_nothing_from_this_one() {
    let mut s = Sim::new();
    let pub_a = s.add_publisher(PeerId(1), "alpha", 30);
    let pub_b = s.add_publisher(PeerId(2), "beta", 30);
    let of_a: Vec<PeerId> = (0..2)
        .map(|i| s.add_viewer(PeerId(100 + i), "alpha"))
        .collect();
    let of_b: Vec<PeerId> = (0..2)
        .map(|i| s.add_viewer(PeerId(200 + i), "beta"))
        .collect();
    let mut all = vec![pub_a, pub_b];
    all.extend(&of_a);
    all.extend(&of_b);
    s.run_until_connected(&all, ms(5_000));
    s.run_for(ms(2_000));

    let sent_by = |p: PeerId| -> std::collections::HashSet<golive_client::Stamp> {
        s.client(p).sent.iter().map(|x| x.stamp).collect()
    };
    for (own, other, viewers) in [(pub_a, pub_b, &of_a), (pub_b, pub_a, &of_b)] {
        let foreign = sent_by(other);
        for &v in viewers {
            let c = s.client(v);
            let leaked = c
                .received
                .iter()
                .filter(|r| r.stamp.is_some_and(|n| foreign.contains(&n)))
                .count();
            assert_eq!(leaked, 0, "{v} got {leaked} packets of the other stream");
            for kind in [Kind::Audio, Kind::Video] {
                check_track(s.client(own), c, kind, None);
            }
        }
    }
}
