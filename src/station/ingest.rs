//! The inbound pipeline every station shares: [`ingest`] takes one
//! [`Arrival`] (a platform event already mapped to a `proto::Event`) and
//! decides, in this order:
//!
//! 1. **dedupe**: its key is in the station's recent keys (it is in the
//!    log already) → `duplicates`; nothing else happens to it. First,
//!    because it is a fact about the log that does not depend on who may
//!    write now: a resend of something stored is neither blocked again,
//!    nor answered with a second pairing code, nor counted as a bot's.
//!    An arrival whose key is being stored by another task waits for that
//!    to be decided (webhook senders retry concurrently).
//! 2. **screen**: the station's own filter ([`Inlet::screen`]: Discord's
//!    own messages, bots not listed by id); the station counts what it
//!    drops.
//! 3. **access gate** (stations with an allowlist): a sender not admitted
//!    → `blocked`, logged at warn level (never the text); the station
//!    answers what the platform waits for ([`Inlet::refused`]: a button
//!    press); a stranger writing in private gets one pairing code
//!    (`pairingReplies`) through [`Inlet::notice`].
//! 4. **append**: [`Persist::UntilStored`] retries forever with a growing
//!    pause (the platform's event stays unconfirmed meanwhile; the status
//!    says why); [`Persist::Once`] tries once (webhooks: the sender is told
//!    and retries).
//! 5. **remember** the key with its event id, count `received`, and let
//!    the station record ids or acknowledge ([`Inlet::stored`]).
//!
//! Owns: the order of those steps and the counters they bump. Must not
//! import: `broker`, `server`, `stations`.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::access::{pairing_text, Access, Gate};
use super::core::{bump, pause, Backoff, Claim, StationCore};
use crate::proto::{Event, WireError};
use crate::store::log::{AppendError, Log};

/// Who sent an arrival, as the allowlist knows them.
#[derive(Debug, Clone)]
pub struct Sender {
    /// The platform's user id (what `allow` lists).
    pub id: String,
    /// A display name, for the log line of a blocked arrival.
    pub name: String,
    /// A bot or a webhook, not a person.
    pub bot: bool,
}

/// One platform event on its way into the log.
#[derive(Debug)]
pub struct Arrival<P> {
    pub event: Event,
    /// What recognises it when the platform sends it again (`None`: never
    /// recognised, e.g. reactions, which can repeat for real).
    pub key: Option<String>,
    pub sender: Option<Sender>,
    /// A stranger may be offered a pairing code (a new message in a
    /// private chat with the bot, from a person).
    pub offer: bool,
    /// What the station needs once it is decided (a callback to answer,
    /// the platform message id to record).
    pub platform: P,
}

/// How hard to try to append.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Persist {
    /// Again and again, with a growing pause, until stored or stopped.
    UntilStored,
    /// Once; the caller tells the sender.
    Once,
}

/// What [`ingest`] did.
#[derive(Debug)]
pub enum Outcome {
    /// Appended as this event id.
    Stored(String),
    /// Already in the log as this event id.
    Duplicate(String),
    /// Dropped by the station's own filter.
    Screened,
    /// The sender is not admitted.
    Blocked,
    /// Not stored (`ShuttingDown` also when stopped while retrying): the
    /// platform's event stays unconfirmed.
    NotStored(AppendError),
}

/// The station's side of the pipeline.
#[async_trait::async_trait]
pub trait Inlet: Send + Sync + 'static {
    /// What the station keeps of an arrival for [`Inlet::stored`] and
    /// [`Inlet::refused`].
    type Platform: Send + Sync + 'static;

    fn core(&self) -> &StationCore;

    /// The log its events go to.
    fn log(&self) -> &Log;

    /// Its allowlist (`None`: everyone gets through, as on webhooks).
    fn access(&self) -> Option<&Access> {
        None
    }

    /// Its own filter before the gate; false drops the arrival (the
    /// station counts and logs it).
    fn screen(&self, _a: &Arrival<Self::Platform>) -> bool {
        true
    }

    /// Last touches to an admitted event before it is appended.
    fn admitted(self: &Arc<Self>, _event: &mut Event) {}

    /// A blocked arrival: answer what the platform waits for.
    fn refused(self: &Arc<Self>, _a: &Arrival<Self::Platform>) {}

    /// Sends a plain message from the station itself on `line` (the
    /// pairing code), not logged.
    async fn notice(&self, _line: &str, _text: &str) -> Result<(), WireError> {
        Err(WireError::unavailable(format!(
            "the {} station sends no notices",
            self.core().name()
        )))
    }

    /// The status while the log cannot be written (`why`, next try in
    /// `retry_in`).
    fn unstored(&self, a: &Arrival<Self::Platform>, why: &str, retry_in: Duration) -> String {
        format!(
            "down: cannot store a {} in the log ({why}); retrying in {} s",
            a.event.kind,
            retry_in.as_secs()
        )
    }

    /// Stored as event `id` on `line`: record ids, acknowledge.
    fn stored(self: &Arc<Self>, _id: &str, _line: &str, _platform: Self::Platform) {}
}

