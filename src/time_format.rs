//! RFC 3339 UTC timestamps, the one time format of the API and of events.

use std::time::SystemTime;

use serde::Serializer;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// `2026-11-25T18:40:30.123Z` for `time`.
pub fn rfc3339(time: SystemTime) -> String {
    let time = OffsetDateTime::from(time);
    // Formatting fails only for years outside 0..=9999, which a SystemTime here never has.
    time.format(&Rfc3339)
        .unwrap_or_else(|_| String::from("1970-01-01T00:00:00Z"))
}

/// Serializes a `SystemTime` as RFC 3339 (for `#[serde(with = ...)]`).
pub fn serialize<S: Serializer>(time: &SystemTime, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(&rfc3339(*time))
}
