//! How command-line arguments become request fields: lines and identities
//! checked with [`crate::line`], `-` read from stdin, `--no-claim` and
//! `$METRO_NO_AUTO_CLAIM`, the actor of an outbound op, file paths made
//! absolute (metrod's working directory is not ours), JSON buttons. Knows
//! nothing of printing or of the connection.

use std::io::Read;
use std::path::Path;

use serde_json::Value;

use super::{identity, CliError};

fn usage<E: std::fmt::Display>(e: E) -> CliError {
    CliError::Usage(e.to_string())
}

/// A line in full form (`telegram/42` → `metro://telegram/42`).
pub fn line_arg(l: &str) -> Result<String, CliError> {
    crate::line::line(l).map_err(usage)
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
