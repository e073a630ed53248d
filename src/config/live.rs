//! The config in force: [`LiveConfig`] holds the config metrod runs on
//! (the file, then the environment on top: [`crate::config::load`]) in a
//! `watch` channel, so a station can [`LiveConfig::subscribe`] and pick up
//! new tokens or allowlists as they come, and says what a reload changed.
//! What prompts a reload (the file watch, SIGHUP) is `service::reload`'s.
//!
//! Owns: the current config, its reload status, the words for a change.
//! Must not import: anything but `config` and `clock` (it sits below the
//! broker and the stations, which both read it).

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use serde_json::{json, Value};
use tokio::sync::watch;

use crate::config::{self, Config, ConfigError, StationConfig};

#[derive(Debug, Default, Clone)]
struct Status {
    /// When the config in force was loaded (RFC 3339), `None` before the
    /// first load.
    loaded_at: Option<String>,
    /// Changes applied since startup.
    reloads: u64,
    /// The last rejected reload, cleared by the next good one.
    error: Option<String>,
    error_at: Option<String>,
}

/// The config in force and how it got there.
pub struct LiveConfig {
    path: PathBuf,
    tx: watch::Sender<Arc<Config>>,
    status: Mutex<Status>,
    /// What the daemon checks beyond the file's syntax (the sections of
    /// the registered station kinds), set once they are known.
    check: OnceLock<Check>,
}

/// A check of a loaded config; `Err` says what is wrong.
pub type Check = Box<dyn Fn(&Config) -> Result<(), String> + Send + Sync>;

/// What a reload did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reload {
    /// A new config is in force; the changes, in words, without secrets.
    Applied(Vec<String>),
    /// The file and environment give the config already in force.
    Unchanged,
    /// The new config was refused; the old one stays.
    Rejected(String),
}

impl LiveConfig {
    /// An empty config that was never loaded (`path` is where it would come
    /// from). The daemon replaces it with [`LiveConfig::load`].
    pub fn unloaded(path: PathBuf) -> LiveConfig {
        LiveConfig {
            path,
            tx: watch::Sender::new(Arc::new(Config::default())),
            status: Mutex::new(Status::default()),
            check: OnceLock::new(),
        }
    }

