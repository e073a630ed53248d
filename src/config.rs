//! The config file: station tokens and allowlists.
//!
//! `$METRO_CONFIG`, else `$XDG_CONFIG_HOME/metro/config.toml`, else
//! `~/.config/metro/config.toml`. It holds secrets, so a file readable or
//! writable by anyone but its owner is refused. A missing file is an empty
//! config. Environment variables override the file:
//! `METRO_TELEGRAM_TOKEN`, `METRO_TELEGRAM_API_URL`, `METRO_TELEGRAM_ALLOW`,
//! `METRO_DISCORD_TOKEN`, `METRO_DISCORD_API_URL`, `METRO_DISCORD_GATEWAY_URL`,
//! `METRO_DISCORD_ALLOW`, `METRO_MONITOR_TOKEN`.
//!
//! ```toml
//! [telegram]
//! token = "123456:ABC..."
//! allow = ["12345678", "87654321"]   # Telegram user ids, or ["*"]
//!
//! [discord]
//! token = "..."
//! allow = ["*"]
//!
//! [monitor]                          # docs/monitor.md; off without a token
//! token = "..."                      # `metroctl setup --monitor` makes one
//! origins = ["https://example.org"]  # CORS, only if set
//!
//! [cluster]                          # docs/cluster.md; off without it
//! url = "nats://10.0.0.5:4222"
//! node = "laptop"                    # default: the host name
//! ```
//!
//! Sections: the core declares its own ([`CORE_SECTIONS`]); every other
//! section belongs to a registered station kind (`StationKind::section`).
//! `[telegram]` and `[discord]` are read here into [`StationConfig`];
//! any other station's section is kept as TOML in [`Config::sections`] for
//! its kind to parse. Which sections exist is known only to the daemon
//! (its registry): [`Config::check_sections`] refuses one no kind and not
//! the core declares, naming the known ones.

pub mod cluster;
pub mod live;

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Where metrod's webhook listener binds unless told otherwise (`metrod
/// --webhook-addr`); `metroctl tunnel setup` points cloudflared at it.
pub const DEFAULT_WEBHOOK_ADDR: &str = "127.0.0.1:8787";

/// Who may reach the agents through a station.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Allow(pub Vec<String>);

impl Allow {
    /// `*` admits everyone.
    pub fn everyone(&self) -> bool {
        self.0.iter().any(|a| a == "*")
    }

    pub fn admits(&self, user_id: &str) -> bool {
        self.everyone() || self.0.iter().any(|a| a == user_id)
    }

    /// Parses `METRO_*_ALLOW`: comma-separated ids, or `*`.
    pub fn parse_list(s: &str) -> Allow {
        Allow(
            s.split(',')
                .map(str::trim)
                .filter(|x| !x.is_empty())
                .map(String::from)
                .collect(),
        )
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StationConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    /// API base (self-hosted Bot API servers, proxies, tests).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_url: Option<String>,
    /// Discord only: gateway URL, skipping the lookup.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway_url: Option<String>,
    #[serde(default, skip_serializing_if = "Allow::is_empty")]
    pub allow: Allow,
}

impl Allow {
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// The sections the core declares (not a station's).
pub const CORE_SECTIONS: &[&str] = &["monitor", "cluster"];

/// The sections read into fields of [`Config`]; any other goes to
/// [`Config::sections`].
const FIELDS: &[&str] = &["telegram", "discord", "monitor", "cluster"];

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Config {
    #[serde(default)]
    pub telegram: StationConfig,
    #[serde(default)]
    pub discord: StationConfig,
    #[serde(default, skip_serializing_if = "MonitorConfig::is_empty")]
    pub monitor: MonitorConfig,
    /// Joining other metrod nodes through NATS (docs/cluster.md).
    #[serde(default, skip_serializing_if = "cluster::ClusterConfig::is_empty")]
    pub cluster: cluster::ClusterConfig,
    /// Every other top-level key, as written: the sections of other
    /// station kinds (each parses its own), or a mistake that
    /// [`Config::check_sections`] names. Written back as they were.
    #[serde(flatten, skip_deserializing)]
    pub sections: BTreeMap<String, toml::Value>,
}

/// The monitor API and page (docs/monitor.md): off unless `token` is set.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MonitorConfig {
    /// The bearer token every `/api/` request must carry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    /// Origins allowed by CORS (none: no CORS headers at all).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub origins: Vec<String>,
}

impl MonitorConfig {
    pub fn is_empty(&self) -> bool {
        self.token.is_none() && self.origins.is_empty()
    }

