//! Wall-clock time as the data plane counts it: Unix time (a clock before 1970 reads as
//! 0). Rate-limit and routing windows are calendar minutes of it.

use std::time::{SystemTime, UNIX_EPOCH};

/// Unix milliseconds.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Unix seconds.
pub fn now_secs() -> u64 {
    now_ms() / 1000
}

/// The current calendar minute (Unix minutes) and the seconds left in it (1 to 60).
pub fn minute() -> (u64, u64) {
    let secs = now_secs();
    (secs / 60, 60 - secs % 60)
}
