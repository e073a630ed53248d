//! What the daemon keeps on disk: the event log, the claims map, durable
//! cursors, and the in-memory indexes of recent events: lines seen, hops
//! (the loop guard) and idempotency keys.

pub mod claims;
pub mod cursors;
pub mod dedupe;
pub mod hops;
pub mod lines;
pub mod log;
pub mod segments;

use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// Replaces `path` atomically: temp file, fsync, rename, fsync of the dir.
pub fn write_atomic(path: &Path, body: &[u8], fsync: bool) -> io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.tmp"));
    let mut f = fs::OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    f.write_all(body)?;
    f.write_all(b"\n")?;
    if fsync {
        f.sync_all()?;
    }
    drop(f);
    fs::rename(&tmp, path)?;
    if fsync {
        fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

/// [`write_atomic`] on the blocking pool, for async callers.
pub async fn write_atomic_async(path: PathBuf, body: Vec<u8>, fsync: bool) -> io::Result<()> {
    tokio::task::spawn_blocking(move || write_atomic(&path, &body, fsync))
        .await
        .map_err(io::Error::other)?
}
