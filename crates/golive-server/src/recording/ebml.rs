//! The small part of EBML (RFC 8794) a WebM writer needs: element ids, variable-size integers,
//! and unsigned, float, string, binary and master elements built in memory.
//!
//! Why our own rather than a crate: a recorder writes about twenty element kinds, always the
//! same ones, and must patch three of them in place when the broadcast ends (segment size,
//! duration, seek head). The `webm` crate wraps libwebm (C++, a g++ build), and the pure-Rust
//! `webm-iterable`/`ebml-iterable` pair carries the whole Matroska spec as one enum to write
//! tags as a stream, with no place to reserve and rewrite a region. These hundred lines have
//! no dependency and do exactly that.

/// The "unknown" size (all ones in an 8-byte vint): a Segment still being written.
pub const UNKNOWN_SIZE: [u8; 8] = [0x01, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff];
/// The Void element, for reserved space.
pub const VOID: u32 = 0xec;

/// Appends an element id (ids carry their own length marker, so they are written as is).
pub fn put_id(out: &mut Vec<u8>, id: u32) {
    let bytes = id.to_be_bytes();
    let skip = (id.leading_zeros() / 8) as usize;
    out.extend_from_slice(&bytes[skip.min(3)..]);
}

/// Appends `size` as the shortest vint that holds it (the all-ones value of each length is
/// reserved for "unknown", so it is avoided).
pub fn put_size(out: &mut Vec<u8>, size: u64) {
    let len = (1..=8).find(|&n| size < (1u64 << (7 * n)) - 1).unwrap_or(8);
    put_size_len(out, size, len);
}

/// Appends `size` as a vint of exactly `len` bytes (for sizes patched in place).
pub fn put_size_len(out: &mut Vec<u8>, size: u64, len: usize) {
    let marked = size | (1u64 << (7 * len));
    out.extend_from_slice(&marked.to_be_bytes()[8 - len..]);
}

pub fn put_uint(out: &mut Vec<u8>, id: u32, v: u64) {
    put_id(out, id);
    let len = (8 - (v.leading_zeros() / 8) as usize).max(1);
    put_size(out, len as u64);
    out.extend_from_slice(&v.to_be_bytes()[8 - len..]);
}

pub fn put_float(out: &mut Vec<u8>, id: u32, v: f64) {
    put_id(out, id);
    put_size(out, 8);
    out.extend_from_slice(&v.to_be_bytes());
}

pub fn put_bytes(out: &mut Vec<u8>, id: u32, v: &[u8]) {
    put_id(out, id);
    put_size(out, v.len() as u64);
    out.extend_from_slice(v);
}

pub fn put_str(out: &mut Vec<u8>, id: u32, v: &str) {
    put_bytes(out, id, v.as_bytes());
}

/// Appends a master element whose children `build` writes.
pub fn put_master(out: &mut Vec<u8>, id: u32, build: impl FnOnce(&mut Vec<u8>)) {
    let mut body = Vec::new();
    build(&mut body);
    put_bytes(out, id, &body);
}

/// A Void element exactly `len` bytes long in all (`len` ≥ 2).
pub fn void(len: usize) -> Vec<u8> {
    assert!(len >= 2, "a Void element takes at least two bytes");
    let mut out = vec![VOID as u8];
    // One size byte holds up to 126; beyond, eight bytes always do.
    let (size_len, body) = if len - 2 <= 126 {
        (1, len - 2)
    } else {
        (8, len - 9)
    };
    put_size_len(&mut out, body as u64, size_len);
    out.resize(len, 0);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_sizes_and_integers_have_their_shortest_forms() {
        let mut v = Vec::new();
        put_id(&mut v, 0x1a45_dfa3);
        put_id(&mut v, 0x4286);
        put_id(&mut v, 0xa3);
        assert_eq!(v, [0x1a, 0x45, 0xdf, 0xa3, 0x42, 0x86, 0xa3]);
        let sized = |n| {
            let mut v = Vec::new();
            put_size(&mut v, n);
            v
        };
        assert_eq!(sized(0), [0x80]);
        assert_eq!(sized(126), [0xfe]);
        // 127 would be all ones in one byte ("unknown"): two bytes.
        assert_eq!(sized(127), [0x40, 0x7f]);
        assert_eq!(sized(0x3fff), [0x20, 0x3f, 0xff]);
        let mut v = Vec::new();
        put_uint(&mut v, 0xd7, 0);
        put_uint(&mut v, 0x2a_d7b1, 1_000_000);
        assert_eq!(
            v,
            [0xd7, 0x81, 0x00, 0x2a, 0xd7, 0xb1, 0x83, 0x0f, 0x42, 0x40]
        );
    }

    #[test]
    fn void_fills_exactly() {
        for len in [2, 3, 128, 129, 130, 5000] {
            let v = void(len);
            assert_eq!(v.len(), len);
            assert_eq!(v[0], 0xec);
        }
        assert_eq!(void(2), [0xec, 0x80]);
    }
}
