//! The delivery predicate of protocol.md, evaluated against the claims at
//! delivery time. Two rules of shared use come first: a subscription with
//! an identity is not fed that identity's own events (unless `echo`), and a
//! local line belongs to the identity it names, whatever the claims say.

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
    /// Deliver events whose `from` is `as_` too.
    pub echo: bool,
}

/// Whose events on `m`'s line are: a local line's are the identity's it
/// names; any other line's are its claim owner's.
fn owner<'a>(m: &'a Meta, claims: &'a ClaimMap) -> Option<&'a str> {
    if claims.is_local(&m.line) {
        Some(&m.line)
    } else {
        claims.owner(&m.line)
    }
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
        // No echo: an identity's own events are not fed back to it.
        if !self.echo && me.is_some_and(|me| me == &*m.from) {
            return false;
        }
        // 1. Direct message.
        if me.is_some_and(|me| me == &*m.to) {
            return true;
        }
        match self.mode {
            // 2.
            Mode::All => true,
            // 3.
            Mode::Unclaimed => owner(m, claims).is_none(),
            personal => {
                // 4.
                if &*m.station == "webhook" && !self.include_webhooks {
                    return false;
                }
                let owner = owner(m, claims);
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