    /// The token in force, when the monitor is on (an empty token is off).
    pub fn token(&self) -> Option<&str> {
        self.token.as_deref().filter(|t| !t.is_empty())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error(
        "{path} is readable or writable by others (mode {mode:o}); it holds tokens. Fix it with: chmod 600 {path}"
    )]
    Permissions { path: String, mode: u32 },
    #[error(
        "{path} belongs to uid {owner}, not to the user running metro (uid {me}); it holds tokens. Fix it with: chown {me} {path}"
    )]
    Owner { path: String, owner: u32, me: u32 },
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is not a valid metro config: {message}")]
    Parse { path: String, message: String },
}

/// Where the config file is.
pub fn path() -> PathBuf {
    let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
    if let Some(p) = env("METRO_CONFIG") {
        return PathBuf::from(p);
    }
    let base = env("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env("HOME").unwrap_or_else(|| "/".into())).join(".config")
        });
    base.join("metro/config.toml")
}

/// Reads the file only (no environment overrides).
pub fn read_file(path: &Path) -> Result<Config, ConfigError> {
    let shown = path.display().to_string();
    let meta = match std::fs::metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Config::default()),
        Err(source) => {
            return Err(ConfigError::Read {
                path: shown,
                source,
            })
        }
    };
    let me = nix::unistd::geteuid().as_raw();
    if std::os::unix::fs::MetadataExt::uid(&meta) != me {
        return Err(ConfigError::Owner {
            path: shown,
            owner: std::os::unix::fs::MetadataExt::uid(&meta),
            me,
        });
    }
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(ConfigError::Permissions { path: shown, mode });
    }
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: shown.clone(),
        source,
    })?;
    let c = parse_text(&text).map_err(|message| ConfigError::Parse {
        path: shown.clone(),
        message,
    })?;
    c.check_urls().map_err(|message| ConfigError::Parse {
        path: shown,
        message,
    })?;
    Ok(c)
}

/// Parses config text. The error names the line, column and key and says
/// what is wrong, never quoting the file: a typo next to a token must not
/// put the token in a log, in `stats` or on a terminal.
pub fn parse_text(text: &str) -> Result<Config, String> {
    let mut c: Config = toml::from_str(text).map_err(|e| describe_parse_error(text, &e))?;
    let table: toml::Table = toml::from_str(text).map_err(|e| describe_parse_error(text, &e))?;
    c.sections = table
        .into_iter()
        .filter(|(k, _)| !FIELDS.contains(&k.as_str()))
        .collect();
    Ok(c)
}

fn describe_parse_error(text: &str, e: &toml::de::Error) -> String {
    let at = e.span().map(|r| r.start.min(text.len())).unwrap_or(0);
    let before = text.get(..at).unwrap_or("");
    let line_no = before.matches('\n').count() + 1;
    let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    let line = text.lines().nth(line_no - 1).unwrap_or("");
    // The key of that line, when it has one that looks like a key.
    let key = line.split_once('=').map(|(k, _)| k.trim()).filter(|k| {
        !k.is_empty()
            && k.len() <= 40
            && k.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == '.')
    });
    let m = e.message();
    // Only fixed wording of toml/serde survives; anything quoted from the
    // file (values, and keys metro does not know) is dropped.
    let what = if m.starts_with("invalid type") || m.starts_with("invalid value") {
        match m.split_once(", expected ") {
            Some((_, want)) if !want.contains('"') && !want.contains('`') => {
                format!("wrong type of value (expected {want})")
            }
            _ => "wrong type of value".to_string(),
        }
    } else if m.starts_with("unknown field") {
        let chats: Vec<String> = Config::default()
            .chat_sections()
            .iter()
            .map(|(name, _)| format!("[{name}]"))
            .collect();
        format!(
            "unknown key (known keys: {}, each with token, api_url, gateway_url (discord), allow; [monitor]; [cluster] (docs/cluster.md))",
            chats.join(" and ")
        )
    } else if m.starts_with("duplicate key") {
        "a key given twice".to_string()
    } else if m.starts_with("missing field") {
        m.to_string()
    } else {
        "not valid TOML here (a string value needs quotes: token = \"...\")".to_string()
    };
    match key {
        Some(k) => format!("line {line_no}, column {col}, key `{k}`: {what}"),
        None => format!("line {line_no}, column {col}: {what}"),
    }
}

