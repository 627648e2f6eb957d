//! Temporal layers: a VP8 encoder may code its frames in up to four temporal layers (RFC 7741
//! §4.2: the TID of the payload descriptor), each layer referring only to itself and the
//! layers below. Browsers do so for simulcast (libwebrtc: three temporal layers per encoding,
//! half the frames on layer 2, a quarter on each of layers 1 and 0). Dropping the frames above
//! a TID lowers the frame rate, and the bitrate, without a keyframe: the SFU's way to lower a
//! viewer's frame rate before its resolution.
//!
//! Three parts, each per viewer:
//! - [`TemporalFilter`] decides, a frame at a time, whether the viewer gets a frame of its
//!   layer: frames above the TID it is allowed are dropped at once; a higher TID is taken up
//!   only where it can be decoded from what the viewer has (a keyframe, or a *layer sync*
//!   frame of that TID, which refers to layer 0 only).
//! - [`PictureMunger`] keeps the picture ids a viewer sees consecutive where frames were
//!   dropped, and picture ids and TL0PICIDX continuous across a move to another simulcast
//!   layer or a restart: libwebrtc's receiver waits for every picture id it has not seen
//!   before it decodes a frame of a higher layer that follows it.
//! - The header rewriter closes the sequence numbers of dropped packets (see
//!   [`crate::rewrite::HeaderRewriter::drop_packet`]).

use std::time::{Duration, Instant};

/// TIDs are two bits: at most four temporal layers.
pub const MAX_TEMPORAL_LAYERS: usize = 4;
/// A temporal cap that drops nothing.
pub const ALL_TEMPORAL_LAYERS: u8 = (MAX_TEMPORAL_LAYERS - 1) as u8;
/// A viewer allowed a higher TID waits this long for a layer sync frame of it, then asks for a
/// keyframe (encoders send layer sync frames only after a keyframe).
pub const TEMPORAL_UP_WAIT: Duration = Duration::from_secs(1);

/// What a VP8 payload descriptor (RFC 7741 §4.2) says of its packet, where it says it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Vp8Descriptor {
    /// The picture id (7 or 15 bits), if the descriptor carries one.
    pub picture_id: Option<u16>,
    /// The picture id is 15 bits wide (the M bit).
    pub long_picture_id: bool,
    /// TL0PICIDX: counts the frames of temporal layer 0.
    pub tl0_pic_idx: Option<u8>,
    /// The temporal layer of the frame, if the descriptor carries one (the T bit).
    pub tid: Option<u8>,
    /// Y: the frame refers only to frames of layer 0, so layer `tid` can start here.
    pub layer_sync: bool,
    /// Where the picture id starts in the payload (2 when present).
    picture_id_at: u8,
}

impl Vp8Descriptor {
    /// Reads the descriptor at the start of a VP8 payload; `None` when it carries none of the
    /// fields the SFU uses (no extension byte) or is cut short.
    pub fn parse(payload: &[u8]) -> Option<Self> {
        let b0 = *payload.first()?;
        if b0 & 0x80 == 0 {
            return None;
        }
        let b1 = *payload.get(1)?;
        let (has_pid, has_tl0, has_tid, has_key) = (
            b1 & 0x80 != 0,
            b1 & 0x40 != 0,
            b1 & 0x20 != 0,
            b1 & 0x10 != 0,
        );
        let mut at = 2usize;
        let mut d = Self {
            picture_id: None,
            long_picture_id: false,
            tl0_pic_idx: None,
            tid: None,
            layer_sync: false,
            picture_id_at: 2,
        };
        if has_pid {
            let first = *payload.get(at)?;
            if first & 0x80 != 0 {
                let second = *payload.get(at + 1)?;
                d.picture_id = Some(u16::from(first & 0x7f) << 8 | u16::from(second));
                d.long_picture_id = true;
                at += 2;
            } else {
                d.picture_id = Some(u16::from(first));
                at += 1;
            }
        }
        if has_tl0 {
            d.tl0_pic_idx = Some(*payload.get(at)?);
            at += 1;
        }
        if has_tid || has_key {
            let b = *payload.get(at)?;
            if has_tid {
                d.tid = Some(b >> 6);
                d.layer_sync = b & 0x20 != 0;
            }
        }
        Some(d)
    }

    fn picture_mask(&self) -> u16 {
        if self.long_picture_id { 0x7fff } else { 0x7f }
    }
}

