//! RFC 3339 UTC timestamps with exactly three fraction digits
//! (`2026-11-25T18:40:30.080Z`), the one time format of the API, of events and
//! of webhooks.

use std::time::SystemTime;

use serde::Serializer;
use time::OffsetDateTime;

/// `2026-11-25T18:40:30.123Z` for `time`, truncated to the millisecond: three
/// fraction digits always, trailing zeros kept, so every time has the same length.
pub fn rfc3339(time: SystemTime) -> String {
    let t = OffsetDateTime::from(time);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
        t.millisecond()
    )
}

/// Serializes a `SystemTime` as RFC 3339 (for `#[serde(with = ...)]`).
pub fn serialize<S: Serializer>(time: &SystemTime, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(&rfc3339(*time))
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    use super::rfc3339;

    fn at(millis: u64, extra_nanos: u64) -> String {
        rfc3339(UNIX_EPOCH + Duration::from_millis(millis) + Duration::from_nanos(extra_nanos))
    }

    #[test]
    fn times_have_exactly_three_fraction_digits() {
        // 2026-11-25T18:40:20Z is 1_795_632_020 s after the epoch.
        let second = 1_795_632_020_000;
        assert_eq!(at(second + 80, 0), "2026-11-25T18:40:20.080Z");
        assert_eq!(at(second, 0), "2026-11-25T18:40:20.000Z");
        assert_eq!(at(second + 123, 999_999), "2026-11-25T18:40:20.123Z");
        assert_eq!(at(0, 0), "1970-01-01T00:00:00.000Z");
    }
}
