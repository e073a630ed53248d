//! Who may reach the agents through a chat station (Telegram, Discord): an
//! agent with a shell must not take orders from strangers.
//!
//! A sender is admitted when they are not denied and either the config
//! admits them (`allow = ["42"]`, `METRO_<STATION>_ALLOW`, `*` for
//! everyone) or they were admitted with a pairing code. A stranger who
//! writes to the bot in private gets one reply with a pairing code; the
//! owner runs `metroctl allow <code>` to admit them. `metroctl deny <id>`
//! blocks someone, also when the config admits them (`*` included).
//!
//! Admissions, denials and the codes waiting for `allow` live in
//! `<state dir>/<station>-access.json` (`0600`, replaced atomically before
//! a change is answered). Codes expire after [`CODE_TTL_MS`]; at most
//! [`MAX_PENDING`] wait at once (the oldest is dropped). The codes are
//! never written to the log, never logged, and never listed: only the
//! person who received one can hand it to the owner.

use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::config::Allow;
use crate::proto::WireError;

/// How long a pairing code stays valid.
pub const CODE_TTL_MS: i128 = 60 * 60 * 1000;
/// Codes waiting for `allow` at once.
pub const MAX_PENDING: usize = 64;
/// Code alphabet: no 0/O, 1/I/L.
const ALPHABET: &[u8] = b"ABCDEFGHJKMNPQRSTUVWXYZ23456789";

/// Someone admitted or denied.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Person {
    pub user_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    pub at: String,
}

/// A pairing code waiting for `metroctl allow`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Pending {
    code: String,
    user_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    name: Option<String>,
    /// Where the code was sent (the private chat's line).
    line: String,
    created_at: String,
    expires_at: String,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Stored {
    #[serde(default)]
    allowed: Vec<Person>,
    #[serde(default)]
    denied: Vec<Person>,
    #[serde(default)]
    pending: Vec<Pending>,
}

/// What the allowlist says about a sender.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Gate {
    Admitted,
    /// Not on any list: may be offered a pairing code.
    Unknown,
    /// Denied with `deny`: blocked without a reply.
    Denied,
}

/// What [`Access::offer_code`] decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Offer {
    /// A new code: send it to the stranger (once).
    New(String),
    /// They already hold a live code: no second reply.
    AlreadySent,
}

/// The access list of one station.
pub struct Access {
    station: String,
    path: PathBuf,
    fsync: bool,
    /// The config file's allowlist; replaced on a config reload.
    config: arc_swap::ArcSwap<Allow>,
    state: Mutex<Stored>,
    /// Serializes changes (read, change, write, publish).
    change: tokio::sync::Mutex<()>,
}

fn now_ms() -> i128 {
    time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000
}

impl Access {
    /// Loads `<station>-access.json` from `state_dir` (missing → empty;
    /// invalid → error naming the file).
    pub fn open(state_dir: &Path, station: &str, config: Allow, fsync: bool) -> io::Result<Access> {
        let path = state_dir.join(format!("{station}-access.json"));
        let stored = match std::fs::read(&path) {
            Ok(bytes) => {
                if let Ok(meta) = std::fs::metadata(&path) {
                    if meta.permissions().mode() & 0o077 != 0 {
                        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
                    }
                }
                serde_json::from_slice(&bytes).map_err(|e| {
                    io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!(
                            "{} is not an access file ({e}); fix it or move it away",
                            path.display()
                        ),
                    )
                })?
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => Stored::default(),
            Err(e) => {
                return Err(io::Error::new(
                    e.kind(),
                    format!("cannot read {}: {e}", path.display()),
                ))
            }
        };
        Ok(Access {
            station: station.to_string(),
            path,
            fsync,
            config: arc_swap::ArcSwap::from_pointee(config),
            state: Mutex::new(stored),
            change: tokio::sync::Mutex::new(()),
        })
    }

    pub fn station(&self) -> &str {
        &self.station
    }

