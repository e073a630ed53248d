//! `metroctl setup`: write the config file (station tokens, allowlists,
//! the monitor's token).
//!
//! On a terminal with no flags it asks (tokens without echo); otherwise it
//! takes flags. It merges with the existing file, checks the tokens' shape
//! (no network: a token that has the right shape but is revoked shows up in
//! `metroctl stations` once the station runs), writes the file `0600` in a
//! `0700` directory, and never prints a secret, only a masked form — but
//! for a monitor token it has just made, printed once.

use std::fs;
use std::io::{BufRead, IsTerminal, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use clap::Args;
use serde_json::{json, Value};

use super::conn::Connection;
use super::output::Report;
use super::CliError;
use crate::config::{Allow, Config, StationConfig};
use crate::proto::Request;

#[derive(Debug, Args, Default)]
pub struct SetupArgs {
    /// Telegram bot token from @BotFather: `-` reads it from stdin, `@FILE`
    /// from a file, `env:NAME` from the environment (a token written here
    /// shows in `ps`); `""` removes it.
    #[arg(long, value_name = "TOKEN")]
    pub telegram_token: Option<String>,
    /// Discord bot token: `-` (stdin), `@FILE`, `env:NAME`; `""` removes it.
    #[arg(long, value_name = "TOKEN")]
    pub discord_token: Option<String>,
    /// Telegram user ids that may reach your agents: comma-separated, or
    /// `*` for everyone (replaces the list; `""` empties it).
    #[arg(long, value_name = "IDS")]
    pub allow_telegram: Option<String>,
    /// Discord user ids that may reach your agents: comma-separated, or `*`.
    #[arg(long, value_name = "IDS")]
    pub allow_discord: Option<String>,
    /// Create a monitor token (random, 256 bits; replaces the current one)
    /// and print it once: it turns on the monitor page and API
    /// (docs/monitor.md).
    #[arg(long, conflicts_with = "monitor_off")]
    pub monitor: bool,
    /// Remove the monitor token: the monitor is off (404).
    #[arg(long)]
    pub monitor_off: bool,
    /// Config file [default: $METRO_CONFIG, $XDG_CONFIG_HOME/metro/config.toml,
    /// ~/.config/metro/config.toml]
    #[arg(long, value_name = "PATH")]
    pub config: Option<PathBuf>,
}

impl SetupArgs {
    fn has_values(&self) -> bool {
        self.telegram_token.is_some()
            || self.discord_token.is_some()
            || self.allow_telegram.is_some()
            || self.allow_discord.is_some()
            || self.monitor
            || self.monitor_off
    }
}

/// `<bot id>:<35 characters>`, as @BotFather hands them out.
pub fn check_telegram_token(t: &str) -> Result<(), String> {
    let Some((id, secret)) = t.split_once(':') else {
        return Err(
            "a Telegram bot token looks like 123456789:AA… (the bot id, a colon, 35 characters)"
                .into(),
        );
    };
    if id.is_empty() || id.len() > 20 || !id.bytes().all(|b| b.is_ascii_digit()) {
        return Err("a Telegram bot token starts with the bot's numeric id and a colon".into());
    }
    if secret.len() != 35
        || !secret
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    {
        return Err(format!(
            "the part after the colon of a Telegram bot token is 35 letters, digits, '_' or '-' (this one has {})",
            secret.chars().count()
        ));
    }
    Ok(())
}

/// Three dot-separated base64 parts; the first is the bot's numeric id.
pub fn check_discord_token(t: &str) -> Result<(), String> {
    let parts: Vec<&str> = t.split('.').collect();
    let b64 = |p: &str| {
        !p.is_empty()
            && p.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_+/=".contains(&b))
    };
    if parts.len() != 3 || !parts.iter().all(|p| b64(p)) {
        return Err("a Discord bot token is three dot-separated base64 parts (Bot → Token in the developer portal)".into());
    }
    let id = base64_decode(parts[0]).unwrap_or_default();
    if id.len() < 5 || !id.iter().all(u8::is_ascii_digit) {
        return Err(
            "the first part of a Discord bot token is the bot's id in base64; this one is not"
                .into(),
        );
    }
    if parts[1].len() < 4 || parts[2].len() < 20 {
        return Err(
            "this Discord bot token is too short; copy it again from the developer portal".into(),
        );
    }
    Ok(())
}

/// Standard or URL-safe base64, padding optional.
fn base64_decode(s: &str) -> Option<Vec<u8>> {
    let mut bits: u32 = 0;
    let mut n = 0;
    let mut out = Vec::new();
    for b in s.trim_end_matches('=').bytes() {
        let v = match b {
            b'A'..=b'Z' => b - b'A',
            b'a'..=b'z' => b - b'a' + 26,
            b'0'..=b'9' => b - b'0' + 52,
            b'+' | b'-' => 62,
            b'/' | b'_' => 63,
            _ => return None,
        };
        bits = (bits << 6) | u32::from(v);
        n += 6;
        if n >= 8 {
            n -= 8;
            out.push((bits >> n) as u8);
            bits &= (1 << n) - 1;
        }
    }
    Some(out)
}

/// An allowlist: `*`, or numeric user ids.
pub fn check_allow(list: &Allow) -> Result<(), String> {
    for a in &list.0 {
        if a != "*" && (a.is_empty() || !a.bytes().all(|b| b.is_ascii_digit())) {
            return Err(format!(
                "{a:?} is not a numeric user id (or * for everyone)"
            ));
        }
    }
    Ok(())
}

/// A token as it may be shown: a few characters at each end, never enough
/// to use it.
pub fn mask(secret: &str) -> String {
    let n = secret.chars().count();
    if n < 16 {
        return format!("•••• ({n} chars)");
    }
    let head: String = secret.chars().take(4).collect();
    let tail: String = secret.chars().skip(n - 2).collect();
    format!("{head}…{tail} ({n} chars)")
}

fn describe(s: &StationConfig) -> String {
    let token = match &s.token {
        Some(t) => format!("token {}", mask(t)),
        None => "no token".into(),
    };
    let allow = if s.allow.everyone() {
        "allow everyone (*)".to_string()
    } else {
        match s.allow.0.len() {
            0 => "allow nobody yet".to_string(),
            1 => "allow 1 user".to_string(),
            n => format!("allow {n} users"),
        }
    };
    format!("{token}, {allow}")
}

/// Reads the existing file whatever its mode (setup tightens it); a file
/// that does not parse is not overwritten.
fn read_existing(path: &Path) -> Result<(Config, Option<u32>), CliError> {
    let text = match fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((Config::default(), None)),
        Err(e) => {
            return Err(CliError::Io(std::io::Error::new(
                e.kind(),
                format!("cannot read {}: {e}", path.display()),
            )))
        }
    };
    let mode = fs::metadata(path)
        .ok()
        .map(|m| m.permissions().mode() & 0o777);
    let c = crate::config::parse_text(&text).map_err(|e| {
        CliError::Usage(format!(
            "{} is not a valid metro config ({e}); fix it or move it away, then run setup again",
            path.display()
        ))
    })?;
    Ok((c, mode))
}

