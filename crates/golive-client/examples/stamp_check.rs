//! What checking a received payload costs: `Stamp::matches_quickly` (a load-testing viewer's
//! check of every packet) and `Stamp::matches` (the full check of the tests), on the video
//! packets of a 2.5 Mbit/s source with one temporal layer (the one-byte VP8 descriptor) and with
//! three (the extended descriptor), in one run. Prints the median of five rounds, in ns per
//! check.
//!
//! `cargo run --release -p golive-client --example stamp_check`

use golive_client::{Clock, MediaKind, MediaPlan, SyntheticPacket, SyntheticSource};
use std::hint::black_box;
use std::time::{Duration, Instant};

const ROUNDS: usize = 5;
const PASSES: usize = 200;

fn video(layers: u8) -> Vec<SyntheticPacket> {
    let t0 = Instant::now();
    let plan =
        MediaPlan::for_bitrate(2_500_000, Duration::from_secs(2)).with_temporal_layers(layers);
    let mut source = SyntheticSource::new(1, plan, Clock::new(t0, 0));
    source.start(t0);
    let mut out = Vec::new();
    // The schedule begins at the first call: four seconds of frames come due at the second.
    source.produce(t0, &mut out);
    source.produce(t0 + Duration::from_secs(4), &mut out);
    out.retain(|p| p.kind == MediaKind::Video);
    out
}

/// Median ns per check of `check` over every packet, `PASSES` times.
fn time(packets: &[SyntheticPacket], check: impl Fn(&SyntheticPacket) -> bool) -> f64 {
    let mut per_check: Vec<f64> = (0..ROUNDS)
        .map(|_| {
            let start = Instant::now();
            let mut ok = 0usize;
            for _ in 0..PASSES {
                for p in packets {
                    ok += usize::from(check(black_box(p)));
                }
            }
            assert_eq!(
                ok,
                PASSES * packets.len(),
                "every payload matches its stamp"
            );
            start.elapsed().as_nanos() as f64 / (PASSES * packets.len()) as f64
        })
        .collect();
    per_check.sort_by(f64::total_cmp);
    per_check[ROUNDS / 2]
}

fn main() {
    println!("temporal layers  packets  matches_quickly ns  matches ns");
    for layers in [1, 3] {
        let packets = video(layers);
        let quick = time(&packets, |p| p.stamp.matches_quickly(&p.payload));
        let full = time(&packets, |p| p.stamp.matches(&p.payload));
        println!(
            "{layers:>15}  {:>7}  {quick:>18.1}  {full:>10.1}",
            packets.len()
        );
    }
}
