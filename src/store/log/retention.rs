//! Rolling `history.jsonl` into segments (by size after a commit, by age
//! on the writer's housekeeping tick) and deleting the oldest segments
//! beyond `--retain-bytes` / `--retain-age`. Runs in the writer thread.
//!
//! Must not import the readers (`read.rs`): readers see a roll or a
//! deletion only through the file set they lock.

use std::fs::File;
use std::io;
use std::sync::Arc;

use super::segments::{self, Segment};
use super::writer::Writer;

impl Writer {
    /// Turns `history.jsonl` into the segment `history.<base>.jsonl` and
    /// starts a new, empty `history.jsonl`. On failure the current file
    /// simply stays active (and the roll is tried again later). Either way
    /// the roll count moves, which a commit in place that made the roll
    /// due waits for before it answers.
    pub(super) fn roll(&mut self) {
        self.roll_files();
        self.rolls.send_modify(|n| *n += 1);
    }

    fn roll_files(&mut self) {
        // Whatever another writer appended belongs to this file.
        self.check_foreign(true);
        let dir = match self.shared.with_files(|f| f.dir.clone()) {
            Ok(d) => d,
            Err(_) => return,
        };
        let base = self.active_base;
        let seg_path = dir.join(segments::segment_name(base));
        let renamed = std::fs::rename(dir.join(segments::ACTIVE), &seg_path);
        if renamed.is_ok() {
            // Bytes another writer appended by path until the rename are
            // this segment's (the handle still holds the renamed file).
            self.check_foreign(true);
        }
        let result = renamed.and_then(|()| -> io::Result<File> {
            self.file.sync_all()?;
            let fresh = segments::open_active(&dir)?;
            File::open(&dir)?.sync_all()?;
            crate::store::write_atomic(
                &dir.join(segments::BASE),
                self.pos.to_string().as_bytes(),
                true,
            )?;
            Ok(fresh)
        });
        let fresh = match result {
            Ok(f) => f,
            Err(e) => {
                tracing::error!("could not roll the log at offset {}: {e}", self.pos);
                // If the rename happened, history.jsonl may be missing:
                // reopen whatever is there so appends go on.
                if let Ok(f) = segments::open_active(&dir) {
                    self.file = f;
                }
                return;
            }
        };
        let reader = match crate::store::open_state(
            std::fs::OpenOptions::new().read(true),
            &dir.join(segments::ACTIVE),
        ) {
            Ok(r) => Arc::new(r),
            Err(e) => {
                tracing::error!("could not open the new history.jsonl: {e}");
                return;
            }
        };
        let len = self.pos - base;
        if let Ok(mut files) = self.shared.files.write() {
            let old_active = std::mem::replace(&mut files.active, reader);
            files.segments.push(Segment {
                start: base,
                len,
                path: seg_path,
                file: old_active,
                modified: std::time::SystemTime::now(),
            });
            files.active_base = self.pos;
        }
        let old = std::mem::replace(&mut self.file, fresh);
        self.foreign.watch_rolled(old, len);
        self.active_base = self.pos;
        self.opened = std::time::Instant::now();
        tracing::info!(
            "rolled {len} bytes into segment {base}; history.jsonl starts at {}",
            self.pos
        );
        self.retention();
    }

    /// Deletes the oldest segments beyond `--retain-bytes` / `--retain-age`.
    /// The active file is never deleted.
    pub(super) fn retention(&mut self) {
        if self.opts.retain_bytes.is_none() && self.opts.retain_age.is_none() {
            return;
        }
        let Ok(mut files) = self.shared.files.write() else {
            return;
        };
        let mut total = files.bytes(self.pos);
        while let Some(oldest) = files.segments.first() {
            let too_big = self.opts.retain_bytes.is_some_and(|max| total > max);
            let too_old = self
                .opts
                .retain_age
                .is_some_and(|age| oldest.modified.elapsed().is_ok_and(|elapsed| elapsed > age));
            if !too_big && !too_old {
                break;
            }
            let seg = files.segments.remove(0);
            total -= seg.len;
            match std::fs::remove_file(&seg.path) {
                Ok(()) => tracing::info!(
                    "retention deleted segment {} ({} bytes, offsets {}..{})",
                    seg.path.display(),
                    seg.len,
                    seg.start,
                    seg.end()
                ),
                Err(e) => tracing::error!("could not delete {}: {e}", seg.path.display()),
            }
        }
    }
}
