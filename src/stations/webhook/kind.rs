//! The webhook station behind the seam: [`WebhookKind`] (always opened:
//! its options are metrod's flags, not the config file) and
//! [`WebhookStation`] (the HTTP listener as its inbound task; outbound ops
//! on its lines are refused: webhook lines are inbound only).
//!
//! The listener also serves other routes the daemon mounts on it (the
//! monitor, through [`Mount`]): the station does not know what they are.
//!
//! Owns: the mapping of the seam's calls onto the station. Must not
//! import: `broker`, `server`, `daemon`, `monitor`.

use std::any::Any;
use std::io;
use std::sync::{Arc, Mutex, OnceLock};

use serde_json::Value;
use tokio_util::sync::CancellationToken;

use super::http::{self, Limits, Mount};
use super::{Config as HookConfig, Webhooks};
use crate::proto::WireError;
use crate::station::{Op, Station, StationCtx, StationKind};

/// Where the daemon puts what else the listener serves (set once, before
/// the station starts).
pub type MountSlot = Arc<OnceLock<Arc<dyn Mount>>>;

/// Opens the webhook station.
pub struct WebhookKind {
    config: HookConfig,
    limits: Limits,
    mount: MountSlot,
}

impl WebhookKind {
    /// The kind, and the slot for the routes mounted beside `/hooks/`.
    pub fn new(config: HookConfig, limits: Limits) -> (WebhookKind, MountSlot) {
        let mount = MountSlot::default();
        (
            WebhookKind {
                config,
                limits,
                mount: mount.clone(),
            },
            mount,
        )
    }
}

impl StationKind for WebhookKind {
    fn name(&self) -> &'static str {
        "webhook"
    }

    fn check_line(&self, line: &str) -> Result<(), String> {
        check_line(line)
    }

    fn open(&self, ctx: &StationCtx) -> io::Result<Arc<dyn Station>> {
        let (hooks, listener) = Webhooks::open(&ctx.state_dir, &ctx.log, &self.config)?;
        Ok(Arc::new(WebhookStation {
            hooks: Arc::new(hooks),
            listener: Mutex::new(listener),
            limits: self.limits,
            mount: self.mount.clone(),
        }))
    }
}

/// The shape of a webhook line (a full URI): `metro://webhook/<endpointId>`.
pub fn check_line(line: &str) -> Result<(), String> {
    let path: Vec<&str> = crate::line::segments(line).collect();
    match path.as_slice() {
        [id] if id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') =>
        {
            Ok(())
        }
        _ => Err("webhook lines are metro://webhook/<endpointId>".into()),
    }
}

/// The running webhook station.
pub struct WebhookStation {
    /// The endpoints (`webhookAdd` … reach them here).
    pub hooks: Arc<Webhooks>,
    /// The bound listener until the inbound task takes it.
    listener: Mutex<Option<std::net::TcpListener>>,
    limits: Limits,
    mount: MountSlot,
}

#[async_trait::async_trait]
impl Station for WebhookStation {
    fn name(&self) -> &str {
        "webhook"
    }

    async fn run(self: Arc<Self>, stop: CancellationToken) {
        let listener = self.listener.lock().ok().and_then(|mut l| l.take());
        match listener {
            Some(l) => {
                let mount = self.mount.get().cloned();
                http::serve(self.hooks.clone(), l, self.limits, mount, stop).await
            }
            None => stop.cancelled().await,
        }
    }

    fn refuse(&self, _op: Op, _line: &str) -> WireError {
        WireError::unavailable(
            "webhook lines are inbound only: metro cannot send, edit, react or download on them",
        )
    }

    fn row(&self) -> Value {
        self.hooks.station_row()
    }

    fn stats(&self) -> Option<Value> {
        Some(self.hooks.stats())
    }

    fn any(self: Arc<Self>) -> Arc<dyn Any + Send + Sync> {
        self
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn webhook_lines_name_one_endpoint() {
        assert!(super::check_line("metro://webhook/gh-1_x").is_ok());
        for bad in ["metro://webhook/a.b", "metro://webhook/a/b"] {
            let e = super::check_line(bad).unwrap_err();
            assert!(e.starts_with("webhook lines are"), "{bad}: {e}");
        }
    }
}