/// The file, then the environment on top.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    let mut c = read_file(path)?;
    c.apply_env(|k| std::env::var(k).ok().filter(|v| !v.is_empty()));
    Ok(c)
}

impl Config {
    /// The section `name` of a station kind that is not a field here.
    pub fn section(&self, name: &str) -> Option<&toml::Value> {
        self.sections.get(name)
    }

    /// Every top-level key is a section the core declares
    /// ([`CORE_SECTIONS`]) or one of `stations` (the sections of the
    /// registered kinds); the error names the unknown one (never its
    /// contents) and the known ones.
    pub fn check_sections(&self, stations: &[&str]) -> Result<(), String> {
        for (name, value) in &self.sections {
            let known = stations.contains(&name.as_str());
            if known && value.is_table() {
                continue;
            }
            let mut all: Vec<&str> = stations.to_vec();
            all.extend(CORE_SECTIONS);
            let all: Vec<String> = all.iter().map(|s| format!("[{s}]")).collect();
            // Named only when it looks like a section name: a key can be
            // a pasted secret, and the file is never quoted.
            let shown = name.len() <= 32
                && name.bytes().all(|b| {
                    b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-'
                });
            let what = match (known, value.is_table(), shown) {
                (true, _, _) => format!("`{name}` must be a section ([{name}])"),
                (false, true, true) => format!("unknown section [{name}]"),
                (false, false, true) => format!("unknown key `{name}` outside any section"),
                (false, _, false) => "an unknown section or key".to_string(),
            };
            return Err(format!("{what}; the known sections are {}", all.join(", ")));
        }
        Ok(())
    }

    /// The URLs are usable: `api_url` http(s)://, `gateway_url` ws(s)://.
    pub fn check_urls(&self) -> Result<(), String> {
        let check = |what: &str, url: &Option<String>, schemes: [&str; 2]| match url {
            None => Ok(()),
            // The value is never quoted: a URL may carry credentials.
            Some(u) => match url::Url::parse(u) {
                Ok(p) if schemes.contains(&p.scheme()) => Ok(()),
                Ok(_) => Err(format!(
                    "{what} must start with {}:// or {}://",
                    schemes[0], schemes[1],
                )),
                Err(e) => Err(format!("{what} is not a URL: {e}")),
            },
        };
        for (name, st) in self.chat_sections() {
            check(&format!("[{name}] api_url"), &st.api_url, ["http", "https"])?;
            check(
                &format!("[{name}] gateway_url"),
                &st.gateway_url,
                ["ws", "wss"],
            )?;
        }
        Ok(())
    }