    fn snapshot(&self) -> Stored {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    /// What the lists say about `user_id`.
    pub fn gate(&self, user_id: &str) -> Gate {
        let s = self
            .state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if s.denied.iter().any(|p| p.user_id == user_id) {
            Gate::Denied
        } else if self.config.load().admits(user_id)
            || s.allowed.iter().any(|p| p.user_id == user_id)
        {
            Gate::Admitted
        } else {
            Gate::Unknown
        }
    }

    /// True when `user_id` is admitted by name: listed in the config or
    /// admitted with a code, and not denied. `*` does not count (Discord
    /// admits other bots only this way).
    pub fn named(&self, user_id: &str) -> bool {
        let s = self
            .state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        !s.denied.iter().any(|p| p.user_id == user_id)
            && (self.config.load().0.iter().any(|a| a == user_id)
                || s.allowed.iter().any(|p| p.user_id == user_id))
    }

    /// True when the config admits everyone (`*`).
    pub fn everyone(&self) -> bool {
        self.config.load().everyone()
    }

    /// Takes the allowlist of a reloaded config file.
    pub fn set_config_allow(&self, allow: Allow) {
        self.config.store(std::sync::Arc::new(allow));
    }

    /// A pairing code for a stranger writing from `line`, unless they hold
    /// a live one already. Stored before it is returned.
    pub async fn offer_code(
        &self,
        user_id: &str,
        name: Option<&str>,
        line: &str,
    ) -> Result<Offer, WireError> {
        let _guard = self.change.lock().await;
        let mut next = self.snapshot();
        let now = now_ms();
        let before = next.pending.len();
        next.pending
            .retain(|p| crate::clock::parse_ms(&p.expires_at).is_some_and(|e| e > now));
        if next.pending.iter().any(|p| p.user_id == user_id) {
            if next.pending.len() != before {
                // Only expired codes went: dropping them may wait.
                self.store(next, "expired codes were not dropped")
                    .await
                    .ok();
            }
            return Ok(Offer::AlreadySent);
        }
        let code = loop {
            let c = new_code()?;
            if !next.pending.iter().any(|p| p.code == c) {
                break c;
            }
        };
        next.pending.push(Pending {
            code: code.clone(),
            user_id: user_id.to_string(),
            name: name.map(str::to_string),
            line: line.to_string(),
            created_at: crate::clock::format_ms(now),
            expires_at: crate::clock::format_ms(now + CODE_TTL_MS),
        });
        while next.pending.len() > MAX_PENDING {
            next.pending.remove(0);
        }
        self.store(next, "no pairing code was issued").await?;
        Ok(Offer::New(code))
    }

    /// A blocked `kind` from `who` on `line`: logged at warn level (never
    /// the text). With `offer` (a stranger writing in private), a new
    /// pairing code for them, unless they hold a live one; the caller sends
    /// it. Errors storing the code are logged.
    pub async fn blocked(
        &self,
        gate: Gate,
        kind: &str,
        who: Option<(&str, &str)>,
        line: &str,
        offer: bool,
    ) -> Option<String> {
        let station = &self.station;
        let shown = match who {
            Some((id, name)) => format!("user {id} ({name:?})"),
            None => "someone unknown".to_string(),
        };
        let why = match gate {
            Gate::Denied => "denied with `metroctl deny`",
            _ => "not on the allowlist",
        };
        tracing::warn!("{station}: blocked a {kind} from {shown} on {line}: {why}; not stored");
        let (Gate::Unknown, true, Some((id, name))) = (gate, offer, who) else {
            return None;
        };
        match self.offer_code(id, Some(name), line).await {
            Ok(Offer::New(code)) => {
                tracing::info!(
                    "{station}: sent a pairing code to user {id} ({name:?}); `metroctl allow <code>` admits them"
                );
                Some(code)
            }
            Ok(Offer::AlreadySent) => None,
            Err(e) => {
                tracing::error!("{station}: no pairing code for user {id}: {e}");
                None
            }
        }
    }

    /// `allow <code>`: admits the holder of a live code. `None` when there
    /// is no such code (wrong, used or expired).
    pub async fn allow_code(&self, code: &str) -> Result<Option<Person>, WireError> {
        let wanted = normalize_code(code);
        let _guard = self.change.lock().await;
        let mut next = self.snapshot();
        let now = now_ms();
        let Some(i) = next.pending.iter().position(|p| {
            p.code == wanted && crate::clock::parse_ms(&p.expires_at).is_some_and(|e| e > now)
        }) else {
            return Ok(None);
        };
        let p = next.pending.remove(i);
        next.pending.retain(|q| q.user_id != p.user_id);
        next.denied.retain(|d| d.user_id != p.user_id);
        next.allowed.retain(|a| a.user_id != p.user_id);
        let person = Person {
            user_id: p.user_id,
            name: p.name,
            at: crate::clock::now(),
        };
        next.allowed.push(person.clone());
        self.store(next, "nobody was admitted").await?;
        Ok(Some(person))
    }

    /// `deny <userId>`: blocks them from now on, whatever the config says.
    /// Answers whether they had been admitted with a code.
    pub async fn deny(&self, user_id: &str) -> Result<bool, WireError> {
        let _guard = self.change.lock().await;
        let mut next = self.snapshot();
        let was = next.allowed.iter().position(|a| a.user_id == user_id);
        let name = was.map(|i| next.allowed.remove(i)).and_then(|p| p.name);
        next.pending.retain(|p| p.user_id != user_id);
        if !next.denied.iter().any(|d| d.user_id == user_id) {
            next.denied.push(Person {
                user_id: user_id.to_string(),
                name,
                at: crate::clock::now(),
            });
        }
        self.store(next, "nobody was denied").await?;
        Ok(was.is_some())
    }

    /// The `allowList` row of this station. Never the codes.
    pub fn list(&self) -> Value {
        let s = self.snapshot();
        let now = now_ms();
        let pending: Vec<Value> = s
            .pending
            .iter()
            .filter(|p| crate::clock::parse_ms(&p.expires_at).is_some_and(|e| e > now))
            .map(|p| {
                json!({
                    "userId": p.user_id,
                    "name": p.name,
                    "line": p.line,
                    "createdAt": p.created_at,
                    "expiresAt": p.expires_at,
                })
            })
            .collect();
        let config = self.config.load();
        json!({
            "station": self.station,
            "everyone": config.everyone(),
            "config": config.0.iter().filter(|a| *a != "*").collect::<Vec<_>>(),
            "allowed": s.allowed,
            "denied": s.denied,
            "pending": pending,
        })
    }

    /// Writes `next`, then makes it current. `not_done` empty: best effort.
    async fn store(&self, next: Stored, not_done: &str) -> Result<(), WireError> {
        crate::store::persist_json(&self.path, &next, self.fsync, not_done).await?;
        *self
            .state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = next;
        Ok(())
    }
}

/// The one reply a stranger gets.
pub fn pairing_text(code: &str) -> String {
    let code = show_code(code);
    format!(
        "This bot only talks to people its owner has let in.\n\
         Your pairing code: {code}\n\
         Give it to the owner; they let you in with: metroctl allow {code}\n\
         The code is valid for one hour."
    )
}

/// `abcd-efgh`, `ABCDEFGH`, ` ABCD EFGH ` → `ABCDEFGH`.
pub fn normalize_code(code: &str) -> String {
    code.chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .map(|c| c.to_ascii_uppercase())
        .collect()
}

/// `ABCD-EFGH` as shown to people.
pub fn show_code(code: &str) -> String {
    if code.len() == 8 {
        format!("{}-{}", &code[..4], &code[4..])
    } else {
        code.to_string()
    }
}

/// 8 characters of [`ALPHABET`] (about 40 bits).
fn new_code() -> Result<String, WireError> {
    let mut bytes = [0u8; 8];
    getrandom::fill(&mut bytes)
        .map_err(|e| WireError::internal(format!("no randomness for a pairing code: {e}")))?;
    Ok(bytes
        .iter()
        .map(|b| ALPHABET[*b as usize % ALPHABET.len()] as char)
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn pairing_admits_deny_blocks_and_it_all_persists() {
        let dir = tempfile::tempdir().unwrap();
        let a = Access::open(dir.path(), "telegram", Allow(vec!["1".into()]), false).unwrap();
        assert_eq!(a.gate("1"), Gate::Admitted);
        assert_eq!(a.gate("2"), Gate::Unknown);
        let Offer::New(code) = a
            .offer_code("2", Some("Bo"), "metro://telegram/2")
            .await
            .unwrap()
        else {
            panic!("no code")
        };
        assert_eq!(code.len(), 8);
        // One code per stranger while it lives.
        assert_eq!(
            a.offer_code("2", Some("Bo"), "metro://telegram/2")
                .await
                .unwrap(),
            Offer::AlreadySent
        );
        assert!(
            !a.list().to_string().contains(&code),
            "codes are never listed"
        );
        assert_eq!(a.allow_code("WRONG123").await.unwrap(), None);
        let shown = show_code(&code).to_lowercase();
        let p = a.allow_code(&shown).await.unwrap().expect("admitted");
        assert_eq!(p.user_id, "2");
        assert_eq!(a.gate("2"), Gate::Admitted);
        assert_eq!(
            a.allow_code(&code).await.unwrap(),
            None,
            "a code works once"
        );

        // deny wins over the config and over a code.
        assert!(a.deny("2").await.unwrap());
        assert!(!a.deny("1").await.unwrap());
        assert_eq!(a.gate("1"), Gate::Denied);
        drop(a);
        let a = Access::open(dir.path(), "telegram", Allow(vec!["*".into()]), false).unwrap();
        assert_eq!(a.gate("2"), Gate::Denied);
        assert_eq!(a.gate("1"), Gate::Denied);
        assert_eq!(a.gate("3"), Gate::Admitted);
        let mode = std::fs::metadata(dir.path().join("telegram-access.json"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[tokio::test]
    async fn pending_codes_are_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let a = Access::open(dir.path(), "discord", Allow::default(), false).unwrap();
        for i in 0..MAX_PENDING + 5 {
            a.offer_code(&i.to_string(), None, "metro://discord/1")
                .await
                .unwrap();
        }
        assert_eq!(
            a.list()["pending"].as_array().map(Vec::len),
            Some(MAX_PENDING)
        );
        assert_eq!(a.gate("0"), Gate::Unknown);
    }
}
