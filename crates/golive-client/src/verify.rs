//! Checking what a viewer received against what its publisher sent. Each check returns a
//! message that says what is wrong, so a failing test explains itself.

use std::time::Instant;

use crate::media::{MediaKind, Stamp, SyntheticPacket, vp8_keyframe_start};

/// What a viewer keeps of an RTP packet it received: the header, and what its payload proved.
#[derive(Debug, Clone, Copy)]
pub struct ReceivedPacket {
    pub kind: MediaKind,
    pub at: Instant,
    pub seq: u16,
    pub ts: u32,
    pub ssrc: u32,
    pub pt: u8,
    pub marker: bool,
    pub payload_len: usize,
    /// The payload's stamp; `None` for a payload no synthetic source made.
    pub stamp: Option<Stamp>,
    /// The payload is, byte for byte, what its stamp says its source made.
    pub exact: bool,
    /// The payload begins a VP8 keyframe.
    pub keyframe_start: bool,
}

impl ReceivedPacket {
    /// Reads and checks one received packet (the whole payload: for tests, not hot paths).
    pub fn inspect(kind: MediaKind, at: Instant, packet: &rtc::rtp::Packet) -> Self {
        let h = &packet.header;
        let stamp = Stamp::read(&packet.payload);
        Self {
            kind,
            at,
            seq: h.sequence_number,
            ts: h.timestamp,
            ssrc: h.ssrc,
            pt: h.payload_type,
            marker: h.marker,
            payload_len: packet.payload.len(),
            stamp,
            exact: stamp.is_some_and(|s| s.matches(&packet.payload)),
            keyframe_start: kind == MediaKind::Video && vp8_keyframe_start(&packet.payload),
        }
    }
}

/// What [`check_track`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TrackRun {
    /// Packets received on the track.
    pub count: usize,
    /// Index, in the publisher's packets of the track, of the first one received.
    pub first_sent_index: usize,
    pub ssrc: u32,
}

/// Checks one track (audio or video) of a viewer against its publisher's packets of that kind:
/// - something arrived, and every payload is exactly what the publisher made;
/// - one SSRC, and the payload type the viewer negotiated;
/// - the payloads are a contiguous run of what was sent, in order (with `complete`, the run
///   reaches the publisher's last packet: nothing is missing at the end either);
/// - sequence numbers without a gap or a repeat;
/// - marker bits and timestamp steps are the publisher's (timestamps may be offset, never
///   stretched).
pub fn check_track(
    sent: &[&SyntheticPacket],
    received: &[&ReceivedPacket],
    payload_type: u8,
    complete: bool,
) -> Result<TrackRun, String> {
    let first = received.first().ok_or("received nothing")?;
    if let Some(r) = received.iter().find(|r| !r.exact) {
        return Err(format!(
            "a payload differs from what was sent (seq {}, {} bytes, stamp {:?})",
            r.seq, r.payload_len, r.stamp
        ));
    }
    if let Some(r) = received.iter().find(|r| r.ssrc != first.ssrc) {
        return Err(format!(
            "more than one SSRC: {:#x} then {:#x} (seq {})",
            first.ssrc, r.ssrc, r.seq
        ));
    }
    if let Some(r) = received.iter().find(|r| r.pt != payload_type) {
        return Err(format!(
            "payload type {} (seq {}), the viewer negotiated {payload_type}",
            r.pt, r.seq
        ));
    }
    let k = sent
        .iter()
        .position(|s| Some(s.stamp) == first.stamp)
        .ok_or_else(|| {
            format!(
                "the first packet ({:?}) is not one the publisher sent",
                first.stamp
            )
        })?;
    for (i, r) in received.iter().enumerate() {
        let Some(s) = sent.get(k + i) else {
            return Err(format!(
                "received packet #{i} ({:?}) is past the end of what was sent ({} from #{k})",
                r.stamp,
                sent.len() - k
            ));
        };
        if r.stamp != Some(s.stamp) {
            let missing = sent[k..]
                .iter()
                .filter(|s| !received.iter().any(|r| r.stamp == Some(s.stamp)))
                .count();
            return Err(format!(
                "received packet #{i} is {:?}, the publisher's #{} was {:?} ({missing} of the \
                 publisher's packets from #{k} never arrived)",
                r.stamp,
                k + i,
                s.stamp
            ));
        }
    }
    if complete && received.len() != sent.len() - k {
        return Err(format!(
            "got {} packets, the publisher sent {} from #{k}",
            received.len(),
            sent.len() - k
        ));
    }
    let seqs: Vec<u16> = received.iter().map(|r| r.seq).collect();
    gap_free(&seqs)?;
    for (i, pair) in received.windows(2).enumerate() {
        let (s0, s1) = (sent[k + i], sent[k + i + 1]);
        let want = s1.ts.wrapping_sub(s0.ts);
        let have = pair[1].ts.wrapping_sub(pair[0].ts);
        if want != have {
            return Err(format!(
                "timestamp step {have} between received packets #{i} and #{}, the publisher's \
                 step was {want}",
                i + 1
            ));
        }
    }
    if let Some((i, r)) = received
        .iter()
        .enumerate()
        .find(|(i, r)| r.marker != sent[k + i].marker)
    {
        return Err(format!(
            "marker bit {} on received packet #{i} (seq {}), the publisher sent {}",
            r.marker,
            r.seq,
            sent[k + i].marker
        ));
    }
    Ok(TrackRun {
        count: received.len(),
        first_sent_index: k,
        ssrc: first.ssrc,
    })
}

