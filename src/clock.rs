//! Timestamps: RFC 3339, UTC, milliseconds (`2026-11-28T03:07:55.123Z`).

use time::format_description::well_known::Rfc3339;
use time::macros::format_description;
use time::OffsetDateTime;

/// Formats milliseconds since the Unix epoch.
pub fn format_ms(ms: i128) -> String {
    let t = OffsetDateTime::from_unix_timestamp_nanos(ms * 1_000_000)
        .unwrap_or(OffsetDateTime::UNIX_EPOCH);
    let fmt =
        format_description!("[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z");
    t.format(&fmt)
        .unwrap_or_else(|_| "1970-01-01T00:00:00.000Z".into())
}

/// Now, formatted.
pub fn now() -> String {
    format_ms(OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000)
}

/// Parses an RFC 3339 time into milliseconds since the epoch.
pub fn parse_ms(s: &str) -> Option<i128> {
    OffsetDateTime::parse(s, &Rfc3339)
        .ok()
        .map(|t| t.unix_timestamp_nanos() / 1_000_000)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let s = format_ms(1_764_299_275_123);
        assert_eq!(s, "2025-11-28T03:07:55.123Z");
        assert_eq!(parse_ms(&s), Some(1_764_299_275_123));
        assert_eq!(parse_ms("2025-11-28T03:07:55Z"), Some(1_764_299_275_000));
        assert_eq!(parse_ms("yesterday"), None);
    }
}
