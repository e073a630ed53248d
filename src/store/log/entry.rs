//! What the log keeps of a committed entry: its JSON bytes, its end offset
//! and the fields the delivery predicate reads ([`Meta`], parsed once), and
//! the byte-bounded ring of recent entries that live subscribers read.
//!
//! Must not import the writer, the readers or anything above the store.

use std::borrow::Cow;
use std::collections::VecDeque;
use std::sync::Arc;

use bytes::Bytes;
use serde::Deserialize;

use crate::proto::Event;

/// The fields of an event the delivery predicate looks at, parsed once.
#[derive(Debug, Clone, Default)]
pub struct Meta {
    pub line: Box<str>,
    pub to: Box<str>,
    /// Who wrote it (`""` when a stored line has no `from`): a subscription
    /// is not fed its own identity's events (no echo).
    pub from: Box<str>,
    pub station: Box<str>,
    pub kind: Box<str>,
    /// False for a log line that is not an event object; such lines are
    /// passed over (the cursor moves past them) but never delivered.
    pub valid: bool,
}

#[derive(Deserialize)]
struct MetaRef<'a> {
    #[serde(borrow)]
    line: Cow<'a, str>,
    #[serde(borrow, default)]
    to: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    from: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    station: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    kind: Option<Cow<'a, str>>,
}

impl Meta {
    /// Takes the predicate fields out of a committed event (they are not
    /// copied: the writer needs nothing of them after this).
    pub fn take(event: &mut Event) -> Meta {
        let take = |s: &mut String| std::mem::take(s).into_boxed_str();
        Meta {
            line: take(&mut event.line),
            to: take(&mut event.to),
            from: take(&mut event.from),
            station: take(&mut event.station),
            kind: take(&mut event.kind),
            valid: true,
        }
    }

    /// Parses the predicate fields of a stored line. Lines written by the
    /// TypeScript metro may lack `to` or `station`: `to` defaults to `line`,
    /// `station` to the line's station, `kind` to `inbound`.
    pub fn parse(json: &[u8]) -> Meta {
        match serde_json::from_slice::<MetaRef>(json) {
            Ok(m) => {
                let station = match m.station {
                    Some(s) => s.into_owned().into_boxed_str(),
                    None => crate::line::station_of(&m.line).into(),
                };
                Meta {
                    to: m.to.as_deref().unwrap_or(&m.line).into(),
                    from: m.from.as_deref().unwrap_or("").into(),
                    line: m.line.into_owned().into_boxed_str(),
                    station,
                    kind: m.kind.as_deref().unwrap_or("inbound").into(),
                    valid: true,
                }
            }
            Err(_) => Meta::default(),
        }
    }
}

/// One committed log entry.
#[derive(Debug)]
pub struct Entry {
    /// Byte offset just after this entry's `\n`.
    pub end: u64,
    /// The event's JSON, without the trailing `\n`.
    pub json: Bytes,
    pub meta: Meta,
}

impl Entry {
    pub fn start(&self) -> u64 {
        self.end - self.json.len() as u64 - 1
    }
}

/// Recent entries, oldest first, at most `cap` bytes (JSON plus
/// [`ENTRY_OVERHEAD`] each).
pub(super) struct Ring {
    pub(super) entries: VecDeque<Arc<Entry>>,
    pub(super) bytes: usize,
    pub(super) cap: usize,
}

/// Per-entry bookkeeping counted against the ring's budget besides the JSON.
const ENTRY_OVERHEAD: usize = 128;

impl Ring {
    pub(super) fn push(&mut self, e: Arc<Entry>) {
        self.bytes += e.json.len() + ENTRY_OVERHEAD;
        self.entries.push_back(e);
        while self.bytes > self.cap && self.entries.len() > 1 {
            if let Some(old) = self.entries.pop_front() {
                self.bytes -= old.json.len() + ENTRY_OVERHEAD;
            }
        }
    }
}
