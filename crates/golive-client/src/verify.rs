//! Checking what a viewer received against what its publisher sent. Each check returns a
//! message that says what is wrong, so a failing test explains itself.

use std::time::Instant;

use crate::media::{
    MediaKind, PICTURE_ID_MODULUS, Stamp, SyntheticPacket, Vp8Temporal, vp8_keyframe_start,
};

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
    /// A video payload's picture id, TL0PICIDX, temporal layer and sync bit; `None` when its
    /// VP8 descriptor has no such fields (a stream without temporal layers).
    pub vp8: Option<Vp8Temporal>,
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
            vp8: match kind {
                MediaKind::Video => Vp8Temporal::read(&packet.payload),
                MediaKind::Audio => None,
            },
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

/// What [`check_vp8_pictures`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PictureRun {
    /// Frames received (the packets sharing an RTP timestamp make one frame).
    pub frames: u64,
    /// Of those, the frames of each temporal layer (TID 0 to 3).
    pub frames_per_tid: [u64; 4],
    pub keyframes: u64,
}

/// One frame as a viewer got it: its first packet's descriptor fields.
struct Picture {
    seq: u16,
    vp8: Vp8Temporal,
    keyframe: bool,
}

/// Checks a viewer's VP8 pictures (its video packets with temporal-layer descriptors, in
/// arrival order; they are put in sequence-number order first, and a repeated sequence number
/// counts once), as a decoder would need them when a forwarder drops temporal layers:
/// - every packet of a frame carries the same picture id, TL0PICIDX, TID and Y; the first
///   frame is a keyframe, and every keyframe is of TID 0;
/// - picture ids of consecutive frames are consecutive (mod 2^15): a forwarder that drops
///   frames renumbers the rest;
/// - TL0PICIDX goes up by exactly one at each TID-0 frame and stays the same otherwise
///   (mod 2^8);
/// - every frame of a TID t > 0 is decodable. Such a frame refers to the latest frames of its
///   own and lower layers, back to the last keyframe or the last layer-sync frame (Y=1, which
///   refers to the base layer only) of its layer. In libwebrtc's patterns (L1T2 0,1,…; L1T3
///   0,2,1,2,…) exactly one frame of a lower layer comes between two frames of layer t. So a
///   TID-t frame with Y=0 is decodable when it comes right after a keyframe, or when the frame
///   of layer t before it was decodable, exactly one lower frame came in between, and no lower
///   layer above the base is waiting for its own sync frame. Anything else (the first TID-t
///   frame after a keyframe without Y, a TID-t frame after a stretch in which layer t was
///   dropped while lower layers arrived, one right after another of its layer) is an error
///   naming the frame's picture id.
///
///   A forwarder that drops one frame of layer 1 and the frame of layer 2 just before it looks,
///   from the descriptors alone, like a faithful one until the next frame of layer 1: the
///   check names that frame.
pub fn check_vp8_pictures(packets: &[ReceivedPacket]) -> Result<PictureRun, String> {
    let mut ordered: Vec<(u64, &ReceivedPacket)> = Vec::with_capacity(packets.len());
    let mut highest: Option<u64> = None;
    for p in packets.iter().filter(|p| p.kind == MediaKind::Video) {
        // Unwrap against the highest so far: the nearest extended value with these 16 bits.
        let ext = match highest {
            None => u64::from(p.seq) + (1 << 16),
            Some(h) => (h as i64 + i64::from(p.seq.wrapping_sub(h as u16) as i16)) as u64,
        };
        highest = Some(highest.map_or(ext, |h| h.max(ext)));
        ordered.push((ext, p));
    }
    ordered.sort_by_key(|(ext, _)| *ext);
    ordered.dedup_by_key(|(ext, _)| *ext);
    if ordered.is_empty() {
        return Err("received no video".to_owned());
    }
    // A frame is the run of packets sharing a timestamp: (its timestamp, the frame).
    let mut pictures: Vec<(u32, Picture)> = Vec::new();
    for (_, p) in &ordered {
        let vp8 = p.vp8.ok_or_else(|| {
            format!(
                "packet seq {} has no picture id, TL0PICIDX and TID in its VP8 descriptor",
                p.seq
            )
        })?;
        match pictures.last_mut() {
            Some((ts, picture)) if *ts == p.ts => {
                if vp8 != picture.vp8 {
                    return Err(format!(
                        "packet seq {} carries {vp8:?}, the frame it belongs to (from seq {}) \
                         {:?}",
                        p.seq, picture.seq, picture.vp8
                    ));
                }
                picture.keyframe |= p.keyframe_start;
            }
            _ => pictures.push((
                p.ts,
                Picture {
                    seq: p.seq,
                    vp8,
                    keyframe: p.keyframe_start,
                },
            )),
        }
    }
    let mut run = PictureRun::default();
    // Per temporal layer t: whether its latest frame was decodable and none of it has been
    // missed since, and how many frames of lower layers came since its latest frame.
    let mut in_sync = [false; 4];
    let mut lower_since = [0u32; 4];
    let mut previous: Option<&Picture> = None;
    for (_, picture) in &pictures {
        let v = picture.vp8;
        let t = usize::from(v.tid);
        let name = format!(
            "picture id {} (TID {}, seq {})",
            v.picture_id, v.tid, picture.seq
        );
        match previous {
            None if !picture.keyframe => {
                return Err(format!("{name} is the first frame, and not a keyframe"));
            }
            None => {}
            Some(prev) => {
                let want = (prev.vp8.picture_id + 1) % PICTURE_ID_MODULUS;
                if v.picture_id != want {
                    return Err(format!(
                        "{name} follows picture id {}: {want} was next",
                        prev.vp8.picture_id
                    ));
                }
                let want = prev.vp8.tl0_pic_idx.wrapping_add(u8::from(t == 0));
                if v.tl0_pic_idx != want {
                    return Err(format!(
                        "{name} has TL0PICIDX {} after {}: {want} was next",
                        v.tl0_pic_idx, prev.vp8.tl0_pic_idx
                    ));
                }
            }
        }
        if picture.keyframe {
            if t != 0 {
                return Err(format!("{name} is a keyframe outside the base layer"));
            }
            in_sync = [true, false, false, false];
            lower_since = [0, 1, 1, 1];
        } else {
            for u in t + 1..4 {
                lower_since[u] += 1;
                if lower_since[u] > 1 {
                    // A frame of layer u should have come before this one.
                    in_sync[u] = false;
                }
            }
            if t > 0 {
                let right_after_key = previous.is_some_and(|p| p.keyframe);
                let chained = in_sync[t] && lower_since[t] == 1 && in_sync[1..t].iter().all(|s| *s);
                if !(v.layer_sync || right_after_key || chained) {
                    return Err(format!(
                        "{name} cannot be decoded: {}",
                        if in_sync[t] && lower_since[t] == 0 {
                            "it follows a frame of its own layer with no lower frame between"
                                .to_owned()
                        } else if in_sync[t] {
                            "a lower layer waits for its sync frame".to_owned()
                        } else {
                            format!(
                                "layer {t} was not in sync (since the keyframe or a stretch \
                                 without it) and this is no layer-sync frame"
                            )
                        }
                    ));
                }
                in_sync[t] = true;
                lower_since[t] = 0;
            }
        }
        run.frames += 1;
        run.frames_per_tid[t] += 1;
        run.keyframes += u64::from(picture.keyframe);
        previous = Some(picture);
    }
    Ok(run)
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
    use crate::media::{Clock, MediaPlan, SyntheticSource, Vp8Temporal};
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

    /// Four seconds of an L1T3 source's video (30 fps, a keyframe every second), grouped in
    /// frames.
    fn l1t3_frames() -> Vec<Vec<SyntheticPacket>> {
        let t0 = Instant::now();
        let plan = MediaPlan::for_bitrate(500_000, Duration::from_secs(1)).with_temporal_layers(3);
        let mut source = SyntheticSource::new(9, plan, Clock::new(t0, 0));
        source.start(t0);
        let mut sent = Vec::new();
        for ms in (0..4_000).step_by(10) {
            source.produce(t0 + Duration::from_millis(ms), &mut sent);
        }
        let mut frames: Vec<Vec<SyntheticPacket>> = Vec::new();
        for p in sent.into_iter().filter(|p| p.kind == MediaKind::Video) {
            match frames.last_mut() {
                Some(f) if f[0].ts == p.ts => f.push(p),
                _ => frames.push(vec![p]),
            }
        }
        frames
    }

    /// What a viewer receives of `frames` from a forwarder that passes the frames `keep`
    /// allows, numbers every packet gap-free and, with `renumber`, rewrites picture ids to be
    /// consecutive (TL0PICIDX stays, as one source's base layer is never dropped).
    fn forward(
        frames: &[Vec<SyntheticPacket>],
        renumber: bool,
        mut keep: impl FnMut(usize, &Vp8Temporal) -> bool,
    ) -> Vec<ReceivedPacket> {
        let t0 = Instant::now();
        let mut out = Vec::new();
        let mut seq = 65_530u16;
        let mut picture_id: Option<u16> = None;
        for (i, frame) in frames.iter().enumerate() {
            let v = frame[0].temporal.unwrap();
            if !keep(i, &v) {
                continue;
            }
            let pid = match (renumber, picture_id) {
                (true, Some(prev)) => (prev + 1) % PICTURE_ID_MODULUS,
                _ => v.picture_id,
            };
            picture_id = Some(pid);
            for s in frame {
                let mut payload = s.payload.to_vec();
                payload[2..4].copy_from_slice(&(0x8000 | pid).to_be_bytes());
                let packet = rtc::rtp::Packet {
                    header: rtc::rtp::Header {
                        sequence_number: seq,
                        timestamp: s.ts,
                        marker: s.marker,
                        ..Default::default()
                    },
                    payload: payload.into(),
                };
                seq = seq.wrapping_add(1);
                out.push(ReceivedPacket::inspect(MediaKind::Video, t0, &packet));
            }
        }
        out
    }

    /// Packets made by hand: one per frame, `(keyframe, picture id, TL0PICIDX, TID, Y)`.
    fn crafted(frames: &[(bool, u16, u8, u8, bool)]) -> Vec<ReceivedPacket> {
        let t0 = Instant::now();
        frames
            .iter()
            .enumerate()
            .map(
                |(i, &(key, picture_id, tl0_pic_idx, tid, layer_sync))| ReceivedPacket {
                    kind: MediaKind::Video,
                    at: t0,
                    seq: 65_534u16.wrapping_add(i as u16),
                    ts: 3_000 * i as u32,
                    ssrc: 1,
                    pt: 96,
                    marker: true,
                    payload_len: 100,
                    stamp: None,
                    exact: true,
                    keyframe_start: key,
                    vp8: Some(Vp8Temporal {
                        picture_id,
                        tl0_pic_idx,
                        tid,
                        layer_sync,
                    }),
                },
            )
            .collect()
    }

    #[test]
    fn an_untouched_l1t3_stream_passes_and_counts_frames_per_layer() {
        let frames = l1t3_frames();
        let received = forward(&frames, false, |_, _| true);
        assert!(received.iter().all(|r| r.exact && r.vp8.is_some()));
        let run = check_vp8_pictures(&received).unwrap();
        assert_eq!(run.frames, frames.len() as u64);
        assert_eq!(run.frames, 120);
        assert_eq!(run.keyframes, 4);
        // Each second: a keyframe and 29 frames of the pattern 2,1,2,0,…
        assert_eq!(run.frames_per_tid, [32, 28, 60, 0]);
        // Arrival order does not matter, nor does a repeated packet.
        let mut shuffled = received.clone();
        shuffled.swap(10, 11);
        shuffled.push(received[20]);
        assert_eq!(check_vp8_pictures(&shuffled), Ok(run));
    }

    #[test]
    fn dropping_layers_with_renumbered_picture_ids_passes_and_without_fails() {
        let frames = l1t3_frames();
        let base_and_1 = forward(&frames, true, |_, v| v.tid < 2);
        assert!(
            base_and_1.iter().all(|r| r.exact),
            "rewritten ids still match"
        );
        let run = check_vp8_pictures(&base_and_1).unwrap();
        assert_eq!(run.frames_per_tid, [32, 28, 0, 0]);
        let base = forward(&frames, true, |_, v| v.tid == 0);
        assert_eq!(check_vp8_pictures(&base).unwrap().frames, 32);
        let gaps = forward(&frames, false, |_, v| v.tid < 2);
        let err = check_vp8_pictures(&gaps).unwrap_err();
        assert!(err.contains("was next"), "{err}");
    }

    #[test]
    fn a_layer_resumed_without_a_sync_frame_fails_and_at_a_keyframe_passes() {
        let frames = l1t3_frames();
        // Layer 2 dropped from frame 10 to 19, back at 20 (mid-second: no sync frame).
        let resumed = forward(&frames, true, |i, v| v.tid < 2 || !(10..20).contains(&i));
        let err = check_vp8_pictures(&resumed).unwrap_err();
        // Frame 20 is of layer 0, 21 of layer 2: the first frame that cannot be decoded.
        let r21 = resumed.iter().find(|r| r.ts == frames[21][0].ts).unwrap();
        let pid = r21.vp8.unwrap().picture_id;
        assert!(err.contains(&format!("picture id {pid} (TID 2")), "{err}");
        assert!(err.contains("cannot be decoded"), "{err}");
        // Dropped from frame 10 until the keyframe at 30: fine.
        let at_key = forward(&frames, true, |i, v| v.tid < 2 || !(10..30).contains(&i));
        check_vp8_pictures(&at_key).unwrap();
        // Layer 1 dropped alone for one frame, layer 2 kept: the next layer-2 frame fails.
        let hole = forward(&frames, true, |i, v| !(v.tid == 1 && i == 6));
        let err = check_vp8_pictures(&hole).unwrap_err();
        assert!(err.contains("no lower frame between"), "{err}");
    }

    #[test]
    fn picture_ids_and_tl0_pic_idx_wrap_and_must_step_right() {
        let good = crafted(&[
            (true, 32_766, 255, 0, false),
            (false, 32_767, 255, 2, true),
            (false, 0, 255, 1, true),
            (false, 1, 255, 2, false),
            (false, 2, 0, 0, false),
            (false, 3, 0, 2, false),
        ]);
        let run = check_vp8_pictures(&good).unwrap();
        assert_eq!((run.frames, run.frames_per_tid), (6, [2, 1, 3, 0]));
        let mut pid_skip = good.clone();
        pid_skip[2].vp8.as_mut().unwrap().picture_id = 1;
        assert!(
            check_vp8_pictures(&pid_skip)
                .unwrap_err()
                .contains("picture id 1 ")
        );
        let mut tl0_stuck = good.clone();
        tl0_stuck[4].vp8.as_mut().unwrap().tl0_pic_idx = 255;
        let err = check_vp8_pictures(&tl0_stuck).unwrap_err();
        assert!(err.contains("TL0PICIDX 255 after 255"), "{err}");
        let mut tl0_moved = good.clone();
        tl0_moved[3].vp8.as_mut().unwrap().tl0_pic_idx = 0;
        assert!(
            check_vp8_pictures(&tl0_moved)
                .unwrap_err()
                .contains("TL0PICIDX 0")
        );
    }

    #[test]
    fn first_frames_and_keyframes_and_missing_descriptors_are_checked() {
        let no_key = crafted(&[(false, 5, 1, 0, false), (false, 6, 2, 0, false)]);
        assert!(
            check_vp8_pictures(&no_key)
                .unwrap_err()
                .contains("not a keyframe")
        );
        let key_in_layer_1 = crafted(&[(true, 5, 1, 0, false), (true, 6, 1, 1, false)]);
        let err = check_vp8_pictures(&key_in_layer_1).unwrap_err();
        assert!(err.contains("outside the base layer"), "{err}");
        // Layer 1's first frame after a keyframe, not right after it, without Y.
        let unsynced = crafted(&[
            (true, 5, 1, 0, false),
            (false, 6, 2, 0, false),
            (false, 7, 2, 1, false),
        ]);
        let err = check_vp8_pictures(&unsynced).unwrap_err();
        assert!(
            err.contains("picture id 7 ") && err.contains("not in sync"),
            "{err}"
        );
        // Right after the keyframe, it may refer to the keyframe only: decodable.
        let after_key = crafted(&[(true, 5, 1, 0, false), (false, 6, 1, 1, false)]);
        check_vp8_pictures(&after_key).unwrap();
        let mut bare = after_key.clone();
        bare[1].vp8 = None;
        assert!(
            check_vp8_pictures(&bare)
                .unwrap_err()
                .contains("no picture id")
        );
        assert!(check_vp8_pictures(&[]).is_err());
        // The packets of one frame must agree.
        let mut split = crafted(&[(true, 5, 1, 0, false), (false, 6, 1, 1, true)]);
        split[1].ts = split[0].ts;
        assert!(
            check_vp8_pictures(&split)
                .unwrap_err()
                .contains("the frame it belongs to")
        );
    }
}