/// A key this task is storing: forgotten again unless stored (also when
/// the task is dropped mid-way).
struct Held<'a> {
    core: &'a StationCore,
    key: String,
    done: Option<tokio::sync::watch::Sender<()>>,
}

impl Held<'_> {
    fn stored(mut self, id: &str) {
        if let Some(done) = self.done.take() {
            self.core.finish(&self.key, Some(id), done);
        }
    }
}

impl Drop for Held<'_> {
    fn drop(&mut self) {
        if let Some(done) = self.done.take() {
            self.core.finish(&self.key, None, done);
        }
    }
}

/// Runs `a` through the pipeline (the module comment says the order).
pub async fn ingest<S: Inlet>(
    st: &Arc<S>,
    a: Arrival<S::Platform>,
    persist: Persist,
    stop: &CancellationToken,
) -> Outcome {
    let core = st.core();
    let held = match &a.key {
        None => None,
        Some(k) => loop {
            match core.begin(k) {
                Claim::Duplicate(id) => {
                    bump(&core.counters.duplicates);
                    tracing::debug!("{}: {k} is already in the log", core.name());
                    return Outcome::Duplicate(id);
                }
                Claim::Wait(mut rx) => {
                    tokio::select! {
                        _ = stop.cancelled() => return Outcome::NotStored(AppendError::ShuttingDown),
                        _ = async { while rx.changed().await.is_ok() {} } => {}
                    }
                }
                Claim::Mine(done) => {
                    break Some(Held {
                        core,
                        key: k.clone(),
                        done: Some(done),
                    })
                }
            }
        },
    };
    if !st.screen(&a) {
        return Outcome::Screened;
    }
    if let Some(access) = st.access() {
        let gate = match &a.sender {
            Some(s) => access.gate(&s.id),
            None if access.everyone() => Gate::Admitted,
            None => Gate::Unknown,
        };
        if gate != Gate::Admitted {
            blocked(st, access, &a, gate).await;
            return Outcome::Blocked;
        }
    }
    let mut a = a;
    st.admitted(&mut a.event);
    let line = a.event.line.clone();
    match persist {
        Persist::Once => {
            let Arrival {
                event, platform, ..
            } = a;
            let r = st.log().append(event).await;
            finish(st, r, held, &line, platform)
        }
        Persist::UntilStored => {
            let r = append_retrying(st, &a, stop).await;
            finish(st, r, held, &line, a.platform)
        }
    }
}

fn finish<S: Inlet>(
    st: &Arc<S>,
    appended: Result<crate::store::log::Appended, AppendError>,
    held: Option<Held<'_>>,
    line: &str,
    platform: S::Platform,
) -> Outcome {
    match appended {
        Ok(a) => {
            if let Some(h) = held {
                h.stored(&a.id);
            }
            bump(&st.core().counters.received);
            st.stored(&a.id, line, platform);
            Outcome::Stored(a.id)
        }
        Err(e) => Outcome::NotStored(e),
    }
}

/// Appends until stored or stopped; a failure sets the status (and the
/// success after it sets `ok` again).
async fn append_retrying<S: Inlet>(
    st: &Arc<S>,
    a: &Arrival<S::Platform>,
    stop: &CancellationToken,
) -> Result<crate::store::log::Appended, AppendError> {
    let mut backoff = Backoff::new();
    let mut failed = false;
    loop {
        match st.log().append(a.event.clone()).await {
            Ok(appended) => {
                if failed {
                    st.core().set_status("ok");
                }
                return Ok(appended);
            }
            Err(AppendError::ShuttingDown) => return Err(AppendError::ShuttingDown),
            Err(AppendError::Io(why)) => {
                failed = true;
                let d = backoff.pause();
                st.core().set_status(st.unstored(a, &why, d));
                if !pause(d, stop).await {
                    return Err(AppendError::ShuttingDown);
                }
            }
        }
    }
}

/// Counts, logs and (for a stranger in private) answers a blocked
/// arrival. Nothing of it is stored.
async fn blocked<S: Inlet>(st: &Arc<S>, access: &Access, a: &Arrival<S::Platform>, gate: Gate) {
    let core = st.core();
    bump(&core.counters.blocked);
    st.refused(a);
    let who = a.sender.as_ref().map(|s| (s.id.as_str(), s.name.as_str()));
    let ev = &a.event;
    let Some(code) = access.blocked(gate, &ev.kind, who, &ev.line, a.offer).await else {
        return;
    };
    bump(&core.counters.pairing_replies);
    let st = st.clone();
    let line = ev.line.clone();
    tokio::spawn(async move {
        if let Err(e) = st.notice(&line, &pairing_text(&code)).await {
            tracing::warn!(
                "{}: the pairing code could not be sent: {}",
                st.core().name(),
                e.message
            );
        }
    });
}
