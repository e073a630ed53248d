//! Line URIs: `metro://<station>/<path>`.
//!
//! Two strengths of check:
//! - [`uri`] accepts any well-formed metro URI (identities such as
//!   `metro://telegram/user/42` or `metro://claude/user/abc`);
//! - [`line`] additionally holds the platform stations to their conversation
//!   shapes: `telegram/<chatId>[/<topicId>]`, `discord/<channelId>`,
//!   `webhook/<endpointId>`.
//!
//! Both accept the short form (`telegram/123`) and return the full URI.

use thiserror::Error;

pub const SCHEME: &str = "metro://";

/// Longest URI accepted, in bytes.
pub const MAX_LEN: usize = 512;

#[derive(Debug, Error, PartialEq, Eq)]
#[error("invalid line {input:?}: {reason}")]
pub struct LineError {
    pub input: String,
    pub reason: &'static str,
}

fn err(input: &str, reason: &'static str) -> LineError {
    let mut shown: String = input.chars().take(80).collect();
    if shown.len() < input.len() {
        shown.push('…');
    }
    LineError {
        input: shown,
        reason,
    }
}

/// The station of a full URI: the part between `metro://` and the next `/`.
pub fn station_of(uri: &str) -> &str {
    let rest = uri.strip_prefix(SCHEME).unwrap_or(uri);
    rest.split('/').next().unwrap_or("")
}

/// Platform stations whose lines have a fixed shape.
pub fn is_platform(station: &str) -> bool {
    matches!(station, "telegram" | "discord" | "webhook")
}

/// A local line: an agent's line (`metro://claude/user/<id>`), that is any
/// line whose station is not a chat or webhook station. It belongs to the
/// identity it names, and to nobody else: it is never claimed by another
/// identity (docs/broker.md, Claims). A line below an identity
/// (`metro://claude/user/me/s1`) is its own identity.
pub fn is_local(uri: &str) -> bool {
    !is_platform(station_of(uri))
}

/// The TypeScript metro's "no identity": accepted wherever an identity is,
/// and means none.
pub const NO_IDENTITY: &str = "metro://user";

/// Validates an identity (`as`, `from`): [`uri`], except that
/// [`NO_IDENTITY`] (or its short form `user`) is `None`.
pub fn identity(input: &str) -> Result<Option<String>, LineError> {
    if input == NO_IDENTITY || Some(input) == NO_IDENTITY.strip_prefix(SCHEME) {
        return Ok(None);
    }
    uri(input).map(Some)
}

/// Validates any metro URI and returns it in full form.
pub fn uri(input: &str) -> Result<String, LineError> {
    if input.is_empty() {
        return Err(err(input, "empty"));
    }
    if input.len() > MAX_LEN {
        return Err(err(input, "longer than 512 bytes"));
    }
    let rest = match input.strip_prefix(SCHEME) {
        Some(rest) => rest,
        None if input.contains("://") => return Err(err(input, "scheme must be metro://")),
        None => input,
    };
    let mut parts = rest.split('/');
    let station = parts.next().unwrap_or("");
    if station.is_empty() {
        return Err(err(input, "missing station"));
    }
    if !station.starts_with(|c: char| c.is_ascii_lowercase())
        || !station
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_')
    {
        return Err(err(
            input,
            "station must be lowercase letters, digits, '-' or '_'",
        ));
    }
    let mut segments = 0;
    for seg in parts {
        if seg.is_empty() {
            return Err(err(input, "empty path segment"));
        }
        if seg
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || matches!(c, '?' | '#' | '\\'))
        {
            return Err(err(
                input,
                "path may not contain whitespace, control characters, '?', '#' or '\\'",
            ));
        }
        segments += 1;
    }
    if segments == 0 {
        return Err(err(input, "missing path after the station"));
    }
    Ok(format!("{SCHEME}{rest}"))
}

fn is_int(s: &str) -> bool {
    let digits = s.strip_prefix('-').unwrap_or(s);
    !digits.is_empty() && digits.len() <= 20 && digits.bytes().all(|b| b.is_ascii_digit())
}

fn is_uint(s: &str) -> bool {
    !s.is_empty() && s.len() <= 20 && s.bytes().all(|b| b.is_ascii_digit())
}

/// Validates a conversation line and returns it in full form.
pub fn line(input: &str) -> Result<String, LineError> {
    let full = uri(input)?;
    let rest = &full[SCHEME.len()..];
    let mut parts = rest.split('/');
    let station = parts.next().unwrap_or("");
    let path: Vec<&str> = parts.collect();
    match station {
        "telegram" => match path.as_slice() {
            [chat] if is_int(chat) => {}
            [chat, topic] if is_int(chat) && is_uint(topic) => {}
            _ => {
                return Err(err(
                    input,
                    "telegram lines are metro://telegram/<chatId>[/<topicId>] with numeric ids",
                ))
            }
        },
        "discord" => match path.as_slice() {
            [channel] if is_uint(channel) => {}
            _ => {
                return Err(err(
                    input,
                    "discord lines are metro://discord/<channelId> with a numeric id",
                ))
            }
        },
        "webhook" => match path.as_slice() {
            [id] if id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') => {}
            _ => return Err(err(input, "webhook lines are metro://webhook/<endpointId>")),
        },
        _ => {}
    }
    Ok(full)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metro_user_is_no_identity() {
        assert_eq!(identity("metro://user"), Ok(None));
        assert_eq!(identity("user"), Ok(None));
        assert_eq!(
            identity("metro://claude/user/a"),
            Ok(Some("metro://claude/user/a".into()))
        );
        assert!(identity("metro://user/").is_err());
        assert!(identity("").is_err());
    }

    #[test]
    fn short_form_expands() {
        assert_eq!(line("telegram/123").unwrap(), "metro://telegram/123");
        assert_eq!(
            line("telegram/-100/42").unwrap(),
            "metro://telegram/-100/42"
        );
        assert_eq!(uri("claude/user/abc").unwrap(), "metro://claude/user/abc");
        assert_eq!(station_of("metro://discord/1"), "discord");
        assert!(is_local("metro://claude/user/abc"));
        assert!(is_local("metro://claude/user/abc/s1"));
        assert!(!is_local("metro://telegram/5"));
        assert!(!is_local("metro://discord/5"));
        assert!(!is_local("metro://webhook/gh"));
    }

    #[test]
    fn malformed_lines_are_rejected() {
        for bad in [
            "",
            "metro://",
            "metro:///x",
            "metro://telegram",
            "metro://telegram/",
            "metro://telegram/abc",
            "metro://telegram/1/-2",
            "metro://discord/x1",
            "metro://webhook/a b",
            "http://telegram/1",
            "metro://Tele/1",
            "metro://claude//x",
            "metro://claude/a b",
        ] {
            assert!(line(bad).is_err(), "{bad:?} accepted");
        }
        assert!(uri("metro://telegram/user/5").is_ok());
        assert!(line("metro://telegram/user/5").is_err());
        assert!(line(&format!("metro://claude/{}", "a".repeat(600))).is_err());
    }
}
