//! The lean viewer leg forwards without touching the heap: a counting allocator watches the
//! core while it fans packets out to ten connected viewers (half of them browsers, whose
//! packets are stamped for their bandwidth estimate) and the shell drains the batches.

mod heap;
mod sim;

use bytes::Bytes;
use golive_sfu::{MediaKind, MediaOptions, PeerId, SourcePacket, ViewerLeg};
use heap::GLOBAL;
use sim::*;
use stats_alloc::Region;

const VIEWERS: u64 = 10;
const WARM_UP_PACKETS: u16 = 2_000;
const MEASURED_PACKETS: u16 = 5_000;

#[test]
fn forwarding_to_lean_viewers_allocates_nothing_per_packet() {
    let mut s = Sim::with_options(MediaOptions {
        viewer_leg: ViewerLeg::Lean,
        // The cache restarts at keyframes and may ask the broadcaster for one (through `rtc`):
        // not the forwarding path this test watches.
        keyframe_cache: false,
        ..MediaOptions::default()
    });
    if s.sfu.options().viewer_leg != ViewerLeg::Lean {
        eprintln!("GOLIVE_VIEWER_LEG chose another leg; this test is about the lean one");
        return;
    }
    let publisher = s.add_publisher(PeerId(1), "live", 60);
    let mut ids = vec![publisher];
    // Half of them browsers: every packet stamped with a transport-wide sequence number and
    // its extension block written, as for Chromium.
    ids.extend((0..VIEWERS).map(|i| {
        if i % 2 == 0 {
            s.add_viewer(PeerId(10 + i), "live")
        } else {
            s.add_browser_viewer_with_rtx(PeerId(10 + i), "live")
        }
    }));
    s.run_until_connected(&ids, ms(5_000));
    s.set_sending(publisher, false);

    // Packets as another worker's broadcaster shares them: one payload, shared by every viewer.
    let mut packet = SourcePacket {
        stream: stream("live"),
        epoch: 7,
        layer: golive_sfu::Layer::LOWEST,
        kind: MediaKind::Video,
        keyframe_start: true,
        seq: 0,
        timestamp: 0,
        marker: true,
        payload: Bytes::from(vec![0x10; 1_100]),
        capture_time: None,
        vp8: None,
    };
    let mut now = s.now;
    let mut forward = |s: &mut Sim, seq: u16, now: std::time::Instant| -> usize {
        packet.seq = seq;
        packet.timestamp = u32::from(seq) * 3_000;
        packet.keyframe_start = seq == 0;
        s.sfu.handle_media(now, &packet);
        let mut bytes = 0;
        while let Some(b) = s.sfu.poll_batch() {
            bytes += b.data.len();
        }
        bytes
    };
    // Warm up: the history and every viewer's send buffer reach their working size.
    for seq in 0..WARM_UP_PACKETS {
        now += std::time::Duration::from_micros(300);
        forward(&mut s, seq, now);
    }
    let forwarded_before = s.sfu.stats().rtp_forwarded;
    let region = Region::new(GLOBAL);
    let mut bytes = 0;
    for seq in WARM_UP_PACKETS..WARM_UP_PACKETS + MEASURED_PACKETS {
        now += std::time::Duration::from_micros(300);
        bytes += forward(&mut s, seq, now);
    }
    let change = region.change();
    let forwarded = s.sfu.stats().rtp_forwarded - forwarded_before;
    assert_eq!(
        forwarded,
        u64::from(MEASURED_PACKETS) * VIEWERS,
        "every viewer got every packet"
    );
    assert!(
        bytes > 1_100 * forwarded as usize,
        "the batches carried the packets"
    );
    assert_eq!(
        (change.allocations, change.reallocations),
        (0, 0),
        "{forwarded} packets forwarded: {change:?}"
    );
}
