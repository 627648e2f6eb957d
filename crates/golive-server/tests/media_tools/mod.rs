//! ffmpeg and ffprobe as the recording tests use them: encoding real media to feed the recorder,
//! and reading its files back.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

/// A broadcast of VP8 video alone (payload type 96), as the VP8 recording tests feed it.
pub fn vp8_only() -> golive_sfu::StreamMedia {
    use golive_sfu::{Codec, MediaKind, StreamMedia, VideoCodec};
    StreamMedia {
        video: Some(Codec {
            kind: MediaKind::Video,
            name: "VP8".into(),
            clock_rate: 90_000,
            channels: 0,
            fmtp: String::new(),
            payload_type: 96,
            video: Some(VideoCodec::Vp8),
        }),
        audio: None,
    }
}

pub fn require_ffmpeg() {
    if Command::new("ffmpeg").arg("-version").output().is_err() {
        panic!(
            "this test encodes and decodes with ffmpeg: install it with `apt-get install -y ffmpeg`"
        );
    }
}

/// A fresh, empty directory for one test's files.
pub fn test_dir(suite: &str, test: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("golive-{suite}-{test}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Runs ffmpeg and fails the test, with what it printed, when it fails.
pub fn ffmpeg(args: &[&str]) {
    let out = Command::new("ffmpeg")
        .args(args)
        .output()
        .expect("ffmpeg runs");
    assert!(
        out.status.success(),
        "ffmpeg {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `seconds` of ffmpeg's test pattern at `size` and `fps`, encoded in VP8 (a keyframe every
/// `gop` frames, at `bitrate`) into `ivf`; returns its frames. An IVF file is a 32-byte header,
/// then each frame behind a 12-byte header whose first 4 bytes are its size (little-endian).
pub fn vp8_test_pattern(
    ivf: &Path,
    (w, h): (u32, u32),
    fps: u64,
    seconds: u64,
    gop: u64,
    bitrate: &str,
) -> Vec<Vec<u8>> {
    let (pattern, seconds, gop) = (
        format!("testsrc=size={w}x{h}:rate={fps}"),
        seconds.to_string(),
        gop.to_string(),
    );
    let ivf_arg = ivf.to_str().expect("a UTF-8 path");
    ffmpeg(&[
        "-v", "error", "-f", "lavfi", "-i", &pattern, "-t", &seconds, "-c:v", "libvpx", "-g", &gop,
        "-b:v", bitrate, "-y", ivf_arg,
    ]);
    let data = std::fs::read(ivf).unwrap();
    let mut frames = Vec::new();
    let mut at = 32;
    while at + 12 <= data.len() {
        let size = u32::from_le_bytes(data[at..at + 4].try_into().unwrap()) as usize;
        frames.push(data[at + 12..at + 12 + size].to_vec());
        at += 12 + size;
    }
    frames
}

/// What `ffprobe -v error <args> <file>` prints, trimmed.
pub fn ffprobe(args: &[&str], file: &Path) -> String {
    let out = Command::new("ffprobe")
        .args(["-v", "error"])
        .args(args)
        .arg(file)
        .output()
        .expect("ffprobe runs");
    assert!(
        out.status.success(),
        "ffprobe {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// What decoding the whole file prints (empty: every frame decoded).
pub fn decode_errors(file: &Path) -> String {
    let out = Command::new("ffmpeg")
        .args(["-v", "error", "-i"])
        .arg(file)
        .args(["-f", "null", "-"])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stderr).into_owned()
}
