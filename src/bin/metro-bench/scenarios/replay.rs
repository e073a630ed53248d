//! 4. Replay: a subscriber resuming N events behind its durable cursor
//!    (the log is written directly, the cursor file holds 0); events/s and
//!    MB/s from the subscribe request to the `end` frame.

use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Instant;

use serde_json::json;

use crate::client::{count_lines, Conn};
use crate::daemon::{Daemon, TempDir};
use crate::loggen::{write_cursor, write_log};
use crate::report::Case;
use crate::{Ctx, Error};

pub async fn run(ctx: &Ctx) -> Result<Vec<Case>, Error> {
    let tmp = TempDir::new("replay")?;
    let state = tmp.path().join("state");
    let (events, bytes) = write_log(&state, ctx.pick(1_000_000, 2_000), u64::MAX)?;
    write_cursor(&state, "bench-replay", 0)?;
    let d = Daemon::start_in(&ctx.spec("never"), &state)?;
    let mut c = Conn::connect(&d.socket).await?;
    let t0 = Instant::now();
    let sub = c
        .subscribe(json!({"cursor": "bench-replay", "since": "cursor", "mode": "all"}))
        .await?;
    // Every event, then the `end` frame.
    let end = count_lines(c, events + 1, Arc::new(AtomicU64::new(0))).await?;
    let secs = end.duration_since(t0).as_secs_f64();
    drop(d);
    drop(tmp);
    if sub.is_empty() {
        return Err("subscribe answered without a sub id".into());
    }
    Ok(vec![Case::new(format!("{events}_events"))
        .m("events_per_s", events as f64 / secs)
        .m("mb_per_s", bytes as f64 / secs / 1e6)
        .m("log_mb", bytes as f64 / 1e6)
        .m("seconds", secs)])
}
