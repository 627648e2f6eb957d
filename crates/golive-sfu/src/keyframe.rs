//! Where a decoder can start: the first packet of a keyframe, read from the RTP payload
//! header of each codec. The SFU starts every viewer's video at such a packet, so the
//! viewer's decoder never sees a delta frame without its reference.

use crate::codec::VideoCodec;

/// Whether `payload` (an RTP payload of `codec`) begins a keyframe that a decoder can
/// start from. Malformed or truncated payloads are never keyframe starts.
pub fn is_keyframe_start(codec: VideoCodec, payload: &[u8]) -> bool {
    match codec {
        VideoCodec::Vp8 => vp8(payload),
        VideoCodec::Vp9 => vp9(payload),
        VideoCodec::H264 => h264(payload),
        VideoCodec::Av1 => av1(payload),
    }
}

/// RFC 7741 §4.2: payload descriptor, then (on the frame's first packet) the VP8 frame tag
/// whose lowest bit is the inverse keyframe flag.
fn vp8(p: &[u8]) -> bool {
    let Some(&first) = p.first() else {
        return false;
    };
    let extended = first & 0x80 != 0;
    let start = first & 0x10 != 0;
    let partition = first & 0x07;
    if !start || partition != 0 {
        return false;
    }
    let mut at = 1;
    if extended {
        let Some(&x) = p.get(at) else { return false };
        at += 1;
        if x & 0x80 != 0 {
            // PictureID: one or two bytes (M bit).
            let Some(&pid) = p.get(at) else { return false };
            at += if pid & 0x80 != 0 { 2 } else { 1 };
        }
        if x & 0x40 != 0 {
            at += 1; // TL0PICIDX
        }
        if x & 0x30 != 0 {
            at += 1; // TID/Y/KEYIDX
        }
    }
    p.get(at).is_some_and(|tag| tag & 0x01 == 0)
}

/// draft-ietf-payload-vp9 §4.2: I|P|L|F|B|E|V|Z. A keyframe start is a packet that begins a
/// frame (B) that is not inter-predicted (P clear) in the lowest spatial layer.
fn vp9(p: &[u8]) -> bool {
    let Some(&first) = p.first() else {
        return false;
    };
    let inter_predicted = first & 0x40 != 0;
    let layer_indices = first & 0x20 != 0;
    let begins_frame = first & 0x08 != 0;
    if inter_predicted || !begins_frame {
        return false;
    }
    if !layer_indices {
        return true;
    }
    let mut at = 1;
    if first & 0x80 != 0 {
        let Some(&pid) = p.get(at) else { return false };
        at += if pid & 0x80 != 0 { 2 } else { 1 };
    }
    // Layer indices: TID(3) U(1) SID(3) D(1); spatial layer 0 only.
    p.get(at).is_some_and(|l| (l >> 1) & 0x07 == 0)
}

const H264_NAL_IDR: u8 = 5;
const H264_NAL_SPS: u8 = 7;
const H264_STAP_A: u8 = 24;
const H264_FU_A: u8 = 28;

/// RFC 6184: a keyframe start carries the SPS (alone or in a STAP-A), or begins an IDR slice.
fn h264(p: &[u8]) -> bool {
    let Some(&first) = p.first() else {
        return false;
    };
    match first & 0x1f {
        H264_NAL_SPS | H264_NAL_IDR => true,
        H264_STAP_A => {
            let mut at = 1;
            while at + 2 < p.len() {
                let size = usize::from(u16::from_be_bytes([p[at], p[at + 1]]));
                let Some(&nal) = p.get(at + 2) else {
                    return false;
                };
                if matches!(nal & 0x1f, H264_NAL_SPS | H264_NAL_IDR) {
                    return true;
                }
                if size == 0 {
                    return false;
                }
                at += 2 + size;
            }
            false
        }
        H264_FU_A => p
            .get(1)
            .is_some_and(|fu| fu & 0x80 != 0 && fu & 0x1f == H264_NAL_IDR),
        _ => false,
    }
}

