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
    let mut s = String::with_capacity(23);
    write_millis(ms, &mut s);
    s
}

/// Appends `ms` as [`format_millis`] does, without a format string to interpret: sinks
/// write two timestamps per window result, millions per second.
pub fn write_millis(ms: Timestamp, out: &mut String) {
    let (days, in_day) = (ms.div_euclid(86_400_000), ms.rem_euclid(86_400_000));
    let (y, m, d) = civil_from_days(days);
    if !(0..=9999).contains(&y) {
        match DateTime::<Utc>::from_timestamp_millis(ms) {
            Some(t) => out.push_str(&t.format("%Y-%m-%d %H:%M:%S%.3f").to_string()),
            None => out.push_str(&ms.to_string()),
        }
        return;
    }
    let mut b = *b"0000-00-00 00:00:00.000";
    let mut put = |at: usize, width: usize, mut v: i64| {
        for i in (at..at + width).rev() {
            b[i] = b'0' + (v % 10) as u8;
            v /= 10;
        }
    };
    put(0, 4, y);
    put(5, 2, m);
    put(8, 2, d);
    put(11, 2, in_day / 3_600_000);
    put(14, 2, in_day / 60_000 % 60);
    put(17, 2, in_day / 1000 % 60);
    put(20, 3, in_day % 1000);
    out.extend(b.iter().map(|&c| c as char));
}

/// Year, month, day of a count of days since 1970-01-01 (Howard Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(m <= 2), m, d)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_utc_millis() {
        assert_eq!(format_millis(0), "1970-01-01 00:00:00.000");
        assert_eq!(format_millis(1_700_000_000_123), "2023-11-14 22:13:20.123");
    }

    #[test]
    fn the_fast_formatter_agrees_with_chrono() {
        let chrono = |ms: i64| {
            DateTime::<Utc>::from_timestamp_millis(ms)
                .map(|t| t.format("%Y-%m-%d %H:%M:%S%.3f").to_string())
        };
        // Every day boundary of 1600..2400 and a pseudo-random spread, leap days included.
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut cases: Vec<i64> = (-135_000..155_000).map(|d| d * 86_400_000 - 1).collect();
        for _ in 0..200_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            cases.push((x % 20_000_000_000_000) as i64 - 10_000_000_000_000);
        }
        cases.extend([i64::MIN, i64::MAX, -62_167_219_200_001, 253_402_300_800_000]);
        for ms in cases {
            if let Some(want) = chrono(ms) {
                assert_eq!(format_millis(ms), want, "{ms}");
            }
        }
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