/// Writes the config `0600` (temp file, fsync, rename), creating its
/// directory `0700`.
fn write_config(path: &Path, c: &Config) -> Result<(), CliError> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    super::create_dir(&dir, 0o700)?;
    let body = toml::to_string_pretty(c)
        .map_err(|e| CliError::Protocol(format!("cannot write the config as TOML: {e}")))?;
    let text = format!(
        "# metro config: station tokens and allowlists (docs/service.md).\n\
         # Written by `metroctl setup`. It holds secrets: keep it 0600.\n\n{body}"
    );
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_else(|| "config.toml".into());
    let tmp = dir.join(format!(".{name}.tmp"));
    let _ = fs::remove_file(&tmp);
    let written = (|| {
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(text.as_bytes())?;
        f.sync_all()?;
        fs::rename(&tmp, path)?;
        if let Ok(d) = fs::File::open(&dir) {
            let _ = d.sync_all();
        }
        Ok::<(), std::io::Error>(())
    })();
    if let Err(e) = written {
        let _ = fs::remove_file(&tmp);
        return Err(CliError::Io(std::io::Error::new(
            e.kind(),
            format!("cannot write {}: {e}", path.display()),
        )));
    }
    Ok(())
}

/// A token flag's value: `-` reads one line of stdin.
fn token_value(flag: &str, v: &str) -> Result<Option<String>, CliError> {
    let v = super::secret::resolve(flag, v)?.trim().to_string();
    if v.is_empty() {
        return Ok(None);
    }
    if v.chars().any(char::is_whitespace) {
        return Err(CliError::Usage(format!("{flag}: a token has no spaces")));
    }
    Ok(Some(v))
}

