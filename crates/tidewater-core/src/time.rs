//! Event time. Timestamps are epoch milliseconds (`i64`), as in Flink's TIMESTAMP(3).

use chrono::{DateTime, Utc};

/// Epoch milliseconds.
pub type Timestamp = i64;

/// A promise that no event with a timestamp `<=` this value is still to come
/// (Flink's definition). Windows `[start, end)` fire when the watermark reaches `end - 1`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Watermark(pub Timestamp);

impl Watermark {
    /// Before any event: holds everything back.
    pub const MIN: Watermark = Watermark(i64::MIN);
    /// End of input: every window may fire.
    pub const MAX: Watermark = Watermark(i64::MAX);
}

/// Formats epoch milliseconds as `YYYY-MM-DD HH:MM:SS.sss` in UTC, the format the sinks write.
pub fn format_millis(ms: Timestamp) -> String {
    match DateTime::<Utc>::from_timestamp_millis(ms) {
        Some(t) => t.format("%Y-%m-%d %H:%M:%S%.3f").to_string(),
        None => ms.to_string(),
    }
}

/// Floor division that is correct for negative timestamps.
pub fn floor_div(a: i64, b: i64) -> i64 {
    a.div_euclid(b)
}

/// Greatest common divisor (the slice width of a hop window).
pub fn gcd(mut a: i64, mut b: i64) -> i64 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a.abs()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_utc_millis() {
        assert_eq!(format_millis(0), "1970-01-01 00:00:00.000");
        assert_eq!(format_millis(1_700_000_000_123), "2023-11-14 22:13:20.123");
    }

    #[test]
    fn floor_div_and_gcd() {
        assert_eq!(floor_div(-1, 1000), -1);
        assert_eq!(floor_div(1999, 1000), 1);
        assert_eq!(gcd(10_000, 2_000), 2_000);
        assert_eq!(gcd(60_000, 1_000), 1_000);
        assert_eq!(gcd(10_000, 3_000), 1_000);
    }
}

/// Parses a duration the way Flink writes them: `500ms`, `1s`, `10 s`, `2min`, `1h`; a
/// bare number is milliseconds.
pub fn parse_duration(text: &str) -> std::result::Result<std::time::Duration, String> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("'{text}' is not a duration (e.g. '500ms', '1s', '2min')"))?;
    let ms = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "ms" | "milli" | "millis" | "millisecond" | "milliseconds" => Some(n),
        "s" | "sec" | "secs" | "second" | "seconds" => n.checked_mul(1_000),
        "m" | "min" | "mins" | "minute" | "minutes" => n.checked_mul(60_000),
        "h" | "hour" | "hours" => n.checked_mul(3_600_000),
        other => {
            return Err(format!(
                "unknown time unit '{other}' in '{text}'; use ms, s, min or h"
            ));
        }
    };
    ms.map(std::time::Duration::from_millis)
        .ok_or_else(|| format!("'{text}' is too long"))
}
