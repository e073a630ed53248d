//! The hop index of the loop guard: metro id → `hops` of the newest
//! events that have any. Kept in memory, fed by the log writer before an
//! event becomes visible (so a reply can never outrun it), and seeded at
//! startup from the end of the log only.
//!
//! Only events with `hops > 0` (automatic answers) are kept: an event that
//! is not here counts as 0, which is what people's messages have anyway.
//! At most [`CAP`] ids (about 5 MB); the oldest are forgotten first, and a
//! forgotten id counts as 0 again.

use std::collections::{HashMap, VecDeque};

use crate::proto::Event;

/// Ids kept at most.
pub const CAP: usize = 65_536;

#[derive(Debug, Default)]
pub struct HopIndex {
    hops: HashMap<Box<str>, u32>,
    order: VecDeque<Box<str>>,
}

impl HopIndex {
    /// Records a committed event.
    pub fn observe(&mut self, ev: &Event) {
        self.insert(&ev.id, ev.hops);
    }

    /// Records a stored line (startup seeding); lines that are not events,
    /// or have no hops, are ignored.
    pub fn observe_json(&mut self, json: &[u8]) {
        #[derive(serde::Deserialize)]
        struct Seen<'a> {
            #[serde(borrow, default)]
            id: std::borrow::Cow<'a, str>,
            #[serde(default)]
            hops: u32,
        }
        if let Ok(s) = serde_json::from_slice::<Seen>(json) {
            self.insert(&s.id, s.hops);
        }
    }

    fn insert(&mut self, id: &str, hops: u32) {
        if hops == 0 || id.is_empty() {
            return;
        }
        let id: Box<str> = id.into();
        if self.hops.insert(id.clone(), hops).is_none() {
            self.order.push_back(id);
        }
        while self.order.len() > CAP {
            if let Some(old) = self.order.pop_front() {
                self.hops.remove(&old);
            }
        }
    }

    /// The hops of event `id`: 0 when it had none or is not known.
    pub fn get(&self, id: &str) -> u32 {
        self.hops.get(id).copied().unwrap_or(0)
    }

    pub fn len(&self) -> usize {
        self.hops.len()
    }

    pub fn is_empty(&self) -> bool {
        self.hops.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_only_hops_and_is_bounded() {
        let mut idx = HopIndex::default();
        idx.observe_json(br#"{"id":"msg_a","hops":3}"#);
        idx.observe_json(br#"{"id":"msg_b"}"#);
        idx.observe_json(b"not json");
        assert_eq!(idx.get("msg_a"), 3);
        assert_eq!(idx.get("msg_b"), 0);
        assert_eq!(idx.len(), 1);
        for i in 0..CAP + 10 {
            idx.insert(&format!("msg_{i}"), 1);
        }
        assert_eq!(idx.len(), CAP);
        assert_eq!(idx.get("msg_a"), 0, "the oldest is forgotten first");
        assert_eq!(idx.get(&format!("msg_{}", CAP + 9)), 1);
    }
}
