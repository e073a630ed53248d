//! What the daemon keeps on disk: the event log, the claims map, durable
//! cursors, and the in-memory indexes of recent events: lines seen, hops
//! (the loop guard) and idempotency keys.

pub mod claims;
pub mod cursors;
pub mod dedupe;
pub mod hops;
pub mod lines;
pub mod log;
pub mod recent;
pub mod segments;

use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// Opens a file of the state dir without following a symbolic link planted
/// in its place (`O_NOFOLLOW`); such a link is refused with an error that
/// names it.
pub fn open_state(opts: &mut fs::OpenOptions, path: &Path) -> io::Result<fs::File> {
    opts.custom_flags(nix::libc::O_NOFOLLOW)
        .open(path)
        .map_err(|e| refuse_link(path, e))
}

/// Reads a whole state file, refusing a symbolic link.
pub fn read_state(path: &Path) -> io::Result<Vec<u8>> {
    use std::io::Read;
    let mut f = open_state(fs::OpenOptions::new().read(true), path)?;
    let mut out = Vec::new();
    f.read_to_end(&mut out)?;
    Ok(out)
}

/// Creates a temp file afresh (`O_EXCL`, `O_NOFOLLOW`, `0600`): whatever
/// was left at `tmp`, a planted link included, is removed, never written
/// through.
pub fn create_temp(tmp: &Path) -> io::Result<fs::File> {
    match fs::remove_file(tmp) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    open_state(
        fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600),
        tmp,
    )
}

fn refuse_link(path: &Path, e: io::Error) -> io::Error {
    if e.raw_os_error() == Some(nix::libc::ELOOP) {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "{} is a symbolic link; metrod does not follow links in its state dir (remove it)",
                path.display()
            ),
        )
    } else {
        e
    }
}

/// Replaces `path` atomically: temp file, fsync, rename, fsync of the dir.
pub fn write_atomic(path: &Path, body: &[u8], fsync: bool) -> io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.tmp"));
    let mut f = create_temp(&tmp)?;
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

/// Replaces a station's state file (`path`) with `value` as pretty JSON,
/// atomically; a failure becomes an `internal` answer starting with
/// `not_done` ("the endpoint was not added", …) and is logged.
pub async fn persist_json<T: serde::Serialize>(
    path: &std::path::Path,
    value: &T,
    fsync: bool,
    not_done: &str,
) -> Result<(), crate::proto::WireError> {
    let body = serde_json::to_vec_pretty(value)
        .map_err(|e| crate::proto::WireError::internal(format!("{not_done}: {e}")))?;
    if let Err(e) = write_atomic_async(path.to_path_buf(), body, fsync).await {
        let why = format!("{not_done}: could not write {}: {e}", path.display());
        tracing::error!("{why}");
        return Err(crate::proto::WireError::internal(why));
    }
    Ok(())
}