/// Bytes of a payload descriptor to overwrite in one viewer's copy of a packet: its picture id
/// and TL0PICIDX, at the same width, so the payload keeps its length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DescriptorPatch {
    at: u8,
    len: u8,
    bytes: [u8; 3],
}

impl DescriptorPatch {
    /// Writes the patch into `payload` (a copy of the packet's payload). A payload too short for
    /// it (never one the patch was made for) is left alone.
    pub fn apply(&self, payload: &mut [u8]) {
        let (at, len) = (usize::from(self.at), usize::from(self.len));
        if let Some(dst) = payload.get_mut(at..at + len) {
            dst.copy_from_slice(&self.bytes[..len]);
        }
    }
}

/// How many recent pictures a munger remembers, for retransmissions of their packets (about
/// two seconds of video at 30 frames a second: a repair that is lost again is asked for again,
/// for up to a second or more on a congested link).
const RECENT_PICTURES: usize = 64;

/// Marks a slot of [`PictureMunger`]'s memory that holds no picture (picture ids are 15 bits).
const NO_PICTURE: u16 = u16::MAX;

/// One viewer's picture ids and TL0PICIDX (see the module docs).
#[derive(Debug)]
pub(crate) struct PictureMunger {
    /// Subtracted from the source's picture id (mod 2^15) and TL0PICIDX (mod 2^8).
    pid_offset: u16,
    tl0_offset: u8,
    last_out: Option<(u16, u8)>,
    /// The newest source picture id forwarded, and the last one dropped.
    newest_in: Option<u16>,
    last_dropped: Option<u16>,
    /// The next forwarded picture starts a new run (a keyframe after a skip or a move to
    /// another layer): it continues the viewer's numbers.
    restart: bool,
    /// Source picture id to the viewer's picture id and TL0PICIDX, by `pid % RECENT_PICTURES`
    /// (the source id with [`NO_PICTURE`] where none is remembered): kept apart, five bytes a
    /// picture.
    recent_in: [u16; RECENT_PICTURES],
    recent_out: [u16; RECENT_PICTURES],
    recent_tl0: [u8; RECENT_PICTURES],
}

/// `a` comes after `b` in the order of picture ids `mask` wide (7 or 15 bits).
fn pid_ahead(a: u16, b: u16, mask: u16) -> bool {
    let d = a.wrapping_sub(b) & mask;
    d != 0 && d <= mask / 2
}

impl PictureMunger {
    pub(crate) fn new() -> Self {
        Self {
            pid_offset: 0,
            tl0_offset: 0,
            last_out: None,
            newest_in: None,
            last_dropped: None,
            restart: true,
            recent_in: [NO_PICTURE; RECENT_PICTURES],
            recent_out: [0; RECENT_PICTURES],
            recent_tl0: [0; RECENT_PICTURES],
        }
    }

    /// The next forwarded picture (a keyframe) continues the viewer's numbering from where it
    /// is, whatever the source's numbers.
    pub(crate) fn restart(&mut self) {
        self.restart = true;
        self.newest_in = None;
        self.last_dropped = None;
    }

    /// A packet of `d` is forwarded: the patch that puts the viewer's numbers into its copy,
    /// `None` when they are the source's own.
    pub(crate) fn forward(&mut self, d: &Vp8Descriptor) -> Option<DescriptorPatch> {
        let pid = d.picture_id?;
        let tl0 = d.tl0_pic_idx.unwrap_or(0);
        if self.restart {
            self.restart = false;
            match self.last_out {
                Some((last_pid, last_tl0)) => {
                    self.pid_offset = pid.wrapping_sub(last_pid.wrapping_add(1)) & 0x7fff;
                    self.tl0_offset = tl0.wrapping_sub(last_tl0.wrapping_add(1));
                }
                None => {
                    self.pid_offset = 0;
                    self.tl0_offset = 0;
                }
            }
        }
        let out_pid = pid.wrapping_sub(self.pid_offset) & 0x7fff;
        let out_tl0 = tl0.wrapping_sub(self.tl0_offset);
        if self
            .newest_in
            .is_none_or(|newest| pid_ahead(pid, newest, d.picture_mask()))
        {
            self.newest_in = Some(pid);
            self.last_out = Some((out_pid, out_tl0));
        }
        let slot = usize::from(pid) % RECENT_PICTURES;
        self.recent_in[slot] = pid;
        self.recent_out[slot] = out_pid;
        self.recent_tl0[slot] = out_tl0;
        Self::patch(d, pid, out_pid, out_tl0)
    }

