//! 1. Publish throughput: 1 publisher waiting for each answer, and 16
//!    publishers with 64 in flight each; `--fsync always` and `never`;
//!    300-byte events. Also 50 publishers waiting for each answer, the
//!    shape of the Redis reference (`redis-benchmark -c 50`).

use std::time::{Duration, Instant};

use crate::client::{calibrate, plain_body, publish_all, Limit};
use crate::daemon::Daemon;
use crate::report::Case;
use crate::{Ctx, Error};

pub async fn run(ctx: &Ctx) -> Result<Vec<Case>, Error> {
    let mut cases = Vec::new();
    for fsync in ["always", "never"] {
        for (publishers, window) in [(1usize, 1usize), (16, 64), (50, 1)] {
            let name = format!("{publishers}x{window}_fsync_{fsync}");
            if !ctx.wants(&name) {
                continue;
            }
            let d = Daemon::start(&ctx.spec(fsync), "pub")?;
            let pad = calibrate(&d.socket).await?;
            let limit = Limit {
                events: ctx.pick(u64::MAX, 2_000),
                until: Instant::now() + Duration::from_secs_f64(ctx.pick(5.0, 0.3)),
            };
            let s = publish_all(&d.socket, publishers, window, limit, move |p, _, out| {
                plain_body(p, pad, out)
            })
            .await?;
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
