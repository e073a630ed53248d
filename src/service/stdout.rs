//! `metrod --stdout`: every event appended to the log from now on (minted by
//! metrod or adopted from another writer) is also written to standard output
//! as one JSON line, for a parent process that read the TypeScript metro's
//! dispatcher output.
//!
//! The mirror follows the log like a subscriber with no filter: it reads the
//! ring (or the file, when it fell behind) in bounded chunks, so a slow or
//! stuck reader of stdout never holds events in memory and never slows the
//! log writer. If stdout is closed (the parent went away) the mirror stops
//! with one warning; metrod goes on.

use std::sync::Arc;

use std::io::Write;

use crate::broker::Broker;

/// Writes each new entry's JSON and `\n` to stdout until the log writer
/// stops (at shutdown, after its last commit).
pub async fn mirror(broker: Arc<Broker>) {
    let mut end_rx = broker.log.watch_end();
    let mut pos = broker.log.end();
    loop {
        let end = *end_rx.borrow_and_update();
        while pos < end {
            let entries = match broker.log.read_from(pos, end).await {
                Ok(v) if !v.is_empty() => v,
                Ok(_) => break,
                Err(e) => {
                    // Retention may have deleted what we had not written yet.
                    tracing::warn!(
                        "--stdout: cannot read the log at offset {pos}: {e}; skipping to {end}"
                    );
                    pos = end;
                    break;
                }
            };
            let mut buf = Vec::with_capacity(entries.iter().map(|e| e.json.len() + 1).sum());
            for e in &entries {
                // Malformed lines (torn pieces) are passed over, as readers do.
                if e.meta.valid {
                    buf.extend_from_slice(&e.json);
                    buf.push(b'\n');
                }
                pos = e.end;
            }
            // A blocking write on the blocking pool: a full pipe holds this
            // one chunk, nothing more.
            let written = tokio::task::spawn_blocking(move || {
                let mut out = std::io::stdout().lock();
                out.write_all(&buf)?;
                out.flush()
            })
            .await
            .unwrap_or_else(|e| Err(std::io::Error::other(e)));
            if let Err(e) = written {
                tracing::warn!(
                    "--stdout: standard output is closed ({e}); no longer mirroring events"
                );
                return;
            }
        }
        if end_rx.changed().await.is_err() {
            return;
        }
    }
}