    /// The chat stations' sections read into fields here, by section
    /// name, in order: the one place the core lists them (what reads
    /// them all — the environment overrides, the URL checks, `stats`'
    /// `config`, the change log, the service status — goes through it).
    pub fn chat_sections(&self) -> [(&'static str, &StationConfig); 2] {
        [("telegram", &self.telegram), ("discord", &self.discord)]
    }

    /// [`Config::chat_sections`], to change them.
    pub fn chat_sections_mut(&mut self) -> [(&'static str, &mut StationConfig); 2] {
        [
            ("telegram", &mut self.telegram),
            ("discord", &mut self.discord),
        ]
    }

    /// `METRO_<STATION>_TOKEN`, `_API_URL`, `_GATEWAY_URL` (Discord reads
    /// it), `_ALLOW` for each chat section, and `METRO_MONITOR_TOKEN`.
    pub fn apply_env(&mut self, get: impl Fn(&str) -> Option<String>) {
        for (name, st) in self.chat_sections_mut() {
            let var = |what: &str| get(&format!("METRO_{}_{what}", name.to_uppercase()));
            if let Some(t) = var("TOKEN") {
                st.token = Some(t);
            }
            if let Some(u) = var("API_URL") {
                st.api_url = Some(u);
            }
            if let Some(g) = var("GATEWAY_URL") {
                st.gateway_url = Some(g);
            }
            if let Some(a) = var("ALLOW") {
                st.allow = Allow::parse_list(&a);
            }
        }
        if let Some(t) = get("METRO_MONITOR_TOKEN") {
            self.monitor.token = Some(t);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_checked() {
        let mut c = Config::default();
        assert!(c.check_urls().is_ok());
        c.discord.gateway_url = Some("https://gateway.discord.gg".into());
        assert!(c.check_urls().unwrap_err().contains("ws://"));
        c.discord.gateway_url = Some("wss://gateway.discord.gg".into());
        c.telegram.api_url = Some("not a url".into());
        assert!(c.check_urls().unwrap_err().contains("[telegram] api_url"));
        c.telegram.api_url = Some("http://127.0.0.1:8081".into());
        assert!(c.check_urls().is_ok());
    }

    #[test]
    fn parses_and_env_overrides() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("config.toml");
        std::fs::write(&p, "[telegram]\ntoken = \"1:abc\"\nallow = [\"42\"]\n").unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
        let mut c = read_file(&p).unwrap();
        assert_eq!(c.telegram.token.as_deref(), Some("1:abc"));
        assert!(c.telegram.allow.admits("42") && !c.telegram.allow.admits("7"));
        c.apply_env(|k| (k == "METRO_TELEGRAM_ALLOW").then(|| "*".to_string()));
        assert!(c.telegram.allow.admits("7"));
        c.apply_env(|k| match k {
            "METRO_DISCORD_GATEWAY_URL" => Some("wss://127.0.0.1:1".to_string()),
            "METRO_DISCORD_TOKEN" => Some("d".to_string()),
            _ => None,
        });
        assert_eq!(c.discord.gateway_url.as_deref(), Some("wss://127.0.0.1:1"));
        assert_eq!(c.discord.token.as_deref(), Some("d"));
        assert_eq!(c.telegram.token.as_deref(), Some("1:abc"), "untouched");
        let names: Vec<&str> = c.chat_sections().iter().map(|(n, _)| *n).collect();
        assert_eq!(names, ["telegram", "discord"]);
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(matches!(
            read_file(&p),
            Err(ConfigError::Permissions { .. })
        ));
        std::fs::write(&p, "[telegram]\ntokn = 1\n").unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert!(matches!(read_file(&p), Err(ConfigError::Parse { .. })));
        assert_eq!(
            read_file(&dir.path().join("none.toml")).unwrap(),
            Config::default()
        );
    }

    #[test]
    fn other_sections_are_kept_and_checked_against_the_known_ones() {
        let text = "[telegram]\ntoken = \"1:abc\"\n[loopback]\nroom = \"lobby\"\n[slack]\ntoken = \"xoxb-secret\"\n";
        let c = parse_text(text).unwrap();
        assert_eq!(c.telegram.token.as_deref(), Some("1:abc"));
        assert_eq!(
            c.section("loopback").unwrap()["room"].as_str(),
            Some("lobby")
        );
        assert!(c.section("telegram").is_none(), "a field, not a section");
        let e = c
            .check_sections(&["telegram", "discord", "loopback"])
            .unwrap_err();
        assert!(e.contains("unknown section [slack]"), "{e}");
        assert!(
            e.contains("[telegram], [discord], [loopback], [monitor], [cluster]"),
            "{e}"
        );
        assert!(!e.contains("xoxb"), "{e}");
        assert!(c.check_sections(&["telegram", "loopback", "slack"]).is_ok());
        // Written back as it was (setup rewrites the file).
        let again = parse_text(&toml::to_string_pretty(&c).unwrap()).unwrap();
        assert_eq!(again, c);
        let stray = parse_text("token = \"x\"\n").unwrap();
        assert!(stray
            .check_sections(&["telegram"])
            .unwrap_err()
            .contains("unknown key `token` outside any section"));
        let pasted = parse_text("[MTk4NjIy]\nx = 1\n").unwrap();
        let e = pasted.check_sections(&["telegram"]).unwrap_err();
        assert!(
            e.starts_with("an unknown section or key") && !e.contains("MTk4"),
            "{e}"
        );
        assert!(parse_text("loopback = 1\n")
            .unwrap()
            .check_sections(&["loopback"])
            .is_err());
    }
}