/// A new monitor token: 256 random bits as 64 hex digits.
pub fn new_monitor_token() -> Result<String, CliError> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes)
        .map_err(|e| CliError::Io(std::io::Error::other(format!("no randomness: {e}"))))?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

fn apply_flags(c: &mut Config, a: &SetupArgs) -> Result<(), CliError> {
    if a.telegram_token.as_deref() == Some("-") && a.discord_token.as_deref() == Some("-") {
        return Err(CliError::Usage(
            "only one token can be read from stdin; give the other one in a second run".into(),
        ));
    }
    if let Some(t) = &a.telegram_token {
        let t = token_value("--telegram-token", t)?;
        if let Some(t) = &t {
            check_telegram_token(t)
                .map_err(|e| CliError::Usage(format!("--telegram-token: {e}")))?;
        }
        c.telegram.token = t;
    }
    if let Some(t) = &a.discord_token {
        let t = token_value("--discord-token", t)?;
        if let Some(t) = &t {
            check_discord_token(t).map_err(|e| CliError::Usage(format!("--discord-token: {e}")))?;
        }
        c.discord.token = t;
    }
    for (flag, v, st) in [
        ("--allow-telegram", &a.allow_telegram, &mut c.telegram),
        ("--allow-discord", &a.allow_discord, &mut c.discord),
    ] {
        if let Some(v) = v {
            let list = Allow::parse_list(v);
            check_allow(&list).map_err(|e| CliError::Usage(format!("{flag}: {e}")))?;
            st.allow = list;
        }
    }
    if a.monitor {
        c.monitor.token = Some(new_monitor_token()?);
    }
    if a.monitor_off {
        c.monitor.token = None;
    }
    Ok(())
}

/// One line from the terminal, prompt on stderr.
fn ask_line(prompt: &str) -> Result<String, CliError> {
    eprint!("{prompt}");
    let _ = std::io::stderr().flush();
    let mut line = String::new();
    let n = std::io::stdin()
        .lock()
        .read_line(&mut line)
        .map_err(CliError::Io)?;
    if n == 0 {
        return Err(CliError::Usage("setup cancelled (end of input)".into()));
    }
    Ok(line.trim().to_string())
}

/// Asks for each station's token (without echo) and allowlist; Enter keeps
/// the current value, `-` removes it.
fn interactive(c: &mut Config, path: &Path) -> Result<(), CliError> {
    eprintln!(
        "metro setup: station tokens and who may reach your agents, saved to {} (0600).",
        path.display()
    );
    eprintln!("Press Enter to keep the current value, or type - to remove it. Tokens are not shown as you type.");
    type Check = fn(&str) -> Result<(), String>;
    let stations: [(&str, &str, Check, &mut StationConfig); 2] = [
        (
            "Telegram",
            "from @BotFather",
            check_telegram_token,
            &mut c.telegram,
        ),
        (
            "Discord",
            "developer portal → Bot → Token",
            check_discord_token,
            &mut c.discord,
        ),
    ];
    for (name, hint, check, st) in stations {
        eprintln!();
        let current = st
            .token
            .as_deref()
            .map(mask)
            .unwrap_or_else(|| "not set".into());
        let mut tries = 0;
        loop {
            let t = rpassword::prompt_password(format!("{name} bot token ({hint}) [{current}]: "))
                .map_err(CliError::Io)?;
            let t = t.trim();
            match t {
                "" => break,
                "-" => {
                    st.token = None;
                    break;
                }
                t => match check(t) {
                    Ok(()) => {
                        st.token = Some(t.to_string());
                        eprintln!("  {name} token {}", mask(t));
                        break;
                    }
                    Err(e) => {
                        tries += 1;
                        eprintln!("  {e}");
                        if tries == 3 {
                            return Err(CliError::Usage(format!("no valid {name} token given")));
                        }
                    }
                },
            }
        }
        let current = if st.allow.is_empty() {
            "nobody".to_string()
        } else {
            st.allow.0.join(",")
        };
        loop {
            let a = ask_line(&format!(
                "{name} user ids allowed to reach your agents (comma-separated, * for everyone) [{current}]: "
            ))?;
            let list = match a.as_str() {
                "" => break,
                "-" => Allow::default(),
                a => Allow::parse_list(a),
            };
            match check_allow(&list) {
                Ok(()) => {
                    st.allow = list;
                    break;
                }
                Err(e) => eprintln!("  {e}"),
            }
        }
    }
    eprintln!();
    Ok(())
}

