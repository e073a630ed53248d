//! Durable cursors: `cursors/<slug>` holds a decimal byte offset.
//!
//! Cursors live in memory and are written by one flusher that coalesces
//! (every 100 ms and at shutdown), each file replaced atomically. A crash
//! loses at most the last interval: events are then delivered again, never
//! skipped. At startup every cursor is checked against the log: one past the
//! end is pulled back to the end, one inside an entry is moved back to that
//! entry's start, each with a warning.
//!
//! Cursors of the TypeScript metro are taken over: its files are
//! `cursors/<slug>` where the slug is the identity without `metro://` and
//! every character outside `[A-Za-z0-9_.-]` written `-`, holding a byte
//! offset without a newline (metrod always ends its own with one). That slug
//! is lossy (`a/b` and `a-b` share it), so no identity is guessed from it:
//! at startup such files are set aside (offset past the end pulled back to
//! the end, one inside an entry moved on to the next boundary — the entry
//! was delivered), and the first time an identity asks for its cursor and
//! has none of metrod's, the TypeScript file of its slug, if any, becomes
//! its cursor (written in metrod's scheme at the next flush). The old file
//! is left as it was.

use std::collections::HashMap;
use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use super::log::Log;

/// The file name for a cursor name: `metro://` is dropped, then every byte
/// outside `[A-Za-z0-9._-]` is written `%XX` (so distinct names never share a
/// file, and the name can be read back from it).
pub fn slug(full: &str) -> String {
    let name = full.strip_prefix(crate::line::SCHEME).unwrap_or(full);
    let mut out = String::with_capacity(name.len() + 8);
    for (i, b) in name.bytes().enumerate() {
        let plain = b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || (b == b'.' && i > 0);
        if plain {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    // File names are limited (255 bytes, and the temp name adds a few):
    // cut long slugs and keep them distinct with a hash of the name.
    if out.len() > MAX_SLUG {
        let mut cut = MAX_SLUG - 17;
        // Do not split a %XX escape.
        while out.as_bytes()[cut - 1] == b'%' || out.as_bytes()[cut - 2] == b'%' {
            cut -= 1;
        }
        out.truncate(cut);
        out.push_str(&format!("~{:016x}", fnv1a(full.as_bytes())));
    }
    out
}

/// Longest slug written as is.
const MAX_SLUG: usize = 200;

/// FNV-1a, 64 bits: stable across builds, unlike std's hasher.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// The cursor name a file name stands for (`metro://` is not restored).
pub fn unslug(slug: &str) -> String {
    let bytes = slug.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let Some(b) = std::str::from_utf8(&bytes[i + 1..i + 3])
                .ok()
                .and_then(|h| u8::from_str_radix(h, 16).ok())
            {
                out.push(b);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[derive(Debug, Clone, Copy)]
struct Slot {
    value: u64,
    dirty: bool,
}

/// The TypeScript metro's file name for a cursor name: `metro://` dropped,
/// every character outside `[A-Za-z0-9_.-]` written `-` (two for a
/// character beyond the BMP, as JavaScript's UTF-16 regex replace does).
pub fn ts_slug(full: &str) -> String {
    let name = full.strip_prefix(crate::line::SCHEME).unwrap_or(full);
    let mut out = String::with_capacity(name.len());
    for c in name.chars() {
        if c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-') {
            out.push(c);
        } else {
            for _ in 0..c.len_utf16() {
                out.push('-');
            }
        }
    }
    out
}

/// Tells a TypeScript metro cursor file from metrod's: a plain slug (no
/// `%` escape) holding digits only, without the newline metrod writes.
fn ts_offset(name: &str, text: &str) -> Option<u64> {
    if name.contains('%') || name.contains('~') || text.is_empty() || text.ends_with('\n') {
        return None;
    }
    if !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

pub struct Cursors {
    dir: PathBuf,
    slots: Mutex<HashMap<String, Slot>>,
    /// TypeScript metro cursors not yet claimed by an identity: slug ->
    /// offset (an entry boundary). Bounded by the files in `cursors/`.
    legacy: Mutex<HashMap<String, u64>>,
    fsync: bool,
}

/// A cursor repaired at startup.
#[derive(Debug, Clone)]
pub struct Repair {
    pub slug: String,
    pub was: String,
    pub why: &'static str,
    pub now: u64,
}

impl Cursors {
    /// Loads every cursor under `dir` and repairs those that do not point at
    /// an entry boundary of `log`.
    pub fn open(dir: &Path, log: &Log, fsync: bool) -> io::Result<(Cursors, Vec<Repair>)> {
        if fs::symlink_metadata(dir).is_ok_and(|m| m.file_type().is_symlink()) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "{} is a symbolic link; metrod does not follow links in its state dir (remove it)",
                    dir.display()
                ),
            ));
        }
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)?;
        let mut slots = HashMap::new();
        let mut legacy = HashMap::new();
        let mut repairs = Vec::new();
        let end = log.end();
        for entry in fs::read_dir(dir)? {
            let entry = entry?;
            let name = entry.file_name().to_string_lossy().into_owned();
            // Temp files start with '.'; slugs never do.
            if name.starts_with('.') || !entry.file_type()?.is_file() {
                continue;
            }
            let text = fs::read_to_string(entry.path()).unwrap_or_default();
            if let Some(v) = ts_offset(&name, &text) {
                let at = if v < log.oldest() {
                    v
                } else {
                    log.boundary_at_or_after(v)?
                };
                if at != v {
                    tracing::info!(
                        "TypeScript metro cursor cursors/{name}: offset {v} is not an entry \
                         boundary; it will resume at {at}"
                    );
                }
                legacy.insert(name, at);
                continue;
            }
            let parsed = text.trim().parse::<u64>();
            let (value, why) = match parsed {
                // Below the oldest kept offset is fine: the subscriber is told
                // what retention deleted and resumes at the oldest event.
                Ok(v) if v <= end && (v < log.oldest() || log.is_boundary(v)?) => {
                    slots.insert(
                        name,
                        Slot {
                            value: v,
                            dirty: false,
                        },
                    );
                    continue;
                }
                Ok(v) if v > end => (end, "past the end of the log"),
                Ok(v) => (log.boundary_at_or_before(v)?, "inside an entry"),
                Err(_) => (0, "not a byte offset"),
            };
            repairs.push(Repair {
                slug: name.clone(),
                was: text.trim().chars().take(40).collect(),
                why,
                now: value,
            });
            slots.insert(name, Slot { value, dirty: true });
        }
        if !legacy.is_empty() {
            tracing::info!(
                "{} cursor files of the TypeScript metro found in {}; each is taken over by \
                 its identity on first use",
                legacy.len(),
                dir.display()
            );
        }
        let cursors = Cursors {
            dir: dir.to_path_buf(),
            slots: Mutex::new(slots),
            legacy: Mutex::new(legacy),
            fsync,
        };
        cursors.flush()?;
        Ok((cursors, repairs))
    }

    /// The cursor `name`; without one of metrod's, the TypeScript metro's
    /// cursor of the same identity, if any, taken over now.
    pub fn get(&self, name: &str) -> Option<u64> {
        let mut slots = self.slots.lock().ok()?;
        let key = slug(name);
        if let Some(s) = slots.get(&key) {
            return Some(s.value);
        }
        let old = ts_slug(name);
        let value = self.legacy.lock().ok()?.remove(&old)?;
        tracing::info!(
            "cursor of {name}: taken over from the TypeScript metro's cursors/{old} at offset {value}"
        );
        slots.insert(key, Slot { value, dirty: true });
        Some(value)
    }

    pub fn set(&self, name: &str, value: u64) {
        if let Ok(mut slots) = self.slots.lock() {
            let slot = slots
                .entry(slug(name))
                .or_insert(Slot { value, dirty: true });
            if slot.value != value {
                slot.value = value;
                slot.dirty = true;
            }
        }
    }

    /// Every cursor, by file name.
    pub fn all(&self) -> Vec<(String, u64)> {
        let mut v: Vec<(String, u64)> = match self.slots.lock() {
            Ok(slots) => slots.iter().map(|(k, s)| (k.clone(), s.value)).collect(),
            Err(_) => Vec::new(),
        };
        v.sort();
        v
    }

    /// Writes every changed cursor (temp file, rename).
    pub fn flush(&self) -> io::Result<()> {
        let dirty: Vec<(String, u64)> = match self.slots.lock() {
            Ok(mut slots) => slots
                .iter_mut()
                .filter(|(_, s)| s.dirty)
                .map(|(k, s)| {
                    s.dirty = false;
                    (k.clone(), s.value)
                })
                .collect(),
            Err(_) => return Ok(()),
        };
        let mut first_err = None;
        for (name, value) in &dirty {
            if let Err(e) = self.write_one(name, *value) {
                tracing::error!("could not write cursor {name}: {e}");
                if let Ok(mut slots) = self.slots.lock() {
                    if let Some(s) = slots.get_mut(name) {
                        s.dirty = true;
                    }
                }
                first_err.get_or_insert(e);
            }
        }
        if !dirty.is_empty() && self.fsync {
            if let Ok(d) = fs::File::open(&self.dir) {
                let _ = d.sync_all();
            }
        }
        match first_err {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    fn write_one(&self, name: &str, value: u64) -> io::Result<()> {
        let tmp = self.dir.join(format!(".{name}.tmp"));
        let mut f = super::create_temp(&tmp)?;
        writeln!(f, "{value}")?;
        if self.fsync {
            f.sync_data()?;
        }
        fs::rename(&tmp, self.dir.join(name))
    }
}

#[cfg(test)]
mod tests {
    use super::{slug, ts_offset, ts_slug, unslug};

    #[test]
    fn typescript_slugs_and_files() {
        assert_eq!(ts_slug("metro://claude/user/A"), "claude-user-A");
        assert_eq!(ts_slug("metro://codex/user/a.b_c-d"), "codex-user-a.b_c-d");
        assert_eq!(ts_slug("metro://x/é/😀"), "x-----");
        assert_eq!(ts_offset("claude-user-A", "1234"), Some(1234));
        assert_eq!(ts_offset("claude-user-A", "1234\n"), None, "metrod's own");
        assert_eq!(ts_offset("claude%2Fuser%2FA", "1234"), None);
        assert_eq!(ts_offset("claude-user-A", "12x"), None);
        assert_eq!(ts_offset("claude-user-A", ""), None);
    }

    #[test]
    fn slugs_are_distinct_and_readable() {
        assert_eq!(slug("metro://claude/user/abc"), "claude%2Fuser%2Fabc");
        assert_eq!(slug("claude_user"), "claude_user");
        assert_ne!(slug("a/b"), slug("a%2Fb"));
        assert_eq!(slug(".."), "%2E.");
        assert_eq!(unslug("claude%2Fuser%2Fabc"), "claude/user/abc");
        assert_eq!(unslug(&slug("a b/ü")), "a b/ü");
        assert_eq!(unslug("50%"), "50%");
        let long = format!("metro://claude/{}", "é/".repeat(300));
        let s = slug(&long);
        assert!(s.len() <= 200, "{}", s.len());
        assert_ne!(s, slug(&format!("{long}x")));
        assert_eq!(s, slug(&long));
    }
}
