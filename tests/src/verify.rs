//! Checks of what a viewer received against what the publisher sent. Each returns a message that
//! says what is wrong, so a failing test explains itself.

use crate::media::{MediaKind, contiguous_run_of, gap_free, parse_vp8};
use crate::peer::{OPUS_PAYLOAD_TYPE, ReceivedPacket, Record, VP8_PAYLOAD_TYPE};
use anyhow::{Result, bail, ensure};

/// What [`forwarded_faithfully`] found.
#[derive(Debug, Clone, Copy)]
pub struct ForwardedRun {
    /// Packets received on the track.
    pub count: usize,
    /// Index, among the publisher's packets of that kind, of the first one received.
    pub first_sent_index: usize,
    /// The SSRC of the track.
    pub ssrc: u32,
}

/// Checks one track of a viewer against the publisher:
/// - at least `min_packets` arrived;
/// - one SSRC and the payload type the viewer offered for the codec;
/// - sequence numbers without a gap or a repeat;
/// - the payloads are a contiguous run of what the publisher sent, in order, byte for byte;
/// - marker bits and timestamp steps are the publisher's (timestamps may be offset, not
///   stretched).
pub fn forwarded_faithfully(
    publisher: &Record,
    viewer: &Record,
    kind: MediaKind,
    min_packets: usize,
) -> Result<ForwardedRun> {
    let got: Vec<&ReceivedPacket> = viewer.received_of(kind);
    ensure!(
        got.len() >= min_packets,
        "{kind:?}: only {} packets received, expected at least {min_packets} (viewer errors: {:?})",
        got.len(),
        viewer.errors
    );

    let ssrc = got[0].ssrc;
    if let Some(other) = got.iter().find(|p| p.ssrc != ssrc) {
        bail!(
            "{kind:?}: more than one SSRC on the track: {ssrc:#x} then {:#x} (seq {})",
            other.ssrc,
            other.sequence_number
        );
    }
    let expected_pt = match kind {
        MediaKind::Video => VP8_PAYLOAD_TYPE,
        MediaKind::Audio => OPUS_PAYLOAD_TYPE,
    };
    if let Some(p) = got.iter().find(|p| p.payload_type != expected_pt) {
        bail!(
            "{kind:?}: payload type {} (seq {}), the viewer negotiated {expected_pt}",
            p.payload_type,
            p.sequence_number
        );
    }

    let seqs: Vec<u16> = got.iter().map(|p| p.sequence_number).collect();
    gap_free(&seqs).map_err(|e| anyhow::anyhow!("{kind:?}: {e}"))?;

    let sent: Vec<_> = publisher.sent.iter().filter(|p| p.kind == kind).collect();
    let sent_payloads: Vec<_> = sent.iter().map(|p| p.payload.clone()).collect();
    let got_payloads: Vec<_> = got.iter().map(|p| p.payload.clone()).collect();
    let start = contiguous_run_of(&sent_payloads, &got_payloads)
        .map_err(|e| anyhow::anyhow!("{kind:?}: {e}"))?;

    for (i, pair) in got.windows(2).enumerate() {
        let (s0, s1) = (sent[start + i], sent[start + i + 1]);
        let want = s1.timestamp.wrapping_sub(s0.timestamp);
        let have = pair[1].timestamp.wrapping_sub(pair[0].timestamp);
        ensure!(
            want == have,
            "{kind:?}: timestamp step {have} between received packets #{i} and #{}, the publisher's step was {want}",
            i + 1
        );
    }
    for (i, p) in got.iter().enumerate() {
        ensure!(
            p.marker == sent[start + i].marker,
            "{kind:?}: marker bit {} on received packet #{i} (seq {}), the publisher sent {}",
            p.marker,
            p.sequence_number,
            sent[start + i].marker
        );
    }
    Ok(ForwardedRun {
        count: got.len(),
        first_sent_index: start,
        ssrc,
    })
}

/// Checks that the first video packet a viewer received begins a VP8 key frame (S=1, PID=0, P=0).
pub fn first_video_starts_keyframe(viewer: &Record) -> Result<()> {
    let first = viewer
        .received_of(MediaKind::Video)
        .into_iter()
        .next()
        .ok_or_else(|| anyhow::anyhow!("no video received"))?;
    let info = parse_vp8(&first.payload);
    ensure!(
        info.is_some_and(|i| i.starts_keyframe()),
        "the first video packet (seq {}, {} bytes, starts {:02x?}) does not start a key frame: {info:?}",
        first.sequence_number,
        first.payload.len(),
        &first.payload[..first.payload.len().min(12)]
    );
    Ok(())
}
