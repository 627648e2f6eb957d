//! The worker's timers cost in the peers that are due, not in the peers there are: a wake-up
//! with a thousand idle viewers looks at and handles only the few whose deadline came, and no
//! deadline is lost, whether it comes with many others or moves earlier.

mod sim;

use golive_sfu::{
    CONNECT_TIMEOUT, MediaOptions, PeerId, REPLAY_BURST, REPLAY_INTERVAL, SfuStats, ViewerLeg,
};
use sim::*;

const IDLE_VIEWERS: u64 = 1_000;
/// A wake-up may look at a few entries besides the due peers' (one of a deadline that moved,
/// one of a removed peer); a scan would look at every one of the thousand.
const MAX_ENTRIES_PER_WAKE_UP: u64 = 8;

/// Adds `n` viewers of "live" from `first` on that never connect: their only deadline is
/// [`CONNECT_TIMEOUT`] from now.
fn add_idle_viewers(s: &mut Sim, first: u64, n: u64) -> Vec<PeerId> {
    let media = s.media[&stream("live")].clone();
    let offer = s.viewer_offer();
    (first..first + n)
        .map(|i| {
            let id = PeerId(i);
            s.sfu
                .add_viewer(s.now, id, stream("live"), &media, &offer)
                .expect("viewer answered");
            id
        })
        .collect()
}

/// The peers the SFU reported failed since the last call.
fn failed(s: &mut Sim) -> Vec<PeerId> {
    let mut out: Vec<PeerId> = s.sfu_failed.drain(..).map(|(_, id)| id).collect();
    out.sort();
    out
}

fn delta(before: &SfuStats, after: &SfuStats) -> (u64, u64) {
    (
        after.peer_timeouts - before.peer_timeouts,
        after.timer_entries_popped - before.timer_entries_popped,
    )
}

#[test]
fn a_wake_up_with_a_thousand_idle_viewers_handles_only_the_due_peers() {
    let mut s = Sim::with_options(MediaOptions {
        viewer_leg: ViewerLeg::Lean,
        ..MediaOptions::default()
    });
    if s.sfu.options().viewer_leg != ViewerLeg::Lean {
        // An `rtc` peer connection ticks every 200 ms whether or not it ever connects, so its
        // viewers are never idle: the lean leg's are, until their connect timeout.
        eprintln!("GOLIVE_VIEWER_LEG chose another leg; this test is about the lean one");
        return;
    }
    let publisher = s.add_publisher(PeerId(1), "live", 60);
    s.run_until_connected(&[publisher], ms(5_000));
    s.set_sending(publisher, false);
    let early = add_idle_viewers(&mut s, 100, 3);
    let early_due = s.now + CONNECT_TIMEOUT;
    s.run_for(ms(5_000));
    let idle = add_idle_viewers(&mut s, 1_000, IDLE_VIEWERS);
    let idle_due = s.now + CONNECT_TIMEOUT;
    assert_eq!(s.sfu.peer_count() as u64, 1 + 3 + IDLE_VIEWERS);

    // Until the early viewers' deadline, wake-ups are the publisher's own: each handles at most
    // it, and looks at a handful of entries, not at the thousand idle viewers.
    let mut wake_ups = 0;
    while s.now + STEP < early_due {
        let before = s.sfu.stats().clone();
        s.step();
        let (handled, popped) = delta(&before, s.sfu.stats());
        wake_ups += u64::from(popped > 0);
        assert!(handled <= 1, "{handled} peers handled at {:?}", s.elapsed());
        assert!(
            popped <= MAX_ENTRIES_PER_WAKE_UP,
            "{popped} timer entries looked at, at {:?}",
            s.elapsed()
        );
    }
    assert!(wake_ups > 0, "the publisher's own timers woke the SFU");
    assert!(failed(&mut s).is_empty());

    // The early viewers' deadline: they (and perhaps the publisher) are handled, no idle one.
    let before = s.sfu.stats().clone();
    s.run_for(STEP * 2);
    let (handled, popped) = delta(&before, s.sfu.stats());
    assert!((3..=4).contains(&handled), "{handled} peers handled");
    assert!(popped <= 3 + MAX_ENTRIES_PER_WAKE_UP, "{popped} entries");
    let gone = failed(&mut s);
    assert_eq!(gone, early, "exactly the early viewers gave up");
    assert_eq!(s.sfu.peer_count() as u64, 1 + IDLE_VIEWERS);

    // No timer is lost in a crowd: at their own deadline all thousand go, at once.
    while s.now + STEP < idle_due {
        s.step();
    }
    assert!(failed(&mut s).is_empty());
    s.run_for(STEP * 2);
    let gone = failed(&mut s);
    assert_eq!(gone, idle, "every idle viewer gave up at its deadline");
    assert_eq!(s.sfu.peer_count(), 1);
}

#[test]
fn a_deadline_that_moves_earlier_still_wakes_its_peer() {
    let mut s = Sim::new();
    // One keyframe, then deltas only: the cache grows past one replay burst.
    let publisher = s.add_publisher(PeerId(1), "live", 100_000);
    s.run_until_connected(&[publisher], ms(5_000));
    s.run_for(ms(4_000));
    add_idle_viewers(&mut s, 1_000, IDLE_VIEWERS);
    let late = s.add_viewer(PeerId(2), "live");
    // Scheduled for its connect timeout, 30 s away; connecting starts a replay due in 8 ms.
    s.run_until_connected(&[late], ms(5_000));
    let connected = s.sfu_connected[&late];
    let first_burst = s.sfu.stats().cache_packets_sent;
    assert_eq!(
        first_burst, REPLAY_BURST as u64,
        "the first burst went at once"
    );
    while s.now < connected + REPLAY_INTERVAL {
        s.step();
    }
    assert!(
        s.sfu.stats().cache_packets_sent > first_burst,
        "the replay's next burst went when it was due"
    );
}