/// Checks that every sequence number follows the one before it by exactly one (mod 2^16).
pub fn gap_free(sequence_numbers: &[u16]) -> Result<(), String> {
    for (i, pair) in sequence_numbers.windows(2).enumerate() {
        if pair[1] != pair[0].wrapping_add(1) {
            return Err(format!(
                "sequence number {} follows {} at packet #{} (of {})",
                pair[1],
                pair[0],
                i + 1,
                sequence_numbers.len()
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::{Clock, MediaPlan, SyntheticSource};
    use std::time::Duration;

    /// A second of a source's video, and what a forwarder that changes nothing but the SSRC,
    /// the payload type and the numbering base delivers of it from packet `from` on.
    fn sent_and_forwarded(from: usize) -> (Vec<SyntheticPacket>, Vec<ReceivedPacket>) {
        let t0 = Instant::now();
        let plan = MediaPlan::for_bitrate(500_000, Duration::from_millis(500));
        let mut source = SyntheticSource::new(9, plan, Clock::new(t0, 0));
        source.start(t0);
        let mut sent = Vec::new();
        source.produce(t0, &mut sent);
        source.produce(t0 + Duration::from_secs(1), &mut sent);
        sent.retain(|p| p.kind == MediaKind::Video);
        let received = sent[from..]
            .iter()
            .map(|s| {
                let packet = rtc::rtp::Packet {
                    header: rtc::rtp::Header {
                        sequence_number: s.seq.wrapping_add(1_000),
                        timestamp: s.ts.wrapping_add(77),
                        ssrc: 5,
                        payload_type: 120,
                        marker: s.marker,
                        ..Default::default()
                    },
                    payload: s.payload.clone(),
                };
                ReceivedPacket::inspect(MediaKind::Video, t0, &packet)
            })
            .collect();
        (sent, received)
    }

    fn check(
        sent: &[SyntheticPacket],
        received: &[ReceivedPacket],
        complete: bool,
    ) -> Result<TrackRun, String> {
        let sent: Vec<&SyntheticPacket> = sent.iter().collect();
        let received: Vec<&ReceivedPacket> = received.iter().collect();
        check_track(&sent, &received, 120, complete)
    }

    #[test]
    fn a_faithful_forwarder_passes_from_any_packet_on() {
        let (sent, received) = sent_and_forwarded(4);
        let run = check(&sent, &received, true).unwrap();
        assert_eq!(run.first_sent_index, 4);
        assert_eq!(run.count, sent.len() - 4);
        assert!(received[0].exact && received.iter().all(|r| r.stamp.is_some()));
    }

    #[test]
    fn loss_reordering_and_damage_are_each_caught() {
        let (sent, received) = sent_and_forwarded(0);
        let mut lost = received.clone();
        lost.remove(5);
        assert!(check(&sent, &lost, false).is_err());
        let mut swapped = received.clone();
        swapped.swap(3, 4);
        assert!(check(&sent, &swapped, false).is_err());
        let mut damaged = received.clone();
        damaged[2].exact = false;
        assert!(check(&sent, &damaged, false).is_err());
        let mut tail_missing = received.clone();
        tail_missing.pop();
        assert!(check(&sent, &tail_missing, false).is_ok());
        assert!(check(&sent, &tail_missing, true).is_err());
        assert!(check(&sent, &[], false).is_err());
    }

    #[test]
    fn gap_free_allows_wraparound_only() {
        assert!(gap_free(&[65534, 65535, 0, 1]).is_ok());
        assert!(gap_free(&[1, 2, 4]).is_err());
        assert!(gap_free(&[1, 1]).is_err());
    }
}
