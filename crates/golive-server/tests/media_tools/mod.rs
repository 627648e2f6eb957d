//! ffmpeg and ffprobe as the recording tests use them: encoding real media to feed the recorder,
//! and reading its files back.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

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
