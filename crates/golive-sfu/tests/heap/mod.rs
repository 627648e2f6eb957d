//! The heap and the resident set of a test binary that includes this module: it installs
//! stats_alloc's counting allocator as the binary's global allocator.
#![allow(dead_code)]

use stats_alloc::{INSTRUMENTED_SYSTEM, StatsAlloc};
use std::alloc::System;

#[global_allocator]
pub static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

/// Bytes allocated and not yet freed (stats_alloc books a realloc's growth or shrink in both
/// counters).
pub fn live_heap() -> i128 {
    let s = GLOBAL.stats();
    s.bytes_allocated as i128 - s.bytes_deallocated as i128
}

/// Resident set size from /proc/self/statm (pages), in kB.
pub fn rss_kb() -> i64 {
    let statm = std::fs::read_to_string("/proc/self/statm").expect("/proc/self/statm");
    let pages: i64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|v| v.parse().ok())
        .expect("statm's resident field");
    pages * 4
}
