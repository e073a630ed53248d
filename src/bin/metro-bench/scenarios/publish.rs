//! 1. Publish throughput: 1 publisher waiting for each answer, and 16
//!    publishers with 64 in flight each; `--fsync always` and `never`;
//!    300-byte events. Also 50 publishers waiting for each answer, the
//!    shape of the Redis reference (`redis-benchmark -c 50`).

use std::time::{Duration, Instant};

use crate::client::{calibrate, plain_body, publish_all, Limit, PubStats};
use crate::daemon::Daemon;
use crate::report::Case;
use crate::{Ctx, Error};

pub async fn run(ctx: &Ctx) -> Result<Vec<Case>, Error> {
    let mut cases = Vec::new();
    for fsync in ["always", "never"] {
        for (publishers, window) in SHAPES {
            let name = format!("{publishers}x{window}_fsync_{fsync}");
            if !ctx.wants(&name) {
                continue;
            }
            let (s, _) = one(ctx, fsync, publishers, window, ctx.pick(5.0, 0.3)).await?;
            cases.push(
                Case::new(name)
                    .m("events_per_s", s.rate())
                    .m("events", s.answered as f64)
                    .m("seconds", s.secs()),
            );
        }
    }
    Ok(cases)
}

/// Publishers × requests in flight each.
pub(super) const SHAPES: [(usize, usize); 3] = [(1, 1), (16, 64), (50, 1)];

/// One metro run of a shape for `secs`; also the text padding of a
/// 300-byte event (for the same payload elsewhere).
pub(super) async fn one(
    ctx: &Ctx,
    fsync: &str,
    publishers: usize,
    window: usize,
    secs: f64,
) -> Result<(PubStats, usize), Error> {
    let d = Daemon::start(&ctx.spec(fsync), "pub")?;
    let pad = calibrate(&d.socket).await?;
    let limit = Limit {
        events: ctx.pick(u64::MAX, 2_000),
        until: Instant::now() + Duration::from_secs_f64(secs),
    };
    let s = publish_all(&d.socket, publishers, window, limit, move |p, _, out| {
        plain_body(p, pad, out)
    })
    .await?;
    Ok((s, pad))
}