/// AV1 RTP payload format §4.4: the aggregation header's N bit marks the first packet of a
/// coded video sequence, which starts with a keyframe; Z clear means no continued OBU.
fn av1(p: &[u8]) -> bool {
    p.first().is_some_and(|h| h & 0x08 != 0 && h & 0x80 == 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vp8_keyframe_and_delta() {
        assert!(is_keyframe_start(
            VideoCodec::Vp8,
            &[0x10, 0x00, 0x9d, 0x01, 0x2a]
        ));
        assert!(!is_keyframe_start(VideoCodec::Vp8, &[0x10, 0x01, 0x00]));
        // Not the start of the partition.
        assert!(!is_keyframe_start(VideoCodec::Vp8, &[0x00, 0x00]));
        // Extended descriptor with a 15-bit picture id, then a keyframe tag.
        assert!(is_keyframe_start(
            VideoCodec::Vp8,
            &[0x90, 0x80, 0x81, 0x23, 0x50]
        ));
        assert!(!is_keyframe_start(
            VideoCodec::Vp8,
            &[0x90, 0x80, 0x81, 0x23, 0x51]
        ));
        // Truncated.
        assert!(!is_keyframe_start(VideoCodec::Vp8, &[0x90, 0x80]));
        assert!(!is_keyframe_start(VideoCodec::Vp8, &[]));
    }

    #[test]
    fn vp9_keyframe_and_delta() {
        assert!(is_keyframe_start(VideoCodec::Vp9, &[0x08, 0x00]));
        assert!(!is_keyframe_start(VideoCodec::Vp9, &[0x48, 0x00]));
        assert!(!is_keyframe_start(VideoCodec::Vp9, &[0x00, 0x00]));
        // With picture id and layer indices, spatial layer 0 then 1.
        assert!(is_keyframe_start(VideoCodec::Vp9, &[0xa8, 0x05, 0x00]));
        assert!(!is_keyframe_start(VideoCodec::Vp9, &[0xa8, 0x05, 0x02]));
        assert!(!is_keyframe_start(VideoCodec::Vp9, &[0xa8]));
    }

    #[test]
    fn h264_keyframe_forms() {
        assert!(is_keyframe_start(VideoCodec::H264, &[0x67, 0x42]));
        assert!(is_keyframe_start(VideoCodec::H264, &[0x65, 0x88]));
        assert!(!is_keyframe_start(VideoCodec::H264, &[0x41, 0x9a]));
        // STAP-A holding SPS then PPS.
        assert!(is_keyframe_start(
            VideoCodec::H264,
            &[0x78, 0x00, 0x02, 0x67, 0x42, 0x00, 0x02, 0x68, 0xce]
        ));
        // STAP-A with a bogus size does not run off the end.
        assert!(!is_keyframe_start(
            VideoCodec::H264,
            &[0x78, 0xff, 0xff, 0x41]
        ));
        assert!(!is_keyframe_start(
            VideoCodec::H264,
            &[0x78, 0x00, 0x00, 0x41]
        ));
        // FU-A start of an IDR, and its middle.
        assert!(is_keyframe_start(VideoCodec::H264, &[0x7c, 0x85, 0x00]));
        assert!(!is_keyframe_start(VideoCodec::H264, &[0x7c, 0x05, 0x00]));
        assert!(!is_keyframe_start(VideoCodec::H264, &[0x7c]));
    }

    #[test]
    fn av1_new_sequence() {
        assert!(is_keyframe_start(VideoCodec::Av1, &[0x18]));
        assert!(!is_keyframe_start(VideoCodec::Av1, &[0x10]));
        assert!(!is_keyframe_start(VideoCodec::Av1, &[0x98]));
        assert!(!is_keyframe_start(VideoCodec::Av1, &[]));
    }
}