/// The running daemon's config summary (`stats` → `config`), if it
/// answers.
fn daemon_config(socket: &Path) -> Option<Value> {
    let mut c = Connection::open(socket).ok()?;
    let stats = c.call(&Request::Stats).ok()?;
    stats.get("config").cloned()
}

fn same_file(a: &Path, b: &Path) -> bool {
    match (fs::canonicalize(a), fs::canonicalize(b)) {
        (Ok(x), Ok(y)) => x == y,
        _ => a == b,
    }
}

pub fn run(socket: &Path, a: SetupArgs) -> Result<(), CliError> {
    let path = a.config.clone().unwrap_or_else(crate::config::path);
    let (old, mode) = read_existing(&path)?;
    let mut new = old.clone();
    if a.has_values() {
        apply_flags(&mut new, &a)?;
    } else if std::io::stdin().is_terminal() && std::io::stderr().is_terminal() {
        interactive(&mut new, &path)?;
    } else {
        return Err(CliError::Usage(
            "setup asks its questions on a terminal; without one, pass flags: \
             --telegram-token, --discord-token, --allow-telegram, --allow-discord, --monitor (see --help)"
                .into(),
        ));
    }
    let loose = mode.is_some_and(|m| m & 0o077 != 0);
    let before = daemon_config(socket);
    let mut out = Report::default();
    out.set("config", json!(path));
    if new == old && mode.is_some() && !loose {
        out.say(format!("{}: unchanged", path.display()));
        out.set("written", false);
    } else {
        write_config(&path, &new)?;
        match mode {
            Some(m) if loose => out.say(format!(
                "wrote {} (0600; it was {m:o}, readable by others)",
                path.display()
            )),
            _ => out.say(format!("wrote {} (0600)", path.display())),
        }
        out.set("written", true);
    }
    out.say(format!("  telegram  {}", describe(&new.telegram)));
    out.say(format!("  discord   {}", describe(&new.discord)));
    out.set("telegram", describe(&new.telegram));
    out.set("discord", describe(&new.discord));
    match new.monitor.token() {
        Some(t) if a.monitor => {
            // The only time it is shown.
            out.say(format!(
                "  monitor   on; its token (shown once, kept in the file): {t}"
            ));
            out.say(
                "            open http://127.0.0.1:8787/ (metrod's webhook address) and enter it",
            );
            out.set("monitor", "on");
            out.set("monitorToken", t);
        }
        Some(t) => {
            out.say(format!("  monitor   on, token {}", mask(t)));
            out.set("monitor", "on");
        }
        None => {
            out.say("  monitor   off");
            out.set("monitor", "off");
        }
    }
    for (var, station) in [
        ("METRO_TELEGRAM_TOKEN", "telegram"),
        ("METRO_DISCORD_TOKEN", "discord"),
        ("METRO_MONITOR_TOKEN", "monitor"),
    ] {
        if std::env::var_os(var).is_some_and(|v| !v.is_empty()) {
            let note = format!(
                "${var} is set here; where it is set it overrides the file's {station} token"
            );
            out.say(format!("note: {note}"));
            out.push("notes", note);
        }
    }
    let daemon = report_reload(socket, &path, before, &changed_sections(&old, &new));
    if !daemon.1.is_empty() {
        out.say(&daemon.1);
    }
    out.set("metrod", daemon.0);
    out.finish();
    Ok(())
}