    /// A packet of `d` is dropped (its temporal layer is above the viewer's): the pictures
    /// after it move down by one, once per picture.
    pub(crate) fn drop_picture(&mut self, d: &Vp8Descriptor) {
        let Some(pid) = d.picture_id else {
            return;
        };
        if self.restart || self.last_dropped == Some(pid) {
            return;
        }
        // Only a picture newer than every one forwarded shifts the numbers after it; a late
        // packet of an older picture changes nothing.
        if self
            .newest_in
            .is_some_and(|newest| !pid_ahead(pid, newest, d.picture_mask()))
        {
            return;
        }
        self.last_dropped = Some(pid);
        self.pid_offset = self.pid_offset.wrapping_add(1) & 0x7fff;
    }

    /// The patch for a retransmission of a packet of `d`: the numbers its picture went out
    /// with. `Err` when the picture is too old to be remembered (its packet must not go out
    /// under numbers it never had).
    pub(crate) fn retransmission(&self, d: &Vp8Descriptor) -> Result<Option<DescriptorPatch>, ()> {
        let Some(pid) = d.picture_id else {
            return Ok(None);
        };
        let slot = usize::from(pid) % RECENT_PICTURES;
        if self.recent_in[slot] != pid {
            return Err(());
        }
        Ok(Self::patch(
            d,
            pid,
            self.recent_out[slot],
            self.recent_tl0[slot],
        ))
    }

    fn patch(d: &Vp8Descriptor, pid: u16, out_pid: u16, out_tl0: u8) -> Option<DescriptorPatch> {
        let mask = d.picture_mask();
        let out_pid = out_pid & mask;
        let tl0 = d.tl0_pic_idx;
        if out_pid == pid & mask && tl0.is_none_or(|t| t == out_tl0) {
            return None;
        }
        let mut bytes = [0u8; 3];
        let mut len = 0usize;
        if d.long_picture_id {
            bytes[0] = 0x80 | (out_pid >> 8) as u8;
            bytes[1] = out_pid as u8;
            len = 2;
        } else {
            bytes[0] = out_pid as u8;
            len += 1;
        }
        if tl0.is_some() {
            bytes[len] = out_tl0;
            len += 1;
        }
        Some(DescriptorPatch {
            at: d.picture_id_at,
            len: len as u8,
            bytes,
        })
    }
}

/// What the temporal filter made of one packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct TemporalVerdict {
    /// The packet's frame is above the viewer's temporal layer: drop it.
    pub(crate) drop: bool,
    /// The viewer's temporal layer changed at this frame.
    pub(crate) switched: bool,
    /// A higher layer has waited [`TEMPORAL_UP_WAIT`] for a layer sync frame: ask for a
    /// keyframe of the viewer's layer.
    pub(crate) wants_keyframe: bool,
}

/// Which temporal layers of its simulcast layer a viewer gets (see the module docs).
#[derive(Debug, Clone)]
pub(crate) struct TemporalFilter {
    /// The highest TID forwarded now.
    active: u8,
    /// The frame last decided (its layer and timestamp) and whether it goes: every packet of a
    /// frame shares the decision.
    frame: Option<(u8, u32, bool)>,
    /// Since when the viewer may take a higher layer than it does.
    up_since: Option<Instant>,
}

impl Default for TemporalFilter {
    fn default() -> Self {
        Self {
            active: ALL_TEMPORAL_LAYERS,
            frame: None,
            up_since: None,
        }
    }
}

