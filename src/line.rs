//! Line URIs: `metro://<station>/<path>`, their grammar only.
//!
//! - [`uri`] accepts any well-formed metro URI (lines, and identities such
//!   as `metro://telegram/user/42` or `metro://claude/user/abc`) and
//!   returns it in full form; the short form (`telegram/123`) is accepted.
//! - [`line`] is the same check where a conversation line is expected.
//!   The shape of a station's lines (`telegram/<chatId>[/<topicId>]` …) is
//!   not known here: each station kind checks its own
//!   (`StationKind::check_line`, applied by the registry in metrod).
//! - [`Platforms`]: which stations' lines are conversations on a platform
//!   rather than agents' lines, as data built from the registered kinds.
//!
//! Owns: the URI grammar. Must not import anything of the crate: it is a
//! leaf that metroctl and every layer of metrod read.

use std::sync::Arc;

use thiserror::Error;

pub const SCHEME: &str = "metro://";

/// Longest URI accepted, in bytes.
pub const MAX_LEN: usize = 512;

#[derive(Debug, Error, PartialEq, Eq)]
#[error("invalid line {input:?}: {reason}")]
pub struct LineError {
    pub input: String,
    pub reason: String,
}

/// `input` is not a valid line because of `reason` (the input is shown
/// cut to 80 characters).
pub fn invalid(input: &str, reason: impl Into<String>) -> LineError {
    let mut shown: String = input.chars().take(80).collect();
    if shown.len() < input.len() {
        shown.push('…');
    }
    LineError {
        input: shown,
        reason: reason.into(),
    }
}

fn err(input: &str, reason: &'static str) -> LineError {
    invalid(input, reason)
}

/// The station of a full URI: the part between `metro://` and the next `/`.
pub fn station_of(uri: &str) -> &str {
    let rest = uri.strip_prefix(SCHEME).unwrap_or(uri);
    rest.split('/').next().unwrap_or("")
}

/// The path segments of a full URI, after its station
/// (`metro://telegram/-100/42` → `-100`, `42`).
pub fn segments(uri: &str) -> impl Iterator<Item = &str> {
    let rest = uri.strip_prefix(SCHEME).unwrap_or(uri);
    rest.split('/').skip(1)
}

/// The stations whose lines are conversations on a platform: every
/// registered station kind but the one that takes all other lines
/// (`local`). metrod builds it from its kinds before it reads
/// `claims.json` and hands it to the claims, the delivery predicate and
/// the loop guard. Any other line is a local line: an agent's line
/// (`metro://claude/user/<id>`), which belongs to the identity it names
/// and to nobody else: it is never claimed by another identity
/// (docs/broker.md, Claims). A line below an identity
/// (`metro://claude/user/me/s1`) is its own identity.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Platforms(Arc<[&'static str]>);

impl Platforms {
    pub fn new(names: impl IntoIterator<Item = &'static str>) -> Platforms {
        let mut v: Vec<&'static str> = names.into_iter().collect();
        v.sort_unstable();
        v.dedup();
        Platforms(v.into())
    }

    /// Whether `station` is one of them.
    pub fn is_platform(&self, station: &str) -> bool {
        self.0.contains(&station)
    }

    /// Whether the full URI `uri` is a local line (its station is none of
    /// them).
    pub fn is_local(&self, uri: &str) -> bool {
        !self.is_platform(station_of(uri))
    }

    /// Their names, sorted.
    pub fn names(&self) -> &[&'static str] {
        &self.0
    }
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
    // Not `format!`: this runs for every published line (profiled).
    let mut full = String::with_capacity(SCHEME.len() + rest.len());
    full.push_str(SCHEME);
    full.push_str(rest);
    Ok(full)
}

/// Validates a conversation line and returns it in full form: the
/// grammar of [`uri`]. Its station's shape (numeric chat ids …) is the
/// station kind's to check, in metrod.
pub fn line(input: &str) -> Result<String, LineError> {
    uri(input)
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
        assert_eq!(
            segments("metro://telegram/-100/42").collect::<Vec<_>>(),
            ["-100", "42"]
        );
    }

    #[test]
    fn local_lines_are_those_of_no_platform() {
        let p = Platforms::new(["telegram", "discord", "webhook", "loopback", "discord"]);
        assert_eq!(p.names(), ["discord", "loopback", "telegram", "webhook"]);
        assert!(p.is_local("metro://claude/user/abc"));
        assert!(p.is_local("metro://claude/user/abc/s1"));
        assert!(!p.is_local("metro://telegram/5"));
        assert!(!p.is_local("metro://discord/5"));
        assert!(!p.is_local("metro://webhook/gh"));
        assert!(!p.is_local("metro://loopback/room"));
        assert!(Platforms::default().is_local("metro://telegram/5"));
    }

    #[test]
    fn malformed_lines_are_rejected() {
        for bad in [
            "",
            "metro://",
            "metro:///x",
            "metro://telegram",
            "metro://telegram/",
            "metro://webhook/a b",
            "http://telegram/1",
            "metro://Tele/1",
            "metro://claude//x",
            "metro://claude/a b",
        ] {
            assert!(line(bad).is_err(), "{bad:?} accepted");
        }
        assert!(uri("metro://telegram/user/5").is_ok());
        // Station shapes are the kinds' (stations/*/kind.rs).
        assert!(line("metro://telegram/abc").is_ok());
        assert!(line(&format!("metro://claude/{}", "a".repeat(600))).is_err());
    }
}