    /// Loads `path` (then the environment). Startup refuses a config that
    /// does not load, like any other state file that is not valid.
    pub fn load(path: &Path) -> Result<LiveConfig, ConfigError> {
        let c = config::load(path)?;
        let live = LiveConfig::unloaded(path.to_path_buf());
        live.tx.send_replace(Arc::new(c));
        if let Ok(mut st) = live.status.lock() {
            st.loaded_at = Some(crate::clock::now());
        }
        Ok(live)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Sets the check every config must pass from now on, and applies it
    /// to the config in force (startup: an error stops metrod).
    pub fn set_check(&self, check: Check) -> Result<(), ConfigError> {
        let verdict = check(&self.current()).map_err(|message| self.invalid(message));
        let _ = self.check.set(check);
        verdict
    }

    fn invalid(&self, message: String) -> ConfigError {
        ConfigError::Parse {
            path: self.path.display().to_string(),
            message,
        }
    }

    /// The file, then the environment on top, then the daemon's check.
    fn load_checked(&self) -> Result<Config, ConfigError> {
        let c = config::load(&self.path)?;
        match self.check.get() {
            Some(check) => check(&c).map(|()| c).map_err(|m| self.invalid(m)),
            None => Ok(c),
        }
    }

    /// The config in force.
    pub fn current(&self) -> Arc<Config> {
        self.tx.borrow().clone()
    }

    /// A receiver that sees every config put in force from now on.
    pub fn subscribe(&self) -> watch::Receiver<Arc<Config>> {
        self.tx.subscribe()
    }

    /// Reads the file again (`why`: what prompted it, for the log) and puts
    /// it in force if it loads and differs.
    pub fn reload(&self, why: &str) -> Reload {
        let shown = self.path.display();
        match self.load_checked() {
            Err(e) => {
                let loaded_at = self.with_status(|st| {
                    st.error = Some(e.to_string());
                    st.error_at = Some(crate::clock::now());
                    st.loaded_at.clone()
                });
                tracing::warn!(
                    "config change rejected ({why}); metrod keeps the config loaded at {}: {e}",
                    loaded_at.as_deref().unwrap_or("startup")
                );
                Reload::Rejected(e.to_string())
            }
            Ok(new) => {
                let old = self.current();
                self.with_status(|st| {
                    st.error = None;
                    st.error_at = None;
                });
                if *old == new {
                    tracing::debug!("config {shown} read again ({why}): unchanged");
                    return Reload::Unchanged;
                }
                let changes = changes(&old, &new);
                self.tx.send_replace(Arc::new(new));
                self.with_status(|st| {
                    st.loaded_at = Some(crate::clock::now());
                    st.reloads += 1;
                });
                tracing::info!(
                    "config reloaded from {shown} ({why}): {}",
                    changes.join("; ")
                );
                Reload::Applied(changes)
            }
        }
    }

    fn with_status<T>(&self, f: impl FnOnce(&mut Status) -> T) -> T {
        match self.status.lock() {
            Ok(mut st) => f(&mut st),
            Err(poisoned) => f(&mut poisoned.into_inner()),
        }
    }

    /// The `config` object of `stats`: where it comes from, when it was
    /// loaded, the last rejected change, and per station whether a token is
    /// set and how long the allowlist is — never a token.
    pub fn summary(&self) -> Value {
        let st = self.with_status(|st| st.clone());
        let c = self.current();
        let station = |s: &StationConfig| {
            json!({
                "token": s.token.is_some(),
                "allow": s.allow.0.len(),
                "allowEveryone": s.allow.everyone(),
            })
        };
        let mut out = serde_json::Map::new();
        out.insert("path".into(), json!(self.path.display().to_string()));
        out.insert("loadedAt".into(), json!(st.loaded_at));
        out.insert("reloads".into(), json!(st.reloads));
        out.insert("error".into(), json!(st.error));
        out.insert("errorAt".into(), json!(st.error_at));
        for (name, s) in c.chat_sections() {
            out.insert(name.into(), station(s));
        }
        out.insert(
            "monitor".into(),
            json!({
                "token": c.monitor.token().is_some(),
                "origins": c.monitor.origins.len(),
            }),
        );
        Value::Object(out)
    }
}

/// What differs between two configs, in words; tokens are only said to be
/// set, removed or changed.
pub fn changes(old: &Config, new: &Config) -> Vec<String> {
    let mut out = Vec::new();
    for ((name, a), (_, b)) in old.chat_sections().into_iter().zip(new.chat_sections()) {
        match (&a.token, &b.token) {
            (None, Some(_)) => out.push(format!("{name} token set")),
            (Some(_), None) => out.push(format!("{name} token removed")),
            (Some(x), Some(y)) if x != y => out.push(format!("{name} token changed")),
            _ => {}
        }
        if a.api_url != b.api_url {
            out.push(format!("{name} api_url changed"));
        }
        if a.gateway_url != b.gateway_url {
            out.push(format!("{name} gateway_url changed"));
        }
        if a.allow != b.allow {
            let added: Vec<&str> = b
                .allow
                .0
                .iter()
                .filter(|x| !a.allow.0.contains(x))
                .map(String::as_str)
                .collect();
            let removed: Vec<&str> = a
                .allow
                .0
                .iter()
                .filter(|x| !b.allow.0.contains(x))
                .map(String::as_str)
                .collect();
            let mut what = format!("{name} allow: {} entries", b.allow.0.len());
            if !added.is_empty() {
                what.push_str(&format!(", added {}", added.join(",")));
            }
            if !removed.is_empty() {
                what.push_str(&format!(", removed {}", removed.join(",")));
            }
            out.push(what);
        }
    }
    match (old.monitor.token(), new.monitor.token()) {
        (None, Some(_)) => out.push("monitor token set".into()),
        (Some(_), None) => out.push("monitor token removed".into()),
        (Some(x), Some(y)) if x != y => out.push("monitor token changed".into()),
        _ => {}
    }
    if old.monitor.origins != new.monitor.origins {
        out.push(format!(
            "monitor origins: {}",
            new.monitor.origins.join(",")
        ));
    }
    if out.is_empty() && old != new {
        out.push("other settings changed".into());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Allow;

    #[test]
    fn changes_name_what_moved_but_no_token() {
        let mut a = Config::default();
        a.telegram.allow = Allow(vec!["1".into(), "2".into()]);
        let mut b = a.clone();
        b.telegram.token = Some("123:secret-token".into());
        b.telegram.allow = Allow(vec!["2".into(), "3".into()]);
        b.discord.api_url = Some("http://127.0.0.1:1".into());
        let c = changes(&a, &b);
        assert_eq!(
            c,
            vec![
                "telegram token set",
                "telegram allow: 2 entries, added 3, removed 1",
                "discord api_url changed"
            ]
        );
        assert!(!c.join(" ").contains("secret"));
        assert!(changes(&a, &a).is_empty());
        let mut m = a.clone();
        m.monitor.token = Some("monitor-secret".into());
        assert_eq!(changes(&a, &m), vec!["monitor token set"]);
        let mut m2 = m.clone();
        m2.monitor.token = Some("other-secret".into());
        assert_eq!(changes(&m, &m2), vec!["monitor token changed"]);
        assert_eq!(changes(&m2, &a), vec!["monitor token removed"]);
    }
}
