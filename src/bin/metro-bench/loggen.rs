//! Writes a valid `history.jsonl` directly (not through the daemon): one
//! line template, the id patched in place per event, big buffered writes.

use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::Path;

use crate::client::EVENT_BYTES;
use crate::Error;

/// 2026-01-01T00:00:00.000Z in ms since the epoch.
const BASE_MS: u64 = 1_767_225_600_000;

/// Fills `state/history.jsonl` with [`EVENT_BYTES`]-byte events until it
/// holds `events` events or `bytes` bytes, whichever comes first, and
/// syncs it (so writeback does not disturb what is measured next).
/// Returns (events, bytes) written.
pub fn write_log(state: &Path, events: u64, bytes: u64) -> Result<(u64, u64), Error> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(state)?;
    let path = state.join("history.jsonl");
    let file = std::fs::OpenOptions::new()
        .create_new(true)
        .write(true)
        .mode(0o600)
        .open(&path)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    let head = "{\"id\":\"msg_";
    let id_digits = 17;
    let rest_head = "\",\"ts\":\"2026-01-01T00:00:00.000Z\",\"station\":\"claude\",\"kind\":\"inbound\",\"line\":\"metro://claude/bench/p00\",\"from\":\"metro://local/anonymous\",\"to\":\"metro://claude/bench/p00\",\"text\":\"";
    let tail = "\"}\n";
    let fixed = head.len() + id_digits + rest_head.len() + tail.len();
    let pad = EVENT_BYTES.saturating_sub(fixed);
    let mut template = Vec::with_capacity(EVENT_BYTES);
    template.extend_from_slice(head.as_bytes());
    template.resize(template.len() + id_digits, b'0');
    template.extend_from_slice(rest_head.as_bytes());
    template.resize(template.len() + pad, b'x');
    template.extend_from_slice(tail.as_bytes());
    let line_len = template.len() as u64;
    let id_at = head.len();

    let n = events.min(bytes / line_len);
    let mut w = std::io::BufWriter::with_capacity(8 << 20, file);
    let hex = b"0123456789abcdef";
    for i in 0..n {
        // 11 hex digits of ms (one ms per 4096 events) + 6 of a counter.
        let ms = BASE_MS + i / 4096;
        let id = &mut template[id_at..id_at + id_digits];
        for (k, d) in id[..11].iter_mut().enumerate() {
            *d = hex[((ms >> (4 * (10 - k))) & 0xf) as usize];
        }
        for (k, d) in id[11..].iter_mut().enumerate() {
            *d = hex[((i >> (4 * (5 - k))) & 0xf) as usize];
        }
        w.write_all(&template)?;
    }
    let file = w.into_inner().map_err(|e| e.into_error())?;
    file.sync_all()?;
    Ok((n, n * line_len))
}

/// Writes a durable cursor file `cursors/<slug>` holding `offset` (the
/// slug must already be in the daemon's slug form).
pub fn write_cursor(state: &Path, slug: &str, offset: u64) -> Result<(), Error> {
    let dir = state.join("cursors");
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&dir)?;
    std::fs::write(dir.join(slug), format!("{offset}\n"))?;
    Ok(())
}
