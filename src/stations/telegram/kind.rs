//! The Telegram station behind the seam: [`TelegramKind`] (opened when the
//! config in force has a `[telegram]` token) and `impl Station for
//! Telegram` (the poller as its inbound task; send, edit, react, download
//! through [`super::outbound`]).
//!
//! Owns: the mapping of the seam's calls onto the station. Must not
//! import: `broker`, `server`, `daemon`.

use std::any::Any;
use std::io;
use std::sync::Arc;

use serde_json::Value;
use tokio_util::sync::CancellationToken;

use super::{ids::Rec, parse_line, Telegram};
use crate::config::Config;
use crate::proto::{self, Download, Edit, Event, React, WireError};
use crate::station::access::Access;
use crate::station::{
    no_token, Op, Reconfigured, SendFailure, Sent, Station, StationCtx, StationKind,
};

/// Opens the Telegram station.
pub struct TelegramKind;

impl StationKind for TelegramKind {
    fn name(&self) -> &'static str {
        "telegram"
    }

    fn section(&self) -> Option<&'static str> {
        Some("telegram")
    }

    fn one_node(&self) -> bool {
        true
    }

    fn chat(&self) -> bool {
        true
    }

    fn platform(&self) -> Option<&'static str> {
        Some("Telegram")
    }

    /// Its update id, on any event that carries one.
    fn platform_key(&self, event: &Event) -> Option<String> {
        let u = event.extra.get("updateId")?.as_u64()?;
        Some(super::update_key(u32::try_from(u).ok()?))
    }

    fn check_line(&self, line: &str) -> Result<(), String> {
        let path: Vec<&str> = crate::line::segments(line).collect();
        match path.as_slice() {
            [chat] if is_int(chat) => Ok(()),
            [chat, topic] if is_int(chat) && is_uint(topic) => Ok(()),
            _ => Err(
                "telegram lines are metro://telegram/<chatId>[/<topicId>] with numeric ids".into(),
            ),
        }
    }

    fn enabled(&self, config: &Config) -> Result<(), String> {
        match &config.telegram.token {
            Some(t) if !t.trim().is_empty() => Ok(()),
            _ => Err(no_token("telegram")),
        }
    }

    fn open(&self, ctx: &StationCtx) -> io::Result<Arc<dyn Station>> {
        let config = ctx.current();
        match super::open(&ctx.state_dir, &ctx.log, &config.telegram, ctx.fsync)? {
            Some(t) => Ok(t),
            None => Err(io::Error::other(no_token("telegram"))),
        }
    }
}

/// A chat id: an integer of at most 20 digits.
fn is_int(s: &str) -> bool {
    is_uint(s.strip_prefix('-').unwrap_or(s))
}

/// A topic id: digits, at most 20.
fn is_uint(s: &str) -> bool {
    !s.is_empty() && s.len() <= 20 && s.bytes().all(|b| b.is_ascii_digit())
}

#[async_trait::async_trait]
impl Station for Telegram {
    fn name(&self) -> &str {
        "telegram"
    }

    async fn run(self: Arc<Self>, stop: CancellationToken) {
        super::inbound::run(self, stop).await;
    }

    fn platform(&self) -> Option<&'static str> {
        Some("Telegram")
    }

    fn supports(&self, _op: Op) -> bool {
        true
    }

    async fn send(&self, line: &str, s: &proto::Send) -> Result<Sent, SendFailure> {
        Telegram::send(self, &self.log, line, s).await
    }

    async fn edit(&self, line: &str, e: &Edit) -> Result<String, WireError> {
        let mid = Telegram::edit(
            self,
            &self.log,
            line,
            &e.message_id,
            &e.text,
            e.buttons.as_ref(),
        )
        .await?;
        Ok(mid.to_string())
    }

    async fn react(&self, line: &str, r: &React) -> Result<String, WireError> {
        let mid = Telegram::react(self, &self.log, line, &r.message_id, &r.emoji).await?;
        Ok(mid.to_string())
    }

    async fn download(&self, line: &str, d: &Download) -> Result<Vec<String>, WireError> {
        Telegram::download(self, &self.log, line, &d.message_id, &d.out_dir).await
    }

    fn record(&self, id: &str, line: &str, sent: &Sent) {
        self.ids.record(Rec {
            id: id.to_string(),
            line: line.to_string(),
            message_ids: sent
                .message_ids
                .iter()
                .filter_map(|m| m.parse().ok())
                .collect(),
        })
    }

    fn metro_id(&self, line: &str, message_id: &str) -> Option<String> {
        let (chat, _) = parse_line(line)?;
        let mid: i32 = message_id.parse().ok()?;
        Some(self.ids.metro(chat, mid)?.id)
    }

    fn row(&self) -> Value {
        self.station_row()
    }

    fn stats(&self) -> Option<Value> {
        Some(Telegram::stats(self))
    }

    fn access(&self) -> Option<&Access> {
        Some(&self.access)
    }

    fn inbound_core(&self) -> Option<&crate::station::core::StationCore> {
        Some(&self.core)
    }

    fn reconfigure(&self, config: &Config) -> Reconfigured {
        let now = &config.telegram;
        if now.token != self.opened.token || now.api_url != self.opened.api_url {
            return Reconfigured::Restart;
        }
        self.access.set_config_allow(now.allow.clone());
        Reconfigured::InPlace
    }

    fn any(self: Arc<Self>) -> Arc<dyn Any + Send + Sync> {
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_platform_key_is_the_update_id() {
        let ev = |json: &str| serde_json::from_str::<Event>(json).unwrap();
        let inbound = ev(
            r#"{"id":"msg_1","ts":"t","station":"telegram","kind":"inbound","line":"metro://telegram/5","from":"metro://telegram/user/5","to":"","updateId":42}"#,
        );
        assert_eq!(TelegramKind.platform_key(&inbound), Some("42".into()));
        let sent = ev(
            r#"{"id":"msg_2","ts":"t","station":"telegram","kind":"outbound","line":"metro://telegram/5","from":"metro://claude/user/1","to":""}"#,
        );
        assert_eq!(TelegramKind.platform_key(&sent), None);
        let huge = ev(
            r#"{"id":"msg_3","ts":"t","station":"telegram","kind":"inbound","line":"metro://telegram/5","from":"metro://telegram/user/5","to":"","updateId":99999999999}"#,
        );
        assert_eq!(
            TelegramKind.platform_key(&huge),
            None,
            "not a Telegram update id"
        );
    }

    #[test]
    fn telegram_lines_have_numeric_ids() {
        for good in ["5", "-100", "-100/42"] {
            assert_eq!(
                TelegramKind.check_line(&format!("metro://telegram/{good}")),
                Ok(())
            );
        }
        for bad in ["abc", "1/-2", "1/2/3", "x1", "-"] {
            let e = TelegramKind
                .check_line(&format!("metro://telegram/{bad}"))
                .unwrap_err();
            assert!(e.starts_with("telegram lines are"), "{bad}: {e}");
        }
    }
}
