//! 6. Daemon RSS (VmRSS): idle; with N idle subscribers (one connection
//!    and one follow subscription each); and while/after N events are
//!    published past one stalled subscriber (subscribed with follow from
//!    the start, never reads).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use tokio::io::AsyncWriteExt;

use crate::client::{calibrate, plain_body, publish_all, subscribers, Limit};
use crate::daemon::{rss_kib, Daemon};
use crate::report::Case;
use crate::{Ctx, Error};

const SETTLE: Duration = Duration::from_millis(500);

pub async fn run(ctx: &Ctx) -> Result<Vec<Case>, Error> {
    let mut cases = Vec::new();

    // Idle, then with idle subscribers.
    let d = Daemon::start(&ctx.spec("never"), "mem")?;
    tokio::time::sleep(SETTLE).await;
    let idle = d.rss_kib()?;
    cases.push(Case::new("idle").m("rss_kib", idle as f64));
    let n = ctx.pick(1_000usize, 20);
    let subs = subscribers(
        &d.socket,
        n,
        &json!({"mode": "all", "follow": true, "since": "tail"}),
    )
    .await?;
    tokio::time::sleep(SETTLE).await;
    let with = d.rss_kib()?;
    cases.push(
        Case::new(format!("{n}_idle_subscribers"))
            .m("rss_kib", with as f64)
            .m(
                "per_subscriber_bytes",
                (with as f64 - idle as f64) * 1024.0 / n as f64,
            ),
    );
    drop(subs);
    drop(d);

    // A stalled subscriber while events go past it.
    let d = Daemon::start(&ctx.spec("never"), "mem")?;
    let pad = calibrate(&d.socket).await?;
    let mut stalled = tokio::net::UnixStream::connect(&d.socket).await?;
    stalled
        .write_all(b"{\"op\":\"subscribe\",\"req\":1,\"mode\":\"all\",\"follow\":true,\"since\":\"start\"}\n")
        .await?;
    tokio::time::sleep(SETTLE).await;
    let before = d.rss_kib()?;
    let stop = Arc::new(AtomicBool::new(false));
    let peak = Arc::new(AtomicU64::new(before));
    let sampler = {
        let (stop, peak, pid) = (stop.clone(), peak.clone(), d.pid());
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                if let Ok(r) = rss_kib(pid) {
                    peak.fetch_max(r, Ordering::Relaxed);
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };
    // Two halves, to show whether the RSS still grows in the second.
    let events = ctx.pick(1_000_000u64, 2_000);
    let mut halves = Vec::new();
    let mut published = 0;
    for _ in 0..2 {
        let limit = Limit {
            events: events / 2,
            until: Instant::now() + Duration::from_secs(100),
        };
        let s = publish_all(&d.socket, 4, 64, limit, move |p, _, out| {
            plain_body(p, pad, out)
        })
        .await;
        tokio::time::sleep(SETTLE).await;
        match s {
            Ok(s) => published += s.answered,
            Err(e) => {
                stop.store(true, Ordering::Relaxed);
                return Err(e);
            }
        }
        halves.push(d.rss_kib()?);
    }
    stop.store(true, Ordering::Relaxed);
    sampler.await?;
    let after = halves[1];
    drop(stalled);
    cases.push(
        Case::new(format!("stalled_subscriber_{events}_events"))
            .m("rss_kib_before", before as f64)
            .m("rss_kib_after_half", halves[0] as f64)
            .m("rss_kib_after", after as f64)
            .m(
                "rss_kib_peak",
                peak.load(Ordering::Relaxed).max(after) as f64,
            )
            .m("events", published as f64),
    );
    Ok(cases)
}
