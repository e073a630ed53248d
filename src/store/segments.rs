//! The files behind the log's global offsets.
//!
//! The log is one sequence of bytes; offsets count from its first byte ever
//! written and never change. On disk it is:
//!
//! - `history.jsonl`, the active file, always the newest events;
//! - `history.<start>.jsonl`, rolled segments, `<start>` being the global
//!   offset of their first byte (20 digits, so they sort by name);
//! - `history.base`, the global offset of `history.jsonl`'s first byte,
//!   written when a segment is rolled (absent: 0, the TypeScript-era and
//!   never-rolled case).
//!
//! A roll renames `history.jsonl` to `history.<base>.jsonl`, creates an empty
//! `history.jsonl` and then writes `history.base`. A crash in between is
//! repaired at startup: the active base is the larger of `history.base` and
//! the end of the newest segment. Entries never span two files.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

pub const ACTIVE: &str = "history.jsonl";
pub const BASE: &str = "history.base";

/// One rolled segment.
#[derive(Debug, Clone)]
pub struct Segment {
    pub start: u64,
    pub len: u64,
    pub path: PathBuf,
    pub file: Arc<File>,
    pub modified: SystemTime,
}

impl Segment {
    pub fn end(&self) -> u64 {
        self.start + self.len
    }
}

/// The segments and the active file, as readers see them.
#[derive(Debug)]
pub struct FileSet {
    pub dir: PathBuf,
    pub segments: Vec<Segment>,
    pub active_base: u64,
    pub active: Arc<File>,
}

/// A file holding part of the log, with its global range.
pub struct Located {
    pub file: Arc<File>,
    /// Global offset of the file's first byte.
    pub base: u64,
    /// Global offset just after the file's last readable byte.
    pub end: u64,
}

pub fn segment_name(start: u64) -> String {
    format!("history.{start:020}.jsonl")
}

fn parse_segment_name(name: &str) -> Option<u64> {
    let digits = name.strip_prefix("history.")?.strip_suffix(".jsonl")?;
    if digits.len() == 20 && digits.bytes().all(|b| b.is_ascii_digit()) {
        digits.parse().ok()
    } else {
        None
    }
}

/// Reads the rolled segments of `dir`, oldest first, and the active base.
pub fn scan(dir: &Path) -> io::Result<(Vec<Segment>, u64)> {
    let mut segments = Vec::new();
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        let Some(start) = name.to_str().and_then(parse_segment_name) else {
            continue;
        };
        let path = entry.path();
        let meta = entry.metadata()?;
        segments.push(Segment {
            start,
            len: meta.len(),
            file: Arc::new(super::open_state(OpenOptions::new().read(true), &path)?),
            modified: meta.modified().unwrap_or(SystemTime::UNIX_EPOCH),
            path,
        });
    }
    segments.sort_by_key(|s| s.start);
    let from_file = match super::read_state(&dir.join(BASE)) {
        // Never quote the file: it is not ours if it is wrong.
        Ok(bytes) => std::str::from_utf8(&bytes)
            .ok()
            .and_then(|t| t.trim().parse::<u64>().ok())
            .ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!(
                        "{} does not hold a byte offset ({} bytes)",
                        dir.join(BASE).display(),
                        bytes.len()
                    ),
                )
            })?,
        Err(e) if e.kind() == io::ErrorKind::NotFound => 0,
        Err(e) => return Err(e),
    };
    let from_segments = segments.last().map(Segment::end).unwrap_or(0);
    Ok((segments, from_file.max(from_segments)))
}

/// Opens `history.jsonl` for appending, creating it `0600`.
pub fn open_active(dir: &Path) -> io::Result<File> {
    super::open_state(
        OpenOptions::new()
            .create(true)
            .append(true)
            .read(true)
            .mode(0o600),
        &dir.join(ACTIVE),
    )
}

impl FileSet {
    /// The oldest offset still on disk.
    pub fn oldest(&self) -> u64 {
        self.segments
            .first()
            .map(|s| s.start)
            .unwrap_or(self.active_base)
    }

    /// The file holding the byte at `pos` (`pos < end`), or `None` when
    /// `pos` has been deleted by retention.
    pub fn locate(&self, pos: u64, end: u64) -> Option<Located> {
        if pos >= self.active_base {
            return Some(Located {
                file: self.active.clone(),
                base: self.active_base,
                end,
            });
        }
        let i = self.segments.partition_point(|s| s.end() <= pos);
        let s = self.segments.get(i)?;
        (s.start <= pos).then(|| Located {
            file: s.file.clone(),
            base: s.start,
            end: s.end(),
        })
    }

    /// True when a file starts at `offset` (always an entry boundary).
    pub fn is_file_start(&self, offset: u64) -> bool {
        offset == self.active_base || self.segments.iter().any(|s| s.start == offset)
    }

    /// Bytes on disk, all files.
    pub fn bytes(&self, end: u64) -> u64 {
        self.segments.iter().map(|s| s.len).sum::<u64>() + (end - self.active_base)
    }
}
