//! The `local` station: lines of local agents (`metro://claude/…`,
//! `metro://codex/…`, any station name no other kind registered). Nothing
//! leaves the machine: the server logs a `send` as a `notify` event
//! addressed to the line, an `edit` or `react` as its own event; there is
//! no platform, so there are no files to download.
//!
//! Owns: the `local` kind and station. Must not import: `broker`,
//! `server`, `daemon`.

use std::any::Any;
use std::io;
use std::sync::Arc;

use serde_json::{json, Value};

use crate::proto::{self, Edit, React, WireError};
use crate::station::{Op, SendFailure, Sent, Station, StationCtx, StationKind};

/// The `local` kind: always enabled, takes every line no other kind owns.
pub struct LocalKind;

impl StationKind for LocalKind {
    fn name(&self) -> &'static str {
        "local"
    }

    fn catches_all(&self) -> bool {
        true
    }

    fn open(&self, _ctx: &StationCtx) -> io::Result<Arc<dyn Station>> {
        Ok(Arc::new(Local))
    }
}

pub struct Local;

#[async_trait::async_trait]
impl Station for Local {
    fn name(&self) -> &str {
        "local"
    }

    fn supports(&self, op: Op) -> bool {
        op != Op::Download
    }

    fn refuse(&self, op: Op, line: &str) -> WireError {
        match op {
            Op::Download => WireError::bad_request(format!(
                "{line} is a local agent line: it carries no platform files to download"
            )),
            op => WireError::unavailable(format!("local lines do not support {}", op.as_str())),
        }
    }

    /// The event the server logs is the message: nothing to do first.
    async fn send(&self, _line: &str, _s: &proto::Send) -> Result<Sent, SendFailure> {
        Ok(Sent::default())
    }

    async fn edit(&self, _line: &str, e: &Edit) -> Result<String, WireError> {
        Ok(e.message_id.clone())
    }

    async fn react(&self, _line: &str, r: &React) -> Result<String, WireError> {
        Ok(r.message_id.clone())
    }

    fn row(&self) -> Value {
        json!({
            "name": "local",
            "enabled": true,
            "status": "ok",
            "capabilities": ["send", "edit", "react", "fetch"],
        })
    }

    fn any(self: Arc<Self>) -> Arc<dyn Any + Send + Sync> {
        self
    }
}
