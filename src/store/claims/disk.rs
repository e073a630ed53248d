//! `claims.json` on disk, as people edit it by hand.
//!
//! - At startup a malformed file is moved aside to
//!   `claims.json.bad-<timestamp>` and metrod starts with no durable claims;
//!   it says so in the log, in `stats` (`claimsFile`) and through
//!   `metroctl doctor`.
//! - While metrod runs, the file's stamp is looked at every
//!   [`POLL`] (one `stat`): a changed file is read and, when valid, its
//!   claims replace the durable ones in force (ephemeral claims stay); an
//!   invalid edit is logged and the map in force kept. A poll, not a
//!   `notify` watch as for the config: the watch would be on the state dir,
//!   whose `history.jsonl` changes with every append, and would wake on each.
//! - metrod never overwrites a hand edit it has not read: before every write
//!   it compares the file's identity (inode, length, mtime) with what its own
//!   last write or read left. A valid edit is put in force first and the
//!   batch applies on top of it; while an invalid edit stands, changes to
//!   durable claims are refused with an error saying why (ephemeral claims
//!   still work), until the file is fixed.

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How often `claims.json` is looked at for hand edits.
pub const POLL: Duration = Duration::from_millis(250);

use serde_json::{json, Value};

/// What identifies one version of the file without reading it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    ino: u64,
    len: u64,
    mtime_ns: i128,
}

impl Stamp {
    /// The file's stamp, `None` when it does not exist (or cannot be read).
    pub fn of(path: &Path) -> Option<Stamp> {
        let m = fs::metadata(path).ok()?;
        Some(Stamp {
            ino: m.ino(),
            len: m.len(),
            mtime_ns: i128::from(m.mtime()) * 1_000_000_000 + i128::from(m.mtime_nsec()),
        })
    }
}

/// What `stats` says about the file (`claimsFile`).
#[derive(Debug, Default)]
pub struct FileStatus {
    /// Where a malformed file found at startup was moved.
    pub moved_aside: Option<String>,
    /// Why the file on disk is not in force (an invalid hand edit), and when
    /// that was seen; `None` once a good version is read or written.
    pub error: Option<(String, String)>,
    /// Hand edits put in force since startup.
    pub reloads: u64,
}

pub type SharedStatus = Arc<Mutex<FileStatus>>;

pub fn summary(status: &SharedStatus) -> Value {
    match status.lock() {
        Ok(s) => json!({
            "movedAside": s.moved_aside,
            "error": s.error.as_ref().map(|e| &e.0),
            "errorAt": s.error.as_ref().map(|e| &e.1),
            "reloads": s.reloads,
        }),
        Err(_) => Value::Null,
    }
}

/// Reads `claims.json` as a map of line → owner.
pub fn parse(path: &Path, bytes: &[u8]) -> Result<BTreeMap<String, String>, String> {
    serde_json::from_slice(bytes).map_err(|e| {
        format!(
            "{} is not a JSON object of line -> owner ({e})",
            path.display()
        )
    })
}

/// Startup: the durable claims, and the file's stamp. A malformed file is
/// moved aside (the status says where) and the map starts empty.
pub fn load(
    path: &Path,
    status: &SharedStatus,
) -> io::Result<(BTreeMap<String, String>, Option<Stamp>)> {
    let bytes = match crate::store::read_state(path) {
        Ok(b) => b,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok((BTreeMap::new(), None)),
        Err(e) => {
            return Err(io::Error::new(
                e.kind(),
                format!("cannot read {}: {e}", path.display()),
            ))
        }
    };
    match parse(path, &bytes) {
        Ok(map) => Ok((map, Stamp::of(path))),
        Err(why) => {
            let stamp = crate::clock::now().replace(':', "-");
            let aside = PathBuf::from(format!("{}.bad-{stamp}", path.display()));
            fs::rename(path, &aside)?;
            tracing::error!(
                "{why}: moved it to {} and started with NO durable claims; \
                 fix that file and copy it back to {} (metrod picks it up while running)",
                aside.display(),
                path.display()
            );
            if let Ok(mut s) = status.lock() {
                s.moved_aside = Some(aside.display().to_string());
            }
            Ok((BTreeMap::new(), None))
        }
    }
}

/// What the file holds now, compared with `known` (the stamp metrod's last
/// write or read left).
pub enum OnDisk {
    Unchanged,
    /// A valid new version (an absent file is an empty map).
    Edited(BTreeMap<String, String>, Option<Stamp>),
    /// An edit that is not a claims map: keep the map in force.
    Invalid(String),
}

pub fn check(path: &Path, known: Option<Stamp>) -> OnDisk {
    let now = Stamp::of(path);
    if now == known {
        return OnDisk::Unchanged;
    }
    let bytes = match crate::store::read_state(path) {
        Ok(b) => b,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return OnDisk::Edited(BTreeMap::new(), None);
        }
        Err(e) => return OnDisk::Invalid(format!("cannot read {}: {e}", path.display())),
    };
    match parse(path, &bytes) {
        Ok(map) => OnDisk::Edited(map, now),
        Err(why) => OnDisk::Invalid(why),
    }
}
