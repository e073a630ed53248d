//! 2. Fan-out: one publisher, 1 / 16 / 64 subscribers in mode `all`;
//!    deliveries per second, aggregate (first publish sent → last event
//!    received by the last subscriber).

use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;

use crate::client::{
    all_read, calibrate, count_lines, plain_body, publish_all, subscribers, Limit, PubStats,
};
use crate::daemon::Daemon;
use crate::report::Case;
use crate::{Ctx, Error};

pub async fn run(ctx: &Ctx) -> Result<Vec<Case>, Error> {
    let mut cases = Vec::new();
    for (n, events) in [(1usize, 400_000u64), (16, 150_000), (64, 40_000)] {
        let name = format!("{n}_subscribers");
        if !ctx.wants(&name) {
            continue;
        }
        let events = ctx.pick(events, 2_000);
        let (s, secs, _) = one(ctx, n, events).await?;
        let deliveries = n as u64 * events;
        cases.push(
            Case::new(name)
                .m("deliveries_per_s", deliveries as f64 / secs)
                .m("publish_events_per_s", s.rate())
                .m("deliveries", deliveries as f64)
                .m("seconds", secs),
        );
    }
    Ok(cases)
}

/// One metro run: `events` published to `n` subscribers; the publisher's
/// stats, the seconds from the first publish to the last delivery, and the
/// text padding of a 300-byte event.
pub(super) async fn one(ctx: &Ctx, n: usize, events: u64) -> Result<(PubStats, f64, usize), Error> {
    let d = Daemon::start(&ctx.spec("never"), "fan")?;
    let pad = calibrate(&d.socket).await?;
    let subs = subscribers(
        &d.socket,
        n,
        &json!({"mode": "all", "follow": true, "since": "tail"}),
    )
    .await?;
    let seen = Arc::new(AtomicU64::new(0));
    let readers: Vec<_> = subs
        .into_iter()
        .map(|c| tokio::spawn(count_lines(c, events, seen.clone())))
        .collect();
    let limit = Limit {
        events,
        until: Instant::now() + Duration::from_secs(120),
    };
    let s = publish_all(&d.socket, 1, 256, limit, move |p, _, out| {
        plain_body(p, pad, out)
    })
    .await?;
    let last = all_read(readers, s.last_answer).await?;
    let secs = last.duration_since(s.first_sent).as_secs_f64();
    Ok((s, secs, pad))
}
