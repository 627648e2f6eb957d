//! What one viewer's bandwidth estimator holds on the heap: the send log, the rate window and
//! the feedback scratch, after creation and after ten seconds of 2.5 Mbit/s with feedback every
//! 100 ms. A figure printed for BENCHMARKS.md, and a ceiling: the estimator is per viewer, and a
//! viewer's whole budget is 50 KB.
//!
//! `cargo test -p golive-sfu --test bwe_memory -- --nocapture`

mod heap;
use golive_sfu::bwe::Estimator;
use heap::live_heap;
use rtc::rtcp::transport_feedbacks::transport_layer_cc::{
    PacketStatusChunk, RecvDelta, RunLengthChunk, StatusChunkTypeTcc, SymbolTypeTcc,
    TransportLayerCc,
};
use std::time::{Duration, Instant};

const ESTIMATORS: usize = 100;
/// 2.5 Mbit/s of 1,200-byte datagrams and 50 audio packets a second.
const PACKETS_PER_SECOND: u64 = 310;

fn all_received(base: u16, count: u16, reference_time: u32, fb: u8) -> TransportLayerCc {
    TransportLayerCc {
        sender_ssrc: 1,
        media_ssrc: 2,
        base_sequence_number: base,
        packet_status_count: count,
        reference_time,
        fb_pkt_count: fb,
        packet_chunks: vec![PacketStatusChunk::RunLengthChunk(RunLengthChunk {
            type_tcc: StatusChunkTypeTcc::RunLengthChunk,
            packet_status_symbol: SymbolTypeTcc::PacketReceivedSmallDelta,
            run_length: count,
        })],
        recv_deltas: (0..count)
            .map(|_| RecvDelta {
                type_tcc_packet: SymbolTypeTcc::PacketReceivedSmallDelta,
                delta: 3_000,
            })
            .collect(),
    }
}

#[test]
fn an_estimator_holds_a_few_kilobytes() {
    let before = live_heap();
    let mut estimators: Vec<Estimator> = (0..ESTIMATORS)
        .map(|_| Estimator::new(20_000_000.0))
        .collect();
    let created = (live_heap() - before) / ESTIMATORS as i128;

    let start = Instant::now();
    let per_feedback = (PACKETS_PER_SECOND / 10) as u16;
    let mut base = 0u16;
    for tick in 0..100u32 {
        let now = start + Duration::from_millis(100 * u64::from(tick));
        for e in &mut estimators {
            for i in 0..per_feedback {
                let id = e.stamp(now + Duration::from_micros(u64::from(i) * 3_000), 1_200);
                assert_eq!(id, base.wrapping_add(i));
            }
        }
        let feedback = all_received(base, per_feedback, tick * 100 / 64, tick as u8);
        for e in &mut estimators {
            e.on_twcc(now + Duration::from_millis(99), &feedback)
                .expect("well-formed feedback");
        }
        base = base.wrapping_add(per_feedback);
    }
    let running = (live_heap() - before) / ESTIMATORS as i128;
    eprintln!("an estimator's heap: {created} B when created, {running} B after 10 s of feedback");
    assert!(
        running < 20_000,
        "an estimator holds {running} B: too much of a viewer's 50 KB"
    );
    drop(estimators);
}