impl TemporalFilter {
    /// One video packet of the viewer's simulcast layer `layer`, under the viewer's `cap` (the
    /// highest TID it may have now) and the highest TID the layer has been seen to carry.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn offer(
        &mut self,
        now: Instant,
        layer: u8,
        timestamp: u32,
        keyframe_start: bool,
        descriptor: Option<&Vp8Descriptor>,
        cap: u8,
        layer_max_tid: u8,
    ) -> TemporalVerdict {
        let mut v = TemporalVerdict::default();
        let cap = cap.min(layer_max_tid);
        let Some((tid, sync)) = descriptor.and_then(|d| d.tid.map(|t| (t, d.layer_sync))) else {
            return v;
        };
        if let Some((l, ts, send)) = self.frame
            && l == layer
            && ts == timestamp
            && !keyframe_start
        {
            v.drop = !send;
            return v;
        }
        let before = self.active;
        if keyframe_start {
            // Every layer can start at a keyframe.
            self.active = cap;
        } else if cap < self.active {
            self.active = cap;
        } else if cap > self.active && sync && tid > self.active && tid <= cap {
            self.active = tid;
        }
        if self.active < cap {
            let since = *self.up_since.get_or_insert(now);
            if now.saturating_duration_since(since) >= TEMPORAL_UP_WAIT {
                v.wants_keyframe = true;
                self.up_since = Some(now);
            }
        } else {
            self.up_since = None;
        }
        v.switched = self.active != before;
        let send = tid <= self.active;
        self.frame = Some((layer, timestamp, send));
        v.drop = !send;
        v
    }

    /// The highest TID forwarded now.
    #[cfg(test)]
    pub(crate) fn active(&self) -> u8 {
        self.active
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An extended descriptor as libwebrtc writes it: 15-bit picture id, TL0PICIDX, TID, Y.
    fn vp8(start: bool, pid: u16, tl0: u8, tid: u8, sync: bool) -> Vec<u8> {
        vec![
            0x80 | if start { 0x10 } else { 0 },
            0xe0,
            0x80 | (pid >> 8) as u8,
            pid as u8,
            tl0,
            tid << 6 | if sync { 0x20 } else { 0 },
            0xaa,
        ]
    }

    #[test]
    fn descriptors_are_read_with_every_field_width() {
        let d = Vp8Descriptor::parse(&vp8(true, 0x1234, 7, 2, true)).unwrap();
        assert_eq!(d.picture_id, Some(0x1234));
        assert!(d.long_picture_id);
        assert_eq!(d.tl0_pic_idx, Some(7));
        assert_eq!(d.tid, Some(2));
        assert!(d.layer_sync);
        // 7-bit picture id, no TL0PICIDX, TID without Y.
        let d = Vp8Descriptor::parse(&[0x90, 0xa0, 0x05, 0x40, 0x00]).unwrap();
        assert_eq!(d.picture_id, Some(5));
        assert!(!d.long_picture_id);
        assert_eq!((d.tl0_pic_idx, d.tid, d.layer_sync), (None, Some(1), false));
        // K alone takes the TID byte without a TID.
        let d = Vp8Descriptor::parse(&[0x90, 0x10, 0xc0]).unwrap();
        assert_eq!(d.tid, None);
        // No extension, cut short, empty.
        assert_eq!(Vp8Descriptor::parse(&[0x10, 0x00]), None);
        assert_eq!(Vp8Descriptor::parse(&[0x90, 0xe0, 0x81]), None);
        assert_eq!(Vp8Descriptor::parse(&[0x90, 0xe0, 0x81, 0x00, 0x01]), None);
        assert_eq!(Vp8Descriptor::parse(&[]), None);
    }

    fn run(m: &mut PictureMunger, pid: u16, tl0: u8, tid: u8) -> (u16, u8) {
        let mut p = vp8(true, pid, tl0, tid, false);
        let d = Vp8Descriptor::parse(&p).unwrap();
        if let Some(patch) = m.forward(&d) {
            patch.apply(&mut p);
        }
        let out = Vp8Descriptor::parse(&p).unwrap();
        (out.picture_id.unwrap(), out.tl0_pic_idx.unwrap())
    }

    #[test]
    fn dropped_pictures_leave_no_gap_in_picture_ids() {
        let mut m = PictureMunger::new();
        // Source pictures 32766, 32767 (T2, dropped), 0 (T1), 1 (T2, dropped), 2 (T0).
        assert_eq!(run(&mut m, 32766, 9, 0), (32766, 9));
        m.drop_picture(&Vp8Descriptor::parse(&vp8(true, 32767, 9, 2, false)).unwrap());
        assert_eq!(run(&mut m, 0, 9, 1), (32767, 9));
        m.drop_picture(&Vp8Descriptor::parse(&vp8(true, 1, 9, 2, false)).unwrap());
        // A second packet of the same dropped picture shifts nothing more.
        m.drop_picture(&Vp8Descriptor::parse(&vp8(false, 1, 9, 2, false)).unwrap());
        assert_eq!(run(&mut m, 2, 10, 0), (0, 10));
        // Retransmissions go out under the numbers their picture had.
        let d = Vp8Descriptor::parse(&vp8(false, 0, 9, 1, false)).unwrap();
        let mut p = vp8(false, 0, 9, 1, false);
        m.retransmission(&d).unwrap().unwrap().apply(&mut p);
        assert_eq!(Vp8Descriptor::parse(&p).unwrap().picture_id, Some(32767));
        // One never seen (or long gone) is refused.
        let old = Vp8Descriptor::parse(&vp8(false, 500, 9, 1, false)).unwrap();
        assert!(m.retransmission(&old).is_err());
    }

    #[test]
    fn a_restart_continues_the_viewers_numbers() {
        let mut m = PictureMunger::new();
        assert_eq!(run(&mut m, 100, 250, 0), (100, 250));
        assert_eq!(run(&mut m, 101, 250, 1), (101, 250));
        // Another simulcast layer, unrelated numbers, from its keyframe.
        m.restart();
        assert_eq!(run(&mut m, 20_000, 3, 0), (102, 251));
        assert_eq!(run(&mut m, 20_001, 4, 0), (103, 252));
        // Untouched numbers need no patch.
        let mut fresh = PictureMunger::new();
        let d = Vp8Descriptor::parse(&vp8(true, 5, 5, 0, false)).unwrap();
        assert_eq!(fresh.forward(&d), None);
    }

    #[test]
    fn short_picture_ids_wrap_at_seven_bits() {
        let mut m = PictureMunger::new();
        let mut p = vec![0x90, 0x80, 0x7f, 0x00];
        let d = Vp8Descriptor::parse(&p).unwrap();
        assert_eq!(m.forward(&d), None);
        m.drop_picture(&Vp8Descriptor::parse(&[0x90, 0x80, 0x00, 0x00]).unwrap());
        p[2] = 0x01;
        let d = Vp8Descriptor::parse(&p).unwrap();
        m.forward(&d).unwrap().apply(&mut p);
        assert_eq!(p[2], 0x00);
    }

    fn offer(
        f: &mut TemporalFilter,
        now: Instant,
        ts: u32,
        key: bool,
        tid: u8,
        sync: bool,
        cap: u8,
    ) -> TemporalVerdict {
        let p = vp8(true, 0, 0, tid, sync);
        let d = Vp8Descriptor::parse(&p).unwrap();
        f.offer(now, 0, ts, key, Some(&d), cap, 2)
    }

    #[test]
    fn frames_above_the_cap_are_dropped_at_once_and_taken_up_at_a_sync_frame() {
        let t0 = Instant::now();
        let mut f = TemporalFilter::default();
        // L1T3: 0 2 1 2 0 ...; everything goes under no cap.
        assert!(!offer(&mut f, t0, 0, true, 0, false, 2).drop);
        assert!(!offer(&mut f, t0, 1, false, 2, true, 2).drop);
        // A second packet of the frame shares its verdict.
        assert!(!offer(&mut f, t0, 1, false, 2, true, 2).drop);
        // The cap falls to 0: the next T1 and T2 frames go, T0 stays.
        let v = offer(&mut f, t0, 2, false, 1, false, 0);
        assert!(v.drop && v.switched);
        assert!(offer(&mut f, t0, 3, false, 2, false, 0).drop);
        assert!(!offer(&mut f, t0, 4, false, 0, false, 0).drop);
        // The cap rises: T1 and T2 frames without Y cannot be decoded; they wait.
        assert!(offer(&mut f, t0, 5, false, 2, false, 2).drop);
        assert!(offer(&mut f, t0, 6, false, 1, false, 2).drop);
        assert_eq!(f.active(), 0);
        // A layer sync frame of T1 takes T1 up, not T2 yet.
        let v = offer(&mut f, t0, 7, false, 1, true, 2);
        assert!(!v.drop && v.switched);
        assert!(offer(&mut f, t0, 8, false, 2, false, 2).drop);
        // No sync frame of T2 for a second: a keyframe is asked for, once a wait.
        let t1 = t0 + TEMPORAL_UP_WAIT;
        assert!(offer(&mut f, t1, 9, false, 2, false, 2).wants_keyframe);
        assert!(!offer(&mut f, t1, 10, false, 0, false, 2).wants_keyframe);
        // The keyframe takes every allowed layer up.
        assert!(!offer(&mut f, t1, 11, true, 0, false, 2).drop);
        assert!(!offer(&mut f, t1, 12, false, 2, false, 2).drop);
        assert_eq!(f.active(), 2);
    }

    #[test]
    fn packets_without_a_tid_always_go() {
        let mut f = TemporalFilter::default();
        let v = f.offer(Instant::now(), 0, 1, false, None, 0, 2);
        assert_eq!(v, TemporalVerdict::default());
        let d = Vp8Descriptor::parse(&[0x90, 0x80, 0x05, 0x00]).unwrap();
        assert!(!f.offer(Instant::now(), 0, 1, false, Some(&d), 0, 2).drop);
    }
}
