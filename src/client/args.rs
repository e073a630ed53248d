//! How command-line arguments become request fields: lines and identities
//! checked against the URI grammar of [`crate::line`] (the shape of a
//! station's lines, `telegram/<chatId>` …, is its kind's: metrod checks
//! it and metroctl shows its answer), `-` read from stdin, `--no-claim` and
//! `$METRO_NO_AUTO_CLAIM`, the actor of an outbound op, file paths made
//! absolute (metrod's working directory is not ours), JSON buttons. Knows
//! nothing of printing or of the connection.

use std::io::Read;
use std::path::Path;

use serde_json::Value;

use super::{identity, CliError};
use crate::proto;

fn usage<E: std::fmt::Display>(e: E) -> CliError {
    CliError::Usage(e.to_string())
}

/// What a line looks like, for errors about one.
pub const LINE_FORMS: &str = "a line starts with a station name: telegram/<chatId>[/<topicId>], \
discord/<channelId>, webhook/<endpointId>, or an agent's own line such as claude/user/<id> \
or local/<name> (`metroctl lines` lists the lines metro has seen)";

/// A line in full form (`telegram/42` → `metro://telegram/42`); its
/// station's shape is checked by metrod.
pub fn line_arg(l: &str) -> Result<String, CliError> {
    crate::line::line(l).map_err(line_error)
}

/// A bad line, with what a line looks like when the station part is wrong.
pub fn line_error(e: crate::line::LineError) -> CliError {
    if e.reason.contains("station") || e.reason == "empty" {
        CliError::Usage(format!("{e}: {LINE_FORMS}"))
    } else {
        usage(e)
    }
}

/// Any metro URI in full form (identities).
pub fn uri_arg(u: &str) -> Result<String, CliError> {
    crate::line::uri(u).map_err(usage)
}

/// All of stdin.
pub fn read_stdin() -> Result<String, CliError> {
    let mut s = String::new();
    std::io::stdin()
        .read_to_string(&mut s)
        .map_err(CliError::Io)?;
    Ok(s)
}

/// A TEXT argument: `-` reads stdin.
pub fn text_arg(text: String) -> Result<String, CliError> {
    if text == "-" {
        read_stdin()
    } else {
        Ok(text)
    }
}

/// `--no-claim`, or `$METRO_NO_AUTO_CLAIM` set to `1` or `true`.
pub fn no_claim(flag: bool) -> bool {
    flag || std::env::var("METRO_NO_AUTO_CLAIM").is_ok_and(|v| v == "1" || v == "true")
}

/// The actor of an outbound op: `--as` (or its alias `--from`), else the
/// identity of the environment.
pub fn actor(flag: Option<&str>) -> Result<Option<String>, CliError> {
    identity::resolve(flag).map(|a| uri_arg(&a)).transpose()
}

/// A path as metrod must see it: absolute.
pub fn absolute(p: &Path) -> Result<String, CliError> {
    std::path::absolute(p)
        .map(|a| a.display().to_string())
        .map_err(|e| CliError::Usage(format!("{}: {e}", p.display())))
}

/// `--buttons`: JSON.
pub fn buttons_arg(b: &Option<String>) -> Result<Option<Value>, CliError> {
    b.as_deref()
        .map(|b| {
            serde_json::from_str(b)
                .map_err(|e| CliError::Usage(format!("--buttons is not JSON: {e}")))
        })
        .transpose()
}

/// An example event, for errors about one.
const EVENT_EXAMPLE: &str = r#"{"line":"local/demo","text":"hello"}"#;

/// The event of `metroctl publish`, checked here so a mistake is told in
/// the terms of the JSON the user wrote (not of the request around it).
pub fn event_arg(text: &str) -> Result<proto::NewEvent, CliError> {
    let value: Value = serde_json::from_str(text).map_err(|e| {
        CliError::Usage(format!(
            "publish needs an event as a JSON object, such as {EVENT_EXAMPLE}; this is not JSON: {e}"
        ))
    })?;
    let Some(object) = value.as_object() else {
        return Err(CliError::Usage(format!(
            "publish needs an event as a JSON object, such as {EVENT_EXAMPLE}, not {value}"
        )));
    };
    match object.get("line") {
        None | Some(Value::Null) => {
            return Err(CliError::Usage(format!(
                "the event needs a `line`, the conversation it belongs to, such as {EVENT_EXAMPLE}; {LINE_FORMS}"
            )))
        }
        Some(Value::String(l)) => {
            line_arg(l)?;
        }
        Some(other) => {
            return Err(CliError::Usage(format!(
                "the event's `line` must be a string such as \"local/demo\", not {other}"
            )))
        }
    }
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        CliError::Usage(format!("the event's field `{path}`: {}", e.into_inner()))
    })
}
