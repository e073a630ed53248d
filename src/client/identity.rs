//! Who `metroctl` acts as: `--as`, else `$METRO_AS`, else the agent's own
//! environment where it identifies one, else nobody.
//!
//! - Claude Code sets `CLAUDECODE`: `metro://claude/user/<id>`, where `<id>`
//!   is `$METRO_USER_ID`, else the `orgId` of `claude auth status --json`,
//!   else `$USER`.
//! - Codex (`CODEX_HOME` or `METRO_CODEX_RC` set):
//!   `metro://codex/user/<id>`, where `<id>` is `$METRO_USER_ID`, else
//!   `tokens.account_id` of `$CODEX_HOME/auth.json` (default `~/.codex`),
//!   else `$USER`.
//!
//! These are the identities the TypeScript metro used, so cursors and claims
//! carry over.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

fn user() -> String {
    env("USER")
        .or_else(|| env("LOGNAME"))
        .unwrap_or_else(|| "local".into())
}

/// The identity to act as, or `None`. `metro://user` (the TypeScript
/// metro's "no identity", also in its short form `user`) given by `--as` or
/// `$METRO_AS` means none, and stops the search.
pub fn resolve(explicit: Option<&str>) -> Option<String> {
    let given = explicit
        .filter(|a| !a.is_empty())
        .map(str::to_string)
        .or_else(|| env("METRO_AS"));
    if let Some(a) = given {
        return match crate::line::identity(&a) {
            Ok(None) => None,
            _ => Some(a),
        };
    }
    if env("CLAUDECODE").is_some() {
        let id = env("METRO_USER_ID")
            .or_else(claude_org_id)
            .unwrap_or_else(user);
        return Some(format!("metro://claude/user/{id}"));
    }
    if env("CODEX_HOME").is_some() || env("METRO_CODEX_RC").is_some() {
        let id = env("METRO_USER_ID")
            .or_else(codex_account_id)
            .unwrap_or_else(user);
        return Some(format!("metro://codex/user/{id}"));
    }
    None
}

/// `orgId` from `claude auth status --json`, if `claude` answers within 3 s.
fn claude_org_id() -> Option<String> {
    let mut child = Command::new("claude")
        .args(["auth", "status", "--json"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .ok()?;
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        match child.try_wait() {
            Ok(Some(_)) => break,
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                return None;
            }
        }
    }
    let out = child.wait_with_output().ok()?;
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
    if v["loggedIn"] == serde_json::Value::Bool(false) {
        return None;
    }
    v["orgId"]
        .as_str()
        .filter(|s| !s.is_empty())
        .map(String::from)
}

fn codex_account_id() -> Option<String> {
    let home = env("CODEX_HOME")
        .map(PathBuf::from)
        .or_else(|| env("HOME").map(|h| PathBuf::from(h).join(".codex")))?;
    let bytes = std::fs::read(home.join("auth.json")).ok()?;
    let v: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    v["tokens"]["account_id"]
        .as_str()
        .filter(|s| !s.is_empty())
        .map(String::from)
}

/// Why [`resolve`] picks what it picks, in a few words (for `metroctl
/// status`): which flag or environment decided, and where the id came from.
pub fn source(explicit: Option<&str>) -> String {
    if explicit.is_some_and(|a| !a.is_empty()) {
        return "--as".into();
    }
    if env("METRO_AS").is_some() {
        return "$METRO_AS".into();
    }
    let id_from = |fallback: &str| {
        if env("METRO_USER_ID").is_some() {
            "id from $METRO_USER_ID".to_string()
        } else {
            format!("id from {fallback}, else $USER")
        }
    };
    if env("CLAUDECODE").is_some() {
        return format!(
            "Claude Code ($CLAUDECODE is set; {})",
            id_from("`claude auth status`")
        );
    }
    if env("CODEX_HOME").is_some() || env("METRO_CODEX_RC").is_some() {
        return format!(
            "Codex ($CODEX_HOME or $METRO_CODEX_RC is set; {})",
            id_from("the Codex login")
        );
    }
    "nothing: no --as, no $METRO_AS, not inside Claude Code or Codex".into()
}