/// Whether the running metrod took the new file (it reloads on its own
/// when the file changes): a word for `--json` and a sentence.
fn report_reload(
    socket: &Path,
    path: &Path,
    before: Option<Value>,
    changed: &[String],
) -> (&'static str, String) {
    let Some(before) = before else {
        return (
            "not running",
            "metrod is not running; it reads the file when it starts.".into(),
        );
    };
    let daemon_path = PathBuf::from(before["path"].as_str().unwrap_or(""));
    if !same_file(&daemon_path, path) {
        return (
            "other file",
            format!(
                "note: the running metrod reads {}, not this file.",
                daemon_path.display()
            ),
        );
    }
    if changed.is_empty() {
        return ("unchanged", String::new());
    }
    let deadline = Instant::now() + Duration::from_secs(3);
    while Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
        let Some(now) = daemon_config(socket) else {
            break;
        };
        if now["reloads"] != before["reloads"] {
            let settle = Instant::now() + Duration::from_secs(3);
            return ("reloaded", applied(socket, changed, settle));
        }
        if now["error"] != before["error"] && !now["error"].is_null() {
            return (
                "rejected",
                format!(
                    "metrod rejected it and keeps its old config: {}",
                    now["error"].as_str().unwrap_or("")
                ),
            );
        }
    }
    (
        "pending",
        "metrod has not reloaded it yet (its environment may override these values); \
         `systemctl --user reload metrod` or `kill -HUP <pid of metrod>` makes it read the file now."
            .into(),
    )
}

/// The config sections (`telegram`, `monitor` …) that differ between two
/// configs.
fn changed_sections(old: &Config, new: &Config) -> Vec<String> {
    let table = |c: &Config| match toml::Table::try_from(c) {
        Ok(t) => t,
        Err(_) => toml::Table::new(),
    };
    let (a, b) = (table(old), table(new));
    let mut names: Vec<String> = a.keys().chain(b.keys()).cloned().collect();
    names.sort();
    names.dedup();
    names.retain(|n| a.get(n) != b.get(n));
    names
}

/// What metrod did with a reloaded file, in one sentence: the status of
/// each station whose section changed (it restarts such a station in
/// place), once it is past restarting or `deadline` came.
fn applied(socket: &Path, changed: &[String], deadline: Instant) -> String {
    let mut rows: Vec<Value> = Vec::new();
    loop {
        if let Some(list) = Connection::open(socket)
            .ok()
            .and_then(|mut c| c.call(&crate::proto::Request::Stations).ok())
        {
            rows = list["stations"]
                .as_array()
                .cloned()
                .unwrap_or_default()
                .into_iter()
                .filter(|r| changed.iter().any(|n| r["name"] == json!(n)))
                .collect();
        }
        let settling = rows.iter().any(|r| {
            let st = r["status"].as_str().unwrap_or("");
            st.starts_with("restarting") || st.starts_with("starting")
        });
        if !settling || Instant::now() >= deadline {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let said: Vec<String> = rows
        .iter()
        .map(|r| {
            format!(
                "the {} station is {}",
                r["name"].as_str().unwrap_or("?"),
                r["status"].as_str().unwrap_or("unknown")
            )
        })
        .collect();
    if said.is_empty() {
        "metrod reloaded it.".into()
    } else {
        format!("metrod reloaded it and applied it: {}.", said.join("; "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TG: &str = "123456789:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsawq";

    #[test]
    fn token_shapes() {
        assert!(check_telegram_token(TG).is_ok());
        assert!(check_telegram_token("123456789:short").is_err());
        assert!(check_telegram_token("bot:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsawq").is_err());
        assert!(check_telegram_token("no colon").is_err());
        // base64("123456789012345678") . 6 . 27
        let dc = "MTIzNDU2Nzg5MDEyMzQ1Njc4.GabcDe.abcdefghijklmnopqrstuvwxyz0";
        assert!(
            check_discord_token(dc).is_ok(),
            "{:?}",
            check_discord_token(dc)
        );
        assert!(check_discord_token("a.b").is_err());
        assert!(check_discord_token("bm90IGRpZ2l0cw.GabcDe.abcdefghijklmnopqrstuvwxyz0").is_err());
        assert_eq!(base64_decode("MTIz").unwrap(), b"123");
        assert_eq!(base64_decode("MTI").unwrap(), b"12");
    }

    #[test]
    fn masks_hide_the_secret() {
        let m = mask(TG);
        assert_eq!(m, "1234…wq (45 chars)");
        assert!(!m.contains("AAHdq"));
        assert_eq!(mask("short"), "•••• (5 chars)");
        assert!(check_allow(&Allow::parse_list("1, 2,*")).is_ok());
        assert!(check_allow(&Allow::parse_list("bob")).is_err());
    }
}
