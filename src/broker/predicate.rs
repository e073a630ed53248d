//! The delivery predicate of protocol.md, evaluated against the claims at
//! delivery time.

use crate::proto::Mode;
use crate::store::claims::ClaimMap;
use crate::store::log::Meta;

/// What one subscription wants to see.
#[derive(Debug, Clone)]
pub struct Filter {
    pub as_: Option<String>,
    pub mode: Mode,
    pub include_webhooks: bool,
    pub chat: Option<String>,
    pub station: Option<String>,
    pub kind: Option<String>,
}

impl Filter {
    pub fn matches(&self, m: &Meta, claims: &ClaimMap) -> bool {
        if !m.valid {
            return false;
        }
        // `chat`, `station` and `kind` are ANDed on top of everything.
        if self.chat.as_deref().is_some_and(|c| c != &*m.line)
            || self.station.as_deref().is_some_and(|s| s != &*m.station)
            || self.kind.as_deref().is_some_and(|k| k != &*m.kind)
        {
            return false;
        }
        let me = self.as_.as_deref();
        // 1. Direct message.
        if me.is_some_and(|me| me == &*m.to) {
            return true;
        }
        match self.mode {
            // 2.
            Mode::All => true,
            // 3.
            Mode::Unclaimed => claims.owner(&m.line).is_none(),
            personal => {
                // 4.
                if &*m.station == "webhook" && !self.include_webhooks {
                    return false;
                }
                let owner = claims.owner(&m.line);
                match personal {
                    // 5.
                    Mode::MineOnly => owner.is_some() && owner == me,
                    // 6.
                    _ => owner.is_none() || owner == me,
                }
            }
        }
    }
}
