//! `--since` of `tail`, `mcp` and `history`: one set of forms everywhere —
//! a byte offset, `cursor`, `start`, `tail`, a duration back from now
//! (`10m`, `2h`, `3d`, `1h 30m`: humantime) or an RFC 3339 time. A duration
//! becomes a time here, on the client's clock; the daemon gets a
//! [`Since`] (protocol.md, subscribe).

use std::time::Duration;

use crate::proto::Since;

use super::CliError;

const FORMS: &str = "an offset, cursor, start, tail, a duration back from now (10m, 2h, 3d) \
                     or an RFC 3339 time (2026-11-28T03:00:00Z)";

/// Where a subscription starts, from a `--since` value.
pub fn parse(s: &str) -> Result<Since, CliError> {
    let s = s.trim();
    match s {
        "cursor" => return Ok(Since::Cursor),
        "start" => return Ok(Since::Start),
        "tail" => return Ok(Since::Tail),
        _ => {}
    }
    if let Ok(n) = s.parse::<u64>() {
        return Ok(Since::Offset(n));
    }
    if let Some(ms) = crate::clock::parse_ms(s) {
        return Ok(Since::Time(ms));
    }
    match humantime::parse_duration(s) {
        Ok(d) => Ok(Since::Time(ago(d))),
        Err(_) => Err(CliError::Usage(format!("--since takes {FORMS}, not {s:?}"))),
    }
}

/// The RFC 3339 time of `history --since` (`None`: no bound): a duration or
/// a time; `start` means the whole log. Offsets, `cursor` and `tail` name
/// places in a subscription, which `history` is not.
pub fn time(s: &str) -> Result<Option<String>, CliError> {
    match parse(s)? {
        Since::Time(ms) => Ok(Some(crate::clock::format_ms(ms))),
        Since::Start => Ok(None),
        _ => Err(CliError::Usage(format!(
            "history --since takes a duration back from now (10m, 2h, 3d), an RFC 3339 time or start, not {s:?} \
             (offsets, cursor and tail are for tail and mcp)"
        ))),
    }
}

/// Milliseconds since the epoch, `d` before now.
fn ago(d: Duration) -> i128 {
    let now = time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000;
    now - d.as_millis() as i128
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_form() {
        assert_eq!(parse("start").unwrap(), Since::Start);
        assert_eq!(parse("tail").unwrap(), Since::Tail);
        assert_eq!(parse("cursor").unwrap(), Since::Cursor);
        assert_eq!(parse("4096").unwrap(), Since::Offset(4096));
        assert_eq!(
            parse("2026-11-28T03:00:00+01:00").unwrap(),
            Since::Time(crate::clock::parse_ms("2026-11-28T02:00:00Z").unwrap())
        );
        let Since::Time(ms) = parse("2h").unwrap() else {
            panic!("a duration is a time")
        };
        let Since::Time(later) = parse("10m").unwrap() else {
            panic!("a duration is a time")
        };
        // 2h ago is 1h50m before 10m ago (give or take the time between).
        let gap = later - ms;
        assert!((6_600_000..6_660_000).contains(&gap), "{gap}");
        let err = parse("soon").unwrap_err().to_string();
        assert!(err.contains("10m") && err.contains("RFC 3339"), "{err}");
        assert!(time("tail").is_err());
        assert_eq!(time("start").unwrap(), None);
        assert_eq!(
            time("2026-11-28T03:00:00Z").unwrap().as_deref(),
            Some("2026-11-28T03:00:00.000Z")
        );
    }
}
