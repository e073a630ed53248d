//! The Discord station behind the seam: [`DiscordKind`] (opened when the
//! config in force has a `[discord]` token) and `impl Station for Discord`
//! (the gateway as its inbound task; send, edit, react, download and
//! fetch through [`super::outbound`]).
//!
//! Owns: the mapping of the seam's calls onto the station. Must not
//! import: `broker`, `server`, `daemon`.

use std::any::Any;
use std::io;
use std::sync::Arc;

use bytes::Bytes;
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use super::{parse_line, Discord};
use crate::config::Config;
use crate::proto::{self, Download, Edit, Event, React, WireError};
use crate::station::access::Access;
use crate::station::{
    no_token, Op, Reconfigured, SendFailure, Sent, Station, StationCtx, StationKind,
};
use crate::stations::ids::Rec;

/// Opens the Discord station.
pub struct DiscordKind;

impl StationKind for DiscordKind {
    fn name(&self) -> &'static str {
        "discord"
    }

    fn section(&self) -> Option<&'static str> {
        Some("discord")
    }

    fn one_node(&self) -> bool {
        true
    }

    fn chat(&self) -> bool {
        true
    }

    fn platform(&self) -> Option<&'static str> {
        Some("Discord")
    }

    fn enabled(&self, config: &Config) -> Result<(), String> {
        let token = config.discord.token.as_deref().map(str::trim);
        let token = token.map(|t| t.strip_prefix("Bot ").unwrap_or(t).trim());
        match token {
            Some(t) if !t.is_empty() => Ok(()),
            _ => Err(no_token("discord")),
        }
    }

    fn check_line(&self, line: &str) -> Result<(), String> {
        let path: Vec<&str> = crate::line::segments(line).collect();
        match path.as_slice() {
            [channel]
                if !channel.is_empty()
                    && channel.len() <= 20
                    && channel.bytes().all(|b| b.is_ascii_digit()) =>
            {
                Ok(())
            }
            _ => Err("discord lines are metro://discord/<channelId> with a numeric id".into()),
        }
    }

    fn fetches(&self) -> bool {
        true
    }

    /// A message's or an edit's key ([`super::map::key_of`]), on events
    /// that came from Discord (agents' own sends carry none).
    fn platform_key(&self, event: &Event) -> Option<String> {
        if !event.from.starts_with("metro://discord/") {
            return None;
        }
        super::map::key_of(
            &event.kind,
            event.message_id.as_deref(),
            event.extra.get("editedAt").and_then(Value::as_str),
        )
    }

    fn open(&self, ctx: &StationCtx) -> io::Result<Arc<dyn Station>> {
        let config = ctx.current();
        match super::open(&ctx.state_dir, &ctx.log, &config.discord, ctx.fsync)? {
            Some(d) => Ok(d),
            None => Err(io::Error::other(no_token("discord"))),
        }
    }
}

#[async_trait::async_trait]
impl Station for Discord {
    fn name(&self) -> &str {
        "discord"
    }

    async fn run(self: Arc<Self>, stop: CancellationToken) {
        super::gateway::run(self, stop).await;
    }

    fn platform(&self) -> Option<&'static str> {
        Some("Discord")
    }

    fn supports(&self, _op: Op) -> bool {
        true
    }

    async fn send(&self, line: &str, s: &proto::Send) -> Result<Sent, SendFailure> {
        Discord::send(self, &self.log, line, s).await
    }

    async fn edit(&self, line: &str, e: &Edit) -> Result<String, WireError> {
        let mid = Discord::edit(
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
        let mid = Discord::react(self, &self.log, line, &r.message_id, &r.emoji).await?;
        Ok(mid.to_string())
    }

    async fn download(&self, line: &str, d: &Download) -> Result<Vec<String>, WireError> {
        Discord::download(self, &self.log, line, &d.message_id, &d.out_dir).await
    }

    async fn fetch(&self, line: &str, limit: u64) -> Option<Result<Vec<Bytes>, WireError>> {
        Some(Discord::fetch(self, line, limit).await)
    }

    fn record(&self, id: &str, line: &str, sent: &Sent) {
        Discord::record(
            self,
            Rec {
                id: id.to_string(),
                line: line.to_string(),
                message_ids: sent.message_ids.clone(),
            },
        )
    }

    fn metro_id(&self, line: &str, message_id: &str) -> Option<String> {
        let channel = parse_line(line)?;
        Some(self.ids.metro(&channel.to_string(), message_id)?.id)
    }

    fn row(&self) -> Value {
        self.station_row()
    }

    fn stats(&self) -> Option<Value> {
        Some(Discord::stats(self))
    }

    fn access(&self) -> Option<&Access> {
        Some(&self.access)
    }

    fn inbound_core(&self) -> Option<&crate::station::core::StationCore> {
        Some(&self.core)
    }

    fn reconfigure(&self, config: &Config) -> Reconfigured {
        let now = &config.discord;
        if now.token != self.opened.token
            || now.api_url != self.opened.api_url
            || now.gateway_url != self.opened.gateway_url
        {
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
    fn the_platform_key_is_the_message_or_edit_of_discord() {
        let ev = |kind: &str, from: &str, edited: &str| {
            serde_json::from_str::<Event>(&format!(
                r#"{{"id":"msg_1","ts":"t","station":"discord","kind":"{kind}","line":"metro://discord/1","from":"{from}","to":"","messageId":"99"{edited}}}"#
            ))
            .unwrap()
        };
        let user = "metro://discord/user/7";
        assert_eq!(
            DiscordKind.platform_key(&ev("inbound", user, "")),
            Some("m:99".into())
        );
        assert_eq!(
            DiscordKind.platform_key(&ev("edit", user, r#","editedAt":"2026-01-01T00:00:00Z""#)),
            Some("e:99:2026-01-01T00:00:00Z".into())
        );
        // An agent's send on a Discord line is not a platform event.
        assert_eq!(
            DiscordKind.platform_key(&ev("outbound", "metro://claude/user/1", "")),
            None
        );
        assert_eq!(DiscordKind.platform_key(&ev("react", user, "")), None);
    }

    #[test]
    fn discord_lines_have_numeric_ids() {
        for good in ["5", "123456789012345678"] {
            assert_eq!(
                DiscordKind.check_line(&format!("metro://discord/{good}")),
                Ok(())
            );
        }
        for bad in ["x1", "-5", "1/2"] {
            let e = DiscordKind
                .check_line(&format!("metro://discord/{bad}"))
                .unwrap_err();
            assert!(e.starts_with("discord lines are"), "{bad}: {e}");
        }
    }
}
